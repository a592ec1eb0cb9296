/**
 * @module
 * One listing of everything a volume keeps in its bucket, as a `LogState`: the numbered log
 * objects with their sizes, the gap-free end of the log, checkpoints, archived objects, writer
 * epochs taken, snapshots, collection records and the format record. Every reader of a volume
 * (serve, info, export, verify, rollback, gc) starts here, so they all see the log the same way.
 * Listing never modifies the bucket.
 */

import {
  checkpointPrefix,
  collectedPrefix,
  epochPrefix,
  type ListedKey,
  logKey,
  parseCheckpointKey,
  parseCollectedKey,
  parseEpochKey,
  parseLogKey,
  parseSnapshotKey,
  snapshotPrefix,
} from "../format/keys.ts";
import { listAll, type ObjectStore } from "../store/store.ts";
import { type FormatRecord, readFormatRecord } from "./format_record.ts";
import { type CollectedRecord, coversAll, readNewestCollected } from "./collected.ts";

export interface LoggedObject {
  sequence: number;
  key: string;
  sizeBytes: number;
}

export type { ListedKey };

export interface LogState {
  prefix: string;
  /** Log objects present, ascending by sequence. */
  objects: LoggedObject[];
  /**
   * Number of leading objects of `objects` that form the replayable log: numbered 1, 2, 3, ... with
   * no gap except numbers the newest collected record names (garbage collection deleted them).
   * `objects.slice(0, gapFreeCount)` is the log; it may skip numbers, so find objects by sequence.
   */
  gapFreeCount: number;
  /**
   * Sequence of the last object of the replayable log (0 when there is none; a clone's branch
   * number `parent.through` when it has none of its own yet): the recovery point.
   */
  endSequence: number;
  /** The newest collected record (cumulative), when garbage collection ever ran. */
  collectedRecord: CollectedRecord | undefined;
  checkpoints: ListedKey[];
  /** Writer epochs ever claimed (create-only keys), ascending. */
  epochs: number[];
  /** Garbage-collection records, ascending by pass. */
  collected: ListedKey[];
  snapshots: { name: string; key: string }[];
  archived: { count: number; bytes: number };
  format: FormatRecord | undefined;
  /**
   * 0 for a full listing. N: only objects after N were listed (`objectsAfter`, for `lsvd clone`,
   * whose cost must not grow with the log): `objects` starts after N, which counts as present.
   */
  listedAfter: number;
}

export interface ListLogOptions {
  /** List only log objects after this one (a checkpoint's, known gap-free up to it). */
  objectsAfter?: number;
}

/** Lists a volume (several LISTs in parallel; the store retries each). */
export async function listLogState(
  store: ObjectStore,
  prefix: string,
  options: ListLogOptions = {},
): Promise<LogState> {
  const after = options.objectsAfter ?? 0;
  const [objects, checkpoints, epochs, collected, snapshots, archived, format] = await Promise.all([
    listObjects(store, prefix, after),
    listCheckpoints(store, prefix),
    listNumbered(store, epochPrefix(prefix), (k) => parseEpochKey(prefix, k)),
    listNumbered(store, collectedPrefix(prefix), (k) => parseCollectedKey(prefix, k)),
    listSnapshotKeys(store, prefix),
    sumUnder(store, `${prefix}archive/`),
    readFormatRecord(store, prefix),
  ]);
  const collectedRecord = await readNewestCollected(store, collected);
  // A clone's own log starts above its parent's numbers (src/log/parent.ts).
  const base = Math.max(format?.parent?.through ?? 0, after);
  const count = gapFreeCount(objects, collectedRecord, base);
  return {
    prefix,
    objects,
    gapFreeCount: count,
    endSequence: count === 0 ? base : objects[count - 1]!.sequence,
    collectedRecord,
    checkpoints,
    epochs: epochs.map((e) => e.sequence),
    collected,
    snapshots,
    archived,
    format,
    listedAfter: after,
  };
}

/** True when the prefix holds anything of a volume (a log object or a format record). */
export function volumeExists(state: Pick<LogState, "objects" | "format">): boolean {
  return state.objects.length > 0 || state.format !== undefined;
}

/** Only the checkpoints (the writer prunes them without listing the whole volume). */
export function listCheckpoints(store: ObjectStore, prefix: string): Promise<ListedKey[]> {
  return listNumbered(store, checkpointPrefix(prefix), (k) => parseCheckpointKey(prefix, k));
}

/** Leading objects numbered without a gap, where numbers the record names as collected count as present. */
function gapFreeCount(objects: LoggedObject[], record: CollectedRecord | undefined, base: number): number {
  let n = 0, expected = base + 1;
  while (n < objects.length) {
    const s = objects[n]!.sequence;
    if (s !== expected && !(record !== undefined && coversAll(record.collected, expected, s - 1))) break;
    n++;
    expected = s + 1;
  }
  return n;
}

async function listObjects(store: ObjectStore, prefix: string, after: number): Promise<LoggedObject[]> {
  const out: LoggedObject[] = [];
  // Every log name starts with "0" until 2^60 objects, so this skips every other key.
  const from = after === 0 ? {} : { startAfter: logKey(prefix, after) };
  for await (const o of listAll(store, { prefix: `${prefix}0`, ...from })) {
    const sequence = parseLogKey(prefix, o.key);
    if (sequence !== undefined) out.push({ sequence, key: o.key, sizeBytes: o.sizeBytes });
  }
  return out.sort((a, b) => a.sequence - b.sequence);
}

async function listNumbered(
  store: ObjectStore,
  under: string,
  parse: (key: string) => number | undefined,
): Promise<ListedKey[]> {
  const out: ListedKey[] = [];
  for await (const o of listAll(store, { prefix: under })) {
    const sequence = parse(o.key);
    if (sequence !== undefined) out.push({ sequence, key: o.key });
  }
  return out.sort((a, b) => a.sequence - b.sequence);
}

/** Only the snapshot and pin keys (garbage collection re-lists them before it deletes). */
export function listSnapshots(
  store: ObjectStore,
  prefix: string,
): Promise<{ name: string; key: string }[]> {
  return listSnapshotKeys(store, prefix);
}

async function listSnapshotKeys(
  store: ObjectStore,
  prefix: string,
): Promise<{ name: string; key: string }[]> {
  const out: { name: string; key: string }[] = [];
  for await (const o of listAll(store, { prefix: snapshotPrefix(prefix) })) {
    const name = parseSnapshotKey(prefix, o.key);
    if (name !== undefined) out.push({ name, key: o.key });
  }
  return out;
}

async function sumUnder(store: ObjectStore, under: string): Promise<{ count: number; bytes: number }> {
  let count = 0, bytes = 0;
  for await (const o of listAll(store, { prefix: under })) {
    count++;
    bytes += o.sizeBytes;
  }
  return { count, bytes };
}
