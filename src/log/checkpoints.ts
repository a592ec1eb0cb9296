/**
 * @module
 * Checkpoint I/O: finding the newest usable checkpoint for a replay, storing a new one once the
 * objects it covers are durable, and keeping only the two newest. A checkpoint is an accelerator
 * only -- deleting every one never changes the disk -- so failures here cost restart time, not data.
 */

import { checkpointKey } from "../format/keys.ts";
import {
  type Checkpoint,
  type CheckpointMeta,
  decodeCheckpoint,
  encodeCheckpoint,
} from "../format/checkpoint.ts";
import { FormatError } from "../format/object.ts";
import { isStoreError, type ObjectStore } from "../store/store.ts";
import { messageOf } from "../util/errors.ts";
import type { Logger } from "../util/log.ts";
import type { ExtentMap } from "../map/extent_map.ts";
import { listCheckpoints, type ListedKey, type LoggedObject } from "./log_state.ts";

/** Checkpoints kept after a new one is stored. */
export const CHECKPOINTS_KEPT = 2;

/**
 * The newest checkpoint at or before `through` inside `log` (the gap-free objects) whose object
 * CRC matches the object it names (so a checkpoint from before a rollback is never applied to a
 * log rewritten since), or undefined.
 */
export async function loadCheckpoint(
  store: ObjectStore,
  options: { log: readonly LoggedObject[]; checkpoints: readonly ListedKey[]; through: number },
  logLine: Logger,
): Promise<Checkpoint | undefined> {
  const candidate = options.checkpoints.filter((c) => c.sequence <= options.through).at(-1);
  if (candidate === undefined) return undefined;
  // The log may skip numbers garbage collection deleted: find the object by its number.
  const object = options.log.find((o) => o.sequence === candidate.sequence);
  if (object === undefined || object.sequence !== candidate.sequence) return undefined;
  try {
    const [{ body }, tail] = await Promise.all([
      store.get(candidate.key),
      store.get(object.key, { offsetBytes: Math.max(0, object.sizeBytes - 8), lengthBytes: 8 }),
    ]);
    const checkpoint = decodeCheckpoint(body);
    if (tail.body.length !== 8) throw new FormatError(`object "${object.key}" is truncated`);
    const crc = new DataView(tail.body.buffer, tail.body.byteOffset, 8).getUint32(0);
    if (checkpoint.sequence !== candidate.sequence || crc !== checkpoint.objectCrc32) {
      throw new FormatError(`it does not match object "${object.key}"`);
    }
    return checkpoint;
  } catch (e) {
    if (isStoreError(e) && e.code !== "NotFound") throw e;
    logLine(`Ignoring checkpoint "${candidate.key}": ${messageOf(e)}; replaying the log instead.`);
    return undefined;
  }
}

/**
 * The checkpoint of `map`, which must reflect exactly objects 1..meta.sequence at this instant
 * (encoded from the map's own chunks, with no intermediate copy).
 */
export function encodeMapCheckpoint(map: ExtentMap, meta: CheckpointMeta): Uint8Array {
  return encodeCheckpoint(meta, map.runs(), map.extentCount);
}

/**
 * Stores a checkpoint once the objects it covers are durable (create-only: an identical one
 * already there is fine), then deletes all but the newest CHECKPOINTS_KEPT. The daemon's writer
 * and `lsvd import` both store theirs through here.
 */
export async function storeCheckpoint(
  store: ObjectStore,
  prefix: string,
  checkpoint: { sequence: number; bytes: Uint8Array },
): Promise<void> {
  const { sequence, bytes } = checkpoint;
  try {
    await store.put(checkpointKey(prefix, sequence), bytes, { ifNoneMatch: true });
  } catch (e) {
    if (!isStoreError(e, "PreconditionFailed")) throw e;
  }
  const checkpoints = await listCheckpoints(store, prefix);
  await pruneCheckpoints(store, checkpoints, sequence);
}

/** Deletes all but the newest CHECKPOINTS_KEPT of `checkpoints` at or below `newest`. */
async function pruneCheckpoints(
  store: ObjectStore,
  checkpoints: readonly ListedKey[],
  newest: number,
): Promise<void> {
  const older = checkpoints.filter((c) => c.sequence <= newest).sort((a, b) => a.sequence - b.sequence);
  for (const c of older.slice(0, -CHECKPOINTS_KEPT)) await store.delete(c.key);
}

/** The CRC-32 a version-1 or -2 object ends with (its last 8 bytes are crc, trailer length). */
export function objectCrcOf(bytes: Uint8Array): number {
  return new DataView(bytes.buffer, bytes.byteOffset + bytes.length - 8, 4).getUint32(0);
}
