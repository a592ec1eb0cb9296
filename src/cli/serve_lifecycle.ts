/**
 * @module
 * The shutdown side of `lsvd serve`: SIGTERM/SIGINT handling that knows what the daemon is doing
 * (recovering, serving, flushing) so a signal during recovery stops without ever announcing the
 * device, a second signal gets a line that fits, and an optional shutdown deadline ends a flush
 * that cannot finish (a store that stays away) with a non-zero exit naming what was not stored.
 */

import type { Logger } from "../util/log.ts";

export type ServePhase = "starting" | "recovering" | "serving" | "stopping";

const SECOND_SIGNAL: Record<ServePhase, string> = {
  starting: "still starting; stopping as soon as it is safe",
  recovering: "stopping recovery; nothing has been written",
  serving: "shutting down",
  stopping: "still flushing writes to object storage, please wait",
};

export class ShutdownSignals {
  phase: ServePhase = "starting";
  #received: string | undefined;
  #resolve!: (signal: string) => void;
  readonly received: Promise<string>;
  #listeners: [Deno.Signal, () => void][] = [];

  constructor(log: Logger) {
    this.received = new Promise((resolve) => (this.#resolve = resolve));
    for (const signal of ["SIGTERM", "SIGINT"] as const) {
      const listener = () => {
        if (this.#received !== undefined) {
          log(`Received ${signal} again; ${SECOND_SIGNAL[this.phase]}.`);
          return;
        }
        this.#received = signal;
        this.#resolve(signal);
      };
      Deno.addSignalListener(signal, listener);
      this.#listeners.push([signal, listener]);
    }
  }

  get requested(): boolean {
    return this.#received !== undefined;
  }

  /**
   * Resolves with work's value, or with undefined as soon as a signal arrives first (the work is
   * left behind; the caller stops). Work that fails because it was asked to stop counts as stopped.
   */
  async race<T>(work: Promise<T>): Promise<T | undefined> {
    work.catch(() => {}); // observed below unless the signal wins
    const stopped = this.received.then(() => undefined);
    try {
      return await Promise.race([work, stopped]);
    } catch (e) {
      if (this.requested) return undefined;
      throw e;
    }
  }

  dispose(): void {
    for (const [signal, listener] of this.#listeners) Deno.removeSignalListener(signal, listener);
    this.#listeners = [];
  }
}

/**
 * Runs close() and resolves true when it finished, false when `deadlineMs` passed first (close keeps
 * running; the caller exits).
 */
export async function closeWithin(close: Promise<void>, deadlineMs: number | undefined): Promise<boolean> {
  if (deadlineMs === undefined) {
    await close;
    return true;
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), deadlineMs)));
  try {
    return await Promise.race([close.then(() => true as const), expired]);
  } finally {
    clearTimeout(timer);
  }
}
