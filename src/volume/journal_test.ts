import assert from "node:assert/strict";
import { MemoryStore } from "../store/memory.ts";
import { type Logger, silentLogger } from "../util/log.ts";
import { isLsvdError } from "../util/errors.ts";
import { seededRandom } from "../util/random.ts";
import { decodeRecord, encodeRecord, RECORD_HEADER_BYTES } from "../journal/journal_codec.ts";
import { DirectoryJournalFiles, segmentFirstRecord, segmentName } from "../journal/journal_files.ts";
import { join } from "node:path";
import { MemoryJournalFiles } from "../journal/journal_files_memory.ts";
import { Journal, type JournalTarget } from "../journal/journal.ts";
import { journalRecords, scanJournal } from "../journal/journal_replay.ts";
import { Volume, type VolumeOptions } from "./volume.ts";

const MiB = 1024 * 1024;

function sector(byte: number, sectors = 1): Uint8Array {
  return new Uint8Array(4096 * sectors).fill(byte);
}

Deno.test("encodeRecord() and decodeRecord() round-trip writes and zeroes, and a flipped bit fails the CRC", () => {
  const w = encodeRecord({
    kind: "write",
    number: 2 ** 40 + 7,
    offsetBytes: 2 ** 33,
    lengthBytes: 4096,
    data: sector(9),
  });
  const z = encodeRecord({
    kind: "zero",
    number: 8,
    offsetBytes: 4096,
    lengthBytes: 8192,
    data: new Uint8Array(0),
  });
  assert.equal(w.length, RECORD_HEADER_BYTES + 4096);
  assert.equal(z.length, RECORD_HEADER_BYTES);
  const both = new Uint8Array([...w, ...z]);
  const a = decodeRecord(both, 0);
  assert(a.ok);
  assert.deepEqual(
    [a.record.kind, a.record.number, a.record.offsetBytes, a.record.lengthBytes, a.record.data[100]],
    ["write", 2 ** 40 + 7, 2 ** 33, 4096, 9],
  );
  const b = decodeRecord(both, a.nextOffset);
  assert(b.ok);
  assert.deepEqual([b.record.kind, b.record.number, b.record.lengthBytes, b.nextOffset], [
    "zero",
    8,
    8192,
    both.length,
  ]);
  for (const at of [5, 12, 20, 30, 200]) {
    const bad = both.slice();
    bad[at]! ^= 1;
    const d = decodeRecord(bad, 0);
    assert(!d.ok, `a flipped bit at ${at} must not decode`);
  }
  const cut = decodeRecord(w.subarray(0, 1000), 0);
  assert(!cut.ok && cut.why === "a partial record");
});

/** A writer stand-in whose objects become durable only when the test says so. */
class FakeTarget implements JournalTarget {
  failure: Error | undefined;
  sequence = 1;
  durableThrough = 0;
  seals = 0;
  #waiters: { sequence: number; resolve: () => void }[] = [];
  write(): Promise<void> {
    return Promise.resolve();
  }
  writeZeroes(): Promise<void> {
    return Promise.resolve();
  }
  coveringSequence(): number {
    return this.sequence;
  }
  durable(sequence: number): Promise<void> {
    if (sequence <= this.durableThrough) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push({ sequence, resolve }));
  }
  sealNow(): void {
    this.seals++;
  }
  makeDurable(through: number): void {
    this.durableThrough = through;
    for (const w of this.#waiters.filter((w) => w.sequence <= through)) w.resolve();
    this.#waiters = this.#waiters.filter((w) => w.sequence > through);
  }
}

/**
 * Holds each sync of `files` until the test opens its gate (gates[i] for the i-th call); the sync
 * covers what was in the file when it was called, as an fdatasync does.
 */
function gateSyncs(files: MemoryJournalFiles): (() => void)[] {
  const gates: (() => void)[] = [];
  const sync = files.sync.bind(files);
  files.sync = async (name) => {
    const synced = sync(name);
    await new Promise<void>((resolve) => gates.push(resolve));
    return synced;
  };
  return gates;
}

async function settle(): Promise<void> {
  for (let i = 0; i < 50; i++) await Promise.resolve();
  await new Promise((r) => setTimeout(r, 0));
}

function journalOn(
  files: MemoryJournalFiles,
  target: JournalTarget,
  extra: { bytesMax?: number; segmentRecords?: number; mayAcknowledge?: () => boolean; log?: Logger } = {},
): Journal {
  return new Journal({
    files,
    target,
    bytesMax: extra.bytesMax ?? 64 * 4096,
    segmentBytes: (extra.segmentRecords ?? 4) * (4096 + RECORD_HEADER_BYTES),
    firstRecord: 1,
    mayAcknowledge: extra.mayAcknowledge ?? (() => true),
    log: extra.log ?? silentLogger,
  });
}

Deno.test("Journal.flush() batches FLUSHes that arrive together into one fdatasync", async () => {
  const files = new MemoryJournalFiles();
  const journal = journalOn(files, new FakeTarget(), { segmentRecords: 32 });
  const flushes: Promise<void>[] = [];
  for (let i = 0; i < 20; i++) {
    flushes.push(journal.write(i * 4096, sector(i + 1)), journal.flush());
  }
  await Promise.all(flushes);
  // The first FLUSH starts a sync; the 19 that arrive during it share the next one.
  assert(journal.counters.syncs <= 2, `${journal.counters.syncs} syncs for 20 concurrent flushes`);
  const scanned = await scanJournal(files);
  assert.equal(scanned.records, 20);
  await journal.flush(); // nothing new: no sync
  assert(journal.counters.syncs <= 2);
});

Deno.test("Journal deletes a segment only once every object holding its records is durable", async () => {
  const files = new MemoryJournalFiles();
  const target = new FakeTarget();
  const journal = journalOn(files, target);
  for (let i = 0; i < 6; i++) await journal.write(i * 4096, sector(1)); // a segment holds 4
  target.sequence = 2;
  for (let i = 6; i < 10; i++) await journal.write(i * 4096, sector(2));
  await journal.flush();
  await settle();
  assert.deepEqual(await files.segments(), [segmentName(1), segmentName(5), segmentName(9)]);
  assert.equal(journal.pendingBytes, 10 * (4096 + RECORD_HEADER_BYTES));
  target.makeDurable(1); // records 1..6 are in object 1: segment 1 (records 1..4) may go, not 5..8
  await settle();
  assert.deepEqual(await files.segments(), [segmentName(5), segmentName(9)]);
  assert.equal(journal.pendingBytes, 4 * (4096 + RECORD_HEADER_BYTES));
  target.makeDurable(2); // the current segment (9..10) stays until it is closed
  await settle();
  assert.deepEqual(await files.segments(), [segmentName(9)]);
  assert.equal(journal.pendingBytes, 0);
});

Deno.test("Journal makes writes wait while it is full, seals, and lets them in as segments are deleted", async () => {
  const files = new MemoryJournalFiles();
  const target = new FakeTarget();
  const journal = journalOn(files, target, { bytesMax: 8 * (4096 + RECORD_HEADER_BYTES) });
  for (let i = 0; i < 8; i++) await journal.write(i * 4096, sector(1));
  let done = false;
  const late = journal.write(0, sector(2)).then(() => (done = true));
  await settle();
  assert.equal(done, false, "a write into a full journal waits");
  assert.equal(target.seals, 1, "a full journal seals the open object");
  target.makeDurable(1);
  await late;
  assert(journal.liveBytes <= 8 * (4096 + RECORD_HEADER_BYTES));
});

Deno.test("scanJournal() drops a torn tail and refuses damage before the end, naming file and offset", async () => {
  const files = new MemoryJournalFiles("/j");
  const journal = journalOn(files, new FakeTarget());
  for (let i = 0; i < 6; i++) await journal.write(i * 4096, sector(i + 1));
  await journal.flush();
  for (let i = 0; i < 3; i++) await journal.write(i * 4096, sector(7)); // never synced
  await settle();
  // A crash keeps what was synced and part of the rest, maybe torn: never a damaged synced record.
  for (let seed = 1; seed < 40; seed++) {
    const after = files.sibling().crash(seededRandom(seed));
    const scanned = await scanJournal(after);
    assert(scanned.records >= 6 && scanned.records <= 9, `seed ${seed}: ${scanned.records} records`);
  }
  const record = 4096 + RECORD_HEADER_BYTES;
  files.damage(segmentName(1), record + 100); // record 2 of the first (whole, synced) segment
  await assert.rejects(
    scanJournal(files),
    (e) =>
      isLsvdError(e, "data") &&
      e.message.includes(`/j: ${segmentName(1)} is damaged at byte ${record} (a CRC mismatch)`),
  );
});

Deno.test("Preallocated segments: zeros after the last record end a segment, records lost at a segment's end are damage", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const write = (n: number) =>
      encodeRecord({ kind: "write", number: n, offsetBytes: n * 4096, lengthBytes: 4096, data: sector(n) });
    // 16 KiB: the second record of a segment passes half of it, so the next spare is zero-filled.
    const files = new DirectoryJournalFiles(dir, { preallocateBytes: 16 * 1024 });
    await files.lock();
    await files.writeIdentity(
      JSON.stringify({ version: 1, store: "s", prefix: "", writerEpoch: 1, startSequence: 0, startEpoch: 0 }),
    );
    for (const [first, last] of [[1, 3], [4, 5]]) {
      await files.create(segmentName(first!));
      for (let n = first!; n <= last!; n++) await files.append(segmentName(first!), write(n));
      await files.sync(segmentName(first!));
    }
    // Written over zeros: each segment keeps its preallocated size (no size change to sync).
    for (const name of await files.segments()) {
      assert.equal((await Deno.stat(join(dir, name))).size, 16 * 1024);
    }
    let scanned = await scanJournal(files);
    assert.equal(scanned.records, 5);
    assert.equal(scanned.tornBytes, 0);
    assert.deepEqual(scanned.segments.map((s) => s.validBytes), [3 * write(1).length, 2 * write(1).length]);
    // A torn record in the last segment, zeros after it: a torn tail, dropped.
    const torn = write(6).subarray(0, 1000);
    await files.append(segmentName(4), torn);
    scanned = await scanJournal(files);
    assert.equal(scanned.records, 5);
    assert(scanned.tornBytes > 0);
    await files.unlock();
    // The first segment's last record lost (zeros where it was): the next segment's first record
    // is out of sequence, so that is damage, not an unused end.
    const first = await Deno.open(join(dir, segmentName(1)), { write: true });
    await first.seek(2 * write(1).length, Deno.SeekMode.Start);
    await first.write(new Uint8Array(write(1).length));
    first.close();
    await assert.rejects(
      scanJournal(new DirectoryJournalFiles(dir)),
      (e) =>
        isLsvdError(e, "data") &&
        e.message.includes(
          `record 3 is missing: ${segmentName(1)} ends at record 2 (byte ${2 * write(1).length}) and ` +
            `${segmentName(4)} starts at record 4 (a segment deleted, or one cut short)`,
        ),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("Preallocated segments: a process refused the journal directory leaves the holder's spare alone", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const holder = new DirectoryJournalFiles(dir, { preallocateBytes: 64 * 1024 });
    await holder.lock();
    await holder.create(segmentName(1)); // waits for the first spare
    await holder.append(segmentName(1), new Uint8Array(32 * 1024)); // half full: a second is filling now
    const other = new DirectoryJournalFiles(dir, { preallocateBytes: 64 * 1024 });
    await assert.rejects(other.lock(), (e) => isLsvdError(e, "invalid"));
    await other.unlock();
    await holder.sync(segmentName(1));
    await holder.create(segmentName(2)); // renames the holder's spare: it must still be there
    assert.equal((await Deno.stat(join(dir, segmentName(2)))).size, 64 * 1024);
    await holder.unlock();
    await assert.rejects(Deno.stat(join(dir, "spare.zero")), Deno.errors.NotFound);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("Recycled segments: a deleted segment becomes the spare, and its stale records are never replayed", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const write = (n: number, byte = n) =>
      encodeRecord({
        kind: "write",
        number: n,
        offsetBytes: n * 4096,
        lengthBytes: 4096,
        data: sector(byte),
      });
    const files = new DirectoryJournalFiles(dir, { preallocateBytes: 16 * 1024 });
    await files.lock();
    await files.writeIdentity(
      JSON.stringify({ version: 1, store: "s", prefix: "", writerEpoch: 1, startSequence: 0, startEpoch: 0 }),
    );
    // Segment 1 (records 1-4, past its preallocated size), segment 5 (record 5).
    await files.create(segmentName(1));
    for (let n = 1; n <= 4; n++) await files.append(segmentName(1), write(n));
    await files.sync(segmentName(1));
    await files.create(segmentName(5));
    await files.append(segmentName(5), write(5));
    await files.sync(segmentName(5));
    // Segment 1's writes reached the store: it is deleted, and its file becomes the spare.
    await files.remove(segmentName(1));
    assert.deepEqual(
      (await Deno.readFile(join(dir, "spare.zero"))).subarray(0, write(1).length),
      write(1),
      "the spare is segment 1's file, not new zeros",
    );
    // The next segment starts as that file: a crash before its first record is synced leaves
    // records 1-4 in a segment named 6. They are stale (numbered below 6), not writes.
    await files.create(segmentName(6));
    let scanned = await scanJournal(files);
    assert.equal(scanned.records, 1, "only record 5");
    assert.equal(scanned.lastRecord, 5);
    assert.equal(scanned.tornBytes, 0, "stale records are the unused end, not a torn tail");
    assert.deepEqual(scanned.segments.map((s) => s.validBytes), [write(5).length, 0]);
    // Written over from the start: record 6 counts, the stale records 2-4 after it do not.
    await files.append(segmentName(6), write(6, 66));
    await files.sync(segmentName(6));
    scanned = await scanJournal(files);
    assert.equal(scanned.records, 2);
    assert.equal(scanned.lastRecord, 6);
    assert.equal(scanned.tornBytes, 0);
    // A torn record 7 over the stale ones: dropped as a torn tail of one record's bytes.
    await files.append(segmentName(6), write(7).subarray(0, 100));
    scanned = await scanJournal(files);
    assert.equal(scanned.records, 2);
    assert.equal(scanned.tornBytes, write(7).length);
    // A record of this journal after a bad one is a hole, not an unused end: damage.
    await files.append(segmentName(6), write(8));
    await assert.rejects(
      scanJournal(files),
      (e) =>
        isLsvdError(e, "data") &&
        e.message.includes(`${segmentName(6)} is damaged at byte ${write(6).length}`),
    );
    await files.unlock();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("Recycled segments: a journal whose deleted segments are reused replays only its own records after a crash", async () => {
  let recycledCrashes = 0;
  for (let seed = 1; seed <= 40; seed++) {
    const files = new MemoryJournalFiles("/j", undefined, { recycle: true });
    const target = new FakeTarget();
    target.makeDurable(1); // the store keeps up: each closed segment is deleted (and reused) at once
    const journal = journalOn(files, target, { segmentRecords: 3 });
    const random = seededRandom(seed);
    const written: { offset: number; byte: number }[] = []; // by record number - 1
    let flushed = 0;
    const writes = 5 + Math.floor(random() * 40);
    for (let n = 1; n <= writes; n++) {
      const offset = Math.floor(random() * 6) * 4096;
      const byte = 1 + Math.floor(random() * 250);
      await journal.write(offset, sector(byte));
      written.push({ offset, byte });
      if (random() < 0.3) {
        await journal.flush();
        flushed = n;
      }
      await settle();
    }
    const after = files.sibling().crash(seededRandom(seed + 1000));
    const scanned = await scanJournal(after);
    const numbers: number[] = [];
    for await (const r of journalRecords(after, scanned)) {
      numbers.push(r.number);
      const w = written[r.number - 1]!;
      assert.deepEqual([r.offsetBytes, r.data[0]], [w.offset, w.byte], `seed ${seed}: record ${r.number}`);
    }
    // In order, without a stale record among them, and every flushed write of the segment still
    // open there (the closed ones were deleted: their writes are in the store).
    for (let k = 1; k < numbers.length; k++) assert.equal(numbers[k], numbers[k - 1]! + 1, `seed ${seed}`);
    const names = await after.segments();
    if (names.length === 0) continue; // the last segment closed and was deleted: all is in the store
    const openFirst = segmentFirstRecord(names.at(-1)!);
    if (flushed >= openFirst) {
      assert(
        (scanned.lastRecord ?? 0) >= flushed,
        `seed ${seed}: flushed ${flushed}, last ${scanned.lastRecord}`,
      );
    }
    if (openFirst > 3) recycledCrashes++; // the open segment is a reused file
  }
  assert(recycledCrashes > 0);
});

// ---- the journal under a real Volume ----------------------------------------------------------

function options(
  store: MemoryStore,
  files: MemoryJournalFiles,
  extra: Partial<VolumeOptions> = {},
): VolumeOptions {
  return {
    store,
    log: silentLogger,
    sizeBytes: 8 * MiB,
    leaseMode: "takeover",
    journal: { files, delayMs: 60_000, bytesMax: 64 * MiB, segmentBytes: 4 * MiB, discard: false },
    ...extra,
  };
}

Deno.test("Volume with a journal: FLUSH stores nothing, a crash keeps the flushed writes and restart replays them", async () => {
  const store = new MemoryStore();
  let files = new MemoryJournalFiles();
  const v = await Volume.open(options(store, files));
  const putsAtStart = store.stats.puts;
  for (let i = 0; i < 10; i++) {
    await v.write(i * 4096, sector(i + 1));
    await v.flush();
  }
  assert.equal(store.stats.puts, putsAtStart, "ten FLUSHes, no PUT: the journal acknowledged them");
  assert(v.stats.journalPendingBytes > 0);
  v.abandon(); // kill -9
  files = files.crash(seededRandom(3));
  const again = await Volume.open(options(store.reopen(), files));
  const dest = new Uint8Array(4096);
  for (let i = 0; i < 10; i++) {
    await again.read(i * 4096, dest);
    assert.equal(dest[0], i + 1, `sector ${i} after replay`);
  }
  assert.deepEqual(await files.segments(), [], "the replayed journal is emptied (then reused)");
  await again.close();
  assert.deepEqual(await files.segments(), [], "a clean close leaves an empty journal");
});

Deno.test("Volume refuses a journal after another writer wrote the log, and --journal-discard drops it", async () => {
  const store = new MemoryStore();
  let files = new MemoryJournalFiles("/tmp/j");
  const a = await Volume.open(options(store, files));
  await a.write(0, sector(1));
  await a.flush();
  a.abandon();
  files = files.crash(seededRandom(1));
  // Another daemon without the journal is refused: the lease names it (and not --journal-discard).
  await assert.rejects(
    Volume.open({ store: store.reopen(), log: silentLogger, leaseMode: "takeover" }),
    (e) =>
      isLsvdError(e, "invalid") &&
      /journal \/tmp\/j on host \S+ .*may hold acknowledged writes/.test(e.message) &&
      !/journal-discard/.test(e.message),
  );
  // Told to abandon it, it takes the volume over and writes.
  const b = await Volume.open({
    store: store.reopen(),
    log: silentLogger,
    leaseMode: "takeover",
    abandonJournal: true,
  });
  await b.write(0, sector(2));
  await b.close();
  await assert.rejects(
    Volume.open(options(store.reopen(), files)),
    (e) =>
      isLsvdError(e, "invalid") &&
      /^Cannot replay journal \/tmp\/j: it holds \d+ bytes in 1 records .*moved on under another writer/.test(
        e.message,
      ),
  );
  const c = await Volume.open(
    options(store.reopen(), files, {
      journal: { files, delayMs: 1000, bytesMax: MiB, segmentBytes: MiB, discard: true },
    }),
  );
  const dest = new Uint8Array(4096);
  await c.read(0, dest);
  assert.equal(dest[0], 2, "the other writer's data stays");
  await c.close();
});

Deno.test("Volume refuses a journal directory another daemon is using", async () => {
  const store = new MemoryStore();
  const files = new MemoryJournalFiles("/tmp/j2");
  const a = await Volume.open(options(store, files));
  await assert.rejects(
    Volume.open(options(store.reopen(), files.sibling(), { leaseMode: "takeover" })),
    /Cannot use journal directory \/tmp\/j2: another process is using it/,
  );
  await a.close();
});

Deno.test("Journal.flush() holds an acknowledgement while the lease is not valid and gives it on renewal", async () => {
  const files = new MemoryJournalFiles();
  let leaseValid = false;
  const journal = journalOn(files, new FakeTarget(), {
    segmentRecords: 16,
    mayAcknowledge: () => leaseValid,
  });
  await journal.write(0, sector(1));
  let acknowledged = false;
  const flushed = journal.flush().then(() => (acknowledged = true));
  await settle();
  assert.equal(journal.counters.syncs, 1, "the journal was synced");
  assert.equal(acknowledged, false, "but not acknowledged without a valid lease");
  leaseValid = true;
  journal.leaseRenewed();
  await flushed;
});

Deno.test("Journal fails writes and FLUSHes with kind unavailable when the journal file cannot be written", async () => {
  const files = new MemoryJournalFiles("/broken");
  files.append = () => Promise.reject(new Error("No space left on device"));
  const lines: string[] = [];
  const journal = journalOn(files, new FakeTarget(), { segmentRecords: 16, log: (l) => lines.push(l) });
  await assert.rejects(
    journal.write(0, sector(1)),
    /Cannot write the journal/,
    "acknowledged, never written",
  );
  await assert.rejects(
    journal.flush(),
    (e) =>
      isLsvdError(e, "unavailable") &&
      e.message === "Cannot write the journal in /broken: No space left on device",
  );
  await assert.rejects(journal.write(4096, sector(2)), /Cannot write the journal/);
  assert.deepEqual(lines, [
    "Cannot write the journal in /broken: No space left on device. Writes and FLUSHes fail from now on.",
  ]);
});

Deno.test("Journal keeps at most a segment of records waiting for a slow local disk in memory", async () => {
  const files = new MemoryJournalFiles();
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  const append = files.append.bind(files);
  files.append = async (name, bytes) => {
    await gate;
    return append(name, bytes);
  };
  const journal = journalOn(files, new FakeTarget()); // a segment holds 4 records
  let done = 0;
  const writes = Array.from({ length: 8 }, (_, i) => journal.write(i * 4096, sector(1)).then(() => done++));
  await settle();
  assert.equal(
    journal.counters.records,
    4,
    "the fifth write waits while four records are queued for the disk",
  );
  assert.equal(done, 0, "no write is acknowledged before its record is in the journal file");
  release();
  await Promise.all(writes);
  await journal.flush();
  assert.equal((await scanJournal(files)).records, 8);
});

Deno.test("Journal acknowledges a write only once its record is in the file, so a killed daemon's next start replays it", async () => {
  const files = new MemoryJournalFiles();
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  const append = files.append.bind(files);
  files.append = async (name, bytes) => {
    await gate;
    return append(name, bytes);
  };
  const journal = journalOn(files, new FakeTarget());
  let acknowledged = false;
  const write = journal.write(0, sector(7)).then(() => acknowledged = true);
  await settle();
  assert.equal(acknowledged, false, "acknowledged while the record was only in memory");
  release();
  await write;
  // A process killed now (no FLUSH, no sync) leaves the written bytes in the file: the page cache
  // outlives the process. The next start finds the record.
  assert.equal((await scanJournal(files)).records, 1);
});

Deno.test("Journal acknowledges writes while an fdatasync runs, and a FLUSH after them waits for a sync that started after them", async () => {
  const files = new MemoryJournalFiles();
  const gates = gateSyncs(files);
  const journal = journalOn(files, new FakeTarget(), { segmentRecords: 16 });
  const acknowledged: string[] = [];
  await journal.write(0, sector(1));
  const first = journal.flush().then(() => acknowledged.push("flush 1"));
  await settle();
  assert.equal(gates.length, 1, "the first FLUSH started a sync");
  await journal.write(4096, sector(2)).then(() => acknowledged.push("write 2"));
  assert.deepEqual(acknowledged, ["write 2"], "a write is acknowledged while the sync runs");
  const second = journal.flush().then(() => acknowledged.push("flush 2"));
  await settle();
  assert.equal(gates.length, 1, "no second sync while one runs");
  gates[0]!();
  await first;
  await settle();
  assert.deepEqual(
    acknowledged,
    ["write 2", "flush 1"],
    "the second FLUSH waits: the sync that ended started before write 2 was in the file",
  );
  assert.equal(gates.length, 2, "the second FLUSH's own sync started");
  gates[1]!();
  await second;
  assert.deepEqual(acknowledged, ["write 2", "flush 1", "flush 2"]);
  // A crash keeps what was synced and nothing more: both acknowledged FLUSHes' writes are there.
  journal.stop();
  assert.equal((await scanJournal(files.crash(() => 0))).records, 2);
});

Deno.test("Journal with overlapping syncs: a FLUSH no sync in flight covers starts its own at once, and one returning first acknowledges what it covers", async () => {
  const files = new MemoryJournalFiles("/j", undefined, { concurrentSyncs: 2 });
  const gates = gateSyncs(files);
  const journal = journalOn(files, new FakeTarget(), { segmentRecords: 16 });
  const acknowledged: string[] = [];
  await journal.write(0, sector(1));
  const first = journal.flush().then(() => acknowledged.push("flush 1"));
  await settle();
  assert.equal(gates.length, 1, "the first FLUSH started a sync");
  await journal.write(4096, sector(2));
  const second = journal.flush().then(() => acknowledged.push("flush 2"));
  await settle();
  assert.equal(gates.length, 2, "the second FLUSH, not covered by the sync in flight, started its own");
  await journal.write(8192, sector(3));
  const third = journal.flush().then(() => acknowledged.push("flush 3"));
  await settle();
  assert.equal(gates.length, 2, "two syncs in flight at most: the third FLUSH waits");
  gates[1]!(); // the second sync returns first: it covers writes 1 and 2
  await second;
  await settle();
  assert.deepEqual(acknowledged, ["flush 1", "flush 2"]);
  assert.equal(gates.length, 3, "the third FLUSH's sync started once one returned");
  gates[0]!();
  await first;
  await settle();
  assert.deepEqual(acknowledged, ["flush 1", "flush 2"], "the first sync does not cover write 3");
  gates[2]!();
  await third;
  assert.deepEqual(acknowledged, ["flush 1", "flush 2", "flush 3"]);
  journal.stop();
  assert.equal((await scanJournal(files.crash(() => 0))).records, 3);
});

Deno.test("DirectoryJournalFiles.remove() waits for an fdatasync in flight on that segment (its descriptor stays open)", async () => {
  const dir = await Deno.makeTempDir();
  const files = new DirectoryJournalFiles(dir);
  try {
    await files.lock();
    // Reclaim may delete a segment while the writer's sync of it (before the next segment) runs.
    for (let n = 1; n <= 20; n++) {
      await files.create(segmentName(n));
      await files.append(segmentName(n), new Uint8Array(4096));
      const synced = files.sync(segmentName(n));
      await files.remove(segmentName(n));
      await synced; // closed under it: EBADF, "fdatasync ... failed", and the journal failed
    }
  } finally {
    await files.unlock();
    await Deno.remove(dir, { recursive: true });
  }
});
