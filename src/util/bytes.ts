/**
 * @module
 * Small byte-array helpers shared by the wire codec, the bucket format and tests.
 */

import { assert } from "./assert.ts";

/** One buffer holding every part in order (the part itself when there is only one). */
export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  if (parts.length === 1 && parts[0] !== undefined) return parts[0];
  const out = new Uint8Array(parts.reduce((n, part) => n + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

/** Reads a big-endian u64 as a number (exact below 2^53; larger values come back inexact but larger). */
export function getU64(view: DataView, at: number): number {
  return view.getUint32(at) * 2 ** 32 + view.getUint32(at + 4);
}

/** Writes a safe non-negative integer as a big-endian u64. */
export function setU64(view: DataView, at: number, value: number): void {
  if (!(Number.isSafeInteger(value) && value >= 0)) assert(false, `u64 out of range: ${value}`);
  view.setUint32(at, Math.floor(value / 2 ** 32));
  view.setUint32(at + 4, value >>> 0);
}
