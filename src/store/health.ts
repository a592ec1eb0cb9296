/**
 * @module
 * Whether object storage is answering, shared by every retry loop of a process, so an outage is
 * reported as two lines (when it starts, and when it ends with how long it lasted) instead of one
 * line per failed attempt of each of dozens of requests in flight.
 *
 * A single failed attempt is not an outage: stores shed load with the odd 503 all the time. The
 * store counts as unreachable once one call has been failing for `outageAfterMs` with no answer
 * to anyone in that time; any answer (success, or an error the server gave deliberately, such as
 * NotFound) ends the outage. An attempt sent before the latest answer proves nothing new when it
 * fails (after a black hole, requests sent into it time out one deadline after the store is back),
 * so it cannot start an outage.
 */

import type { Clock } from "../util/clock.ts";
import type { Logger } from "../util/log.ts";

export interface StoreHealthOptions {
  clock: Clock;
  log: Logger;
  /** How long one call must keep failing before the store counts as unreachable; default 2,000. */
  outageAfterMs?: number;
}

/** One failed attempt of a call, as the retry loop saw it. */
export interface FailedAttempt {
  /** When this attempt was sent. */
  startedMs: number;
  /** When the call's first failed attempt was sent (a request that hung until its deadline counts from then). */
  failingSinceMs: number;
}

export class StoreHealth {
  #clock: Clock;
  #log: Logger;
  #outageAfterMs: number;
  #lastAnswerMs = -Infinity;
  /** Start of the current outage (the first failure of the call that declared it). */
  #unreachableSinceMs: number | undefined;

  constructor(options: StoreHealthOptions) {
    this.#clock = options.clock;
    this.#log = options.log;
    this.#outageAfterMs = options.outageAfterMs ?? 2_000;
  }

  /** True between the "unreachable" and the "reachable again" line. */
  get unreachable(): boolean {
    return this.#unreachableSinceMs !== undefined;
  }

  /** An attempt ended in a transient error. */
  failed(error: unknown, attempt: FailedAttempt): void {
    if (this.#unreachableSinceMs !== undefined || attempt.startedMs < this.#lastAnswerMs) return;
    const sinceMs = Math.max(attempt.failingSinceMs, this.#lastAnswerMs);
    if (this.#clock.nowMs() - sinceMs < this.#outageAfterMs) return;
    this.#unreachableSinceMs = sinceMs;
    this.#log(
      `Object storage unreachable (${
        error instanceof Error ? error.message : String(error)
      }); retrying until it returns.`,
    );
  }

  /** The store answered. */
  answered(): void {
    this.#lastAnswerMs = this.#clock.nowMs();
    if (this.#unreachableSinceMs === undefined) return;
    const awayS = Math.round((this.#clock.nowMs() - this.#unreachableSinceMs) / 1000);
    this.#unreachableSinceMs = undefined;
    this.#log(`Object storage reachable again after ${awayS} s.`);
  }
}
