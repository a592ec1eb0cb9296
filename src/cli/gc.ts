/**
 * @module
 * `lsvd gc --dry-run [--retention DURATION] [--object-size SIZE]`: what the daemon's next
 * garbage-collection pass would reclaim, gathered and planned by the same function the daemon's
 * pass runs (src/log/gc_inputs.ts), without changing anything.
 * Collection itself runs only inside the daemon that holds the writer lease (`serve --gc-interval`):
 * deleting needs the writer's map, and only the lease holder may delete.
 */

import { DEFAULT_GC_THRESHOLDS, passThresholds } from "../log/gc.ts";
import { type GcRound, planGcRound } from "../log/gc_inputs.ts";
import { loadLog } from "../log/load.ts";
import type { LogState } from "../log/log_state.ts";
import { sealTimeOf } from "../log/point.ts";
import { pinnedLoad } from "../log/snapshots.ts";
import type { ExtentMap } from "../map/extent_map.ts";
import type { ObjectStore } from "../store/store.ts";
import { OBJECT_DATA_BYTES_MAX, SECTOR_BYTES } from "../util/constants.ts";
import { systemClock } from "../util/clock.ts";
import { type Logger, stderrLogger } from "../util/log.ts";
import { durationOption, flagOption, sizeOption, UsageError } from "./options.ts";
import { DEFAULT_OBJECT_BYTES, DEFAULT_RETENTION_MS } from "../volume/volume_options.ts";
import { listVolume, parseTool, retriedSelection, where } from "./tool_support.ts";

const OPTIONS = {
  "dry-run": flagOption({ help: "Say what a pass would reclaim; change nothing (required)" }),
  retention: durationOption({
    help: "The retention window the daemon runs with",
    default: DEFAULT_RETENTION_MS,
    placeholder: "DURATION",
  }),
  "object-size": sizeOption({
    help: "The --object-size the daemon runs with (small objects are packed relative to it)",
    default: DEFAULT_OBJECT_BYTES,
    sectorsUpTo: OBJECT_DATA_BYTES_MAX,
    placeholder: "SIZE",
  }),
};

const SUMMARY = "Says what the daemon's next garbage-collection pass would reclaim (objects deleted\n" +
  "outright, live data copied, bytes freed): the same plan from the same inputs. Collection itself\n" +
  "runs inside 'lsvd serve' (--retention, --gc-interval).";

export async function gcCommand(args: string[], log: Logger = stderrLogger): Promise<number> {
  const parsed = parseTool(args, {
    command: "gc",
    usage: "--dry-run [options]",
    summary: SUMMARY,
    options: OPTIONS,
  });
  if (parsed.help) return 0;
  if (parsed.positionals.length > 0) throw new UsageError(`Unexpected argument "${parsed.positionals[0]}"`);
  if (!parsed.values["dry-run"]) {
    throw new UsageError(
      "lsvd gc only plans (--dry-run): collection runs inside 'lsvd serve' (--gc-interval)",
    );
  }
  const { retention: retentionMs, "object-size": objectBytes } = parsed.values;
  const selection = retriedSelection(parsed.selection, log);
  const state = await listVolume(selection, { mustExist: true });
  const { head, round } = await dryRunRound(selection.store, state, {
    retentionMs,
    objectBytes,
    wallNowMs: systemClock.wallMs(),
    log,
  });
  const { present, pmin, plan, retained } = round;
  const bucketBytes = present.reduce((n, o) => n + o.sizeBytes, 0);
  const liveBytes = [...head.liveObjects()].reduce((n, [, s]) => n + s * SECTOR_BYTES, 0);
  console.log(`log objects ${present.length}, ${bucketBytes} bytes; live data ${liveBytes} bytes`);
  if (pmin === 0) {
    console.log(`nothing to reclaim: no object was sealed before the ${retentionMs} ms retention window`);
    return 0;
  }
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

/**
 * The round the daemon's next pass would run on this bucket (src/log/gc_inputs.ts) with its default
 * thresholds for objects of `objectBytes`, every map loaded afresh.
 */
export async function dryRunRound(
  store: ObjectStore,
  state: LogState,
  o: { retentionMs: number; objectBytes: number; wallNowMs: number; log: Logger },
): Promise<{ head: ExtentMap; round: GcRound }> {
  const load = { concurrency: 32, log: o.log };
  const head = (await loadLog(store, state, load)).map;
  const round = await planGcRound(store, state, {
    head,
    durableThrough: Infinity,
    retentionMs: o.retentionMs,
    wallNowMs: o.wallNowMs,
    knownOldThrough: 0,
    thresholds: passThresholds(DEFAULT_GC_THRESHOLDS, o.objectBytes),
    log: o.log,
    sources: {
      sealTimeOf: (x) => sealTimeOf(store, x),
      mapAt: async (pmin) =>
        pmin >= state.endSequence ? head : (await loadLog(store, state, { ...load, atSequence: pmin })).map,
      snapshotMap: async (s) => (await loadLog(store, state, { ...load, ...pinnedLoad(s) })).map,
    },
  });
  return { head, round };
}
