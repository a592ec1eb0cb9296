/**
 * @module
 * Start-up with a write-back journal (docs/design/write-back-journal.md): read the journal's
 * identity and check every segment (a torn tail is dropped, damage before the end refuses the
 * start), refuse a journal of another volume or one the log has moved past under another writer,
 * and replay the records in order through the normal write path.
 *
 * Why replay is safe: the log holds the base plus a prefix (in journal order) of the journal's
 * writes, because objects become durable in order and the journal's order is the writer's. A
 * deleted segment's writes are all in that prefix. Re-applying every remaining record in order on
 * top of base + prefix therefore leaves each sector holding the last journaled write to it, or the
 * log's value when no remaining record touches it: base + journal, i.e. every acknowledged FLUSH.
 */

import { SECTOR_BYTES } from "../util/constants.ts";
import { LsvdError } from "../util/errors.ts";
import {
  anyRecordNumberedFrom,
  decodeRecord,
  type JournalRecord,
  type RecordSealer,
  sealedHeader,
  tornRecordBytes,
} from "./journal_codec.ts";
import { type JournalFiles, segmentFirstRecord } from "./journal_files.ts";

/** Which volume and writer a journal belongs to (`identity.json`). */
export interface JournalIdentity {
  version: 1;
  store: string;
  prefix: string;
  /** The format record's createdAt, when the volume has one. */
  volumeCreatedAt: string | undefined;
  writerEpoch: number;
  /** The log's last object when this writer started (before its fence), and that object's epoch. */
  startSequence: number;
  startEpoch: number;
}

export interface ScannedJournal {
  identity: JournalIdentity | undefined;
  /** Segments with the bytes of checked records in each (a torn tail is not counted). */
  segments: { name: string; validBytes: number }[];
  records: number;
  /** Bytes of the checked records (headers and data). */
  bytes: number;
  lastRecord: number | undefined;
  /** Bytes of a torn tail that replay drops (never acknowledged). */
  tornBytes: number;
}

export async function readIdentity(files: JournalFiles): Promise<JournalIdentity | undefined> {
  const text = await files.readIdentity();
  if (text === undefined) return undefined;
  try {
    const parsed = JSON.parse(text);
    if (parsed?.version !== 1 || typeof parsed.writerEpoch !== "number") throw new Error("unknown layout");
    return parsed as JournalIdentity;
  } catch (e) {
    throw new LsvdError(
      "data",
      `Cannot read journal ${files.description}: identity.json is damaged (${(e as Error).message})`,
    );
  }
}

/**
 * Checks every record. A segment's name gives the number of its first record, and record numbers
 * run on by one across segments; a segment's records are the run of checked records numbered from
 * there. Where that run stops, the rest of the file is its unused end: zeros of a preallocated
 * segment, or stale records of a recycled one (journal_files.ts), all numbered below the segment's
 * first. That cannot hide lost records:
 * - a segment is synced whole before the next is created, so each segment but the last must end
 *   just before the next one's first number; records missing there are damage;
 * - a checked record numbered at or above the one due, anywhere after the stop, shows a hole:
 *   damage;
 * - in the last segment, a bad record with nothing of this journal after it is a torn tail
 *   (appended after the last fdatasync, so never acknowledged): dropped.
 * Damage is LsvdError "data" naming the file and offset.
 */
export async function scanJournal(files: JournalFiles): Promise<ScannedJournal> {
  const identity = await readIdentity(files);
  const names = await files.segments();
  const scanned: ScannedJournal = {
    identity,
    segments: [],
    records: 0,
    bytes: 0,
    lastRecord: undefined,
    tornBytes: 0,
  };
  const damaged = (name: string, at: number, why: string) =>
    new LsvdError(
      "data",
      `Cannot replay journal ${files.description}: ${name} is damaged at byte ${at} (${why}) before its end; ` +
        `the acknowledged writes after it cannot be trusted (start with --journal-discard to drop the journal)`,
    );
  let due: number | undefined; // the number the next segment must start with
  for (let i = 0; i < names.length; i++) {
    const name = names[i]!;
    const first = segmentFirstRecord(name);
    if (due !== undefined && first !== due) {
      // The previous segment was synced whole before this one was made: records are lost, its last
      // ones or a whole segment's (deleted); the names alone cannot tell which, so say both.
      const previous = names[i - 1]!;
      const missing = first === due + 1
        ? `record ${due} is missing`
        : first > due
        ? `records ${due}..${first - 1} are missing`
        : `records from ${first} appear twice`;
      throw new LsvdError(
        "data",
        `Cannot replay journal ${files.description}: ${missing}: ${previous} ends at record ${due - 1} ` +
          `(byte ${
            scanned.segments.at(-1)!.validBytes
          }) and ${name} starts at record ${first} (a segment deleted, ` +
          `or one cut short); the acknowledged writes after them cannot be trusted (start with --journal-discard ` +
          `to drop the journal)`,
      );
    }
    const bytes = await files.read(name);
    let at = 0;
    let expected = first;
    while (at < bytes.length) {
      const d = decodeRecord(bytes, at);
      if (!d.ok || d.record.number !== expected) {
        if (anyRecordNumberedFrom(bytes, at, expected)) {
          throw damaged(name, at, d.ok ? `record ${d.record.number} where ${expected} was due` : d.why);
        }
        // The unused end (zeros, or a stale record numbered below this segment's first), or a torn tail.
        if (i === names.length - 1 && !d.ok && !zeroFrom(bytes, at)) {
          scanned.tornBytes = tornRecordBytes(bytes, at);
        }
        break;
      }
      expected++;
      scanned.lastRecord = d.record.number;
      scanned.records++;
      at = d.nextOffset;
    }
    scanned.segments.push({ name, validBytes: at });
    scanned.bytes += at;
    due = expected;
  }
  return scanned;
}

/** The journal's records in order (segments are read again, one at a time: memory stays bounded). */
export async function* journalRecords(
  files: JournalFiles,
  scanned: ScannedJournal,
): AsyncGenerator<JournalRecord> {
  for (const segment of scanned.segments) {
    const bytes = await files.read(segment.name);
    for (let at = 0; at < segment.validBytes;) {
      const d = decodeRecord(bytes, at);
      if (!d.ok) {
        throw new LsvdError("data", `Cannot replay journal ${files.description}: ${segment.name} changed`);
      }
      yield d.record;
      at = d.nextOffset;
    }
  }
}

/** The log a starting writer found: its end before this writer's own fence, and that object's epoch. */
export interface FoundLog {
  store: string;
  prefix: string;
  volumeCreatedAt: string | undefined;
  lastSequence: number;
  lastEpoch: number;
}

/**
 * Refuses (LsvdError "invalid", one line) to replay a journal holding records into a volume it
 * was not written for, or after another writer wrote the log since this journal's writer started.
 */
export function checkJournalOwner(files: JournalFiles, scanned: ScannedJournal, found: FoundLog): void {
  checkJournalVolume(files, scanned, found);
  if (scanned.records === 0) return;
  const holds = `it holds ${scanned.bytes} bytes in ${scanned.records} records not known to be in the store`;
  const discard =
    `'lsvd journal show ${files.description}' says more; start with --journal-discard to drop them`;
  const id = scanned.identity!;
  const untouched = found.lastSequence === id.startSequence && found.lastEpoch === id.startEpoch;
  const onlyOurs = found.lastSequence > id.startSequence && found.lastEpoch === id.writerEpoch;
  if (!untouched && !onlyOurs) {
    throw new LsvdError(
      "invalid",
      `Cannot replay journal ${files.description}: ${holds}, written by writer epoch ${id.writerEpoch} after object ` +
        `${id.startSequence}, but the log has moved on under another writer (object ${found.lastSequence}, epoch ` +
        `${found.lastEpoch}); replaying would overwrite its writes; ${discard}`,
    );
  }
}

/**
 * Refuses a journal holding records of another volume (or of no known volume). Also called before
 * the lease is taken, with only the store and prefix: a start must not record in this volume's
 * lease a journal that belongs to another. `volumeCreatedAt` undefined skips that comparison.
 */
export function checkJournalVolume(
  files: JournalFiles,
  scanned: ScannedJournal,
  found: Pick<FoundLog, "store" | "prefix" | "volumeCreatedAt">,
): void {
  if (scanned.records === 0) return;
  const holds = `it holds ${scanned.bytes} bytes in ${scanned.records} records not known to be in the store`;
  const discard =
    `'lsvd journal show ${files.description}' says more; start with --journal-discard to drop them`;
  const id = scanned.identity;
  if (id === undefined) {
    throw new LsvdError(
      "invalid",
      `Cannot replay journal ${files.description}: ${holds} but no identity.json; ${discard}`,
    );
  }
  const sameVolume = id.store === found.store && id.prefix === found.prefix &&
    (id.volumeCreatedAt === undefined || found.volumeCreatedAt === undefined ||
      id.volumeCreatedAt === found.volumeCreatedAt);
  if (!sameVolume) {
    // Not --journal-discard: those are the other volume's acknowledged writes.
    throw new LsvdError(
      "invalid",
      `Cannot replay journal ${files.description}: ${holds} of the volume at prefix "${id.prefix}" of ${id.store}` +
        `${
          id.volumeCreatedAt === undefined ? "" : ` (created ${id.volumeCreatedAt})`
        }, not this one; start that volume with --journal ${files.description} to replay them ` +
        `('lsvd journal show ${files.description}' says more), and give this volume a journal directory of its own`,
    );
  }
}

/** Where replay sends the records: the volume's normal write path (not the journal). */
export interface ReplayTarget {
  sizeBytes: number;
  /** An encrypted volume's journal key: its records are sealed, and must be. */
  sealer?: RecordSealer | undefined;
  write(offsetBytes: number, data: Uint8Array): Promise<void>;
  writeZeroes(offsetBytes: number, lengthBytes: number): Promise<void>;
}

/** Applies every record in order; returns how many. A record past the volume's end is damage. */
export async function replayRecords(
  files: JournalFiles,
  scanned: ScannedJournal,
  target: ReplayTarget,
): Promise<number> {
  let n = 0;
  for await (const r of journalRecords(files, scanned)) {
    const aligned = r.offsetBytes % SECTOR_BYTES === 0 && r.lengthBytes % SECTOR_BYTES === 0 &&
      r.lengthBytes > 0;
    if (!aligned || r.offsetBytes + r.lengthBytes > target.sizeBytes) {
      throw new LsvdError(
        "data",
        `Cannot replay journal ${files.description}: record ${r.number} covers bytes ${r.offsetBytes}+${r.lengthBytes}, ` +
          `outside the ${target.sizeBytes}-byte volume (start with --journal-discard to drop the journal)`,
      );
    }
    if (r.kind === "zero") await target.writeZeroes(r.offsetBytes, r.lengthBytes);
    else await target.write(r.offsetBytes, recordData(files, r, target.sealer));
    n++;
  }
  return n;
}

/**
 * A write record's data: a sealed one decrypted and authenticated. A sealed record without the key,
 * a plaintext one on an encrypted volume and one that fails authentication are damage ("data").
 */
function recordData(files: JournalFiles, r: JournalRecord, sealer: RecordSealer | undefined): Uint8Array {
  if (r.kind === "write" && sealer === undefined) return r.data;
  const plain = r.kind === "sealed" && sealer !== undefined
    ? sealer.openRecord(sealedHeader(r.number, r.offsetBytes, r.lengthBytes), r.data)
    : undefined;
  if (plain !== undefined) return plain;
  const why = r.kind === "write"
    ? "is not encrypted, but the volume is"
    : sealer === undefined
    ? "is encrypted, but no key was given"
    : "fails authentication (AES-256-GCM)";
  throw new LsvdError(
    "data",
    `Cannot replay journal ${files.description}: record ${r.number} ${why} (start with --journal-discard to drop the journal)`,
  );
}

/** Deletes every segment (after replay reached the store, or on --journal-discard). */
export async function emptyJournal(files: JournalFiles): Promise<void> {
  for (const name of await files.segments()) await files.remove(name);
}

/** True when every byte from `at` to the end is zero. */
function zeroFrom(bytes: Uint8Array, at: number): boolean {
  let i = at;
  for (; i < bytes.length && ((bytes.byteOffset + i) & 7) !== 0; i++) if (bytes[i] !== 0) return false;
  const words = new BigUint64Array(bytes.buffer, bytes.byteOffset + i, (bytes.length - i) >> 3);
  for (const w of words) if (w !== 0n) return false;
  for (i += words.length * 8; i < bytes.length; i++) if (bytes[i] !== 0) return false;
  return true;
}
