import assert from "node:assert/strict";
import { archiveKey, logKey } from "../format/keys.ts";
import { RetryingStore } from "../store/retry.ts";
import { ObjectBuilder } from "../format/object.ts";
import { readObjectSummary } from "./object_reader.ts";
import { MemoryStore } from "../store/memory.ts";
import type { Clock } from "../util/clock.ts";
import { closeWindow, type FenceOptions } from "./fence.ts";

/** An old writer's object: one 4 KiB entry, its epoch in the trailer. */
function oldObject(sequence: number, epoch: number): Uint8Array {
  const builder = new ObjectBuilder({ dataBytes: 4096, zeroRanges: 0 });
  builder.addEntry(0, 4096).fill(sequence);
  return builder.finish({ sequence, writerEpoch: epoch, volumeSizeBytes: 1 << 20, sealTimeMs: 0 });
}

function options(extra: Partial<FenceOptions>): FenceOptions {
  return {
    prefix: "v/",
    epoch: 2,
    afterSequence: 0,
    afterEpoch: 0,
    windowObjects: 4,
    volumeSizeBytes: 1 << 20,
    sealTimeMs: 0,
    recoveryId: "r1",
    log: () => {},
    ...extra,
  };
}

async function epochAt(store: MemoryStore, sequence: number): Promise<number | undefined> {
  const key = logKey("v/", sequence);
  const bytes = store.rawGet(key);
  if (bytes === undefined) return undefined;
  const summary = await readObjectSummary(store, { sequence, key, sizeBytes: bytes.length });
  return summary.trailer?.writerEpoch;
}

function epochsAt(store: MemoryStore, sequences: number[]): Promise<(number | undefined)[]> {
  return Promise.all(sequences.map((s) => epochAt(store, s)));
}

Deno.test("closeWindow() accepts objects that landed after loading and fences the window after them", async () => {
  const store = new MemoryStore();
  for (const s of [1, 2, 3, 4]) store.rawPut(logKey("v/", s), oldObject(s, 1));
  const result = await closeWindow(store, options({ afterSequence: 2, afterEpoch: 1 }));
  assert.deepEqual(result, { fenceSequence: 5, lastSequence: 8, accepted: 2, zombies: 0, leftEpoch: 1 });
  assert.deepEqual(await epochsAt(store, [1, 2, 3, 4, 5, 6, 7, 8]), [1, 1, 1, 1, 2, 2, 2, 2]);
  assert.equal(await epochAt(store, 9), undefined);
});

Deno.test("closeWindow() archives an upload that landed beyond a gap and fences its slot", async () => {
  const store = new MemoryStore();
  for (const s of [1, 2, 3, 5, 7]) store.rawPut(logKey("v/", s), oldObject(s, 1));
  const result = await closeWindow(store, options({ afterSequence: 3, afterEpoch: 1 }));
  assert.deepEqual(result, { fenceSequence: 4, lastSequence: 7, accepted: 0, zombies: 2, leftEpoch: 1 });
  assert.deepEqual(await epochsAt(store, [4, 5, 6, 7]), [2, 2, 2, 2]);
  assert.deepEqual(store.rawGet(archiveKey("v/", "r1-fence", 5)), oldObject(5, 1));
  assert.deepEqual(store.rawGet(archiveKey("v/", "r1-fence", 7)), oldObject(7, 1));
  // The old writer's retry of object 5 now fails: its slot is taken.
  await assert.rejects(store.put(logKey("v/", 5), oldObject(5, 1), { ifNoneMatch: true }));
});

Deno.test("closeWindow() archives a zombie right after the loaded log (an epoch lower than its predecessor's)", async () => {
  const store = new MemoryStore();
  store.rawPut(logKey("v/", 1), oldObject(1, 3));
  store.rawPut(logKey("v/", 2), oldObject(2, 1));
  const result = await closeWindow(
    store,
    options({ epoch: 4, afterSequence: 1, afterEpoch: 3, windowObjects: 2 }),
  );
  assert.deepEqual(result, { fenceSequence: 2, lastSequence: 3, accepted: 0, zombies: 1, leftEpoch: 3 });
  assert.deepEqual(await epochsAt(store, [1, 2, 3]), [3, 4, 4]);
});

Deno.test("closeWindow() fails as fenced when a newer epoch already holds a slot", async () => {
  const store = new MemoryStore();
  store.rawPut(logKey("v/", 1), oldObject(1, 1));
  store.rawPut(logKey("v/", 3), oldObject(3, 5));
  await assert.rejects(
    closeWindow(store, options({ afterSequence: 1, afterEpoch: 1 })),
    /object "v\/0000000000000003" carries epoch 5, newer than ours \(2\)/,
  );
});

Deno.test("closeWindow() on a store with faults still leaves every slot holding our fence", async () => {
  // Retries back off on a clock that never waits: the faults, not time, are under test.
  const clock: Clock = {
    nowMs: () => 0,
    wallMs: () => 0,
    sleep: () => Promise.resolve(),
    setTimer: () => ({ cancel() {} }),
  };
  const store = new MemoryStore({ seed: 3, errorRate: 0.3, landedErrorRate: 0.5 });
  store.rawPut(logKey("v/", 1), oldObject(1, 1));
  store.rawPut(logKey("v/", 4), oldObject(4, 1));
  const result = await closeWindow(
    new RetryingStore(store, { clock, attemptsMax: 100 }),
    options({ afterSequence: 1, afterEpoch: 1, windowObjects: 8 }),
  );
  assert.equal(result.fenceSequence, 2);
  store.setFaults({ errorRate: 0 });
  for (let s = 2; s <= 9; s++) assert.equal(await epochAt(store, s), 2, `slot ${s}`);
});
