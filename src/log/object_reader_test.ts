import assert from "node:assert/strict";
import { crc32 } from "../format/crc32.ts";
import { firstBadSector, HEADER_BYTES, ObjectBuilder, SECTOR_BYTES } from "../format/object.ts";
import { MemoryStore } from "../store/memory.ts";
import { concatBytes, setU64 } from "../util/bytes.ts";
import { isLsvdError } from "../util/errors.ts";
import type { LoggedObject } from "./log_state.ts";
import { readObjectSummary, readSectorCrcs } from "./object_reader.ts";

/** Object 5 with `sectors` data sectors at address 0, sector k filled with k + 1. */
function object(sectors: number): Uint8Array {
  const b = new ObjectBuilder({ dataBytes: sectors * SECTOR_BYTES, zeroRanges: 0 });
  const data = b.addEntry(0, sectors * SECTOR_BYTES);
  for (let k = 0; k < sectors; k++) data.fill(k + 1, k * SECTOR_BYTES, (k + 1) * SECTOR_BYTES);
  return b.finish({ sequence: 5, writerEpoch: 1, volumeSizeBytes: 1 << 30, sealTimeMs: 0 });
}

function stored(bytes: Uint8Array): { store: MemoryStore; o: LoggedObject } {
  const store = new MemoryStore();
  const o = { sequence: 5, key: "vol/0000000000000005", sizeBytes: bytes.length };
  store.rawPut(o.key, bytes);
  return { store, o };
}

function flipped(bytes: Uint8Array, at: number, mask = 1): Uint8Array {
  const copy = bytes.slice();
  copy[at]! ^= mask;
  return copy;
}

const isDataErrorNaming = (key: string) => (e: unknown) => {
  assert(isLsvdError(e, "data"), String(e));
  assert(e.message.includes(`"${key}"`), e.message);
  return true;
};

Deno.test("readSectorCrcs() returns the table that verifies every data sector, with one suffix GET", async () => {
  for (const sectors of [1, 40, 1024]) {
    const bytes = object(sectors);
    const { store, o } = stored(bytes);
    const crcs = await readSectorCrcs(store, o);
    assert.equal(crcs?.length, sectors);
    assert.equal(store.stats.gets, 1);
    const data = bytes.subarray(HEADER_BYTES, HEADER_BYTES + sectors * SECTOR_BYTES);
    assert.equal(firstBadSector(data, 0, crcs!), -1);
    if (sectors >= 3) assert.equal(firstBadSector(flipped(data, 3 * SECTOR_BYTES - 1), 0, crcs!), 2);
    assert.equal(crcs![0], crc32(data.subarray(0, SECTOR_BYTES)));
  }
});

Deno.test("readSectorCrcs() finds no table in objects with no trailer or a version-1 trailer", async () => {
  const bytes = object(3);
  const dataEnd = HEADER_BYTES + 3 * SECTOR_BYTES;
  const bare = stored(bytes.slice(0, dataEnd));
  assert.equal(await readSectorCrcs(bare.store, bare.o), undefined);
  const v1 = new Uint8Array(48);
  const view = new DataView(v1.buffer);
  v1.set(new TextEncoder().encode("LSVDTRL1"));
  view.setUint32(8, 1);
  setU64(view, 16, 5);
  setU64(view, 32, 1 << 30);
  view.setUint32(44, 48);
  const withV1 = concatBytes([bytes.subarray(0, dataEnd), v1]);
  view.setUint32(40, crc32(v1.subarray(0, 40), crc32(withV1.subarray(0, dataEnd))));
  const old = stored(concatBytes([bytes.subarray(0, dataEnd), v1]));
  assert.equal(await readSectorCrcs(old.store, old.o), undefined);
  assert.equal((await readObjectSummary(old.store, old.o)).trailer?.version, 1);
});

Deno.test("readSectorCrcs() reports a damaged trailer, another object's trailer and truncation", async () => {
  const bytes = object(40);
  const trailerAt = HEADER_BYTES + 40 * SECTOR_BYTES;
  for (
    const [what, body] of [
      ["magic", flipped(bytes, trailerAt)],
      ["length field", flipped(bytes, bytes.length - 1, 0x40)],
      ["truncated", bytes.slice(0, bytes.length - 100)],
      ["sequence", flipped(bytes, trailerAt + 39)],
    ] as const
  ) {
    const { store, o } = stored(body);
    await assert.rejects(readSectorCrcs(store, o), isDataErrorNaming(o.key), what);
  }
});

Deno.test("readObjectSummary() refuses a header with one flipped bit, naming the object", async () => {
  for (const sectors of [2, 40]) { // read whole (whole-object CRC) and read in parts (header CRC)
    const bytes = object(sectors);
    const { store, o } = stored(flipped(bytes, 6, 0x10)); // entry 0's address moves by one sector
    await assert.rejects(readObjectSummary(store, o), (e) => {
      isDataErrorNaming(o.key)(e);
      assert.match((e as Error).message, /checksum mismatch/);
      return true;
    });
    const good = stored(bytes);
    assert.deepEqual((await readObjectSummary(good.store, good.o)).entries, [{
      addressBytes: 0,
      lengthBytes: sectors * SECTOR_BYTES,
    }]);
  }
});

Deno.test("readObjectSummary() names a truncated object", async () => {
  const bytes = object(40);
  const { store, o } = stored(bytes.slice(0, HEADER_BYTES + 20 * SECTOR_BYTES));
  await assert.rejects(readObjectSummary(store, o), (e) => {
    isDataErrorNaming(o.key)(e);
    assert.match((e as Error).message, /truncated/);
    return true;
  });
});
