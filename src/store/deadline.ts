/**
 * @module
 * An enforced deadline for one store request. The SDK's own `requestTimeout` only logs a warning,
 * so against a black-holed endpoint (connections accepted, never answered) a request would wait
 * forever and hold its connection slot, an upload, and in the end every writer. A Deadline aborts
 * the request through its signal and also rejects the caller's wait by itself, in case some layer
 * below does not watch the signal. The time allowed grows with the bytes moved, so a large object
 * on a slow link is not cut off while a stalled small one is.
 */

export interface DeadlineOptions {
  /** Time for a request that moves no data. */
  baseMs: number;
  /** The slowest transfer rate still treated as progress. */
  bytesPerSecondMin: number;
}

/** Thrown (as the abort reason) when a deadline passes. */
export class DeadlineExpired extends Error {
  readonly limitMs: number;
  constructor(limitMs: number) {
    super(`no answer within ${formatSeconds(limitMs)}`);
    this.name = "DeadlineExpired";
    this.limitMs = limitMs;
  }
}

export class Deadline {
  readonly #options: DeadlineOptions;
  readonly #controller = new AbortController();
  #timer: ReturnType<typeof setTimeout> | undefined;
  #limitMs = 0;
  #expired: Promise<never>;
  #expire!: (error: DeadlineExpired) => void;

  /** Starts the clock for a request moving sizeBytes. */
  constructor(options: DeadlineOptions, sizeBytes: number) {
    this.#options = options;
    this.#expired = new Promise<never>((_, reject) => (this.#expire = reject));
    this.#expired.catch(() => {}); // observed through race(); never an unhandled rejection
    this.restart(sizeBytes);
  }

  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  /** Gives the request its allowance for sizeBytes from now (e.g. once a GET announces its length). */
  restart(sizeBytes: number): void {
    if (this.#controller.signal.aborted) return;
    clearTimeout(this.#timer);
    this.#limitMs = this.#options.baseMs + Math.ceil((sizeBytes * 1000) / this.#options.bytesPerSecondMin);
    this.#timer = setTimeout(() => {
      const error = new DeadlineExpired(this.#limitMs);
      this.#controller.abort(error);
      this.#expire(error);
    }, this.#limitMs);
  }

  /** Settles with work, or rejects with DeadlineExpired when the deadline passes first. */
  race<T>(work: Promise<T>): Promise<T> {
    return Promise.race([work, this.#expired]);
  }

  /** Stops the clock; call once the request has settled. */
  cancel(): void {
    clearTimeout(this.#timer);
  }
}

function formatSeconds(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${(ms / 1000).toFixed(1)} s`;
}
