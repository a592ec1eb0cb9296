import assert from "node:assert/strict";
import { MemoryStore } from "../store/memory.ts";
import { ManualClock } from "../util/clock.ts";
import {
  acquireLease,
  type AcquireOptions,
  breakLease,
  claimEpoch,
  LeaseKeeper,
  readLease,
} from "./lease.ts";

const retry = (clock: ManualClock) => ({ clock, attemptsMax: 5 });

function options(clock: ManualClock, host: string, extra: Partial<AcquireOptions> = {}): AcquireOptions {
  return {
    clock,
    log: () => {},
    retry: retry(clock),
    windowObjects: 4,
    durationMs: 3000,
    holder: { host, pid: 100, nonce: host },
    ...extra,
  };
}

/** Runs p while moving the manual clock, as the simulation does. */
async function drive<T>(clock: ManualClock, p: Promise<T>, stepMs = 50): Promise<T> {
  let done = false;
  p.then(() => (done = true), () => (done = true));
  for (let i = 0; i < 10_000 && !done; i++) {
    clock.advance(stepMs);
    for (let k = 0; k < 20; k++) await Promise.resolve();
  }
  return await p;
}

Deno.test("acquireLease() takes a fresh epoch and refuses a second writer naming the holder", async () => {
  const clock = new ManualClock();
  const store = new MemoryStore();
  const first = await acquireLease(store, "v/", options(clock, "alpha"));
  assert.equal(first.stored.lease.epoch, 1);
  assert.equal(first.previous, undefined);
  await assert.rejects(acquireLease(store, "v/", options(clock, "beta")), (e: Error) => {
    assert.match(
      e.message,
      /^Cannot open the volume for writing: it is held by host alpha pid 100 \(epoch 1\) since 2026-01-01T00:00:00.000Z/,
    );
    assert.match(e.message, /--takeover/);
    return true;
  });
  assert.deepEqual((await readLease(store, "v/"))?.lease.holder.host, "alpha");
});

Deno.test("LeaseKeeper renews, and a takeover makes the old holder's next renewal report the new holder", async () => {
  const clock = new ManualClock();
  const store = new MemoryStore();
  const acquired = await acquireLease(store, "", options(clock, "alpha"));
  const lost: Error[] = [];
  const keeper = new LeaseKeeper(store, "", acquired, { clock, log: () => {}, onLost: (e) => lost.push(e) });
  await drive(clock, new Promise((r) => clock.setTimer(10_000, () => r(undefined))));
  assert(keeper.isValid(), "renewals keep the lease valid");
  assert((await readLease(store, ""))!.lease.renewedAtMs > acquired.stored.lease.renewedAtMs);
  const taken = await acquireLease(store, "", options(clock, "beta", { mode: "takeover" }));
  assert.equal(taken.stored.lease.epoch, 2);
  assert.equal(taken.previous?.holder.host, "alpha");
  assert.equal(taken.stored.lease.windowObjects, 4);
  await drive(clock, new Promise((r) => clock.setTimer(2000, () => r(undefined))));
  assert.equal(lost.length, 1);
  assert.match(
    lost[0]!.message,
    /^Cannot keep writing the volume: the volume was taken over by host beta pid 100 \(epoch 2\)/,
  );
  assert(!keeper.isValid());
});

Deno.test("LeaseKeeper validity lapses while renewals fail, counted from the start of the last success", async () => {
  const clock = new ManualClock();
  const store = new MemoryStore({ clock, latencyMs: { min: 400, max: 400 } });
  const acquired = await drive(clock, acquireLease(store, "", options(clock, "alpha")));
  const keeper = new LeaseKeeper(store, "", acquired, {
    clock,
    log: () => {},
    onLost: () => assert.fail("lost"),
  });
  assert(acquired.validFromMs < clock.nowMs(), "validity starts when the PUT started, not when it returned");
  store.setFaults({ errorRate: 1, landedErrorRate: 1 }); // renewals land but report failure
  await drive(clock, new Promise((r) => clock.setTimer(3000, () => r(undefined))));
  assert(!keeper.isValid(), "no successful renewal for a whole duration");
  store.setFaults({ errorRate: 0 });
  await drive(clock, new Promise((r) => clock.setTimer(2000, () => r(undefined))));
  assert(keeper.isValid(), "the landed-but-failed renewal is retried with the same bytes and succeeds");
  keeper.stop();
});

Deno.test("acquireLease() as standby waits for the holder to stop renewing, then takes over", async () => {
  const clock = new ManualClock();
  const store = new MemoryStore();
  const acquired = await acquireLease(store, "", options(clock, "alpha"));
  const keeper = new LeaseKeeper(store, "", acquired, { clock, log: () => {}, onLost: () => {} });
  const lines: string[] = [];
  let taken = false;
  const standby = acquireLease(
    store,
    "",
    options(clock, "beta", { mode: "standby", log: (l) => lines.push(l) }),
  );
  standby.then(() => (taken = true));
  await drive(clock, new Promise((r) => clock.setTimer(20_000, () => r(undefined))));
  assert(!taken, "a renewing holder keeps its lease");
  keeper.stop(); // frozen (SIGSTOP) or dead
  const stoppedAt = clock.nowMs();
  const result = await drive(clock, standby);
  assert(clock.nowMs() - stoppedAt >= 3000, "not before the lease could have lapsed");
  assert.equal(result.previous?.holder.host, "alpha");
  assert(lines.some((l) => /lapsed; taking the volume over/.test(l)), lines.join("\n"));
});

Deno.test("a released or broken lease is taken without --takeover; epochs are never reused", async () => {
  const clock = new ManualClock();
  const store = new MemoryStore();
  const a = await acquireLease(store, "", options(clock, "alpha"));
  const keeper = new LeaseKeeper(store, "", a, { clock, log: () => {}, onLost: () => {} });
  await keeper.release();
  const b = await acquireLease(store, "", options(clock, "beta"));
  assert.equal(b.previous?.released, true);
  assert.equal(b.stored.lease.windowObjects, 4);
  assert.equal((await breakLease(store, "", retry(clock)))?.holder.host, "beta");
  const c = await acquireLease(store, "", options(clock, "gamma", { windowObjects: 2 }));
  assert.equal(c.previous?.released, false);
  assert.equal(c.stored.lease.windowObjects, 4, "the broken holder's window must still be fenced");
  assert.deepEqual([a, b, c].map((x) => x.stored.lease.epoch), [1, 2, 3]);
  assert.equal(
    await claimEpoch(store, "", { holder: c.stored.lease.holder, retry: retry(clock), atLeast: 7 }),
    8,
  );
  assert.deepEqual(store.keys("epoch/").length, 4);
});
