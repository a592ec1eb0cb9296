/**
 * @module
 * SubSectorDevice over the in-memory device (which asserts 4 KiB alignment like the engine):
 * 512-byte reads, writes, zeroes and trims land on the right bytes, and concurrent partial
 * writes to one 4 KiB sector all survive (the read-modify-writes are ordered).
 */

import assert from "node:assert/strict";
import { SubSectorDevice } from "../../src/nbd/sub_sector.ts";
import { MemoryDevice } from "../support/memory_device.ts";
import { seededRandom } from "../../src/util/random.ts";
import type { BlockDevice } from "../../src/volume/block_device.ts";

const SIZE = 1024 * 1024;

Deno.test("SubSectorDevice reads and writes 512-byte units on a 4 KiB device, matching a byte model", async () => {
  const device = new SubSectorDevice(new MemoryDevice({ sizeBytes: SIZE, latencyMs: 1 }));
  const model = new Uint8Array(SIZE);
  const rng = seededRandom(7);
  const int = (n: number) => Math.floor(rng() * n);
  for (let i = 0; i < 300; i++) {
    const units = 1 + int(24);
    const offset = int(SIZE / 512 - units) * 512;
    const length = units * 512;
    const kind = int(4);
    if (kind === 0) {
      const data = new Uint8Array(length).fill(1 + int(250));
      await device.write(offset, data);
      model.set(data, offset);
    } else if (kind === 1) {
      await device.writeZeroes(offset, length);
      model.fill(0, offset, offset + length);
    } else if (kind === 2) {
      const got = new Uint8Array(length);
      await device.read(offset, got);
      assert.deepEqual(got, model.subarray(offset, offset + length), `read ${offset}+${length}`);
    } else {
      await device.trim(offset, length); // advisory: whole sectors inside read as zeros, edges keep data
      const start = Math.ceil(offset / 4096) * 4096, end = Math.floor((offset + length) / 4096) * 4096;
      if (end > start) model.fill(0, start, end);
    }
  }
  const all = new Uint8Array(SIZE);
  await device.read(0, all);
  assert.deepEqual(all, model);
});

Deno.test("SubSectorDevice keeps every one of many concurrent partial writes into the same 4 KiB sectors", async () => {
  const inner = new MemoryDevice({ sizeBytes: SIZE, latencyMs: 2 });
  const device = new SubSectorDevice(inner);
  const writes: Promise<void>[] = [];
  // Eight 512-byte writes into each of two sectors, plus aligned writes racing them, all at once.
  for (let unit = 0; unit < 16; unit++) {
    writes.push(device.write(unit * 512, new Uint8Array(512).fill(unit + 1)));
    if (unit === 3) writes.push(device.write(8192, new Uint8Array(4096).fill(0xee)));
  }
  const reused = new Uint8Array(4096).fill(0xaa); // the caller reuses its buffer at once
  writes.push(device.write(0, reused.subarray(0, 512)));
  reused.fill(0x55);
  await Promise.all(writes);
  const got = new Uint8Array(3 * 4096);
  await device.read(0, got);
  assert.deepEqual(got.subarray(0, 512), new Uint8Array(512).fill(0xaa), "the last write to unit 0 wins");
  for (let unit = 1; unit < 16; unit++) {
    assert.deepEqual(
      got.subarray(unit * 512, unit * 512 + 512),
      new Uint8Array(512).fill(unit + 1),
      `unit ${unit}`,
    );
  }
  assert.deepEqual(got.subarray(8192), new Uint8Array(4096).fill(0xee));
});

Deno.test("SubSectorDevice: a partial write waits for an aligned write to its sector issued just before", async () => {
  // Writes land 20 ms late and reads are immediate: a read-modify-write that did not wait would
  // read the sector before the aligned write lands and then write the old bytes back over it.
  const memory = new MemoryDevice({ sizeBytes: SIZE });
  const slowWrites: BlockDevice = {
    sizeBytes: memory.sizeBytes,
    readOnly: false,
    read: (o, d) => memory.read(o, d),
    write: async (o, d, opt) => {
      const copy = d.slice();
      await new Promise((r) => setTimeout(r, 20));
      await memory.write(o, copy, opt);
    },
    writeZeroes: (o, l, opt) => memory.writeZeroes(o, l, opt),
    trim: (o, l, opt) => memory.trim(o, l, opt),
    flush: () => memory.flush(),
    blockStatus: (o, l) => memory.blockStatus(o, l),
  };
  const device = new SubSectorDevice(slowWrites);
  const aligned = device.write(4096, new Uint8Array(4096).fill(0xaa)); // no read-modify-write in flight
  const partial = device.write(4096 + 512, new Uint8Array(512).fill(0xbb));
  const later = device.write(4096 + 3584, new Uint8Array(512).fill(0xcc));
  await Promise.all([aligned, partial, later]);
  const got = new Uint8Array(4096);
  await device.read(4096, got);
  const want = new Uint8Array(4096).fill(0xaa);
  want.fill(0xbb, 512, 1024);
  want.fill(0xcc, 3584);
  assert.deepEqual(got, want);
});
