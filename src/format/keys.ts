/**
 * @module
 * The one place where bucket keys are built and parsed. Log objects are 16 lower-case hex
 * digits under an optional prefix; everything else lsvd keeps lives beside them under
 * names that can never be mistaken for a log object.
 */

import { assertFail } from "../util/assert.ts";

const LOG_NAME = /^[0-9a-f]{16}$/;
/** A key found by a listing, with the number its name holds (checkpoint sequence, epoch, collection pass). */
export interface ListedKey {
  sequence: number;
  key: string;
}

/** Sequence numbers stay below 2^53 so they are exact JavaScript numbers. */
export const SEQUENCE_MAX = Number.MAX_SAFE_INTEGER;

/** Normalises a user prefix: empty stays empty, anything else ends in exactly one `/`. */
export function normalizePrefix(prefix: string): string {
  const trimmed = prefix.replace(/^\/+/, "").replace(/\/+$/, "");
  return trimmed === "" ? "" : `${trimmed}/`;
}

export function sequenceName(sequence: number): string {
  if (!(Number.isSafeInteger(sequence) && sequence >= 1)) assertFail(`bad sequence ${sequence}`);
  return sequence.toString(16).padStart(16, "0");
}

export function logKey(prefix: string, sequence: number): string {
  return `${prefix}${sequenceName(sequence)}`;
}

/** The sequence number of a log key under prefix, or undefined when the key is not a log object. */
export function parseLogKey(prefix: string, key: string): number | undefined {
  if (!key.startsWith(prefix)) return undefined;
  const name = key.slice(prefix.length);
  if (!LOG_NAME.test(name)) return undefined;
  const sequence = parseInt(name, 16);
  return Number.isSafeInteger(sequence) && sequence >= 1 ? sequence : undefined;
}

/**
 * Objects found after a gap are moved under `archive/<recovery id>/<name>` so new writes can take
 * their numbers; the recovery id keeps repeated archivals apart.
 */
export function archiveKey(prefix: string, recoveryId: string, sequence: number): string {
  return `${prefix}archive/${recoveryId}/${sequenceName(sequence)}`;
}

/** Map checkpoints: the extent map after applying every object up to and including sequence. */
export function checkpointKey(prefix: string, sequence: number): string {
  return `${prefix}checkpoint/${sequenceName(sequence)}`;
}

export function checkpointPrefix(prefix: string): string {
  return `${prefix}checkpoint/`;
}

export function parseCheckpointKey(prefix: string, key: string): number | undefined {
  return parseLogKey(checkpointPrefix(prefix), key);
}

// ---- keys beside the log (none can be mistaken for a 16-hex log name) ----------------------------

/** The format record: which format the volume uses and the oldest lsvd able to open it. */
export function formatKey(prefix: string): string {
  return `${prefix}format.json`;
}

/** The writer lease: who may write the volume now, renewed with conditional PUTs. */
export function leaseKey(prefix: string): string {
  return `${prefix}lease.json`;
}

/** One create-only key per writer epoch ever taken, so an epoch is never reused (even after a rollback). */
export function epochKey(prefix: string, epoch: number): string {
  return `${prefix}epoch/${sequenceName(epoch)}`;
}

export function epochPrefix(prefix: string): string {
  return `${prefix}epoch/`;
}

export function parseEpochKey(prefix: string, key: string): number | undefined {
  return parseLogKey(epochPrefix(prefix), key);
}

/**
 * Garbage-collection records: written (create-only) before a pass deletes anything, naming the log
 * numbers it collects, so recovery tells a collected range from a crash gap by durable facts alone.
 */
export function collectedKey(prefix: string, pass: number): string {
  return `${prefix}collected/${sequenceName(pass)}`;
}

export function collectedPrefix(prefix: string): string {
  return `${prefix}collected/`;
}

export function parseCollectedKey(prefix: string, key: string): number | undefined {
  return parseLogKey(collectedPrefix(prefix), key);
}

/**
 * A rollback's rescued data (the entries of copies after the point that the point needs), stored
 * here before any copy is archived and moved into the log as the object after the point.
 */
export function rescueKey(prefix: string, id: string): string {
  return `${prefix}rescue/${id}`;
}

const SNAPSHOT_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** True for names `lsvd snapshot create` accepts (they become key names). */
export function isSnapshotName(name: string): boolean {
  return SNAPSHOT_NAME.test(name);
}

/** A named snapshot: pins one point of the log until deleted. */
export function snapshotKey(prefix: string, name: string): string {
  if (!isSnapshotName(name)) assertFail(`bad snapshot name ${name}`);
  return `${prefix}snapshot/${name}`;
}

export function snapshotPrefix(prefix: string): string {
  return `${prefix}snapshot/`;
}

export function parseSnapshotKey(prefix: string, key: string): string | undefined {
  const p = snapshotPrefix(prefix);
  if (!key.startsWith(p)) return undefined;
  const name = key.slice(p.length);
  return isSnapshotName(name) ? name : undefined;
}

/**
 * A follower's reader pin (`serve --read-only --follow`, `--standby`): a snapshot key named
 * `follow-<id>`, one per running follower (id: random, fresh at each start), renewed while it runs.
 * The name is for people (`lsvd snapshot list`); what makes it a follower pin is the record's
 * `follower` field (src/log/snapshots.ts).
 */
export function followerPinName(id: string): string {
  const name = `follow-${id}`;
  if (!isSnapshotName(name)) assertFail(`bad follower id ${id}`);
  return name;
}

/** Store probe written and deleted at start to prove the store stores, reads and deletes. */
export function probeKey(prefix: string, nonce: string): string {
  return `${prefix}probe/${nonce}`;
}
