/**
 * @module
 * The one assertion seam of src: a cheap `assert` for hot paths (node:assert's polyfill costs a
 * few percent of CPU at 100k requests/s even when the condition holds), `assertFail` and
 * `assertEqual`. Failing throws node's AssertionError, so the "never swallow an assertion" rule
 * (src/cli/cli.ts, src/nbd/errors.ts) holds for every one.
 */

import { AssertionError } from "node:assert";

export { AssertionError };

export function assert(condition: unknown, message = "assertion failed"): asserts condition {
  if (!condition) throw new AssertionError({ message });
}

/** An invariant broke where no single condition says so. */
export function assertFail(message: string): never {
  throw new AssertionError({ message });
}

/** `actual` and `expected` are the same value (Object.is). */
export function assertEqual<T>(actual: T, expected: T, message: string): void {
  if (!Object.is(actual, expected)) {
    throw new AssertionError({ message: `${message}: ${String(actual)} !== ${String(expected)}` });
  }
}
