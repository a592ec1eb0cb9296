import assert from "node:assert/strict";
import { MemoryStore } from "../store/memory.ts";
import { silentLogger } from "../util/log.ts";
import { ManualClock } from "../util/clock.ts";
import { refuseBeforeWriting, Volume, type VolumeOptions } from "./volume.ts";
import type { ListOptions, ObjectStore } from "../store/store.ts";
import { decodeHeader, HEADER_BYTES } from "../format/object.ts";

const MiB = 1024 * 1024;

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function sector(byte: number, sectors = 1): Uint8Array {
  return new Uint8Array(4096 * sectors).fill(byte);
}

async function readBytes(v: Volume, offset: number, length: number): Promise<Uint8Array> {
  const dest = new Uint8Array(length);
  await v.read(offset, dest);
  return dest;
}

function open(store: MemoryStore, extra: Partial<VolumeOptions> = {}): Promise<Volume> {
  return Volume.open({ store, log: silentLogger, sealDelayMs: 50, ...extra } as VolumeOptions);
}

Deno.test("Volume.open() needs a size the first time and remembers it after", async () => {
  const store = new MemoryStore();
  await assert.rejects(open(store), /no recorded size yet/);
  const v = await open(store, { sizeBytes: 8 * MiB });
  await v.close();
  assert.deepEqual(store.keys("0"), ["0000000000000001"]);
  const again = await open(store);
  assert.equal(again.sizeBytes, 8 * MiB);
  await again.close();
});

Deno.test("Volume.write() merges adjacent and overlapping writes into one entry of one object", async () => {
  const store = new MemoryStore();
  const v = await open(store, { sizeBytes: 8 * MiB, prefix: "vol" });
  await v.write(4096, sector(1, 2));
  await v.write(0, sector(2));
  await v.write(8192, sector(3, 2)); // overlaps the first write's second sector
  await v.flush();
  const bytes = store.rawGet("vol/0000000000000002")!;
  assert.deepEqual(decodeHeader(bytes), [{ addressBytes: 0, lengthBytes: 4 * 4096 }]);
  assert.deepEqual([0, 1, 2, 3].map((k) => bytes[HEADER_BYTES + k * 4096]), [2, 1, 3, 3]);
  await v.close();
});

Deno.test("Volume.read() sees the newest data from the open object, in-flight and stored objects", async () => {
  const store = new MemoryStore();
  const v = await open(store, { sizeBytes: 8 * MiB, cacheBytesMax: 0 });
  await v.write(0, sector(7, 4));
  await v.flush();
  await v.write(4096, sector(8)); // open object
  assert.deepEqual([...await readBytes(v, 0, 4 * 4096)].filter((_, i) => i % 4096 === 0), [7, 8, 7, 7]);
  await v.writeZeroes(8192, 4096);
  assert.deepEqual([...await readBytes(v, 0, 4 * 4096)].filter((_, i) => i % 4096 === 0), [7, 8, 0, 7]);
  assert.deepEqual([...await readBytes(v, 6 * MiB, 4096)].slice(0, 2), [0, 0]);
  await v.close();
  const r = await open(store);
  assert.deepEqual([...await readBytes(r, 0, 4 * 4096)].filter((_, i) => i % 4096 === 0), [7, 8, 0, 7]);
  await r.close();
});

Deno.test("Volume.read() fetches adjacent ranges of one object in one request and never-written sectors in none", async () => {
  const store = new MemoryStore();
  const v = await open(store, { sizeBytes: 8 * MiB, cacheBytesMax: 0 });
  await v.write(0, sector(5, 64));
  await v.close();
  const r = await open(store, { cacheBytesMax: 0 });
  const before = store.stats.gets;
  await readBytes(r, 0, 64 * 4096);
  assert.equal(store.stats.gets - before, 2, "one data GET and one for the object's CRC table");
  await readBytes(r, 4 * MiB, 64 * 4096);
  assert.equal(store.stats.gets - before, 2);
  await r.close();
});

Deno.test("Volume.flush() resolves only when every earlier object is stored", async () => {
  const store = new MemoryStore({ latencyMs: { min: 1, max: 20 }, seed: 3 });
  const v = await open(store, { sizeBytes: 64 * MiB, objectBytesMax: 64 * 1024 });
  const writes = [];
  for (let i = 0; i < 200; i++) writes.push(v.write(i * 4096 * 3, sector(i % 250)));
  await Promise.all(writes);
  await v.flush();
  const st = v.stats;
  assert.equal(st.durableThrough, st.lastSequence);
  assert.equal(store.keys("0").length, st.lastSequence);
  await v.close();
});

Deno.test("Volume.write() waits when dirty bytes reach the limit instead of growing", async () => {
  const store = new MemoryStore({ latencyMs: { min: 5, max: 5 } });
  const v = await open(store, { sizeBytes: 64 * MiB, objectBytesMax: 256 * 1024, dirtyBytesMax: MiB });
  let dirtyMax = 0;
  const writes = [];
  for (let i = 0; i < 64; i++) {
    writes.push(
      v.write(i * 256 * 1024, sector(1, 64)).then(() => (dirtyMax = Math.max(dirtyMax, v.stats.dirtyBytes))),
    );
  }
  await Promise.all(writes);
  assert(dirtyMax <= MiB + 64 * 1024, `dirty peaked at ${dirtyMax}`);
  await v.close();
});

Deno.test("Volume fails writes with a clear error when another writer took its object number", async () => {
  const store = new MemoryStore();
  const v = await open(store, { sizeBytes: 8 * MiB });
  store.rawPut("0000000000000002", new Uint8Array(HEADER_BYTES));
  await v.write(0, sector(1));
  await assert.rejects(v.flush(), /already exists; another writer/);
  await assert.rejects(v.write(0, sector(1)), /another writer/);
});

Deno.test("Volume.open() grows the volume and refuses to shrink below written data", async () => {
  const store = new MemoryStore();
  const v = await open(store, { sizeBytes: 8 * MiB });
  await v.write(6 * MiB, sector(1));
  await v.close();
  await assert.rejects(open(store, { sizeBytes: 4 * MiB }), /without --allow-shrink/);
  await assert.rejects(
    open(store, { sizeBytes: 4 * MiB, allowShrink: true }),
    /Cannot shrink the volume from 8388608 to 4194304 bytes: data is written up to byte/,
  );
  const g = await open(store, { sizeBytes: 16 * MiB });
  await g.write(12 * MiB, sector(2));
  await g.close();
  const r = await open(store);
  assert.equal(r.sizeBytes, 16 * MiB);
  assert.equal((await readBytes(r, 12 * MiB, 4096))[0], 2);
  await r.close();
});

/** The store, recording the prefix of each glance (a LIST of one key) made through it. */
function glancesOf(inner: MemoryStore): { store: ObjectStore; glances: string[] } {
  const glances: string[] = [];
  const store = new Proxy(inner, {
    get(target, prop) {
      const value = Reflect.get(target, prop, target);
      if (prop === "list") {
        return (o: ListOptions) => {
          if (o.maxKeys === 1) glances.push(o.prefix);
          return target.list(o);
        };
      }
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  return { store, glances };
}

Deno.test("Volume.open() given the caller's glance at the prefix (refuseBeforeWriting's) does not glance again", async () => {
  const inner = new MemoryStore();
  const first = await open(inner, { prefix: "vol", sizeBytes: 8 * MiB });
  await first.write(0, sector(7));
  await first.close();
  for (const readOnly of [false, true]) {
    const { store, glances } = glancesOf(inner);
    const peek = await refuseBeforeWriting({ store, prefix: "vol/", readOnly });
    assert.deepEqual(glances.filter((p) => p === "vol/0"), ["vol/0"]);
    const v = await Volume.open({ store, prefix: "vol", readOnly, log: silentLogger, ...(peek && { peek }) });
    assert.deepEqual(glances.filter((p) => p === "vol/0"), ["vol/0"], `readOnly ${readOnly}`);
    assert.equal((await readBytes(v, 0, 4096))[0], 7);
    await v.close();
  }
  // The glance given is still judged: one that found no log refuses a writer without a size.
  await assert.rejects(
    Volume.open({ store: inner, prefix: "vol", log: silentLogger, peek: { hasLog: false, exists: false } }),
    /no recorded size yet/,
  );
});

Deno.test("Volume.blockStatus() reports zero and data runs including the open object", async () => {
  const store = new MemoryStore();
  const v = await open(store, { sizeBytes: MiB });
  await v.write(0, sector(1, 2));
  await v.flush();
  await v.write(16 * 4096, sector(1));
  await v.trim(4096, 4096);
  assert.deepEqual(v.blockStatus(0, MiB), [
    { lengthBytes: 4096, zero: false },
    { lengthBytes: 15 * 4096, zero: true },
    { lengthBytes: 4096, zero: false },
    { lengthBytes: MiB - 17 * 4096, zero: true },
  ]);
  await v.close();
});

Deno.test("Volume rollback: deleting the newest objects gives back the earlier disk exactly", async () => {
  const store = new MemoryStore();
  const v = await open(store, { sizeBytes: 4 * MiB, objectBytesMax: 64 * 1024 });
  for (let i = 0; i < 40; i++) await v.write(i * 4096 * 5 % (4 * MiB - 4096), sector(i + 1));
  await v.close();
  const first = await open(store);
  const snapshot = await readBytes(first, 0, 4 * MiB);
  await first.close();
  const newest = store.keys("0").at(-1)!;
  const second = await open(store);
  for (let i = 0; i < 40; i++) await second.write(i * 4096 * 3 % (4 * MiB - 4096), sector(200 - i));
  await second.trim(0, MiB);
  await second.close();
  for (const k of store.keys("0")) if (k > newest) store.rawDelete(k);
  const back = await open(store);
  assert(equalBytes(await readBytes(back, 0, 4 * MiB), snapshot), "rolled-back disk differs");
  await back.close();
});

Deno.test("Volume.open() archives objects after a gap and reuses their numbers", async () => {
  const store = new MemoryStore();
  const lines: string[] = [];
  const v = await open(store, { sizeBytes: MiB, objectBytesMax: 16 * 1024 });
  for (let i = 0; i < 5; i++) {
    await v.write(i * 4096, sector(i + 1));
    await v.flush();
  }
  await v.close();
  store.rawDelete("0000000000000003");
  const r = await Volume.open({ store, log: (l) => lines.push(l), recoveryId: "test" });
  assert.deepEqual(lines, [
    "Starting recovery from the memory store.",
    "Archived 3 objects after object 3 under archive/test/.",
    "Recovery complete (processed 2 objects).",
  ]);
  assert.deepEqual(store.keys("archive/"), [
    "archive/test/0000000000000004",
    "archive/test/0000000000000005",
    "archive/test/0000000000000006",
  ]);
  assert.equal((await readBytes(r, 0, 4096))[0], 1);
  assert.equal((await readBytes(r, 4096, 4096))[0], 0); // object 3 held it; gone
  await r.write(0, sector(9));
  await r.close();
  assert(store.keys().includes("0000000000000003"));
});

Deno.test("Volume.open() stops with the key named when an object is truncated", async () => {
  const store = new MemoryStore();
  const v = await open(store, { sizeBytes: MiB });
  await v.write(0, sector(1, 4));
  await v.close();
  const bytes = store.rawGet("0000000000000002")!;
  store.rawPut("0000000000000002", bytes.subarray(0, HEADER_BYTES + 4096));
  await assert.rejects(open(store), /Cannot recover object "0000000000000002": .*truncated/);
});

Deno.test("Volume checkpoints: restart replays only the tail and ignores a checkpoint from before a rollback", async () => {
  const store = new MemoryStore();
  const v = await open(store, { sizeBytes: 4 * MiB, objectBytesMax: 16 * 1024, checkpointEveryObjects: 10 });
  for (let i = 0; i < 100; i++) await v.write((i * 7 % 1000) * 4096, sector(i + 1));
  await v.close();
  const checkpoints = store.keys("checkpoint/");
  assert(checkpoints.length >= 1 && checkpoints.length <= 2, `${checkpoints}`);
  const lines: string[] = [];
  const r = await Volume.open({ store, log: (l) => lines.push(l) });
  const disk = await readBytes(r, 0, 4 * MiB);
  await r.close();
  assert.match(lines.join("\n"), /Recovery complete \(processed 0 objects after checkpoint \d+\)/);
  // Roll back past the checkpoint, write different data so numbers are reused: the old
  // checkpoint must not be applied to the new log.
  const keep = 20;
  for (const k of store.keys("0")) if (parseInt(k, 16) > keep) store.rawDelete(k);
  const rolled = await open(store, { checkpointEveryObjects: 0 });
  const expected = await readBytes(rolled, 0, 4 * MiB);
  for (let i = 0; i < 200; i++) await rolled.write((i * 3 % 1000) * 4096, sector(255 - (i % 50)));
  const after = await readBytes(rolled, 0, 4 * MiB);
  await rolled.close();
  const left = store.keys("checkpoint/").map((k) => parseInt(k.slice("checkpoint/".length), 16));
  assert(left.every((n) => n <= keep), `checkpoints past the recovery point are deleted: ${left}`);
  const again = await open(store);
  assert(equalBytes(await readBytes(again, 0, 4 * MiB), after));
  await again.close();
  assert(!equalBytes(expected, disk));
});

Deno.test("Volume checkpoints: a checkpoint that does not match its object is ignored", async () => {
  const store = new MemoryStore();
  const v = await open(store, { sizeBytes: MiB, checkpointEveryObjects: 1 });
  await v.write(0, sector(1));
  await v.close();
  const ck = store.keys("checkpoint/").at(-1);
  assert.equal(ck, "checkpoint/0000000000000002");
  const forged = store.rawGet(ck!)!;
  const last = store.keys("0").at(-1)!;
  store.rawDelete(last);
  // a different object under the same number
  const w = await open(store, { checkpointEveryObjects: 0 });
  await w.write(0, sector(2));
  await w.close();
  store.rawPut(ck!, forged);
  const lines: string[] = [];
  const r = await Volume.open({ store, log: (l) => lines.push(l) });
  assert.match(lines.join("\n"), /Ignoring checkpoint .*does not match object/);
  assert.equal((await readBytes(r, 0, 4096))[0], 2);
  await r.close();
});

Deno.test("Volume.blockStatus() answers a prefix when the range holds very many extents", async () => {
  const store = new MemoryStore();
  const v = await open(store, { sizeBytes: 64 * MiB, objectBytesMax: 64 * 1024 });
  for (let i = 0; i < 5000; i++) await v.write(i * 2 * 4096, sector(1));
  await v.flush();
  const runs = v.blockStatus(0, 64 * MiB);
  const total = runs.reduce((n, r) => n + r.lengthBytes, 0);
  assert(total > 0 && total < 64 * MiB, `covered ${total}`);
  assert(runs.length <= 2 * 4096 + 1);
  let at = 0;
  for (const r of runs) {
    assert.equal(r.zero, (at / 4096) % 2 === 1, `run at ${at}`);
    at += r.lengthBytes;
  }
  await v.close();
});

Deno.test("Volume read-ahead: a sequential reader costs far fewer GETs than reads, random readers none extra", async () => {
  const store = new MemoryStore({ latencyMs: { min: 2, max: 2 } });
  const v = await open(store, { sizeBytes: 64 * MiB });
  for (let i = 0; i < 8; i++) await v.write(i * 4 * MiB, sector(i + 1, 1024));
  await v.close();
  const gets = async (options: Partial<VolumeOptions>, offsets: number[]) => {
    const r = await open(store, options);
    const before = store.stats.gets;
    for (const at of offsets) {
      const d = await readBytes(r, at, 128 * 1024);
      assert.equal(d[0], Math.floor(at / (4 * MiB)) + 1, `data at ${at}`);
    }
    await r.close();
    assert(r.stats.crcTableGets <= 8, "one CRC table GET per object at most");
    return store.stats.gets - before - r.stats.crcTableGets;
  };
  const sequential = Array.from({ length: 256 }, (_, i) => i * 128 * 1024);
  const withAhead = await gets({}, sequential);
  const without = await gets({ readAheadBytesMax: 0 }, sequential);
  assert.equal(without, 256);
  assert(withAhead <= 40, `${withAhead} GETs for 256 sequential reads`);
  const random = Array.from({ length: 64 }, (_, i) => ((i * 7919) % 256) * 128 * 1024);
  assert.equal(await gets({}, random), 64);
});

Deno.test("Volume read-ahead: eight sequential readers keep at most half the cache fetched ahead, not two caches", async () => {
  const store = new MemoryStore({ latencyMs: { min: 3, max: 3 } });
  const v = await open(store, { sizeBytes: 32 * MiB });
  for (let i = 0; i < 8; i++) await v.write(i * 4 * MiB, sector(i + 1, 1024));
  await v.close();
  // GET bytes in flight at most: what the readers asked for plus what was fetched ahead of them.
  let inFlight = 0;
  let inFlightMax = 0;
  const watched = new Proxy(store, {
    get(target, prop) {
      const value = Reflect.get(target, prop, target);
      if (prop !== "get") return typeof value === "function" ? value.bind(target) : value;
      return async (key: string, range?: { offsetBytes: number; lengthBytes: number }) => {
        const bytes = range?.lengthBytes ?? 0;
        inFlight += bytes;
        inFlightMax = Math.max(inFlightMax, inFlight);
        try {
          return await target.get(key, range);
        } finally {
          inFlight -= bytes;
        }
      };
    },
  });
  // A 4 MiB cache: windows up to 1 MiB each, 2 MiB ahead in all (8 streams could keep 8 MiB).
  const r = await open(watched as MemoryStore, { cacheBytesMax: 4 * MiB });
  const readBytesEach = 64 * 1024;
  await Promise.all(Array.from({ length: 8 }, async (_, i) => {
    for (let at = i * 4 * MiB; at < (i + 1) * 4 * MiB; at += readBytesEach) {
      assert.equal((await readBytes(r, at, readBytesEach))[0], i + 1, `data at ${at}`);
    }
  }));
  await r.close();
  const readersBytes = 8 * readBytesEach;
  assert(inFlightMax <= 2 * MiB + readersBytes, `${(inFlightMax / MiB).toFixed(2)} MiB of GETs in flight`);
});

Deno.test("Volume checkpoints: a restart that replayed headers leaves a checkpoint for the next one", async () => {
  const store = new MemoryStore();
  const v = await open(store, { sizeBytes: MiB, objectBytesMax: 16 * 1024, checkpointEveryObjects: 0 });
  for (let i = 0; i < 20; i++) await v.write(i * 4096, sector(i + 1));
  await v.close();
  assert.equal(store.keys("checkpoint/").length, 0);
  const replaying = await open(store); // replays every header, writes nothing
  await replaying.close();
  const lines: string[] = [];
  const r = await Volume.open({ store, log: (l) => lines.push(l) });
  assert.match(lines.join("\n"), /processed 0 objects after checkpoint/);
  assert.equal((await readBytes(r, 19 * 4096, 4096))[0], 20);
  await r.close();
});

/** Runs p while moving the manual clock (store retries and timers sleep on it). */
async function driving<T>(clock: ManualClock, p: Promise<T>, stepMs = 50): Promise<T> {
  let done = false;
  p.then(() => (done = true), () => (done = true));
  for (let i = 0; i < 100_000 && !done; i++) {
    clock.advance(stepMs);
    for (let k = 0; k < 20; k++) await Promise.resolve();
  }
  return await p;
}

Deno.test("Volume.close() with every write stored stops in bounded time when the store stops answering, saying so", async () => {
  const clock = new ManualClock();
  const store = new MemoryStore({ clock });
  const lines: string[] = [];
  const v = await driving(
    clock,
    open(store, { sizeBytes: 8 * MiB, clock, log: (l) => lines.push(l), leaseDurationMs: 3000 }),
  );
  await driving(clock, v.write(0, sector(9)));
  await driving(clock, v.flush());
  store.setFaults({ errorRate: 1 }); // the store goes away with nothing left to store
  await driving(clock, new Promise((r) => clock.setTimer(20_000, () => r(undefined)))); // lease lapses
  const startMs = clock.nowMs();
  await driving(clock, v.close());
  const tookMs = clock.nowMs() - startMs;
  assert(tookMs >= 10_000 && tookMs < 12_000, `closed after ${tookMs} ms`);
  assert(v.allStored);
  const said = lines.filter((l) => /^Stopped without/.test(l));
  assert.equal(said.length, 1, lines.join("\n"));
  assert.match(
    said[0]!,
    /^Stopped without the shutdown checkpoint and without releasing the lease: object storage did not answer within 10 s\. Every write is stored/,
  );
  assert(!lines.some((l) => /Still flushing|Cannot write checkpoint/.test(l)), lines.join("\n"));
  store.setFaults({ errorRate: 0 });
  const again = await driving(clock, open(store.reopen(), { clock, leaseMode: "refuse" }));
  assert.equal((await driving(clock, readBytes(again, 0, 4096)))[0], 9);
  await driving(clock, again.close());
});

Deno.test("Volume with writeThrough acknowledges a write only once its object is stored, batching concurrent writes", async () => {
  const store = new MemoryStore({ latencyMs: { min: 5, max: 5 } });
  const v = await open(store, { sizeBytes: 64 * MiB, writeThrough: true, sealDelayMs: 60_000 });
  const before = v.stats.durableThrough;
  let acknowledged = 0;
  const writes = Array.from({ length: 50 }, (_, i) =>
    v.write(i * 4096, sector(i + 1)).then(() => {
      acknowledged++;
      // Nothing is acknowledged that a restart from the store would not find.
      assert.ok(v.stats.durableThrough > before, "acknowledged before its object was stored");
    }));
  assert.equal(acknowledged, 0);
  await Promise.all(writes);
  // Group commit: 50 writes issued together ride in a few objects, not one each.
  const objects = v.stats.durableThrough - before;
  assert.ok(objects <= 3, `${objects} objects for 50 concurrent writes`);
  const reopened = await open(store, { leaseMode: "takeover" });
  for (let i = 0; i < 50; i++) {
    assert.ok(equalBytes(await readBytes(reopened, i * 4096, 4096), sector(i + 1)));
  }
  await reopened.close();
});
