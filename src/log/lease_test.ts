import assert from "node:assert/strict";
import { MemoryStore } from "../store/memory.ts";
import { ManualClock } from "../util/clock.ts";
import {
  acquireLease,
  type AcquireOptions,
  breakLease,
  breakRefusal,
  claimEpoch,
  decodeLease,
  describeLease,
  LeaseKeeper,
  lostReason,
  readLease,
} from "./lease.ts";
import type { LeaseHolder, ProcessStat, ProcessTable } from "../util/lease_holder.ts";

function options(clock: ManualClock, host: string, extra: Partial<AcquireOptions> = {}): AcquireOptions {
  return {
    clock,
    log: () => {},
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
  assert(
    lines.some((l) =>
      /^Taking the volume over from host alpha .*which stopped renewing it \(--standby\)/.test(l)
    ),
    lines.join("\n"),
  );
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
  const seen = await readLease(store, "");
  assert.equal(seen?.lease.holder.host, "beta");
  await breakLease(store, "", seen!);
  const c = await acquireLease(store, "", options(clock, "gamma", { windowObjects: 2 }));
  assert.equal(c.previous?.released, false);
  assert.equal(c.stored.lease.windowObjects, 4, "the broken holder's window must still be fenced");
  assert.deepEqual([a, b, c].map((x) => x.stored.lease.epoch), [1, 2, 3]);
  assert.equal(
    await claimEpoch(store, "", { holder: c.stored.lease.holder, atLeast: 7 }),
    8,
  );
  assert.deepEqual(store.keys("epoch/").length, 4);
});

/** This machine as the lease code sees it: host "alpha", and the processes given. */
function alphaMachine(processes: Record<number, ProcessStat> = {}): ProcessTable {
  return { host: "alpha", bootId: "boot-1", pidNamespace: "pid:[1]", stat: (pid) => processes[pid] };
}

function alphaHolder(pid: number, startTime = 500): LeaseHolder {
  return { host: "alpha", pid, nonce: `n${pid}`, bootId: "boot-1", pidNamespace: "pid:[1]", startTime };
}

Deno.test("a restart on the same host takes the lease of a holder it proves gone without --takeover, saying which case", async (t) => {
  const cases: [string, Record<number, ProcessStat>, RegExp][] = [
    ["exited", {}, /which is gone \(killed or crashed\); fencing its uploads\.$/],
    ["zombie", { 100: { state: "Z", startTime: 500 } }, /which is gone \(killed or crashed; a zombie/],
    ["pid reused", { 100: { state: "S", startTime: 777 } }, /pid 100 now belongs to another process/],
  ];
  for (const [name, processes, line] of cases) {
    await t.step(name, async () => {
      const clock = new ManualClock();
      const store = new MemoryStore();
      const first = await acquireLease(store, "", options(clock, "alpha", { holder: alphaHolder(100) }));
      const lines: string[] = [];
      const again = await acquireLease(
        store,
        "",
        options(clock, "alpha", {
          holder: alphaHolder(200),
          processes: alphaMachine(processes),
          log: (l) => lines.push(l),
        }),
      );
      assert.equal(again.previous?.holder.pid, 100);
      assert.equal(again.previous?.released, false, "not released: the next step fences it");
      assert.equal(again.stored.lease.epoch, first.stored.lease.epoch + 1);
      assert.equal(lines.length, 1, lines.join("\n"));
      assert.match(lines[0]!, /^Took over the lease of pid 100 on this host, /);
      assert.match(lines[0]!, line);
    });
  }
  await t.step("alive, or not provably gone: refused", async () => {
    const clock = new ManualClock();
    const store = new MemoryStore();
    await acquireLease(store, "", options(clock, "alpha", { holder: alphaHolder(100) }));
    for (
      const machine of [
        alphaMachine({ 100: { state: "S", startTime: 500 } }), // runs
        { ...alphaMachine(), bootId: "boot-2" }, // another boot of a machine named alpha
        { ...alphaMachine(), host: "beta" }, // another host
      ]
    ) {
      await assert.rejects(
        acquireLease(store, "", options(clock, "alpha", { holder: alphaHolder(200), processes: machine })),
        /it is held by host alpha pid 100 .*--takeover/,
      );
    }
  });
});

Deno.test("describeLease says held, lapsed, broken or released as lsvd info does", async () => {
  const clock = new ManualClock();
  const store = new MemoryStore();
  const a = await acquireLease(store, "", options(clock, "alpha"));
  const lease = a.stored.lease;
  const t0 = lease.renewedAtMs;
  assert.match(
    describeLease(lease, t0 + 1000),
    /renewed 2026-01-01T00:00:00\.000Z \(1 s ago\), held until 2026-01-01T00:00:03\.000Z$/,
  );
  assert.match(
    describeLease(lease, t0 + 5000),
    /renewed .* \(5 s ago\), lapsed at 2026-01-01T00:00:03\.000Z$/,
  );
  assert.doesNotMatch(describeLease(lease, t0 + 5000), /valid/);
  assert.match(describeLease({ ...lease, released: true }), /, released$/);
  const seen = (await readLease(store, ""))!;
  await breakLease(store, "", seen);
  const broken = (await readLease(store, ""))!.lease;
  assert.match(describeLease(broken, t0), /, broken by 'lsvd lease break'$/);
  assert.doesNotMatch(describeLease(broken, t0), /1970/);
});

Deno.test("lease break needs --force for a lease that looks live; a holder that broke its own lease is told so", async () => {
  const clock = new ManualClock();
  const store = new MemoryStore();
  const a = await acquireLease(store, "", options(clock, "alpha", { holder: alphaHolder(100) }));
  const lost: Error[] = [];
  const keeper = new LeaseKeeper(store, "", a, { clock, log: () => {}, onLost: (e) => lost.push(e) });
  const t0 = a.stored.lease.renewedAtMs;
  const running = alphaMachine({ 100: { state: "S", startTime: 500 } });
  assert.match(
    breakRefusal(a.stored.lease, t0 + 1000, running) ?? "",
    /^Cannot break the lease: it looks live: host alpha pid 100 \(epoch 1\) renewed it 1 s ago .*--force/,
  );
  assert.equal(breakRefusal(a.stored.lease, t0 + 5000, running), undefined, "lapsed");
  assert.equal(breakRefusal(a.stored.lease, t0 + 1000, alphaMachine()), undefined, "its process is gone");
  await breakLease(store, "", (await readLease(store, ""))!);
  await drive(clock, new Promise((r) => clock.setTimer(2000, () => r(undefined))));
  assert.equal(lost.length, 1);
  assert.match(
    lost[0]!.message,
    /^Cannot keep writing the volume: its lease was broken \('lsvd lease break'\)/,
  );
  assert.doesNotMatch(lost[0]!.message, /taken over|1970/);
  assert.equal(
    lostReason((await readLease(store, ""))!.lease, alphaHolder(999), t0),
    `the volume was taken over by ${describeLease((await readLease(store, ""))!.lease, t0)}`,
  );
  keeper.stop();
});

Deno.test("the lease records the writer's journal: a start without it is refused naming host and directory", async () => {
  const clock = new ManualClock();
  const store = new MemoryStore();
  const journal = { dir: "/var/lib/lsvd/journal", id: "j-1" };
  const a = await acquireLease(store, "", options(clock, "alpha", { journal }));
  assert.deepEqual(a.stored.lease.journal, { host: "alpha", ...journal });
  const keeper = new LeaseKeeper(store, "", a, { clock, log: () => {}, onLost: () => {} });
  await drive(clock, new Promise((r) => clock.setTimer(5000, () => r(undefined))));
  assert.deepEqual((await readLease(store, ""))?.lease.journal, a.stored.lease.journal, "renewals keep it");
  keeper.stop(); // kill -9
  await breakLease(store, "", (await readLease(store, ""))!);
  assert.deepEqual(
    (await readLease(store, ""))?.lease.journal,
    a.stored.lease.journal,
    "lease break keeps it",
  );

  const refusals: [Partial<AcquireOptions>, RegExp][] = [
    [
      {},
      /^Cannot open the volume for writing: journal \/var\/lib\/lsvd\/journal on host alpha \(writer pid 100, epoch 1\) may hold acknowledged writes that are not in the store yet; start 'lsvd serve --journal \/var\/lib\/lsvd\/journal' on alpha to replay them, or pass --abandon-journal/,
    ],
    [{ journal: { dir: "/other", id: "j-2" } }, /\(--journal \/other on host beta is another journal\)/],
    [
      { journal: { dir: "/var/lib/lsvd/journal", id: "j-3" }, holder: { host: "alpha", pid: 7, nonce: "x" } },
      /is not that journal any more/,
    ],
    [{ mode: "takeover" }, /may hold acknowledged writes/],
  ];
  for (const [extra, message] of refusals) {
    await assert.rejects(acquireLease(store, "", options(clock, "beta", extra)), (e: Error) => {
      assert.match(e.message, message);
      assert.doesNotMatch(e.message, /journal-discard/);
      return true;
    });
  }
  // The same journal (wherever it is mounted now) is accepted, and recorded again.
  const same = await acquireLease(
    store,
    "",
    options(clock, "beta", { journal: { dir: "/mnt/j", id: "j-1" } }),
  );
  assert.deepEqual(same.stored.lease.journal, { host: "beta", dir: "/mnt/j", id: "j-1" });
  const sameKeeper = new LeaseKeeper(store, "", same, { clock, log: () => {}, onLost: () => {} });
  await sameKeeper.release();
  assert.equal(
    (await readLease(store, ""))?.lease.journal?.id,
    "j-1",
    "a release that did not empty it keeps it",
  );
  await assert.rejects(acquireLease(store, "", options(clock, "gamma")), /journal \/mnt\/j on host beta/);

  // --abandon-journal takes it, says what is lost, and records no journal.
  const lines: string[] = [];
  const abandoned = await acquireLease(
    store,
    "",
    options(clock, "gamma", { abandonJournal: true, log: (l) => lines.push(l) }),
  );
  assert.equal(abandoned.stored.lease.journal, undefined);
  assert(
    lines.some((l) => /^Abandoned journal \/mnt\/j on host beta \(--abandon-journal\)/.test(l)),
    lines.join("\n"),
  );

  // A clean shutdown with the journal emptied drops the record.
  const d = await acquireLease(
    store,
    "",
    options(clock, "delta", { journal: { dir: "/j", id: "j-4" }, mode: "takeover" }),
  );
  const dKeeper = new LeaseKeeper(store, "", d, { clock, log: () => {}, onLost: () => {} });
  await dKeeper.release({ journalEmpty: true });
  const after = (await readLease(store, ""))!.lease;
  assert.equal(after.journal, undefined);
  assert.equal(after.released, true);
  await acquireLease(store, "", options(clock, "epsilon"));
});

Deno.test("decodeLease reads leases of older lsvd (no boot id, start time or journal) and refuses malformed new fields", () => {
  const old = {
    version: 1,
    holder: { host: "h", pid: 1, nonce: "n" },
    epoch: 1,
    acquiredAtMs: 1,
    renewedAtMs: 1,
    durationMs: 30000,
    windowObjects: 32,
    released: false,
  };
  const encode = (x: unknown) => new TextEncoder().encode(JSON.stringify(x));
  assert.deepEqual(decodeLease(encode(old), "lease.json"), old);
  const withJournal = { ...old, journal: { host: "h", dir: "/j", id: "i" } };
  assert.deepEqual(decodeLease(encode(withJournal), "lease.json").journal, withJournal.journal);
  assert.throws(
    () => decodeLease(encode({ ...old, journal: { host: "h" } }), "lease.json"),
    /not a version 1 lease/,
  );
  assert.throws(
    () => decodeLease(encode({ ...old, holder: { ...old.holder, startTime: "x" } }), "lease.json"),
    /not a version 1 lease/,
  );
});
