/**
 * @module
 * Time as an injected dependency. The engine never calls Date.now or setTimeout directly,
 * so the simulation can run it on a virtual clock.
 */

export interface Timer {
  cancel(): void;
}

export interface Clock {
  /** Milliseconds since an arbitrary origin (for intervals). */
  nowMs(): number;
  /** Wall-clock milliseconds since 1970 UTC (seal times, lease times). */
  wallMs(): number;
  sleep(ms: number): Promise<void>;
  /** Calls fn once after ms unless cancelled. */
  setTimer(ms: number, fn: () => void): Timer;
}

export const systemClock: Clock = {
  nowMs: () => performance.now(),
  wallMs: () => Date.now(),
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
  setTimer(ms, fn) {
    const id = setTimeout(fn, ms);
    return { cancel: () => clearTimeout(id) };
  },
};

/** A clock that moves only when told to: the seeded simulation's time. */
export class ManualClock implements Clock {
  #nowMs = 0;
  #nextId = 0;
  #timers = new Map<number, { atMs: number; fn: () => void }>();

  nowMs(): number {
    return this.#nowMs;
  }

  /** Wall time starts at 2026-01-01T00:00:00Z and moves with nowMs. */
  wallMs(): number {
    return 1_767_225_600_000 + this.#nowMs;
  }

  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => this.setTimer(ms, resolve));
  }

  setTimer(ms: number, fn: () => void): Timer {
    const id = this.#nextId++;
    this.#timers.set(id, { atMs: this.#nowMs + Math.max(0, ms), fn });
    return { cancel: () => this.#timers.delete(id) };
  }

  /** Moves time forward, firing due timers in time order (ties in creation order). */
  advance(ms: number): void {
    const target = this.#nowMs + ms;
    for (;;) {
      let nextId = -1, nextAt = Infinity;
      for (const [id, t] of this.#timers) {
        if (t.atMs <= target && t.atMs < nextAt) {
          nextId = id;
          nextAt = t.atMs;
        }
      }
      if (nextId < 0) break;
      const timer = this.#timers.get(nextId)!;
      this.#timers.delete(nextId);
      this.#nowMs = nextAt;
      timer.fn();
    }
    this.#nowMs = target;
  }

  get pendingTimers(): number {
    return this.#timers.size;
  }
}

/** Runs work; true when it finished within ms on the clock, false when the time passed first. */
export async function withinMs(clock: Clock, ms: number, work: Promise<unknown>): Promise<boolean> {
  let timer: Timer | undefined;
  const expired = new Promise<false>((resolve) => (timer = clock.setTimer(ms, () => resolve(false))));
  try {
    return await Promise.race([work.then(() => true as const), expired]);
  } finally {
    timer?.cancel();
  }
}
