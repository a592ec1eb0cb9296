/**
 * @module
 * `lsvd snapshot create NAME [--at POINT] | list | delete NAME`: named points of the log that
 * garbage collection keeps exact until deleted (src/log/snapshots.ts). Create and delete write one
 * small key each and nothing else, so they are safe while a daemon serves the volume.
 */

import { isSnapshotName } from "../format/keys.ts";
import { parsePoint, resolvePoint } from "../log/point.ts";
import { createSnapshot, deleteSnapshot, isStale, readSnapshots } from "../log/snapshots.ts";
import { systemClock } from "../util/clock.ts";
import { type Logger, stderrLogger } from "../util/log.ts";
import { flagOption, textOption, UsageError } from "./options.ts";
import { listVolume, parseTool, retriedSelection, where } from "./tool_support.ts";

const OPTIONS = {
  at: textOption({
    help:
      "create: the point to keep (object number, RFC 3339 time or snapshot name; default: the newest object)",
    placeholder: "POINT",
  }),
  json: flagOption({ help: "list: print JSON" }),
};

const SUMMARY = "Creates, lists and deletes named snapshots: points of the log kept exact until deleted.\n" +
  "create and delete write one small key; both are safe while a daemon serves the volume.";

export async function snapshotCommand(args: string[], log: Logger = stderrLogger): Promise<number> {
  const parsed = parseTool(args, {
    command: "snapshot",
    usage: "create NAME [--at POINT] | list | delete NAME [options]",
    summary: SUMMARY,
    options: OPTIONS,
  });
  if (parsed.help) return 0;
  const [action, name, ...extra] = parsed.positionals;
  if (extra.length > 0) throw new UsageError(`Unexpected argument "${extra[0]}"`);
  const selection = retriedSelection(parsed.selection, log);
  const { store, prefix } = selection;
  const state = await listVolume(selection, { mustExist: true });
  switch (action) {
    case "create": {
      if (name === undefined || !isSnapshotName(name)) {
        throw new UsageError(
          "snapshot create needs a NAME of 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit",
        );
      }
      const at = parsed.values.at;
      const point = at === undefined
        ? { kind: "sequence" as const, sequence: state.endSequence, text: String(state.endSequence) }
        : parsePoint(at, parsed.options.source("at"));
      const resolved = await resolvePoint(store, state, point);
      await createSnapshot(store, prefix, {
        version: 1,
        name,
        sequence: resolved.sequence,
        createdMs: systemClock.wallMs(),
      });
      log(`Created snapshot "${name}" of ${resolved.description} ${where(selection)}.`);
      return 0;
    }
    case "list": {
      if (name !== undefined) throw new UsageError(`Unexpected argument "${name}"`);
      const now = systemClock.wallMs();
      const all = await readSnapshots(store, state);
      if (parsed.values.json) {
        console.log(JSON.stringify(all, null, 2));
        return 0;
      }
      for (const s of all) {
        const pin = s.expiresMs === undefined ? "" : isStale(s, now) ? "  (stale pin)" : "  (pin)";
        const kind = s.clone === undefined
          ? pin
          : `  (clone "${s.clone.prefix}"${
            s.clone.bucket === undefined ? "" : ` in bucket "${s.clone.bucket}"`
          } reads objects up to ${s.clone.through})`;
        console.log(`${s.name}\tobject ${s.sequence}\tcreated ${new Date(s.createdMs).toISOString()}${kind}`);
      }
      return 0;
    }
    case "delete": {
      if (name === undefined) throw new UsageError("snapshot delete needs a NAME");
      await deleteSnapshot(store, prefix, name);
      log(`Deleted snapshot "${name}"; garbage collection may now reclaim what only it kept.`);
      return 0;
    }
    default:
      throw new UsageError(`Unknown snapshot action "${action ?? ""}": use create, list or delete`);
  }
}
