/**
 * @module
 * Whether object storage is answering, shared by every retry loop of a process, so an outage is
 * reported as two lines (when it starts, and when it ends with how long it lasted) instead of one
 * line per failed attempt of each of dozens of requests in flight.
 *
 * A single failed attempt is not an outage: stores shed load with the odd 503 all the time. The
 * store counts as unreachable once one call has been failing for `outageAfterMs`; any answer
 * (success, or an error the server gave deliberately, such as NotFound) ends the outage.
 */

import type { Clock } from "../util/clock.ts";
import type { Logger } from "../util/log.ts";

export interface StoreHealthOptions {
  clock: Clock;
  log: Logger;
  /** How long one call must keep failing before the store counts as unreachable; default 2,000. */
  outageAfterMs?: number;
}

export class StoreHealth {
  #clock: Clock;
  #log: Logger;
  #outageAfterMs: number;
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

  /** An attempt of a call failing since failingSinceMs ended in a transient error. */
  failed(error: unknown, failingSinceMs: number): void {
    if (this.#unreachableSinceMs !== undefined) return;
    if (this.#clock.nowMs() - failingSinceMs < this.#outageAfterMs) return;
    this.#unreachableSinceMs = failingSinceMs;
    this.#log(
      `Object storage unreachable (${
        error instanceof Error ? error.message : String(error)
      }); retrying until it returns.`,
    );
  }

  /** The store answered. */
  answered(): void {
    if (this.#unreachableSinceMs === undefined) return;
    const awayS = Math.round((this.#clock.nowMs() - this.#unreachableSinceMs) / 1000);
    this.#unreachableSinceMs = undefined;
    this.#log(`Object storage reachable again after ${awayS} s.`);
  }
}
