import assert from "node:assert/strict";
import { decodeHeader, decodeTrailer, firstBadSector, HEADER_BYTES, SECTOR_BYTES } from "../format/object.ts";
import { OpenObject } from "./open_object.ts";

const META = { sequence: 9, writerEpoch: 2, volumeSizeBytes: 2 ** 30, sealTimeMs: 1 };

function sectorOf(tag: number): Uint8Array {
  return new Uint8Array(SECTOR_BYTES).map((_, i) => (tag * 31 + i * 7) & 0xff);
}

Deno.test("OpenObject.seal() writes sectors in address order with the CRCs of their newest data", () => {
  const open = new OpenObject(64 * SECTOR_BYTES);
  const expected = new Map<number, Uint8Array>();
  let seed = 12345;
  const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  for (let n = 0; n < 200; n++) {
    const sector = Math.floor(random() * 80);
    const length = 1 + Math.floor(random() * 3);
    if (random() < 0.15) {
      open.zero(sector, length);
      for (let s = sector; s < sector + length; s++) expected.delete(s);
      continue;
    }
    if (!open.canWrite(sector, length)) break;
    const data = new Uint8Array(length * SECTOR_BYTES);
    for (let k = 0; k < length; k++) {
      const bytes = sectorOf(n * 4 + k);
      data.set(bytes, k * SECTOR_BYTES);
      expected.set(sector + k, bytes);
    }
    open.write(sector, data);
  }
  const { bytes, entries } = open.seal(META);
  assert.ok(open.isEmpty);
  assert.deepEqual(decodeHeader(bytes), entries);
  const sectors: number[] = [];
  for (const e of entries) {
    for (let s = 0; s < e.lengthBytes / SECTOR_BYTES; s++) sectors.push(e.addressBytes / SECTOR_BYTES + s);
  }
  assert.deepEqual(sectors, [...expected.keys()].sort((a, b) => a - b), "every sector once, ascending");
  for (let i = 1; i < entries.length; i++) {
    const prev = entries[i - 1]!;
    assert.ok(prev.addressBytes + prev.lengthBytes < entries[i]!.addressBytes, "adjacent sectors merge");
  }
  const dataEnd = HEADER_BYTES + sectors.length * SECTOR_BYTES;
  sectors.forEach((s, k) => {
    const at = HEADER_BYTES + k * SECTOR_BYTES;
    assert.deepEqual(bytes.subarray(at, at + SECTOR_BYTES), expected.get(s), `sector ${s}`);
  });
  const trailer = decodeTrailer(bytes.subarray(dataEnd), bytes.subarray(0, dataEnd));
  assert.equal(firstBadSector(bytes.subarray(HEADER_BYTES, dataEnd), 0, trailer.sectorCrcs!), -1);
});

Deno.test("OpenObject.recycle() reuses a stored body for the next nearly full seal, header cleared", () => {
  const open = new OpenObject(8 * SECTOR_BYTES);
  for (let k = 0; k < 8; k++) open.write(k * 2, sectorOf(k)); // 8 separate entries
  const first = open.seal(META);
  assert.equal(first.entries.length, 8);
  open.recycle(new Uint8Array(first.bytes.length)); // not one of its bodies: ignored
  open.recycle(first.bytes);
  const data = new Uint8Array(6 * SECTOR_BYTES);
  for (let k = 0; k < 6; k++) data.set(sectorOf(100 + k), k * SECTOR_BYTES);
  open.write(40, data); // one entry of 6 sectors: 3/4 full
  const second = open.seal({ ...META, sequence: 10 });
  assert.equal(second.bytes.buffer, first.bytes.buffer, "the stored body was reused");
  assert.deepEqual(decodeHeader(second.bytes), [{
    addressBytes: 40 * SECTOR_BYTES,
    lengthBytes: 6 * SECTOR_BYTES,
  }]);
  const dataEnd = HEADER_BYTES + 6 * SECTOR_BYTES;
  assert.deepEqual(second.bytes.subarray(HEADER_BYTES, dataEnd), data);
  const trailer = decodeTrailer(second.bytes.subarray(dataEnd), second.bytes.subarray(0, dataEnd));
  assert.equal(trailer.sequence, 10);
  open.write(0, sectorOf(1)); // a small object gets a buffer of its own size, never a spare
  open.recycle(second.bytes);
  const small = open.seal({ ...META, sequence: 11 });
  assert.notEqual(small.bytes.buffer, second.bytes.buffer);
  assert.equal(small.bytes.buffer.byteLength, small.bytes.length);
});

Deno.test("OpenObject.releaseIdle() drops the spare bodies, and staging once a burst filled most of it", () => {
  const open = new OpenObject(8 * SECTOR_BYTES);
  assert.equal(open.bufferBytes, 0, "nothing before the first write");
  open.write(0, sectorOf(1)); // a commit: one slot of staging written
  open.seal(META);
  open.releaseIdle();
  assert.equal(open.bufferBytes, 8 * SECTOR_BYTES, "staging touched at its start only is kept");
  for (let k = 0; k < 8; k++) open.write(k, sectorOf(k)); // a full object
  const full = open.seal({ ...META, sequence: 10 });
  open.recycle(full.bytes);
  assert.equal(open.bufferBytes, 8 * SECTOR_BYTES + full.bytes.buffer.byteLength);
  open.releaseIdle();
  assert.equal(open.bufferBytes, 0);
  open.write(3, sectorOf(7)); // the next write allocates again
  assert.deepEqual(open.lookup(3), sectorOf(7));
  const next = open.seal({ ...META, sequence: 11 });
  assert.deepEqual(next.bytes.subarray(HEADER_BYTES, HEADER_BYTES + SECTOR_BYTES), sectorOf(7));
});
