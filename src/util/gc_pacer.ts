/**
 * @module
 * Frees dead ArrayBuffers sooner than V8 does on its own. The bytes lsvd moves (NBD payloads and
 * replies, object bodies, GET bodies and the socket chunks they arrive in) are ArrayBuffers outside
 * the V8 heap; their memory returns only when a collection finds them dead, and V8 starts one for
 * them only once external memory has grown by tens of MiB since the last. On a bucket a sequential
 * read of the 512 MiB VM's defaults kept 60-100 MiB of them resident on this machine -- most of the
 * 128 MiB budget (bench/RESULTS.md, "Issue 23: memory on a bucket").
 *
 * GarbagePacer samples external memory on a timer and, when it grew by more than slackBytes since the
 * lowest figure seen after the last collection, runs a full collection now. The cost is bounded by
 * the traffic: at most one collection per slackBytes of buffers (one of lsvd's 20-40 MiB heap takes
 * a few ms), none while idle. The collector is injected; exposedGc() obtains V8's at run time.
 */

import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";

export interface GarbagePacerOptions {
  /** Growth of external memory tolerated before collecting. */
  slackBytes: number;
  /** A full garbage collection. */
  collect: () => void;
  /** External memory now (default: Deno.memoryUsage().external). */
  externalBytes?: () => number;
  /** How often to sample (default 50 ms). */
  intervalMs?: number;
}

export class GarbagePacer {
  #o: Required<GarbagePacerOptions>;
  #floorBytes: number;
  #collections = 0;
  #timer: ReturnType<typeof setInterval> | undefined;

  constructor(options: GarbagePacerOptions) {
    this.#o = {
      externalBytes: () => Deno.memoryUsage().external,
      intervalMs: 50,
      ...options,
    };
    this.#floorBytes = this.#o.externalBytes();
  }

  /** Collections run so far. */
  get collections(): number {
    return this.#collections;
  }

  /** Samples on a timer that does not keep the process alive; stop() ends it. */
  start(): void {
    if (this.#timer !== undefined) return;
    const timer = setInterval(() => this.check(), this.#o.intervalMs);
    Deno.unrefTimer(timer);
    this.#timer = timer;
  }

  stop(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** One sample: collects when external memory grew past the slack. */
  check(): void {
    const now = this.#o.externalBytes();
    // Buffers freed after the last collection (swept late, or by V8 itself) lower the floor.
    if (now < this.#floorBytes) this.#floorBytes = now;
    if (now - this.#floorBytes <= this.#o.slackBytes) return;
    this.#o.collect();
    this.#collections++;
    this.#floorBytes = this.#o.externalBytes();
  }
}

/**
 * V8's full collector, or undefined where it cannot be had. With `--v8-flags=--expose-gc` (the
 * `deno task` commands pass it) it is V8's own: one mark-compact. Without, Deno still honours
 * `--expose-gc` set at run time for a context created after it (node:vm), but that one runs V8's
 * low-memory notification: two or more memory-reducing mark-compacts, about twice the cost.
 */
export function exposedGc(): (() => void) | undefined {
  try {
    setFlagsFromString("--expose-gc");
    const gc: unknown = runInNewContext("gc");
    return typeof gc === "function" ? () => gc() : undefined;
  } catch {
    return undefined;
  }
}
