/**
 * @module
 * Making a clone and letting it go of its parent. A clone copies no data: it is a format record
 * (format 3, "clone") under the new prefix naming the source, the point and the source's last
 * object, plus a pin in the source (a version-2 snapshot naming the clone) that keeps what the
 * clone reads. Two small writes and a few listings, whatever the source's size:
 *
 *   list source and target -> resolve the point -> pin in the source (create-only, checked against
 *   a concurrent GC pass like any snapshot) -> clone's format record (create-only).
 *
 * A crash between the two leaves only the pin, which `lsvd snapshot delete` removes (its clone
 * does not exist). Flatten ends the other way round: the clone's record is marked flattened
 * first (from then on it reads nothing of the parent), then the pin goes; running it again after
 * a crash between them only deletes the pin.
 */

import { logKey, snapshotKey } from "../format/keys.ts";
import { crc32 } from "../format/crc32.ts";
import { isStoreError, type ObjectStore } from "../store/store.ts";
import { LsvdError } from "../util/errors.ts";
import { assert } from "../util/assert.ts";
import {
  checkFormatRecord,
  createCloneRecord,
  type FormatRecord,
  markFlattened,
  type ParentLink,
} from "./format_record.ts";
import { listCheckpoints, listLogState, type LogState, volumeExists } from "./log_state.ts";
import { bucketStore, pointFloor } from "./parent.ts";
import { type Point, type ResolvedPoint, resolvePoint } from "./point.ts";
import { CLONE_PIN_VERSION, createSnapshot } from "./snapshots.ts";
import { cipherOf, freshEncryption } from "./volume_encryption.ts";
import type { VolumeSecret } from "../crypto/sector_cipher.ts";

export interface CloneOptions {
  source: string;
  target: string;
  /** Where the clone goes when not in the source's bucket: another bucket of the same store (inBucket). */
  targetStore?: ObjectStore;
  /** The point to branch at (default: the source's newest object). */
  point: Point | undefined;
  wallNowMs: number;
  /** The key of an encrypted source: checked against its record; the clone is encrypted with it. */
  secret?: VolumeSecret | undefined;
}

export interface MadeClone {
  link: ParentLink;
  resolved: ResolvedPoint;
}

/**
 * The pin's name in the source: one per target prefix (and bucket, for a clone in another one:
 * `clone-BUCKET_PREFIX`), readable in `snapshot list`.
 */
export function pinNameFor(target: string, bucket?: string): string {
  const where = bucket === undefined ? target : `${bucket}/${target}`;
  const slug = where.replace(/\/+$/, "").replace(/[^A-Za-z0-9._-]/g, "_").replace(/^[._-]+/, "");
  const short = slug.length <= 100
    ? slug
    : `${slug.slice(0, 90)}-${crc32(new TextEncoder().encode(where)).toString(16)}`;
  return `clone-${short === "" ? "root" : short}`;
}

export async function createClone(store: ObjectStore, o: CloneOptions): Promise<MadeClone> {
  const targetStore = o.targetStore ?? store;
  const elsewhere = targetStore !== store;
  if (o.source === o.target && !elsewhere) {
    throw new LsvdError("invalid", "Cannot clone a volume onto itself: give another --to-prefix");
  }
  assert(!elsewhere || (store.bucket !== undefined && targetStore.bucket !== undefined), "buckets are named");
  // A time is resolved by a search over the whole log; any other point needs only its end.
  const objectsAfter = o.point?.kind === "time" ? 0 : await checkpointedThrough(store, o.source);
  const [source, target] = await Promise.all([
    listLogState(store, o.source, { objectsAfter }),
    listLogState(targetStore, o.target),
  ]);
  checkSource(source);
  // Before anything is written: a missing or wrong key, or a key for a plain source, is one line.
  const encryption = cipherOf(source.format, o.secret, o.source) === undefined
    ? undefined
    : freshEncryption(o.secret!);
  if (volumeExists(target) || target.epochs.length > 0 || target.snapshots.length > 0) {
    throw new LsvdError(
      "invalid",
      `Cannot clone into prefix "${o.target}": it already holds a volume (a clone never overwrites one)`,
    );
  }
  const point = o.point ??
    { kind: "sequence", sequence: source.endSequence, text: String(source.endSequence) };
  const resolved = await resolvePoint(store, source, point);
  const floor = pointFloor(source.format);
  if (resolved.sequence < floor) {
    throw new LsvdError(
      "invalid",
      `Cannot clone at object ${resolved.sequence}: the source's points start at object ${floor}`,
    );
  }
  const link: ParentLink = {
    prefix: o.source,
    sequence: resolved.sequence,
    through: source.endSequence,
    pin: pinNameFor(o.target, elsewhere ? targetStore.bucket : undefined),
    ...(elsewhere ? { bucket: store.bucket! } : {}),
  };
  const after = await pinInSource(
    store,
    { ...o, targetBucket: elsewhere ? targetStore.bucket : undefined },
    link,
    source,
  );
  // A GC pass that planned before the pin existed may have moved what the point reads above
  // `through` and deleted the sources; its record (stored before it deletes) then names such copies.
  if ((after.collectedRecord?.copies.at(-1)?.[1] ?? 0) > link.through) {
    await store.delete(snapshotKey(o.source, link.pin));
    throw new LsvdError(
      "unavailable",
      `Cannot clone: the source's garbage collection moved data meanwhile; run 'lsvd clone' again`,
    );
  }
  if (
    !(await createCloneRecord(targetStore, o.target, { parent: link, encryption }, o.wallNowMs))
  ) {
    await store.delete(snapshotKey(o.source, link.pin));
    throw new LsvdError(
      "invalid",
      `Cannot clone into prefix "${o.target}": another volume appeared there meanwhile`,
    );
  }
  return { link, resolved };
}

/** The clone's pin in the source (create-only, checked as any snapshot); the source as listed after it. */
function pinInSource(
  store: ObjectStore,
  o: CloneOptions & { targetBucket: string | undefined },
  link: ParentLink,
  source: LogState,
): Promise<LogState> {
  return createSnapshot(
    store,
    o.source,
    {
      version: CLONE_PIN_VERSION,
      name: link.pin,
      sequence: link.sequence,
      createdMs: o.wallNowMs,
      clone: {
        prefix: o.target,
        through: link.through,
        ...(o.targetBucket === undefined ? {} : { bucket: o.targetBucket }),
      },
    },
    source,
  ).catch((e) => {
    if (e instanceof LsvdError && /a snapshot of that name exists/.test(e.message)) {
      throw new LsvdError(
        "invalid",
        `Cannot clone into prefix "${o.target}": the source holds pin "${link.pin}" from an earlier clone there ` +
          `(interrupted, or deleted without flattening); 'lsvd snapshot delete ${link.pin} --prefix ${o.source}' removes it`,
      );
    }
    throw e;
  });
}

/**
 * The newest checkpoint's object, when it is still in the log: the log is gap-free up to it (a
 * writer checkpoints only durable objects, and drops checkpoints past a recovery point), so a
 * clone lists only the objects after it and costs the same for any size of source. 0: list all.
 */
async function checkpointedThrough(store: ObjectStore, prefix: string): Promise<number> {
  const newest = (await listCheckpoints(store, prefix)).at(-1);
  if (newest === undefined) return 0;
  try {
    await store.head(logKey(prefix, newest.sequence));
    return newest.sequence;
  } catch (e) {
    if (isStoreError(e, "NotFound")) return 0;
    throw e;
  }
}

function checkSource(source: LogState): void {
  checkFormatRecord(source.format, source.prefix);
  if (source.endSequence === 0) {
    throw new LsvdError(
      "invalid",
      `Cannot clone the volume under prefix "${source.prefix}": it has no objects`,
    );
  }
  const rollback = source.collectedRecord?.rollback;
  if (rollback !== undefined) {
    throw new LsvdError(
      "invalid",
      `Cannot clone: a rollback to object ${rollback.to} of the source is half done`,
    );
  }
}

/**
 * After the copies: the clone's record says it reads nothing of its parent from `flattenedThrough`
 * on, then the pin in the parent goes. Safe to repeat.
 */
export async function finishFlatten(
  store: ObjectStore,
  prefix: string,
  format: FormatRecord,
  flattenedThrough: number | undefined,
): Promise<void> {
  const link = format.parent!;
  if (link.flattenedThrough === undefined) {
    await markFlattened(store, prefix, format, flattenedThrough!);
  }
  const parentStore = bucketStore(
    store,
    link.bucket,
    `release the pin of the clone under "${prefix}": its parent`,
  );
  try {
    await parentStore.delete(snapshotKey(link.prefix, link.pin));
  } catch (e) {
    if (!isStoreError(e, "NotFound")) throw e;
  }
}
