/**
 * @module
 * Log lines in the seed's style: `lsvd: Something happened.` on standard error.
 * Injected as a function so tests can capture lines. A line that cannot be written (the terminal
 * was closed: EIO; the reader of a pipe went away) is dropped: a daemon stopping after SIGHUP
 * must still flush and exit cleanly with nowhere to say so.
 */

export type Logger = (line: string) => void;

/** Writes `lsvd: line` to standard error, or nothing when standard error is gone. */
export function printError(line: string): void {
  try {
    console.error(`lsvd: ${line}`);
  } catch {
    // nowhere to print it
  }
}

export const stderrLogger: Logger = printError;

export const silentLogger: Logger = () => {};
