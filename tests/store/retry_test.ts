/**
 * @module
 * withRetries() and StoreHealth on a manual clock: the backoff schedule, retrying until the store
 * is back (attemptsMax Infinity), what ends the loop (a non-transient error, the caller's abort
 * check), and an outage reported as two lines however many calls fail through it.
 */

import assert from "node:assert/strict";
import { backoffMs, RetryingStore, withRetries } from "../../src/store/retry.ts";
import { MemoryStore } from "../../src/store/memory.ts";
import { collectedKey } from "../../src/format/keys.ts";
import { listLogState } from "../../src/log/log_state.ts";
import { StoreHealth } from "../../src/store/health.ts";
import { isStoreError, StoreError } from "../../src/store/store.ts";
import { ManualClock } from "../../src/util/clock.ts";
import { seededRandom } from "../../src/util/random.ts";

const transient = () =>
  new StoreError("Transient", 'Cannot write object "k": cannot reach http://s3 (ECONNREFUSED)');

/** Lets pending promise callbacks run (the loop awaits between attempts). */
async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await Promise.resolve();
}

/** Advances the clock in steps, letting the loop run between them. */
async function advance(clock: ManualClock, ms: number, stepMs = 50): Promise<void> {
  for (let done = 0; done < ms; done += stepMs) {
    clock.advance(Math.min(stepMs, ms - done));
    await settle();
  }
}

Deno.test("backoffMs() doubles from 100 ms to a 5 s cap, jittered between half and all of it", () => {
  assert.deepEqual([1, 2, 3, 4, 5, 6, 7, 8, 100].map((a) => backoffMs(a)), [
    100,
    200,
    400,
    800,
    1600,
    3200,
    5000,
    5000,
    5000,
  ]);
  const random = seededRandom(7);
  for (let attempt = 1; attempt < 20; attempt++) {
    const ms = backoffMs(attempt, random);
    assert(ms >= backoffMs(attempt) / 2 && ms <= backoffMs(attempt), `${ms}`);
  }
});

Deno.test("withRetries() with attemptsMax Infinity retries a 10-minute outage and resumes", async () => {
  const clock = new ManualClock();
  const lines: string[] = [];
  const health = new StoreHealth({ clock, log: (l) => lines.push(l) });
  const backAtMs = 10 * 60_000;
  let attempts = 0;
  let done = false;
  const call = withRetries({ clock, attemptsMax: Infinity, health }, () => {
    attempts++;
    return clock.nowMs() < backAtMs ? Promise.reject(transient()) : Promise.resolve("stored");
  }).then((v) => ((done = true), v));
  await advance(clock, backAtMs - 1, 1000);
  assert.equal(done, false);
  assert.deepEqual(lines, [
    'Object storage unreachable (Cannot write object "k": cannot reach http://s3 (ECONNREFUSED)); ' +
    "retrying until it returns.",
  ]);
  await advance(clock, 5_001, 1000);
  assert.equal(await call, "stored");
  assert.equal(lines.length, 2);
  assert.match(lines[1]!, /^Object storage reachable again after 60[0-5] s\.$/); // the next attempt after 600 s
  // Capped at 5 s between attempts: about 120 attempts in 10 minutes, not thousands.
  assert(attempts > 110 && attempts < 135, `${attempts} attempts`);
  assert.equal(health.unreachable, false);
});

Deno.test("StoreHealth reports an outage hit by many calls as two lines, and ignores a single hiccup", async () => {
  const clock = new ManualClock();
  const lines: string[] = [];
  const health = new StoreHealth({ clock, log: (l) => lines.push(l) });
  let down = true;
  const op = () => (down ? Promise.reject(transient()) : Promise.resolve());
  // One failure, then success: no outage.
  let first = true;
  await Promise.all([
    withRetries({ clock, attemptsMax: Infinity, health }, () => {
      if (first) return (first = false, Promise.reject(transient()));
      return Promise.resolve();
    }),
    advance(clock, 200),
  ]);
  assert.deepEqual(lines, []);
  // 32 calls through a 73 s outage.
  const calls = Array.from({ length: 32 }, () => withRetries({ clock, attemptsMax: Infinity, health }, op));
  await advance(clock, 73_000, 100);
  down = false;
  await advance(clock, 5_000, 100);
  await Promise.all(calls);
  assert.equal(lines.length, 2, lines.join("\n"));
  assert.match(lines[0]!, /^Object storage unreachable \(.*\); retrying until it returns\.$/);
  assert.match(lines[1]!, /^Object storage reachable again after 7[3-8] s\.$/);
});

Deno.test("withRetries() ends at once on a non-transient error, and counts it as the store answering", async () => {
  const clock = new ManualClock();
  const lines: string[] = [];
  const health = new StoreHealth({ clock, log: (l) => lines.push(l), outageAfterMs: 0 });
  let attempts = 0;
  const call = withRetries({ clock, attemptsMax: Infinity, health }, () => {
    attempts++;
    return Promise.reject(
      attempts < 3 ? transient() : new StoreError("Fatal", "Cannot read: the bucket does not exist"),
    );
  });
  const outcome = call.catch((e) => e);
  await advance(clock, 1_000);
  const error = await outcome;
  assert(error instanceof StoreError && error.code === "Fatal");
  assert.equal(attempts, 3);
  assert.equal(lines.length, 2);
  assert.match(lines[1]!, /reachable again/);
});

Deno.test("withRetries() stops retrying when abort() returns an error (a closed or fenced volume)", async () => {
  const clock = new ManualClock();
  const volume: { failure?: Error } = {};
  let attempts = 0;
  const call = withRetries(
    { clock, attemptsMax: Infinity, abort: () => volume.failure },
    () => (attempts++, Promise.reject(transient())),
  ).catch((e) => e);
  await advance(clock, 2_000);
  const before = attempts;
  assert(before >= 4);
  volume.failure = new Error("Cannot write: the volume is closed");
  await advance(clock, 6_000);
  assert.equal(await call, volume.failure);
  assert.equal(attempts, before, "no attempt after abort() said stop");
});

Deno.test("withRetries() with a finite attemptsMax throws the last transient error", async () => {
  const clock = new ManualClock();
  let attempts = 0;
  const retried: number[] = [];
  const call = withRetries(
    { clock, attemptsMax: 4, onRetry: (n) => retried.push(n) },
    () => (attempts++, Promise.reject(transient())),
  ).catch((e) => e);
  await advance(clock, 10_000);
  assert(((await call) as StoreError).code === "Transient");
  assert.equal(attempts, 4);
  assert.deepEqual(retried, [1, 2, 3]);
});

Deno.test("StoreHealth: an attempt sent before the store answered again cannot start a new outage", () => {
  const clock = new ManualClock();
  const lines: string[] = [];
  const health = new StoreHealth({ clock, log: (l) => lines.push(l) });
  clock.advance(10_000);
  // A request sent at 0 hung until its 10 s deadline: the store has been away since 0.
  health.failed(transient(), { startedMs: 0, failingSinceMs: 0 });
  assert.equal(lines.length, 1);
  health.answered(); // the store is back at 10 s
  assert.equal(lines[1], "Object storage reachable again after 10 s.");
  clock.advance(20_000);
  // Sent into the black hole at 9 s, timed out at 30 s: old news.
  health.failed(transient(), { startedMs: 9_000, failingSinceMs: 9_000 });
  assert.equal(health.unreachable, false);
  // Sent after the answer and failing for 2 s: a new outage.
  health.failed(transient(), { startedMs: 28_000, failingSinceMs: 28_000 });
  assert.equal(health.unreachable, true);
  assert.equal(lines.length, 3);
});

Deno.test("withRetries() counts a request that hung until its deadline as failing since it was sent", async () => {
  const clock = new ManualClock();
  const lines: string[] = [];
  const health = new StoreHealth({ clock, log: (l) => lines.push(l) });
  let attempts = 0;
  const call = withRetries({ clock, attemptsMax: Infinity, health }, async () => {
    if (++attempts > 1) return "stored";
    await clock.sleep(30_000); // no answer until the deadline
    throw transient();
  });
  await advance(clock, 31_000, 1_000);
  assert.equal(await call, "stored");
  assert.equal(lines.length, 2, "one timed-out request is an outage");
  assert.match(lines[1]!, /^Object storage reachable again after 3[01] s\.$/); // 30 s hung + the backoff
});

/** A memory store whose next `failures` calls of any kind fail with a transient error first. */
class FlakyStore extends MemoryStore {
  failures = 0;
  calls = 0;
  #flake(): void {
    this.calls++;
    if (this.failures > 0) {
      this.failures--;
      throw transient();
    }
  }
  override put(...a: Parameters<MemoryStore["put"]>) {
    this.#flake();
    return super.put(...a);
  }
  override get(...a: Parameters<MemoryStore["get"]>) {
    this.#flake();
    return super.get(...a);
  }
  override head(...a: Parameters<MemoryStore["head"]>) {
    this.#flake();
    return super.head(...a);
  }
  override list(...a: Parameters<MemoryStore["list"]>) {
    this.#flake();
    return super.list(...a);
  }
  override delete(...a: Parameters<MemoryStore["delete"]>) {
    this.#flake();
    return super.delete(...a);
  }
  override copy(...a: Parameters<MemoryStore["copy"]>) {
    this.#flake();
    return super.copy(...a);
  }
}

Deno.test("RetryingStore retries each call on its own, one request per attempt", async () => {
  const clock = new ManualClock();
  const inner = new FlakyStore();
  const store = new RetryingStore(inner, { clock, attemptsMax: 3 });
  const calls: [string, () => Promise<unknown>][] = [
    ["put", () => store.put("k", new Uint8Array([1]), { ifNoneMatch: true })],
    ["get", () => store.get("k")],
    ["head", () => store.head("k")],
    ["list", () => store.list({ prefix: "" })],
    ["copy", () => store.copy("k", "k2")],
    ["delete", () => store.delete("k2")],
  ];
  for (const [name, call] of calls) {
    inner.failures = 2;
    inner.calls = 0;
    const done = call();
    await advance(clock, 300);
    await done;
    assert.equal(inner.calls, 3, `${name}: two failed attempts and one that answered`);
  }
  inner.failures = 3;
  inner.calls = 0;
  const failed = assert.rejects(store.get("k"), /ECONNREFUSED/);
  await advance(clock, 300);
  await failed;
  assert.equal(inner.calls, 3, "attemptsMax bounds the attempts of one call");
  await assert.rejects(store.get("missing"), (e) => isStoreError(e, "NotFound"));
});

Deno.test("RetryingStore cannot wrap a RetryingStore; withPolicy() and inBucket() make siblings", async () => {
  const clock = new ManualClock();
  const store = new RetryingStore(new MemoryStore(), { clock, attemptsMax: 3 });
  assert.throws(() => new RetryingStore(store, { clock, attemptsMax: 2 }), /does not retry/);
  const closed: { error?: Error } = {};
  const aborting = store.withPolicy({ clock, attemptsMax: Infinity, abort: () => closed.error });
  assert(aborting instanceof RetryingStore && aborting.policy.attemptsMax === Infinity);
  await aborting.put("k", new Uint8Array([1]));
  closed.error = new Error("closed");
  await assert.rejects(aborting.get("k"), /closed/);
  assert.deepEqual((await store.get("k")).body, new Uint8Array([1]), "the sibling reads the same objects");
  assert.equal(store.readNow, undefined, "readNow only where the inner store has it");
  assert.equal(store.inBucket, undefined, "inBucket only where the inner store has it");
});

Deno.test("listLogState() over a RetryingStore gives a failing request attemptsMax attempts, not attemptsMax² (no retry inside a retry)", async () => {
  const clock = new ManualClock();
  const key = collectedKey("v/", 1);
  let gets = 0;
  const inner = new (class extends MemoryStore {
    override get(...a: Parameters<MemoryStore["get"]>) {
      if (a[0] !== key) return super.get(...a);
      gets++;
      return Promise.reject(transient());
    }
  })();
  inner.rawPut(key, new Uint8Array([1]));
  // The collected record is read inside the listing: once a loop of its own inside the listing's.
  const listing = assert.rejects(
    listLogState(new RetryingStore(inner, { clock, attemptsMax: 3 }), "v/"),
    /ECONNREFUSED/,
  );
  await advance(clock, 5_000);
  await listing;
  assert.equal(gets, 3);
});
