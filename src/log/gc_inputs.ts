/**
 * @module
 * What a garbage-collection pass plans from, gathered one way for the daemon's pass
 * (src/volume/gc_runner.ts) and `lsvd gc --dry-run` (src/cli/gc.ts), so a dry run never promises
 * what the daemon will not do: the objects present (the gap-free log, durable ones only), Pmin
 * (the newest object sealed before the retention window, never below what the last collected
 * record kept), the snapshots and pins that count (stale pins do not; a snapshot whose point
 * cannot be loaded is logged and skipped), the maps retained, the objects kept whatever (named by
 * checkpoints, the newest object), the objects a clone reads by number (never moved while its pin
 * exists) and the plan itself (src/log/gc.ts). How maps and seal times are
 * obtained is the caller's: the daemon keeps them between passes, a dry run loads them once.
 */

import type { ExtentMap } from "../map/extent_map.ts";
import type { ObjectStore } from "../store/store.ts";
import { isLsvdError, messageOf } from "../util/errors.ts";
import type { Logger } from "../util/log.ts";
import { type Candidate, type GcThresholds, planPass, type RetainedMap, retentionPoint } from "./gc.ts";
import type { LoggedObject, LogState } from "./log_state.ts";
import {
  cloneFloor,
  copiesThroughOf,
  followerFloor,
  isStale,
  readSnapshots,
  type SnapshotRecord,
} from "./snapshots.ts";
import { pointFloor } from "./parent.ts";

/** Where a round's seal times and maps come from. */
export interface GcSources {
  /** An object's seal time (undefined: its trailer records none, so it counts as old). */
  sealTimeOf(o: LoggedObject): Promise<number | undefined>;
  /** The map at Pmin: the state after object `pmin` of the present log. */
  mapAt(pmin: number, present: readonly LoggedObject[]): Promise<ExtentMap>;
  /** The map at a snapshot or pin older than Pmin; LsvdError "invalid" when it cannot be loaded. */
  snapshotMap(s: SnapshotRecord): Promise<ExtentMap>;
}

export interface GcRoundOptions {
  /** The map of the whole present log (the daemon's head). */
  head: ExtentMap;
  /** Objects after this are not durable yet (the writer's uploads in flight) and not considered. */
  durableThrough: number;
  retentionMs: number;
  wallNowMs: number;
  /** Objects up to this one are known to be sealed before the window (a previous Pmin), or 0. */
  knownOldThrough: number;
  thresholds: GcThresholds;
  log: Logger;
  sources: GcSources;
}

export interface GcRound {
  /** The log a pass sees: gap-free and durable, ascending. */
  present: LoggedObject[];
  /** Pmin: points from this object on are kept exact; 0 when no object is old enough (no plan). */
  pmin: number;
  /** Snapshots and pins that count now (not stale), every one of them. */
  points: SnapshotRecord[];
  /** Pmin's map and the map of every snapshot older than Pmin that could be loaded. */
  retained: RetainedMap[];
  /** The objects the pass collects, ascending. */
  plan: Candidate[];
}

/** Gathers a pass's inputs from a listing and plans it; changes nothing in the store. */
export async function planGcRound(
  store: ObjectStore,
  state: LogState,
  o: GcRoundOptions,
): Promise<GcRound> {
  const present = state.objects.slice(0, state.gapFreeCount).filter((x) => x.sequence <= o.durableThrough);
  const cutoffMs = o.wallNowMs - o.retentionMs;
  // Seal times grow along the log: objects up to knownOldThrough are old enough already.
  const unknown = present.filter((x) => x.sequence > o.knownOldThrough);
  const oldest = Math.max(await retentionPoint(unknown, cutoffMs, o.sources.sealTimeOf), o.knownOldThrough);
  // A flattened clone has no points before its flatten: the window never starts below it.
  const floor = oldest === 0 ? 0 : pointFloor(state.format);
  const kept = state.collectedRecord?.retainedFromSequence ?? 0;
  const windowStart = Math.max(oldest, kept, floor);
  if (windowStart === 0) return { present, pmin: 0, points: [], retained: [], plan: [] };
  const points = (await readSnapshots(store, state)).filter((s) => !isStale(s, o.wallNowMs));
  // A live follower reads its pin's point or any later one: every point from it on stays exact
  // (never below what a record or an earlier pass kept: docs/design/followers.md).
  const followedFrom = followerFloor(points);
  const pmin = Math.max(Math.min(windowStart, followedFrom), kept, floor, o.knownOldThrough);
  const pminMap = await o.sources.mapAt(pmin, present);
  const retained: RetainedMap[] = [{ sequence: pmin, map: pminMap }];
  for (const s of points) {
    // A clone's pin is kept whatever its age: the clone reads its objects by number, copies aside.
    // A follower's too: its map has none of the copies made after its point.
    const copiesThrough = copiesThroughOf(s);
    if (s.sequence >= pmin && copiesThrough === undefined) continue;
    try {
      const map = await o.sources.snapshotMap(s);
      retained.push({ sequence: s.sequence, map, ...(copiesThrough === undefined ? {} : { copiesThrough }) });
    } catch (e) {
      if (!isLsvdError(e, "invalid")) throw e;
      o.log(`Snapshot "${s.name}" cannot be kept: ${messageOf(e)}.`);
    }
  }
  const keep = new Set(state.checkpoints.map((c) => c.sequence));
  keep.add(present.at(-1)?.sequence ?? 0);
  const plan = planPass({
    objects: present,
    head: o.head,
    retained,
    retainedFrom: pmin,
    keep,
    movesAllowed: !points.some((s) => s.expiresMs !== undefined && s.follower !== true),
    frozenThrough: cloneFloor(points),
    movesThrough: followedFrom,
    thresholds: o.thresholds,
  });
  return { present, pmin, points, retained, plan };
}
