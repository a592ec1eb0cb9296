/**
 * @module
 * Rebuilds the extent map from the log on start: list the numbered objects, read every header
 * (many at once, applied strictly in order), stop at the first gap in the numbering, and move
 * whatever follows the gap under `archive/` so new writes can take those numbers. Stopping between
 * objects always gives a state that really existed, so a prefix of the log is a valid disk.
 */

import {
  decodeHeader,
  decodeTrailer,
  type Extent,
  FormatError,
  HEADER_BYTES,
  SECTOR_BYTES,
  TRAILER_FIXED_BYTES,
  trailerBytesOf,
} from "../format/object.ts";
import { archiveKey, checkpointPrefix, parseCheckpointKey, parseLogKey } from "../format/keys.ts";
import { type Checkpoint, decodeCheckpoint } from "../format/checkpoint.ts";
import { isStoreError, listAll, type ObjectStore } from "../store/store.ts";
import type { Logger } from "../util/log.ts";
import { ExtentMap } from "./extent_map.ts";
import { messageOf, VolumeError } from "./errors.ts";
import { type RetryPolicy, withRetries } from "./retry.ts";

export interface RecoveryOptions {
  prefix: string;
  log: Logger;
  /** Read-only recovery reports objects after a gap but leaves them in place. */
  readOnly: boolean;
  /** Header reads in flight at once. */
  concurrency: number;
  /** Names the archive folder for objects found after a gap. */
  recoveryId: string;
  retry: RetryPolicy;
}

export interface RecoveredState {
  map: ExtentMap;
  lastSequence: number;
  /** From the newest trailer that records it; undefined when no object has a trailer. */
  volumeSizeBytes: number | undefined;
  /** Highest writer epoch seen; the next writer takes one more. */
  writerEpoch: number;
  /** The checkpoint recovery started from (0: none): headers after it were replayed. */
  checkpointSequence: number;
  /** CRC from the newest object's trailer (0 when it has none), for the next checkpoint. */
  lastObjectCrc32: number;
}

interface LoggedObject {
  sequence: number;
  key: string;
  sizeBytes: number;
}

interface ObjectSummary {
  entries: Extent[];
  zeroRanges: Extent[];
  volumeSizeBytes: number | undefined;
  writerEpoch: number;
  /** Only read for the newest object (0 otherwise, and when there is no trailer). */
  crc32: number;
}

export async function recover(store: ObjectStore, options: RecoveryOptions): Promise<RecoveredState> {
  options.log(`Starting recovery from ${store.description}.`);
  const [objects, checkpoints] = await withRetries(
    options.retry,
    () => Promise.all([listLog(store, options.prefix), listCheckpoints(store, options.prefix)]),
  );
  let contiguous = 0;
  while (contiguous < objects.length && objects[contiguous]!.sequence === contiguous + 1) contiguous++;
  const afterGap = objects.slice(contiguous);

  const state: RecoveredState = {
    map: new ExtentMap(),
    lastSequence: 0,
    volumeSizeBytes: undefined,
    writerEpoch: 0,
    checkpointSequence: 0,
    lastObjectCrc32: 0,
  };
  const base = await loadCheckpoint(store, objects.slice(0, contiguous), checkpoints, options);
  if (base !== undefined) {
    state.map = ExtentMap.fromArray(base.extents);
    state.lastSequence = base.sequence;
    state.volumeSizeBytes = base.volumeSizeBytes;
    state.writerEpoch = base.writerEpoch;
    state.checkpointSequence = base.sequence;
    state.lastObjectCrc32 = base.objectCrc32;
  }
  const replay = objects.slice(state.lastSequence, contiguous);
  await readInOrder(
    replay,
    options.concurrency,
    (o, i) => withRetries(options.retry, () => readSummary(store, o, i === replay.length - 1)),
    (o, s) => {
      apply(state.map, o.sequence, s);
      state.lastSequence = o.sequence;
      if (s.volumeSizeBytes !== undefined) state.volumeSizeBytes = s.volumeSizeBytes;
      state.writerEpoch = Math.max(state.writerEpoch, s.writerEpoch);
      state.lastObjectCrc32 = s.crc32;
    },
  );
  if (afterGap.length > 0) await archive(store, afterGap, options);
  if (!options.readOnly) {
    // A checkpoint past the recovery point describes objects that are gone (rolled back or archived).
    for (const c of checkpoints) {
      if (c.sequence > contiguous) await withRetries(options.retry, () => store.delete(c.key));
    }
  }
  const fromCheckpoint = base === undefined ? "" : ` after checkpoint ${base.sequence}`;
  options.log(`Recovery complete (processed ${replay.length} objects${fromCheckpoint}).`);
  return state;
}

interface ListedCheckpoint {
  sequence: number;
  key: string;
}

async function listCheckpoints(store: ObjectStore, prefix: string): Promise<ListedCheckpoint[]> {
  const out: ListedCheckpoint[] = [];
  for await (const o of listAll(store, { prefix: checkpointPrefix(prefix) })) {
    const sequence = parseCheckpointKey(prefix, o.key);
    if (sequence !== undefined) out.push({ sequence, key: o.key });
  }
  return out.sort((a, b) => a.sequence - b.sequence);
}

/**
 * The newest checkpoint inside the replayable log whose object CRC matches the object it names
 * (so a checkpoint from before a rollback is never applied to a log rewritten since), or undefined.
 */
async function loadCheckpoint(
  store: ObjectStore,
  log: LoggedObject[],
  checkpoints: ListedCheckpoint[],
  options: RecoveryOptions,
): Promise<Checkpoint | undefined> {
  const candidate = checkpoints.filter((c) => c.sequence <= log.length).at(-1);
  if (candidate === undefined) return undefined;
  const object = log[candidate.sequence - 1]!;
  try {
    const [{ body }, tail] = await Promise.all([
      withRetries(options.retry, () => store.get(candidate.key)),
      withRetries(
        options.retry,
        () => store.get(object.key, { offsetBytes: Math.max(0, object.sizeBytes - 8), lengthBytes: 8 }),
      ),
    ]);
    const checkpoint = decodeCheckpoint(body);
    const crc = new DataView(tail.body.buffer, tail.body.byteOffset, 8).getUint32(0);
    if (checkpoint.sequence !== candidate.sequence || crc !== checkpoint.objectCrc32) {
      throw new FormatError(`it does not match object "${object.key}"`);
    }
    return checkpoint;
  } catch (e) {
    if (isStoreError(e) && e.code !== "NotFound") throw e;
    options.log(`Ignoring checkpoint "${candidate.key}": ${messageOf(e)}; replaying the whole log.`);
    return undefined;
  }
}

async function listLog(store: ObjectStore, prefix: string): Promise<LoggedObject[]> {
  const out: LoggedObject[] = [];
  // Every log name starts with "0" until 2^60 objects, so this skips archive/ and checkpoint/.
  for await (const o of listAll(store, { prefix: `${prefix}0` })) {
    const sequence = parseLogKey(prefix, o.key);
    if (sequence !== undefined) out.push({ sequence, key: o.key, sizeBytes: o.sizeBytes });
  }
  out.sort((a, b) => a.sequence - b.sequence);
  return out;
}

/** Runs read() with at most `concurrency` in flight and hands results to use() in input order. */
async function readInOrder<T, R>(
  items: T[],
  concurrency: number,
  read: (item: T, index: number) => Promise<R>,
  use: (item: T, result: R) => void,
): Promise<void> {
  const pending: Promise<R>[] = [];
  let next = 0;
  const launch = () => {
    while (next < items.length && pending.length < concurrency) {
      const p = read(items[next]!, next);
      p.catch(() => {}); // observed when awaited below, in order
      pending.push(p);
      next++;
    }
  };
  launch();
  for (let done = 0; done < items.length; done++) {
    const result = await pending.shift()!;
    use(items[done]!, result);
    launch();
  }
}

async function readSummary(store: ObjectStore, o: LoggedObject, isNewest: boolean): Promise<ObjectSummary> {
  try {
    if (o.sizeBytes < HEADER_BYTES) {
      throw new FormatError(`object is ${o.sizeBytes} bytes, shorter than the ${HEADER_BYTES}-byte header`);
    }
    const { body } = await store.get(o.key, { offsetBytes: 0, lengthBytes: HEADER_BYTES });
    const entries = decodeHeader(body);
    const trailerBytes = trailerBytesOf(entries, o.sizeBytes);
    const summary: ObjectSummary = {
      entries,
      zeroRanges: [],
      volumeSizeBytes: undefined,
      writerEpoch: 0,
      crc32: 0,
    };
    if (trailerBytes === 0) return summary; // written by a tool that knows only header + data
    if (trailerBytes < TRAILER_FIXED_BYTES) {
      throw new FormatError(`${trailerBytes} bytes follow the data, too few for a trailer`);
    }
    // A bare trailer carries no zero ranges; only the newest one's volume size matters.
    if (trailerBytes === TRAILER_FIXED_BYTES && !isNewest) return summary;
    const tail = await store.get(o.key, {
      offsetBytes: o.sizeBytes - trailerBytes,
      lengthBytes: trailerBytes,
    });
    const trailer = decodeTrailer(tail.body);
    if (trailer.sequence !== o.sequence) {
      throw new FormatError(`its trailer says it is object ${trailer.sequence}`);
    }
    return {
      entries,
      zeroRanges: trailer.zeroRanges,
      volumeSizeBytes: trailer.volumeSizeBytes,
      writerEpoch: trailer.writerEpoch,
      crc32: trailer.crc32,
    };
  } catch (e) {
    if (isStoreError(e, "Transient")) throw e; // retried by the caller
    throw new VolumeError(`Cannot recover object "${o.key}": ${messageOf(e)}`, { cause: e });
  }
}

/** Data entries in header order (a later entry wins), then zero ranges. */
export function apply(
  map: ExtentMap,
  sequence: number,
  s: { entries: Extent[]; zeroRanges: Extent[] },
): void {
  let offsetSectors = 0;
  for (const e of s.entries) {
    const lengthSectors = e.lengthBytes / SECTOR_BYTES;
    map.set(e.addressBytes / SECTOR_BYTES, lengthSectors, sequence, offsetSectors);
    offsetSectors += lengthSectors;
  }
  for (const z of s.zeroRanges) map.clear(z.addressBytes / SECTOR_BYTES, z.lengthBytes / SECTOR_BYTES);
}

async function archive(store: ObjectStore, objects: LoggedObject[], options: RecoveryOptions): Promise<void> {
  const first = objects[0]!;
  if (options.readOnly) {
    options.log(
      `Ignoring ${objects.length} objects after the recovery point (read-only, left in place; first is "${first.key}").`,
    );
    return;
  }
  for (const o of objects) {
    await withRetries(
      options.retry,
      () => store.copy(o.key, archiveKey(options.prefix, options.recoveryId, o.sequence)),
    );
  }
  // Remove newest first: a crash halfway leaves a shorter tail after the same gap, never a new prefix.
  for (const o of [...objects].reverse()) await withRetries(options.retry, () => store.delete(o.key));
  options.log(`Archived ${objects.length} objects after the recovery point.`);
}
