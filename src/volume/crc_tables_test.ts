import assert from "node:assert/strict";
import { CrcTables, TABLE_OVERHEAD_BYTES } from "./crc_tables.ts";
import { ObjectSizes } from "./object_sizes.ts";

const table = (sectors: number, fill = 7) => new Uint32Array(sectors).fill(fill);

Deno.test("CrcTables.set() keeps tables within the byte budget, evicting the least recently used", () => {
  const cost = TABLE_OVERHEAD_BYTES + 4 * 1024;
  const tables = new CrcTables(3 * cost);
  tables.set(1, table(1024, 1));
  tables.set(2, table(1024, 2));
  tables.set(3, table(1024, 3));
  assert.equal(tables.sizeBytes, 3 * cost);
  assert.equal(tables.get(1)?.[0], 1); // 1 is now the most recently used
  tables.set(4, table(1024, 4));
  assert.equal(tables.get(2), undefined, "the least recently used table goes first");
  assert.deepEqual([1, 3, 4].map((s) => tables.get(s)?.[0]), [1, 3, 4]);
  assert.equal(tables.sizeBytes, 3 * cost);
  assert.equal(tables.count, 3);
});

Deno.test("CrcTables remembers objects without a table, at the overhead's cost", () => {
  const tables = new CrcTables(1024);
  tables.set(9, null);
  assert.equal(tables.get(9), null);
  assert.equal(tables.get(8), undefined);
  assert.equal(tables.sizeBytes, TABLE_OVERHEAD_BYTES);
});

Deno.test("CrcTables.set() replaces a kept table and never keeps one larger than the budget", () => {
  const tables = new CrcTables(TABLE_OVERHEAD_BYTES + 40);
  tables.set(1, table(10, 1));
  tables.set(1, table(2, 5));
  assert.equal(tables.get(1)?.[0], 5);
  assert.equal(tables.sizeBytes, TABLE_OVERHEAD_BYTES + 8);
  tables.set(2, table(11));
  assert.equal(tables.get(2), undefined);
  assert.equal(tables.get(1)?.[0], 5);
  const none = new CrcTables(0);
  none.set(1, table(1));
  assert.equal(none.get(1), undefined);
  assert.equal(none.sizeBytes, 0);
});

Deno.test("ObjectSizes records sizes by sequence and grows, 4 bytes per object", () => {
  const sizes = new ObjectSizes();
  sizes.set(1, 12288 + 4096 + 76);
  sizes.set(5000, 4 * 1024 * 1024);
  sizes.set(7, 2 ** 33); // too large to record: unknown, learnt from a GET instead
  assert.equal(sizes.get(1), 12288 + 4096 + 76);
  assert.equal(sizes.get(5000), 4 * 1024 * 1024);
  assert.equal(sizes.get(2), undefined);
  assert.equal(sizes.get(7), undefined);
  assert.equal(sizes.get(1 << 20), undefined);
  assert.equal(sizes.memoryBytes, 8192 * 4);
});
