/**
 * @module
 * Loading a volume: rebuild the extent map of the log as it stands (or as it stood at an earlier
 * point) from a checkpoint plus the headers after it, read many at once and applied strictly in
 * order. Loading never modifies the bucket: serving read-only, `--at`, and every offline tool use
 * it as is; the writer runs repair (src/log/repair.ts) afterwards.
 */

import type { Trailer } from "../format/object.ts";
import type { ObjectStore } from "../store/store.ts";
import { isLsvdError, LsvdError, messageOf } from "../util/errors.ts";
import type { Logger } from "../util/log.ts";
import { readInOrder } from "../util/ordered.ts";
import { ExtentMap } from "../volume/extent_map.ts";
import { type RetryPolicy, withRetries } from "../volume/retry.ts";
import { applyObject } from "./apply.ts";
import { loadCheckpoint } from "./checkpoints.ts";
import { checkFormatRecord } from "./format_record.ts";
import type { LoggedObject, LogState } from "./log_state.ts";
import { readObjectSummary } from "./object_reader.ts";

export interface LoadOptions {
  /** Replay only objects 1..atSequence (a past state); default: the whole gap-free log. */
  atSequence?: number;
  /** Header reads in flight at once. */
  concurrency: number;
  retry: RetryPolicy;
  log: Logger;
  /** Called as objects are applied (done, total), for progress lines. */
  onProgress?: (done: number, total: number) => void;
  /** Ignore checkpoints (verification, tests). */
  skipCheckpoints?: boolean;
}

export interface LoadedLog {
  state: LogState;
  map: ExtentMap;
  /** The last object applied: the point this map shows (0 for an empty log). */
  lastSequence: number;
  /** From the newest trailer that records it; undefined when no object has a trailer. */
  volumeSizeBytes: number | undefined;
  /** Highest writer epoch seen in the replayed log and in the epoch keys. */
  writerEpoch: number;
  /** The checkpoint replay started from (0: none): headers after it were read. */
  checkpointSequence: number;
  /** CRC from the newest applied object's trailer (0 when it has none), for the next checkpoint. */
  lastObjectCrc32: number;
  /** Trailer of the newest applied object, when it was read (not when a checkpoint covered it). */
  lastTrailer: Trailer | undefined;
  /** Objects present beyond the point (after a gap, or after atSequence). */
  beyond: LoggedObject[];
  /** Objects read and applied (not counting those a checkpoint covered). */
  replayed: number;
}

export async function loadLog(store: ObjectStore, state: LogState, options: LoadOptions): Promise<LoadedLog> {
  checkFormatRecord(state.format, state.prefix);
  const end = options.atSequence ?? state.gapFreeCount;
  if (end > state.gapFreeCount) {
    throw new LsvdError(
      "invalid",
      `Cannot load the volume at object ${end}: the log ends at object ${state.gapFreeCount}`,
    );
  }
  const log = state.objects.slice(0, state.gapFreeCount);
  const loaded: LoadedLog = {
    state,
    map: new ExtentMap(),
    lastSequence: 0,
    volumeSizeBytes: undefined,
    writerEpoch: state.epochs.at(-1) ?? 0,
    checkpointSequence: 0,
    lastObjectCrc32: 0,
    lastTrailer: undefined,
    beyond: state.objects.filter((o) => o.sequence > end),
    replayed: 0,
  };
  const base = options.skipCheckpoints ? undefined : await loadCheckpoint(
    store,
    { log, checkpoints: state.checkpoints, through: end },
    options.retry,
    options.log,
  );
  if (base !== undefined) {
    loaded.map = ExtentMap.fromArray(base.extents);
    loaded.lastSequence = base.sequence;
    loaded.volumeSizeBytes = base.volumeSizeBytes;
    loaded.writerEpoch = Math.max(loaded.writerEpoch, base.writerEpoch);
    loaded.checkpointSequence = base.sequence;
    loaded.lastObjectCrc32 = base.objectCrc32;
  }
  const replay = log.slice(loaded.lastSequence, end);
  await readInOrder(
    replay,
    options.concurrency,
    (o) =>
      withRetries(options.retry, () => readObjectSummary(store, o)).catch((e) => {
        if (!isLsvdError(e, "data")) throw e;
        throw new LsvdError(
          "data",
          `Cannot recover object "${o.key}": ${
            messageOf(e.cause ?? e)
          }; 'lsvd verify' lists every damaged object, 'lsvd rollback --to ${
            o.sequence - 1
          }' rolls the volume back to before it`,
          { cause: e },
        );
      }),
    (o, s, i) => {
      applyObject(loaded.map, o.sequence, {
        entries: s.entries,
        zeroRanges: s.zeroRanges,
        origins: s.trailer?.origins,
      });
      loaded.lastSequence = o.sequence;
      loaded.lastTrailer = s.trailer;
      loaded.lastObjectCrc32 = s.trailer?.crc32 ?? 0;
      if (s.trailer !== undefined) {
        loaded.volumeSizeBytes = s.trailer.volumeSizeBytes;
        loaded.writerEpoch = Math.max(loaded.writerEpoch, s.trailer.writerEpoch);
      }
      loaded.replayed++;
      options.onProgress?.(i + 1, replay.length);
    },
  );
  return loaded;
}
