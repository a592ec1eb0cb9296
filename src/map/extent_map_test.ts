import assert from "node:assert/strict";
import { ExtentMap, type MappedExtent } from "./extent_map.ts";
import { SparseMap } from "./sparse_map.ts";
import { seededRandom } from "../util/random.ts";

/** Per-sector reference model: value = sequence * 1e6 + data sector, 0 = unmapped. */
function reference(size: number) {
  return new Float64Array(size);
}

function mapAsSectors(map: ExtentMap, size: number): Float64Array {
  const out = new Float64Array(size);
  map.lookup(0, size, (e) => {
    for (let k = 0; k < e.lengthSectors; k++) out[e.startSector + k] = e.sequence * 1e6 + e.offsetSectors + k;
  });
  return out;
}

Deno.test("ExtentMap.set() splits an overlapping extent", () => {
  const m = new ExtentMap();
  m.set(0, 100, 1, 0);
  m.set(10, 5, 2, 7);
  const got: MappedExtent[] = [...m.entries()];
  assert.deepEqual(got, [
    { startSector: 0, lengthSectors: 10, sequence: 1, offsetSectors: 0 },
    { startSector: 10, lengthSectors: 5, sequence: 2, offsetSectors: 7 },
    { startSector: 15, lengthSectors: 85, sequence: 1, offsetSectors: 15 },
  ]);
  assert.equal(m.extentCount, 3);
});

Deno.test("ExtentMap.clear() unmaps across many extents", () => {
  const m = new ExtentMap();
  for (let i = 0; i < 1000; i++) m.set(i * 2, 1, i + 1, 0);
  m.clear(5, 1990);
  const got = [...m.entries()].map((e) => e.startSector);
  assert.deepEqual(got, [0, 2, 4, 1996, 1998]);
});

Deno.test("ExtentMap.lookup() clips pieces to the range", () => {
  const m = new ExtentMap();
  m.set(10, 10, 3, 100);
  const got: MappedExtent[] = [];
  m.lookup(12, 4, (e) => void got.push(e));
  assert.deepEqual(got, [{ startSector: 12, lengthSectors: 4, sequence: 3, offsetSectors: 102 }]);
});

Deno.test("ExtentMap matches a per-sector model under random sets and clears", () => {
  for (let seed = 1; seed <= 40; seed++) {
    const rand = seededRandom(seed);
    const size = 1 + Math.floor(rand() * 3000);
    const model = reference(size);
    const m = new ExtentMap();
    for (let op = 0; op < 600; op++) {
      const start = Math.floor(rand() * size);
      const len = 1 + Math.floor(rand() * Math.min(size - start, rand() < 0.8 ? 8 : size));
      if (rand() < 0.15) {
        m.clear(start, len);
        model.fill(0, start, start + len);
      } else {
        const seq = op + 1, off = Math.floor(rand() * 1000);
        m.set(start, len, seq, off);
        for (let k = 0; k < len; k++) model[start + k] = seq * 1e6 + off + k;
      }
    }
    assert.deepEqual(mapAsSectors(m, size), model, `seed ${seed}`);
    // entries are sorted, non-overlapping, and counted
    let prevEnd = -1, n = 0;
    for (const e of m.entries()) {
      assert(e.startSector >= prevEnd && e.lengthSectors > 0, `seed ${seed}`);
      prevEnd = e.startSector + e.lengthSectors;
      n++;
    }
    assert.equal(n, m.extentCount);
  }
});

Deno.test("ExtentMap stays small for sequential writes and holds 16 bytes per random extent", () => {
  const seq = new ExtentMap();
  for (let i = 0; i < 256; i++) seq.set(i * 1024, 1024, i + 1, 0); // 1 GiB in 4 MiB objects
  assert(seq.memoryBytes <= 8 * 1024, `${seq.memoryBytes}`);
  const rnd = new ExtentMap();
  const rand = seededRandom(7);
  for (let i = 0; i < 50_000; i++) rnd.set(Math.floor(rand() * 262_144), 1, 1 + (i >> 10), i & 1023);
  assert(rnd.memoryBytes / rnd.extentCount < 40, `${rnd.memoryBytes / rnd.extentCount} bytes/extent`);
});

Deno.test("ExtentMap turns fragmented regions dense and still matches the per-sector model", () => {
  let seedsWithDense = 0;
  for (let seed = 1; seed <= 30; seed++) {
    const rand = seededRandom(seed);
    const size = 256 * (2 + Math.floor(rand() * 6)) + Math.floor(rand() * 256);
    const model = reference(size);
    const m = new ExtentMap();
    for (let op = 0; op < 4000; op++) {
      const r = rand();
      const start = Math.floor(rand() * size);
      const len = r < 0.95 ? 1 : 1 + Math.floor(rand() * Math.min(size - start, 700));
      const n = Math.min(len, size - start);
      if (r > 0.985) {
        m.clear(start, n);
        model.fill(0, start, start + n);
      } else {
        const seq = op + 1;
        // now and then an offset too large for a dense region (objects over 256 MiB)
        const off = rand() < 0.002 ? 70_000 : Math.floor(rand() * 1000);
        m.set(start, n, seq, off);
        for (let k = 0; k < n; k++) model[start + k] = seq * 1e6 + off + k;
      }
      if (op % 500 === 499) assert.deepEqual(mapAsSectors(m, size), model, `seed ${seed} op ${op}`);
    }
    if (m.denseRegions > 0) seedsWithDense++;
    assert.deepEqual(mapAsSectors(m, size), model, `seed ${seed}`);
    // runs() are the extents in address order; fromArray(runs) rebuilds the same disk
    const flat = Uint32Array.from([...m.runs()].flatMap((r) => [...r]));
    const fromEntries = [...m.entries()].flatMap((
      e,
    ) => [e.startSector, e.lengthSectors, e.sequence, e.offsetSectors]);
    assert.deepEqual([...flat], fromEntries, `seed ${seed}: runs() differ from entries()`);
    assert.equal(flat.length / 4, m.extentCount);
    assert.deepEqual(mapAsSectors(ExtentMap.fromArray(flat), size), model, `seed ${seed}: fromArray`);
    // liveSectors() counts exactly the sectors mapped to each object, also after fromArray()
    const counted = new Map<number, number>();
    for (const v of model) {
      if (v !== 0) counted.set(Math.floor(v / 1e6), (counted.get(Math.floor(v / 1e6)) ?? 0) + 1);
    }
    for (const map of [m, ExtentMap.fromArray(flat)]) {
      assert.deepEqual(new Map(map.liveObjects()), counted, `seed ${seed}: live sector counts`);
    }
  }
  assert(seedsWithDense >= 20, `only ${seedsWithDense} of 30 seeds made a region dense`);
});

Deno.test("SparseMap.set() splitting an extent inside a full chunk inserts in the right place", () => {
  const m = new SparseMap();
  for (let i = 0; i < 256; i++) m.set(i * 10, 5, i + 1, 0); // exactly one full chunk
  m.set(2001, 2, 999, 7); // middle of extent 200, in the chunk's right half
  const got = [...m.entries()].filter((e) => e.startSector >= 2000 && e.startSector < 2010);
  assert.deepEqual(got, [
    { startSector: 2000, lengthSectors: 1, sequence: 201, offsetSectors: 0 },
    { startSector: 2001, lengthSectors: 2, sequence: 999, offsetSectors: 7 },
    { startSector: 2003, lengthSectors: 2, sequence: 201, offsetSectors: 3 },
  ]);
  let prev = -1;
  for (const e of m.entries()) {
    assert(e.startSector > prev);
    prev = e.startSector;
  }
});

Deno.test("ExtentMap holds a random 4 KiB fill in about 6 bytes per sector", () => {
  const m = new ExtentMap();
  const sectors = 262_144; // 1 GiB
  const rand = seededRandom(3);
  const order = Array.from({ length: sectors }, (_, i) => i);
  for (let i = sectors - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  order.forEach((s, i) => m.set(s, 1, 1 + (i >> 10), i & 1023));
  const perGiB = m.memoryBytes;
  assert(perGiB <= 2 * 1024 * 1024, `${(perGiB / 1048576).toFixed(2)} MiB per GiB`);
});
