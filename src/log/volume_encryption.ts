/**
 * @module
 * The one place a volume's key is checked against its format record (docs/design/encryption.md),
 * before anything is served or written: an encrypted volume without a key, or with a key whose
 * fingerprint is not the record's, and a plain volume given a key, are each refused in one line.
 * A new volume given a key gets an encrypted format record with a fresh random salt, and so does a
 * clone of an encrypted volume. Each member of a clone's chain has its own salt, so its own data
 * key: lineageCiphers() gives readers the key of each object number, every member's key checked.
 */

import {
  ENCRYPTION_ALGORITHM,
  ENCRYPTION_KDF,
  fromHex,
  SALT_BYTES,
  type SectorCipher,
  toHex,
  type VolumeSecret,
} from "../crypto/sector_cipher.ts";
import { formatKey } from "../format/keys.ts";
import type { ObjectStore } from "../store/store.ts";
import { LsvdError } from "../util/errors.ts";
import { assert } from "../util/assert.ts";
import {
  createEncryptedRecord,
  type EncryptionInfo,
  type FormatRecord,
  readFormatRecord,
} from "./format_record.ts";
import { peekVolume, type VolumePeek } from "./recorded_size.ts";
import { activeLink, type Lineage, readLineage } from "./parent.ts";

/** The refusal of an encrypted volume opened without its key. */
export function keyMissing(prefix: string): LsvdError {
  return new LsvdError(
    "invalid",
    `Cannot open the volume at "${
      formatKey(prefix)
    }": it is encrypted; give its key with --encryption-key-file FILE, LSVD_ENCRYPTION_KEY_FILE or LSVD_ENCRYPTION_KEY`,
  );
}

/**
 * The data cipher of an encrypted record with this secret; undefined for a plain record without
 * one. Refuses every other combination in one line (LsvdError "invalid").
 */
export function cipherOf(
  record: FormatRecord | undefined,
  secret: VolumeSecret | undefined,
  prefix: string,
): SectorCipher | undefined {
  const info = record?.encryption;
  if (info === undefined) {
    if (secret === undefined) return undefined;
    throw new LsvdError(
      "invalid",
      `Cannot open the volume at "${
        formatKey(prefix)
      }" with an encryption key: it is not encrypted (a volume is encrypted only when it is created)`,
    );
  }
  if (secret === undefined) throw keyMissing(prefix);
  const salt = fromHex(info.salt);
  if (info.algorithm !== ENCRYPTION_ALGORITHM || info.kdf !== ENCRYPTION_KDF || salt?.length !== SALT_BYTES) {
    throw new LsvdError(
      "invalid",
      `Cannot open the volume at "${
        formatKey(prefix)
      }": it is encrypted with ${info.algorithm} (${info.kdf}), which this lsvd does not know`,
    );
  }
  const { cipher, fingerprint } = secret.derive(salt);
  if (fingerprint !== info.fingerprint) {
    throw new LsvdError(
      "invalid",
      `Cannot open the volume at "${
        formatKey(prefix)
      }": the key from ${secret.source} is not its key (the volume's key fingerprint is ${info.fingerprint})`,
    );
  }
  return cipher;
}

/**
 * The encryption of a new volume with this secret: a fresh random salt (so a new data key, even for
 * a clone of a volume with the same secret) and the key's fingerprint under it.
 */
export function freshEncryption(secret: VolumeSecret): EncryptionInfo {
  const salt = crypto.getRandomValues(new Uint8Array(SALT_BYTES));
  const { fingerprint } = secret.derive(salt);
  return { algorithm: ENCRYPTION_ALGORITHM, kdf: ENCRYPTION_KDF, salt: toHex(salt), fingerprint };
}

/**
 * The cipher a process opening `prefix` uses, from its format record. `create`: a writer that may
 * create the volume; given a secret and a prefix holding nothing of a volume, it writes an
 * encrypted record with a new salt (create-only: a racing creator's record wins and is checked).
 */
export async function resolveEncryption(
  store: ObjectStore,
  prefix: string,
  options: {
    secret: VolumeSecret | undefined;
    create: boolean;
    nowMs: number;
    /** A glance at the prefix already taken (peekVolume), used instead of taking another. */
    peek?: VolumePeek | undefined;
  },
): Promise<SectorCipher | undefined> {
  const { secret } = options;
  let record = await readFormatRecord(store, prefix);
  if (record === undefined && secret !== undefined) {
    const { exists } = options.peek ?? await peekVolume(store, prefix);
    if (!exists && !options.create) return undefined; // nothing here: the open refuses that itself
    if (!exists) {
      const info = freshEncryption(secret);
      record = await createEncryptedRecord(store, prefix, info, options.nowMs);
    }
  }
  return await checkedCipher(store, { prefix, record, secret });
}

/**
 * cipherOf() of `record`, and for an encrypted clone its ancestors' keys too, before anything is
 * written (one format-record GET per ancestor, only for an encrypted clone): lineageCiphers()
 * refuses a member whose fingerprint is not the secret's under its own salt in one line naming it.
 */
export async function checkedCipher(
  store: ObjectStore,
  o: {
    prefix: string;
    record: FormatRecord | undefined;
    secret: VolumeSecret | undefined;
  },
): Promise<SectorCipher | undefined> {
  const cipher = cipherOf(o.record, o.secret, o.prefix);
  if (cipher === undefined || activeLink(o.record) === undefined) return cipher;
  lineageCiphers(await readLineage(store, o.prefix, o.record), cipher, o.secret);
  return cipher;
}

/** The data key that opens log object `sequence` of a volume (a clone's ancestors have their own). */
export type CipherFor = (sequence: number) => SectorCipher;

/**
 * The data keys of a volume and its ancestors (src/log/parent.ts): every member of an encrypted
 * chain has its own salt, so its own key from the same secret, and its fingerprint is checked like
 * the volume's own (one line naming the member's prefix). Undefined for a plain chain: its reads do
 * no per-object work at all. `own`: the volume's cipher, from cipherOf() of its own record.
 */
export function lineageCiphers(
  lineage: Lineage,
  own: SectorCipher | undefined,
  secret: VolumeSecret | undefined,
): CipherFor | undefined {
  // cipherOf() refuses an encrypted ancestor without the key and a plain one given it.
  const chain = lineage.bands.map((b) => ({
    through: b.through,
    cipher: cipherOf(b.format, secret, b.prefix),
  }));
  if (own === undefined) return undefined;
  assert(chain.every((b) => b.cipher !== undefined), "an encrypted volume's ancestors have keys");
  if (chain.length === 0) return () => own;
  return (sequence) => {
    for (const b of chain) if (sequence <= b.through) return b.cipher!;
    return own;
  };
}
