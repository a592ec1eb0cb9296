import assert from "node:assert/strict";
import { decodeCheckpoint, encodeCheckpoint } from "./checkpoint.ts";
import { FormatError } from "./object.ts";
import { ExtentMap } from "../map/extent_map.ts";

const meta = { sequence: 9, volumeSizeBytes: 2 ** 40, writerEpoch: 3, objectCrc32: 0xdeadbeef };

Deno.test("encodeCheckpoint() and decodeCheckpoint() round-trip a map given as its chunk runs", () => {
  const map = new ExtentMap();
  for (let i = 0; i < 1000; i++) map.set(i * 3, 2, 1 + (i % 9), i);
  const bytes = encodeCheckpoint(meta, map.runs(), map.extentCount);
  const back = decodeCheckpoint(bytes);
  assert.equal(back.sequence, 9);
  assert.equal(back.volumeSizeBytes, 2 ** 40);
  assert.equal(back.writerEpoch, 3);
  assert.equal(back.objectCrc32, 0xdeadbeef);
  assert.deepEqual([...ExtentMap.fromArray(back.extents).entries()], [...map.entries()]);
});

Deno.test("decodeCheckpoint() rejects a flipped bit, out-of-order extents and a wrong count", () => {
  const good = encodeCheckpoint(meta, [new Uint32Array([0, 4, 1, 0, 10, 2, 2, 0])], 2);
  const flipped = good.slice();
  flipped[50]! ^= 1;
  assert.throws(() => decodeCheckpoint(flipped), /checksum/);
  const disordered = encodeCheckpoint(meta, [new Uint32Array([10, 2, 2, 0, 0, 4, 1, 0])], 2);
  assert.throws(() => decodeCheckpoint(disordered), FormatError);
  const futureObject = encodeCheckpoint(meta, [new Uint32Array([0, 4, 10, 0])], 1);
  assert.throws(() => decodeCheckpoint(futureObject), /out of order or out of range/);
  assert.throws(() => encodeCheckpoint(meta, [new Uint32Array([0, 4, 1, 0])], 2), /holds 1 extents, not 2/);
});
