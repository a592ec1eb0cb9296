/**
 * @module
 * The shutdown side of `lsvd serve`: SIGTERM, SIGINT and SIGHUP (a closed terminal or a dropped SSH
 * session stops lsvd as cleanly as `kill` does) handled by what the daemon is doing (recovering,
 * serving, waiting for the volume to be released, flushing), so a signal during recovery stops
 * without ever announcing the device, a stop never takes the volume from under a mounted
 * filesystem unless a second signal insists, and an optional shutdown deadline ends a flush that
 * cannot finish (a store that stays away) with a non-zero exit naming what was not stored.
 */

import type { Logger } from "../util/log.ts";
import { describeHolders, type Holder } from "../attach/holders.ts";

export type ServePhase = "starting" | "recovering" | "serving" | "releasing" | "stopping";

/** The signals that stop serve; a second one while something still holds the volume forces it. */
export const STOP_SIGNALS = ["SIGTERM", "SIGINT", "SIGHUP"] as const;

const SECOND_SIGNAL: Record<ServePhase, string> = {
  starting: "still starting; stopping as soon as it is safe",
  recovering: "stopping recovery; nothing has been written",
  serving: "shutting down",
  releasing: "stopping anyway",
  stopping: "still flushing writes to object storage, please wait",
};

/** How often a stop waiting for the volume to be released looks again. */
const RELEASE_POLL_MS = 1000;

export class ShutdownSignals {
  phase: ServePhase = "starting";
  #received: string | undefined;
  #resolve!: (signal: string) => void;
  #resolveForced!: (signal: string) => void;
  /** The first stop signal. */
  readonly received: Promise<string>;
  /** The second one: stop even though the volume is still in use. */
  readonly forced: Promise<string>;
  #listeners: [Deno.Signal, () => void][] = [];

  constructor(log: Logger) {
    this.received = new Promise((resolve) => (this.#resolve = resolve));
    this.forced = new Promise((resolve) => (this.#resolveForced = resolve));
    for (const signal of STOP_SIGNALS) {
      const listener = () => {
        if (this.#received !== undefined) {
          log(`Received ${signal} again; ${SECOND_SIGNAL[this.phase]}.`);
          this.#resolveForced(signal);
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

export type ReleaseOutcome =
  | { kind: "released" }
  | { kind: "forced"; holders: Holder[]; by: "signal" | "deadline" }
  | { kind: "failed"; error: Error };

/**
 * After the stop signal, before the volume is taken away: asks for it back until nothing holds it
 * (a loop device, a mount, a process with it open). Meanwhile serving goes on, and one line says
 * what holds it and what releases it (again only when that changes). Ends when it is released,
 * at a second signal or after deadlineMs (forced, with what still held it), or when `failed`
 * resolves (fenced).
 */
export async function waitForRelease(p: {
  release: () => Promise<Holder[]>;
  signals: ShutdownSignals;
  failed: Promise<Error>;
  log: Logger;
  /** Part of --shutdown-timeout: a service manager kills after its own timeout, losing more. */
  deadlineMs?: number;
  pollMs?: number;
}): Promise<ReleaseOutcome> {
  p.signals.phase = "releasing";
  const startMs = Date.now();
  const pollMs = p.pollMs ?? RELEASE_POLL_MS;
  let holders = await p.release();
  // What lets go by itself at once (udev probing the device, a process exiting) is not worth a line.
  if (holders.length > 0) holders = await pollAgain(p, pollMs / 2);
  let said = "";
  let forced = false;
  let failed: Error | undefined;
  p.signals.forced.then(() => forced = true);
  p.failed.then((e) => failed = e);
  while (holders.length > 0) {
    if (forced) return { kind: "forced", holders, by: "signal" };
    if (failed !== undefined) return { kind: "failed", error: failed };
    const { what } = describeHolders(holders);
    const leftMs = p.deadlineMs === undefined ? undefined : p.deadlineMs - (Date.now() - startMs);
    if (leftMs !== undefined && leftMs <= 0) {
      p.log(
        `Shutdown deadline: ${what} still ${verb(holders)} the volume after ${
          p.deadlineMs! / 1000
        } s; stopping anyway.`,
      );
      return { kind: "forced", holders, by: "deadline" };
    }
    if (what !== said) p.log(holdersLine(holders, { first: said === "", leftMs }));
    said = what;
    holders = await pollAgain(p, pollMs);
  }
  if (said !== "") p.log("The volume is no longer in use; stopping.");
  return { kind: "released" };
}

/** What holds the volume and what releases it; the first line also says what the operator can do. */
function holdersLine(holders: Holder[], p: { first: boolean; leftMs: number | undefined }): string {
  const { what, release } = describeHolders(holders);
  if (!p.first) return `Still waiting: ${what} still ${verb(holders)} the volume; release it (${release}).`;
  const deadline = p.leftMs === undefined
    ? ""
    : ` (--shutdown-timeout stops anyway in ${Math.ceil(p.leftMs / 1000)} s)`;
  return `Cannot stop yet: ${what} still ${verb(holders)} the volume; release it (${release}) and lsvd ` +
    "stops by itself, or send the signal again to stop anyway (writes the filesystem has not synced " +
    `will be lost)${deadline}.`;
}

function verb(holders: Holder[]): string {
  return holders.length === 1 ? "uses" : "use";
}

/** Waits pollMs (less when forced or failed), then asks again. */
async function pollAgain(
  p: { release: () => Promise<Holder[]>; signals: ShutdownSignals; failed: Promise<Error> },
  pollMs: number,
): Promise<Holder[]> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const waited = new Promise((resolve) => timer = setTimeout(resolve, pollMs));
  await Promise.race([waited, p.signals.forced, p.failed]);
  clearTimeout(timer);
  return await p.release();
}
