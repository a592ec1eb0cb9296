/**
 * @module
 * Building a copied object (trailer FLAG_COPIED) from live data garbage collection read back, at
 * the moment the writer seals it. Each piece is re-validated against the extent map right then: a
 * sector is copied only if the map still points at the very (object, offset) the data was read
 * from. So a copy never overwrites a client write that landed while GC was reading, and a copy of
 * a sector from origin k is only ever made while no write to that sector exists after k -- the fact
 * that lets a load of any point P >= k apply it (src/log/apply.ts, docs/design/gc-and-retention.md).
 */

import { assert } from "../util/assert.ts";
import { type Extent, HEADER_ENTRIES, ObjectBuilder, type SealMeta, SECTOR_BYTES } from "../format/object.ts";
import type { ExtentMap } from "../map/extent_map.ts";
import type { SealedObject } from "./open_object.ts";

/** Live data read from object `sourceSequence` at data sector `sourceOffsetSectors`. */
export interface CopyPiece {
  startSector: number;
  lengthSectors: number;
  sourceSequence: number;
  sourceOffsetSectors: number;
  /** The sequence that first wrote this data (the source itself, or the source's own origin). */
  originSequence: number;
  /** lengthSectors × 4 KiB bytes. */
  data: Uint8Array;
}

export interface SealedCopy extends SealedObject {
  origins: number[];
  /** Sectors copied (after re-validation). */
  sectors: number;
}

interface Kept {
  startSector: number;
  lengthSectors: number;
  origin: number;
  data: Uint8Array;
}

/** Builds the copied object from the pieces still current in `map`, or undefined when none is. */
export function buildCopyObject(
  map: ExtentMap,
  pieces: readonly CopyPiece[],
  meta: Omit<SealMeta, "origins">,
): SealedCopy | undefined {
  const kept = stillCurrent(map, pieces);
  if (kept.length === 0) return undefined;
  const dataBytes = kept.reduce((n, k) => n + k.lengthSectors * SECTOR_BYTES, 0);
  const builder = new ObjectBuilder({ dataBytes, zeroRanges: 0, copied: true, entries: kept.length });
  const entries: Extent[] = [];
  const origins: number[] = [];
  let sectors = 0;
  for (const k of kept) {
    const addressBytes = k.startSector * SECTOR_BYTES, lengthBytes = k.lengthSectors * SECTOR_BYTES;
    builder.addEntry(addressBytes, lengthBytes).set(k.data);
    entries.push({ addressBytes, lengthBytes });
    origins.push(k.origin);
    sectors += k.lengthSectors;
  }
  const bytes = builder.finish({ ...meta, origins });
  return { bytes, entries, zeroRanges: [], origins, sectors };
}

/** The parts of the pieces the map still points at their source, sorted by address, at most one header. */
function stillCurrent(map: ExtentMap, pieces: readonly CopyPiece[]): Kept[] {
  const kept: Kept[] = [];
  for (const p of pieces) {
    assert(p.data.length === p.lengthSectors * SECTOR_BYTES, "copy piece data has the wrong length");
    map.lookup(p.startSector, p.lengthSectors, (e) => {
      const at = e.startSector - p.startSector;
      if (e.sequence !== p.sourceSequence || e.offsetSectors !== p.sourceOffsetSectors + at) return;
      kept.push({
        startSector: e.startSector,
        lengthSectors: e.lengthSectors,
        origin: p.originSequence,
        data: p.data.subarray(at * SECTOR_BYTES, (at + e.lengthSectors) * SECTOR_BYTES),
      });
    });
  }
  kept.sort((a, b) => a.startSector - b.startSector);
  // Pieces split by newer writes may need more entries than a header holds: the rest is not copied
  // (its source simply stays until a later pass).
  return kept.slice(0, HEADER_ENTRIES);
}
