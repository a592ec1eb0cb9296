/**
 * @module
 * Seeded deterministic simulation of the engine (in the spirit of TigerBeetle's VOPR): random
 * writes, write-zeroes, trims, FUA writes, flushes and reads run concurrently against the real
 * Volume over the fault-injecting MemoryStore on a manual clock, with crashes at random points.
 * After every crash a fresh Volume recovers and every sector must hold the newest write that was
 * durable (acknowledged before a completed FLUSH, or FUA) or a later write to it, never anything
 * else. Each sector's bytes name the write that produced them, so stale or torn data shows.
 * One seed in three (LSVD_SIM_JOURNAL=all: every seed) runs with the write-back journal: FLUSHes
 * are acknowledged from an in-memory journal that a crash cuts back to its last fdatasync (a torn
 * tail, maybe damaged), and the restart must replay it to give the same guarantee.
 * While the volume serves, the store damages GET answers (one flipped bit, seeded): every read must
 * then return correct bytes or fail with LsvdError kind "data", never return a damaged byte.
 * Seeds with the lifecycle end with a clone of a kept point: written, crashed, read through a
 * source GC pass, flattened (tests/sim/clones.ts).
 * Every fifth seed (LSVD_SIM_ENCRYPTED=all: every seed) serves an encrypted volume: the same
 * crashes, takeovers, journal replays, GC copies and rollbacks, with the shadow oracle decrypting
 * by docs/FORMAT.md's rules; their clones are encrypted too (own salt, the source read with its key).
 */

import assert from "node:assert/strict";
import { RetryingStore } from "../../src/store/retry.ts";
import { MemoryStore } from "../../src/store/memory.ts";
import { ManualClock } from "../../src/util/clock.ts";
import { isLsvdError } from "../../src/util/errors.ts";
import { Volume } from "../../src/volume/volume.ts";
import { seededRandom } from "../../src/util/random.ts";
import { createSnapshot, deleteSnapshot } from "../../src/log/snapshots.ts";
import { assertSameDisk, promisedFrom, Shadow } from "./retained.ts";
import { listLogState } from "../../src/log/log_state.ts";
import { rollbackLog } from "../../src/log/rollback.ts";
import { VolumeSecret } from "../../src/crypto/sector_cipher.ts";
import { cipherOf } from "../../src/log/volume_encryption.ts";
import { MemoryJournalFiles } from "../../src/journal/journal_files_memory.ts";
import { cloneLife } from "./clones.ts";

const SECTOR = 4096;

export interface SimulationOptions {
  seed: number;
  steps?: number;
  sectors?: number;
  crashes?: number;
  /** Prints every operation touching this sector (debugging a failing seed). */
  traceSector?: number;
}

/** A sector written by write `id` at `sector`: its bytes say both, everywhere. */
export function sectorBytes(id: number, sector: number): Uint8Array {
  const b = new Uint8Array(SECTOR);
  const v = new DataView(b.buffer);
  for (let i = 0; i < SECTOR; i += 8) {
    v.setUint32(i, id);
    v.setUint32(i + 4, sector);
  }
  return b;
}

/** Which write (0 = zeros) a sector's bytes come from; throws on torn or misplaced bytes. */
export function decodeSector(b: Uint8Array, sector: number, context: string): number {
  const v = new DataView(b.buffer, b.byteOffset, SECTOR);
  const id = v.getUint32(0), at = v.getUint32(4);
  if (id === 0 && at === 0) {
    for (let i = 0; i < SECTOR; i++) assert.equal(b[i], 0, `${context}: sector ${sector} is partly zero`);
    return 0;
  }
  assert.equal(at, sector, `${context}: sector ${sector} holds data written to sector ${at}`);
  for (let i = 0; i < SECTOR; i += 8) {
    assert(v.getUint32(i) === id && v.getUint32(i + 4) === at, `${context}: sector ${sector} is torn`);
  }
  return id;
}

/** Per sector, the writes in issue order: [id (0 = zero), issue index]. */
export class Model {
  history: { id: number; issue: number }[][];
  /** Per sector, the issue index of the newest write known durable. */
  durable: number[];
  /** Per sector, the issue index of the newest write acknowledged (resolved). */
  acked: number[];
  #issue = 0;

  constructor(sectors: number) {
    this.history = Array.from({ length: sectors }, () => [{ id: 0, issue: -1 }]);
    this.durable = new Array(sectors).fill(-1);
    this.acked = new Array(sectors).fill(-1);
  }

  issue(first: number, count: number, id: number): number {
    const n = this.#issue++;
    for (let s = first; s < first + count; s++) this.history[s]!.push({ id, issue: n });
    return n;
  }

  ack(first: number, count: number, issue: number): void {
    for (let s = first; s < first + count; s++) this.acked[s] = Math.max(this.acked[s]!, issue);
  }

  /** Snapshot of acks at the moment a flush starts; made durable when the flush completes. */
  snapshot(): number[] {
    return [...this.acked];
  }

  makeDurable(snapshot: number[]): void {
    for (let s = 0; s < snapshot.length; s++) this.durable[s] = Math.max(this.durable[s]!, snapshot[s]!);
  }

  /** Ids a sector may hold if everything up to `floor` (an issue index) is known to be there. */
  allowed(sector: number, floor: number): Set<number> {
    const h = this.history[sector]!;
    let from = 0;
    for (let i = 0; i < h.length; i++) if (h[i]!.issue <= floor) from = i;
    return new Set(h.slice(from).map((w) => w.id));
  }

  /** After a crash: the recovered disk becomes the new base history. */
  rebase(values: number[]): void {
    this.history = values.map((id) => [{ id, issue: -1 }]);
    this.durable.fill(-1);
    this.acked.fill(-1);
  }
}

export async function settle(): Promise<void> {
  for (let i = 0; i < 40; i++) await Promise.resolve();
}

/** Reads the whole disk; a read failed by damaged answers (kind "data") is asked again. */
export async function readAll(
  volume: Volume,
  sectors: number,
  clock: ManualClock,
  context: string,
): Promise<Uint8Array> {
  // In pieces of a few ranges, each retried: at a 30 % damaged-GET rate (one seed in four) one range
  // fails both its tries (table and data GETs, then fresh ones) about one time in four, and a volume
  // without a memory cache (the clones) reads every range again per attempt, so 20 attempts of a
  // whole-disk read could all fail (seed 243 with LSVD_SIM_JOURNAL=all did) with nothing wrong.
  const dest = new Uint8Array(sectors * SECTOR);
  for (let first = 0; first < sectors; first += READ_PIECE_SECTORS) {
    const piece = dest.subarray(first * SECTOR, Math.min(sectors, first + READ_PIECE_SECTORS) * SECTOR);
    await readPiece(volume, first * SECTOR, piece, clock, context);
  }
  return dest;
}

const READ_PIECE_SECTORS = 8;

async function readPiece(
  volume: Volume,
  offsetBytes: number,
  dest: Uint8Array,
  clock: ManualClock,
  context: string,
): Promise<void> {
  for (let attempt = 1;; attempt++) {
    const p = volume.read(offsetBytes, dest);
    let done = false;
    p.then(() => (done = true), () => (done = true));
    for (let i = 0; i < 10_000 && !done; i++) {
      clock.advance(5);
      await settle();
    }
    try {
      await p;
      return;
    } catch (e) {
      if (!isLsvdError(e, "data") || attempt >= 20) {
        throw new Error(`${context}: reading the disk failed`, { cause: e });
      }
    }
  }
}

function corruptReadRate(seed: number): number {
  return seed % 4 === 3 ? 0.3 : 0.03;
}

/** Garbage collection keeps points sealed within this long (on the simulated clock). */
function retentionMs(seed: number): number {
  return 40 + (seed % 5) * 60;
}

/** Seeds that acknowledge FLUSHes from the write-back journal. */
/** Seeds whose volume is encrypted (or all, LSVD_SIM_ENCRYPTED=all); their clones are encrypted too. */
export function encrypted(seed: number): boolean {
  return seed % 5 === 4 || Deno.env.get("LSVD_SIM_ENCRYPTED") === "all";
}

/** The encrypted seeds' key. */
const SIM_SECRET = new VolumeSecret(new Uint8Array(32).fill(0x5e), "the simulation");

export function usesJournal(seed: number): boolean {
  return seed % 3 === 1 || Deno.env.get("LSVD_SIM_JOURNAL") === "all";
}

async function openVolume(
  store: MemoryStore,
  clock: ManualClock,
  sizeBytes: number,
  seed: number,
  readOnlyAt?: number,
  journal?: MemoryJournalFiles,
): Promise<Volume> {
  store.setFaults({ corruptReadRate: 0 });
  const p = Volume.open({
    store,
    clock,
    log: Deno.env.get("LSVD_SIM_LOG") ? (l) => console.log(`t=${clock.nowMs()} ${l}`) : () => {},
    sizeBytes,
    objectBytesMax: 8 * SECTOR,
    dirtyBytesMax: 32 * SECTOR,
    sealDelayMs: 20,
    uploadsMax: 4,
    uploadAttemptsMax: 1000,
    cacheBytesMax: seed % 2 === 0 ? 0 : 16 * SECTOR,
    recoveryId: `r${seed}`,
    checkpointEveryObjects: [0, 3, 7][seed % 3]!,
    flushPolicy: seed % 4 === 1 ? "each" : "group",
    commitsInFlightMax: 1 + (seed % 3),
    ...(readOnlyAt === undefined ? {} : { readOnly: true, atSequence: readOnlyAt }),
    retentionMs: retentionMs(seed),
    gcThresholds: { deadFractionMin: [0.5, 0.2, 0.01][seed % 3]! },
    ...(encrypted(seed) ? { encryptionKey: SIM_SECRET } : {}),
    // A restart after a crash is told the old process is dead (serve --takeover).
    leaseMode: "takeover",
    leaseDurationMs: 3000,
    ...(journal === undefined || readOnlyAt !== undefined ? {} : {
      journal: {
        files: journal,
        delayMs: 20 + (seed % 7) * 10,
        bytesMax: (16 + (seed % 3) * 16) * SECTOR,
        segmentBytes: 6 * SECTOR,
        discard: false,
      },
    }),
  });
  let done = false;
  p.then(() => (done = true), () => (done = true));
  for (let i = 0; i < 10_000 && !done; i++) {
    clock.advance(5);
    await settle();
  }
  const volume = await p;
  store.setFaults({ corruptReadRate: corruptReadRate(seed) });
  return volume;
}

/** What one seeded run counts. */
export interface SimulationResult {
  objects: number;
  crashes: number;
  denseRegions: number;
  damagedReads: number;
  gcDeleted: number;
  gcCopied: number;
  rollbacks: number;
  rescues: number;
  journalReplays: number;
  clones: number;
}

/** The state of one seeded run, shared by its steps; `volume` and `store` change at crashes. */
interface Sim {
  options: SimulationOptions;
  seed: number;
  rand: () => number;
  /** Every tenth seed runs a disk larger than one 1 MiB region, long enough to make regions dense. */
  large: boolean;
  sectors: number;
  clock: ManualClock;
  store: MemoryStore;
  model: Model;
  shadow: Shadow;
  /** GC passes, snapshots, rollbacks and checks of every kept point run in this seed. */
  lifecycle: boolean;
  pendingSnapshots: Set<Promise<unknown>>;
  snapshots: { name: string; sequence: number }[];
  journal: MemoryJournalFiles | undefined;
  volume: Volume;
  nextId: number;
  readFailure: unknown;
  counts: Omit<SimulationResult, "objects">;
}

/** Runs one seeded simulation; throws an AssertionError naming the seed on any violation. */
export async function simulate(options: SimulationOptions): Promise<SimulationResult> {
  const sim = await startSim(options);
  const steps = options.steps ?? (sim.large ? 1200 : 300);
  for (let step = 0; step < steps; step++) {
    // Only rollbacks and crashes are awaited: every other step starts an operation and goes on at once.
    const restart = simStep(sim, step);
    if (restart !== undefined) await restart;
    await settle();
    if (sim.readFailure !== undefined) throw sim.readFailure;
    if (step % 50 === 0) {
      sim.counts.denseRegions = Math.max(sim.counts.denseRegions, sim.volume.stats.denseRegions);
    }
  }
  await closeAndCheck(sim);
  sim.counts.denseRegions = Math.max(sim.counts.denseRegions, sim.volume.stats.denseRegions);
  await cloneStep(sim);
  await pump(sim.volume.close(), sim.clock);
  return { objects: sim.store.keys().length, ...sim.counts };
}

/** A seed's store, model, shadow and first volume. */
async function startSim(options: SimulationOptions): Promise<Sim> {
  const { seed } = options;
  const rand = seededRandom(seed);
  const large = seed % 10 === 0;
  const sectors = options.sectors ?? (large ? 320 : 64);
  const clock = new ManualClock();
  const store = new MemoryStore({
    seed,
    clock,
    errorRate: 0.05,
    landedErrorRate: 0.3,
    latencyMs: { min: 1, max: 30 },
  });
  // Odd seeds (or all, LSVD_SIM_LIFECYCLE=all) add GC passes, snapshots, rollbacks and checks of
  // every kept point: about three times the cost of a plain seed, so even seeds keep the plain mix.
  const lifecycle = seed % 2 === 1 || Deno.env.get("LSVD_SIM_LIFECYCLE") === "all";
  // Half the journalled seeds reuse deleted segments (journal_files.ts): replay must read a reused
  // file's stale records as its unused end, never as writes. Half keep up to 4 syncs in flight,
  // returning out of order: a FLUSH is acknowledged only by a sync that covers it.
  const journal = usesJournal(seed)
    ? new MemoryJournalFiles(`journal-${seed}`, undefined, {
      recycle: seed % 2 === 0,
      concurrentSyncs: Math.floor(seed / 2) % 2 === 0 ? 1 : 4,
    })
    : undefined;
  const volume = await openVolume(store, clock, sectors * SECTOR, seed, undefined, journal);
  const shadow = new Shadow(encrypted(seed) ? SIM_SECRET : undefined);
  shadow.watch(store);
  return {
    options,
    seed,
    rand,
    large,
    sectors,
    clock,
    store,
    model: new Model(sectors),
    shadow,
    lifecycle,
    pendingSnapshots: new Set(),
    snapshots: [],
    journal,
    volume,
    nextId: 1,
    readFailure: undefined,
    counts: {
      crashes: 0,
      denseRegions: 0,
      damagedReads: 0,
      gcDeleted: 0,
      gcCopied: 0,
      rollbacks: 0,
      rescues: 0,
      journalReplays: 0,
      clones: 0,
    },
  };
}

/**
 * One random step: an operation started (not awaited), a clock advance, or a rollback or crash (the
 * promise to await).
 */
function simStep(sim: Sim, step: number): Promise<void> | undefined {
  const { rand, options } = sim;
  const r = rand();
  // Large seeds trim rarely, so fragmentation builds up until map regions turn dense.
  if (r < (sim.large ? 0.54 : 0.45)) writeStep(sim, step);
  else if (r < 0.55) zeroStep(sim, step); // trims and write-zeroes
  else if (r < 0.67) {
    const snap = sim.model.snapshot();
    if (options.traceSector !== undefined) {
      console.log(`step ${step} flush (seq ${sim.volume.stats.lastSequence})`);
    }
    sim.volume.flush().then(() => sim.model.makeDurable(snap), () => {});
  } else if (r < 0.77) readStep(sim, step);
  else if (sim.lifecycle && r < 0.80) lifecycleStep(sim, step);
  else if (r < 0.985) sim.clock.advance(Math.floor(rand() * 25));
  else if (sim.counts.crashes < (options.crashes ?? 3) && sim.lifecycle && rand() < 0.35) {
    return rollbackStep(sim, step);
  } else if (sim.counts.crashes < (options.crashes ?? 3)) return crashStep(sim, step);
  return undefined;
}

/** Whether the traced sector (debugging) is in [first, first + count). */
function traces(sim: Sim, first: number, count: number): boolean {
  const t = sim.options.traceSector;
  return t !== undefined && t >= first && t < first + count;
}

/** A write (FUA one time in ten) of sectors that name it. */
function writeStep(sim: Sim, step: number): void {
  const { rand, sectors, model } = sim;
  const count = 1 + Math.floor(rand() * Math.min(sim.large ? 2 : 6, sectors));
  const first = Math.floor(rand() * (sectors - count + 1));
  const id = sim.nextId++;
  const data = new Uint8Array(count * SECTOR);
  for (let k = 0; k < count; k++) data.set(sectorBytes(id, first + k), k * SECTOR);
  const fua = rand() < 0.1;
  const issue = model.issue(first, count, id);
  const traced = traces(sim, first, count);
  if (traced) {
    console.log(
      `step ${step} t=${sim.clock.nowMs()} write ${id} [${first},+${count}) issue ${issue} fua ${fua}`,
    );
  }
  sim.volume.write(first * SECTOR, data, { fua }).then(() => {
    if (traced) console.log(`  ack write ${id} t=${sim.clock.nowMs()} seq ${sim.volume.stats.lastSequence}`);
    model.ack(first, count, issue);
    if (fua) {
      const snap = new Array(sectors).fill(-1);
      for (let s = first; s < first + count; s++) snap[s] = issue;
      model.makeDurable(snap);
    }
  }, () => {});
  data.fill(0xee); // the caller may reuse its buffer at once
}

/** A trim or a write-zeroes. */
function zeroStep(sim: Sim, step: number): void {
  const { rand, sectors } = sim;
  const count = 1 + Math.floor(rand() * sectors / 2);
  const first = Math.floor(rand() * (sectors - count + 1));
  const issue = sim.model.issue(first, count, 0);
  if (traces(sim, first, count)) {
    console.log(`step ${step} t=${sim.clock.nowMs()} zero [${first},+${count}) issue ${issue}`);
  }
  const op = rand() < 0.5
    ? sim.volume.trim(first * SECTOR, count * SECTOR)
    : sim.volume.writeZeroes(first * SECTOR, count * SECTOR);
  op.then(() => sim.model.ack(first, count, issue), () => {});
}

/** A read: every sector must hold a write the model allows, or the read fails as damage or a crash. */
function readStep(sim: Sim, step: number): void {
  const { rand, sectors, model } = sim;
  const ctx = `seed ${sim.seed}`;
  const checkRead = (fn: () => void) => {
    try {
      fn();
    } catch (e) {
      sim.readFailure ??= e;
    }
  };
  const count = 1 + Math.floor(rand() * 8);
  const first = Math.floor(rand() * (sectors - count + 1));
  const floor = model.acked.slice(first, first + count);
  const dest = new Uint8Array(count * SECTOR);
  sim.volume.read(first * SECTOR, dest).then(() =>
    checkRead(() => {
      for (let k = 0; k < count; k++) {
        const id = decodeSector(dest.subarray(k * SECTOR), first + k, `${ctx} read at step ${step}`);
        const ok = model.allowed(first + k, floor[k]!);
        assert(
          ok.has(id),
          `${ctx}: read at step ${step} saw write ${id} at sector ${first + k}, allowed ${[...ok]}`,
        );
      }
    }), (e) =>
    checkRead(() => {
      // Damage fails a read as "data"; a crash fails reads in flight as "unavailable" (the store
      // went away) or "closed" (the abandoned volume stops retrying).
      assert(
        isLsvdError(e, "data") || isLsvdError(e, "unavailable") || isLsvdError(e, "closed"),
        `${ctx}: read at step ${step}: ${e}`,
      );
      if (isLsvdError(e, "data")) sim.counts.damagedReads++;
    }));
}

/** A GC pass of the served volume, adding to the counts. */
function collect(sim: Sim): Promise<unknown> {
  return sim.volume.collectGarbage().then((x) => (
    sim.counts.gcDeleted += x.deletedObjects, sim.counts.gcCopied += x.copiedObjects
  ));
}

/** Garbage collection, snapshots: what a pass may delete is captured first (the oracle). */
function lifecycleStep(sim: Sim, step: number): void {
  const { rand, clock, store, snapshots } = sim;
  const log = Deno.env.get("LSVD_SIM_LOG");
  const g = rand();
  if (g < 0.6) {
    sim.shadow.capture(store);
    if (log) console.log(`t=${clock.nowMs()} gc start`);
    sim.volume.collectGarbage().then((x) => {
      sim.counts.gcDeleted += x.deletedObjects;
      sim.counts.gcCopied += x.copiedObjects;
      if (log) console.log(`t=${clock.nowMs()} gc ${JSON.stringify(x)}`);
    }, (e) => {
      if (log) console.log(`t=${clock.nowMs()} gc failed ${e}`);
    });
  } else if (g < 0.85 || snapshots.length === 0) {
    const from = promisedFrom(store), to = sim.volume.stats.durableThrough;
    if (to < from) return;
    const sequence = from + Math.floor(rand() * (to - from + 1));
    const name = `s${step}`;
    const retried = new RetryingStore(store, { clock, attemptsMax: 1000 });
    const creating = createSnapshot(retried, "", { version: 1, name, sequence, createdMs: clock.wallMs() })
      .then(() => {
        if (log) console.log(`t=${clock.nowMs()} snapshot ${name} at ${sequence}`);
        snapshots.push({ name, sequence });
      }, () => {});
    sim.pendingSnapshots.add(creating);
    creating.finally(() => sim.pendingSnapshots.delete(creating));
  } else {
    const [gone] = snapshots.splice(Math.floor(rand() * snapshots.length), 1);
    deleteSnapshot(new RetryingStore(store, { clock, attemptsMax: 1000 }), "", gone!.name).catch(() => {});
  }
}

/** Every kept point still reads as the shadow says (checkRetained). */
async function checkKeptPoints(sim: Sim, context: string): Promise<void> {
  await checkRetained(sim.store, sim.shadow, sim.snapshots, sim.volume.stats.lastSequence, {
    clock: sim.clock,
    sectors: sim.sectors,
    seed: sim.seed,
    rand: sim.rand,
    context,
    lifecycle: sim.lifecycle,
    gc: () => collect(sim),
  });
}

/**
 * A rollback (as `lsvd rollback` does it) to a random kept point: the daemon stops cleanly, objects
 * after the point move under archive/, and the disk must be exactly that point.
 */
async function rollbackStep(sim: Sim, step: number): Promise<void> {
  const { rand, clock, model, shadow, snapshots, sectors } = sim;
  sim.counts.crashes++;
  // Snapshots being created settle first (the tool refuses while one is after its point).
  await pump(Promise.allSettled([...sim.pendingSnapshots]), clock);
  await pump(sim.volume.close(), clock);
  model.makeDurable(model.snapshot());
  const store = sim.store = sim.store.reopen({ errorRate: 0 });
  store.setFaults({ corruptReadRate: 0 }); // the tool's own reads are not what is tested here
  shadow.capture(store);
  const retried = new RetryingStore(store, { clock, attemptsMax: 1000 });
  const state = await pump(listLogState(retried, ""), clock);
  const from = promisedFrom(store);
  const point = from + Math.floor(rand() * (state.endSequence - from + 1));
  let refused = false;
  for (const gone of snapshots.filter((x) => x.sequence > point)) {
    await pump(deleteSnapshot(retried, "", gone.name), clock);
  }
  snapshots.splice(0, snapshots.length, ...snapshots.filter((x) => x.sequence <= point));
  await pump(
    rollbackLog(retried, state, point, {
      cipher: encrypted(sim.seed) ? cipherOf(state.format, SIM_SECRET, "") : undefined,
      log: () => {},
      archiveId: `rb${step}`,
      writerEpoch: 1_000_000 + step,
      wallNowMs: clock.wallMs(),
    }),
    clock,
  ).then((r) => {
    if (r.rescuedSectors > 0) sim.counts.rescues++;
  }, (e) => {
    // Refused only when GC deleted objects after the point (a snapshot older than the window).
    assert(isLsvdError(e, "invalid"), `seed ${sim.seed}: rollback to ${point}: ${e}`);
    refused = true;
  });
  for (const c of state.checkpoints.filter((c) => c.sequence > point)) {
    if (!refused) await pump(store.delete(c.key), clock);
  }
  const expected = refused ? undefined : shadow.stateAt(point, sectors);
  if (!refused) shadow.dropAfter(point);
  sim.volume = await openVolume(store, clock, sectors * SECTOR, sim.seed, undefined, sim.journal);
  const context = `seed ${sim.seed} after rollback to ${point} at step ${step}`;
  if (expected !== undefined) {
    assertSameDisk(await readAll(sim.volume, sectors, clock, context), expected, context);
  }
  await checkRecovered(sim.volume, model, sectors, clock, context, expected !== undefined);
  sim.counts.rollbacks += refused ? 0 : 1;
  await checkKeptPoints(sim, context);
}

/** A crash: the store keeps some unacknowledged writes, the journal is cut back; a fresh volume recovers. */
async function crashStep(sim: Sim, step: number): Promise<void> {
  const { rand } = sim;
  const crashes = ++sim.counts.crashes;
  sim.store.crash({ keepUnacknowledgedProbability: rand() });
  sim.volume.abandon();
  sim.journal = sim.journal?.crash(rand);
  await settle();
  sim.store = sim.store.reopen({ errorRate: 0.05 });
  sim.volume = await openVolume(sim.store, sim.clock, sim.sectors * SECTOR, sim.seed, undefined, sim.journal);
  if (sim.volume.stats.journalReplayedRecords > 0) sim.counts.journalReplays++;
  const context = `seed ${sim.seed} after crash ${crashes} at step ${step}`;
  await checkRecovered(sim.volume, sim.model, sim.sectors, sim.clock, context);
  sim.shadow.dropAfter(sim.volume.stats.lastSequence);
  await checkKeptPoints(sim, context);
}

/** Final: a clean close must make everything acknowledged durable (and leave the journal empty). */
async function closeAndCheck(sim: Sim): Promise<void> {
  const { clock } = sim;
  const closing = sim.volume.close();
  let closed = false;
  closing.then(() => (closed = true), () => (closed = true));
  for (let i = 0; i < 10_000 && !closed; i++) {
    clock.advance(10);
    await settle();
  }
  await closing;
  sim.model.makeDurable(sim.model.snapshot());
  sim.store = sim.store.reopen({ errorRate: 0 });
  if (sim.journal !== undefined) {
    assert.equal(sim.journal.totalBytes, 0, `seed ${sim.seed}: a clean close leaves the journal empty`);
  }
  sim.volume = await openVolume(sim.store, clock, sim.sectors * SECTOR, sim.seed, undefined, sim.journal);
  const context = `seed ${sim.seed} after clean close`;
  await checkRecovered(sim.volume, sim.model, sim.sectors, clock, context);
  sim.shadow.dropAfter(sim.volume.stats.lastSequence);
  await checkKeptPoints(sim, context);
}

/** A clone of a kept point lives (writes, a crash, a source GC pass, flatten) while the source stays open. */
async function cloneStep(sim: Sim): Promise<void> {
  const { rand, clock, sectors, seed } = sim;
  let cleanDepth = 0;
  const end = sim.volume.stats.lastSequence, from = promisedFrom(sim.store);
  if (!sim.lifecycle || end < from) return;
  await cloneLife({
    store: sim.store,
    shadow: sim.shadow,
    clock,
    sectors,
    point: from + Math.floor(rand() * (end - from + 1)),
    rand,
    context: `seed ${seed}`,
    pump: (p) => pump(p, clock),
    readAll: (v, context) => readAll(v, sectors, clock, context),
    gc: () => collect(sim),
    sectorBytes,
    secret: encrypted(seed) ? SIM_SECRET : undefined,
    cleanReads: (clean) => {
      cleanDepth += clean ? 1 : -1;
      sim.store.setFaults({ corruptReadRate: cleanDepth > 0 ? 0 : corruptReadRate(seed) });
    },
  }, "clone");
  sim.counts.clones++;
}

/** Runs the clock until p settles. */
async function pump<T>(p: Promise<T>, clock: ManualClock): Promise<T> {
  let done = false;
  p.then(() => (done = true), () => (done = true));
  for (let i = 0; i < 10_000 && !done; i++) {
    clock.advance(5);
    await settle();
  }
  return await p;
}

/**
 * Every snapshot and a few random points the store promises to keep read back exactly as the
 * shadow replay of the log says (nothing a retained point needs was deleted).
 */
async function checkRetained(
  store: MemoryStore,
  shadow: Shadow,
  snapshots: readonly { name: string; sequence: number }[],
  end: number,
  o: {
    clock: ManualClock;
    sectors: number;
    seed: number;
    rand: () => number;
    context: string;
    gc: () => Promise<unknown>;
    /** GC, snapshots, rollbacks and kept-point checks run in this seed. */
    lifecycle: boolean;
  },
) {
  if (!o.lifecycle) return;
  // One pass first: it also lists again a snapshot created while a pass was between its listing
  // and its record when a crash came before that pass corrected its record (refused till then).
  shadow.capture(store);
  store.setFaults({ corruptReadRate: 0 });
  await pump(o.gc(), o.clock).catch(() => {});
  store.setFaults({ corruptReadRate: corruptReadRate(o.seed) });
  shadow.capture(store);
  const from = promisedFrom(store);
  const points = snapshots.map((s) => s.sequence);
  for (let i = 0; i < 2 && end >= from; i++) points.push(from + Math.floor(o.rand() * (end - from + 1)));
  if (Deno.env.get("LSVD_SIM_LOG")) {
    console.log(`check points ${points} from ${from} end ${end} keys ${store.keys("collected/")}`);
  }
  for (const point of points) {
    const past = await openVolume(store, o.clock, o.sectors * SECTOR, o.seed, point);
    store.setFaults({ corruptReadRate: 0 });
    const disk = await readAll(past, o.sectors, o.clock, `${o.context}, point ${point}`);
    store.setFaults({ corruptReadRate: corruptReadRate(o.seed) });
    await past.close();
    assertSameDisk(
      disk,
      shadow.stateAt(point, o.sectors),
      `${o.context}, point ${point} (kept from ${from})`,
    );
  }
}

async function checkRecovered(
  volume: Volume,
  model: Model,
  sectors: number,
  clock: ManualClock,
  context: string,
  rolledBack = false,
) {
  const disk = await readAll(volume, sectors, clock, context);
  const values: number[] = [];
  for (let s = 0; s < sectors; s++) {
    const id = decodeSector(disk.subarray(s * SECTOR), s, context);
    const ok = model.allowed(s, model.durable[s]!);
    // After a rollback the disk is the point's (checked against the shadow replay), not the model's.
    if (!rolledBack) {
      assert(ok.has(id), `${context}: sector ${s} holds write ${id}; allowed ${[...ok].join(",")}`);
    }
    values.push(id);
  }
  model.rebase(values);
}
