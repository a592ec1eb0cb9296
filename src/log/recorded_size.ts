/**
 * @module
 * The size a volume records, read without opening it: `lsvd setup` shows it before changing
 * anything, and a writer refuses a shrink with it before it takes the lease (so a refused start
 * leaves the bucket exactly as it found it). Read through the log layer, as recovery reads it.
 * And a cheaper glance (peekVolume) for the refusals that only need to know whether there is a log.
 */

import { checkpointPrefix, parseLogKey } from "../format/keys.ts";
import { readFormatRecord } from "./format_record.ts";
import { listLogState } from "./log_state.ts";
import { readObjectSummary } from "./object_reader.ts";
import type { ObjectStore } from "../store/store.ts";

/** Newest objects looked at for a trailer before giving up (objects written by other tools have none). */
const TRAILER_LOOKBACK = 8;

/**
 * The size recorded by the newest trailer of the replayable log (what recovery will find), or
 * undefined for an empty log or when none of the newest objects has a trailer.
 */
export async function recordedSizeBytes(
  store: ObjectStore,
  prefix: string,
): Promise<number | undefined> {
  const state = await listLogState(store, prefix);
  const log = state.objects.slice(0, state.gapFreeCount);
  for (const o of log.slice(-TRAILER_LOOKBACK).reverse()) {
    const summary = await readObjectSummary(store, o);
    if (summary.trailer !== undefined) return summary.trailer.volumeSizeBytes;
  }
  return undefined;
}

/** What a glance at a prefix tells (peekVolume). */
export interface VolumePeek {
  /** It holds a log: objects or a checkpoint, or a clone's link to its parent's log (so a recorded size). */
  hasLog: boolean;
  /** It holds anything of a volume at all. */
  exists: boolean;
}

/**
 * A glance at a prefix, without listing the whole log (a LIST of one key or two, and a GET of the
 * format record only when there is no log).
 */
export async function peekVolume(store: ObjectStore, prefix: string): Promise<VolumePeek> {
  // Every log name starts with "0" until 2^60 objects (log_state.ts lists them the same way).
  const [objects, checkpoints] = await Promise.all([
    store.list({ prefix: `${prefix}0`, maxKeys: 1 }),
    store.list({ prefix: checkpointPrefix(prefix), maxKeys: 1 }),
  ]);
  const hasLog = objects.objects.some((o) => parseLogKey(prefix, o.key) !== undefined) ||
    checkpoints.objects.length > 0;
  if (hasLog) return { hasLog, exists: true };
  const format = await readFormatRecord(store, prefix);
  // A clone before its first own object reads its parent's log: its size is recorded there.
  return { hasLog: format?.parent !== undefined, exists: format !== undefined };
}
