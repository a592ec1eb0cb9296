/**
 * @module
 * One retry policy for the engine's store calls: transient errors (5xx, SlowDown, timeouts)
 * are retried with capped exponential backoff on the injected clock; anything else, or the
 * last attempt's error, is thrown.
 */

import { isStoreError } from "../store/store.ts";
import type { Clock } from "../util/clock.ts";

export interface RetryPolicy {
  clock: Clock;
  attemptsMax: number;
  /** Called before each retry, e.g. to log. */
  onRetry?: (attempt: number, error: unknown) => void;
}

function backoffMs(attempt: number): number {
  return Math.min(50 * 2 ** attempt, 5000);
}

export async function withRetries<T>(policy: RetryPolicy, fn: () => Promise<T>): Promise<T> {
  for (let attempt = 1;; attempt++) {
    try {
      return await fn();
    } catch (e) {
      if (!isStoreError(e, "Transient") || attempt >= policy.attemptsMax) throw e;
      policy.onRetry?.(attempt, e);
      await policy.clock.sleep(backoffMs(attempt));
    }
  }
}
