/**
 * @module
 * Closing the previous writer's upload window (docs/design/fencing.md). A writer never starts the
 * upload of object s unless s <= durableThrough + W (W = its upload window, recorded in its lease).
 * After taking the lease, and before replaying or archiving anything, the new writer walks the log
 * from the end of what it loaded:
 *
 *   - an object present, whose epoch is not lower than its predecessor's, is the old writer's
 *     (maybe acknowledged) data: accept it and go on;
 *   - the first missing number n gets a create-only fence object: an empty log object whose trailer
 *     carries the new epoch and the volume size (like the size records the writer already writes);
 *   - every number in (n, n-1+W] gets a fence object too; an object found there with a lower epoch
 *     is a zombie, an upload the old writer started before the fence: it is copied under archive/
 *     and overwritten by a fence object with If-Match on the ETag it was examined with (never a
 *     plain delete: a fencer racing another must not remove the other's fence object).
 *
 * Afterwards the old writer can land nothing: each of its uploads has a number <= its durable
 * prefix + W <= n-1+W, and every such number is occupied. An object with a higher epoch than ours
 * means a newer writer fenced us first: we fail with kind "fenced".
 */

import { archiveKey, logKey } from "../format/keys.ts";
import { ObjectBuilder } from "../format/object.ts";
import { isStoreError, type ObjectStore } from "../store/store.ts";
import type { Logger } from "../util/log.ts";
import { LsvdError } from "../util/errors.ts";
import { readObjectSummary } from "./object_reader.ts";
import { fencedError } from "./lease.ts";
import { tryPutLogObject } from "./object_writer.ts";

/** Bound on archive-and-replace rounds for one slot (the old writer's retries keep landing). */
const ZOMBIE_ROUNDS_MAX = 100;
/** Fence objects written at once. */
const FENCE_CONCURRENCY = 16;

export interface FenceOptions {
  prefix: string;
  /** Our epoch: every fence object carries it. */
  epoch: number;
  /** The last object of the loaded log (0 when empty) and the epoch in its trailer. */
  afterSequence: number;
  afterEpoch: number;
  /** The old writers' window to close (from the lease taken over); at least 1. */
  windowObjects: number;
  /** Size recorded in every fence object's trailer. */
  volumeSizeBytes: number;
  /** Seal time recorded in the fence objects' trailers (wall-clock ms). */
  sealTimeMs: number;
  /** Names the archive folder for zombies. */
  recoveryId: string;
  log: Logger;
}

export interface FenceResult {
  /** The first fence object: objects 1..fenceSequence-1 are the log the old writers left. */
  fenceSequence: number;
  /** The last fence object; our own objects start after it. */
  lastSequence: number;
  /** Old objects accepted after afterSequence. */
  accepted: number;
  /** Zombies moved under archive/. */
  zombies: number;
  /** The epoch of object fenceSequence-1, the old writers' last (afterEpoch when none was accepted). */
  leftEpoch: number;
}

export async function closeWindow(store: ObjectStore, options: FenceOptions): Promise<FenceResult> {
  if (!(Number.isSafeInteger(options.windowObjects) && options.windowObjects >= 1)) {
    throw new RangeError(`bad window ${options.windowObjects}`);
  }
  const fence = new Fence(store, options);
  let previousEpoch = options.afterEpoch;
  let s = options.afterSequence + 1;
  let zombies = 0;
  // Accept the old writers' objects up to the first free number (or the first zombie).
  for (;;) {
    if (await fence.tryPlace(s)) break;
    const epoch = await fence.epochOf(s);
    if (epoch === undefined) continue; // deleted meanwhile: try the number again
    if (epoch >= previousEpoch) {
      previousEpoch = epoch;
      s++;
      continue;
    }
    await fence.replaceZombie(s);
    zombies++;
    break;
  }
  const n = s;
  const last = n - 1 + options.windowObjects;
  const archived = await occupyAll(fence, n + 1, last);
  zombies += archived;
  const accepted = n - 1 - options.afterSequence;
  options.log(
    `Fenced the previous writer: objects ${n}..${last} hold epoch ${options.epoch}` +
      ` (accepted ${accepted} of its objects, archived ${zombies} late ones).`,
  );
  return { fenceSequence: n, lastSequence: last, accepted, zombies, leftEpoch: previousEpoch };
}

/**
 * Makes slots first..last hold our fence objects, archiving whatever else is there: after a
 * rollback to first-1, every object of an older writer in that window is a zombie, however high its
 * epoch relative to the point's. Returns how many were archived.
 */
export function occupySlots(
  store: ObjectStore,
  options: Omit<FenceOptions, "afterSequence" | "afterEpoch" | "windowObjects">,
  first: number,
  last: number,
): Promise<number> {
  return occupyAll(
    new Fence(store, { ...options, afterSequence: first - 1, afterEpoch: 0, windowObjects: 1 }),
    first,
    last,
  );
}

async function occupyAll(fence: Fence, first: number, last: number): Promise<number> {
  let next = first;
  let zombies = 0;
  const worker = async () => {
    while (next <= last) {
      const archived = await fence.occupy(next++); // read zombies only after the await
      zombies += archived;
    }
  };
  await Promise.all(Array.from({ length: FENCE_CONCURRENCY }, worker));
  return zombies;
}

/** Slot-level steps of the fence, sharing the store and options. */
class Fence {
  readonly #store: ObjectStore;
  readonly #o: FenceOptions;

  constructor(store: ObjectStore, options: FenceOptions) {
    this.#store = store;
    this.#o = options;
  }

  /** Our fence object for slot s: an empty log object whose trailer carries our epoch and the size. */
  #fenceBytes(s: number): Uint8Array {
    return new ObjectBuilder({ dataBytes: 0, zeroRanges: 0 }).finish({
      sequence: s,
      writerEpoch: this.#o.epoch,
      volumeSizeBytes: this.#o.volumeSizeBytes,
      sealTimeMs: this.#o.sealTimeMs,
    });
  }

  /** Creates the fence object at s; false when s is taken. */
  async tryPlace(s: number): Promise<boolean> {
    return await tryPutLogObject(this.#store, {
      key: logKey(this.#o.prefix, s),
      bytes: this.#fenceBytes(s),
    });
  }

  /** Makes slot t (inside the window) hold our fence; returns how many zombies it archived. */
  async occupy(t: number): Promise<number> {
    let archived = 0;
    for (let round = 0; round < ZOMBIE_ROUNDS_MAX; round++) {
      if (await this.tryPlace(t)) return archived;
      const found = await this.examine(t);
      if (found === undefined) continue;
      if (found.epoch === this.#o.epoch) return archived; // ours (a retried PUT that had landed)
      if (await this.#replace(t, found)) archived++;
    }
    throw this.#tooMany(t);
  }

  /** Archives the zombie at s and puts our fence in its place. */
  async replaceZombie(s: number): Promise<void> {
    const found = await this.examine(s);
    if (found !== undefined && found.epoch < this.#o.epoch) await this.#replace(s, found);
    await this.occupy(s);
  }

  /** The writer epoch in object s's trailer (0 without one), or undefined when s is gone. */
  async epochOf(s: number): Promise<number | undefined> {
    return (await this.examine(s))?.epoch;
  }

  /**
   * Object s's writer epoch and the ETag it had when it was looked at (the ETag is read first, so
   * a replacement conditional on it fails if the object changed since), or undefined when s is
   * gone. An epoch newer than ours means another writer fenced us: fail as fenced.
   */
  async examine(s: number): Promise<{ epoch: number; etag: string } | undefined> {
    const key = logKey(this.#o.prefix, s);
    try {
      const { sizeBytes, etag } = await this.#store.head(key);
      const summary = await readObjectSummary(this.#store, { sequence: s, key, sizeBytes });
      const found = { epoch: summary.trailer?.writerEpoch ?? 0, etag };
      if (found.epoch > this.#o.epoch) {
        throw fencedError(
          `Cannot fence the volume: object "${key}" carries epoch ${found.epoch}, newer than ours (${this.#o.epoch}); ` +
            "another writer took the volume over",
        );
      }
      return found;
    } catch (e) {
      if (isStoreError(e, "NotFound") || isStoreError(e, "InvalidRange")) return undefined;
      throw e;
    }
  }

  /**
   * Copies the zombie at s under archive/ and overwrites it with our fence object, only if s still
   * holds the very object examined (If-Match on its ETag). A delete cannot be made conditional on
   * every store; without the condition, a fencer racing another (takeover of a writer that was still
   * fencing) could delete the other's fence object after it replaced the zombie, reopening the slot.
   * Returns false when the slot changed meanwhile (the caller looks again).
   */
  async #replace(s: number, found: { epoch: number; etag: string }): Promise<boolean> {
    const key = logKey(this.#o.prefix, s);
    this.#o.log(
      `Archiving object "${key}" of epoch ${found.epoch}: it landed after the fence of epoch ${this.#o.epoch}.`,
    );
    try {
      await this.#store.copy(key, archiveKey(this.#o.prefix, `${this.#o.recoveryId}-fence`, s));
      await this.#store.put(key, this.#fenceBytes(s), { ifMatch: found.etag });
      return true;
    } catch (e) {
      if (isStoreError(e, "NotFound") || isStoreError(e, "PreconditionFailed")) return false;
      throw e;
    }
  }

  #tooMany(s: number): LsvdError {
    return new LsvdError(
      "unavailable",
      `Cannot fence object "${
        logKey(this.#o.prefix, s)
      }": another writer keeps writing it after ${ZOMBIE_ROUNDS_MAX} rounds`,
    );
  }
}

/** The writer epoch in an object's trailer (0 without one: written by a base-format tool). */
export async function readWriterEpoch(store: ObjectStore, key: string, sequence: number): Promise<number> {
  const { sizeBytes } = await store.head(key);
  const summary = await readObjectSummary(store, { sequence, key, sizeBytes });
  return summary.trailer?.writerEpoch ?? 0;
}
