/**
 * @module
 * The bodies an encrypted volume's writer stores: each sealed object encrypted into a second buffer
 * (the plaintext one keeps serving reads while the upload runs). Nearly full objects are encrypted
 * into buffers of the largest encrypted object's size, handed back once stored (`recycle`) and kept
 * (up to SPARE_BODIES_MAX) for the next ones, as OpenObject does for the plaintext bodies: sustained
 * writes then allocate and zero no 4 MiB buffer per object, which would cost as much as encrypting it.
 */

import { encryptedBytesOf, encryptObject } from "../crypto/object_cipher.ts";
import type { SectorCipher } from "../crypto/sector_cipher.ts";
import { HEADER_BYTES, SECTOR_BYTES, trailerBytesFor, ZERO_RANGES_MAX } from "../format/object.ts";

const SPARE_BODIES_MAX = 2;

export class EncryptedBodies {
  #cipher: SectorCipher;
  #bodyBytesMax: number;
  #spare: Uint8Array[] = [];
  #own = new WeakSet<ArrayBufferLike>();

  constructor(cipher: SectorCipher, objectBytesMax: number) {
    this.#cipher = cipher;
    const sectors = objectBytesMax / SECTOR_BYTES;
    // The largest object the open object seals (copies, smaller, get buffers of their own).
    const plainMax = HEADER_BYTES + objectBytesMax +
      trailerBytesFor({ zeroRanges: ZERO_RANGES_MAX, origins: 0, sectors });
    this.#bodyBytesMax = encryptedBytesOf(plainMax, sectors);
  }

  /** The stored form of sealed object `plain`. */
  encrypt(plain: Uint8Array): Uint8Array {
    const nearlyFull = plain.length * 4 >= this.#bodyBytesMax * 3 && plain.length <= this.#bodyBytesMax;
    if (!nearlyFull) return encryptObject(this.#cipher, plain);
    let into = this.#spare.pop();
    if (into === undefined) {
      into = new Uint8Array(this.#bodyBytesMax);
      this.#own.add(into.buffer);
    }
    return encryptObject(this.#cipher, plain, into);
  }

  /** The writer is idle: the spare bodies go (OpenObject.releaseIdle says why). */
  releaseSpares(): void {
    this.#spare = [];
  }

  /** Takes back a stored body nothing references any more; others are ignored. */
  recycle(body: Uint8Array): void {
    if (!this.#own.has(body.buffer) || this.#spare.length >= SPARE_BODIES_MAX) return;
    this.#spare.push(new Uint8Array(body.buffer));
  }
}
