import assert from "node:assert/strict";
import { ObjectBuilder, SECTOR_BYTES, sectorOffsetBytes } from "../format/object.ts";
import { MemoryStore } from "../store/memory.ts";
import { isLsvdError } from "../util/errors.ts";
import { readSectorCrcs } from "./object_reader.ts";
import { type CrcSource, type CrcTable, readVerified, type VerifiedRead } from "./verified_read.ts";

const KEY = "vol/0000000000000005";

/** Object 5 with `sectors` data sectors, sector k filled with k + 1, stored under KEY. */
function stored(sectors: number): { store: MemoryStore; sizeBytes: number } {
  const b = new ObjectBuilder({ dataBytes: sectors * SECTOR_BYTES, zeroRanges: 0 });
  const data = b.addEntry(0, sectors * SECTOR_BYTES);
  for (let k = 0; k < sectors; k++) data.fill(k + 1, k * SECTOR_BYTES, (k + 1) * SECTOR_BYTES);
  const bytes = b.finish({ sequence: 5, writerEpoch: 1, volumeSizeBytes: 1 << 30, sealTimeMs: 0 });
  const store = new MemoryStore();
  store.rawPut(KEY, bytes);
  return { store, sizeBytes: bytes.length };
}

function flip(store: MemoryStore, at: number): void {
  const bytes = store.rawGet(KEY)!;
  bytes[at]! ^= 0x10;
  store.rawPut(KEY, bytes);
}

/** A source that loads the stored table and counts its loads; `kept` as a cache would answer. */
function loading(store: MemoryStore) {
  const source = {
    loads: 0,
    keptTable: undefined as CrcTable | undefined,
    table: async (_fresh: boolean, size: number) => {
      source.loads++;
      return (await readSectorCrcs(store, { sequence: 5, key: KEY, sizeBytes: size })) ?? null;
    },
    kept: () => source.keptTable,
    keep: (t: CrcTable) => (source.keptTable = t),
  };
  return source;
}

function read(
  range: [number, number],
  crcs: CrcSource | null,
  extra: Partial<VerifiedRead> = {},
): VerifiedRead {
  return {
    key: KEY,
    sequence: 5,
    range: { offsetSectors: range[0], lengthSectors: range[1] },
    sizeBytes: undefined,
    crcs,
    ...extra,
  };
}

Deno.test("readVerified() returns the sectors asked for and the object's size", async () => {
  const { store, sizeBytes } = stored(8);
  const data = await readVerified(store, read([2, 3], loading(store)));
  assert.deepEqual([...data.body.filter((_, i) => i % SECTOR_BYTES === 0)], [3, 4, 5]);
  assert.equal(data.sizeBytes, sizeBytes);
});

Deno.test("readVerified() fails a damaged sector with kind data naming its bytes, after one fresh attempt", async () => {
  const { store, sizeBytes } = stored(8);
  flip(store, sectorOffsetBytes(3) + 7);
  const source = loading(store);
  const before = store.stats.gets;
  await assert.rejects(readVerified(store, read([0, 8], source, { sizeBytes })), (e) => {
    assert(isLsvdError(e, "data"), String(e));
    assert.match(
      e.message,
      /Cannot read object "vol\/0000000000000005": bytes 24576-28671 \(data sectors 3-3\)/,
    );
    return true;
  });
  assert.equal(source.loads, 2, "the retry loads a fresh table");
  assert.equal(store.stats.gets - before, 4, "two data GETs, two table GETs");
});

Deno.test("readVerified() checks only the parts asked for; bytes between them are read unchecked", async () => {
  const { store } = stored(8);
  flip(store, sectorOffsetBytes(3) + 7);
  const parts = [{ offsetSectors: 1, lengthSectors: 2 }, { offsetSectors: 4, lengthSectors: 2 }];
  const data = await readVerified(store, read([1, 5], loading(store), { checked: parts }));
  assert.equal(data.body.length, 5 * SECTOR_BYTES);
});

Deno.test("readVerified() fails a truncated answer and a missing object with kind data", async () => {
  const { store } = stored(8);
  await assert.rejects(
    readVerified(store, read([6, 4], null)),
    (e) => isLsvdError(e, "data") && /Cannot read object "vol\/0000000000000005"/.test(e.message),
  );
  store.rawDelete(KEY);
  await assert.rejects(
    readVerified(store, read([0, 1], loading(store))),
    (e) => isLsvdError(e, "data"),
  );
});

Deno.test("readVerified() with trailerAlong takes the table from the tail of a read to the object's end", async () => {
  const { store, sizeBytes } = stored(8);
  const source = loading(store);
  const before = store.stats.gets;
  const data = await readVerified(store, read([4, 4], source, { sizeBytes, trailerAlong: true }));
  assert.equal(data.body.length, 4 * SECTOR_BYTES);
  assert.equal(store.stats.gets - before, 1, "one GET brings data and table");
  assert.equal(source.loads, 0);
  assert.equal(source.keptTable?.length, 8);
  // A read that ends far from the object's end, or whose table is kept, is not stretched.
  const again = await readVerified(store, read([0, 4], source, { sizeBytes, trailerAlong: true }));
  assert.equal(again.body.length, 4 * SECTOR_BYTES);
});
