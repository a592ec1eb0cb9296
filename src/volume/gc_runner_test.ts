import assert from "node:assert/strict";
import { MemoryStore } from "../store/memory.ts";
import { ManualClock } from "../util/clock.ts";
import { silentLogger } from "../util/log.ts";
import { seededRandom } from "../util/random.ts";
import { Volume, type VolumeOptions } from "./volume.ts";
import { createSnapshot } from "../log/snapshots.ts";
import { listLogState } from "../log/log_state.ts";
import { rollbackLog } from "../log/rollback.ts";
import { isLsvdError } from "../util/errors.ts";
import { dryRunRound } from "../cli/gc.ts";
import { VolumeSecret } from "../crypto/sector_cipher.ts";
import { cipherOf } from "../log/volume_encryption.ts";
import { claimedTrailerBytes, decodeTrailer, FLAG_COPIED } from "../format/object.ts";

const SECTOR = 4096;
const SECTORS = 256; // a 1 MiB disk
const HOUR = 3600_000;

function open(store: MemoryStore, clock: ManualClock, extra: Partial<VolumeOptions> = {}): Promise<Volume> {
  return Volume.open({
    store,
    clock,
    log: silentLogger,
    sizeBytes: SECTORS * SECTOR,
    objectBytesMax: 16 * SECTOR,
    checkpointEveryObjects: 0,
    retentionMs: HOUR,
    ...extra,
  });
}

async function readDisk(v: Volume): Promise<Uint8Array> {
  const dest = new Uint8Array(SECTORS * SECTOR);
  await v.read(0, dest);
  return dest;
}

function bucketBytes(store: MemoryStore): number {
  return store.keys().filter((k) => /^[0-9a-f]{16}$/.test(k)).reduce(
    (n, k) => n + store.rawGet(k)!.length,
    0,
  );
}

/** Overwrites the first `sectors` of the disk in random 1-4 sector writes with bytes naming the round; returns the disk image. */
async function overwrite(
  v: Volume,
  model: Uint8Array,
  round: number,
  rand: () => number,
  sectors = SECTORS,
): Promise<void> {
  for (let i = 0; i < SECTORS; i++) {
    const n = 1 + Math.floor(rand() * 4);
    const at = Math.floor(rand() * (sectors - n));
    const data = new Uint8Array(n * SECTOR).fill(round);
    for (let k = 0; k < n; k++) data[k * SECTOR] = (at + k) & 0xff;
    await v.write(at * SECTOR, data);
    model.set(data, at * SECTOR);
  }
  await v.flush();
}

Deno.test("GcRunner: after the window, dead objects go, live data moves, every kept point reads back", async () => {
  const clock = new ManualClock();
  const store = new MemoryStore({ clock });
  const rand = seededRandom(7);
  let v = await open(store, clock);
  const models: { sequence: number; image: Uint8Array }[] = [];
  const model = new Uint8Array(SECTORS * SECTOR);
  for (let round = 1; round <= 5; round++) {
    await overwrite(v, model, round, rand);
    models.push({ sequence: v.stats.lastSequence, image: model.slice() });
    clock.advance(20 * 60_000); // 20 minutes per round
  }
  await createSnapshot(
    store,
    "",
    { version: 1, name: "first", sequence: models[0]!.sequence, createdMs: clock.wallMs() },
  );
  const before = bucketBytes(store);
  const result = await v.collectGarbage();
  assert(
    result.pass !== undefined && result.deletedObjects > 0,
    `nothing collected: ${JSON.stringify(result)}`,
  );
  assert(bucketBytes(store) < before, "bucket did not shrink");
  assert.deepEqual(await readDisk(v), model, "head after the pass");
  await v.close();
  // The head, every point inside the window and the snapshot read back exactly after a restart.
  v = await open(store, clock);
  assert.deepEqual(await readDisk(v), model, "head after restart");
  await v.close();
  for (const m of models.filter((x) => x.sequence >= result.retainedFrom || x === models[0])) {
    const at = await open(store, clock, { readOnly: true, atSequence: m.sequence });
    assert.deepEqual(await readDisk(at), m.image, `point ${m.sequence}`);
    await at.close();
  }
  // A point the pass gave up is refused, not served wrong.
  const gone = models[1]!.sequence;
  if (gone < result.retainedFrom) {
    await assert.rejects(open(store, clock, { readOnly: true, atSequence: gone }), /older points are gone/);
  }
});

Deno.test("lsvd gc --dry-run plans exactly the daemon's next pass on the same bucket state", async () => {
  const clock = new ManualClock();
  const store = new MemoryStore({ clock });
  const rand = seededRandom(11);
  const v = await open(store, clock);
  const model = new Uint8Array(SECTORS * SECTOR);
  const points: number[] = [];
  // Full objects that stay live (not sparse, smaller than the 1 MiB default "small"), then garbage.
  await v.write(0, new Uint8Array(SECTORS * SECTOR).fill(9));
  await v.flush();
  model.fill(9);
  for (let round = 1; round <= 4; round++) {
    await overwrite(v, model, round, rand, SECTORS / 4);
    points.push(v.stats.lastSequence);
    clock.advance(30 * 60_000);
  }
  const snapshot = { version: 1, createdMs: clock.wallMs() };
  await createSnapshot(store, "", { ...snapshot, name: "kept", sequence: points[0]! });
  let planned = 0;
  for (let pass = 1; pass <= 3; pass++) {
    const state = await listLogState(store, "");
    const { round } = await dryRunRound(store, state, {
      retentionMs: HOUR,
      objectBytes: 16 * SECTOR,
      wallNowMs: clock.wallMs(),
      log: silentLogger,
    });
    const result = await v.collectGarbage();
    assert.equal(result.retainedFrom, round.pmin, `pass ${pass}: Pmin`);
    assert.deepEqual(result.planned, round.plan.map((c) => c.object.sequence), `pass ${pass}: plan`);
    planned += result.planned.length;
    await overwrite(v, model, 10 + pass, rand, SECTORS / 4);
    clock.advance(40 * 60_000);
  }
  assert(planned > 0, "no pass planned anything");
  await v.close();
});

Deno.test("GcRunner: repeated passes keep bucket bytes near live bytes on random overwrites", async () => {
  const clock = new ManualClock();
  const store = new MemoryStore({ clock });
  const rand = seededRandom(3);
  const v = await open(store, clock, { retentionMs: 0 });
  const model = new Uint8Array(SECTORS * SECTOR);
  let clientBytes = 0, copiedBytes = 0;
  for (let round = 1; round <= 8; round++) {
    await overwrite(v, model, round, rand);
    clientBytes += SECTORS * SECTOR;
    clock.advance(1000);
    for (let i = 0; i < 3; i++) copiedBytes += (await v.collectGarbage()).copiedBytes;
  }
  assert.deepEqual(await readDisk(v), model);
  const ratio = bucketBytes(store) / (SECTORS * SECTOR);
  console.log(
    `bucket ${ratio.toFixed(2)} × disk, write amplification ${(copiedBytes / clientBytes).toFixed(2)}`,
  );
  assert(ratio < 1.6, `bucket holds ${ratio.toFixed(2)} × the disk`);
  assert(copiedBytes / clientBytes <= 1.5, `write amplification ${(copiedBytes / clientBytes).toFixed(2)}`);
  await v.close();
});

Deno.test("GcRunner: damaged live data is never copied (which would give it fresh CRCs); the pass fails as data", async () => {
  const clock = new ManualClock();
  const store = new MemoryStore({ clock });
  const rand = seededRandom(11);
  // Objects over 64 KiB: recovery and GC read their header and trailer, not the whole object.
  const large = { objectBytesMax: 32 * SECTOR };
  const v = await open(store, clock, large);
  const model = new Uint8Array(SECTORS * SECTOR);
  for (let round = 1; round <= 4; round++) {
    await overwrite(v, model, round, rand);
    clock.advance(40 * 60_000);
  }
  await v.close();
  const logKeys = store.keys().filter((k) => /^[0-9a-f]{16}$/.test(k));
  for (const key of logKeys) { // a flipped byte in every data sector of every large object
    const bytes = store.rawGet(key)!;
    if (bytes.length <= 64 * 1024) continue; // small objects are read whole, whole-CRC checked
    for (let at = 12288 + 100; at < bytes.length - 200; at += SECTOR) bytes[at]! ^= 1;
    store.rawPut(key, bytes);
  }
  const damaged = await open(store, clock, large);

  await assert.rejects(
    damaged.collectGarbage(),
    (e) => isLsvdError(e, "data") && /do not match their CRC-32/.test(e.message),
  );
  assert.deepEqual(
    store.keys().filter((k) => /^[0-9a-f]{16}$/.test(k)),
    logKeys,
    "nothing copied or deleted",
  );
  damaged.abandon();
});

Deno.test("Volume.open() refuses a log whose object below the collected range was deleted by hand", async () => {
  const clock = new ManualClock();
  const store = new MemoryStore({ clock });
  const rand = seededRandom(11);
  const v = await open(store, clock, { retentionMs: 0 });
  const model = new Uint8Array(SECTORS * SECTOR);
  for (let round = 1; round <= 3; round++) await overwrite(v, model, round, rand);
  clock.advance(1000);
  const result = await v.collectGarbage();
  assert(result.deletedObjects > 0);
  await v.close();
  const log = store.keys().filter((k) => /^[0-9a-f]{16}$/.test(k));
  const highest = Math.max(...(await collectedNumbers(store)));
  const victim = log.find((k) => parseInt(k, 16) < highest);
  assert(victim !== undefined, "no object below the collected range to delete");
  await store.delete(victim);
  await assert.rejects(open(store, clock), /is missing but garbage collection did not delete it/);
  await assert.rejects(
    open(store, clock, { readOnly: true }),
    /is missing but garbage collection did not delete it/,
  );
});

async function collectedNumbers(store: MemoryStore): Promise<number[]> {
  const state = await listLogState(store, "");
  return (state.collectedRecord?.collected ?? []).flatMap(([a, b]) =>
    Array.from({ length: b - a + 1 }, (_, i) => a + i)
  );
}

/** The rescue story, on a plain or (with a key) an encrypted volume. */
async function rescueStory(key: VolumeSecret | undefined): Promise<MemoryStore> {
  const clock = new ManualClock();
  const store = new MemoryStore({ clock });
  const rand = seededRandom(5);
  const keyed = key === undefined ? {} : { encryptionKey: key };
  let v = await open(store, clock, { retentionMs: 0, ...keyed });
  const model = new Uint8Array(SECTORS * SECTOR);
  for (let round = 1; round <= 3; round++) await overwrite(v, model, round, rand);
  const point = v.stats.lastSequence;
  const atPoint = model.slice();
  clock.advance(1000);
  const pass = await v.collectGarbage();
  assert(pass.copiedObjects > 0, "the pass made no copies to rescue from");
  await overwrite(v, model, 9, rand);
  await v.close();
  let checks = 0;
  const state = await listLogState(store, "");
  const options = {
    cipher: cipherOf(state.format, key, ""),
    log: silentLogger,
    archiveId: "rb1",
    writerEpoch: 99,
    wallNowMs: clock.wallMs(),
    check: () => {
      if (++checks === 2) throw new Error("crash after the rollback was marked");
    },
  };
  await assert.rejects(
    rollbackLog(store, await listLogState(store, ""), point, options),
    /crash after/,
  );
  await assert.rejects(open(store, clock, keyed), /rollback to object \d+ is half done/);
  const done = await rollbackLog(store, await listLogState(store, ""), point, {
    ...options,
    check: () => {},
  });
  assert(done.rescuedSectors > 0, "nothing was rescued");
  v = await open(store, clock, keyed);
  assert.deepEqual(await readDisk(v), atPoint, "the disk after the rollback is the point's");
  await v.close();
  return store;
}

Deno.test("rollbackLog() rescues data GC moved after the point, refuses loads while half done, and resumes", async () => {
  await rescueStory(undefined);
});

Deno.test("rollbackLog() on an encrypted volume decrypts the rescued data and stores the rescue encrypted", async () => {
  const store = await rescueStory(new VolumeSecret(new Uint8Array(32).fill(7), "a test"));
  const objects = store.keys().filter((k) => /^[0-9a-f]{16}$/.test(k)).map((k) => store.rawGet(k)!);
  const copies = objects.filter((b) =>
    (decodeTrailer(b.subarray(b.length - claimedTrailerBytes(b))).flags & FLAG_COPIED) !== 0
  );
  assert(copies.length > 0, "the rescue object (and GC's copies) are COPIED objects");
  for (const b of objects) {
    const t = decodeTrailer(b.subarray(b.length - claimedTrailerBytes(b)));
    assert(
      t.sectorCrcs!.length === 0 || t.sectorCrcs!.seal !== undefined,
      `object ${t.sequence} is not encrypted`,
    );
  }
});
