/**
 * @module
 * Sizes said to people and the one rule a volume or object size must meet: whole sectors
 * (docs/FORMAT.md addresses and lengths count 4096-byte sectors), positive, and within a bound.
 * The command line turns a problem into a UsageError naming the flag; VolumeOptions into an
 * LsvdError for library callers; both ask sectorSizeProblem(), so the rule cannot drift.
 */

import { SECTOR_BYTES } from "./constants.ts";

const UNITS: [string, number][] = [["T", 2 ** 40], ["G", 2 ** 30], ["M", 2 ** 20], ["K", 2 ** 10]];

/** Bytes as the largest whole unit: 268435456 -> "256M", 4097 -> "4097". */
export function formatSize(bytes: number): string {
  for (const [unit, factor] of UNITS) {
    if (bytes >= factor && bytes % factor === 0) return `${bytes / factor}${unit}`;
  }
  return String(bytes);
}

/**
 * Why `bytes` cannot be a size of whole sectors up to `maxBytes` (a volume, an object's data), or
 * undefined when it can: "100 bytes is not a multiple of 4096".
 */
export function sectorSizeProblem(bytes: number, maxBytes: number): string | undefined {
  if (!Number.isSafeInteger(bytes) || bytes <= 0) return `${bytes} bytes is not a positive size`;
  if (bytes % SECTOR_BYTES !== 0) return `${bytes} bytes is not a multiple of ${SECTOR_BYTES}`;
  if (bytes > maxBytes) return `${bytes} bytes is more than the maximum, ${formatSize(maxBytes)}`;
  return undefined;
}
