/**
 * @module
 * Seeded simulation of racing writers (docs/design/fencing.md): two or three Volume instances, each
 * a "process" with its own handle on one fault-injecting MemoryStore (transient errors, PUTs that
 * land but report failure, latency that reorders), on one manual clock. Writers are paused (their
 * store calls held, as under SIGSTOP, then released: late uploads and lease renewals), crash
 * (their handle dies; unacknowledged writes land or not), and are taken over with `takeover`, or
 * by a `standby` that waits until the paused holder's lease expires on the injected clock.
 *
 * After every run, with every paused writer resumed and its late uploads landed:
 *   - the log is never forked: along the gap-free log, writer epochs never decrease, so no object
 *     of a fenced writer lies after the fence (a fresh load never stops at a zombie);
 *   - a fresh writer recovers a disk where every sector holds the newest write any writer saw
 *     acknowledged by a completed FLUSH (or FUA), or a write issued after it;
 *   - a follower (`serve --read-only --follow`, its own pausable handle, polled at random steps)
 *     served at each point P it reached exactly the disk the surviving log has at P (never a state
 *     with a zombie or an object later archived), and catches up with the log's end after the run.
 */

import assert from "node:assert/strict";
import { RetryingStore } from "../../src/store/retry.ts";
import { MemoryStore } from "../../src/store/memory.ts";
import type {
  ByteRange,
  GetResult,
  HeadResult,
  ListOptions,
  ListPage,
  ObjectStore,
  PutOptions,
  PutResult,
} from "../../src/store/store.ts";
import { ManualClock } from "../../src/util/clock.ts";
import { isLsvdError } from "../../src/util/errors.ts";
import { seededRandom } from "../../src/util/random.ts";
import { Volume } from "../../src/volume/volume.ts";
import { Follower } from "../../src/volume/follower.ts";
import type { LeaseMode } from "../../src/log/lease.ts";
import { listLogState } from "../../src/log/log_state.ts";
import { readObjectSummary } from "../../src/log/object_reader.ts";
import { decodeSector, readAll, sectorBytes, settle } from "./simulation.ts";
import { VolumeSecret } from "../../src/crypto/sector_cipher.ts";
import { claimedTrailerBytes, decodeTrailer } from "../../src/format/object.ts";

const SECTOR = 4096;
const LEASE_MS = 3000;
/** Every fourth seed (LSVD_RACE_ENCRYPTED=all: every seed) races on an encrypted volume, with this key. */
const RACE_SECRET = new VolumeSecret(new Uint8Array(32).fill(0x3c), "the racing simulation");

function encryptedRace(seed: number): { encryptionKey?: VolumeSecret } {
  const on = seed % 4 === 3 || Deno.env.get("LSVD_RACE_ENCRYPTED") === "all";
  return on ? { encryptionKey: RACE_SECRET } : {};
}
const WINDOW = 4;

/**
 * One process's view of the store: while paused, calls wait (a SIGSTOPped process issues nothing);
 * calls already under way finish (the kernel still sends them). Resuming releases them in order,
 * long after another writer may have fenced this one.
 */
class PausableStore implements ObjectStore {
  readonly description: string;
  readonly inner: MemoryStore;
  #paused = false;
  #waiting: (() => void)[] = [];

  constructor(inner: MemoryStore) {
    this.inner = inner;
    this.description = inner.description;
  }

  get paused(): boolean {
    return this.#paused;
  }

  pause(): void {
    this.#paused = true;
  }

  resume(): void {
    this.#paused = false;
    const waiting = this.#waiting;
    this.#waiting = [];
    for (const go of waiting) go();
  }

  async #gate(): Promise<void> {
    while (this.#paused) await new Promise<void>((resolve) => this.#waiting.push(resolve));
  }

  async put(key: string, body: Uint8Array, options?: PutOptions): Promise<PutResult> {
    const copy = body.slice(); // the caller's bytes are fixed until settled; held calls outlive that
    await this.#gate();
    return this.inner.put(key, copy, options);
  }
  async get(key: string, range?: ByteRange): Promise<GetResult> {
    await this.#gate();
    return this.inner.get(key, range);
  }
  async head(key: string): Promise<HeadResult> {
    await this.#gate();
    return this.inner.head(key);
  }
  async list(options: ListOptions): Promise<ListPage> {
    await this.#gate();
    return this.inner.list(options);
  }
  async delete(key: string): Promise<void> {
    await this.#gate();
    return this.inner.delete(key);
  }
  async copy(sourceKey: string, destinationKey: string, options?: PutOptions): Promise<void> {
    await this.#gate();
    return this.inner.copy(sourceKey, destinationKey, options);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

interface Writer {
  name: string;
  store: PausableStore;
  volume: Volume | undefined;
  /** Settled once open() finished (either way). */
  opening: Promise<void>;
  /** open() failed, the writer crashed, or it failed (fenced): issue nothing more. */
  gone: boolean;
  /** Per sector, the newest issue index this writer acknowledged. */
  acked: number[];
  /** It learned another writer took the volume (kind "fenced"). */
  fenced: boolean;
}

export interface RacingOptions {
  seed: number;
  steps?: number;
  sectors?: number;
}

export interface RacingResult {
  writers: number;
  takeovers: number;
  standbys: number;
  pauses: number;
  crashes: number;
  fencedWriters: number;
  acknowledgedFlushes: number;
  /** Follower images taken at a point and checked against the surviving log at that point. */
  followedPoints: number;
}

/** The state of one seeded race, shared by its steps. */
interface Race {
  seed: number;
  rand: () => number;
  sectors: number;
  ctx: string;
  clock: ManualClock;
  base: MemoryStore;
  result: RacingResult;
  /** Per sector, writes in global issue order. */
  history: { id: number; issue: number }[][];
  /** Per sector, the newest issue known durable. */
  durable: number[];
  issues: number;
  nextId: number;
  writers: Writer[];
  follower: Followed;
}

/** The follower process: its volume once open, and the images it served at each point. */
interface Followed {
  store: PausableStore | undefined;
  volume: Volume | undefined;
  follower: Follower | undefined;
  /** A poll, an open or a read is under way (one at a time: an image is one moment). */
  busy: boolean;
  images: { point: number; disk: Uint8Array }[];
}

/** Runs one seeded race; throws an AssertionError naming the seed on any violation. */
export async function simulateRacing(options: RacingOptions): Promise<RacingResult> {
  const race = newRace(options);
  const steps = options.steps ?? 250;
  startWriter(race, "refuse");
  await runClock(race, 300);
  for (let step = 0; step < steps; step++) {
    // Only a clock run is awaited: every other step starts an operation and goes on at once.
    const running = raceStep(race);
    if (running !== undefined) await running;
    await settle();
  }
  await playOut(race);
  const check = checkStore(race);
  await checkNoFork(race, check);
  await checkFollowed(race, check);
  await checkFlushesKept(race, check);
  return race.result;
}

/** A seed's store, history and counters; no writer yet. */
function newRace(options: RacingOptions): Race {
  const { seed } = options;
  const sectors = options.sectors ?? 32;
  const clock = new ManualClock();
  return {
    seed,
    rand: seededRandom(seed ^ 0x5eed),
    sectors,
    ctx: `racing seed ${seed}`,
    clock,
    base: new MemoryStore({
      seed,
      clock,
      errorRate: 0.03,
      landedErrorRate: 0.3,
      latencyMs: { min: 1, max: 40 },
    }),
    result: {
      writers: 0,
      takeovers: 0,
      standbys: 0,
      pauses: 0,
      crashes: 0,
      fencedWriters: 0,
      acknowledgedFlushes: 0,
      followedPoints: 0,
    },
    history: Array.from({ length: sectors }, () => [{ id: 0, issue: -1 }]),
    durable: new Array<number>(sectors).fill(-1),
    issues: 0,
    nextId: 1,
    writers: [],
    follower: { store: undefined, volume: undefined, follower: undefined, busy: false, images: [] },
  };
}

/** Another process opens the volume with its own handle on the store (not awaited). */
function startWriter(race: Race, mode: LeaseMode): Writer {
  const { writers, clock, sectors, seed } = race;
  const name = `w${writers.length + 1}`;
  const store = new PausableStore(race.base.reopen());
  const w: Writer = {
    name,
    store,
    volume: undefined,
    opening: Promise.resolve(),
    gone: false,
    acked: new Array(sectors).fill(-1),
    fenced: false,
  };
  w.opening = Volume.open({
    store,
    clock,
    log: Deno.env.get("LSVD_SIM_LOG") ? (l) => console.log(`${name} t=${clock.nowMs()}: ${l}`) : () => {},
    sizeBytes: sectors * SECTOR,
    objectBytesMax: 4 * SECTOR,
    dirtyBytesMax: 16 * SECTOR,
    sealDelayMs: 20,
    uploadsMax: WINDOW,
    uploadAttemptsMax: 1000,
    cacheBytesMax: 0,
    recoveryId: `${name}-s${seed}`,
    checkpointEveryObjects: [0, 5][seed % 2]!,
    flushPolicy: seed % 3 === 1 ? "each" : "group",
    leaseMode: mode,
    leaseDurationMs: LEASE_MS,
    ...encryptedRace(seed),
    leaseHolder: { host: `host-${name}`, pid: 100 + writers.length, nonce: `${name}-${seed}` },
  }).then((v) => {
    w.volume = v;
    v.whenFailed().then((e) => {
      w.gone = true;
      if (isLsvdError(e, "fenced")) w.fenced = true;
    });
  }, (e) => {
    w.gone = true; // refused, fenced while starting, or its handle crashed
    if (isLsvdError(e, "fenced")) w.fenced = true;
  });
  writers.push(w);
  race.result.writers++;
  return w;
}

/** Writers that opened and neither failed nor crashed. */
function live(race: Race): Writer[] {
  return race.writers.filter((w) => w.volume !== undefined && !w.gone && !w.store.inner.crashed);
}

function pick<T>(race: Race, xs: T[]): T | undefined {
  return xs.length === 0 ? undefined : xs[Math.floor(race.rand() * xs.length)];
}

/** Moves the clock on by `ms` in steps, letting everything run at each. */
async function runClock(race: Race, ms: number, stepMs = 10): Promise<void> {
  for (let t = 0; t < ms; t += stepMs) {
    race.clock.advance(stepMs);
    await settle();
  }
}

/** One random step; a clock run is returned to be awaited. */
function raceStep(race: Race): Promise<void> | undefined {
  const { rand, result, writers } = race;
  const r = rand();
  const w = pick(race, live(race));
  if (r < 0.45 && w !== undefined) writeStep(race, w);
  else if (r < 0.6 && w !== undefined) {
    const snapshot = [...w.acked];
    w.volume!.flush().then(() => {
      result.acknowledgedFlushes++;
      for (let s = 0; s < race.sectors; s++) race.durable[s] = Math.max(race.durable[s]!, snapshot[s]!);
    }, () => {});
  } else if (r < 0.83) return runClock(race, Math.floor(rand() * 60));
  else if (r < 0.85) followStep(race);
  else if (r < 0.9) pauseOrResume(race);
  else if (r < 0.96) { // another process starts on the volume
    if (writers.length < 3 || (writers.length < 5 && live(race).length === 0)) {
      const mode: LeaseMode = rand() < 0.5 ? "takeover" : "standby";
      if (mode === "takeover") result.takeovers++;
      else result.standbys++;
      startWriter(race, mode);
    }
  } else if (r < 0.98) { // a writer's process dies
    const target = pick(race, writers.filter((x) => !x.store.inner.crashed && !x.store.paused));
    if (target !== undefined) {
      result.crashes++;
      target.store.inner.crash({ keepUnacknowledgedProbability: rand() });
      target.volume?.abandon();
      target.gone = true;
    }
  }
  return undefined;
}

/** A write (FUA one time in ten) by writer w, recorded in the history in issue order. */
function writeStep(race: Race, w: Writer): void {
  const { rand, sectors } = race;
  const count = 1 + Math.floor(rand() * 3);
  const first = Math.floor(rand() * (sectors - count + 1));
  const id = race.nextId++;
  const data = new Uint8Array(count * SECTOR);
  for (let k = 0; k < count; k++) data.set(sectorBytes(id, first + k), k * SECTOR);
  const issue = race.issues++;
  for (let s = first; s < first + count; s++) race.history[s]!.push({ id, issue });
  const fua = rand() < 0.1;
  w.volume!.write(first * SECTOR, data, { fua }).then(() => {
    for (let s = first; s < first + count; s++) {
      w.acked[s] = Math.max(w.acked[s]!, issue);
      if (fua) race.durable[s] = Math.max(race.durable[s]!, issue);
    }
  }, () => {});
}

/** Pauses a writer (maybe while it is still opening), or resumes one. */
function pauseOrResume(race: Race): void {
  const paused = race.writers.filter((x) => x.store.paused);
  if (paused.length > 0 && race.rand() < 0.6) {
    pick(race, paused)!.store.resume();
  } else {
    const target = pick(race, race.writers.filter((x) => !x.gone && !x.store.paused));
    if (target !== undefined) {
      target.store.pause();
      race.result.pauses++;
    }
  }
}

/** Let everything play out: paused writers resume and land their late uploads, then see they were fenced. */
async function playOut(race: Race): Promise<void> {
  for (const w of race.writers) w.store.resume();
  race.follower.store?.resume();
  await runClock(race, 4 * LEASE_MS, 50);
  for (const w of race.writers) {
    // A standby still waiting behind a live holder is left waiting: the clock no longer moves.
    if (w.fenced) race.result.fencedWriters++;
    w.volume?.abandon();
  }
  await settle();
}

/** The store as a fresh process sees it, without faults. */
function checkStore(race: Race): MemoryStore {
  return race.base.reopen({ errorRate: 0, landedErrorRate: 0, latencyMs: { min: 0, max: 0 } });
}

/**
 * No fork: along the gap-free log, once an object of a writer that finished opening (so finished
 * its fence) appears, no object of an older writer follows. A writer stopped in the middle of its
 * fence leaves a window the next writer closes; its fence objects set no floor.
 */
async function checkNoFork(race: Race, check: MemoryStore): Promise<void> {
  const completed = new Set(
    race.writers.flatMap((w) => w.volume === undefined ? [] : [w.volume.stats.writerEpoch]),
  );
  const state = await listLogState(check, "");
  let floor = 0;
  for (const o of state.objects.slice(0, state.gapFreeCount)) {
    const epoch = (await readObjectSummary(check, o)).trailer?.writerEpoch ?? 0;
    assert(
      epoch >= floor,
      `${race.ctx}: object ${o.sequence} has epoch ${epoch} after the fence of epoch ${floor}: a fenced writer's object lies after the fence`,
    );
    if (completed.has(epoch)) floor = epoch;
  }
  checkNoncesUnique(race, check);
}

/**
 * Encrypted races (every fourth seed): no two different objects anywhere in the bucket (log or
 * archive: fenced writers' late uploads too) carry the same writer epoch and number, the prefix of
 * their sectors' nonces, so no (key, nonce) pair encrypts two plaintexts.
 */
function checkNoncesUnique(race: Race, check: MemoryStore): void {
  const seen = new Map<string, number>();
  for (const key of check.keys()) {
    if (!/^(archive\/[^/]+\/)?[0-9a-f]{16}$/.test(key)) continue;
    const bytes = check.rawGet(key)!;
    const trailer = decodeTrailer(bytes.subarray(bytes.length - claimedTrailerBytes(bytes)));
    if (trailer.sectorCrcs?.seal === undefined || trailer.sectorCrcs.length === 0) continue;
    const nonces = `${trailer.writerEpoch}:${trailer.sequence}`;
    const crc = seen.get(nonces);
    assert(
      crc === undefined || crc === trailer.crc32,
      `${race.ctx}: two objects encrypted with nonces ${nonces}`,
    );
    seen.set(nonces, trailer.crc32);
  }
}

/** Every acknowledged flush is in the disk a fresh writer recovers. */
async function checkFlushesKept(race: Race, check: MemoryStore): Promise<void> {
  const { clock, sectors, ctx } = race;
  const opening = Volume.open({
    store: check,
    clock,
    log: () => {},
    sizeBytes: sectors * SECTOR,
    leaseMode: "takeover",
    leaseDurationMs: LEASE_MS,
    leaseHolder: { host: "host-verifier", pid: 1, nonce: `v-${race.seed}` },
    ...encryptedRace(race.seed),
  });
  let opened = false;
  opening.then(() => (opened = true), () => (opened = true));
  for (let i = 0; i < 10_000 && !opened; i++) {
    clock.advance(10);
    await settle();
  }
  const volume = await opening;
  const disk = await readAll(volume, sectors, clock, ctx);
  for (let s = 0; s < sectors; s++) {
    const id = decodeSector(disk.subarray(s * SECTOR), s, ctx);
    const h = race.history[s]!;
    let from = 0;
    for (let i = 0; i < h.length; i++) if (h[i]!.issue <= race.durable[s]!) from = i;
    const allowed = h.slice(from).map((x) => x.id);
    assert(
      allowed.includes(id),
      `${ctx}: sector ${s} holds write ${id}; acknowledged flushes allow only ${allowed.join(",")}`,
    );
  }
  volume.abandon();
}

/**
 * The follower's step: opens it once there is a volume, pauses or resumes its process, or polls and
 * then reads its whole disk, kept with the point it shows. Never awaited: the race's clock runs it.
 */
function followStep(race: Race): void {
  const f = race.follower;
  if (f.busy) return;
  if (f.store !== undefined && race.rand() < 0.2) {
    if (f.store.paused) f.store.resume();
    else f.store.pause();
    return;
  }
  f.busy = true;
  const work = f.follower === undefined ? openFollower(race) : pollAndRead(race);
  work.finally(() => (f.busy = false));
}

async function openFollower(race: Race): Promise<void> {
  const f = race.follower;
  const store = f.store ?? new PausableStore(race.base.reopen());
  f.store = store;
  const volume = await Volume.open({
    store,
    clock: race.clock,
    log: () => {},
    readOnly: true,
    cacheBytesMax: 0,
  })
    .catch(() => undefined); // no volume yet, or its handle failed: try again at a later step
  if (volume === undefined) return;
  const follower = new Follower(volume, {
    store: new RetryingStore(store, { clock: race.clock, attemptsMax: 1000 }),
    prefix: "",
    clock: race.clock,
    log: () => {},
    intervalMs: 1e9,
  });
  await follower.start();
  f.volume = volume;
  f.follower = follower;
}

/** One poll, then the whole disk read at the point it reached (dropped when a reload moved it). */
async function pollAndRead(race: Race): Promise<void> {
  const f = race.follower;
  try {
    await f.follower!.poll();
    const point = f.volume!.followPosition.sequence;
    const disk = new Uint8Array(race.sectors * SECTOR);
    await f.volume!.read(0, disk);
    if (f.volume!.followPosition.sequence === point) f.images.push({ point, disk });
  } catch (e) {
    if (!isLsvdError(e) && !(e instanceof Error && e.name === "StoreError")) throw e;
  }
}

/**
 * After the run: the follower catches up with the log's end (as a fresh read-only load sees it), and
 * every image it served equals the surviving log's disk at its point (a sample of them).
 */
async function checkFollowed(race: Race, check: MemoryStore): Promise<void> {
  const f = race.follower;
  if (f.follower === undefined) return;
  while (f.busy) await runClock(race, 50);
  const end = await openAt(race, check, undefined);
  const endPoint = end.stats.lastSequence;
  end.abandon();
  for (let i = 0; i < 50 && f.volume!.followPosition.sequence < endPoint; i++) {
    f.busy = true;
    const done = pollAndRead(race).finally(() => (f.busy = false));
    while (f.busy) await runClock(race, 50);
    await done;
  }
  assert.equal(f.volume!.followPosition.sequence, endPoint, `${race.ctx}: the follower did not catch up`);
  const sample = f.images.filter((_, i) => i === f.images.length - 1 || race.rand() < 4 / f.images.length);
  for (const { point, disk } of sample) {
    const past = await openAt(race, check, point);
    const want = await readAll(past, race.sectors, race.clock, race.ctx);
    past.abandon();
    const at = disk.findIndex((b, i) => b !== want[i]);
    assert.equal(
      at,
      -1,
      `${race.ctx}: the follower served at object ${point} a disk the surviving log never had`,
    );
    race.result.followedPoints++;
  }
  await withClock(race, f.follower.stop());
  f.volume!.abandon();
}

/** Awaits `p` while the clock runs (its store calls sleep on it). */
async function withClock<T>(race: Race, p: Promise<T>): Promise<T> {
  let done = false;
  p.then(() => (done = true), () => (done = true));
  for (let i = 0; i < 10_000 && !done; i++) {
    race.clock.advance(10);
    await settle();
  }
  return await p;
}

/** The surviving log read-only at `point` (undefined: its end), on the fault-free handle. */
function openAt(race: Race, check: MemoryStore, point: number | undefined): Promise<Volume> {
  return withClock(
    race,
    Volume.open({
      store: check,
      clock: race.clock,
      log: () => {},
      readOnly: true,
      ...(point === undefined ? {} : { atSequence: point }),
    }),
  );
}
