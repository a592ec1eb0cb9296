import assert from "node:assert/strict";
import { countingStore } from "../../tests/support/counting_store.ts";
import { MemoryStore } from "../store/memory.ts";
import { ManualClock } from "../util/clock.ts";
import { silentLogger } from "../util/log.ts";
import { Volume, type VolumeOptions } from "./volume.ts";
import { createClone, finishFlatten } from "../log/clone.ts";
import { listLogState } from "../log/log_state.ts";
import { loadLog } from "../log/load.ts";
import { createSnapshot, deleteSnapshot, readSnapshots } from "../log/snapshots.ts";
import { rollbackLog } from "../log/rollback.ts";
import { checkFormatRecord, readFormatRecord } from "../log/format_record.ts";

const SECTOR = 4096;
const SECTORS = 64;
const HOUR = 3600_000;

function setup() {
  const clock = new ManualClock();
  const store = new MemoryStore({ clock });
  const open = (prefix: string, extra: Partial<VolumeOptions> = {}) =>
    Volume.open({
      store,
      clock,
      prefix,
      log: silentLogger,
      objectBytesMax: 8 * SECTOR,
      checkpointEveryObjects: 0,
      retentionMs: HOUR,
      ...extra,
    });
  const clone = (source: string, target: string, sequence?: number) =>
    createClone(store, {
      source,
      target,
      point: sequence === undefined ? undefined : { kind: "sequence", sequence, text: String(sequence) },
      wallNowMs: clock.wallMs(),
    });
  return { clock, store, open, clone };
}

/** Writes `byte` to each sector listed (first byte of each sector names it too). */
async function put(v: Volume, model: Uint8Array, sectors: number[], byte: number): Promise<void> {
  for (const s of sectors) {
    const data = new Uint8Array(SECTOR).fill(byte);
    data[0] = s;
    await v.write(s * SECTOR, data);
    model.set(data, s * SECTOR);
  }
  await v.flush();
}

async function disk(v: Volume): Promise<Uint8Array> {
  const dest = new Uint8Array(SECTORS * SECTOR);
  await v.read(0, dest);
  return dest;
}

/** Compares a volume's disk with a model, naming the first sector that differs (no giant diff). */
async function assertDisk(v: Volume, model: Uint8Array, what = ""): Promise<void> {
  const got = await disk(v);
  for (let s = 0; s < SECTORS; s++) {
    const a = got.subarray(s * SECTOR, (s + 1) * SECTOR), b = model.subarray(s * SECTOR, (s + 1) * SECTOR);
    if (!a.every((x, i) => x === b[i])) assert.fail(`${what} sector ${s}: read ${a[1]}, expected ${b[1]}`);
  }
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from }, (_, i) => from + i);
}

Deno.test("createClone() writes two keys; clone and source each see only their own later writes", async () => {
  const { store, open, clone } = setup();
  const src = await open("src/", { sizeBytes: SECTORS * SECTOR });
  const base = new Uint8Array(SECTORS * SECTOR);
  await put(src, base, range(0, 32), 1);
  const before = new Set(store.keys());
  const made = await clone("src/", "dst/");
  const added = store.keys().filter((k) => !before.has(k)).sort();
  assert.deepEqual(added, ["dst/format.json", `src/snapshot/${made.link.pin}`]);
  const srcModel = base.slice(), dstModel = base.slice();
  const dst = await open("dst/");
  assert.equal(dst.sizeBytes, SECTORS * SECTOR);
  await assertDisk(dst, dstModel);
  await put(src, srcModel, range(0, 8), 2);
  await put(dst, dstModel, range(4, 12), 3);
  await assertDisk(src, srcModel);
  await assertDisk(dst, dstModel);
  // The clone's own objects are numbered above the source's last one.
  assert.ok(store.keys("dst/0").every((k) => parseInt(k.slice(4), 16) > made.link.through));
  await dst.close();
  await src.close();
  const again = await open("dst/");
  await assertDisk(again, dstModel);
  assert.ok(again.parentBytes > 0);
  await again.close();
  // An lsvd that knows only format 2 refuses the clone (it would serve it without its parent).
  const record = (await readFormatRecord(store, "dst/"))!;
  assert.equal(record.format, 3);
  assert.throws(
    () => checkFormatRecord({ ...record, requires: ["clone", "encryption"] }, "dst/"),
    /upgrade lsvd/,
  );
  // Without its parent (deleted before a flatten) a clone refuses to open, naming what is gone.
  for (const k of store.keys("src/")) await store.delete(k);
  await assert.rejects(open("dst/"), /its parent under "src\/" is gone/);
});

Deno.test("A chain of three clones reads right, after restarts and from checkpoints", async () => {
  const { open, clone } = setup();
  const a = await open("a/", { sizeBytes: SECTORS * SECTOR });
  const m = new Uint8Array(SECTORS * SECTOR);
  await put(a, m, range(0, 40), 1);
  await clone("a/", "b/");
  const mb = m.slice();
  const b = await open("b/", { checkpointEveryObjects: 1 });
  await put(b, mb, range(10, 20), 2);
  await clone("b/", "c/");
  const mc = mb.slice();
  await put(b, mb, range(15, 25), 5);
  const c = await open("c/");
  await put(c, mc, range(18, 30), 3);
  await clone("c/", "d/");
  const md = mc.slice();
  const d = await open("d/");
  await put(d, md, [0, 19, 39, 50], 4);
  await put(a, m, range(0, 64), 9);
  for (const [v, model] of [[a, m], [b, mb], [c, mc], [d, md]] as const) {
    await assertDisk(v, model);
    await v.close();
  }
  for (const [p, model] of [["b/", mb], ["c/", mc], ["d/", md]] as const) {
    const v = await open(p);
    await assertDisk(v, model, p);
    await v.close();
  }
});

Deno.test("Source GC keeps what a clone reads; flatten copies it; the source can then go", async () => {
  const { clock, store, open, clone } = setup();
  let src = await open("src/", { sizeBytes: SECTORS * SECTOR, retentionMs: 60_000 });
  const m = new Uint8Array(SECTORS * SECTOR);
  // Objects of 8 sectors, then half of each overwritten: sparse objects a pass would move.
  await put(src, m, range(0, SECTORS), 1);
  const half = range(0, SECTORS).filter((s) => s % 8 < 4);
  await put(src, m, half, 2);
  await clone("src/", "dst/");
  const dm = m.slice();
  // The source keeps overwriting only that half, and collects with a short window.
  for (let round = 3; round <= 8; round++) {
    await put(src, m, half, round);
    clock.advance(10 * 60_000);
  }
  const result = await src.collectGarbage();
  assert.ok(result.deletedObjects > 0, "the pass deleted what nothing needs");
  const pins = await readSnapshots(store, await listLogState(store, "src/"));
  assert.equal(pins.length, 1);
  assert.equal(pins[0]!.clone?.prefix, "dst/");
  // The source's rollback below what the clone reads is refused, and so is deleting its pin.
  await assert.rejects(
    rollbackLog(store, await listLogState(store, "src/"), 1, {
      log: silentLogger,
      archiveId: "t",
      writerEpoch: 99,
      wallNowMs: clock.wallMs(),
    }),
    /clone under "dst\/"/,
  );
  await assert.rejects(deleteSnapshot(store, "src/", pins[0]!.name), /flatten/);
  let dst = await open("dst/");
  await put(dst, dm, [1, 2, 3], 20);
  await assertDisk(dst, dm);
  await assert.rejects(
    loadLog(store, await listLogState(store, "dst/"), {
      atSequence: 1,
      concurrency: 4,
      log: silentLogger,
    }),
    /branch point/,
  );
  const through = await dst.copyFromParents();
  assert.equal(dst.parentBytes, 0);
  await dst.close();
  await finishFlatten(store, "dst/", (await readFormatRecord(store, "dst/"))!, through);
  assert.equal((await readSnapshots(store, await listLogState(store, "src/"))).length, 0);
  await src.close();
  for (const k of store.keys("src/")) await store.delete(k);
  dst = await open("dst/");
  await assertDisk(dst, dm);
  await dst.close();
  src = await open("src/", { sizeBytes: SECTORS * SECTOR }); // a new volume may take the prefix
  await src.close();
});

Deno.test("Flatten after a crash half way resumes from what is already copied", async () => {
  const { store, open, clone } = setup();
  const src = await open("src/", { sizeBytes: SECTORS * SECTOR });
  const m = new Uint8Array(SECTORS * SECTOR);
  await put(src, m, range(0, SECTORS), 1);
  await clone("src/", "dst/");
  await src.close();
  const dst = await open("dst/", { objectBytesMax: 4 * SECTOR });
  const half = dst.copyFromParents((done, total) => {
    if (done * 2 >= total) dst.abandon();
  });
  await half.catch(() => {});
  const again = await open("dst/", { leaseMode: "takeover" });
  assert.ok(again.parentBytes < SECTORS * SECTOR, "part of the copy survived the crash");
  const through = await again.copyFromParents();
  await again.close();
  await finishFlatten(store, "dst/", (await readFormatRecord(store, "dst/"))!, through);
  for (const k of store.keys("src/")) await store.delete(k);
  const last = await open("dst/");
  await assertDisk(last, m);
  await last.close();
});

Deno.test("A clone's GC keeps a trim while its parent may hold the data under it", async () => {
  const { clock, open, clone } = setup();
  const src = await open("src/", { sizeBytes: SECTORS * SECTOR });
  const m = new Uint8Array(SECTORS * SECTOR);
  await put(src, m, range(0, SECTORS), 1);
  await src.close();
  await clone("src/", "dst/");
  const dst = await open("dst/", { retentionMs: 60_000 });
  await dst.writeZeroes(0, 8 * SECTOR);
  await dst.flush();
  m.fill(0, 0, 8 * SECTOR);
  for (let round = 2; round <= 4; round++) {
    await put(dst, m, range(16, 24), round);
    clock.advance(10 * 60_000);
  }
  await put(dst, m, range(16, 24), 5);
  await dst.collectGarbage();
  await dst.flush();
  dst.abandon(); // no shutdown checkpoint: the next open replays the log over the parent
  const again = await open("dst/", { leaseMode: "takeover" });
  await assertDisk(again, m);
  await again.close();
});

for (const inWindow of [false, true]) {
  const where = inWindow ? "inside the source's window" : "older than the source's window";
  Deno.test(`A source GC pass that planned before a clone's pin keeps what the clone reads (point ${where})`, async () => {
    const { clock, store, open, clone } = setup();
    // Every collected record stored runs the hook first: the pin lands between a pass's plan and
    // its last look at the snapshots, as a clone made while a pass runs would.
    let hook: (() => Promise<void>) | undefined;
    const hooked = new Proxy(store, {
      get(target, prop) {
        const value = Reflect.get(target, prop, target);
        if (typeof value !== "function") return value;
        if (prop !== "put") return value.bind(target);
        return async (key: string, ...rest: unknown[]) => {
          if (key.startsWith("src/collected/") && hook !== undefined) [hook] = [undefined, await hook()];
          return await (value as (...a: unknown[]) => Promise<unknown>).call(target, key, ...rest);
        };
      },
    });
    const src = await open("src/", { sizeBytes: SECTORS * SECTOR, retentionMs: 60_000, store: hooked });
    const m = new Uint8Array(SECTORS * SECTOR);
    await put(src, m, range(0, SECTORS), 1);
    const half = range(0, SECTORS).filter((s) => s % 8 < 4);
    await put(src, m, half, 2);
    if (inWindow) clock.advance(10 * 60_000); // the point is the oldest point of the window
    const made = await clone("src/", "dst/");
    const dm = m.slice();
    const pinKey = `src/snapshot/${made.link.pin}`;
    const pinBody = store.rawGet(pinKey)!;
    await store.delete(pinKey);
    hook = async () => void (await store.put(pinKey, pinBody));
    const round = async (n: number) => {
      await put(src, m, half, n);
      if (!inWindow) clock.advance(10 * 60_000);
      return await src.collectGarbage();
    };
    const first = await round(3);
    assert.ok(first.copiedObjects > 0, "the pass moved data the clone's point reads");
    assert.equal(first.deletedObjects, 0, "and, seeing the pin afterwards, deleted nothing");
    for (let n = 4; n <= 6; n++) await round(n);
    const dst = await open("dst/");
    await assertDisk(dst, dm);
    await dst.close();
    await src.close();
  });
}

Deno.test("createClone() makes the same requests for a source of 40 objects and of 1,100", async () => {
  const { store, open } = setup();
  const { store: counted, counts } = countingStore(store);
  const requests: string[] = [];
  for (const objects of [40, 1100]) {
    const v = await open(`s${objects}/`, { sizeBytes: SECTORS * SECTOR, checkpointEveryObjects: 1000 });
    while (v.stats.lastSequence < objects) await put(v, new Uint8Array(SECTORS * SECTOR), [0], 1);
    await v.close(); // a checkpoint at shutdown: the clone lists only what follows it
    counts.clear();
    await createClone(counted, {
      source: `s${objects}/`,
      target: `c${objects}/`,
      point: undefined,
      wallNowMs: 0,
    });
    requests.push(JSON.stringify([...counts].sort()));
  }
  assert.equal(requests[0], requests[1]);
});

Deno.test("Deleting the snapshot a clone was made from keeps what the clone reads", async () => {
  const { clock, store, open } = setup();
  const src = await open("src/", { sizeBytes: SECTORS * SECTOR, retentionMs: 60_000 });
  const m = new Uint8Array(SECTORS * SECTOR);
  await put(src, m, range(0, SECTORS), 1);
  const point = src.stats.lastSequence;
  const image = m.slice();
  await put(src, m, range(0, SECTORS), 2); // after the snapshot: not in the clone
  await createSnapshot(store, "src/", { version: 1, name: "s", sequence: point, createdMs: 0 });
  await createClone(store, {
    source: "src/",
    target: "dst/",
    point: { kind: "snapshot", name: "s", text: "s" },
    wallNowMs: clock.wallMs(),
  });
  await deleteSnapshot(store, "src/", "s");
  for (let round = 3; round <= 6; round++) {
    await put(src, m, range(0, SECTORS), round);
    clock.advance(10 * 60_000);
    await src.collectGarbage();
  }
  await src.close();
  const dst = await open("dst/");
  await assertDisk(dst, image);
  await dst.close();
});
