/**
 * @module
 * The check `serve` makes before opening the volume so that a mistake never writes anything:
 * a --size smaller than the recorded one needs --allow-shrink, because a filesystem may still
 * claim the space even where nothing is written yet (Volume.open itself only refuses a shrink
 * below written data). Read through the log layer, as recovery reads it.
 */

import { listLogState } from "../log/log_state.ts";
import { readObjectSummary } from "../log/object_reader.ts";
import type { ObjectStore } from "../store/store.ts";
import { type RetryPolicy, withRetries } from "../volume/retry.ts";
import { UsageError } from "./options.ts";

/** Newest objects looked at for a trailer before giving up (objects written by other tools have none). */
const TRAILER_LOOKBACK = 8;

export interface ShrinkCheck {
  /** --size, when given. */
  sizeBytes: number | undefined;
  allowShrink: boolean;
}

/** Throws a one-line UsageError when --size would shrink the volume and --allow-shrink was not given. */
export async function checkShrink(
  store: ObjectStore,
  prefix: string,
  check: ShrinkCheck,
  retry: RetryPolicy,
): Promise<void> {
  if (check.sizeBytes === undefined || check.allowShrink) return;
  const recorded = await recordedSizeBytes(store, prefix, retry);
  if (recorded !== undefined && check.sizeBytes < recorded) {
    const where = `${prefix === "" ? "" : `prefix ${prefix} of `}${store.description}`;
    throw new UsageError(
      `Cannot shrink the volume in ${where} from ${recorded} to ${check.sizeBytes} bytes ` +
        `without --allow-shrink: a filesystem on it may still use the space`,
    );
  }
}

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
