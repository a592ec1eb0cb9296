/**
 * @module
 * `lsvd rollback --to POINT [--dry-run]`: the volume becomes the disk it was at POINT. Every log
 * object after POINT is moved under `archive/<id>/` (copied, then deleted newest first: never
 * destroyed, and a crash half way leaves a shorter log, never a different one), and checkpoints
 * after POINT are dropped (they describe objects that left the log). `--dry-run` lists what would
 * move and changes nothing.
 *
 * A writer must not run meanwhile: the tool takes the writer lease (refused while a daemon holds
 * it) and, for writers that take no lease, watches the log for a moment and refuses if it grows.
 */

import { archiveKey, logKey } from "../format/keys.ts";
import { occupySlots } from "../log/fence.ts";
import { claimEpoch, currentHolder, readLease } from "../log/lease.ts";
import { readObjectSummary } from "../log/object_reader.ts";
import { parsePoint, type Point, resolvePoint } from "../log/point.ts";
import { rollbackLog } from "../log/rollback.ts";
import { cloneNamed, isStale, readSnapshots } from "../log/snapshots.ts";
import type { LogState } from "../log/log_state.ts";
import type { ObjectStore } from "../store/store.ts";
import { LsvdError } from "../util/errors.ts";
import { type Logger, stderrLogger } from "../util/log.ts";
import { flagOption, type Options, textOption, UsageError } from "./options.ts";
import type { SectorCipher } from "../crypto/sector_cipher.ts";
import { ENCRYPTION_OPTIONS, loadEncryptionKey } from "./encryption_key.ts";
import { cipherOf } from "../log/volume_encryption.ts";
import {
  listVolume,
  parseTool,
  refuseActiveWriter,
  retriedSelection,
  takeToolLease,
  type ToolLease,
  where,
} from "./tool_support.ts";

/**
 * A writer that did not shut down cleanly (its lease lapsed, never released) may still land uploads
 * in the numbers after the point, with an epoch no lower than the point's: recovery would take
 * them for the log. Its uploads go no further than W past its durable prefix, which is at most the
 * end of the log as listed before the rollback: fence objects of a newer epoch, carrying the size
 * at the point, fill every free number up to there (docs/design/fencing.md). Releasing our lease
 * afterwards is then honest.
 */
async function fenceAfterPoint(
  store: ObjectStore,
  prefix: string,
  o: {
    point: number;
    /** The first number after the point that the rollback left free (a rescue object takes one). */
    first: number;
    /** The end of the gap-free log before the rollback. */
    logEnd: number;
    lease: ToolLease;
    id: string;
    log: Logger;
  },
): Promise<void> {
  const window = o.lease.previousWindowObjects;
  if (window === 0 || o.point === 0) return;
  const last = Math.max(o.logEnd, o.point) + window;
  const key = logKey(prefix, o.point);
  const { sizeBytes } = await store.head(key);
  const { trailer } = await readObjectSummary(store, { sequence: o.point, key, sizeBytes });
  if (trailer === undefined) return; // a base-format log: no size to record, no epochs to compare
  let epoch = o.lease.epoch;
  if (trailer.writerEpoch >= epoch) {
    epoch = await claimEpoch(store, prefix, {
      atLeast: trailer.writerEpoch,
      holder: currentHolder(),
    });
  }
  const zombies = await occupySlots(
    store,
    {
      prefix,
      epoch,
      volumeSizeBytes: trailer.volumeSizeBytes,
      sealTimeMs: Date.now(),
      recoveryId: o.id,
      log: o.log,
    },
    o.first,
    last,
  );
  o.log(
    `Fenced objects ${o.first}..${last} against late uploads of the writer that did not shut down cleanly (archived ${zombies}).`,
  );
}

const OPTIONS = {
  ...ENCRYPTION_OPTIONS,
  to: textOption({
    help: "The point to return to: an object number, an RFC 3339 time or a snapshot name (required)",
    placeholder: "POINT",
  }),
  "dry-run": flagOption({ help: "List what would be moved; change nothing" }),
  "abandon-journal": flagOption({
    commandLineOnly: true,
    help: "Roll back although the lease names a write-back journal that may hold acknowledged writes " +
      "not yet stored (they are lost: the journal cannot be replayed after the log changed)",
  }),
};

const SUMMARY =
  "Rolls the volume back to POINT: log objects after it are moved under archive/ (never deleted),\n" +
  "newer checkpoints are dropped. Stop the daemon serving the volume first. Writes to the bucket\n" +
  "unless --dry-run.";

export async function rollbackCommand(args: string[], log: Logger = stderrLogger): Promise<number> {
  const parsed = parseTool(args, {
    command: "rollback",
    usage: "--to POINT [options]",
    summary: SUMMARY,
    options: OPTIONS,
  });
  if (parsed.help) return 0;
  const point = pointArgument(parsed);
  const dryRun = parsed.values["dry-run"];
  const selection = retriedSelection(parsed.selection, log);
  const { store, prefix } = selection;
  let state = await listVolume(selection, { mustExist: true });
  const cipher = rescueCipher(parsed.options, state, prefix);
  const resolved = await resolvePoint(store, state, point);
  await refuseLaterSnapshots(store, state, resolved.sequence);
  const id = `rollback-${Date.now().toString(36)}`;
  const plan = () => rollbackPlan(state, resolved.sequence); // of the latest listing
  if (dryRun) {
    await describeDryRun(selection, { plan: plan(), id, to: resolved.description, log }, {
      abandonJournal: parsed.values["abandon-journal"],
    });
    return 0;
  }
  const lease = await takeToolLease(selection, log, 1, {
    abandonJournal: parsed.values["abandon-journal"],
  });
  try {
    await refuseActiveWriter(selection, state);
    state = await listVolume(selection, { mustExist: true });
    const logEnd = state.endSequence;
    let firstFree = resolved.sequence + 1;
    const { objects, checkpoints } = plan();
    if (objects.length === 0 && checkpoints.length === 0 && state.collectedRecord?.rollback === undefined) {
      log(`Nothing to roll back: the log ends at ${resolved.description}.`);
    } else {
      lease.check();
      // Data garbage collection moved after the point is rescued into the object after it.
      const done = await rollbackLog(store, state, resolved.sequence, {
        log,
        archiveId: state.collectedRecord?.rollback?.archiveId ?? id,
        writerEpoch: lease.epoch,
        wallNowMs: Date.now(),
        check: () => lease.check(),
        cipher,
      });
      for (const c of checkpoints) await store.delete(c.key);
      if (done.rescuedSectors > 0) firstFree++;
      log(rolledBackLine(selection, { done, id, resolved, checkpoints: checkpoints.length }));
    }
    lease.check();
    await fenceAfterPoint(store, prefix, {
      point: resolved.sequence,
      first: firstFree,
      logEnd,
      lease,
      id,
      log,
    });
    await lease.release();
    return 0;
  } catch (e) {
    // Nothing of this tool is in flight once an await has failed: the next writer need not wait.
    await lease.release().catch(() => lease.abandon());
    throw e;
  }
}

/** The objects a rollback to `point` moves and the checkpoints it drops. */
/** Only a rescue reads data: an encrypted volume rolls back without its key unless one is needed. */
function rescueCipher(
  options: Options<typeof ENCRYPTION_OPTIONS>,
  state: LogState,
  prefix: string,
): SectorCipher | undefined {
  const secret = loadEncryptionKey(options);
  return secret === undefined ? undefined : cipherOf(state.format, secret, prefix);
}

function rollbackPlan(state: LogState, point: number) {
  return {
    objects: state.objects.filter((o) => o.sequence > point),
    checkpoints: state.checkpoints.filter((c) => c.sequence > point),
  };
}

/** The --to point (and no positional argument). */
function pointArgument(parsed: { positionals: string[]; options: Options<typeof OPTIONS> }): Point {
  if (parsed.positionals.length > 0) throw new UsageError(`Unexpected argument "${parsed.positionals[0]}"`);
  const to = parsed.options.values.to;
  if (to === undefined) throw new UsageError("Missing --to POINT: an object number or an RFC 3339 time");
  return parsePoint(to, parsed.options.source("to"));
}

/** What a dry run prints: each move and drop, the totals, and a journal the lease names. */
async function describeDryRun(
  { store, prefix }: { store: ObjectStore; prefix: string },
  d: {
    plan: { objects: readonly { key: string; sequence: number }[]; checkpoints: readonly { key: string }[] };
    id: string;
    to: string;
    log: Logger;
  },
  { abandonJournal }: { abandonJournal: boolean },
): Promise<void> {
  const { objects, checkpoints } = d.plan;
  const log = d.log;
  for (const o of objects) console.log(`would move ${o.key} to ${archiveKey(prefix, d.id, o.sequence)}`);
  for (const c of checkpoints) console.log(`would delete checkpoint ${c.key}`);
  log(
    `Dry run: rolling back to ${d.to} would move ${objects.length} objects and drop ${checkpoints.length} checkpoints; nothing was changed.`,
  );
  const journal = (await readLease(store, prefix))?.lease.journal;
  if (journal !== undefined && !abandonJournal) {
    log(
      `The lease names journal ${journal.dir} on host ${journal.host}, which may hold acknowledged writes not yet ` +
        "stored: the rollback itself is refused without --abandon-journal (replay it first with 'lsvd serve --journal').",
    );
  }
}

/** The line a done rollback prints. */
function rolledBackLine(
  selection: Parameters<typeof where>[0],
  r: {
    done: { moved: number; rescuedSectors: number };
    id: string;
    resolved: { sequence: number; description: string };
    checkpoints: number;
  },
): string {
  const rescued = r.done.rescuedSectors === 0
    ? ""
    : `, rescued ${r.done.rescuedSectors * 4096} bytes garbage collection had moved into object ${
      r.resolved.sequence + 1
    }`;
  return `Rolled back ${
    where(selection)
  } to ${r.resolved.description}: moved ${r.done.moved} objects under ${selection.prefix}archive/${r.id}/${rescued}, dropped ${r.checkpoints} checkpoints.`;
}

/** A snapshot after the point would name a number new writes reuse: it must be deleted first. */
async function refuseLaterSnapshots(store: ObjectStore, state: LogState, point: number) {
  const later = (await readSnapshots(store, state)).filter((s) =>
    s.sequence > point && !isStale(s, Date.now())
  );
  const first = later[0];
  if (first === undefined) return;
  if (first.clone !== undefined) {
    throw new LsvdError(
      "invalid",
      `Cannot roll back to object ${point}: the clone under ${
        cloneNamed(first.clone).where
      } reads this volume at object ${first.sequence}; ` +
        `run '${cloneNamed(first.clone).flatten}' first`,
    );
  }
  throw new LsvdError(
    "invalid",
    `Cannot roll back to object ${point}: snapshot "${first.name}" keeps object ${first.sequence} after it; ` +
      `delete it first ('lsvd snapshot delete ${first.name}')`,
  );
}
