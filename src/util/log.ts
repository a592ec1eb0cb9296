/**
 * @module
 * Log lines in the seed's style: `lsvd: Something happened.` on standard error.
 * Injected as a function so tests can capture lines.
 */

export type Logger = (line: string) => void;

export const stderrLogger: Logger = (line) => {
  console.error(`lsvd: ${line}`);
};

export const silentLogger: Logger = () => {};
