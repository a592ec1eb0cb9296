/**
 * @module
 * Turns the extent map of a range of the disk into the fewest ranged GETs that read it: the
 * pieces each object holds are sorted by their place in the object, and neighbours closer than
 * `gapBytesMax` share one GET (reading a small gap costs less than another request), up to
 * `getBytesMax` per GET so memory stays bounded. A sequentially written disk reads each object's
 * data with one GET; unmapped sectors (never written, trimmed) need no request at all. Used by
 * `lsvd export`, which runs many of these GETs at once.
 */

import { assert } from "../util/assert.ts";
import { SECTOR_BYTES, sectorOffsetBytes } from "../format/object.ts";
import type { ExtentMap, MappedExtent } from "../map/extent_map.ts";

export interface PlannedPiece {
  /** Where the piece goes on the disk. */
  diskSector: number;
  lengthSectors: number;
  /** Where it starts in the GET's body. */
  bodyOffsetBytes: number;
}

export interface PlannedGet {
  sequence: number;
  /** Byte range of the object to GET. */
  offsetBytes: number;
  lengthBytes: number;
  pieces: PlannedPiece[];
}

export interface PlanOptions {
  /** Pieces of one object at most this far apart are read by one GET. */
  gapBytesMax: number;
  /** Largest GET. */
  getBytesMax: number;
}

/** The GETs that read sectors [startSector, startSector+lengthSectors) of the disk, by object and offset. */
export function planReads(
  map: ExtentMap,
  startSector: number,
  lengthSectors: number,
  options: PlanOptions,
): PlannedGet[] {
  assert(options.getBytesMax >= SECTOR_BYTES && options.getBytesMax % SECTOR_BYTES === 0);
  const byObject = new Map<number, MappedExtent[]>();
  map.lookup(startSector, lengthSectors, (e) => {
    const list = byObject.get(e.sequence);
    if (list === undefined) byObject.set(e.sequence, [{ ...e }]);
    else list.push({ ...e });
  });
  const gets: PlannedGet[] = [];
  for (const sequence of [...byObject.keys()].sort((a, b) => a - b)) {
    const extents = byObject.get(sequence)!.sort((a, b) => a.offsetSectors - b.offsetSectors);
    let current: PlannedGet | undefined;
    for (const e of splitLong(extents, options.getBytesMax / SECTOR_BYTES)) {
      const at = sectorOffsetBytes(e.offsetSectors);
      const end = at + e.lengthSectors * SECTOR_BYTES;
      const currentEnd = current === undefined ? 0 : current.offsetBytes + current.lengthBytes;
      if (
        current === undefined || at - currentEnd > options.gapBytesMax ||
        end - current.offsetBytes > options.getBytesMax
      ) {
        current = { sequence, offsetBytes: at, lengthBytes: 0, pieces: [] };
        gets.push(current);
      }
      current.pieces.push({
        diskSector: e.startSector,
        lengthSectors: e.lengthSectors,
        bodyOffsetBytes: at - current.offsetBytes,
      });
      current.lengthBytes = Math.max(current.lengthBytes, end - current.offsetBytes);
    }
  }
  return gets;
}

/** Splits extents longer than maxSectors (objects larger than one GET). */
function* splitLong(extents: readonly MappedExtent[], maxSectors: number): Generator<MappedExtent> {
  for (const e of extents) {
    for (let done = 0; done < e.lengthSectors; done += maxSectors) {
      yield {
        startSector: e.startSector + done,
        lengthSectors: Math.min(maxSectors, e.lengthSectors - done),
        sequence: e.sequence,
        offsetSectors: e.offsetSectors + done,
      };
    }
  }
}
