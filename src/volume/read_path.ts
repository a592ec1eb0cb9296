/**
 * @module
 * The read half of the volume: every source of a read is resolved synchronously (open object,
 * in-flight object bodies, the read cache, a store that answers at once, then ranged GETs), so an
 * answer is one consistent moment of the disk; adjacent pieces of one object become one GET;
 * sequential readers get read-ahead. Unmapped sectors are zeros and cost no request.
 */

import { SECTOR_BYTES, sectorOffsetBytes } from "../format/object.ts";
import type { ExtentMap } from "../map/extent_map.ts";
import type { Fetcher } from "./fetcher.ts";
import type { OpenObject } from "./open_object.ts";
import type { ReadAhead } from "./read_ahead.ts";
import type { ReadCache } from "./read_cache.ts";

/** Bound on GETs in flight before read-ahead holds back (reads themselves are not limited here). */
const PREFETCH_GETS_MAX = 64;

interface Piece {
  sequence: number;
  offsetSectors: number;
  destSector: number;
  lengthSectors: number;
}

interface FetchRun {
  sequence: number;
  offsetSectors: number;
  lengthSectors: number;
  pieces: { bodySector: number; destSector: number; lengthSectors: number }[];
}

export interface ReadSources {
  map: ExtentMap;
  cache: ReadCache;
  fetcher: Fetcher;
  readAhead: ReadAhead;
  /** Undefined for read-only volumes (nothing is ever open or uploading). */
  open: () => OpenObject | undefined;
  inflightBody: (sequence: number) => Uint8Array | undefined;
  sizeSectors: () => number;
  /** Bound on read-ahead bytes in flight across all streams (read_ahead.ts says why). */
  prefetchBytesMax: number;
}

export class ReadPath {
  #s: ReadSources;
  #counters = { reads: 0, cacheHits: 0, cacheMisses: 0 };
  #prefetchBytes = 0;

  constructor(sources: ReadSources) {
    this.#s = sources;
  }

  get counters(): Readonly<{ reads: number; cacheHits: number; cacheMisses: number }> {
    return this.#counters;
  }

  /** Read-ahead bytes whose GETs have not settled yet (at most prefetchBytesMax). */
  get prefetchBytesInFlight(): number {
    return this.#prefetchBytes;
  }

  /**
   * Reads into dest: every source is resolved now; returns undefined when that filled dest, else
   * a promise of the GETs the rest needs.
   */
  start(offsetBytes: number, dest: Uint8Array): Promise<void> | undefined {
    const s = this.#s;
    const firstSector = offsetBytes / SECTOR_BYTES;
    const sectors = dest.length / SECTOR_BYTES;
    this.#counters.reads++;
    dest.fill(0);
    const remote: Piece[] = [];
    s.map.lookup(firstSector, sectors, (e) => {
      const at = (e.startSector - firstSector) * SECTOR_BYTES;
      const body = s.inflightBody(e.sequence);
      if (body !== undefined) {
        const from = sectorOffsetBytes(e.offsetSectors);
        dest.set(body.subarray(from, from + e.lengthSectors * SECTOR_BYTES), at);
        return;
      }
      if (s.cache.read(e.sequence, e.offsetSectors, e.lengthSectors, dest.subarray(at))) {
        this.#counters.cacheHits++;
        return;
      }
      this.#counters.cacheMisses++;
      // Before the open object's overlay below, which is newer; on false get() rewrites the piece.
      if (
        s.fetcher.readNow(e.sequence, e.offsetSectors, dest.subarray(at, at + e.lengthSectors * SECTOR_BYTES))
      ) {
        return;
      }
      remote.push({ ...e, destSector: e.startSector - firstSector });
    });
    const open = s.open();
    const overlay = open === undefined || open.isEmpty
      ? undefined
      : overlayOpen(open, firstSector, sectors, dest);
    const budgetSectors = Math.max(0, s.prefetchBytesMax - this.#prefetchBytes) / SECTOR_BYTES;
    const ahead = s.readAhead.observe(firstSector, sectors, Math.floor(budgetSectors));
    if (ahead !== undefined) this.#prefetch(ahead.startSector, ahead.lengthSectors);
    if (remote.length === 0) return undefined;
    return Promise.all(coalesce(remote).map((run) => this.#fetch(run, dest, overlay))).then(() => {});
  }

  async #fetch(run: FetchRun, dest: Uint8Array, decided: Uint8Array | undefined): Promise<void> {
    const body = await this.#s.fetcher.get(run.sequence, run.offsetSectors, run.lengthSectors);
    for (const piece of run.pieces) {
      const src = body.subarray(
        piece.bodySector * SECTOR_BYTES,
        (piece.bodySector + piece.lengthSectors) * SECTOR_BYTES,
      );
      if (decided === undefined) {
        dest.set(src, piece.destSector * SECTOR_BYTES);
        continue;
      }
      for (let k = 0; k < piece.lengthSectors; k++) {
        if (decided[piece.destSector + k]) continue;
        dest.set(
          src.subarray(k * SECTOR_BYTES, (k + 1) * SECTOR_BYTES),
          (piece.destSector + k) * SECTOR_BYTES,
        );
      }
    }
  }

  /** Fetches stored data of [start, start+length) into the cache; failures are left to real reads. */
  #prefetch(startSector: number, lengthSectors: number): void {
    const s = this.#s;
    const end = Math.min(startSector + lengthSectors, s.sizeSectors());
    if (end <= startSector || s.fetcher.inFlight >= PREFETCH_GETS_MAX) return;
    const pieces: Piece[] = [];
    s.map.lookup(startSector, end - startSector, (e) => {
      if (s.inflightBody(e.sequence) !== undefined) return;
      if (s.cache.has(e.sequence, e.offsetSectors, e.lengthSectors)) return;
      // Read at once from the local disk when asked for: copying it ahead only costs memory.
      if (s.fetcher.heldLocally(e.sequence, e.offsetSectors, e.lengthSectors)) return;
      pieces.push({ ...e, destSector: 0 });
    });
    for (const run of coalesce(pieces)) {
      const bytes = run.lengthSectors * SECTOR_BYTES;
      this.#prefetchBytes += bytes;
      s.fetcher.get(run.sequence, run.offsetSectors, run.lengthSectors).catch(() => {}).finally(() => {
        this.#prefetchBytes -= bytes;
      });
    }
  }
}

/** Copies the open object's sectors into dest now; returns which dest sectors it decided. */
function overlayOpen(open: OpenObject, firstSector: number, sectors: number, dest: Uint8Array): Uint8Array {
  const decided = new Uint8Array(sectors);
  for (let k = 0; k < sectors; k++) {
    const found = open.lookup(firstSector + k);
    if (found === undefined) continue;
    decided[k] = 1;
    if (found === "zero") dest.fill(0, k * SECTOR_BYTES, (k + 1) * SECTOR_BYTES);
    else dest.set(found, k * SECTOR_BYTES);
  }
  return decided;
}

/** Joins pieces that are adjacent inside one object into one ranged GET. */
function coalesce(pieces: Piece[]): FetchRun[] {
  const sorted = [...pieces].sort((x, y) => x.sequence - y.sequence || x.offsetSectors - y.offsetSectors);
  const runs: FetchRun[] = [];
  for (const p of sorted) {
    const last = runs.at(-1);
    if (last && last.sequence === p.sequence && last.offsetSectors + last.lengthSectors === p.offsetSectors) {
      last.pieces.push({
        bodySector: last.lengthSectors,
        destSector: p.destSector,
        lengthSectors: p.lengthSectors,
      });
      last.lengthSectors += p.lengthSectors;
    } else {
      runs.push({
        sequence: p.sequence,
        offsetSectors: p.offsetSectors,
        lengthSectors: p.lengthSectors,
        pieces: [{ bodySector: 0, destSector: p.destSector, lengthSectors: p.lengthSectors }],
      });
    }
  }
  return runs;
}
