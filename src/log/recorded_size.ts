/**
 * @module
 * The size a volume records, read without opening it: `lsvd setup` shows it before changing
 * anything, and a writer refuses a shrink with it before it takes the lease (so a refused start
 * leaves the bucket exactly as it found it). Read through the log layer, as recovery reads it.
 */

import { listLogState } from "./log_state.ts";
import { readObjectSummary } from "./object_reader.ts";
import type { ObjectStore } from "../store/store.ts";
import { type RetryPolicy, withRetries } from "../store/retry.ts";

/** Newest objects looked at for a trailer before giving up (objects written by other tools have none). */
const TRAILER_LOOKBACK = 8;

/**
 * The size recorded by the newest trailer of the replayable log (what recovery will find), or
 * undefined for an empty log or when none of the newest objects has a trailer.
 */
export async function recordedSizeBytes(
  store: ObjectStore,
  prefix: string,
  retry: RetryPolicy,
): Promise<number | undefined> {
  const state = await listLogState(store, prefix, retry);
  const log = state.objects.slice(0, state.gapFreeCount);
  for (const o of log.slice(-TRAILER_LOOKBACK).reverse()) {
    const summary = await withRetries(retry, () => readObjectSummary(store, o));
    if (summary.trailer !== undefined) return summary.trailer.volumeSizeBytes;
  }
  return undefined;
}
