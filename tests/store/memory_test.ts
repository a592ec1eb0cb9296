/**
 * @module
 * MemoryStore: the conformance suite without faults, then the fault injection the simulation
 * relies on (seeded errors, latency on the injected clock, crashes that lose or keep
 * unacknowledged writes, handles that die with their process).
 */

import assert from "node:assert/strict";
import { MemoryStore } from "../../src/store/memory.ts";
import { isStoreError, type StoreErrorCode } from "../../src/store/store.ts";
import type { Clock } from "../../src/util/clock.ts";
import { runStoreConformance } from "./conformance.ts";

runStoreConformance("MemoryStore", () => new MemoryStore());
runStoreConformance(
  "MemoryStore with latency",
  () => new MemoryStore({ seed: 9, latencyMs: { min: 0, max: 2 } }),
);

const body = (text: string) => new TextEncoder().encode(text);

/** Outcome of each of n operations: "ok" or the StoreError code. */
async function outcomes(store: MemoryStore, n: number): Promise<string[]> {
  const results = await Promise.allSettled(
    Array.from(
      { length: n },
      (_, i) => i % 2 === 0 ? store.put(`k${i}`, body(`v${i}`)) : store.get(`k${i - 1}`),
    ),
  );
  return results.map((r) => r.status === "fulfilled" ? "ok" : (r.reason as { code: StoreErrorCode }).code);
}

/** A clock whose time only moves when the test says so. */
function manualClock(): Clock & { advance(ms: number): Promise<void> } {
  let now = 0;
  const timers: { at: number; fn: () => void }[] = [];
  const clock = {
    nowMs: () => now,
    wallMs: () => 1_767_225_600_000 + now,
    sleep: (ms: number) => new Promise<void>((resolve) => void timers.push({ at: now + ms, fn: resolve })),
    setTimer(ms: number, fn: () => void) {
      const timer = { at: now + ms, fn };
      timers.push(timer);
      return { cancel: () => void timers.splice(timers.indexOf(timer), 1) };
    },
    async advance(ms: number) {
      now += ms;
      for (const t of timers.filter((t) => t.at <= now)) {
        timers.splice(timers.indexOf(t), 1);
        t.fn();
      }
      for (let i = 0; i < 10; i++) await Promise.resolve();
    },
  };
  return clock;
}

Deno.test("MemoryStore errorRate injects the same Transient faults for the same seed", async () => {
  const a = await outcomes(new MemoryStore({ seed: 42, errorRate: 0.3 }), 200);
  const b = await outcomes(new MemoryStore({ seed: 42, errorRate: 0.3 }), 200);
  const c = await outcomes(new MemoryStore({ seed: 43, errorRate: 0.3 }), 200);
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, c);
  const faults = a.filter((o) => o === "Transient").length;
  assert(faults > 30 && faults < 100, `faults ${faults} of 200 at rate 0.3`);
  assert(a.every((o) => o === "ok" || o === "Transient" || o === "NotFound"), `${a}`);
});

Deno.test("MemoryStore with errorRate 0 never fails and setFaults turns faults off", async () => {
  const store = new MemoryStore({ seed: 1, errorRate: 1 });
  await assert.rejects(store.put("k", body("v")), (e) => isStoreError(e, "Transient"));
  assert.equal(store.rawGet("k"), undefined);
  store.setFaults({ errorRate: 0 });
  const { etag } = await store.put("k", body("v"));
  assert.deepEqual(await store.get("k"), { body: body("v"), totalSizeBytes: 1, etag });
});

Deno.test("MemoryStore ignoreConditions overwrites whatever If-None-Match and If-Match say", async () => {
  const store = new MemoryStore({ ignoreConditions: true });
  await store.put("k", body("first"), { ifNoneMatch: true });
  await store.put("k", body("second"), { ifNoneMatch: true });
  await store.put("k", body("third"), { ifMatch: "not-the-etag" });
  assert.deepEqual(store.rawGet("k"), body("third"));
  store.setFaults({ ignoreConditions: false });
  await assert.rejects(
    store.put("k", body("fourth"), { ifNoneMatch: true }),
    (e) => isStoreError(e, "PreconditionFailed"),
  );
  assert.equal(store.reopen().description, store.description);
});

Deno.test("MemoryStore landedErrorRate stores a write whose error is reported", async () => {
  const store = new MemoryStore({ seed: 5, errorRate: 1, landedErrorRate: 1 });
  await assert.rejects(store.put("k", body("landed")), (e) => isStoreError(e, "Transient"));
  assert.deepEqual(store.rawGet("k"), body("landed"));
});

Deno.test("MemoryStore latency waits on the injected clock", async () => {
  const clock = manualClock();
  const store = new MemoryStore({ clock, latencyMs: { min: 10, max: 10 } });
  let done = false;
  const put = store.put("k", body("v")).then(() => done = true);
  await clock.advance(5);
  assert.equal(done, false);
  assert.equal(store.rawGet("k"), undefined);
  await clock.advance(5);
  await put;
  assert.equal(done, true);
  assert.deepEqual(store.rawGet("k"), body("v"));
});

Deno.test("MemoryStore.crash() fails pending and later operations of the old handle with Fatal", async () => {
  const clock = manualClock();
  const store = new MemoryStore({ clock, latencyMs: { min: 10, max: 10 } });
  await store.rawPut("old", body("old"));
  const pendingGet = store.get("old");
  const pendingPut = store.put("new", body("new"));
  assert.equal(store.pendingCount, 2);
  store.crash({ keepUnacknowledgedProbability: 0 });
  await assert.rejects(pendingGet, (e) => isStoreError(e, "Fatal"));
  await assert.rejects(pendingPut, (e) => isStoreError(e, "Fatal"));
  await assert.rejects(store.get("old"), (e) => isStoreError(e, "Fatal"));
  await assert.rejects(store.list({ prefix: "" }), (e) => isStoreError(e, "Fatal"));
  await clock.advance(20);
  assert.equal(store.rawGet("new"), undefined, "a lost write must not land after the crash");
  assert.equal(store.crashed, true);
});

Deno.test("MemoryStore.crash() keeps or loses unacknowledged writes by probability and seed", async () => {
  const run = async (seed: number, keep: number) => {
    const clock = manualClock();
    const store = new MemoryStore({ seed, clock, latencyMs: { min: 1, max: 5 } });
    const puts = Array.from({ length: 100 }, (_, i) => store.put(`k${i}`, body(`${i}`)).catch(() => {}));
    const p = clock.advance(0);
    store.crash({ keepUnacknowledgedProbability: keep });
    await Promise.all([p, ...puts]);
    const reopened = store.reopen({ latencyMs: { min: 0, max: 0 } });
    return (await reopened.list({ prefix: "k" })).objects.map((o) => o.key);
  };
  // An acknowledged write always survives a crash.
  const clock = manualClock();
  const store = new MemoryStore({ seed: 3, clock, latencyMs: { min: 1, max: 1 } });
  const acked = store.put("acknowledged", body("yes"));
  await clock.advance(1);
  await acked;
  store.crash({ keepUnacknowledgedProbability: 0 });
  assert.deepEqual(store.reopen().keys(), ["acknowledged"]);

  assert.deepEqual(await run(7, 0), []);
  assert.equal((await run(7, 1)).length, 100);
  const some = await run(7, 0.5);
  assert(some.length > 25 && some.length < 75, `kept ${some.length} of 100`);
  assert.deepEqual(await run(7, 0.5), some, "same seed, same survivors");
  assert.notDeepEqual(await run(8, 0.5), some);
});

Deno.test("MemoryStore.reopen() gives a working handle over what landed", async () => {
  const store = new MemoryStore({ seed: 11 });
  await store.put("a", body("A"));
  const pending = store.put("b", body("B"));
  store.crash({ keepUnacknowledgedProbability: 1 });
  await assert.rejects(pending, (e) => isStoreError(e, "Fatal"));
  const restarted = store.reopen({ errorRate: 0 });
  assert.equal(restarted.crashed, false);
  assert.deepEqual((await restarted.get("b")).body, body("B"));
  await restarted.put("c", body("C"), { ifNoneMatch: true });
  assert.deepEqual(store.keys(), ["a", "b", "c"], "handles share one set of contents");
});

Deno.test("MemoryStore inspection helpers read, write and delete raw keys", async () => {
  const store = new MemoryStore();
  store.rawPut("x/1", body("one"));
  store.rawPut("x/2", body("two"));
  store.rawPut("y", body("y"));
  assert.deepEqual(store.keys(), ["x/1", "x/2", "y"]);
  assert.deepEqual(store.keys("x/"), ["x/1", "x/2"]);
  assert.equal(store.rawDelete("x/1"), true);
  assert.equal(store.rawDelete("x/1"), false);
  await assert.rejects(store.get("x/1"), (e) => isStoreError(e, "NotFound"));
  const raw = store.rawGet("x/2")!;
  raw.fill(0);
  assert.deepEqual(store.rawGet("x/2"), body("two"));
  assert.equal(store.stats.gets, 1);
});

Deno.test("MemoryStore.close() makes later operations fail with Fatal", async () => {
  const store = new MemoryStore();
  await store.close();
  await assert.rejects(store.put("k", body("v")), (e) => isStoreError(e, "Fatal"));
});

Deno.test("MemoryStore corruptReadRate flips one bit of GET answers, never of what is stored", async () => {
  const store = new MemoryStore({ corruptReadRate: 1, seed: 9 });
  const body = new Uint8Array(4096).map((_, i) => i);
  await store.put("k", body);
  for (const range of [undefined, { offsetBytes: 100, lengthBytes: 900 }]) {
    const { body: got } = await store.get("k", range);
    const want = range === undefined ? body : body.subarray(100, 1000);
    let bits = 0;
    for (let i = 0; i < got.length; i++) {
      for (let x = got[i]! ^ want[i]!; x !== 0; x &= x - 1) bits++;
    }
    assert.equal(bits, 1);
  }
  assert.deepEqual(store.rawGet("k"), body);
  store.setFaults({ corruptReadRate: 0 });
  assert.deepEqual((await store.get("k")).body, body);
  assert.throws(() => store.setFaults({ corruptReadRate: 2 }), /corruptReadRate 2/);
});
