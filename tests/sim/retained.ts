/**
 * @module
 * The simulation's oracle for past points: a shadow of every log object of the current lineage,
 * captured before garbage collection could delete it, replayed independently of the engine's
 * load path. A point the store promises to keep (at or after the newest collected record's
 * retained point, or a snapshot) must read back through a read-only Volume exactly as the shadow
 * replay of objects 1..P says.
 */

import assert from "node:assert/strict";
import {
  decodeHeader,
  decodeTrailer,
  HEADER_BYTES,
  type Trailer,
  trailerBytesOf,
} from "../../src/format/object.ts";
import { fromHex, type SectorCipher, type VolumeSecret } from "../../src/crypto/sector_cipher.ts";
import type { MemoryStore } from "../../src/store/memory.ts";
import { decodeJsonRecord } from "../../src/log/json_record.ts";

const SECTOR = 4096;
const LOG_KEY = /^[0-9a-f]{16}$/;

export class Shadow {
  #objects = new Map<number, Uint8Array>();
  #secret: VolumeSecret | undefined;
  #cipher: SectorCipher | undefined;
  /** Encrypted objects seen, by "epoch:sequence" (their nonces): the object's CRC-32. */
  #nonces = new Map<string, number>();

  /** `secret`: an encrypted volume's key (the replay decrypts with it, by docs/FORMAT.md's rules). */
  constructor(secret?: VolumeSecret) {
    this.#secret = secret;
  }

  /** Copies every log object now in the store (a reused number replaces the archived original). */
  capture(store: MemoryStore): void {
    const format = store.rawGet("format.json");
    if (this.#secret !== undefined && this.#cipher === undefined && format !== undefined) {
      const salt = JSON.parse(new TextDecoder().decode(format)).encryption.salt as string;
      this.#cipher = this.#secret.derive(fromHex(salt)!).cipher;
    }
    for (const key of store.keys()) {
      if (!LOG_KEY.test(key)) continue;
      const bytes = store.rawGet(key)!;
      this.#objects.set(parseInt(key, 16), bytes);
      this.#checkNonces(bytes);
    }
  }

  /**
   * Captures, from now on, each log object a DELETE removes, as capture() would have just before it:
   * a GC pass may delete an object that landed after the last capture (it was uploading then).
   */
  watch(store: MemoryStore): void {
    store.observeDeletes((key, body) => {
      if (!LOG_KEY.test(key)) return;
      this.#checkNonces(body);
      this.#objects.set(parseInt(key, 16), body.slice());
    });
  }

  /** No two different encrypted objects ever use the same nonces (docs/design/encryption.md). */
  #checkNonces(bytes: Uint8Array): void {
    const trailerBytes = trailerBytesOf(decodeHeader(bytes.subarray(0, HEADER_BYTES)), bytes.length);
    if (trailerBytes === 0) return;
    const t = decodeTrailer(bytes.subarray(bytes.length - trailerBytes));
    if (t.sectorCrcs?.seal === undefined || t.sectorCrcs.length === 0) return;
    const nonces = `${t.writerEpoch}:${t.sequence}`;
    const seen = this.#nonces.get(nonces);
    assert(
      seen === undefined || seen === t.crc32,
      `two different objects were encrypted with nonces ${nonces}`,
    );
    this.#nonces.set(nonces, t.crc32);
  }

  /** After recovery archived the objects past `sequence`: they are no longer the log. */
  dropAfter(sequence: number): void {
    for (const s of [...this.#objects.keys()]) if (s > sequence) this.#objects.delete(s);
  }

  /** The disk after objects 1..point: entries in order, then zero ranges, per object. */
  stateAt(point: number, sectors: number): Uint8Array {
    const disk = new Uint8Array(sectors * SECTOR);
    const numbers = [...this.#objects.keys()].filter((s) => s <= point).sort((a, b) => a - b);
    for (const s of numbers) {
      const bytes = this.#objects.get(s)!;
      const entries = decodeHeader(bytes.subarray(0, HEADER_BYTES));
      const trailerBytes = trailerBytesOf(entries, bytes.length);
      const trailer = trailerBytes === 0
        ? undefined
        : decodeTrailer(bytes.subarray(bytes.length - trailerBytes));
      const data = this.#plain(bytes.subarray(HEADER_BYTES, bytes.length - trailerBytes), trailer);
      let at = 0;
      for (const e of entries) {
        disk.set(data.subarray(at, at + e.lengthBytes), e.addressBytes);
        at += e.lengthBytes;
      }
      if (trailer === undefined) continue;
      for (const z of trailer.zeroRanges) {
        disk.fill(0, z.addressBytes, z.addressBytes + z.lengthBytes);
      }
    }
    return disk;
  }

  /** An object's data section, decrypted when the object is encrypted. */
  #plain(data: Uint8Array, trailer: Trailer | undefined): Uint8Array {
    const seal = trailer?.sectorCrcs?.seal;
    if (seal === undefined || data.length === 0) return data;
    assert(this.#cipher !== undefined, "an encrypted object in a shadow without the key");
    const out = new Uint8Array(data.length);
    const at = { writerEpoch: seal.writerEpoch, sequence: seal.sequence, firstIndex: 0 };
    assert.equal(
      this.#cipher.open(at, data, seal.tags, out),
      -1,
      `object ${seal.sequence} fails authentication`,
    );
    return out;
  }
}

/** What the store promises: points from `retainedFrom` on, and the snapshots (from the newest collected record). */
export function promisedFrom(store: MemoryStore): number {
  const newest = store.keys("collected/").at(-1);
  if (newest === undefined) return 1;
  const record = decodeJsonRecord(store.rawGet(newest)!) as { retainedFromSequence: number };
  return Math.max(1, record.retainedFromSequence);
}

export function assertSameDisk(actual: Uint8Array, expected: Uint8Array, context: string): void {
  if (actual.length === expected.length && actual.every((b, i) => b === expected[i])) return;
  for (let s = 0; s * SECTOR < actual.length; s++) {
    const a = actual.subarray(s * SECTOR, (s + 1) * SECTOR),
      e = expected.subarray(s * SECTOR, (s + 1) * SECTOR);
    if (!a.every((b, i) => b === e[i])) {
      const view = (x: Uint8Array) => new DataView(x.buffer, x.byteOffset, 8).getUint32(0);
      assert.fail(`${context}: sector ${s} holds write ${view(a)}, the log says write ${view(e)}`);
    }
  }
}
