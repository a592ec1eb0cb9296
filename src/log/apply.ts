/**
 * @module
 * The one rule for what an object does to the disk, used by the live writer when it seals an
 * object and by recovery when it replays one (LevelDB's VersionSet::Builder serves both), so a
 * restart always rebuilds exactly the disk that was served:
 *
 *   data entries in header order (a later entry wins; entry i's data starts after entries 0..i-1),
 *   then zero ranges. For objects that copy older data (trailer origins), an entry or zero range
 *   counts at a point P only when its origin is <= P.
 */

import { type Extent, SECTOR_BYTES } from "../format/object.ts";
import type { ExtentMap } from "../map/extent_map.ts";

export interface ObjectEffect {
  entries: readonly Extent[];
  zeroRanges: readonly Extent[];
  /** One per entry then per zero range, for copied objects; undefined otherwise. */
  origins?: readonly number[] | undefined;
}

/** Applies object `sequence` to the map as of point `asOf` (default: the newest state). */
export function applyObject(map: ExtentMap, sequence: number, effect: ObjectEffect, asOf = Infinity): void {
  const { entries, zeroRanges, origins } = effect;
  let offsetSectors = 0;
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i]!;
    const lengthSectors = e.lengthBytes / SECTOR_BYTES;
    if (origins === undefined || origins[i]! <= asOf) {
      map.set(e.addressBytes / SECTOR_BYTES, lengthSectors, sequence, offsetSectors);
    }
    offsetSectors += lengthSectors;
  }
  for (let i = 0; i < zeroRanges.length; i++) {
    const z = zeroRanges[i]!;
    if (origins !== undefined && origins[entries.length + i]! > asOf) continue;
    map.clear(z.addressBytes / SECTOR_BYTES, z.lengthBytes / SECTOR_BYTES);
  }
}
