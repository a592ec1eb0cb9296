/**
 * @module
 * Rolling the log back to point P (what `lsvd rollback` does once it holds the lease): objects
 * after P move under `archive/<id>/`. When garbage collection moved data P needs into copies after
 * P (their sources are gone), that data is first rescued into one COPIED object that becomes P+1,
 * in a crash-safe order (docs/design/gc-and-retention.md):
 *
 *   rescued object -> `rescue/<id>` -> collected record marking the rollback in progress (every load
 *   refuses meanwhile) -> archive the objects after P -> rescued object as P+1 -> final record (copies
 *   and collected clipped to the new log) -> `rescue/<id>` deleted.
 *
 * Run again after a crash, it resumes from the record. Checkpoints are the caller's concern.
 */

import { logKey, rescueKey } from "../format/keys.ts";
import { type Extent, HEADER_BYTES, ObjectBuilder, SECTOR_BYTES } from "../format/object.ts";
import type { ObjectStore } from "../store/store.ts";
import { LsvdError } from "../util/errors.ts";
import type { Logger } from "../util/log.ts";
import { objectCrcOf } from "./checkpoints.ts";
import { addToRanges, clipRanges, type CollectedRecord, inRanges, storeCollected } from "./collected.ts";
import { loadLog } from "./load.ts";
import { listLogState, type LoggedObject, type LogState } from "./log_state.ts";
import { type ObjectSummary, readObjectSummary } from "./object_reader.ts";
import { putLogObject } from "./object_writer.ts";
import { readVerified } from "./verified_read.ts";
import { encryptObject } from "../crypto/object_cipher.ts";
import type { SectorCipher } from "../crypto/sector_cipher.ts";
import { archiveObjects } from "./repair.ts";
import { cloneNamed, readSnapshots } from "./snapshots.ts";
import { pointFloor } from "./parent.ts";

export interface RollbackOptions {
  log: Logger;
  /** Names the archive folder and the rescue key. */
  archiveId: string;
  writerEpoch: number;
  wallNowMs: number;
  /** Throws when the caller lost its lease (called before every change). */
  check?: () => void;
  /** An encrypted volume's data key: the rescued data is decrypted, and the rescue object encrypted. */
  cipher?: SectorCipher | undefined;
}

export interface RollbackResult {
  moved: number;
  /** Sectors rescued from copies after the point (0: none needed). */
  rescuedSectors: number;
}

/**
 * A clone reads this volume's objects by number up to its pin's `through`: rolling back below it
 * would give those numbers to new objects under the clone's feet. Refused until it is flattened.
 */
async function checkNoCloneAfter(store: ObjectStore, state: LogState, point: number) {
  for (const s of await readSnapshots(store, state)) {
    if (s.clone === undefined || s.clone.through <= point) continue;
    throw new LsvdError(
      "invalid",
      `Cannot roll back to object ${point}: the clone under ${
        cloneNamed(s.clone).where
      } reads this volume's objects up to ${s.clone.through} (pin "${s.name}"); run '${
        cloneNamed(s.clone).flatten
      }' first`,
    );
  }
}

/** The most entries a rescued object may need before the rollback is refused (one header). */
const RESCUE_ENTRIES_MAX = 1024;

export async function rollbackLog(
  store: ObjectStore,
  state: LogState,
  point: number,
  o: RollbackOptions,
): Promise<RollbackResult> {
  const record = state.collectedRecord;
  const pending = record?.rollback;
  if (pending !== undefined && pending.to !== point) {
    throw new LsvdError(
      "invalid",
      `Cannot roll back to object ${point}: a rollback to object ${pending.to} is half done; finish it first`,
    );
  }
  if (pending !== undefined) return await finish(store, state.prefix, point, record!, o);
  await checkNoCloneAfter(store, state, point);
  if (point < pointFloor(state.format)) {
    throw new LsvdError(
      "invalid",
      `Cannot roll back to object ${point}: this clone's points start at object ${
        pointFloor(state.format)
      } (its branch point)`,
    );
  }
  const lastCollected = record?.collected.at(-1)?.[1] ?? 0;
  if (lastCollected > point) {
    throw new LsvdError(
      "invalid",
      `Cannot roll back to object ${point}: garbage collection deleted objects up to ${lastCollected} after it`,
    );
  }
  const copiesAfter = record === undefined
    ? []
    : state.objects.filter((x) => x.sequence > point && inRanges(record.copies, x.sequence));
  if (record === undefined || copiesAfter.length === 0) {
    const after = state.objects.filter((x) => x.sequence > point);
    o.check?.();
    if (after.length > 0) {
      await archiveObjects(store, state.prefix, after, {
        recoveryId: o.archiveId,
        log: o.log,
      });
    }
    return { moved: after.length, rescuedSectors: 0 };
  }
  const rescue = await buildRescue(store, state, point, o);
  const key = rescue === undefined ? null : rescueKey(state.prefix, o.archiveId);
  o.check?.();
  if (rescue !== undefined) await store.put(key!, rescue.bytes);
  const marked: CollectedRecord = {
    ...record,
    pass: record.pass + 1,
    createdMs: o.wallNowMs,
    rollback: { to: point, archiveId: o.archiveId, rescueKey: key },
  };
  if (!(await storeCollected(store, state.prefix, marked))) {
    throw new LsvdError(
      "fenced",
      `Cannot roll back: collected record ${marked.pass} exists (another writer)`,
    );
  }
  return await finish(store, state.prefix, point, marked, o);
}

/** Archives what is after the point (but the rescued object), puts the rescued object, clears the mark. */
async function finish(
  store: ObjectStore,
  prefix: string,
  point: number,
  marked: CollectedRecord,
  o: RollbackOptions,
): Promise<RollbackResult> {
  const rb = marked.rollback!;
  const state = await listLogState(store, prefix);
  const rescue = rb.rescueKey === null ? undefined : (await store.get(rb.rescueKey!)).body;
  let keep: LoggedObject | undefined;
  const next = state.objects.find((x) => x.sequence === point + 1);
  if (rescue !== undefined && next !== undefined && next.sizeBytes === rescue.length) {
    const tail = await store.get(next.key, { offsetBytes: next.sizeBytes - 8, lengthBytes: 8 });
    if (objectCrcOf(tail.body) === objectCrcOf(rescue)) keep = next; // put by an earlier run
  }
  const after = state.objects.filter((x) => x.sequence > point && x !== keep);
  o.check?.();
  if (after.length > 0) {
    await archiveObjects(store, prefix, after, { recoveryId: rb.archiveId, log: o.log });
  }
  if (rescue !== undefined && keep === undefined) {
    await putLogObject(store, { key: logKey(prefix, point + 1), bytes: rescue });
  }
  const final: CollectedRecord = {
    version: marked.version,
    pass: marked.pass + 1,
    collected: clipRanges(marked.collected, point),
    copies: rescue === undefined
      ? clipRanges(marked.copies, point)
      : addToRanges(clipRanges(marked.copies, point), [point + 1]),
    retainedFromSequence: Math.min(marked.retainedFromSequence, point),
    snapshots: marked.snapshots.filter((s) => s.sequence <= point),
    createdMs: o.wallNowMs,
  };
  if (!(await storeCollected(store, prefix, final))) {
    throw new LsvdError(
      "fenced",
      `Cannot finish the rollback: collected record ${final.pass} exists (another writer)`,
    );
  }
  for (const c of state.collected) {
    if (c.sequence < final.pass) {
      await store.delete(c.key);
    }
  }
  if (rb.rescueKey !== null) await store.delete(rb.rescueKey!).catch(() => {});
  const rescuedSectors = rescue === undefined ? 0 : (rescue.length - HEADER_BYTES) / (SECTOR_BYTES + 4) | 0;
  return { moved: after.length, rescuedSectors };
}

/** A rescue's pieces split at their copies' entry boundaries: each takes the origin of the entry it lies in. */
function splitAtEntries(
  pieces: readonly {
    addressSector: number;
    sequence: number;
    offsetSectors: number;
    lengthSectors: number;
  }[],
  summaries: ReadonlyMap<number, ObjectSummary>,
): RescuePiece[] {
  const split: RescuePiece[] = [];
  for (const p of pieces) {
    const s = summaries.get(p.sequence)!;
    let entryStart = 0;
    s.entries.forEach((entry: Extent, i) => {
      const entryEnd = entryStart + entry.lengthBytes / SECTOR_BYTES;
      const from = Math.max(entryStart, p.offsetSectors),
        to = Math.min(entryEnd, p.offsetSectors + p.lengthSectors);
      if (from < to) {
        split.push({
          addressSector: p.addressSector + from - p.offsetSectors,
          lengthSectors: to - from,
          sequence: p.sequence,
          offsetSectors: from,
          origin: s.trailer?.origins?.[i] ?? p.sequence,
        });
      }
      entryStart = entryEnd;
    });
  }
  return split;
}

/** A piece of a rescue: sectors of one copy's entry, with that entry's origin. */
interface RescuePiece {
  addressSector: number;
  lengthSectors: number;
  sequence: number;
  offsetSectors: number;
  origin: number;
}

/**
 * The object P+1 holding every sector the map at P reads from a copy after P (with its origin), or
 * undefined when the point needs nothing from them. Each sector is checked against its copy's CRCs.
 */
async function buildRescue(store: ObjectStore, state: LogState, point: number, o: RollbackOptions) {
  const loaded = await loadLog(store, state, {
    atSequence: point,
    concurrency: 16,
    log: o.log,
  });
  const pieces: { addressSector: number; sequence: number; offsetSectors: number; lengthSectors: number }[] =
    [];
  for (const e of loaded.map.entries()) {
    if (e.sequence > point) {
      pieces.push({
        addressSector: e.startSector,
        sequence: e.sequence,
        offsetSectors: e.offsetSectors,
        lengthSectors: e.lengthSectors,
      });
    }
  }
  if (pieces.length === 0) return undefined;
  const summaries = new Map<number, ObjectSummary & { object: LoggedObject }>();
  for (const seq of new Set(pieces.map((p) => p.sequence))) {
    const object = state.objects.find((x) => x.sequence === seq)!;
    summaries.set(seq, { ...(await readObjectSummary(store, object)), object });
  }
  const split = splitAtEntries(pieces, summaries);
  if (split.length > RESCUE_ENTRIES_MAX) {
    throw new LsvdError(
      "invalid",
      `Cannot roll back to object ${point}: the data garbage collection moved after it is too scattered to rescue ` +
        `(${split.length} pieces); 'lsvd export --at ${point}' and import the image instead`,
    );
  }
  const dataSectors = split.reduce((n, p) => n + p.lengthSectors, 0);
  const builder = new ObjectBuilder({
    dataBytes: dataSectors * SECTOR_BYTES,
    zeroRanges: 0,
    copied: true,
    entries: split.length,
  });
  for (const p of split) {
    const s = summaries.get(p.sequence)!;
    const crcs = s.trailer?.sectorCrcs ?? null;
    const { body } = await readVerified(store, {
      key: s.object.key,
      sequence: p.sequence,
      range: { offsetSectors: p.offsetSectors, lengthSectors: p.lengthSectors },
      sizeBytes: s.object.sizeBytes,
      crcs: { table: () => Promise.resolve(crcs) },
      cipher: o.cipher,
    });
    builder.addEntry(p.addressSector * SECTOR_BYTES, p.lengthSectors * SECTOR_BYTES).set(body);
  }
  const bytes = builder.finish({
    sequence: point + 1,
    writerEpoch: o.writerEpoch,
    volumeSizeBytes: loaded.volumeSizeBytes ?? 0,
    sealTimeMs: o.wallNowMs,
    origins: split.map((p) => p.origin),
  });
  return { bytes: o.cipher === undefined ? bytes : encryptObject(o.cipher, bytes) };
}
