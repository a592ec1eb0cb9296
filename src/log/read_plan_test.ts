import assert from "node:assert/strict";
import { ExtentMap } from "../map/extent_map.ts";
import { HEADER_BYTES, SECTOR_BYTES } from "../util/constants.ts";
import { planReads } from "./read_plan.ts";

const options = { gapBytesMax: 2 * SECTOR_BYTES, getBytesMax: 8 * SECTOR_BYTES };

Deno.test("planReads() reads a sequentially written object with one GET and skips holes", () => {
  const map = new ExtentMap();
  map.set(10, 4, 1, 0);
  const gets = planReads(map, 0, 100, options);
  assert.deepEqual(gets, [{
    sequence: 1,
    offsetBytes: HEADER_BYTES,
    lengthBytes: 4 * SECTOR_BYTES,
    pieces: [{ diskSector: 10, lengthSectors: 4, bodyOffsetBytes: 0 }],
  }]);
  assert.deepEqual(planReads(map, 20, 10, options), []);
});

Deno.test("planReads() joins pieces of one object across small gaps, splits at large gaps and at getBytesMax", () => {
  const map = new ExtentMap();
  map.set(0, 1, 7, 0); // object 7, sector 0
  map.set(50, 1, 7, 2); // gap of one sector in the object: same GET
  map.set(60, 1, 7, 6); // gap of three sectors: new GET
  map.set(70, 12, 8, 0); // longer than one GET: split
  const gets = planReads(map, 0, 100, options);
  assert.deepEqual(gets.map((g) => [g.sequence, g.offsetBytes, g.lengthBytes]), [
    [7, HEADER_BYTES, 3 * SECTOR_BYTES],
    [7, HEADER_BYTES + 6 * SECTOR_BYTES, SECTOR_BYTES],
    [8, HEADER_BYTES, 8 * SECTOR_BYTES],
    [8, HEADER_BYTES + 8 * SECTOR_BYTES, 4 * SECTOR_BYTES],
  ]);
  assert.deepEqual(gets[0]!.pieces, [
    { diskSector: 0, lengthSectors: 1, bodyOffsetBytes: 0 },
    { diskSector: 50, lengthSectors: 1, bodyOffsetBytes: 2 * SECTOR_BYTES },
  ]);
  assert.deepEqual(gets[3]!.pieces, [{ diskSector: 78, lengthSectors: 4, bodyOffsetBytes: 0 }]);
});

Deno.test("planReads() clips to the range asked for", () => {
  const map = new ExtentMap();
  map.set(0, 16, 3, 0);
  const gets = planReads(map, 4, 2, options);
  assert.deepEqual(gets, [{
    sequence: 3,
    offsetBytes: HEADER_BYTES + 4 * SECTOR_BYTES,
    lengthBytes: 2 * SECTOR_BYTES,
    pieces: [{ diskSector: 4, lengthSectors: 2, bodyOffsetBytes: 0 }],
  }]);
});
