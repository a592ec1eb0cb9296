/**
 * @module
 * Clones in the seeded simulation: at a point the source keeps, a clone is made, written, crashed
 * (abandoned with uploads in flight) and reopened, while the source collects garbage; then it is
 * flattened, with a crash half way in some seeds, and the pin released. At every step the clone
 * must read exactly what a copy made at the branch point plus its own durable writes would read:
 * the shadow replay of the source's objects up to the point, then the clone's writes.
 */

import type { MemoryStore } from "../../src/store/memory.ts";
import { RetryingStore } from "../../src/store/retry.ts";
import type { ManualClock } from "../../src/util/clock.ts";
import { Volume } from "../../src/volume/volume.ts";
import { createClone, finishFlatten } from "../../src/log/clone.ts";
import { readFormatRecord } from "../../src/log/format_record.ts";
import { assertSameDisk, type Shadow } from "./retained.ts";
import type { VolumeSecret } from "../../src/crypto/sector_cipher.ts";

const SECTOR = 4096;

export interface CloneRun {
  store: MemoryStore;
  shadow: Shadow;
  clock: ManualClock;
  sectors: number;
  /** The source's point to branch at (one the store keeps). */
  point: number;
  rand: () => number;
  context: string;
  /** Runs the clock until p settles. */
  pump<T>(p: Promise<T>): Promise<T>;
  readAll(volume: Volume, context: string): Promise<Uint8Array>;
  /** One garbage-collection pass of the source. */
  gc(): Promise<unknown>;
  sectorBytes(id: number, sector: number): Uint8Array;
  /** Turns damaged GET answers off (true) or back on (false), nested: opens and tools read clean, as recovery does. */
  cleanReads(clean: boolean): void;
  /** An encrypted source's key: the clone is encrypted with it (its own salt) and opened with it. */
  secret?: VolumeSecret | undefined;
}

async function openClone(run: CloneRun, prefix: string): Promise<Volume> {
  run.cleanReads(true);
  const opening = run.pump(Volume.open({
    store: run.store,
    clock: run.clock,
    prefix,
    log: () => {},
    objectBytesMax: 8 * SECTOR,
    sealDelayMs: 20,
    uploadsMax: 4,
    uploadAttemptsMax: 1000,
    cacheBytesMax: 0,
    checkpointEveryObjects: 3,
    leaseMode: "takeover",
    leaseDurationMs: 3000,
    ...(run.secret === undefined ? {} : { encryptionKey: run.secret }),
  }));
  try {
    return await opening;
  } finally {
    run.cleanReads(false);
  }
}

/** Writes a few random runs of sectors (ids from 9,000,000 up, apart from the source's) and flushes. */
async function writeSome(run: CloneRun, volume: Volume, image: Uint8Array, firstId: number): Promise<void> {
  for (let i = 0; i < 4; i++) {
    const count = 1 + Math.floor(run.rand() * 4);
    const first = Math.floor(run.rand() * (run.sectors - count + 1));
    const data = new Uint8Array(count * SECTOR);
    for (let k = 0; k < count; k++) data.set(run.sectorBytes(firstId + i, first + k), k * SECTOR);
    await run.pump(volume.write(first * SECTOR, data));
    image.set(data, first * SECTOR);
  }
  await run.pump(volume.flush());
}

/** One clone's life; returns the number of flatten attempts a crash cut short. */
export async function cloneLife(run: CloneRun, name: string): Promise<number> {
  const retried = new RetryingStore(run.store, { clock: run.clock, attemptsMax: 1000 });
  const prefix = `${name}/`;
  const ctx = `${run.context}, clone ${name} at ${run.point}`;
  run.cleanReads(true);
  await run.pump(createClone(retried, {
    source: "",
    target: prefix,
    point: { kind: "sequence", sequence: run.point, text: String(run.point) },
    wallNowMs: run.clock.wallMs(),
    secret: run.secret,
  }));
  run.cleanReads(false);
  const image = run.shadow.stateAt(run.point, run.sectors);
  let clone = await openClone(run, prefix);
  assertSameDisk(await run.readAll(clone, ctx), image, `${ctx}, made`);
  await writeSome(run, clone, image, 9_000_000);
  // A crash with writes in flight: only the flushed ones are promised.
  clone.abandon();
  await run.pump(run.gc()).catch(() => {});
  clone = await openClone(run, prefix);
  assertSameDisk(await run.readAll(clone, ctx), image, `${ctx}, after a crash and a source GC pass`);
  await writeSome(run, clone, image, 9_100_000);
  let cut = 0;
  run.cleanReads(true); // flatten fails on damage it cannot retry away, as it should: not tested here
  if (run.rand() < 0.5) {
    // Flatten cut short by a crash part way; the next run copies what is left.
    const half = clone.copyFromParents((done, total) => {
      if (done * 2 >= total) clone.abandon();
    });
    await run.pump(half).catch(() => {});
    clone.abandon();
    cut++;
    clone = await openClone(run, prefix);
  }
  const through = await run.pump(clone.copyFromParents());
  await run.pump(clone.close());
  const record = (await run.pump(readFormatRecord(run.store, prefix)))!;
  await run.pump(finishFlatten(retried, prefix, record, through));
  run.cleanReads(false);
  clone = await openClone(run, prefix);
  assertSameDisk(await run.readAll(clone, ctx), image, `${ctx}, flattened`);
  if (clone.parentBytes !== 0) throw new Error(`${ctx}: a flattened clone still reads its source`);
  await run.pump(clone.close());
  return cut;
}
