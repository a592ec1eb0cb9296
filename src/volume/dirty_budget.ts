/**
 * @module
 * The dirty-byte budget: open + in-flight + granted bytes never exceed the limit, and writers
 * that must wait are granted space first come first served, so writes apply in issue order and
 * memory stays bounded however fast clients write.
 */

export class DirtyBudget {
  #limitBytes: number;
  #usedBytes: () => number;
  #waiters: { lengthBytes: number; resolve: () => void }[] = [];
  #reservedBytes = 0; // granted to woken writers that have not added their data yet
  #writersWaiting = 0; // writers between deciding to wait and adding their data

  /** usedBytes: open + in-flight bytes, owned by the writer. */
  constructor(limitBytes: number, usedBytes: () => number) {
    this.#limitBytes = limitBytes;
    this.#usedBytes = usedBytes;
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
    return this.#writersWaiting === 0 && this.#total() + lengthBytes <= this.#limitBytes;
  }

  /** Waits in arrival order until lengthBytes are granted (or the volume fails: wake(true)). */
  async reserve(lengthBytes: number): Promise<void> {
    this.#writersWaiting++;
    await new Promise<void>((resolve) => this.#waiters.push({ lengthBytes, resolve }));
  }

  /** A writer that waited has added its data (or gave up): its reservation ends. */
  granted(lengthBytes: number, added = true): void {
    if (added) this.#reservedBytes -= lengthBytes;
    this.#writersWaiting--;
  }

  /** Grants waiting writers their bytes in arrival order while they fit (all of them on failure,
   *  granting nothing: they see the failure and give up). */
  wake(failed: boolean): void {
    for (;;) {
      const head = this.#waiters[0];
      if (head === undefined) return;
      if (!failed && this.#total() + head.lengthBytes > this.#limitBytes) return;
      this.#waiters.shift();
      if (!failed) this.#reservedBytes += head.lengthBytes;
      head.resolve();
    }
  }

  #total(): number {
    return this.#usedBytes() + this.#reservedBytes;
  }
}
