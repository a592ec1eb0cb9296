/**
 * @module
 * The one retry loop for store calls (S3Store and the SDK make exactly one request per call).
 * Transient errors (5xx, SlowDown, refused connections, expired deadlines) are retried with capped
 * exponential backoff on the injected clock; anything else ends the loop at once. With
 * `attemptsMax: Infinity` the loop waits out an outage of any length: only a permanent error (bad
 * credentials, a missing bucket, a malformed answer) or the caller's `abort` check (a closed or
 * fenced volume) ends it. A shared StoreHealth turns the failures of every loop into one line when
 * the store goes away and one when it is back.
 */

import type { Clock } from "../util/clock.ts";
import type { StoreHealth } from "./health.ts";
import { isStoreError } from "./store.ts";

export interface RetryPolicy {
  clock: Clock;
  /** Attempts per call, the first included; Infinity retries transient errors until the store answers. */
  attemptsMax: number;
  /** Called before each retry, e.g. to log (leave it out where `health` reports outages). */
  onRetry?: (attempt: number, error: unknown) => void;
  /** Checked before every attempt: an error returned ends the loop with that error. */
  abort?: () => Error | undefined;
  /** Outage tracker shared by the process's retry loops. */
  health?: StoreHealth;
  /** Jitter in [0, 1): each delay is scaled to between half and all of itself; default no jitter. */
  random?: () => number;
}

const BACKOFF_MS_FIRST = 100;
const BACKOFF_MS_MAX = 5_000;

/** Delay before retry number `attempt` (1 = the first retry). */
export function backoffMs(attempt: number, random?: () => number): number {
  const ceiling = Math.min(BACKOFF_MS_FIRST * 2 ** (attempt - 1), BACKOFF_MS_MAX);
  return random === undefined ? ceiling : ceiling * (0.5 + random() / 2);
}

export async function withRetries<T>(policy: RetryPolicy, fn: () => Promise<T>): Promise<T> {
  if (!(policy.attemptsMax >= 1)) throw new RangeError(`bad attemptsMax ${policy.attemptsMax}`);
  let failingSinceMs: number | undefined;
  for (let attempt = 1;; attempt++) {
    const stop = policy.abort?.();
    if (stop !== undefined) throw stop;
    const startedMs = policy.clock.nowMs();
    let result: T;
    try {
      result = await fn();
    } catch (e) {
      if (!isStoreError(e, "Transient")) {
        if (isStoreError(e)) policy.health?.answered(); // the server gave a deliberate answer
        throw e;
      }
      failingSinceMs ??= startedMs; // a request that hung until its deadline was failing all along
      policy.health?.failed(e, { startedMs, failingSinceMs });
      if (attempt >= policy.attemptsMax) throw e;
      policy.onRetry?.(attempt, e);
      await policy.clock.sleep(backoffMs(attempt, policy.random));
      continue;
    }
    policy.health?.answered();
    return result;
  }
}
