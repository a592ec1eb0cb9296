/**
 * @module
 * Encryption at rest of data sectors (docs/design/encryption.md): AES-256-GCM, one AEAD operation
 * per 4 KiB sector so a ranged read of a few sectors decrypts and authenticates alone. The data key
 * and the key fingerprint are derived with HKDF-SHA256 from the user's secret and the volume's
 * salt; the nonce is writer-epoch:u32 || sequence:u40 || sector-index:u24, unique because epochs are
 * never reused and a writer seals each number once. The secret lives only in a VolumeSecret, whose
 * bytes no property, JSON or inspection shows.
 */

import { hkdfSync } from "node:crypto";
import { type AesGcm, aesGcm } from "./aes_gcm.ts";
import { assert } from "../util/assert.ts";
import { SECTOR_BYTES } from "../util/constants.ts";

export const ENCRYPTION_ALGORITHM = "AES-256-GCM";
export const ENCRYPTION_KDF = "HKDF-SHA256";
/** Bytes of the per-volume salt kept in the format record. */
export const SALT_BYTES = 16;
/** Fewest bytes of secret a key may hold (the data key is 256 bits). */
export const SECRET_BYTES_MIN = 32;
const TAG_BYTES = 16;
const DATA_KEY_INFO = "lsvd data key v1";
const JOURNAL_KEY_INFO = "lsvd journal key v1";
/** What sealing adds to a journal record's data: a random 12-byte nonce and the 16-byte tag. */
export const RECORD_SEAL_BYTES = 28;
const FINGERPRINT_INFO = "lsvd key fingerprint v1";
const EPOCH_LIMIT = 2 ** 32;
const SEQUENCE_LIMIT = 2 ** 40;
const SECTOR_INDEX_LIMIT = 2 ** 24;

/** The user's key material: its bytes are reachable only by this module's derivations. */
export class VolumeSecret {
  #bytes: Uint8Array;
  /** Where it came from, for messages ("the file /etc/lsvd/key", "LSVD_ENCRYPTION_KEY"). */
  readonly source: string;

  constructor(bytes: Uint8Array, source: string) {
    assert(bytes.length >= SECRET_BYTES_MIN, "a secret shorter than the minimum reached the cipher");
    this.#bytes = bytes.slice();
    this.source = source;
  }

  /** The data cipher and key fingerprint of the volume with this salt. */
  derive(salt: Uint8Array): { cipher: SectorCipher; fingerprint: string } {
    assert(salt.length === SALT_BYTES, "bad salt length");
    const dataKey = new Uint8Array(hkdfSync("sha256", this.#bytes, salt, DATA_KEY_INFO, 32));
    const journalKey = new Uint8Array(hkdfSync("sha256", this.#bytes, salt, JOURNAL_KEY_INFO, 32));
    const fingerprint = new Uint8Array(hkdfSync("sha256", this.#bytes, salt, FINGERPRINT_INFO, 16));
    return { cipher: new SectorCipher(dataKey, journalKey), fingerprint: toHex(fingerprint) };
  }

  toJSON(): string {
    return "[secret]";
  }

  [Symbol.for("Deno.customInspect")](): string {
    return `VolumeSecret(${this.source})`;
  }
}

/**
 * A volume's keys: the data key seals and opens sectors of log objects; the journal key seals
 * write-back journal records (local, so random nonces: a record has no epoch and sequence, and a
 * journal's record numbers start again when it is emptied).
 */
export class SectorCipher {
  #data: AesGcm;
  #journal: AesGcm;
  #nonce = new Uint8Array(12);

  constructor(dataKey: Uint8Array, journalKey: Uint8Array, prefer: "openssl" | "node" = "openssl") {
    assert(dataKey.length === 32 && journalKey.length === 32);
    this.#data = aesGcm(dataKey, prefer);
    this.#journal = aesGcm(journalKey, prefer);
  }

  /** Which AES-GCM implementation runs ("OpenSSL libcrypto" or "node:crypto"). */
  get engine(): string {
    return this.#data.engine;
  }

  /** A journal record's data sealed: nonce || tag || ciphertext, bound to `header` (its fields). */
  sealRecord(header: Uint8Array, plain: Uint8Array): Uint8Array {
    const out = new Uint8Array(RECORD_SEAL_BYTES + plain.length);
    const nonce = crypto.getRandomValues(out.subarray(0, 12));
    this.#journal.seal(
      nonce,
      plain,
      out.subarray(RECORD_SEAL_BYTES),
      out.subarray(12, RECORD_SEAL_BYTES),
      header,
    );
    return out;
  }

  /** The plaintext of sealRecord's output, or undefined when it does not authenticate. */
  openRecord(header: Uint8Array, sealed: Uint8Array): Uint8Array | undefined {
    if (sealed.length < RECORD_SEAL_BYTES) return undefined;
    const out = new Uint8Array(sealed.length - RECORD_SEAL_BYTES);
    const ok = this.#journal.open(
      sealed.subarray(0, 12),
      sealed.subarray(RECORD_SEAL_BYTES),
      out,
      sealed.subarray(12, RECORD_SEAL_BYTES),
      header,
    );
    return ok ? out : undefined;
  }

  /**
   * Encrypts sectors of `plain` (whole sectors, the object's data sectors from `firstIndex` on)
   * into `out` (same length), writing each sector's tag into `tags` at its index.
   */
  seal(
    at: { writerEpoch: number; sequence: number; firstIndex: number },
    plain: Uint8Array,
    out: Uint8Array,
    tags: Uint8Array,
  ): void {
    const sectors = plain.length / SECTOR_BYTES;
    assert(Number.isInteger(sectors) && out.length === plain.length, "whole sectors in and out");
    for (let k = 0; k < sectors; k++) {
      const index = at.firstIndex + k;
      const from = k * SECTOR_BYTES, to = from + SECTOR_BYTES;
      const nonce = this.#nonceOf(at.writerEpoch, at.sequence, index);
      this.#data.seal(
        nonce,
        plain.subarray(from, to),
        out.subarray(from, to),
        tags.subarray(index * TAG_BYTES, (index + 1) * TAG_BYTES),
      );
    }
  }

  /**
   * Decrypts sectors of `sealed` (data sectors firstIndex.. of one object) into `out`; returns the
   * index (relative to firstIndex) of the first sector whose tag does not verify, or -1.
   */
  open(
    at: { writerEpoch: number; sequence: number; firstIndex: number },
    sealed: Uint8Array,
    tags: Uint8Array,
    out: Uint8Array,
  ): number {
    const sectors = sealed.length / SECTOR_BYTES;
    assert(Number.isInteger(sectors) && out.length === sealed.length, "whole sectors in and out");
    for (let k = 0; k < sectors; k++) {
      const index = at.firstIndex + k;
      const from = k * SECTOR_BYTES, to = from + SECTOR_BYTES;
      const nonce = this.#nonceOf(at.writerEpoch, at.sequence, index);
      const tag = tags.subarray(index * TAG_BYTES, (index + 1) * TAG_BYTES);
      if (
        tag.length !== TAG_BYTES ||
        !this.#data.open(nonce, sealed.subarray(from, to), out.subarray(from, to), tag)
      ) {
        return k;
      }
    }
    return -1;
  }

  /** The 96-bit nonce of one sector (docs/FORMAT.md "Encrypted volumes"). */
  #nonceOf(writerEpoch: number, sequence: number, index: number): Uint8Array {
    assert(
      writerEpoch < EPOCH_LIMIT && sequence < SEQUENCE_LIMIT && index < SECTOR_INDEX_LIMIT,
      "nonce range",
    );
    return nonceBytes(this.#nonce, writerEpoch, sequence, index);
  }
}

/** Writes epoch:u32 || sequence:u40 || index:u24 (big-endian) into `into` and returns it. */
export function nonceBytes(
  into: Uint8Array,
  writerEpoch: number,
  sequence: number,
  index: number,
): Uint8Array {
  // Byte by byte: no DataView per sector on the hot path.
  const low = sequence >>> 0;
  into[0] = writerEpoch >>> 24;
  into[1] = writerEpoch >>> 16;
  into[2] = writerEpoch >>> 8;
  into[3] = writerEpoch;
  into[4] = Math.floor(sequence / 2 ** 32);
  into[5] = low >>> 24;
  into[6] = low >>> 16;
  into[7] = low >>> 8;
  into[8] = low;
  into[9] = index >>> 16;
  into[10] = index >>> 8;
  into[11] = index;
  return into;
}

export function toHex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function fromHex(text: string): Uint8Array | undefined {
  if (!/^([0-9a-f]{2})*$/.test(text)) return undefined;
  return Uint8Array.from(text.match(/../g) ?? [], (h) => parseInt(h, 16));
}
