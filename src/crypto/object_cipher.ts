/**
 * @module
 * Encrypted log objects (docs/FORMAT.md "Encrypted volumes"): a sealed plaintext object becomes
 * the object stored by encrypting its data sectors in place (same length, same positions), setting
 * trailer flag ENCRYPTED, replacing the sector CRCs by the ciphertext's and appending the GCM tags
 * after them; the whole-object CRC is computed again. The header and every other trailer field are
 * copied unchanged, so recovery, fencing, checkpoints and `lsvd verify` read it without the key.
 * And the one check of data read back: CRCs passed, then each sector decrypted and authenticated.
 */

import {
  claimedTrailerBytes,
  dataBytesOf,
  decodeHeader,
  decodeTrailer,
  FLAG_ENCRYPTED,
  HEADER_BYTES,
  ORIGIN_BYTES,
  SECTOR_BYTES,
  SECTOR_CRC_BYTES,
  SECTOR_TAG_BYTES,
  type SectorCrcs,
  sectorOffsetBytes,
  TRAILER_FIXED_BYTES,
  trailerBytesFor,
  ZERO_RANGE_BYTES,
} from "../format/object.ts";
import { crc32 } from "../format/crc32.ts";
import { assert } from "../util/assert.ts";
import { LsvdError } from "../util/errors.ts";
import type { SectorCipher } from "./sector_cipher.ts";

/** Bytes encryptObject() makes of a plaintext object of `plainBytes` with `sectors` data sectors. */
export function encryptedBytesOf(plainBytes: number, sectors: number): number {
  return plainBytes + sectors * SECTOR_TAG_BYTES;
}

/**
 * The object as stored on an encrypted volume, in `into` when it is large enough (every byte of the
 * result is written) or in a new buffer; `plain` is left as it is.
 */
export function encryptObject(cipher: SectorCipher, plain: Uint8Array, into?: Uint8Array): Uint8Array {
  const entries = decodeHeader(plain);
  const dataBytes = dataBytesOf(entries);
  const dataEnd = HEADER_BYTES + dataBytes;
  const plainTrailer = plain.subarray(dataEnd);
  assert(claimedTrailerBytes(plainTrailer) === plainTrailer.length, "a sealed object has its trailer");
  const t = decodeTrailer(plainTrailer);
  assert(
    t.version === 2 && (t.flags & FLAG_ENCRYPTED) === 0,
    "only a plaintext version-2 object is encrypted",
  );
  const sectors = dataBytes / SECTOR_BYTES;
  const origins = t.origins?.length ?? 0;
  const trailerBytes = trailerBytesFor({
    zeroRanges: t.zeroRanges.length,
    origins,
    sectors,
    encrypted: true,
  });
  const size = dataEnd + trailerBytes;
  assert(size === encryptedBytesOf(plain.length, sectors), "tags are the only bytes added");
  const out = into !== undefined && into.length >= size ? into.subarray(0, size) : new Uint8Array(size);
  out.set(plain.subarray(0, HEADER_BYTES));
  const crcsAt = dataEnd + TRAILER_FIXED_BYTES - 8 + t.zeroRanges.length * ZERO_RANGE_BYTES +
    origins * ORIGIN_BYTES;
  const tagsAt = crcsAt + sectors * SECTOR_CRC_BYTES;
  out.set(plainTrailer.subarray(0, crcsAt - dataEnd), dataEnd); // fixed fields, zero ranges, origins
  const tags = out.subarray(tagsAt, tagsAt + sectors * SECTOR_TAG_BYTES);
  const at = { writerEpoch: t.writerEpoch, sequence: t.sequence, firstIndex: 0 };
  cipher.seal(at, plain.subarray(HEADER_BYTES, dataEnd), out.subarray(HEADER_BYTES, dataEnd), tags);
  const v = new DataView(out.buffer, out.byteOffset, out.length);
  v.setUint32(dataEnd + 12, t.flags | FLAG_ENCRYPTED);
  for (let k = 0; k < sectors; k++) {
    const from = sectorOffsetBytes(k);
    v.setUint32(crcsAt + k * SECTOR_CRC_BYTES, crc32(out.subarray(from, from + SECTOR_BYTES)));
  }
  const crcAt = out.length - 8;
  v.setUint32(crcAt, crc32(out.subarray(0, crcAt)));
  v.setUint32(crcAt + 4, trailerBytes);
  return out;
}

/**
 * Data sectors [offsetSectors, ...) of object `key`, read and checked against `table` (the object's
 * CRCs), decrypted into a new buffer. Fails with LsvdError "data" naming the object and bytes when
 * the object is not encrypted (it cannot be lsvd's with this key) or a sector's tag does not verify.
 * `out` may be `sealed` itself (decrypted in place); after a failure it holds anything.
 */
export function openSectors(
  cipher: SectorCipher,
  read: { key: string; offsetSectors: number; table: SectorCrcs | null },
  sealed: Uint8Array,
  out: Uint8Array = new Uint8Array(sealed.length),
): Uint8Array {
  const seal = read.table?.seal;
  if (seal === undefined) {
    throw new LsvdError(
      "data",
      `Cannot read object "${read.key}": it is not encrypted but the volume is; it was not written by lsvd with this volume's key`,
    );
  }
  const at = { writerEpoch: seal.writerEpoch, sequence: seal.sequence, firstIndex: read.offsetSectors };
  const bad = cipher.open(at, sealed, seal.tags, out);
  if (bad === -1) return out;
  const from = sectorOffsetBytes(read.offsetSectors + bad);
  throw new LsvdError(
    "data",
    `Cannot read object "${read.key}": bytes ${from}-${from + SECTOR_BYTES - 1} (data sector ${
      read.offsetSectors + bad
    }) fail authentication (AES-256-GCM); the stored object was changed or the key is wrong`,
  );
}
