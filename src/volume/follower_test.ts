import assert from "node:assert/strict";
import { MemoryStore } from "../store/memory.ts";
import { RetryingStore } from "../store/retry.ts";
import { ManualClock } from "../util/clock.ts";
import type { Logger } from "../util/log.ts";
import { silentLogger } from "../util/log.ts";
import { seededRandom } from "../util/random.ts";
import { logKey } from "../format/keys.ts";
import { listLogState } from "../log/log_state.ts";
import { rollbackLog } from "../log/rollback.ts";
import { readSnapshots } from "../log/snapshots.ts";
import { Volume, type VolumeOptions } from "./volume.ts";
import { Follower, type FollowerOptions } from "./follower.ts";
import { DiskCache } from "../cache/disk_cache.ts";

const SECTOR = 4096;
const SECTORS = 256; // a 1 MiB disk

function open(store: MemoryStore, clock: ManualClock, extra: Partial<VolumeOptions> = {}): Promise<Volume> {
  return Volume.open({
    store,
    clock,
    log: silentLogger,
    sizeBytes: SECTORS * SECTOR,
    objectBytesMax: 16 * SECTOR,
    checkpointEveryObjects: 0,
    retentionMs: 0,
    gcIntervalMs: 0,
    ...extra,
  });
}

async function follow(
  store: MemoryStore,
  clock: ManualClock,
  extra: Partial<FollowerOptions> = {},
  volumeExtra: Partial<VolumeOptions> = {},
): Promise<{ volume: Volume; follower: Follower; lines: string[] }> {
  const lines: string[] = [];
  const log: Logger = (line) => lines.push(line);
  const volume = await Volume.open({
    store,
    clock,
    log: silentLogger,
    readOnly: true,
    gcIntervalMs: 0,
    ...volumeExtra,
  });
  const follower = new Follower(volume, {
    store: new RetryingStore(store, { clock, attemptsMax: 3 }),
    prefix: "",
    clock,
    log,
    intervalMs: 3600_000, // tests poll by hand
    ...extra,
  });
  await follower.start();
  return { volume, follower, lines };
}

/** Equal bytes (assert.deepEqual would spend minutes describing a 1 MiB difference). */
function assertSame(actual: Uint8Array, expected: Uint8Array, message: string): void {
  assert.equal(actual.length, expected.length, message);
  const at = actual.findIndex((b, i) => b !== expected[i]);
  assert.equal(at, -1, `${message}: first difference at byte ${at}`);
}

async function readDisk(v: Volume): Promise<Uint8Array> {
  const dest = new Uint8Array(SECTORS * SECTOR);
  await v.read(0, dest);
  return dest;
}

/** Overwrites the disk in random 1-4 sector writes naming the round, flushing every 16 writes. */
async function overwrite(v: Volume, model: Uint8Array, round: number, rand: () => number): Promise<void> {
  for (let i = 0; i < SECTORS; i++) {
    const n = 1 + Math.floor(rand() * 4);
    const at = Math.floor(rand() * (SECTORS - n));
    const data = new Uint8Array(n * SECTOR).fill(round);
    for (let k = 0; k < n; k++) data[k * SECTOR] = (at + k) & 0xff;
    await v.write(at * SECTOR, data);
    model.set(data, at * SECTOR);
    if (i % 16 === 15) await v.flush();
  }
  await v.flush();
}

Deno.test("Follower.poll() applies the writer's new objects in order and waits at a gap", async () => {
  const clock = new ManualClock();
  const store = new MemoryStore({ clock });
  const rand = seededRandom(3);
  const w = await open(store, clock);
  const model = new Uint8Array(SECTORS * SECTOR);
  await overwrite(w, model, 1, rand);
  const f = await follow(store, clock);
  assertSame(await readDisk(f.volume), model, "the follower caught up");
  await overwrite(w, model, 2, rand);
  const atRound2 = model.slice();
  const through = w.stats.lastSequence;
  await f.follower.poll();
  assert.equal(f.follower.stats.appliedSequence, through);
  assertSame(await readDisk(f.volume), atRound2, "the follower serves the writer's newest state");
  // Object through+1 goes missing (an upload in flight): the follower stops before it.
  await overwrite(w, model, 3, rand);
  const hidden = logKey("", through + 1);
  const body = store.rawGet(hidden)!;
  store.rawDelete(hidden);
  await f.follower.poll();
  assert.equal(f.follower.stats.appliedSequence, through, "nothing after a gap is applied");
  assert(f.follower.stats.behindObjects > 0);
  assertSame(await readDisk(f.volume), atRound2, "a gap held the follower back");
  store.rawPut(hidden, body);
  await f.follower.poll();
  assert.equal(f.follower.stats.appliedSequence, w.stats.lastSequence);
  assertSame(await readDisk(f.volume), model, "the follower caught up");
  await f.follower.stop();
  await w.close();
});

Deno.test("Follower: the writer's GC keeps what a live follower pin's map reads; without a pin a read that finds its object deleted loads anew", async () => {
  const clock = new ManualClock();
  const store = new MemoryStore({ clock });
  const rand = seededRandom(4);
  const w = await open(store, clock);
  const model = new Uint8Array(SECTORS * SECTOR);
  await overwrite(w, model, 1, rand);
  const pinned = await follow(store, clock);
  const unpinned = await follow(store, clock, { pin: false });
  const pins = await readSnapshots(store, await listLogState(store, ""));
  assert.equal(pins.filter((s) => s.follower === true).length, 1, "one follower pin");
  // The pinned follower moves on past its pin's point (the pin is rewritten only every pinEveryMs).
  await overwrite(w, model, 2, rand);
  await pinned.follower.poll();
  const atRound2 = model.slice();
  assert(pinned.follower.stats.appliedSequence > pins[0]!.sequence);
  for (let round = 3; round <= 3; round++) await overwrite(w, model, round, rand);
  clock.advance(1000);
  assert((await w.collectGarbage()).deletedObjects > 0, "the pass deleted nothing");
  // The pinned follower still reads its point exactly, from objects GC kept for the pin: every
  // point from the pin's on (the unpinned one, at the pin's point, is covered too).
  assertSame(await readDisk(pinned.volume), atRound2, "GC deleted what a pinned follower reads");
  assert.equal(pinned.follower.stats.reloads, 0);
  await pinned.follower.stop(); // its pin goes: nothing holds the point any more
  clock.advance(1000);
  assert((await w.collectGarbage()).deletedObjects > 0, "the second pass deleted nothing");
  // The unpinned one lost objects: its read loads the log anew and serves the newest state.
  assertSame(await readDisk(unpinned.volume), model, "after loading anew the follower serves the head");
  assert.equal(unpinned.follower.stats.reloads, 1);
  assert(
    unpinned.lines.some((l) =>
      /^Loading the log anew at object \d+: a read found its object deleted/.test(l)
    ),
    unpinned.lines.join("\n"),
  );
  await unpinned.follower.stop();
  await w.close();
});

Deno.test("Follower: the writer's GC packs while a follower runs; a copy's sources stay until the follower's pin passes the copy", async () => {
  const clock = new ManualClock();
  const store = new MemoryStore({ clock });
  const rand = seededRandom(6);
  const w = await open(store, clock);
  const model = new Uint8Array(SECTORS * SECTOR);
  await overwrite(w, model, 1, rand); // flushes every 16 writes: small and sparse objects to pack
  const f = await follow(store, clock, { pinEveryMs: 1000 });
  await overwrite(w, model, 2, rand);
  await f.follower.poll();
  const seen = model.slice(); // what the follower serves until it polls again
  clock.advance(1000);
  const first = await w.collectGarbage();
  assert(first.copiedObjects > 0, `GC moved nothing while a follower ran: ${JSON.stringify(first)}`);
  assert(first.kept > 0, "no copy source was kept for the follower");
  // The follower has not applied the copies: it reads their sources, which the pass kept.
  assertSame(await readDisk(f.volume), seen, "GC deleted what the follower reads");
  // It applies the copies, and its pin passes them (a rewrite pins the point of the previous one).
  for (let i = 0; i < 2; i++) {
    clock.advance(1000);
    await f.follower.poll();
  }
  const pins = await readSnapshots(store, await listLogState(store, ""));
  assert(pins.some((s) => s.follower === true && s.sequence >= w.stats.lastSequence));
  const second = await w.collectGarbage();
  assert(
    second.deletedObjects > 0,
    `the sources were not deleted once the pin passed: ${JSON.stringify(second)}`,
  );
  assertSame(await readDisk(f.volume), model, "the follower serves the head from the copies");
  assertSame(await readDisk(w), model, "the writer reads the head");
  assert.equal(f.follower.stats.reloads, 0, f.lines.join("\n"));
  await f.follower.stop();
  await w.close();
});

Deno.test("Follower: after a rollback of the source it loads the log anew and says so, its disk cache checked again", async () => {
  const clock = new ManualClock();
  const store = new MemoryStore({ clock });
  const rand = seededRandom(5);
  let w = await open(store, clock);
  const model = new Uint8Array(SECTORS * SECTOR);
  await overwrite(w, model, 1, rand);
  const point = w.stats.lastSequence;
  const atPoint = model.slice();
  await overwrite(w, model, 2, rand);
  // A disk cache and no memory cache (so no CRC table is kept): the follower's first read fills the
  // disk cache with sectors checked in this run, which the numbers reused after the rollback must
  // not be answered from.
  const cacheDir = Deno.makeTempDirSync();
  const diskCache = DiskCache.open({
    dir: cacheDir,
    sizeBytes: 4 << 20,
    identity: "follower",
    log: silentLogger,
  });
  const f = await follow(store, clock, { pin: false }, { diskCache, cacheBytesMax: 0 });
  assertSame(await readDisk(f.volume), model, "the follower before the rollback");
  assertSame(await readDisk(f.volume), model, "the follower before the rollback, from the disk cache");
  assert(diskCache.counters.hits > 0, JSON.stringify(diskCache.counters));
  await w.close();
  await rollbackLog(store, await listLogState(store, ""), point, {
    log: silentLogger,
    archiveId: "rb",
    writerEpoch: 50,
    wallNowMs: clock.wallMs(),
  });
  w = await open(store, clock);
  model.set(atPoint);
  // New writes give the numbers the follower applied (and its disk cache holds, checked) new bytes;
  // one round, so the map still names most of those numbers.
  await overwrite(w, model, 3, rand);
  await f.follower.poll();
  await f.follower.poll();
  assert(
    f.lines.some((l) => /^Loading the log anew at object \d+: object \d+ (was replaced|is gone)/.test(l)),
    f.lines.join("\n"),
  );
  assertSame(await readDisk(f.volume), model, "the follower caught up");
  await f.follower.stop();
  await w.close();
  diskCache.close();
  Deno.removeSync(cacheDir, { recursive: true });
});
