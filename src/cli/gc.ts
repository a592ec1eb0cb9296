/**
 * @module
 * `lsvd gc --dry-run [--retention DURATION]`: what garbage collection would reclaim now, computed
 * offline with the same planner the daemon runs (src/log/gc.ts) and without changing anything.
 * Collection itself runs only inside the daemon that holds the writer lease (`serve --gc-interval`):
 * deleting needs the writer's map, and only the lease holder may delete.
 */

import { DEFAULT_GC_THRESHOLDS, planPass, type RetainedMap, retentionPoint } from "../log/gc.ts";
import { loadLog } from "../log/load.ts";
import { sealTimeOf } from "../log/point.ts";
import { isStale, readSnapshots } from "../log/snapshots.ts";
import { SECTOR_BYTES } from "../util/constants.ts";
import { systemClock } from "../util/clock.ts";
import { type Logger, stderrLogger } from "../util/log.ts";
import { parseDurationMs, UsageError } from "./options.ts";
import { listVolume, parseTool, toolRetry, where } from "./tool_support.ts";

const OPTIONS = {
  "dry-run": { type: "boolean" as const, help: "Say what a pass would reclaim; change nothing (required)" },
  retention: {
    type: "string" as const,
    help: "The retention window the daemon runs with (default 24h)",
    placeholder: "DURATION",
  },
};

const SUMMARY = "Says what garbage collection would reclaim now (objects deleted outright, live data\n" +
  "copied, bytes freed). Collection itself runs inside 'lsvd serve' (--retention, --gc-interval).";

export async function gcCommand(args: string[], log: Logger = stderrLogger): Promise<number> {
  const parsed = parseTool(args, {
    command: "gc",
    usage: "--dry-run [options]",
    summary: SUMMARY,
    options: OPTIONS,
  });
  if (parsed.help) return 0;
  if (parsed.positionals.length > 0) throw new UsageError(`Unexpected argument "${parsed.positionals[0]}"`);
  if (parsed.values["dry-run"] !== true) {
    throw new UsageError(
      "lsvd gc only plans (--dry-run): collection runs inside 'lsvd serve' (--gc-interval)",
    );
  }
  const retentionMs = parseDurationMs(
    (parsed.values.retention as string | undefined) ?? "24h",
    "--retention",
  );
  const retry = toolRetry(log);
  const { selection } = parsed;
  const { store } = selection;
  const state = await listVolume(selection, retry, { mustExist: true });
  const load = { concurrency: 32, retry, log };
  const head = await loadLog(store, state, load);
  const present = state.objects.slice(0, state.gapFreeCount);
  const record = state.collectedRecord;
  const cutoffMs = systemClock.wallMs() - retentionMs;
  const pmin = Math.max(
    await retentionPoint(present, cutoffMs, (o) => sealTimeOf(store, o, retry)),
    record?.retainedFromSequence ?? 0,
  );
  const bucketBytes = present.reduce((n, o) => n + o.sizeBytes, 0);
  const liveBytes = [...head.map.liveObjects()].reduce((n, [, s]) => n + s * SECTOR_BYTES, 0);
  console.log(`log objects ${present.length}, ${bucketBytes} bytes; live data ${liveBytes} bytes`);
  if (pmin === 0) {
    console.log(`nothing to reclaim: no object was sealed before the ${retentionMs} ms retention window`);
    return 0;
  }
  const atPmin = pmin >= state.endSequence
    ? head
    : await loadLog(store, state, { ...load, atSequence: pmin });
  const retained: RetainedMap[] = [{ sequence: pmin, map: atPmin.map }];
  const points = (await readSnapshots(store, state, retry)).filter((s) => !isStale(s, systemClock.wallMs()));
  for (const s of points.filter((p) => p.sequence < pmin)) {
    const m = await loadLog(store, state, { ...load, atSequence: s.sequence, pinningOnly: true });
    retained.push({ sequence: s.sequence, map: m.map });
  }
  const plan = planPass({
    objects: present,
    head: head.map,
    retained,
    retainedFrom: pmin,
    keep: new Set([...state.checkpoints.map((c) => c.sequence), state.endSequence]),
    movesAllowed: !points.some((s) => s.expiresMs !== undefined),
    thresholds: { ...DEFAULT_GC_THRESHOLDS, passCopyBytesMax: Infinity, passDeletesMax: Infinity },
  });
  const freed = plan.reduce((n, c) => n + c.object.sizeBytes, 0);
  const copied = plan.reduce((n, c) => n + c.liveSectors * SECTOR_BYTES, 0);
  const count = (why: string) => plan.filter((c) => c.why === why).length;
  console.log(
    `points from object ${pmin} on are kept (sealed within ${retentionMs} ms), plus ${
      retained.length - 1
    } older snapshots`,
  );
  console.log(
    `would delete ${plan.length} objects (${freed} bytes): ${count("dead")} hold no needed data, ` +
      `${count("sparse")} mostly dead and ${
        count("small")
      } small ones after copying ${copied} bytes of live data`,
  );
  log(`Dry run ${where(selection)}: nothing was changed.`);
  return 0;
}
