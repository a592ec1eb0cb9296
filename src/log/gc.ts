/**
 * @module
 * Garbage-collection planning: which log objects a pass may delete and which of their sectors it
 * must first copy to the head. Pure: it reads live-sector counts the extent maps keep (the head
 * map, the map at the oldest retained point Pmin, one per older snapshot) and object sizes from
 * the listing -- no object is read and no map is scanned. src/volume/gc_runner.ts executes a plan.
 *
 * Retained points are every point from Pmin to the head (the retention window) plus snapshots. An
 * object k <= Pmin may go when no retained map points at it. Before that, data of k that is live at
 * the head is copied with origin k (after which the head map and every retained map point at the
 * copy). Data of k a retained point needs but the head no longer has (overwritten after that
 * point) cannot be copied, and pins k: until Pmin passes the overwrite, or forever for a snapshot.
 * Why this keeps every retained point exact: docs/design/gc-and-retention.md.
 */

import { HEADER_BYTES, SECTOR_BYTES, TRAILER_FIXED_BYTES } from "../format/object.ts";
import type { ExtentMap } from "../map/extent_map.ts";
import type { LoggedObject } from "./log_state.ts";

export interface GcThresholds {
  /** Objects whose estimated dead fraction is at least this are rewritten (default 0.5: write
   *  amplification <= 1 at steady state, since each copied sector frees at least one). */
  deadFractionMin: number;
  /** Objects smaller than this are packed together whatever their dead fraction (default 1 MiB:
   *  FLUSH-forced commits whose 12 KiB header would otherwise dominate). */
  smallObjectBytes: number;
  /** Bytes of live data one pass copies at most (bounds a pass's GETs, PUTs and memory). */
  passCopyBytesMax: number;
  /** Objects one pass deletes at most. */
  passDeletesMax: number;
}

export const DEFAULT_GC_THRESHOLDS: GcThresholds = {
  deadFractionMin: 0.5,
  smallObjectBytes: 1024 * 1024,
  passCopyBytesMax: 64 * 1024 * 1024,
  passDeletesMax: 2000,
};

/**
 * The thresholds a pass runs with when the writer seals objects of `objectBytesMax` data bytes:
 * "small" is relative to a full object, or packed copies would count as small and be packed again.
 */
export function passThresholds(thresholds: GcThresholds, objectBytesMax: number): GcThresholds {
  return { ...thresholds, smallObjectBytes: Math.min(thresholds.smallObjectBytes, objectBytesMax / 4) };
}

/** The extent map of one retained point older than the window's (Pmin itself, or a snapshot). */
export interface RetainedMap {
  sequence: number;
  map: ExtentMap;
  /**
   * A clone pin's or a follower pin's map: copies made after this object never apply to it (a clone
   * reads objects by number, a follower has not applied them yet), so their sources stay for it.
   */
  copiesThrough?: number;
}

export interface Candidate {
  object: LoggedObject;
  /** Sectors the head still maps to it: what a pass must copy before deleting it. */
  liveSectors: number;
  why: "dead" | "sparse" | "small";
}

export interface PlanInput {
  /** Objects present, ascending. */
  objects: readonly LoggedObject[];
  head: ExtentMap;
  /** Pmin's map and every older snapshot's. */
  retained: readonly RetainedMap[];
  /** Pmin: objects after it are inside the window and stay. */
  retainedFrom: number;
  /** Objects that must stay whatever (named by checkpoints, the newest object). */
  keep: ReadonlySet<number>;
  /**
   * False while a reader pin (not a follower's) exists: only objects no point needs at all go,
   * nothing is moved.
   */
  movesAllowed: boolean;
  /** Objects up to this one are never moved (a clone reads them by number: src/log/parent.ts). */
  frozenThrough?: number;
  /**
   * Objects after this one are never moved: the oldest live follower pin's point. A follower at or
   * after it may read them through a map no retained map covers (docs/design/followers.md F2).
   */
  movesThrough?: number;
  thresholds: GcThresholds;
}

/** Data sectors of an object, estimated from its size (exact for objects without zero ranges). */
export function dataSectorsOf(sizeBytes: number): number {
  return Math.max(0, Math.floor((sizeBytes - HEADER_BYTES - TRAILER_FIXED_BYTES) / (SECTOR_BYTES + 4)));
}

/**
 * True when every sector any retained map points at k is also live at the head (so copying the
 * head's live sectors of k leaves nothing of k needed). For a retained point R >= k, R's
 * references to k include the head's (a sector untouched since k is untouched at R), so equal
 * counts mean equal sets; a point before k references k only through copied origins, and any such
 * reference is treated as pinning.
 */
export function copyable(k: number, head: ExtentMap, retained: readonly RetainedMap[]): boolean {
  const live = head.liveSectors(k);
  for (const r of retained) {
    const needed = r.map.liveSectors(k);
    if (r.sequence >= k ? needed !== live : needed !== 0) return false;
  }
  return true;
}

/** True when neither the head nor any retained map points at k any more. */
export function unreferenced(k: number, head: ExtentMap, retained: readonly RetainedMap[]): boolean {
  return head.liveSectors(k) === 0 && retained.every((r) => r.map.liveSectors(k) === 0);
}

/** The objects a pass should collect, cheapest first, within the pass's bounds. */
export function planPass(input: PlanInput): Candidate[] {
  const t = input.thresholds;
  const all: Candidate[] = [];
  for (const o of input.objects) {
    if (o.sequence > input.retainedFrom) break;
    if (input.keep.has(o.sequence)) continue;
    const k = o.sequence;
    if (!copyable(k, input.head, input.retained)) continue;
    const liveSectors = input.head.liveSectors(k);
    if (liveSectors === 0) {
      all.push({ object: o, liveSectors, why: "dead" });
      continue;
    }
    if (!input.movesAllowed || k <= (input.frozenThrough ?? 0) || k > (input.movesThrough ?? Infinity)) {
      continue;
    }
    const dataSectors = Math.max(liveSectors, dataSectorsOf(o.sizeBytes));
    if (1 - liveSectors / dataSectors >= t.deadFractionMin) {
      all.push({ object: o, liveSectors, why: "sparse" });
    } else if (o.sizeBytes < t.smallObjectBytes) all.push({ object: o, liveSectors, why: "small" });
  }
  // Packing one small object alone only moves its header: pack when there are at least two.
  const small = all.filter((c) => c.why === "small").length;
  const chosen = small >= 2 ? all : all.filter((c) => c.why !== "small");
  chosen.sort((a, b) => a.liveSectors - b.liveSectors || a.object.sequence - b.object.sequence);
  const out: Candidate[] = [];
  let copyBytes = 0;
  for (const c of chosen) {
    if (out.length >= t.passDeletesMax) break;
    const bytes = c.liveSectors * SECTOR_BYTES;
    if (bytes > 0 && copyBytes + bytes > t.passCopyBytesMax) continue;
    copyBytes += bytes;
    out.push(c);
  }
  return out.sort((a, b) => a.object.sequence - b.object.sequence);
}

/**
 * Pmin: the newest of `objects` (ascending) sealed at or before `cutoffMs`, by binary search over
 * seal times (they grow along the log); 0 when none is that old. Objects without a seal time
 * (version-1 trailers) count as old.
 */
export async function retentionPoint(
  objects: readonly LoggedObject[],
  cutoffMs: number,
  sealTimeOf: (o: LoggedObject) => Promise<number | undefined>,
): Promise<number> {
  let lo = 0, hi = objects.length; // objects[0..lo) are old enough, objects[hi..) are not
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (((await sealTimeOf(objects[mid]!)) ?? -Infinity) <= cutoffMs) lo = mid + 1;
    else hi = mid;
  }
  return lo === 0 ? 0 : objects[lo - 1]!.sequence;
}
