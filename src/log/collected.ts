/**
 * @module
 * Collected records (`collected/<16 hex pass>`): the durable fact that tells a log number garbage
 * collection deleted from a crash gap. A pass writes its record (create-only) after the copies it
 * made are durable and before it deletes anything, so any missing object a record does not name
 * was lost some other way. Each record is cumulative -- every number ever collected and every copy
 * object the loads of past points must consult -- so readers need only the newest one; passes
 * delete older records once a newer one is stored. See docs/design/gc-and-retention.md.
 */

import { collectedKey, type ListedKey } from "../format/keys.ts";
import { isStoreError, type ObjectStore } from "../store/store.ts";
import { LsvdError } from "../util/errors.ts";
import { encodeJsonRecord, readJsonRecord } from "./json_record.ts";

export const COLLECTED_VERSION = 1;

/** Inclusive ranges of log numbers, ascending, disjoint, not adjacent. */
export type SequenceRanges = [number, number][];

export interface CollectedRecord {
  version: number;
  pass: number;
  /** Every log number any pass deleted (cumulative). */
  collected: SequenceRanges;
  /** Every copied object (GC, rollback rescue) whose origins a load of a past point must apply. */
  copies: SequenceRanges;
  /** The oldest point every pass so far kept exact (points older than it may be gone). */
  retainedFromSequence: number;
  /** Snapshots (older than retainedFromSequence) the passes kept exact. */
  snapshots: { name: string; sequence: number }[];
  /** Writer's wall clock when the record was written (ms since 1970). */
  createdMs: number;
  /**
   * Set while `lsvd rollback` moves the log back to `to` past copied objects: every load refuses
   * until the rollback finishes (the log is between two states). `rescueKey` holds the rescued
   * object (null when nothing needed rescuing); `archiveId` names the archive folder.
   */
  rollback?: { to: number; archiveId: string; rescueKey: string | null };
}

export function encodeCollected(record: CollectedRecord): Uint8Array {
  return encodeJsonRecord(record);
}

/** Checks a parsed record's shape; LsvdError("data") naming the key otherwise. */
export function checkCollected(value: unknown, key: string): CollectedRecord {
  const r = value as CollectedRecord;
  const ok = typeof r === "object" && r !== null && r.version === COLLECTED_VERSION &&
    Number.isSafeInteger(r.pass) && isRanges(r.collected) && isRanges(r.copies) &&
    Number.isSafeInteger(r.retainedFromSequence) && Array.isArray(r.snapshots);
  if (!ok) throw new LsvdError("data", `Cannot read collected record "${key}": it is not a version-1 record`);
  return r;
}

function isRanges(v: unknown): v is SequenceRanges {
  if (!Array.isArray(v)) return false;
  let last = 0;
  for (const r of v) {
    if (!Array.isArray(r) || r.length !== 2 || !Number.isSafeInteger(r[0]) || !(r[0] > last)) return false;
    if (!Number.isSafeInteger(r[1]) || r[1] < r[0]) return false;
    last = r[1] + 1;
  }
  return true;
}

/** The newest record among `listed` (ascending by pass), or undefined when there is none. */
export async function readNewestCollected(
  store: ObjectStore,
  listed: readonly ListedKey[],
): Promise<CollectedRecord | undefined> {
  const newest = listed.at(-1);
  if (newest === undefined) return undefined;
  return checkCollected(await readJsonRecord(store, newest.key), newest.key);
}

/** Stores a record create-only; false when that pass number is taken (another writer collected). */
export async function storeCollected(
  store: ObjectStore,
  prefix: string,
  record: CollectedRecord,
): Promise<boolean> {
  try {
    await store.put(collectedKey(prefix, record.pass), encodeCollected(record), { ifNoneMatch: true });
    return true;
  } catch (e) {
    if (isStoreError(e, "PreconditionFailed")) return false;
    throw e;
  }
}

/** True when `sequence` lies in one of the ranges. */
export function inRanges(ranges: SequenceRanges, sequence: number): boolean {
  let lo = 0, hi = ranges.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (ranges[mid]![1] < sequence) lo = mid + 1;
    else hi = mid;
  }
  const r = ranges[lo];
  return r !== undefined && r[0] <= sequence;
}

/** True when every number in [first, last] lies in the ranges (they merge adjacent numbers). */
export function coversAll(ranges: SequenceRanges, first: number, last: number): boolean {
  if (first > last) return true;
  for (const [a, b] of ranges) if (a <= first && last <= b) return true;
  return false;
}

/** The ranges plus `sequences`, merged. */
export function addToRanges(ranges: SequenceRanges, sequences: Iterable<number>): SequenceRanges {
  const all: [number, number][] = [...ranges.map(([a, b]) => [a, b] as [number, number])];
  for (const s of sequences) all.push([s, s]);
  all.sort((x, y) => x[0] - y[0]);
  const out: SequenceRanges = [];
  for (const [a, b] of all) {
    const last = out.at(-1);
    if (last !== undefined && a <= last[1] + 1) last[1] = Math.max(last[1], b);
    else out.push([a, b]);
  }
  return out;
}

/** The ranges cut to numbers <= `through` (a rollback drops what it removes). */
export function clipRanges(ranges: SequenceRanges, through: number): SequenceRanges {
  const out: SequenceRanges = [];
  for (const [a, b] of ranges) if (a <= through) out.push([a, Math.min(b, through)]);
  return out;
}
