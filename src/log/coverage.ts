/**
 * @module
 * How much of a volume reads can verify (docs/design/integrity.md): the disk bytes mapped to
 * objects that carry a per-sector CRC table, and those mapped to objects that do not (written by
 * lsvd before trailer version 2, or by another writer), whose reads are served unchecked. One
 * suffix GET per object the map still uses; `lsvd info` reports the result.
 */

import type { ObjectStore } from "../store/store.ts";
import { SECTOR_BYTES } from "../util/constants.ts";
import { isLsvdError } from "../util/errors.ts";
import { forEachBounded } from "../util/ordered.ts";
import type { ExtentMap } from "../map/extent_map.ts";
import type { LoggedObject } from "./log_state.ts";
import { readSectorCrcs } from "./object_reader.ts";

export interface CrcCoverage {
  /** Mapped disk bytes whose object has a CRC table: every read of them is checked. */
  verifiableBytes: number;
  /** Mapped disk bytes whose object has none: served unchecked. */
  unverifiableBytes: number;
  /** Objects the map uses that have no CRC table. */
  objectsWithoutTables: number;
  /** Objects whose trailer could not be read (damaged or truncated): their bytes count in neither. */
  damaged: { key: string; bytes: number; problem: string }[];
}

/** Mapped bytes per object of `map`, checked against each object's trailer. */
export async function crcCoverage(
  store: ObjectStore,
  options: { map: ExtentMap; objects: readonly LoggedObject[]; concurrency: number },
): Promise<CrcCoverage> {
  const sectorsOf = new Map<number, number>();
  for (const e of options.map.entries()) {
    sectorsOf.set(e.sequence, (sectorsOf.get(e.sequence) ?? 0) + e.lengthSectors);
  }
  const used = options.objects.filter((o) => sectorsOf.has(o.sequence));
  const coverage: CrcCoverage = {
    verifiableBytes: 0,
    unverifiableBytes: 0,
    objectsWithoutTables: 0,
    damaged: [],
  };
  await forEachBounded(used, options.concurrency, async (o) => {
    const bytes = sectorsOf.get(o.sequence)! * SECTOR_BYTES;
    try {
      const table = await readSectorCrcs(store, o);
      if (table === undefined) {
        coverage.unverifiableBytes += bytes;
        coverage.objectsWithoutTables++;
      } else {
        coverage.verifiableBytes += bytes;
      }
    } catch (e) {
      if (!isLsvdError(e, "data")) throw e;
      coverage.damaged.push({ key: o.key, bytes, problem: e.message });
    }
  });
  coverage.damaged.sort((a, b) => a.key < b.key ? -1 : 1);
  return coverage;
}
