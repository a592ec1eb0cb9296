/**
 * @module
 * DiskCache on a real directory: bounded by SIZE, warm across reopen, never serving a sector whose
 * bytes do not match its slot's CRC (damage, truncation) or whose slot's CRC was not found equal to
 * the object's current table in this run (a reused object number).
 */

import assert from "node:assert/strict";
import { crc32 } from "../format/crc32.ts";
import { DiskCache, SLOT_DISK_BYTES } from "./disk_cache.ts";
import { DATA_FILE, ID_FILE, INDEX_FILE, LOCK_FILE } from "./cache_dir.ts";
import { LsvdError } from "../util/errors.ts";
import { currentHolder, localProcesses } from "../util/lease_holder.ts";

const S = 4096;
const quiet = () => {};

function sectors(n: number, seed: number): { body: Uint8Array; table: Uint32Array } {
  const body = new Uint8Array(n * S);
  for (let i = 0; i < body.length; i += 64) body[i] = (seed * 31 + i / 64) & 0xff;
  const table = new Uint32Array(n);
  for (let k = 0; k < n; k++) table[k] = crc32(body.subarray(k * S, (k + 1) * S));
  return { body, table };
}

function open(dir: string, sizeBytes = 1024 * 1024, identity = "vol A"): DiskCache {
  return DiskCache.open({ dir, sizeBytes, identity, log: quiet });
}

function dirBytes(dir: string): number {
  let n = 0;
  for (const e of Deno.readDirSync(dir)) n += Deno.statSync(`${dir}/${e.name}`).size;
  return n;
}

Deno.test("DiskCache serves what it kept, also after a reopen (warm start)", () => {
  const dir = Deno.makeTempDirSync();
  const { body, table } = sectors(8, 1);
  let c = open(dir);
  c.add("v/0000000000000005", 5, 0, body);
  c.close();
  c = open(dir);
  const out = new Uint8Array(8 * S);
  assert(c.read("v/0000000000000005", 5, 0, out, table));
  assert.deepEqual(out, body);
  assert.deepEqual(c.counters.hits, 1);
  // Room left after a reopen is used before anything is evicted.
  c.add("v/0000000000000006", 6, 0, sectors(8, 2).body);
  assert.deepEqual(c.counters.evictions, 0);
  assert(c.read("v/0000000000000005", 5, 0, out, table));
  c.close();
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("DiskCache.read() drops an entry of a reused object number (rollback) and a damaged one", () => {
  const dir = Deno.makeTempDirSync();
  const old = sectors(4, 1);
  const reused = sectors(4, 2); // the same number written again with other data (between runs)
  let c = open(dir);
  c.add("v/0000000000000007", 7, 0, old.body);
  c.close();
  c = open(dir);
  const out = new Uint8Array(4 * S);
  // A new run has checked nothing yet: no answer without the object's current table.
  assert.equal(c.checked(7, 0, 4), false);
  assert.equal(c.read("v/0000000000000007", 7, 0, out), false);
  assert.deepEqual(c.read("v/0000000000000007", 7, 0, out, reused.table), false);
  assert.deepEqual(c.counters.dropped, 4); // every stale sector of the range, not just the first
  // A clone's parent object of the same number under another prefix is not this entry either.
  c.add("v/0000000000000008", 8, 0, old.body);
  assert.deepEqual(c.read("parent/0000000000000008", 8, 0, out, old.table), false);
  // A flipped byte in the data file.
  c.add("v/0000000000000009", 9, 0, old.body);
  c.close();
  const f = Deno.openSync(`${dir}/${DATA_FILE}`, { read: true, write: true });
  const bytes = Deno.readFileSync(`${dir}/${DATA_FILE}`);
  for (let slot = 0; slot * S < bytes.length; slot++) {
    f.seekSync(slot * S + 100, Deno.SeekMode.Start);
    f.writeSync(new Uint8Array([bytes[slot * S + 100]! ^ 0x40]));
  }
  f.close();
  let d = open(dir);
  const held = d.sectors;
  assert.deepEqual(d.read("v/0000000000000009", 9, 0, out, old.table), false);
  assert.equal(d.counters.dropped, 4);
  d.close();
  d = open(dir); // the dropped slots' records were cleared: they are not loaded again
  assert.equal(d.sectors, held - 4);
  d.close();
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("DiskCache.add() rewrites an entry this run has not checked (a reused number): the new bytes are served", () => {
  const dir = Deno.makeTempDirSync();
  const old = sectors(4, 1);
  const reused = sectors(4, 2);
  let c = open(dir);
  c.add("v/0000000000000007", 7, 0, old.body);
  c.close();
  c = open(dir);
  c.add("v/0000000000000007", 7, 0, reused.body); // this run's upload of the reused number
  const out = new Uint8Array(4 * S);
  assert.equal(c.read("v/0000000000000007", 7, 0, out), true);
  assert.deepEqual(out, reused.body);
  c.close();
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("DiskCache loads index records past the first chunk read at open (slot 70000 of 76k)", () => {
  const dir = Deno.makeTempDirSync();
  open(dir, 300 * 2 ** 20).close(); // sparse files
  const one = sectors(1, 3);
  const slot = 70_000;
  const data = Deno.openSync(`${dir}/${DATA_FILE}`, { write: true });
  data.seekSync(slot * S, Deno.SeekMode.Start);
  data.writeSync(one.body);
  data.close();
  const record = new DataView(new ArrayBuffer(16));
  record.setUint32(0, 7 + 1);
  record.setUint32(4, 5);
  record.setUint32(8, crc32(new TextEncoder().encode("v/0000000000000007")));
  record.setUint32(12, one.table[0]!);
  const index = Deno.openSync(`${dir}/${INDEX_FILE}`, { write: true });
  index.seekSync(slot * 16, Deno.SeekMode.Start);
  index.writeSync(new Uint8Array(record.buffer));
  index.close();
  const c = open(dir, 300 * 2 ** 20);
  assert.equal(c.sectors, 1);
  const out = new Uint8Array(S);
  const table = new Uint32Array(6);
  table[5] = one.table[0]!;
  assert.equal(c.read("v/0000000000000007", 7, 5, out, table), true);
  assert.deepEqual(out, one.body);
  c.close();
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("DiskCache needs an object's table once a run: checked slots are served without it", () => {
  const dir = Deno.makeTempDirSync();
  const { body, table } = sectors(4, 3);
  let c = open(dir);
  c.add("v/0000000000000004", 4, 0, body); // verified bytes: checked as they are kept
  const out = new Uint8Array(4 * S);
  assert(c.checked(4, 0, 4));
  assert(c.read("v/0000000000000004", 4, 0, out));
  assert.deepEqual(out, body);
  c.close();
  c = open(dir);
  assert.equal(c.checked(4, 0, 4), false);
  assert(c.read("v/0000000000000004", 4, 0, out.subarray(0, S), table.subarray(0, 1)));
  assert(c.checked(4, 0, 1) && !c.checked(4, 0, 2), "only the sectors read against the table");
  assert(c.read("v/0000000000000004", 4, 0, out, table));
  assert(c.read("v/0000000000000004", 4, 0, out));
  assert.deepEqual(out, body);
  // A follower that loads the log anew checks everything again.
  c.forgetChecks();
  assert.equal(c.checked(4, 0, 1), false);
  assert.equal(c.read("v/0000000000000004", 4, 0, out), false);
  assert.equal(c.counters.dropped, 0);
  c.close();
  // A slot whose bytes were damaged after it was checked still fails its own CRC.
  c = open(dir);
  assert(c.read("v/0000000000000004", 4, 0, out, table));
  const f = Deno.openSync(`${dir}/${DATA_FILE}`, { read: true, write: true });
  const one = new Uint8Array(1);
  f.seekSync(200, Deno.SeekMode.Start);
  f.readSync(one);
  f.seekSync(200, Deno.SeekMode.Start);
  f.writeSync(new Uint8Array([one[0]! ^ 1]));
  f.close();
  let served = 0;
  for (let k = 0; k < 4; k++) if (c.read("v/0000000000000004", 4, k, out.subarray(0, S))) served++;
  assert.equal(served, 3);
  assert.equal(c.counters.dropped, 1);
  c.close();
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("DiskCache drops an older lsvd's index (no sector CRCs): the cache starts empty", () => {
  const dir = Deno.makeTempDirSync();
  const c = open(dir);
  c.add("v/0000000000000001", 1, 0, sectors(2, 1).body);
  c.close();
  Deno.renameSync(`${dir}/${INDEX_FILE}`, `${dir}/lsvd-cache.index`);
  const lines: string[] = [];
  const d = DiskCache.open({ dir, sizeBytes: 1024 * 1024, identity: "vol A", log: (l) => lines.push(l) });
  assert.equal(d.sectors, 0);
  assert.match(lines.join("\n"), /the index of an older lsvd was dropped; the cache starts empty/);
  assert.throws(() => Deno.statSync(`${dir}/lsvd-cache.index`), Deno.errors.NotFound);
  d.close();
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("DiskCache.read() treats a truncated data file as a miss", () => {
  const dir = Deno.makeTempDirSync();
  const { body, table } = sectors(4, 3);
  let c = open(dir);
  c.add("v/1", 1, 0, body);
  c.close();
  Deno.truncateSync(`${dir}/${DATA_FILE}`, 2 * S + 10);
  c = open(dir);
  const out = new Uint8Array(4 * S);
  assert.deepEqual(c.read("v/1", 1, 0, out, table), false);
  assert(c.read("v/1", 1, 0, out.subarray(0, 2 * S), table.subarray(0, 2)));
  c.close();
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("DiskCache stays within SIZE on disk after a fill of twice SIZE, evicting by CLOCK", () => {
  const dir = Deno.makeTempDirSync();
  const sizeBytes = 1024 * 1024;
  const c = open(dir, sizeBytes);
  const slots = c.slots;
  assert.deepEqual(slots, Math.floor((sizeBytes - 2 * S) / SLOT_DISK_BYTES));
  for (let seq = 1; seq <= 2 * sizeBytes / (16 * S); seq++) c.add(`v/${seq}`, seq, 0, sectors(16, seq).body);
  assert.deepEqual(c.sectors, slots);
  assert(c.counters.evictions > 0);
  assert(dirBytes(dir) <= sizeBytes, `${dirBytes(dir)} > ${sizeBytes}`);
  c.close();
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("DiskCache.open() refuses another volume's directory and one a live daemon uses", async () => {
  const dir = Deno.makeTempDirSync();
  open(dir, 1024 * 1024, "vol A").close();
  assert.throws(
    () => open(dir, 1024 * 1024, "vol B"),
    (e) => e instanceof LsvdError && /caches another volume/.test(e.message),
  );
  assert.deepEqual(Deno.readTextFileSync(`${dir}/${ID_FILE}`), "vol A\n");
  Deno.writeTextFileSync(`${dir}/${LOCK_FILE}`, "1\n"); // pid 1 is alive
  assert.throws(
    () => open(dir),
    (e) => e instanceof LsvdError && /another lsvd daemon \(host \S+ pid 1\)/.test(e.message),
  );
  Deno.writeTextFileSync(`${dir}/${LOCK_FILE}`, "999999999\n"); // gone: a stale lock is replaced
  open(dir).close();
  Deno.statSync(`${dir}/${INDEX_FILE}`);
  // A live process named with its start time refuses; the same pid with another start time is a
  // reused pid (the daemon that wrote the lock is gone) and the lock is replaced.
  const sleeper = new Deno.Command("sleep", { args: ["30"] }).spawn();
  try {
    const live = currentHolder();
    const stat = localProcesses().stat(sleeper.pid)!;
    const lock = (startTime: number) =>
      Deno.writeTextFileSync(
        `${dir}/${LOCK_FILE}`,
        JSON.stringify({ ...live, pid: sleeper.pid, startTime }) + "\n",
      );
    lock(stat.startTime);
    assert.throws(() => open(dir), new RegExp(`another lsvd daemon \\(host \\S+ pid ${sleeper.pid}\\)`));
    lock(stat.startTime + 1);
    open(dir).close();
  } finally {
    sleeper.kill();
    await sleeper.status;
  }
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("DiskCache survives a torn index (kill -9 mid-fill) and a full disk without serving a wrong byte", () => {
  const dir = Deno.makeTempDirSync();
  const { body, table } = sectors(4, 4);
  let c = open(dir);
  c.add("v/2", 2, 0, body);
  c.close();
  // A torn record: half of slot 1's record overwritten, as a crash mid-write leaves it.
  const f = Deno.openSync(`${dir}/${INDEX_FILE}`, { read: true, write: true });
  f.seekSync(16 + 4, Deno.SeekMode.Start);
  f.writeSync(new Uint8Array([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1]));
  f.close();
  c = open(dir);
  const out = new Uint8Array(4 * S);
  assert.equal(c.read("v/2", 2, 0, out, table), false);
  assert(c.read("v/2", 2, 0, out.subarray(0, S), table.subarray(0, 1)));
  c.close();
  // A full disk: every write fails with ENOSPC (/dev/full); nothing is kept, nothing is served.
  Deno.removeSync(`${dir}/${DATA_FILE}`);
  Deno.symlinkSync("/dev/full", `${dir}/${DATA_FILE}`);
  const logged: string[] = [];
  c = DiskCache.open({ dir, sizeBytes: 1024 * 1024, identity: "vol A", log: (l) => logged.push(l) });
  c.add("v/3", 3, 0, body);
  assert.equal(c.counters.ioErrors, 1);
  assert.equal(c.sectors, 0);
  assert.equal(c.read("v/3", 3, 0, out, table), false);
  assert.match(logged.join("\n"), /cannot write: .*\(the store serves instead\)/);
  c.close();
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("DiskCache.add() writes a whole object in runs of slots, and an object larger than the cache keeps only right bytes", () => {
  const dir = Deno.makeTempDirSync();
  const big = sectors(100, 3);
  // 1 MiB: 255 slots. A 100-sector object goes into consecutive empty slots; read back after a reopen.
  let c = open(dir);
  c.add("v/0000000000000009", 9, 0, big.body);
  assert.equal(c.counters.fills, 100);
  c.close();
  c = open(dir);
  const out = new Uint8Array(100 * S);
  assert(c.read("v/0000000000000009", 9, 0, out, big.table));
  assert.deepEqual(out, big.body);
  // Three more objects through a cache of 255 slots: CLOCK takes back slots of the same add.
  for (let seq = 10; seq < 13; seq++) {
    c.add(`v/${seq.toString(16).padStart(16, "0")}`, seq, 0, sectors(100, seq).body);
  }
  let kept = 0;
  for (let seq = 9; seq < 13; seq++) {
    const object = seq === 9 ? big : sectors(100, seq);
    for (let k = 0; k < 100; k++) {
      const one = new Uint8Array(S);
      if (!c.read(`v/${seq.toString(16).padStart(16, "0")}`, seq, k, one, object.table)) continue;
      assert.deepEqual(one, object.body.subarray(k * S, (k + 1) * S), `object ${seq} sector ${k}`);
      kept++;
    }
  }
  assert.equal(c.counters.dropped, 0, "a slot held other bytes than its index record said");
  assert(kept > 200 && kept <= 255, `${kept} sectors kept`);
  c.close();
  c = open(dir); // and the same after a reopen: the index file agrees with the data file
  for (let seq = 10; seq < 13; seq++) {
    const object = sectors(100, seq);
    for (let k = 0; k < 100; k++) {
      const one = new Uint8Array(S);
      if (c.read(`v/${seq.toString(16).padStart(16, "0")}`, seq, k, one, object.table)) {
        assert.deepEqual(one, object.body.subarray(k * S, (k + 1) * S));
      }
    }
  }
  assert.equal(c.counters.dropped, 0, "after a reopen a slot held other bytes than its index record said");
  c.close();
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("DiskCache.open() takes a lock of an earlier boot of this host (a machine that crashed and rebooted)", () => {
  const dir = Deno.makeTempDirSync();
  open(dir, 1024 * 1024, "vol A").close();
  // Its pid is alive again now (pid 1 always is), but no process outlives a reboot.
  const before = {
    ...currentHolder(localProcesses()),
    pid: 1,
    bootId: "00000000-0000-0000-0000-000000000000",
  };
  Deno.writeTextFileSync(`${dir}/${LOCK_FILE}`, JSON.stringify(before));
  open(dir, 1024 * 1024, "vol A").close();
  Deno.removeSync(dir, { recursive: true });
});
