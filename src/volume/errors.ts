/**
 * @module
 * Errors the engine reports to users: one clear sentence, naming the action and the cause.
 */

export class VolumeError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "VolumeError";
  }
}

/** The message of any thrown value, for one-line error reports. */
export function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
