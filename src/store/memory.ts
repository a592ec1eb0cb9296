/**
 * @module
 * An in-memory object store with seeded fault injection, so unit tests and the deterministic
 * simulation can drive the real engine through errors, latency and crashes and replay any run
 * from its seed.
 *
 * A crash models the death of the process that owns a handle: every write it issued that has
 * not been acknowledged either lands or is lost (decided by the seeded generator), and every
 * pending or later operation on that handle fails with a Fatal error. `reopen()` gives the
 * "restarted process" a fresh handle over whatever landed.
 */

import { assert } from "../util/assert.ts";
import { type Clock, systemClock } from "../util/clock.ts";
import { compareKeys } from "./key_order.ts";
import {
  assertRange,
  type ByteRange,
  contentEtag,
  type GetResult,
  type HeadResult,
  type ListOptions,
  type ListPage,
  type ObjectStore,
  type PutOptions,
  type PutResult,
  StoreError,
} from "./store.ts";
import { seededRandom } from "../util/random.ts";

/** S3 never returns more than this many keys per page; neither does this store. */
const LIST_PAGE_KEYS_MAX = 1000;

export interface LatencyRange {
  min: number;
  max: number;
}

export interface MemoryFaults {
  /** Probability (0..1) that any operation fails with a Transient error. */
  errorRate?: number;
  /**
   * Probability (0..1) that a write (put, copy, delete) failing with a Transient error took
   * effect anyway, as when a timeout hides a PUT the server stored. Default 0.
   */
  landedErrorRate?: number;
  /** Each operation takes a uniformly drawn time in this range on the injected clock. */
  latencyMs?: LatencyRange;
  /**
   * Ignore If-None-Match and If-Match, overwriting unconditionally, as stores without conditional
   * writes do (s3rver, some cheap providers): what the start-up probe must detect.
   */
  ignoreConditions?: boolean;
  /**
   * Probability (0..1) that a successful GET answers with one bit flipped at a random position,
   * as a faulty disk, network path or S3-compatible server might: what lsvd reads is damaged, what
   * is stored is not. Default 0.
   */
  corruptReadRate?: number;
}

export interface MemoryStoreOptions extends MemoryFaults {
  /** Seeds every random decision of this handle; default 1. */
  seed?: number;
  /** Clock that latency sleeps on; default the system clock. */
  clock?: Clock;
  /** Overrides the description used in log lines and errors. */
  description?: string;
}

export interface CrashOptions {
  /** Probability (0..1) that each issued but unacknowledged write lands; default 0.5. */
  keepUnacknowledgedProbability?: number;
}

/** Operation counts of one handle, for tests that check how many requests the engine makes. */
export interface MemoryStoreStats {
  puts: number;
  gets: number;
  lists: number;
  deletes: number;
  copies: number;
}

/** The contents every handle over the same data shares. */
interface Bucket {
  objects: Map<string, Uint8Array>;
  handlesOpened: number;
  /** Told of each object a DELETE through any handle is about to remove (the simulation's oracle). */
  beforeDelete?: (key: string, body: Uint8Array) => void;
}

interface Pending {
  /** Present for writes: applies the write (used when a crash lets it land). */
  land?: () => void;
  reject: (error: unknown) => void;
}

interface Operation<T> {
  action: string;
  key: string;
  isWrite: boolean;
  apply: () => T;
}

function checkProbability(name: string, value: number | undefined): void {
  if (value === undefined) return;
  if (!(value >= 0 && value <= 1)) {
    throw new RangeError(`Cannot configure the memory store: ${name} ${value} is not within 0..1`);
  }
}

function checkLatency(latency: LatencyRange | undefined): void {
  if (latency === undefined) return;
  if (!(latency.min >= 0 && latency.max >= latency.min)) {
    throw new RangeError(
      `Cannot configure the memory store: latency ${latency.min}..${latency.max} ms is not a range`,
    );
  }
}

export class MemoryStore implements ObjectStore {
  readonly description: string;
  readonly stats: MemoryStoreStats = { puts: 0, gets: 0, lists: 0, deletes: 0, copies: 0 };
  #bucket: Bucket = { objects: new Map(), handlesOpened: 1 };
  #seed: number;
  #random: () => number;
  #clock: Clock;
  #errorRate = 0;
  #landedErrorRate = 0;
  #ignoreConditions = false;
  #corruptReadRate = 0;
  #latencyMs: LatencyRange | undefined;
  #pending = new Set<Pending>();
  #crashed = false;
  #closed = false;

  constructor(options: MemoryStoreOptions = {}) {
    this.#seed = options.seed ?? 1;
    this.#random = seededRandom(this.#seed);
    this.#clock = options.clock ?? systemClock;
    this.description = options.description ?? "the memory store";
    this.setFaults(options);
  }

  /** Changes fault injection from now on (e.g. off while a test checks the recovered state). */
  setFaults(faults: MemoryFaults): void {
    checkProbability("errorRate", faults.errorRate);
    checkProbability("landedErrorRate", faults.landedErrorRate);
    checkProbability("corruptReadRate", faults.corruptReadRate);
    checkLatency(faults.latencyMs);
    if (faults.errorRate !== undefined) this.#errorRate = faults.errorRate;
    if (faults.landedErrorRate !== undefined) this.#landedErrorRate = faults.landedErrorRate;
    if (faults.latencyMs !== undefined) this.#latencyMs = { ...faults.latencyMs };
    if (faults.ignoreConditions !== undefined) this.#ignoreConditions = faults.ignoreConditions;
    if (faults.corruptReadRate !== undefined) this.#corruptReadRate = faults.corruptReadRate;
  }

  /** True once crash() was called on this handle. */
  get crashed(): boolean {
    return this.#crashed;
  }

  /** Operations issued on this handle and not yet settled. */
  get pendingCount(): number {
    return this.#pending.size;
  }

  /**
   * Kills the "process" owning this handle: each unacknowledged write lands or is lost at
   * random, and every pending and future operation on this handle fails with Fatal.
   */
  crash(options: CrashOptions = {}): void {
    const keep = options.keepUnacknowledgedProbability ?? 0.5;
    checkProbability("keepUnacknowledgedProbability", keep);
    this.#crashed = true;
    const pending = [...this.#pending];
    this.#pending.clear();
    for (const p of pending) {
      if (p.land !== undefined && this.#random() < keep) p.land();
      p.reject(
        new StoreError("Fatal", `Cannot finish the operation on ${this.description}: the process crashed`),
      );
    }
  }

  /**
   * A new handle over the same contents, as a restarted process (or a second process) would
   * open. Options default to this handle's, with a seed derived from this handle's seed.
   */
  reopen(options: MemoryStoreOptions = {}): MemoryStore {
    const handleNumber = this.#bucket.handlesOpened++;
    const store = new MemoryStore({
      seed: (this.#seed + Math.imul(handleNumber, 0x9e3779b9)) >>> 0,
      clock: this.#clock,
      description: this.description,
      errorRate: this.#errorRate,
      landedErrorRate: this.#landedErrorRate,
      ignoreConditions: this.#ignoreConditions,
      corruptReadRate: this.#corruptReadRate,
      ...(this.#latencyMs === undefined ? {} : { latencyMs: this.#latencyMs }),
      ...options,
    });
    store.#bucket = this.#bucket;
    return store;
  }

  /** Every key in the store in ascending order (test inspection; no faults, works after a crash). */
  keys(prefix = ""): string[] {
    return [...this.#bucket.objects.keys()].filter((k) => k.startsWith(prefix)).sort(compareKeys);
  }

  /** A copy of the bytes stored under key, or undefined (test inspection). */
  /** Calls `observer` with each object a DELETE (through this or any reopened handle) removes. */
  observeDeletes(observer: (key: string, body: Uint8Array) => void): void {
    this.#bucket.beforeDelete = observer;
  }

  rawGet(key: string): Uint8Array | undefined {
    return this.#bucket.objects.get(key)?.slice();
  }

  /** Stores bytes directly, bypassing faults (test set-up, corruption tests). */
  rawPut(key: string, body: Uint8Array): void {
    this.#bucket.objects.set(key, body.slice());
  }

  /** Deletes a key directly, bypassing faults; true when it existed. */
  rawDelete(key: string): boolean {
    return this.#bucket.objects.delete(key);
  }

  /** Start-up probe: fails like any operation once the handle crashed or closed. */
  check(): Promise<void> {
    return this.#run({ action: "check", key: "", isWrite: false, apply: () => {} });
  }

  put(key: string, body: Uint8Array, options: PutOptions = {}): Promise<PutResult> {
    this.stats.puts++;
    const copy = body.slice();
    return this.#run({
      action: "write",
      key,
      isWrite: true,
      apply: () => this.#store(key, copy, options),
    });
  }

  get(key: string, range?: ByteRange): Promise<GetResult> {
    this.stats.gets++;
    if (range !== undefined) assertRange(range);
    // Drawn only when enabled, so runs without corruption replay as they did before it existed.
    const flipAt = this.#corruptReadRate > 0 && this.#random() < this.#corruptReadRate
      ? this.#random()
      : undefined;
    return this.#run({
      action: "read",
      key,
      isWrite: false,
      apply: () => {
        const result = this.#read(key, range);
        if (flipAt !== undefined) flipBit(result.body, flipAt);
        return result;
      },
    });
  }

  head(key: string): Promise<HeadResult> {
    this.stats.gets++;
    return this.#run({
      action: "read",
      key,
      isWrite: false,
      apply: () => {
        const object = this.#bucket.objects.get(key);
        if (object === undefined) throw this.#notFound("read", key);
        return { sizeBytes: object.length, etag: contentEtag(object) };
      },
    });
  }

  list(options: ListOptions): Promise<ListPage> {
    this.stats.lists++;
    return this.#run({
      action: "list",
      key: options.prefix,
      isWrite: false,
      apply: () => this.#list(options),
    });
  }

  delete(key: string): Promise<void> {
    this.stats.deletes++;
    return this.#run({
      action: "delete",
      key,
      isWrite: true,
      apply: () => {
        const body = this.#bucket.objects.get(key);
        if (body !== undefined) this.#bucket.beforeDelete?.(key, body);
        this.#bucket.objects.delete(key);
      },
    });
  }

  copy(sourceKey: string, destinationKey: string, options: PutOptions = {}): Promise<void> {
    this.stats.copies++;
    return this.#run({
      action: "copy",
      key: sourceKey,
      isWrite: true,
      apply: () => {
        const source = this.#bucket.objects.get(sourceKey);
        if (source === undefined) throw this.#notFound("copy", sourceKey);
        this.#store(destinationKey, source, options);
      },
    });
  }

  close(): Promise<void> {
    this.#closed = true;
    return Promise.resolve();
  }

  #store(key: string, body: Uint8Array, options: PutOptions): PutResult {
    const etag = contentEtag(body);
    const existing = this.#bucket.objects.get(key);
    const conditional = options.ifNoneMatch === true || options.ifMatch !== undefined;
    if (conditional && !this.#ignoreConditions) {
      // Byte-identical content means a retry of our own write: succeed, as S3Store does.
      if (existing !== undefined && sameBytes(existing, body)) return { etag };
      const cause = conditionFailure(existing, options);
      if (cause !== undefined) {
        throw new StoreError(
          "PreconditionFailed",
          `Cannot write object "${key}" to ${this.description}: ${cause}`,
        );
      }
    }
    // Stored objects are never mutated, so a copy may share the source's buffer.
    this.#bucket.objects.set(key, body);
    return { etag };
  }

  #read(key: string, range: ByteRange | undefined): GetResult {
    const object = this.#bucket.objects.get(key);
    if (object === undefined) throw this.#notFound("read", key);
    const totalSizeBytes = object.length;
    if (range === undefined) return { body: object.slice(), totalSizeBytes, etag: contentEtag(object) };
    if (range.offsetBytes >= totalSizeBytes) {
      const last = range.offsetBytes + range.lengthBytes - 1;
      throw new StoreError(
        "InvalidRange",
        `Cannot read object "${key}": range ${range.offsetBytes}-${last} not satisfiable (size ${totalSizeBytes})`,
      );
    }
    const body = object.slice(range.offsetBytes, range.offsetBytes + range.lengthBytes);
    return { body, totalSizeBytes };
  }

  #list(options: ListOptions): ListPage {
    const maxKeys = Math.min(options.maxKeys ?? LIST_PAGE_KEYS_MAX, LIST_PAGE_KEYS_MAX);
    assert(Number.isInteger(maxKeys) && maxKeys >= 1, `bad maxKeys ${maxKeys}`);
    const startAfter = options.startAfter;
    const keys = this.keys(options.prefix).filter((k) =>
      startAfter === undefined || compareKeys(k, startAfter) > 0
    );
    const objects = keys.slice(0, maxKeys).map((key) => ({
      key,
      sizeBytes: this.#bucket.objects.get(key)?.length ?? 0,
    }));
    return { objects, isTruncated: keys.length > maxKeys };
  }

  #notFound(action: string, key: string): StoreError {
    return new StoreError("NotFound", `Cannot ${action} object "${key}" in ${this.description}: no such key`);
  }

  /** Runs one operation with the handle's latency, errors and crash semantics. */
  #run<T>(operation: Operation<T>): Promise<T> {
    if (this.#crashed || this.#closed) {
      const why = this.#crashed ? "the process crashed" : "the store is closed";
      const error = new StoreError(
        "Fatal",
        `Cannot ${operation.action} "${operation.key}" in ${this.description}: ${why}`,
      );
      return Promise.reject(error);
    }
    // Draw every decision now, in call order, so a seed replays the same faults.
    const fails = this.#random() < this.#errorRate;
    const landsAnyway = fails && operation.isWrite && this.#random() < this.#landedErrorRate;
    const delayMs = this.#drawLatencyMs();
    return new Promise<T>((resolve, reject) => {
      const pending: Pending = { reject };
      if (operation.isWrite) pending.land = () => ignoreStoreError(operation.apply);
      this.#pending.add(pending);
      const settle = () => {
        if (!this.#pending.delete(pending)) return; // a crash already settled it
        if (!fails) return settleWith(operation.apply, resolve, reject);
        if (landsAnyway) ignoreStoreError(operation.apply);
        reject(
          new StoreError(
            "Transient",
            `Cannot ${operation.action} "${operation.key}" in ${this.description}: injected fault`,
          ),
        );
      };
      if (delayMs > 0) this.#clock.sleep(delayMs).then(settle);
      else queueMicrotask(settle);
    });
  }

  #drawLatencyMs(): number {
    const latency = this.#latencyMs;
    if (latency === undefined) return 0;
    return latency.min + (latency.max - latency.min) * this.#random();
  }
}

/** Why a conditional write may not replace `existing`, or undefined when it may. */
function conditionFailure(existing: Uint8Array | undefined, options: PutOptions): string | undefined {
  if (options.ifNoneMatch === true && existing !== undefined) return "the key already exists";
  if (options.ifMatch === undefined) return undefined;
  if (existing === undefined) return "the key does not exist";
  return contentEtag(existing) === options.ifMatch ? undefined : "the key has changed";
}

/** Flips one bit of body (its own copy) at the position `where` (0..1) selects. */
function flipBit(body: Uint8Array, where: number): void {
  if (body.length === 0) return;
  const bit = Math.floor(where * body.length * 8);
  body[bit >> 3]! ^= 1 << (bit & 7);
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function settleWith<T>(fn: () => T, resolve: (value: T) => void, reject: (error: unknown) => void): void {
  try {
    resolve(fn());
  } catch (error) {
    reject(error);
  }
}

/** Applies a write that lands without anyone hearing its result (a crash, a lost ack). */
function ignoreStoreError(fn: () => unknown): void {
  try {
    fn();
  } catch (error) {
    if (!(error instanceof StoreError)) throw error;
  }
}
