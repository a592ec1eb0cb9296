/**
 * @module
 * The one error type lsvd reports, with a kind that says what the caller should do about it
 * (after SlateDB's API error kinds):
 *
 *   invalid     the request or configuration is wrong; retrying will not help (EINVAL to a client)
 *   unavailable the store cannot be reached or answered badly; may work later (EIO)
 *   data        stored bytes are damaged or malformed: never served as data (EIO)
 *   fenced      another writer holds the volume; this process must stop writing (EIO)
 *   closed      the volume was closed or failed earlier (ESHUTDOWN)
 *
 * Messages name the action and the cause in one sentence without a final period. A broken
 * invariant is an AssertionError, never an LsvdError: it crashes.
 */

export type ErrorKind = "invalid" | "unavailable" | "data" | "fenced" | "closed";

export class LsvdError extends Error {
  readonly kind: ErrorKind;
  constructor(kind: ErrorKind, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "LsvdError";
    this.kind = kind;
  }
}

export function isLsvdError(e: unknown, kind?: ErrorKind): e is LsvdError {
  return e instanceof LsvdError && (kind === undefined || e.kind === kind);
}

/** The message of any thrown value, for one-line error reports. */
export function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
