/**
 * @module
 * The format record (`prefix format.json`): a small JSON key beside the log naming the bucket
 * format version a volume uses and the oldest lsvd able to open it. Written when a volume is
 * created (or first opened for writing by this lsvd) and checked on every open, so an older
 * lsvd refuses a volume it cannot read instead of "repairing" it.
 *
 *   { "format": 2, "minimumLsvd": "0.2.0", "writtenBy": "0.2.0", "createdAt": "2026-12-01T...Z" }
 *
 * Format 3 adds `requires` (features a reader must understand, or refuse the volume) and their
 * fields; the one feature so far is "clone" with `parent` (docs/FORMAT.md). A plain volume is
 * still written as format 2, so an older lsvd keeps opening it; only a clone needs format 3.
 */

import { formatKey } from "../format/keys.ts";
import { isStoreError, type ObjectStore } from "../store/store.ts";
import { assert } from "../util/assert.ts";
import { LsvdError } from "../util/errors.ts";
import { LSVD_VERSION } from "../version.ts";

/** The newest bucket format this lsvd reads (format 3: format 2 plus `requires`). */
export const FORMAT_VERSION = 3;
/** What a plain volume is written as (trailer version 2, format record, keys beside the log). */
export const FORMAT_PLAIN = 2;
/** The oldest lsvd that can open a plain volume. */
export const FORMAT_MINIMUM_LSVD = "0.2.0";
/** The oldest lsvd that can open a format-3 volume (a clone). */
export const FORMAT_3_MINIMUM_LSVD = "0.3.0"; // the first lsvd with clones
/** The oldest lsvd that can open an encrypted volume. */
export const FORMAT_ENCRYPTED_MINIMUM_LSVD = "0.3.0";
/** Features of format 3 this lsvd understands; a record requiring any other is refused. */
export const KNOWN_FEATURES: readonly string[] = ["clone", "encrypted"];

/**
 * An encrypted volume's cipher (format 3, feature "encrypted"; docs/design/encryption.md): the
 * algorithm, the key derivation, the volume's random salt and the fingerprint of its key (an HKDF
 * output of another label than the data key's), both hex. Never the key.
 */
export interface EncryptionInfo {
  algorithm: string;
  kdf: string;
  salt: string;
  fingerprint: string;
}

/**
 * A clone's link to the volume it was made from (format 3, feature "clone"): the parent's prefix
 * in the same store, the point it reads (`sequence`, the state after that parent object), the
 * parent's last object when the clone was made (`through`: the clone's own objects are numbered
 * from through + 1, so every number up to it is the parent's), and the pin (a snapshot key of the
 * parent) that keeps those objects. `flattenedThrough` is set once `lsvd flatten` has copied
 * everything the clone read from the parent: from then on the clone reads nothing of it.
 * `bucket` names the parent's bucket when it is not the clone's own (`lsvd clone --to-bucket`):
 * another bucket of the same store, reached with the same endpoint and credentials.
 */
export interface ParentLink {
  prefix: string;
  bucket?: string;
  sequence: number;
  through: number;
  pin: string;
  flattenedThrough?: number;
}

export interface FormatRecord {
  format: number;
  minimumLsvd: string;
  writtenBy: string;
  createdAt: string;
  /** Format 3: features a reader must understand. */
  requires?: string[];
  /** Format 3 with "clone". */
  parent?: ParentLink;
  /** Format 3 with "encrypted". */
  encryption?: EncryptionInfo;
}

export async function readFormatRecord(
  store: ObjectStore,
  prefix: string,
): Promise<FormatRecord | undefined> {
  const key = formatKey(prefix);
  let body: Uint8Array;
  try {
    ({ body } = await store.get(key));
  } catch (e) {
    if (isStoreError(e, "NotFound")) return undefined;
    throw e;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder().decode(body));
  } catch {
    throw new LsvdError("data", `Cannot read the format record "${key}": it is not JSON`);
  }
  const r = parsed as Partial<FormatRecord>;
  if (typeof r.format !== "number" || typeof r.minimumLsvd !== "string") {
    throw new LsvdError("data", `Cannot read the format record "${key}": it lacks "format" or "minimumLsvd"`);
  }
  const record: FormatRecord = {
    format: r.format,
    minimumLsvd: r.minimumLsvd,
    writtenBy: String(r.writtenBy ?? "unknown"),
    createdAt: String(r.createdAt ?? "unknown"),
  };
  if (r.requires !== undefined) {
    if (!Array.isArray(r.requires) || !r.requires.every((x) => typeof x === "string")) {
      throw new LsvdError(
        "data",
        `Cannot read the format record "${key}": "requires" is not a list of names`,
      );
    }
    record.requires = r.requires;
  }
  if (r.parent !== undefined) record.parent = checkParentLink(r.parent, key);
  if (r.encryption !== undefined) record.encryption = checkEncryption(r.encryption, key);
  if ((record.encryption !== undefined) !== (record.requires ?? []).includes("encrypted")) {
    throw new LsvdError(
      "data",
      `Cannot read the format record "${key}": "encryption" and "requires" disagree`,
    );
  }
  return record;
}

function checkEncryption(value: unknown, key: string): EncryptionInfo {
  const e = value as EncryptionInfo;
  const hex = (x: unknown) => typeof x === "string" && /^[0-9a-f]+$/.test(x);
  const ok = typeof e === "object" && e !== null && typeof e.algorithm === "string" &&
    typeof e.kdf === "string" && hex(e.salt) && hex(e.fingerprint);
  if (!ok) {
    throw new LsvdError("data", `Cannot read the format record "${key}": its "encryption" is malformed`);
  }
  return { algorithm: e.algorithm, kdf: e.kdf, salt: e.salt, fingerprint: e.fingerprint };
}

function checkParentLink(value: unknown, key: string): ParentLink {
  const p = value as ParentLink;
  const whole = (n: unknown) => Number.isSafeInteger(n) && (n as number) >= 0;
  const ok = typeof p === "object" && p !== null && typeof p.prefix === "string" && whole(p.sequence) &&
    whole(p.through) && p.sequence <= p.through && typeof p.pin === "string" &&
    (p.flattenedThrough === undefined || whole(p.flattenedThrough)) &&
    (p.bucket === undefined || (typeof p.bucket === "string" && p.bucket !== ""));
  if (!ok) throw new LsvdError("data", `Cannot read the format record "${key}": its "parent" is malformed`);
  const link: ParentLink = { prefix: p.prefix, sequence: p.sequence, through: p.through, pin: p.pin };
  if (p.flattenedThrough !== undefined) link.flattenedThrough = p.flattenedThrough;
  if (p.bucket !== undefined) link.bucket = p.bucket;
  return link;
}

/** Refuses a volume that needs a newer lsvd; never changes the bucket. */
export function checkFormatRecord(record: FormatRecord | undefined, prefix: string): void {
  if (record === undefined) return;
  const unknown = (record.requires ?? []).filter((f) => !KNOWN_FEATURES.includes(f));
  if (
    record.format > FORMAT_VERSION || compareVersions(record.minimumLsvd, LSVD_VERSION) > 0 ||
    unknown.length > 0
  ) {
    throw new LsvdError(
      "invalid",
      `Cannot open the volume at "${
        formatKey(prefix)
      }": it uses format ${record.format} and needs lsvd ${record.minimumLsvd} or newer (this is ${LSVD_VERSION}); upgrade lsvd`,
    );
  }
}

/** Writes the record unless an identical-format one is there (create-only; a racing writer's copy wins). */
export async function ensureFormatRecord(
  store: ObjectStore,
  prefix: string,
  existing: FormatRecord | undefined,
  nowMs: number,
): Promise<void> {
  if (existing !== undefined && existing.format >= FORMAT_PLAIN) return;
  const record: FormatRecord = {
    format: FORMAT_PLAIN,
    minimumLsvd: FORMAT_MINIMUM_LSVD,
    writtenBy: LSVD_VERSION,
    createdAt: existing?.createdAt ?? new Date(nowMs).toISOString(),
  };
  const body = new TextEncoder().encode(JSON.stringify(record, null, 2) + "\n");
  if (existing !== undefined) {
    await store.put(formatKey(prefix), body); // upgrading a format-1 volume: this lsvd writes format 2
    return;
  }
  try {
    await store.put(formatKey(prefix), body, { ifNoneMatch: true });
  } catch (e) {
    if (!isStoreError(e, "PreconditionFailed")) throw e;
  }
}

/**
 * Writes a clone's format record (create-only): false when the prefix already holds one. A clone
 * of an encrypted volume is encrypted too, with its own salt (`encryption`).
 */
export async function createCloneRecord(
  store: ObjectStore,
  prefix: string,
  clone: { parent: ParentLink; encryption: EncryptionInfo | undefined },
  nowMs: number,
): Promise<boolean> {
  const { parent, encryption } = clone;
  const record: FormatRecord = {
    format: 3,
    minimumLsvd: FORMAT_3_MINIMUM_LSVD,
    writtenBy: LSVD_VERSION,
    createdAt: new Date(nowMs).toISOString(),
    requires: encryption === undefined ? ["clone"] : ["clone", "encrypted"],
    parent,
    ...(encryption === undefined ? {} : { encryption }),
  };
  try {
    await store.put(formatKey(prefix), encodeFormatRecord(record), { ifNoneMatch: true });
    return true;
  } catch (e) {
    if (isStoreError(e, "PreconditionFailed")) return false;
    throw e;
  }
}

/**
 * Writes an encrypted volume's format record (create-only) and returns the record the prefix holds
 * afterwards: ours, or the one a racing creator stored first (whose salt then wins).
 */
export async function createEncryptedRecord(
  store: ObjectStore,
  prefix: string,
  encryption: EncryptionInfo,
  nowMs: number,
): Promise<FormatRecord | undefined> {
  const record: FormatRecord = {
    format: 3,
    minimumLsvd: FORMAT_ENCRYPTED_MINIMUM_LSVD,
    writtenBy: LSVD_VERSION,
    createdAt: new Date(nowMs).toISOString(),
    requires: ["encrypted"],
    encryption,
  };
  try {
    await store.put(formatKey(prefix), encodeFormatRecord(record), { ifNoneMatch: true });
    return record;
  } catch (e) {
    if (!isStoreError(e, "PreconditionFailed")) throw e;
  }
  return await readFormatRecord(store, prefix);
}

/** Replaces a clone's record with the same one marked flattened (the flattener holds the lease). */
export async function markFlattened(
  store: ObjectStore,
  prefix: string,
  record: FormatRecord,
  flattenedThrough: number,
): Promise<void> {
  assert(record.parent !== undefined, "only a clone is flattened");
  const next = { ...record, parent: { ...record.parent, flattenedThrough } };
  await store.put(formatKey(prefix), encodeFormatRecord(next));
}

function encodeFormatRecord(record: FormatRecord): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(record, null, 2) + "\n");
}

/** Compares dotted versions numerically ("0.10.0" > "0.9.1"). */
export function compareVersions(a: string, b: string): number {
  const pa = a.split(/[.-]/).map((x) => parseInt(x, 10) || 0);
  const pb = b.split(/[.-]/).map((x) => parseInt(x, 10) || 0);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return Math.sign(d);
  }
  return 0;
}
