/**
 * @module
 * Executes garbage-collection passes inside the writing daemon (the only process allowed to
 * delete). One pass:
 *
 *   list -> Pmin (newest object sealed before now - retention; binary search on trailer seal times)
 *   -> advance the map at Pmin (headers of objects that left the window) and load snapshot maps
 *   -> plan (src/log/gc.ts) -> read the candidates' live sectors -> copies sealed by the LogWriter,
 *     re-validated against the map at seal time -> copies durable
 *   -> collected record (create-only, cumulative) -> snapshots listed again -> delete objects
 *   -> delete older collected records.
 *
 * Bounded: at most `concurrency` GETs or DELETEs in flight, one object of copy data buffered per
 * GET plus one copy object being filled, `passCopyBytesMax` copied and `passDeletesMax` deleted
 * per pass. Every pass logs what it freed.
 */

import { SECTOR_BYTES } from "../format/object.ts";
import type { ObjectStore } from "../store/store.ts";
import type { Clock } from "../util/clock.ts";
import { LsvdError } from "../util/errors.ts";
import type { Logger } from "../util/log.ts";
import { readInOrder } from "../util/ordered.ts";
import { applyObject } from "../log/apply.ts";
import { addToRanges, COLLECTED_VERSION, type CollectedRecord, storeCollected } from "../log/collected.ts";
import {
  type Candidate,
  type GcThresholds,
  passThresholds,
  type RetainedMap,
  unreferenced,
} from "../log/gc.ts";
import { type GcSources, planGcRound } from "../log/gc_inputs.ts";
import { loadLog } from "../log/load.ts";
import { activeLink } from "../log/parent.ts";
import { listLogState, listSnapshots, type LoggedObject, type LogState } from "../log/log_state.ts";
import { type ObjectSummary, readObjectSummary } from "../log/object_reader.ts";
import { readVerified } from "../log/verified_read.ts";
import { isStale, pinnedLoad, readSnapshots, type SnapshotRecord } from "../log/snapshots.ts";
import type { CopyPiece } from "./copy_object.ts";
import type { ExtentMap } from "../map/extent_map.ts";
import type { LogWriter } from "./log_writer.ts";

export interface GcRunnerOptions {
  /** The volume's store, retried (a RetryingStore: src/store/retry.ts). */
  store: ObjectStore;
  prefix: string;
  clock: Clock;
  log: Logger;
  writer: LogWriter;
  /** The volume's map (the head), kept by the writer. */
  head: ExtentMap;
  /** Every point sealed within this long before now stays exact. */
  retentionMs: number;
  thresholds: GcThresholds;
  /** GETs / DELETEs in flight at once. */
  concurrency: number;
  /** Data bytes per copied object. */
  objectBytesMax: number;
  /** False while this daemon's writer lease is not valid (a pass then writes and deletes nothing). */
  mayDelete?: () => boolean;
}

export interface GcPassResult {
  /** The collected record written, or undefined when the pass changed nothing. */
  pass: number | undefined;
  /** Pmin: the oldest point of the retention window. */
  retainedFrom: number;
  /** The objects the pass planned to collect (what `lsvd gc --dry-run` predicts), ascending. */
  planned: number[];
  deletedObjects: number;
  deletedBytes: number;
  copiedObjects: number;
  copiedBytes: number;
  /** Candidates a retained point still needed after the copies (kept for a later pass). */
  kept: number;
}

interface Planned {
  candidate: Candidate;
  summary: ObjectSummary;
  pieces: CopyPiece[];
}

/** Copy objects are sealed before this many pieces, well inside one header even after splits. */
const PIECES_PER_COPY_MAX = 512;

export class GcRunner {
  #o: GcRunnerOptions;
  #pmin: RetainedMap | undefined;
  #snapshotMaps = new Map<string, RetainedMap>();
  #sealTimes = new Map<number, number>();
  #running: Promise<GcPassResult> | undefined;
  #counters = { passes: 0, deletedObjects: 0, deletedBytes: 0, copiedBytes: 0 };

  constructor(options: GcRunnerOptions) {
    this.#o = { ...options, thresholds: passThresholds(options.thresholds, options.objectBytesMax) };
  }

  get counters(): Readonly<
    { passes: number; deletedObjects: number; deletedBytes: number; copiedBytes: number }
  > {
    return this.#counters;
  }

  /** Runs one pass (a pass already running is joined, not doubled). */
  runPass(): Promise<GcPassResult> {
    if (this.#stopped) {
      return Promise.reject(new LsvdError("closed", "Cannot collect garbage: the volume is closed"));
    }
    this.#running ??= this.#pass().finally(() => (this.#running = undefined));
    return this.#running;
  }

  /** Stops: a running pass writes no record and deletes nothing from its next step on. */
  async stop(): Promise<void> {
    this.#stopped = true;
    await this.#running?.catch(() => {});
  }

  #stopped = false;
  /** Copies this runner sealed that no stored collected record lists yet. */
  #unrecorded: number[] = [];

  #halted(): boolean {
    return this.#stopped || this.#o.writer.failure !== undefined || this.#o.writer.closed ||
      this.#o.mayDelete?.() === false;
  }

  async #pass(): Promise<GcPassResult> {
    const o = this.#o;
    const state = await listLogState(o.store, o.prefix);
    const record = state.collectedRecord;
    const result = emptyPassResult();
    const wallNowMs = o.clock.wallMs();
    const round = await planGcRound(o.store, state, {
      head: o.head,
      durableThrough: o.writer.durableThrough,
      retentionMs: o.retentionMs,
      wallNowMs,
      knownOldThrough: this.#pmin?.sequence ?? 0,
      thresholds: o.thresholds,
      log: o.log,
      sources: this.#sources(state),
    });
    const { present, pmin, points, retained, plan } = round;
    this.#listedPoints = points;
    result.retainedFrom = pmin;
    result.planned = plan.map((c) => c.object.sequence);
    if (pmin === 0) return result;
    // Maps of snapshots deleted since are forgotten.
    const names = new Set(points.map((s) => s.name));
    for (const name of [...this.#snapshotMaps.keys()]) if (!names.has(name)) this.#snapshotMaps.delete(name);
    if (plan.length === 0 || this.#halted()) return result;
    const copies = await this.#copy(plan, retained, result);
    // Copies of an earlier pass that stopped before its record are in the retained maps too, so a
    // record must list them before anything they stand in for is deleted.
    this.#unrecorded.push(...copies);
    // A clone's zeros may hide its parent's data, which no listing of this volume shows.
    const parentHeld = activeLink(state.format) !== undefined;
    const doomed = this.#deletable(plan, present, retained, parentHeld);
    result.kept = plan.length - doomed.length;
    if ((doomed.length === 0 && copies.length === 0) || this.#halted()) return result;
    const honored = points.filter((s) => s.sequence < pmin);
    const next: CollectedRecord = {
      version: COLLECTED_VERSION,
      pass: (record?.pass ?? 0) + 1,
      collected: addToRanges(record?.collected ?? [], doomed.map((d) => d.sequence)),
      copies: addToRanges(record?.copies ?? [], this.#unrecorded),
      retainedFromSequence: pmin,
      snapshots: honored.map((s) => ({ name: s.name, sequence: s.sequence })),
      createdMs: wallNowMs,
    };
    if (!(await storeCollected(o.store, o.prefix, next))) {
      o.log(`Garbage collection stopped: collected record ${next.pass} exists (another writer collects).`);
      return result;
    }
    result.pass = next.pass;
    this.#unrecorded = [];
    const kept = [...honored, ...points.filter((s) => s.clone !== undefined)];
    if (await this.#snapshotAppeared(next, record, { honored, kept })) return result;
    if (this.#halted()) return result;
    await this.#delete(doomed, state, next.pass, result);
    this.#counters.passes++;
    o.log(
      `Garbage collection pass ${next.pass}: deleted ${result.deletedObjects} objects ` +
        `(${mib(result.deletedBytes)} MiB), copied ${mib(result.copiedBytes)} MiB of live data into ` +
        `${result.copiedObjects} objects, kept ${result.kept} still needed; points from object ${pmin} on are kept.`,
    );
    return result;
  }

  /**
   * After our record: a snapshot created between our listing and our record, while the record before
   * ours still kept its point. Then that promise is kept (nothing was deleted yet): a further record
   * keeps it and this pass deletes nothing (true).
   */
  async #snapshotAppeared(
    next: CollectedRecord,
    record: CollectedRecord | undefined,
    { honored, kept }: { honored: readonly SnapshotRecord[]; kept: SnapshotRecord[] },
  ): Promise<boolean> {
    const o = this.#o;
    const fresh = await this.#freshSnapshots(kept, next.retainedFromSequence);
    if (fresh.length > 0) {
      // A snapshot was created between our listing and our record, while the record before ours
      // still kept its point: keep that promise (nothing was deleted yet) and delete nothing now.
      o.log(`Garbage collection deletes nothing this pass: snapshot "${fresh[0]!.name}" appeared meanwhile.`);
      await storeCollected(o.store, o.prefix, {
        ...next,
        pass: next.pass + 1,
        retainedFromSequence: record?.retainedFromSequence ?? 0,
        snapshots: [...honored, ...fresh].map((s) => ({ name: s.name, sequence: s.sequence })),
      });
      return true;
    }
    return false;
  }

  /** The daemon's sources of a round: seal times and maps kept between passes. */
  #sources(state: LogState): GcSources {
    return {
      sealTimeOf: (x) => this.#sealTimeOf(x),
      mapAt: async (pmin, present) => {
        await this.#advance(state, present, pmin);
        return this.#pmin!.map;
      },
      snapshotMap: (s) => this.#snapshotMap(state, s),
    };
  }

  async #sealTimeOf(x: LoggedObject): Promise<number> {
    const known = this.#sealTimes.get(x.sequence);
    if (known !== undefined) return known;
    const summary = await readObjectSummary(this.#o.store, x);
    // Objects without a seal time (version-1 trailers) predate any window: they count as old.
    const t = summary.trailer?.sealTimeMs ?? -Infinity;
    this.#sealTimes.set(x.sequence, t);
    return t;
  }

  /** Brings the map at Pmin up to `pmin`: loaded once, then advanced by the headers that left the window. */
  async #advance(state: LogState, present: readonly LoggedObject[], pmin: number): Promise<void> {
    const o = this.#o;
    if (this.#pmin === undefined) {
      const loaded = await loadLog(o.store, state, {
        atSequence: pmin,
        concurrency: o.concurrency,
        log: o.log,
      });
      this.#pmin = { sequence: pmin, map: loaded.map };
      return;
    }
    const from = this.#pmin.sequence;
    if (pmin <= from) return;
    const map = this.#pmin.map;
    const leaving = present.filter((x) => x.sequence > from && x.sequence <= pmin);
    await readInOrder(leaving, o.concurrency, (x) => this.#summary(x), (x, s) => {
      applyObject(map, x.sequence, {
        entries: s.entries,
        zeroRanges: s.zeroRanges,
        origins: s.trailer?.origins,
      });
    });
    this.#pmin = { sequence: pmin, map };
    for (const x of leaving) this.#sealTimes.delete(x.sequence);
  }

  /** The map at a snapshot or pin (older than Pmin, a clone's or a follower's), loaded once per name and point. */
  async #snapshotMap(state: LogState, s: SnapshotRecord): Promise<ExtentMap> {
    const known = this.#snapshotMaps.get(s.name);
    if (known?.sequence === s.sequence) return known.map;
    const o = this.#o;
    const loaded = await loadLog(o.store, state, {
      concurrency: o.concurrency,
      log: o.log,
      ...pinnedLoad(s),
    });
    this.#snapshotMaps.set(s.name, { sequence: s.sequence, map: loaded.map });
    return loaded.map;
  }

  #summary(x: LoggedObject): Promise<ObjectSummary> {
    return readObjectSummary(this.#o.store, x);
  }

  /**
   * Reads each candidate's header, then the data of its sectors the head still maps to it, and
   * hands the pieces to the writer in copy objects. Each copy is applied to every retained map as
   * of that map's point, so they all point at the copy from now on. Returns the copies' numbers.
   */
  async #copy(plan: Candidate[], retained: readonly RetainedMap[], result: GcPassResult): Promise<number[]> {
    const o = this.#o;
    const copies: number[] = [];
    let batch: CopyPiece[] = [];
    let batchBytes = 0;
    const seal = () => {
      if (batch.length === 0) return;
      const sealed = o.writer.appendCopy(batch);
      batch = [];
      batchBytes = 0;
      if (sealed === undefined) return;
      for (const r of retained) {
        if (r.copiesThrough === undefined) applyObject(r.map, sealed.sequence, sealed, r.sequence);
      }
      copies.push(sealed.sequence);
      result.copiedObjects++;
      result.copiedBytes += sealed.sectors * SECTOR_BYTES;
    };
    this.#planned = new Map();
    await readInOrder(plan, o.concurrency, (c) => this.#read(c), (c, planned) => {
      this.#planned!.set(c.object.sequence, planned);
      for (const p of planned.pieces) {
        if (batchBytes + p.data.length > o.objectBytesMax || batch.length >= PIECES_PER_COPY_MAX) seal();
        batch.push(p);
        batchBytes += p.data.length;
      }
    });
    seal();
    this.#counters.copiedBytes += result.copiedBytes;
    if (copies.length > 0) await o.writer.durable(copies.at(-1)!);
    return copies;
  }

  #planned: Map<number, Planned> | undefined;
  /** The live snapshots and pins this pass planned with. */
  #listedPoints: readonly SnapshotRecord[] = [];

  /** A candidate's summary and the pieces of it the head still maps (with their data). */
  async #read(candidate: Candidate): Promise<Planned> {
    const o = this.#o;
    const x = candidate.object;
    const summary = await this.#summary(x);
    const pieces: Omit<CopyPiece, "data">[] = [];
    let offsetSectors = 0;
    summary.entries.forEach((e, i) => {
      const start = e.addressBytes / SECTOR_BYTES, length = e.lengthBytes / SECTOR_BYTES;
      const entryOffset = offsetSectors;
      offsetSectors += length;
      if (candidate.liveSectors === 0) return;
      o.head.lookup(start, length, (m) => {
        if (m.sequence !== x.sequence || m.offsetSectors !== entryOffset + m.startSector - start) return;
        pieces.push({
          startSector: m.startSector,
          lengthSectors: m.lengthSectors,
          sourceSequence: x.sequence,
          sourceOffsetSectors: m.offsetSectors,
          originSequence: summary.trailer?.origins?.[i] ?? x.sequence,
        });
      });
    });
    if (pieces.length === 0) return { candidate, summary, pieces: [] };
    const first = Math.min(...pieces.map((p) => p.sourceOffsetSectors));
    const end = Math.max(...pieces.map((p) => p.sourceOffsetSectors + p.lengthSectors));
    // Copied data gets fresh CRCs: it is checked against the source's first, so a copy never
    // launders damage (one fresh GET on a mismatch, as reads do; then the pass fails, "data").
    const crcs = summary.trailer?.sectorCrcs ?? null;
    const { body } = await readVerified(o.store, {
      key: x.key,
      sequence: x.sequence,
      range: { offsetSectors: first, lengthSectors: end - first },
      sizeBytes: x.sizeBytes,
      crcs: { table: () => Promise.resolve(crcs) },
      cipher: o.writer.cipher, // an encrypted volume: decrypted here, encrypted again by the writer
    });
    const withData = pieces.map((p) => ({
      ...p,
      data: body.subarray(
        (p.sourceOffsetSectors - first) * SECTOR_BYTES,
        (p.sourceOffsetSectors - first + p.lengthSectors) * SECTOR_BYTES,
      ),
    }));
    return { candidate, summary, pieces: withData };
  }

  /**
   * The candidates no retained point needs any more, ascending. Objects that only record a size
   * stay (the size at their points depends on them); an object with zero ranges goes only when no
   * older object remains (its zeros might otherwise uncover older data at some point).
   */
  #deletable(
    plan: Candidate[],
    present: readonly LoggedObject[],
    retained: readonly RetainedMap[],
    parentHeld: boolean,
  ): LoggedObject[] {
    const doomed: LoggedObject[] = [];
    const doomedSet = new Set<number>();
    for (const c of plan) {
      const k = c.object.sequence;
      const s = this.#planned!.get(k)!.summary;
      if (s.entries.length === 0 && s.zeroRanges.length === 0) continue;
      if (!unreferenced(k, this.#o.head, retained)) continue;
      const olderLeft = parentHeld || present.some((x) => x.sequence < k && !doomedSet.has(x.sequence));
      if (s.zeroRanges.length > 0 && olderLeft) {
        continue;
      }
      doomed.push(c.object);
      doomedSet.add(k);
    }
    this.#planned = undefined;
    return doomed;
  }

  /** False for objects this pass deletes or knows to have no data entries (size records). */
  #mayHoldData(x: LoggedObject, doomed: ReadonlySet<number>): boolean {
    return !doomed.has(x.sequence) && this.#planned!.get(x.sequence)?.summary.entries.length !== 0;
  }

  /** After the record: snapshots created meanwhile below Pmin that this pass did not honor. */
  async #freshSnapshots(honored: readonly SnapshotRecord[], pmin: number): Promise<SnapshotRecord[]> {
    const o = this.#o;
    const now = await readSnapshots(
      o.store,
      { snapshots: await listSnapshots(o.store, o.prefix) },
    );
    const known = new Set(honored.map((s) => `${s.name}@${s.sequence}`));
    const listed = new Set(this.#listedPoints.map((s) => s.name));
    // A clone pin made meanwhile counts at any point: the copies this pass made may be what its
    // point would read, and their sources must stay (src/log/parent.ts). So does a new follower's
    // pin: its map was loaded before this pass's copies (one that only advanced is not new).
    return now.filter((s) =>
      (s.follower === true && !isStale(s, o.clock.wallMs()) && !listed.has(s.name)) ||
      ((s.sequence < pmin || s.clone !== undefined) && !known.has(`${s.name}@${s.sequence}`))
    );
  }

  async #delete(doomed: LoggedObject[], state: LogState, pass: number, result: GcPassResult): Promise<void> {
    const o = this.#o;
    await readInOrder(
      doomed,
      o.concurrency,
      (x) => o.store.delete(x.key),
      (x) => {
        result.deletedObjects++;
        result.deletedBytes += x.sizeBytes;
      },
    );
    this.#counters.deletedObjects += result.deletedObjects;
    this.#counters.deletedBytes += result.deletedBytes;
    // The new record is cumulative: older ones say nothing it does not.
    for (const c of state.collected) {
      if (c.sequence < pass) {
        await o.store.delete(c.key);
      }
    }
  }
}

function mib(bytes: number): string {
  return (bytes / (1024 * 1024)).toFixed(1);
}

/** A pass's result before it has done anything. */
function emptyPassResult(): GcPassResult {
  return {
    pass: undefined,
    retainedFrom: 0,
    planned: [],
    deletedObjects: 0,
    deletedBytes: 0,
    copiedObjects: 0,
    copiedBytes: 0,
    kept: 0,
  };
}
