/**
 * @module
 * The engine's retry policy is the store layer's one retry loop (src/store/retry.ts), kept
 * importable from here so engine modules need not change their imports.
 */

export { type RetryPolicy, withRetries } from "../store/retry.ts";
