/**
 * @module
 * Loading a volume: rebuild the extent map of the log as it stands (or as it stood at an earlier
 * point) from a checkpoint plus the headers after it, read many at once and applied strictly in
 * order. Loading never modifies the bucket: serving read-only, `--at`, and every offline tool use
 * it as is; the writer runs repair (src/log/repair.ts) afterwards.
 */

import type { Trailer } from "../format/object.ts";
import { assert } from "../util/assert.ts";
import type { ObjectStore } from "../store/store.ts";
import { isLsvdError, LsvdError, messageOf } from "../util/errors.ts";
import type { Logger } from "../util/log.ts";
import { readInOrder } from "../util/ordered.ts";
import { ExtentMap } from "../map/extent_map.ts";
import { applyObject } from "./apply.ts";
import { loadCheckpoint } from "./checkpoints.ts";
import { checkFormatRecord } from "./format_record.ts";
import { listLogState, type LoggedObject, type LogState } from "./log_state.ts";
import { bucketStore, type Lineage, pointFloor, readLineage } from "./parent.ts";
import { type CollectedRecord, inRanges } from "./collected.ts";
import { type ObjectSummary, readObjectSummary } from "./object_reader.ts";

export interface LoadOptions {
  /** Replay only objects 1..atSequence (a past state); default: the whole gap-free log. */
  atSequence?: number;
  /** Header reads in flight at once. */
  concurrency: number;
  log: Logger;
  /** Called as objects are applied (done, total), for progress lines. */
  onProgress?: (done: number, total: number) => void;
  /** Ignore checkpoints (verification, tests). */
  skipCheckpoints?: boolean;
  /**
   * Garbage collection only: load a snapshot's point even when the newest collected record does
   * not list it (created while a pass was between its listing and its record). The map only ever
   * pins more objects, so a point that is no longer exact can cost space but never data.
   */
  pinningOnly?: boolean;
  /**
   * A clone's view of its parent (the parent's state at a clone pin): copies numbered above the
   * pin's `through` are not applied. The parent's GC keeps their sources while the pin exists.
   */
  copiesThrough?: number;
}

export interface LoadedLog {
  state: LogState;
  map: ExtentMap;
  /** The last object applied: the point this map shows (0 for an empty log). */
  lastSequence: number;
  /** From the newest trailer that records it; undefined when no object has a trailer. */
  volumeSizeBytes: number | undefined;
  /** Highest writer epoch seen in the replayed log and in the epoch keys. */
  writerEpoch: number;
  /** The checkpoint replay started from (0: none): headers after it were read. */
  checkpointSequence: number;
  /** CRC from the newest applied object's trailer (0 when it has none), for the next checkpoint. */
  lastObjectCrc32: number;
  /** Trailer of the newest applied object, when it was read (not when a checkpoint covered it). */
  lastTrailer: Trailer | undefined;
  /** Objects present beyond the point (after a gap, or after atSequence). */
  beyond: LoggedObject[];
  /** Objects read and applied (not counting those a checkpoint covered). */
  replayed: number;
  /** Which prefix holds each object the map names (a clone's parents: src/log/parent.ts). */
  lineage: Lineage;
}

export async function loadLog(store: ObjectStore, state: LogState, options: LoadOptions): Promise<LoadedLog> {
  const end = checkLoadable(state, options);
  const lineage = await readLineage(store, state.prefix, state.format);
  const log = state.objects.slice(0, state.gapFreeCount);
  const loaded: LoadedLog = {
    state,
    map: new ExtentMap(),
    lastSequence: 0,
    volumeSizeBytes: undefined,
    writerEpoch: state.epochs.at(-1) ?? 0,
    checkpointSequence: 0,
    lastObjectCrc32: 0,
    lastTrailer: undefined,
    beyond: state.objects.filter((o) => o.sequence > end),
    replayed: 0,
    lineage,
  };
  // A clone's checkpoints from before its flatten name its parent's objects: never used again.
  const checkpoints = state.checkpoints.filter((c) => c.sequence >= pointFloor(state.format));
  const base = options.skipCheckpoints ? undefined : await loadCheckpoint(
    store,
    { log, checkpoints, through: end },
    options.log,
  );
  if (base === undefined && state.format?.parent !== undefined) await startFromParent(store, loaded, options);
  if (base !== undefined) startFromCheckpoint(loaded, base);
  const replay = log.filter((o) => o.sequence > loaded.lastSequence && o.sequence <= end);
  // Epochs never decrease along a log; the first object that breaks this is a zombie.
  let epochFloor = 0;
  let zombieAt: number | undefined;
  await readInOrder(replay, options.concurrency, (o) => readChecked(store, o), (o, s, i) => {
    if (zombieAt !== undefined) return;
    const epoch = s.trailer?.writerEpoch ?? epochFloor; // base-format objects carry no epoch
    if (epoch < epochFloor) {
      // A fenced writer's late upload (docs/design/fencing.md): the log ends before it.
      zombieAt = o.sequence;
      options.log(
        `Object "${o.key}" carries writer epoch ${epoch}, lower than epoch ${epochFloor} before it: ` +
          "it was written by a fenced writer; the log ends before it.",
      );
      return;
    }
    epochFloor = epoch;
    applyToLoaded(loaded, o.sequence, s);
    options.onProgress?.(i + 1, replay.length);
  });
  if (zombieAt !== undefined) {
    loaded.beyond = state.objects.filter((o) => o.sequence >= zombieAt!);
    return loaded;
  }
  if (end < state.endSequence) await applyLaterCopies(store, loaded, end, options);
  loaded.lastSequence = Math.max(loaded.lastSequence, end);
  return loaded;
}

/** The load starts from a checkpoint: its map, sequence, size, epoch and object CRC. */
function startFromCheckpoint(
  loaded: LoadedLog,
  base: NonNullable<Awaited<ReturnType<typeof loadCheckpoint>>>,
): void {
  loaded.map = ExtentMap.fromArray(base.extents);
  loaded.lastSequence = base.sequence;
  loaded.volumeSizeBytes = base.volumeSizeBytes;
  loaded.writerEpoch = Math.max(loaded.writerEpoch, base.writerEpoch);
  loaded.checkpointSequence = base.sequence;
  loaded.lastObjectCrc32 = base.objectCrc32;
}

/** Refuses what no load may serve, before anything is read; returns the point to load. */
function checkLoadable(state: LogState, options: LoadOptions): number {
  checkFormatRecord(state.format, state.prefix);
  assert(state.listedAfter === 0, "a load needs the whole log listed");
  const rollback = state.collectedRecord?.rollback;
  if (rollback !== undefined) {
    throw new LsvdError(
      "invalid",
      `Cannot load the volume: a rollback to object ${rollback.to} is half done; run 'lsvd rollback --to ${rollback.to}' again to finish it`,
    );
  }
  checkNoStrayGap(state);
  const end = options.atSequence ?? state.endSequence;
  if (end > state.endSequence) {
    throw new LsvdError(
      "invalid",
      `Cannot load the volume at object ${end}: the log ends at object ${state.endSequence}`,
    );
  }
  const floor = pointFloor(state.format);
  if (end < floor) {
    throw new LsvdError(
      "invalid",
      `Cannot load the volume at object ${end}: it is a clone whose points start at object ${floor}` +
        (state.format?.parent?.flattenedThrough === undefined
          ? " (its branch point)"
          : " (where it was flattened)"),
    );
  }
  if (end < state.endSequence && !options.pinningOnly) checkRetained(state, end);
  return end;
}

/**
 * A clone's replay starts from its parent's state at the branch point (loaded the same way, so a
 * chain recurses), numbered up to the link's `through`; a flattened clone starts from nothing.
 */
async function startFromParent(store: ObjectStore, loaded: LoadedLog, options: LoadOptions): Promise<void> {
  const link = loaded.state.format!.parent!;
  loaded.lastSequence = link.through;
  if (link.flattenedThrough !== undefined) return;
  const parentStore = bucketStore(
    store,
    link.bucket,
    `load the clone under "${loaded.state.prefix}": its parent`,
  );
  const state = await listLogState(parentStore, link.prefix);
  const { onProgress: _, ...rest } = options;
  const parent = await loadLog(parentStore, state, {
    ...rest,
    atSequence: link.sequence,
    pinningOnly: false,
    copiesThrough: link.through,
  });
  // The parent's GC never moves what the pin covers; a pass already running when the clone was
  // made could have. Such a clone would read its own numbers in place of the parent's: refuse.
  for (const [sequence] of parent.map.liveObjects()) {
    if (sequence > link.through) {
      throw new LsvdError(
        "data",
        `Cannot load the clone under "${loaded.state.prefix}": its parent's point ${link.sequence} now reads object ${sequence}, above the ${link.through} it was cloned through (moved by garbage collection)`,
      );
    }
  }
  loaded.map = parent.map;
  loaded.volumeSizeBytes = parent.volumeSizeBytes;
  loaded.replayed += parent.replayed;
  for (const [sequence, size] of parent.lineage.sizes) loaded.lineage.sizes.set(sequence, size);
  for (const o of state.objects) {
    if (o.sequence <= link.through) loaded.lineage.sizes.set(o.sequence, o.sizeBytes);
  }
}

/**
 * A past point P also needs the data garbage collection moved to the head: every copied object
 * after P that a collected record names contributes the entries whose origin is <= P (a copy of a
 * sector from origin k is only ever made while no write to it exists after k, so at P that copy is
 * the sector's state). Copies no record names need not be read: their sources were never deleted.
 */
async function applyLaterCopies(store: ObjectStore, loaded: LoadedLog, point: number, options: LoadOptions) {
  const record = loaded.state.collectedRecord;
  if (record === undefined) return;
  const copies = loaded.state.objects
    .slice(0, loaded.state.gapFreeCount)
    .filter((o) => o.sequence > point && o.sequence <= (options.copiesThrough ?? Infinity))
    .filter((o) => inRanges(record.copies, o.sequence));
  await readInOrder(copies, options.concurrency, (o) => readChecked(store, o), (o, s) => {
    if (s.trailer?.origins === undefined) return;
    applyObject(loaded.map, o.sequence, {
      entries: s.entries,
      zeroRanges: s.zeroRanges,
      origins: s.trailer.origins,
    }, point);
    loaded.replayed++;
  });
}

/**
 * Applies the next object of the log to a loaded log: the map (applyObject, the one rule) and the
 * bookkeeping a load keeps (last object, its trailer and CRC, size, epoch). Loading and a follower's
 * tail both go through here, so a followed log is what a load would give.
 */
export function applyToLoaded(loaded: LoadedLog, sequence: number, s: ObjectSummary): void {
  applyObject(loaded.map, sequence, {
    entries: s.entries,
    zeroRanges: s.zeroRanges,
    origins: s.trailer?.origins,
  });
  loaded.lastSequence = sequence;
  loaded.lastTrailer = s.trailer;
  loaded.lastObjectCrc32 = s.trailer?.crc32 ?? 0;
  if (s.trailer !== undefined) {
    loaded.volumeSizeBytes = s.trailer.volumeSizeBytes;
    loaded.writerEpoch = Math.max(loaded.writerEpoch, s.trailer.writerEpoch);
  }
  loaded.replayed++;
}

function readChecked(store: ObjectStore, o: LoggedObject) {
  return readObjectSummary(store, o).catch((e) => {
    if (!isLsvdError(e, "data")) throw e;
    throw new LsvdError(
      "data",
      `Cannot recover object "${o.key}": ${
        messageOf(e.cause ?? e)
      }; 'lsvd verify' lists every damaged object, 'lsvd rollback --to ${
        o.sequence - 1
      }' rolls the volume back to before it`,
      { cause: e },
    );
  });
}

/**
 * A missing object below a number garbage collection deleted cannot be a crash gap (crashes lose
 * only the newest uploads, and GC only ever collects durable objects): someone removed it by hand,
 * and replaying past it or archiving after it would both serve a wrong disk. Refuse.
 */
function checkNoStrayGap(state: LogState): void {
  const record = state.collectedRecord;
  if (record === undefined || state.gapFreeCount === state.objects.length) return;
  const missing = state.endSequence + 1;
  const highestCollected = record.collected.at(-1)?.[1] ?? 0;
  if (missing < highestCollected) {
    throw new LsvdError(
      "data",
      `Cannot load the volume: object ${missing} is missing but garbage collection did not delete it ` +
        `(collected objects reach ${highestCollected}); restore it, or 'lsvd rollback --to ${missing - 1}'`,
    );
  }
}

/** Points older than what garbage collection kept exact are refused, never served wrong. */
function checkRetained(state: LogState, point: number): void {
  const record = state.collectedRecord;
  if (record === undefined || point >= record.retainedFromSequence) return;
  if (record.snapshots.some((s) => s.sequence === point)) return;
  throw new LsvdError(
    "invalid",
    `Cannot load the volume at object ${point}: garbage collection kept points from object ${record.retainedFromSequence} on ` +
      `(the retention window) and the snapshots ${describeSnapshots(record)}; older points are gone`,
  );
}

function describeSnapshots(record: CollectedRecord): string {
  if (record.snapshots.length === 0) return "(none)";
  return record.snapshots.map((s) => `${s.name} (object ${s.sequence})`).join(", ");
}
