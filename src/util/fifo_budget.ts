/**
 * @module
 * The one bounded, first-come-first-served byte budget: the log writer's dirty bytes and the
 * write-back journal's disk and memory bytes both wait here. A writer that finds room adds its data
 * in the same synchronous step (check and use are one); one that must wait queues behind every
 * earlier waiter, so writes apply in issue order and what they hold stays under the bound however
 * fast clients write.
 *
 *   hasRoom(n)? -- yes -> add now
 *        `- no -> reserve(n) (queue) -> wake(): grants heads that fit, in order -> add -> granted(n)
 */

/** Whether lengthBytes more fit, given the bytes already granted to woken writers. */
export type Fits = (lengthBytes: number, reservedBytes: number) => boolean;

export class FifoBudget {
  #fits: Fits;
  #waiters: { lengthBytes: number; resolve: () => void }[] = [];
  #reservedBytes = 0; // granted to woken writers that have not added their data yet
  #writersWaiting = 0; // writers between deciding to wait and adding their data
  #drainWaiters: (() => void)[] = [];

  constructor(fits: Fits) {
    this.#fits = fits;
  }

  /** A budget of limitBytes over usedBytes() (what the owner holds now). */
  static bytes(limitBytes: number, usedBytes: () => number): FifoBudget {
    return new FifoBudget((lengthBytes, reserved) => usedBytes() + reserved + lengthBytes <= limitBytes);
  }

  get reservedBytes(): number {
    return this.#reservedBytes;
  }

  get writersWaiting(): number {
    return this.#writersWaiting;
  }

  /** True when lengthBytes more fit now and nobody queued before us. The caller must then add its
   *  data without awaiting, so the check and the use are one atomic step. */
  hasRoom(lengthBytes: number): boolean {
    return this.#writersWaiting === 0 && this.#fits(lengthBytes, this.#reservedBytes);
  }

  /** Waits in arrival order until lengthBytes are granted (or the owner failed: wake(true)). */
  async reserve(lengthBytes: number): Promise<void> {
    this.#writersWaiting++;
    await new Promise<void>((resolve) => this.#waiters.push({ lengthBytes, resolve }));
  }

  /** A writer that waited has added its data (or gave up, added false): its reservation ends. */
  granted(lengthBytes: number, added = true): void {
    if (added) this.#reservedBytes -= lengthBytes;
    this.#writersWaiting--;
    if (this.#writersWaiting === 0 && this.#drainWaiters.length > 0) {
      const drained = this.#drainWaiters;
      this.#drainWaiters = [];
      queueMicrotask(() => drained.forEach((resolve) => resolve())); // after the caller adds its data
    }
  }

  /** Grants waiting writers their bytes in arrival order while they fit (all of them on failure,
   *  granting nothing: they see the failure and give up). */
  wake(failed: boolean): void {
    for (;;) {
      const head = this.#waiters[0];
      if (head === undefined) return;
      if (!failed && !this.#fits(head.lengthBytes, this.#reservedBytes)) return;
      this.#waiters.shift();
      if (!failed) this.#reservedBytes += head.lengthBytes;
      head.resolve();
    }
  }

  /** Resolves once no writer waits (each that waited has added its data). */
  drained(): Promise<void> {
    if (this.#writersWaiting === 0) return Promise.resolve();
    return new Promise((resolve) => this.#drainWaiters.push(resolve));
  }
}
