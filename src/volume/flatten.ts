/**
 * @module
 * Flattening a clone: every sector its map still reads from a parent's objects (numbers up to
 * the lineage's `through`, src/log/parent.ts) is read through the volume's fetcher (the one
 * verified read: each sector checked against its object's CRC table, one fresh retry) and written
 * into the clone's own log as COPIED objects, sealed by the writer with the same re-validation GC
 * copies get (src/volume/copy_object.ts). Copies are made in address order, at most
 * `copiesInFlight` uploading at once, so memory stays bounded by a few objects whatever the size.
 *
 * Resumable by construction: a crash leaves some copies durable (the map of the next open points
 * at them) and the rest still pointing at the parent, which the next run copies.
 */

import { SECTOR_BYTES } from "../format/object.ts";
import type { ExtentMap } from "../map/extent_map.ts";
import { readInOrder } from "../util/ordered.ts";
import type { CopyPiece } from "./copy_object.ts";
import type { Fetcher } from "./fetcher.ts";
import type { LogWriter } from "./log_writer.ts";

/** Pieces per copy object, well inside one header. */
const PIECES_PER_COPY_MAX = 512;
/** Copies uploading at once before the next is read. */
const COPIES_IN_FLIGHT = 2;
/** Ranged GETs in flight (across copies: the next copy's pieces are read while one is sealed). */
const READS_IN_FLIGHT = 8;

export interface FlattenParts {
  map: ExtentMap;
  writer: LogWriter;
  fetcher: Fetcher;
  /** Objects numbered up to this are the parents'. */
  through: number;
  sizeSectors: number;
  objectBytesMax: number;
  onProgress?: (doneBytes: number, totalBytes: number) => void;
}

type Planned = Omit<CopyPiece, "data">;

/** The map's extents that read a parent, cut to at most `maxSectors` each, in address order. */
export function parentPieces(
  map: ExtentMap,
  through: number,
  sizeSectors: number,
  maxSectors: number,
): Planned[] {
  const out: Planned[] = [];
  map.lookup(0, sizeSectors, (e) => {
    if (e.sequence > through) return;
    for (let at = 0; at < e.lengthSectors; at += maxSectors) {
      const lengthSectors = Math.min(maxSectors, e.lengthSectors - at);
      out.push({
        startSector: e.startSector + at,
        lengthSectors,
        sourceSequence: e.sequence,
        sourceOffsetSectors: e.offsetSectors + at,
        originSequence: e.sequence,
      });
    }
  });
  return out;
}

/** Pieces in address order, cut into groups of at most one object's sectors (and header entries). */
function groupPieces(pieces: Planned[], maxSectors: number): Planned[][] {
  const groups: Planned[][] = [];
  let group: Planned[] = [], groupSectors = 0;
  for (const x of pieces) {
    if (
      group.length > 0 && (groupSectors + x.lengthSectors > maxSectors || group.length >= PIECES_PER_COPY_MAX)
    ) {
      groups.push(group);
      group = [];
      groupSectors = 0;
    }
    group.push(x);
    groupSectors += x.lengthSectors;
  }
  if (group.length > 0) groups.push(group);
  return groups;
}

/**
 * Copies what the map reads from parents into the writer's log; returns bytes and objects written.
 * The reads run ahead across copy boundaries (READS_IN_FLIGHT pieces, consumed in order), so on a
 * store with a round trip per GET the next copy's pieces are on their way while one is sealed.
 */
export async function copyFromParents(p: FlattenParts): Promise<{ copiedBytes: number; objects: number }> {
  const maxSectors = Math.max(1, Math.floor(p.objectBytesMax / SECTOR_BYTES));
  const pieces = parentPieces(p.map, p.through, p.sizeSectors, maxSectors);
  const totalBytes = pieces.reduce((n, x) => n + x.lengthSectors * SECTOR_BYTES, 0);
  const stream = groupPieces(pieces, maxSectors).flatMap((g) =>
    g.map((x, k) => ({ x, ends: k === g.length - 1 }))
  );
  let doneBytes = 0, objects = 0;
  let batch: CopyPiece[] = [];
  const sealed: number[] = [];
  await readInOrder(
    stream,
    READS_IN_FLIGHT,
    ({ x }) => p.fetcher.get(x.sourceSequence, x.sourceOffsetSectors, x.lengthSectors),
    async ({ x, ends }, data) => {
      batch.push({ ...x, data });
      doneBytes += x.lengthSectors * SECTOR_BYTES;
      if (!ends) return;
      const copy = p.writer.appendCopy(batch);
      batch = [];
      p.onProgress?.(doneBytes, totalBytes);
      if (copy === undefined) return;
      objects++;
      sealed.push(copy.sequence);
      if (sealed.length > COPIES_IN_FLIGHT) await p.writer.durable(sealed.shift()!);
    },
  );
  if (sealed.length > 0) await p.writer.durable(sealed.at(-1)!);
  return { copiedBytes: doneBytes, objects };
}
