/**
 * @module
 * Named snapshots and reader pins (`snapshot/<name>`): a small JSON body naming one point of the
 * log that garbage collection keeps exact. A snapshot lasts until deleted; a pin (what an export
 * or a read-only serve takes while it reads) carries an expiry, is renewed by its holder, and is
 * ignored once stale, so a reader that died never pins forever (SlateDB's checkpoints with an
 * expiry play the same part). While any live pin exists, GC moves no data (a reader's map points
 * at the objects it loaded), it only deletes objects no retained point needs at all.
 *
 * Creating one races with a pass that is about to collect the point: the creator writes the key,
 * then reads the newest collected record; a pass writes its record, then lists snapshots again
 * before deleting. Whichever comes second sees the other (docs/design/gc-and-retention.md).
 */

import { followerPinName, isSnapshotName, snapshotKey } from "../format/keys.ts";
import { isStoreError, type ObjectStore } from "../store/store.ts";
import { isLsvdError, LsvdError } from "../util/errors.ts";
import { readFormatRecord } from "./format_record.ts";
import { bucketStore } from "./parent.ts";
import type { Clock, Timer } from "../util/clock.ts";
import { encodeJsonRecord, readJsonRecord } from "./json_record.ts";
import { listLogState, type LogState } from "./log_state.ts";

export const SNAPSHOT_VERSION = 1;
/**
 * A clone's pin (`clone` set) is written as version 2, so an lsvd that knows only version 1
 * refuses it instead of collecting what the clone reads (docs/FORMAT.md "Clones").
 */
export const CLONE_PIN_VERSION = 2;

/** What a clone's pin says about the clone: where it lives and the parent numbers it reads. */
export interface ClonePinned {
  prefix: string;
  /** The clone's bucket when it is not this volume's (`lsvd clone --to-bucket`). */
  bucket?: string;
  /** The parent's last object when the clone was made: objects up to it are never moved. */
  through: number;
}

export interface SnapshotRecord {
  version: number;
  name: string;
  /** The point: the state after this object. */
  sequence: number;
  createdMs: number;
  /** Pins only: ignored after this wall-clock time (ms since 1970). */
  expiresMs?: number;
  /** A clone's pin (version 2): kept until the clone is flattened. */
  clone?: ClonePinned;
  /**
   * A follower's pin (with `expiresMs`): the follower reads this point or any later one, so
   * garbage collection keeps every point from it to the head exact (docs/design/followers.md).
   */
  follower?: true;
}

export function encodeSnapshot(s: SnapshotRecord): Uint8Array {
  return encodeJsonRecord(s);
}

/** Checks a parsed snapshot record's shape; LsvdError("data") naming the key otherwise. */
export function checkSnapshot(value: unknown, key: string): SnapshotRecord {
  const s = value as SnapshotRecord;
  const clone = s?.clone;
  const cloneOk = s?.version === SNAPSHOT_VERSION
    ? clone === undefined
    : s?.version === CLONE_PIN_VERSION && typeof clone === "object" && clone !== null &&
      typeof clone.prefix === "string" && Number.isSafeInteger(clone.through) &&
      clone.through >= s.sequence &&
      (clone.bucket === undefined || typeof clone.bucket === "string");
  const ok = typeof s === "object" && s !== null && cloneOk &&
    typeof s.name === "string" && Number.isSafeInteger(s.sequence) && s.sequence >= 1 &&
    (s.expiresMs === undefined || Number.isFinite(s.expiresMs)) &&
    (s.follower === undefined || (s.follower === true && s.expiresMs !== undefined));
  if (!ok) {
    throw new LsvdError("data", `Cannot read snapshot "${key}": it is not a version-1 or -2 snapshot record`);
  }
  return s;
}

/** Every snapshot and pin the listing names, read (a key deleted meanwhile is skipped). */
export async function readSnapshots(
  store: ObjectStore,
  state: Pick<LogState, "snapshots">,
): Promise<SnapshotRecord[]> {
  const out: SnapshotRecord[] = [];
  for (const { key } of state.snapshots) {
    try {
      out.push(checkSnapshot(await readJsonRecord(store, key), key));
    } catch (e) {
      if (!isStoreError(e, "NotFound")) throw e;
    }
  }
  return out.sort((a, b) => a.sequence - b.sequence);
}

/** True for a pin whose holder stopped renewing it. */
export function isStale(s: SnapshotRecord, wallNowMs: number): boolean {
  return s.expiresMs !== undefined && s.expiresMs <= wallNowMs;
}

/**
 * Creates snapshot (or pin) `name` at `sequence`: refused when the name is taken, the point is past
 * the log, or garbage collection no longer keeps it exact -- checked again after the key is written.
 */
export async function createSnapshot(
  store: ObjectStore,
  prefix: string,
  record: SnapshotRecord,
  listed?: LogState,
): Promise<LogState> {
  if (!isSnapshotName(record.name)) {
    throw new LsvdError(
      "invalid",
      `Invalid snapshot name "${record.name}": use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit`,
    );
  }
  // `listed`: the caller's listing from just before (a clone's), so the volume is listed once less.
  const before = listed ?? await listLogState(store, prefix);
  checkPointKept(before, record.sequence, record.name);
  const key = snapshotKey(prefix, record.name);
  try {
    await store.put(key, encodeSnapshot(record), { ifNoneMatch: true });
  } catch (e) {
    if (isStoreError(e, "PreconditionFailed")) {
      throw new LsvdError(
        "invalid",
        `Cannot create snapshot "${record.name}": a snapshot of that name exists`,
      );
    }
    throw e;
  }
  // A pass that wrote its record before our key existed may be deleting what the point needs.
  const after = await listLogState(store, prefix, { objectsAfter: before.listedAfter });
  try {
    checkPointKept(after, record.sequence, record.name);
  } catch (e) {
    await store.delete(key);
    throw e;
  }
  return after;
}

/**
 * Deletes a snapshot. A clone's pin is refused while the clone it names still reads through it
 * (flatten the clone first); a pin an interrupted `lsvd clone` left behind may go.
 */
export async function deleteSnapshot(store: ObjectStore, prefix: string, name: string) {
  const key = snapshotKey(prefix, name);
  const record = await readSnapshot(store, prefix, name).catch((e) => {
    if (isLsvdError(e, "invalid")) {
      throw new LsvdError("invalid", `Cannot delete snapshot "${name}": there is none`);
    }
    if (isLsvdError(e, "data")) return undefined; // a damaged record can still be deleted
    throw e;
  });
  if (record?.clone !== undefined) {
    const clonePrefix = record.clone.prefix;
    const cloneStore = bucketStore(store, record.clone.bucket, `delete snapshot "${name}": its clone`);
    const link = (await readFormatRecord(cloneStore, clonePrefix))?.parent;
    if (
      link !== undefined && link.prefix === prefix && link.pin === name && link.flattenedThrough === undefined
    ) {
      throw new LsvdError(
        "invalid",
        `Cannot delete snapshot "${name}": the clone under ${
          cloneNamed(record.clone).where
        } reads through it; run '${cloneNamed(record.clone).flatten}' first`,
      );
    }
  }
  await store.delete(key);
}

/** How messages name a pinned clone, and the command that releases its pin. */
export function cloneNamed(c: ClonePinned): { where: string; flatten: string } {
  const bucket = c.bucket === undefined ? "" : ` in bucket "${c.bucket}"`;
  const bucketArg = c.bucket === undefined ? "" : `--bucket ${c.bucket} `;
  return { where: `"${c.prefix}"${bucket}`, flatten: `lsvd flatten ${bucketArg}--prefix ${c.prefix}` };
}

/** The newest parent number any clone of this volume reads (0: none); such objects never move. */
export function cloneFloor(points: readonly SnapshotRecord[]): number {
  return Math.max(0, ...points.map((s) => s.clone?.through ?? 0));
}

/**
 * The newest object whose copies a pin's map takes in (undefined: all of them, as for snapshots and
 * the retention window). A clone reads its parent objects by number up to its link; a follower has
 * applied nothing after its point, so GC's copies made later are not in the map it reads from
 * (docs/design/followers.md F2). Loading such a map with this bound is what lets GC move data while
 * a follower runs: a copy's sources stay until every follower pin has passed the copy.
 */
export function copiesThroughOf(s: SnapshotRecord): number | undefined {
  return s.clone?.through ?? (s.follower === true ? s.sequence : undefined);
}

/** How the map a snapshot or pin holds is loaded (src/log/load.ts): at its point, copies bounded. */
export function pinnedLoad(
  s: SnapshotRecord,
): { atSequence: number; pinningOnly: true; copiesThrough?: number } {
  const through = copiesThroughOf(s);
  return {
    atSequence: s.sequence,
    pinningOnly: true,
    ...(through === undefined ? {} : { copiesThrough: through }),
  };
}

/** The oldest point a live follower pin holds (Infinity: none); data above it is never moved. */
export function followerFloor(points: readonly SnapshotRecord[]): number {
  return Math.min(Infinity, ...points.filter((s) => s.follower === true).map((s) => s.sequence));
}

/** Reads one snapshot by name; LsvdError("invalid") when there is none. */
export async function readSnapshot(
  store: ObjectStore,
  prefix: string,
  name: string,
): Promise<SnapshotRecord> {
  const key = snapshotKey(prefix, name);
  try {
    return checkSnapshot(await readJsonRecord(store, key), key);
  } catch (e) {
    if (isStoreError(e, "NotFound")) throw new LsvdError("invalid", `There is no snapshot "${name}"`);
    throw e;
  }
}

function checkPointKept(state: LogState, sequence: number, name: string): void {
  if (sequence > state.endSequence) {
    throw new LsvdError(
      "invalid",
      `Cannot create snapshot "${name}" at object ${sequence}: the log ends at object ${state.endSequence}`,
    );
  }
  const record = state.collectedRecord;
  if (record === undefined || sequence >= record.retainedFromSequence) return;
  if (record.snapshots.some((s) => s.sequence === sequence)) return;
  throw new LsvdError(
    "invalid",
    `Cannot create snapshot "${name}" at object ${sequence}: garbage collection keeps points from object ` +
      `${record.retainedFromSequence} on (the retention window); older points are gone`,
  );
}

/** A reader's pin lives this long unless renewed; renewed every third of it while held. */
export const PIN_TTL_MS = 15 * 60_000;

export interface HeldPin {
  name: string;
  /** Stops renewing and deletes the pin (best effort: a stale pin is ignored anyway). */
  release(): Promise<void>;
}

/**
 * Pins point `sequence` while a reader (export, read-only serve) reads it: garbage collection keeps
 * the point and moves no data until the pin is released or goes stale.
 */
export async function holdPin(
  store: ObjectStore,
  prefix: string,
  sequence: number,
  options: { clock: Clock; purpose: string },
): Promise<HeldPin> {
  const name = `${options.purpose}-${options.clock.wallMs().toString(36)}-${crypto.randomUUID().slice(0, 8)}`;
  const record = (): SnapshotRecord => ({
    version: SNAPSHOT_VERSION,
    name,
    sequence,
    createdMs: options.clock.wallMs(),
    expiresMs: options.clock.wallMs() + PIN_TTL_MS,
  });
  await createSnapshot(store, prefix, record());
  let timer: Timer | undefined;
  const renew = () => {
    timer = options.clock.setTimer(PIN_TTL_MS / 3, () => {
      store.put(snapshotKey(prefix, name), encodeSnapshot(record())).catch(() => {}).finally(renew);
    });
  };
  renew();
  return {
    name,
    release: async () => {
      timer?.cancel();
      await store.delete(snapshotKey(prefix, name)).catch(() => {});
    },
  };
}

/** A follower's pin lives this long unless renewed (docs/design/followers.md). */
export const FOLLOWER_PIN_TTL_MS = 5 * 60_000;

/** True for a follower's pin that is still live at wallNowMs. */
export function isLiveFollowerPin(s: SnapshotRecord, wallNowMs: number): boolean {
  return s.follower === true && !isStale(s, wallNowMs);
}

export interface FollowerPin {
  name: string;
  /** The point the pin holds now. */
  readonly sequence: number;
  /** Wall time (ms) of the last write of the pin that the store confirmed. */
  readonly writtenMs: number;
  /**
   * Rewrites the pin at `sequence` (never lower than the follower's oldest point in use) with a
   * fresh expiry. A failure is the caller's to report; the old record stays until it expires.
   */
  write(sequence: number): Promise<void>;
  /** Deletes the pin (best effort: a stale pin is ignored anyway). */
  release(): Promise<void>;
}

/**
 * Creates a follower's pin at `sequence` (refused, like a snapshot, when GC no longer keeps that
 * point). The follower renews it itself, each time at the point it has reached, so the pin never
 * holds back garbage collection further than the follower lags.
 */
export async function holdFollowerPin(
  store: ObjectStore,
  prefix: string,
  sequence: number,
  options: { clock: Clock; id: string; ttlMs?: number },
): Promise<FollowerPin> {
  const name = followerPinName(options.id);
  const ttlMs = options.ttlMs ?? FOLLOWER_PIN_TTL_MS;
  const record = (at: number): SnapshotRecord => ({
    version: SNAPSHOT_VERSION,
    name,
    sequence: at,
    createdMs: options.clock.wallMs(),
    expiresMs: options.clock.wallMs() + ttlMs,
    follower: true,
  });
  const first = record(sequence);
  await createSnapshot(store, prefix, first);
  const pin = { name, sequence, writtenMs: first.createdMs };
  return {
    name,
    get sequence() {
      return pin.sequence;
    },
    get writtenMs() {
      return pin.writtenMs;
    },
    write: async (at: number) => {
      const next = record(at);
      await store.put(snapshotKey(prefix, name), encodeSnapshot(next));
      pin.sequence = at;
      pin.writtenMs = next.createdMs;
    },
    release: async () => {
      await store.delete(snapshotKey(prefix, name)).catch(() => {});
    },
  };
}
