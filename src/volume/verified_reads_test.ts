import assert from "node:assert/strict";
import { HEADER_BYTES, SECTOR_BYTES } from "../format/object.ts";
import * as fs from "node:fs";
import { DirectoryStore } from "../store/directory.ts";
import { MemoryStore } from "../store/memory.ts";
import type { ByteRange, GetResult, ObjectStore } from "../store/store.ts";
import { isLsvdError } from "../util/errors.ts";
import { Volume, type VolumeOptions } from "./volume.ts";

const MiB = 1024 * 1024;
const KEY = "0000000000000002"; // the first data object (object 1 records the size)

/** Sector k of the test data: every byte is (k * 7 + 1) & 0xff, so each sector differs. */
function pattern(sectors: number): Uint8Array {
  const b = new Uint8Array(sectors * SECTOR_BYTES);
  for (let k = 0; k < sectors; k++) b.fill((k * 7 + 1) & 0xff, k * SECTOR_BYTES, (k + 1) * SECTOR_BYTES);
  return b;
}

/** A volume with 16 sectors of pattern() at address 0 in object 2, closed (nothing cached). */
async function written(store: ObjectStore, extra: Partial<VolumeOptions> = {}): Promise<void> {
  const v = await Volume.open({ store, log: () => {}, sizeBytes: 8 * MiB, ...extra });
  await v.write(0, pattern(16));
  await v.close();
}

function flipStoredByte(store: MemoryStore, key: string, offsetBytes: number): void {
  const bytes = store.rawGet(key)!;
  bytes[offsetBytes]! ^= 0x10;
  store.rawPut(key, bytes);
}

async function readSectors(v: Volume, first: number, count: number): Promise<Uint8Array> {
  const dest = new Uint8Array(count * SECTOR_BYTES);
  await v.read(first * SECTOR_BYTES, dest);
  return dest;
}

function openLogged(store: MemoryStore, lines: string[], extra: Partial<VolumeOptions> = {}) {
  return Volume.open({ store, log: (l) => lines.push(l), ...extra });
}

Deno.test("Volume.read() fails exactly the reads of a damaged sector with kind data and logs it once", async () => {
  const store = new MemoryStore();
  await written(store);
  flipStoredByte(store, KEY, HEADER_BYTES + 5 * SECTOR_BYTES + 100);
  const lines: string[] = [];
  const v = await openLogged(store, lines);
  const expected = pattern(16);
  for (const [first, count] of [[5, 1], [0, 8], [5, 1]] as const) {
    await assert.rejects(readSectors(v, first, count), (e) => {
      assert(isLsvdError(e, "data"), String(e));
      assert.match(
        e.message,
        /Cannot read object "0000000000000002": bytes 32768-36863 \(data sectors 5-5\)/,
      );
      return true;
    });
  }
  for (const [first, count] of [[4, 1], [6, 10], [0, 5], [16, 4]] as const) {
    const got = await readSectors(v, first, count);
    const want = first >= 16
      ? new Uint8Array(count * SECTOR_BYTES)
      : expected.subarray(first * SECTOR_BYTES, (first + count) * SECTOR_BYTES);
    assert.deepEqual(got, want, `sectors ${first}+${count}`);
  }
  const damage = lines.filter((l) => l.includes("do not match their CRC-32"));
  assert.equal(damage.length, 1, `one line per damaged range: ${damage.join(" | ")}`);
  assert.match(damage[0]!, /bytes 32768-36863 .*'lsvd verify'/);
  assert.equal(v.stats.damagedReads, 3);
  await v.close();
});

/** A store whose next `n` GETs of data ranges of `key` answer with one bit flipped. */
class FlakyReads extends MemoryStore {
  damageNext = 0;
  damaged = 0;
  override async get(key: string, range?: ByteRange): Promise<GetResult> {
    const result = await super.get(key, range);
    if (
      key === KEY && range !== undefined && range.offsetBytes >= HEADER_BYTES && this.damageNext > 0 &&
      range.lengthBytes >= SECTOR_BYTES &&
      range.offsetBytes + range.lengthBytes <= HEADER_BYTES + 16 * SECTOR_BYTES
    ) {
      this.damageNext--;
      this.damaged++;
      result.body[0]! ^= 1;
    }
    return result;
  }
}

Deno.test("Volume.read() retries a damaged answer once with a fresh GET, then serves the right bytes", async () => {
  const store = new FlakyReads();
  await written(store);
  const lines: string[] = [];
  const v = await openLogged(store, lines, { cacheBytesMax: 0 });
  store.damageNext = 1;
  assert.deepEqual(await readSectors(v, 3, 2), pattern(16).subarray(3 * SECTOR_BYTES, 5 * SECTOR_BYTES));
  assert.equal(store.damaged, 1);
  store.damageNext = 2; // the retry is damaged too: the read fails
  await assert.rejects(readSectors(v, 3, 2), (e) => isLsvdError(e, "data"));
  assert.equal(store.damaged, 3);
  assert.deepEqual(await readSectors(v, 3, 2), pattern(16).subarray(3 * SECTOR_BYTES, 5 * SECTOR_BYTES));
  assert.equal(lines.filter((l) => l.includes("CRC-32")).length, 1);
  await v.close();
});

Deno.test("Volume.read() fetches each object's CRC table once, in parallel with its first data GET", async () => {
  const store = new MemoryStore();
  await written(store);
  const v = await Volume.open({ store, log: () => {}, cacheBytesMax: 0 });
  const before = store.stats.gets;
  await Promise.all([readSectors(v, 0, 1), readSectors(v, 9, 1)]);
  assert.equal(store.stats.gets - before, 3, "two data GETs and one table GET");
  await readSectors(v, 12, 1);
  assert.equal(store.stats.gets - before, 5, "with no cache budget the table is fetched again");
  await v.close();
  const kept = await Volume.open({ store, log: () => {}, cacheBytesMax: 1 * MiB, readAheadBytesMax: 0 });
  const start = store.stats.gets;
  for (const k of [0, 9, 3]) await readSectors(kept, k, 1);
  assert.equal(store.stats.gets - start, 4, "three data GETs and one table GET");
  await kept.close();
});

Deno.test("Volume.read() keeps CRC tables within the cache limit and counts them in cacheBytes", async () => {
  const store = new MemoryStore();
  await written(store);
  const v = await Volume.open({ store, log: () => {}, cacheBytesMax: 64 * 1024 });
  const before = store.stats.gets;
  for (let k = 0; k < 16; k++) await readSectors(v, k, 1);
  assert.equal(v.stats.crcTableGets, 1);
  assert(v.stats.crcTableBytes > 16 * 4 && v.stats.crcTableBytes <= 64 * 1024 / 16);
  assert(v.stats.cacheBytes <= 64 * 1024);
  assert(store.stats.gets - before <= 17);
  await v.close();
});

Deno.test("Volume.read() with verifyReads false fetches no tables and serves damage (bench baseline only)", async () => {
  const store = new MemoryStore();
  await written(store);
  flipStoredByte(store, KEY, HEADER_BYTES + 100);
  const v = await Volume.open({ store, log: () => {}, verifyReads: false });
  const got = await readSectors(v, 0, 1);
  assert.equal(got[100], pattern(1)[100]! ^ 0x10);
  assert.equal(v.stats.crcTableGets, 0);
  await v.close();
});

Deno.test("Volume.read() serves objects without a CRC table (no trailer) unverified", async () => {
  const store = new MemoryStore();
  await written(store, { checkpointEveryObjects: 0 });
  const whole = store.rawGet(KEY)!;
  const dataEnd = HEADER_BYTES + 16 * SECTOR_BYTES;
  store.rawPut(KEY, whole.slice(0, dataEnd)); // as a writer that knows only header + data stores it
  const v = await Volume.open({ store, log: () => {}, checkpointEveryObjects: 0 });
  assert.deepEqual(await readSectors(v, 0, 16), pattern(16));
  assert.equal(v.stats.crcTableGets, 1);
  await v.close();
});

Deno.test("Volume.read() fails reads of an object whose trailer is damaged instead of serving them unverified", async () => {
  const store = new MemoryStore();
  await written(store); // its shutdown checkpoint spares recovery from reading the object
  const trailerBytes = 72 + 16 * 4;
  flipStoredByte(store, KEY, HEADER_BYTES + 16 * SECTOR_BYTES); // the trailer's magic
  assert.equal(store.rawGet(KEY)!.length, HEADER_BYTES + 16 * SECTOR_BYTES + trailerBytes);
  const v = await Volume.open({ store, log: () => {} });
  await assert.rejects(
    readSectors(v, 0, 1),
    (e) => isLsvdError(e, "data") && /trailer is damaged/.test(e.message),
  );
  await v.close().catch(() => {});
});

/** A directory store that counts the reads it answered at once (ObjectStore.readNow). */
class CountingDirectory extends DirectoryStore {
  answeredNow = 0;
  override readNow(key: string, offsetBytes: number, dest: Uint8Array): boolean {
    const answered = super.readNow(key, offsetBytes, dest);
    if (answered) this.answeredNow++;
    return answered;
  }
}

Deno.test("Volume.read() of a directory store answers misses at once and still checks them: damage fails with kind data", async () => {
  const root = await Deno.makeTempDir({ prefix: "lsvd-read-now-" });
  try {
    const store = new CountingDirectory(root, { fsync: false });
    await written(store);
    // 16 KiB: the tables' share fits this object's, the rest caches nothing, so every read misses.
    const v = await Volume.open({ store, log: () => {}, cacheBytesMax: 16 * 1024 });
    const expected = pattern(16);
    assert.deepEqual(await readSectors(v, 0, 16), expected); // opens the file, fetches the table
    assert.equal(store.answeredNow, 0);
    for (let k = 15; k >= 0; k--) {
      assert.deepEqual(
        await readSectors(v, k, 1),
        expected.subarray(k * SECTOR_BYTES, (k + 1) * SECTOR_BYTES),
      );
    }
    assert.deepEqual(await readSectors(v, 3, 6), expected.subarray(3 * SECTOR_BYTES, 9 * SECTOR_BYTES));
    assert.equal(store.answeredNow, 17, "every read after the first answered at once");
    // Newest write wins over sectors answered at once: sector 7 rewritten (in the open object).
    const newer = new Uint8Array(SECTOR_BYTES).fill(0xee);
    await v.write(7 * SECTOR_BYTES, newer);
    const around = await readSectors(v, 6, 3);
    assert.deepEqual(around.subarray(0, SECTOR_BYTES), expected.subarray(6 * SECTOR_BYTES, 7 * SECTOR_BYTES));
    assert.deepEqual(around.subarray(SECTOR_BYTES, 2 * SECTOR_BYTES), newer);
    assert.deepEqual(
      around.subarray(2 * SECTOR_BYTES),
      expected.subarray(8 * SECTOR_BYTES, 9 * SECTOR_BYTES),
    );
    assert.equal(store.answeredNow, 18);
    expected.set(newer, 7 * SECTOR_BYTES);
    // Damage sector 5 in place: the open file sees it through the page cache.
    const fd = fs.openSync(`${root}/${KEY}`, "r+");
    const at = HEADER_BYTES + 5 * SECTOR_BYTES + 100;
    const byte = new Uint8Array(1);
    fs.readSync(fd, byte, 0, 1, at);
    byte[0]! ^= 0x10;
    fs.writeSync(fd, byte, 0, 1, at);
    fs.closeSync(fd);
    for (const [first, count] of [[5, 1], [4, 2], [0, 16]] as const) {
      await assert.rejects(readSectors(v, first, count), (e) => isLsvdError(e, "data"));
    }
    assert.deepEqual(await readSectors(v, 6, 10), expected.subarray(6 * SECTOR_BYTES));
    assert.equal(v.stats.damagedReads, 3);
    await v.close();
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
