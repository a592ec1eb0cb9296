/**
 * @module
 * Time as an injected dependency. The engine never calls Date.now or setTimeout directly,
 * so the simulation can run it on a virtual clock.
 */

export interface Timer {
  cancel(): void;
}

export interface Clock {
  /** Milliseconds since an arbitrary origin. */
  nowMs(): number;
  sleep(ms: number): Promise<void>;
  /** Calls fn once after ms unless cancelled. */
  setTimer(ms: number, fn: () => void): Timer;
}

export const systemClock: Clock = {
  nowMs: () => performance.now(),
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
  setTimer(ms, fn) {
    const id = setTimeout(fn, ms);
    return { cancel: () => clearTimeout(id) };
  },
};
