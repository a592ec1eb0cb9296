/**
 * Group commit through the real Volume on a manual clock and a memory store with a fixed 20 ms
 * PUT latency: FLUSHes that arrive while commits are uploading share the next object, none is
 * acknowledged before its writes are stored, and none starves under constant writes.
 */

import assert from "node:assert/strict";
import { MemoryStore } from "../store/memory.ts";
import { logKey } from "../format/keys.ts";
import { ManualClock } from "../util/clock.ts";
import { silentLogger } from "../util/log.ts";
import { type FlushPolicy, Volume, type VolumeOptions } from "./volume.ts";

const SECTOR = 4096;

async function settle(): Promise<void> {
  for (let i = 0; i < 40; i++) await Promise.resolve();
}

/** Advances the clock 1 ms at a time until p settles (or limitMs passes); returns the ms taken. */
async function drive(clock: ManualClock, p: Promise<unknown>, limitMs = 10_000): Promise<number> {
  let done = false;
  p.then(() => (done = true), () => (done = true));
  let ms = 0;
  for (; ms < limitMs && !done; ms++) {
    clock.advance(1);
    await settle();
  }
  if (!done) throw new Error(`did not settle within ${limitMs} simulated ms`);
  await p;
  return ms;
}

/** A volume on a manual clock whose store answers every call after exactly 20 ms. */
async function openTimed(policy: FlushPolicy, extra: Partial<VolumeOptions> = {}) {
  const clock = new ManualClock();
  const store = new MemoryStore({ clock, latencyMs: { min: 20, max: 20 } });
  const opening = Volume.open({
    store,
    clock,
    log: silentLogger,
    sizeBytes: 1024 * SECTOR,
    sealDelayMs: 10_000,
    flushPolicy: policy,
    commitsInFlightMax: 1,
    checkpointEveryObjects: 0,
    ...extra,
  });
  await drive(clock, opening);
  return { clock, store, v: await opening };
}

/** 1 + n committers: the first starts a commit, n more write and flush while it uploads. */
async function commitBurst(policy: FlushPolicy, n: number) {
  const { clock, store, v } = await openTimed(policy);
  const before = store.keys("0").length;
  const early: string[] = [];
  const flushes: Promise<void>[] = [];
  for (let i = 0; i <= n; i++) {
    await v.write(i * SECTOR, new Uint8Array(SECTOR).fill(i + 1));
    const target = v.stats.lastSequence + 1; // the object this write will be sealed into
    flushes.push(
      v.flush().then(() => {
        if (!store.keys("0").includes(logKey("", target))) early.push(`flush ${i} before object ${target}`);
      }),
    );
  }
  const ms = await drive(clock, Promise.all(flushes));
  const objects = store.keys("0").length - before;
  for (let i = 0; i <= n; i++) {
    const dest = new Uint8Array(SECTOR);
    await drive(clock, v.read(i * SECTOR, dest));
    assert.equal(dest[0], i + 1);
  }
  await drive(clock, v.close());
  return { objects, early, ms };
}

Deno.test("LogWriter group commit: FLUSHes arriving during a commit share the next object", async () => {
  const group = await commitBurst("group", 15);
  const each = await commitBurst("each", 15);
  assert.deepEqual(group.early, [], "no FLUSH is acknowledged before its object is stored");
  assert.deepEqual(each.early, []);
  assert.equal(each.objects, 16, "today's policy seals one object per FLUSH");
  assert.equal(group.objects, 2, "the first commit, then one shared by the 15 that waited");
  assert.ok(group.ms <= 45, `two commit round trips, took ${group.ms} ms`);
});

Deno.test("LogWriter group commit: a FLUSH under constant writes completes within two commits", async () => {
  const { clock, v } = await openTimed("group", { sizeBytes: 4096 * SECTOR, objectBytesMax: 64 * SECTOR });
  // A writer that never pauses: one 4 KiB write every simulated millisecond, with FLUSHes of its own;
  // at 30 ms one more FLUSH is measured.
  let started = -1, acked = -1;
  for (let i = 0; i < 300 && acked < 0; i++) {
    await v.write((i % 4096) * SECTOR, new Uint8Array(SECTOR).fill(i & 0xff));
    if (i % 3 === 0) void v.flush();
    if (i === 30) {
      started = clock.nowMs();
      void v.flush().then(() => (acked = clock.nowMs()));
    }
    clock.advance(1);
    await settle();
  }
  assert.ok(acked >= 0 && acked - started <= 60, `FLUSH took ${acked - started} ms under constant writes`);
  await drive(clock, v.close());
});

Deno.test("Volume.startWrite() takes a write at once while the dirty budget has room, else waits in order", async () => {
  const { clock, v } = await openTimed("group", { objectBytesMax: 4 * SECTOR, dirtyBytesMax: 8 * SECTOR });
  const sector = (n: number) => new Uint8Array(SECTOR).fill(n);
  const payload = sector(1);
  assert.equal(v.startWrite(0, payload), undefined, "room: done at once");
  payload.fill(9); // the caller may reuse its buffer at once: the volume kept a copy
  const first = new Uint8Array(SECTOR);
  await drive(clock, v.read(0, first));
  assert.equal(first[0], 1);
  const fua = v.startWrite(SECTOR, sector(2), { fua: true });
  assert.ok(fua instanceof Promise, "a FUA write waits for its flush");
  await drive(clock, fua);
  const waiting: Promise<void>[] = [];
  for (let n = 3; n < 40; n++) {
    const started = v.startWrite(n * SECTOR, sector(n));
    if (started !== undefined) waiting.push(started);
  }
  assert.ok(waiting.length > 0, "a full budget makes writers wait");
  const late = v.startWrite(0, sector(1));
  assert.ok(late instanceof Promise, "a write after a waiting one queues behind it, even if it would fit");
  waiting.push(late);
  await drive(clock, Promise.all(waiting));
  await drive(clock, v.flush());
  const back = new Uint8Array(40 * SECTOR);
  await drive(clock, v.read(0, back));
  for (let n = 0; n < 40; n++) {
    const expected = n === 0 ? 1 : n === 1 ? 2 : n === 2 ? 0 : n; // sector 2 was never written
    assert.equal(back[n * SECTOR], expected, `sector ${n}`);
  }
  await drive(clock, v.close());
});

Deno.test("LogWriter: once every object is stored, the open object lets go of what a burst filled", async () => {
  const { clock, v } = await openTimed("group", { objectBytesMax: 16 * SECTOR, dirtyBytesMax: 64 * SECTOR });
  for (let n = 0; n < 64; n++) await drive(clock, v.write(n * SECTOR, new Uint8Array(SECTOR).fill(n + 1)));
  assert.ok(v.stats.writeBufferBytes > 0, "writing: staging and spare bodies held");
  await drive(clock, v.flush());
  assert.equal(v.stats.writeBufferBytes, 0, "idle after the burst: nothing held");
  await drive(clock, v.write(0, new Uint8Array(SECTOR).fill(99)));
  await drive(clock, v.flush());
  assert.equal(v.stats.writeBufferBytes, 16 * SECTOR, "a small commit keeps its staging");
  const back = new Uint8Array(64 * SECTOR);
  await drive(clock, v.read(0, back));
  for (let n = 0; n < 64; n++) assert.equal(back[n * SECTOR], n === 0 ? 99 : n + 1, `sector ${n}`);
  await drive(clock, v.close());
});
