/**
 * @module
 * The one retry loop for store calls (S3Store and the SDK make exactly one request per call).
 * Transient errors (5xx, SlowDown, refused connections, expired deadlines) are retried with capped
 * exponential backoff on the injected clock; anything else ends the loop at once. With
 * `attemptsMax: Infinity` the loop waits out an outage of any length: only a permanent error (bad
 * credentials, a missing bucket, a malformed answer) or the caller's `abort` check (a closed or
 * fenced volume) ends it. A shared StoreHealth turns the failures of every loop into one line when
 * the store goes away and one when it is back.
 *
 * The loop runs in one layer only: RetryingStore wraps a store so that each of its calls is one
 * loop, and code above src/store/ takes a store, never a policy (docs/design/retries.md). A
 * RetryingStore cannot wrap another, so no call path retries inside a retry.
 */

import type { Clock } from "../util/clock.ts";
import { assert } from "../util/assert.ts";
import type { StoreHealth } from "./health.ts";
import {
  type ByteRange,
  type GetResult,
  type HeadResult,
  isStoreError,
  type ListOptions,
  type ListPage,
  type ObjectStore,
  type PutOptions,
  type PutResult,
} from "./store.ts";

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

/**
 * A store whose every call is one withRetries loop around the same call on `inner` (the shape of
 * SlateDB's RetryingObjectStore). readNow passes straight through (it never fails: false means
 * "ask get()"), and so do check (a start-up probe reports the first answer) and close.
 */
export class RetryingStore implements ObjectStore {
  readonly description: string;
  readonly bucket?: string;
  readonly policy: RetryPolicy;
  readonly readNow?: (key: string, offsetBytes: number, dest: Uint8Array) => boolean;
  readonly check?: () => Promise<void>;
  readonly inBucket?: (bucket: string) => RetryingStore;
  readonly #inner: ObjectStore;

  constructor(inner: ObjectStore, policy: RetryPolicy) {
    assert(!(inner instanceof RetryingStore), "a RetryingStore wraps a store that does not retry");
    if (!(policy.attemptsMax >= 1)) throw new RangeError(`bad attemptsMax ${policy.attemptsMax}`);
    this.#inner = inner;
    this.policy = policy;
    this.description = inner.description;
    if (inner.bucket !== undefined) this.bucket = inner.bucket;
    // Defined only where the inner store has them: callers test for their presence.
    if (inner.readNow !== undefined) this.readNow = inner.readNow.bind(inner);
    if (inner.check !== undefined) this.check = () => inner.check!();
    if (inner.inBucket !== undefined) {
      const buckets = new Map<string, RetryingStore>();
      this.inBucket = (bucket) => {
        let store = buckets.get(bucket);
        if (store === undefined) {
          buckets.set(bucket, store = new RetryingStore(inner.inBucket!(bucket), policy));
        }
        return store;
      };
    }
  }

  /** The same inner store under another policy (e.g. its own abort check), not a wrapper of this one. */
  withPolicy(policy: RetryPolicy): RetryingStore {
    return new RetryingStore(this.#inner, policy);
  }

  put(key: string, body: Uint8Array, options?: PutOptions): Promise<PutResult> {
    // Safe to repeat: a conditional PUT finding its own bytes already stored succeeds (store.ts).
    return withRetries(this.policy, () => this.#inner.put(key, body, options));
  }

  get(key: string, range?: ByteRange): Promise<GetResult> {
    return withRetries(this.policy, () => this.#inner.get(key, range));
  }

  head(key: string): Promise<HeadResult> {
    return withRetries(this.policy, () => this.#inner.head(key));
  }

  list(options: ListOptions): Promise<ListPage> {
    return withRetries(this.policy, () => this.#inner.list(options));
  }

  delete(key: string): Promise<void> {
    return withRetries(this.policy, () => this.#inner.delete(key));
  }

  copy(sourceKey: string, destinationKey: string, options?: PutOptions): Promise<void> {
    return withRetries(this.policy, () => this.#inner.copy(sourceKey, destinationKey, options));
  }

  close(): Promise<void> {
    return this.#inner.close();
  }
}

/** `store` retried under `policy`: a RetryingStore's sibling over the same inner store, never a wrapper of it. */
export function retrying(store: ObjectStore, policy: RetryPolicy): RetryingStore {
  return store instanceof RetryingStore ? store.withPolicy(policy) : new RetryingStore(store, policy);
}
