import assert from "node:assert/strict";
import { HEADER_BYTES, SECTOR_BYTES } from "../format/object.ts";
import { ReadCache } from "./read_cache.ts";

/** `sectors` sectors whose bytes all say which (object, sector) they are. */
function sectorsOf(sequence: number, offsetSectors: number, sectors: number): Uint8Array {
  const b = new Uint8Array(sectors * SECTOR_BYTES);
  for (let k = 0; k < sectors; k++) {
    b.fill((sequence * 31 + offsetSectors + k) & 0xff, k * SECTOR_BYTES, (k + 1) * SECTOR_BYTES);
  }
  return b;
}

function read(cache: ReadCache, sequence: number, offsetSectors: number, sectors: number) {
  const dest = new Uint8Array(sectors * SECTOR_BYTES);
  return cache.read(sequence, offsetSectors, sectors, dest) ? dest : undefined;
}

Deno.test("ReadCache.read() answers any sectors inside what was added, across adds, and copies", () => {
  const cache = new ReadCache(64 * SECTOR_BYTES);
  const data = sectorsOf(7, 10, 4);
  cache.addRange(7, 10, data);
  cache.addRange(7, 14, sectorsOf(7, 14, 2));
  data.fill(0); // the cache kept its own copy
  assert.deepEqual(read(cache, 7, 11, 2), sectorsOf(7, 11, 2));
  assert.deepEqual(read(cache, 7, 12, 4), sectorsOf(7, 12, 4), "spans two adds");
  assert.equal(read(cache, 7, 9, 2), undefined, "sector 9 was never added");
  assert.equal(read(cache, 8, 10, 1), undefined, "another object");
  assert.equal(cache.has(7, 10, 6), true);
  assert.equal(cache.has(7, 10, 7), false);
  const dest = new Uint8Array(2 * SECTOR_BYTES).fill(9);
  assert.equal(cache.read(7, 15, 2, dest), false);
  assert(dest.every((x) => x === 9), "a miss leaves dest untouched");
});

Deno.test("ReadCache.addObject() keeps the data section of an uploaded object", () => {
  const cache = new ReadCache(64 * SECTOR_BYTES);
  const object = new Uint8Array(HEADER_BYTES + 3 * SECTOR_BYTES + 100); // 100 bytes of trailer
  object.set(sectorsOf(3, 0, 3), HEADER_BYTES);
  cache.addObject(3, object);
  assert.deepEqual(read(cache, 3, 0, 3), sectorsOf(3, 0, 3));
  assert.equal(cache.has(3, 3, 1), false, "the partial sector (trailer) is not cached");
});

Deno.test("ReadCache stays within its budget and gives sectors read since the hand passed a second chance", () => {
  const slots = 16;
  const cache = new ReadCache(slots * SECTOR_BYTES);
  for (let s = 0; s < slots; s++) cache.addRange(1, s, sectorsOf(1, s, 1));
  assert.equal(cache.sizeBytes, slots * SECTOR_BYTES);
  assert(read(cache, 1, 0, 1) !== undefined); // sector 0 is read: it survives the next pass
  for (let s = 0; s < slots - 1; s++) cache.addRange(2, s, sectorsOf(2, s, 1));
  assert.equal(cache.sizeBytes, slots * SECTOR_BYTES, "never more than the budget");
  assert.deepEqual(read(cache, 1, 0, 1), sectorsOf(1, 0, 1), "read sector kept");
  for (let s = 1; s < slots; s++) assert.equal(cache.has(1, s, 1), false, `unread sector ${s} evicted`);
  for (let s = 0; s < slots - 1; s++) assert.deepEqual(read(cache, 2, s, 1), sectorsOf(2, s, 1));
});

Deno.test("ReadCache skips ranges over a quarter of its budget and holds nothing with a zero budget", () => {
  const cache = new ReadCache(16 * SECTOR_BYTES);
  cache.addRange(1, 0, sectorsOf(1, 0, 5));
  assert.equal(cache.has(1, 0, 1), false);
  cache.addRange(1, 0, sectorsOf(1, 0, 4));
  assert.equal(cache.has(1, 0, 4), true);
  const none = new ReadCache(0);
  none.addRange(1, 0, sectorsOf(1, 0, 1));
  assert.equal(none.has(1, 0, 1), false);
  assert.equal(none.sizeBytes, 0);
});
