/**
 * @module
 * Following a log another daemon writes: one poll lists the log keys from the follower's newest
 * applied object on (one LIST with a start-after key, so a poll costs the same however long the log
 * is), and reads the headers of the new objects that extend the applied prefix without a gap and
 * without lowering the writer epoch. What it returns is exactly what recovery would replay next
 * (src/log/load.ts): the caller applies it with the same `applyObject`. An object after a gap is
 * left for a later poll (it may be a fenced writer's upload that the new writer's fence replaces);
 * so is one of a lower epoch than the object before it. Listing never modifies the bucket.
 */

import { logKey, parseLogKey } from "../format/keys.ts";
import { isStoreError, listAll, type ObjectStore } from "../store/store.ts";
import { isLsvdError } from "../util/errors.ts";
import { readInOrder } from "../util/ordered.ts";
import type { LoggedObject } from "./log_state.ts";
import { applyToLoaded, type LoadedLog } from "./load.ts";
import { assert } from "../util/assert.ts";
import { type ObjectSummary, readObjectSummary } from "./object_reader.ts";

/** Where a follower stands: its newest applied object (0: none of this prefix's own yet). */
export interface TailPosition {
  sequence: number;
  /** Writer epoch of that object (0 when unknown: a checkpoint covered it, or it has no trailer). */
  epoch: number;
  /** Its trailer CRC (0 when unknown), to tell it from an object a rollback put in its place. */
  crc32: number;
  /** True when object `sequence` is in this prefix (false for a clone's branch point, or 0). */
  own: boolean;
}

export interface TailStep {
  /** New objects to apply, in order: each extends the prefix by one number, epochs never decrease. */
  objects: { object: LoggedObject; summary: ObjectSummary }[];
  /** Highest object number listed (gaps included): how far the writer's uploads reach. */
  listedThrough: number;
  /** The first number missing after what `objects` reaches, when objects after it are listed. */
  gapAt: number | undefined;
  /** Set when the position no longer holds and the follower must load the log again: why. */
  reload: string | undefined;
  /** Objects listed after the last of `objects` (after a gap, or beyond objectsMax). */
  beyond: LoggedObject[];
}

export interface TailOptions {
  /** Header reads in flight at once. */
  concurrency: number;
  /** Objects read in one poll at most (the rest come with the next). */
  objectsMax: number;
}

/** One poll: lists from the position on and reads the headers of the gap-free new objects. */
export async function tailLog(
  store: ObjectStore,
  prefix: string,
  at: TailPosition,
  o: TailOptions,
): Promise<TailStep> {
  const listed = await listFrom(store, prefix, at);
  const step: TailStep = {
    objects: [],
    listedThrough: listed.at(-1)?.sequence ?? at.sequence,
    gapAt: undefined,
    reload: undefined,
    beyond: [],
  };
  if (at.own && listed[0]?.sequence !== at.sequence) {
    step.reload =
      `object ${at.sequence}, the newest this follower applied, is gone (a rollback, or garbage collection)`;
    return step;
  }
  const fresh = listed.filter((x) => x.sequence > at.sequence);
  let run = 0;
  while (run < fresh.length && run < o.objectsMax && fresh[run]!.sequence === at.sequence + run + 1) run++;
  if (run < fresh.length && run < o.objectsMax) step.gapAt = at.sequence + run + 1;
  let epochFloor = at.epoch;
  let stopped = false;
  await readInOrder(fresh.slice(0, run), o.concurrency, (x) => readSettled(store, x), (x, s) => {
    if (stopped) return;
    const epoch = s?.trailer?.writerEpoch ?? epochFloor;
    // Unreadable now (replaced while read, e.g. by a fence object) or a fenced writer's upload.
    if (s === undefined || epoch < epochFloor) {
      stopped = true;
      step.gapAt = x.sequence;
      return;
    }
    epochFloor = epoch;
    step.objects.push({ object: x, summary: s });
  });
  // A newer epoch after our newest object: a takeover, or a rollback that rewrote that object.
  const first = step.objects[0]?.summary.trailer;
  if (at.own && at.crc32 !== 0 && first !== undefined && first.writerEpoch > at.epoch) {
    const crc = await tailCrc(store, listed[0]!).catch((e) => {
      if (isStoreError(e, "NotFound") || isLsvdError(e, "data")) return undefined;
      throw e;
    });
    if (crc !== at.crc32) {
      step.objects = [];
      step.reload = `object ${at.sequence} was replaced (the volume was rolled back)`;
    }
  }
  const last = step.objects.at(-1)?.object.sequence ?? at.sequence;
  step.beyond = listed.filter((x) => x.sequence > last);
  return step;
}

/**
 * Extends a loaded log by a tail step's objects, as loadLog would have applied them (the same
 * applyObject, the same bookkeeping): a warm standby's log stays what a load now would give.
 */
export function advanceLoaded(loaded: LoadedLog, step: TailStep): void {
  const state = loaded.state;
  for (const { object, summary } of step.objects) {
    assert(object.sequence === loaded.lastSequence + 1, "a followed object out of order");
    applyToLoaded(loaded, object.sequence, summary);
    // The listing as it would read now: the gap-free log grows by one, what followed is re-listed.
    state.objects = [...state.objects.slice(0, state.gapFreeCount), object];
    state.gapFreeCount = state.objects.length;
    state.endSequence = object.sequence;
  }
  state.objects = [...state.objects.slice(0, state.gapFreeCount), ...step.beyond];
  loaded.beyond = step.beyond;
}

/** Where a loaded log leaves a follower. */
export function positionOf(loaded: LoadedLog): TailPosition {
  const own = loaded.lastSequence > loaded.lineage.through &&
    loaded.state.objects.some((x) => x.sequence === loaded.lastSequence);
  return {
    sequence: loaded.lastSequence,
    epoch: loaded.lastTrailer?.writerEpoch ?? 0,
    crc32: loaded.lastObjectCrc32,
    own,
  };
}

/** The log objects from `at` on (at itself included when it is this prefix's), ascending. */
async function listFrom(store: ObjectStore, prefix: string, at: TailPosition): Promise<LoggedObject[]> {
  const out: LoggedObject[] = [];
  const from = at.sequence <= 1 ? {} : { startAfter: logKey(prefix, at.sequence - 1) };
  // Every log name starts with "0" until 2^60 objects, so this skips every other key.
  for await (const x of listAll(store, { prefix: `${prefix}0`, ...from })) {
    const sequence = parseLogKey(prefix, x.key);
    if (sequence !== undefined && sequence >= at.sequence) {
      out.push({ sequence, key: x.key, sizeBytes: x.sizeBytes });
    }
  }
  return out.sort((a, b) => a.sequence - b.sequence);
}

/** An object's summary, or undefined when its bytes do not check out right now (it may be mid-replace). */
function readSettled(
  store: ObjectStore,
  x: LoggedObject,
): Promise<ObjectSummary | undefined> {
  return readObjectSummary(store, x).catch((e) => {
    if (isLsvdError(e, "data")) return undefined;
    throw e;
  });
}

/** The CRC-32 an object ends with (its last 8 bytes are crc, trailer length). */
async function tailCrc(store: ObjectStore, x: LoggedObject): Promise<number> {
  const { body } = await store.get(x.key, { offsetBytes: Math.max(0, x.sizeBytes - 8), lengthBytes: 8 });
  if (body.length !== 8) return 0;
  return new DataView(body.buffer, body.byteOffset, 8).getUint32(0);
}
