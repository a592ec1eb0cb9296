/**
 * @module
 * `lsvd export [--at POINT] FILE|-`: the disk as a raw image, read straight from the bucket.
 * The log is loaded (never modified) as it stands or as it stood at POINT, and the extent map
 * becomes ranged GETs (src/log/read_plan.ts), many in flight at once.
 *
 * To a FILE the image is sparse: the file is sized with ftruncate and only mapped sectors are
 * written, each at its offset (pwrite), in whatever order the GETs finish; never-written and
 * trimmed ranges stay holes. An existing FILE is refused unless --force; a failed export removes
 * what it wrote. To `-` the image streams to standard output in disk order, window by window
 * (holes as zeros), with the same GETs in flight.
 */

import { open } from "node:fs/promises";
import type { FileHandle } from "node:fs/promises";
import { logKey } from "../format/keys.ts";
import { type LoadedLog, loadLog } from "../log/load.ts";
import { parsePoint, type ResolvedPoint, resolvePoint } from "../log/point.ts";
import { holdPin } from "../log/snapshots.ts";
import type { StoreSelection } from "./store_options.ts";
import { type PlannedGet, planReads } from "../log/read_plan.ts";
import { isStoreError, type ObjectStore } from "../store/store.ts";
import { systemClock } from "../util/clock.ts";
import { SECTOR_BYTES } from "../util/constants.ts";
import { isLsvdError, LsvdError } from "../util/errors.ts";
import { assert } from "../util/assert.ts";
import {
  claimedTrailerBytes,
  decodeTrailer,
  FormatError,
  HEADER_BYTES,
  type Trailer,
  TRAILER_GUESS_BYTES,
} from "../format/object.ts";
import { checkDataSectors } from "../log/object_reader.ts";
import type { LogState } from "../log/log_state.ts";
import { type CrcTable, CrcTableLoader, CrcTables } from "../volume/crc_tables.ts";
import { type Logger, stderrLogger } from "../util/log.ts";
import { forEachBounded, readInOrder } from "../util/ordered.ts";
import { Progress, stderrTerminal } from "../util/progress.ts";
import { type RetryPolicy, withRetries } from "../volume/retry.ts";
import { parseInteger, UsageError } from "./options.ts";
import { listVolume, parseTool, TOOL_LOAD_CONCURRENCY, toolRetry, where } from "./tool_support.ts";

const OPTIONS = {
  at: {
    type: "string" as const,
    help: "Export the disk as it was after this object number or at this RFC 3339 time",
    placeholder: "POINT",
  },
  snapshot: {
    type: "string" as const,
    help: "Export the disk as snapshot NAME kept it",
    placeholder: "NAME",
  },
  force: { type: "boolean" as const, help: "Overwrite FILE if it exists" },
  parallel: { type: "string" as const, help: "GETs in flight at once", default: "32", placeholder: "N" },
};

const SUMMARY =
  "Writes the disk as a raw image to FILE (sparse: never-written ranges are holes) or, with -,\n" +
  "to standard output. POINT is an object number or an RFC 3339 time (the newest object sealed at or\n" +
  "before it), or a snapshot name. Reads the bucket directly; changes nothing there but a\n" +
  "short-lived pin key that keeps garbage collection off what the export reads.";

/** Pieces of one object this close share a GET. */
const GAP_BYTES_MAX = 256 * 1024;
/** Largest GET, and the disk window streamed to stdout at once. */
const GET_BYTES_MAX = 4 * 1024 * 1024;
const WINDOW_BYTES = 4 * 1024 * 1024;

export async function exportCommand(args: string[], log: Logger = stderrLogger): Promise<number> {
  const parsed = parseTool(args, {
    command: "export",
    usage: "[options] FILE|-",
    summary: SUMMARY,
    options: OPTIONS,
  });
  if (parsed.help) return 0;
  const [target, extra] = parsed.positionals;
  if (target === undefined) throw new UsageError("Missing FILE: give a file name, or - for standard output");
  if (extra !== undefined) throw new UsageError(`Unexpected argument "${extra}"`);
  const force = parsed.values.force === true;
  const parallel = parseInteger(parsed.values.parallel as string, "--parallel", 1, 1024);
  const at = parsed.values.at as string | undefined;
  const snapshot = parsed.values.snapshot as string | undefined;
  if (at !== undefined && snapshot !== undefined) throw new UsageError("Give either --at or --snapshot");
  const point = snapshot !== undefined
    ? { kind: "snapshot" as const, name: snapshot, text: snapshot }
    : at === undefined
    ? undefined
    : parsePoint(at, "--at");
  if (target !== "-" && !force) await refuseExisting(target);
  const retry = toolRetry(log);
  const { store } = parsed.selection;
  let state = await listVolume(parsed.selection, retry, { mustExist: true });
  const resolved = point === undefined ? undefined : await resolvePoint(store, state, point, retry);
  // A pin keeps garbage collection from moving what this export reads (released at the end).
  const pin = await holdPin(store, parsed.selection.prefix, resolved?.sequence ?? state.endSequence, {
    clock: systemClock,
    retry,
    purpose: "export",
  }).catch((e) => {
    if (isLsvdError(e, "invalid")) throw e; // the point is no longer kept
    log(`Exporting without a pin (garbage collection may race this export): ${(e as Error).message}.`);
    return undefined;
  });
  try {
    state = await listVolume(parsed.selection, retry, { mustExist: true });
    return await exportPinned({
      target,
      force,
      parallel,
      state,
      resolved,
      retry,
      log,
      selection: parsed.selection,
    });
  } finally {
    await pin?.release();
  }
}

async function exportPinned(
  o: {
    target: string;
    force: boolean;
    parallel: number;
    state: LogState;
    resolved: ResolvedPoint | undefined;
    retry: RetryPolicy;
    log: Logger;
    selection: StoreSelection;
  },
): Promise<number> {
  const { target, force, parallel, state, resolved, retry, log } = o;
  const parsed = { selection: o.selection };
  const { store } = o.selection;
  const loaded = await loadLog(store, state, {
    concurrency: TOOL_LOAD_CONCURRENCY,
    retry,
    log,
    ...(resolved === undefined ? {} : { atSequence: resolved.sequence }),
  });
  if (loaded.lastSequence === 0 || loaded.volumeSizeBytes === undefined) {
    throw new LsvdError(
      "invalid",
      `Cannot export: the volume ${where(parsed.selection)} has no recorded size`,
    );
  }
  const what = resolved === undefined ? `object ${loaded.lastSequence}` : resolved.description;
  log(`Exporting ${loaded.volumeSizeBytes} bytes as of ${what} ${where(parsed.selection)}.`);
  const reader = new ObjectReader(store, state, retry);
  const mappedBytes = mappedBytesOf(loaded);
  const progress = new Progress({
    what: "Exporting",
    unit: "bytes",
    total: mappedBytes,
    clock: systemClock,
    log,
    terminal: stderrTerminal(),
  });
  if (target === "-") await exportToStdout(loaded, reader, parallel, progress);
  else await exportToFile(target, force, loaded, reader, parallel, progress);
  progress.finish();
  log(
    `Exported ${loaded.volumeSizeBytes} bytes (${mappedBytes} bytes of data) to ${
      target === "-" ? "standard output" : target
    }.`,
  );
  return 0;
}

async function refuseExisting(path: string): Promise<void> {
  try {
    await Deno.lstat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return;
    throw e;
  }
  throw new UsageError(`Cannot export to ${path}: the file exists; give --force to overwrite it`);
}

function mappedBytesOf(loaded: LoadedLog): number {
  let sectors = 0;
  for (const run of loaded.map.runs()) for (let i = 1; i < run.length; i += 4) sectors += run[i]!;
  return sectors * SECTOR_BYTES;
}

async function exportToFile(
  path: string,
  force: boolean,
  loaded: LoadedLog,
  reader: ObjectReader,
  parallel: number,
  progress: Progress,
): Promise<void> {
  const sizeBytes = loaded.volumeSizeBytes!;
  let file: FileHandle;
  try {
    file = await open(path, force ? "w" : "wx", 0o644);
  } catch (e) {
    if ((e as { code?: string }).code === "EEXIST") {
      throw new UsageError(`Cannot export to ${path}: the file exists; give --force to overwrite it`);
    }
    throw new UsageError(`Cannot export to ${path}: ${(e as Error).message}`);
  }
  let done = 0;
  try {
    await file.truncate(sizeBytes);
    const gets = planReads(loaded.map, 0, sizeBytes / SECTOR_BYTES, {
      gapBytesMax: GAP_BYTES_MAX,
      getBytesMax: GET_BYTES_MAX,
    });
    await forEachBounded(gets, parallel, async (get) => {
      const body = await reader.read(get);
      for (const p of get.pieces) {
        const bytes = p.lengthSectors * SECTOR_BYTES;
        await writeAll(
          file,
          body.subarray(p.bodyOffsetBytes, p.bodyOffsetBytes + bytes),
          p.diskSector * SECTOR_BYTES,
        );
        done += bytes;
      }
      progress.update(done);
    });
    await file.sync();
    await file.close();
  } catch (e) {
    await file.close().catch(() => {});
    await Deno.remove(path).catch(() => {}); // a partial image must not pass for an export
    throw e;
  }
}

async function writeAll(file: FileHandle, bytes: Uint8Array, positionBytes: number): Promise<void> {
  for (let written = 0; written < bytes.length;) {
    const { bytesWritten } = await file.write(
      bytes,
      written,
      bytes.length - written,
      positionBytes + written,
    );
    written += bytesWritten;
  }
}

async function exportToStdout(
  loaded: LoadedLog,
  reader: ObjectReader,
  parallel: number,
  progress: Progress,
): Promise<void> {
  const sizeBytes = loaded.volumeSizeBytes!;
  const windows: number[] = [];
  for (let at = 0; at < sizeBytes; at += WINDOW_BYTES) windows.push(at);
  const gate = new Gate(parallel);
  const writer = Deno.stdout.writable.getWriter();
  let done = 0;
  try {
    await readInOrder(windows, Math.max(2, parallel), async (at) => {
      const bytes = Math.min(WINDOW_BYTES, sizeBytes - at);
      const window = new Uint8Array(bytes);
      const gets = planReads(loaded.map, at / SECTOR_BYTES, bytes / SECTOR_BYTES, {
        gapBytesMax: GAP_BYTES_MAX,
        getBytesMax: GET_BYTES_MAX,
      });
      await Promise.all(gets.map(async (get) => {
        const body = await gate.run(() => reader.read(get));
        for (const p of get.pieces) {
          const n = p.lengthSectors * SECTOR_BYTES;
          window.set(
            body.subarray(p.bodyOffsetBytes, p.bodyOffsetBytes + n),
            p.diskSector * SECTOR_BYTES - at,
          );
          done += n;
        }
      }));
      return window;
    }, async (_at, window) => {
      await writer.write(window);
      progress.update(done);
    });
  } finally {
    await writer.close().catch(() => {});
  }
}

/** Table bytes an export keeps (a 4 MiB object's table is 4 KiB: the tables of 16 GiB of objects). */
const EXPORT_TABLE_BYTES = 16 * 1024 * 1024;

/**
 * Ranged GETs of planned reads, checked for length and, piece by piece, against the object's
 * sector CRCs (as the daemon's reads are: one fresh retry, then a "data" error naming the bytes),
 * with the object's key in every error.
 */
class ObjectReader {
  #store: ObjectStore;
  #prefix: string;
  #retry: RetryPolicy;
  #sizes = new Map<number, number>();
  #tables: CrcTableLoader;
  #tableCache: CrcTables;

  constructor(store: ObjectStore, state: LogState, retry: RetryPolicy) {
    this.#store = store;
    this.#prefix = state.prefix;
    this.#retry = retry;
    for (const o of state.objects) this.#sizes.set(o.sequence, o.sizeBytes);
    this.#tableCache = new CrcTables(EXPORT_TABLE_BYTES);
    this.#tables = new CrcTableLoader({ store, retry, tables: this.#tableCache });
  }

  async read(get: PlannedGet): Promise<Uint8Array> {
    try {
      return await this.#attempt(get, false);
    } catch (e) {
      if (!isLsvdError(e, "data")) throw e;
      return await this.#attempt(get, true);
    }
  }

  async #attempt(get: PlannedGet, fresh: boolean): Promise<Uint8Array> {
    const key = logKey(this.#prefix, get.sequence);
    const sizeBytes = this.#sizes.get(get.sequence);
    assert(sizeBytes !== undefined, "the map reads an object the listing did not show");
    const [body, table] = (!fresh && await this.#withTrailer(key, get, sizeBytes)) ||
      await Promise.all([
        this.#get(key, get),
        this.#tables.table({ sequence: get.sequence, key, sizeBytes }, fresh),
      ]);
    if (table === null) return body; // no CRCs (older lsvd, other writers): exported as stored
    for (const p of get.pieces) {
      const at = get.offsetBytes - HEADER_BYTES + p.bodyOffsetBytes;
      const piece = body.subarray(p.bodyOffsetBytes, p.bodyOffsetBytes + p.lengthSectors * SECTOR_BYTES);
      checkDataSectors(key, piece, at / SECTOR_BYTES, table);
    }
    return body;
  }

  /**
   * A GET that ends within TRAILER_GUESS_BYTES of the object's end (reading all of an object's
   * data, the usual case) is stretched to the end: its tail is the trailer, so the object's CRC
   * table comes with the data instead of costing a second request. Undefined when the table is
   * already known, the GET ends elsewhere, or the tail holds no well-formed trailer of this object
   * (then the loader decides, as for any other read).
   */
  async #withTrailer(
    key: string,
    get: PlannedGet,
    sizeBytes: number,
  ): Promise<[Uint8Array, CrcTable] | undefined> {
    const end = get.offsetBytes + get.lengthBytes;
    if (sizeBytes <= end || sizeBytes - end > TRAILER_GUESS_BYTES) return undefined;
    if (this.#tableCache.get(get.sequence) !== undefined) return undefined;
    const whole = await this.#get(key, { ...get, lengthBytes: sizeBytes - get.offsetBytes });
    const tail = whole.subarray(get.lengthBytes);
    const claimed = tail.length >= 8 ? claimedTrailerBytes(tail) : 0;
    if (claimed < 8 || claimed > tail.length) return undefined;
    let trailer: Trailer;
    try {
      trailer = decodeTrailer(tail.subarray(tail.length - claimed));
    } catch (e) {
      if (e instanceof FormatError) return undefined;
      throw e;
    }
    if (trailer.sequence !== get.sequence) return undefined;
    const table = trailer.sectorCrcs ?? null;
    this.#tableCache.set(get.sequence, table);
    return [whole.subarray(0, get.lengthBytes), table];
  }

  async #get(key: string, get: PlannedGet): Promise<Uint8Array> {
    const range = { offsetBytes: get.offsetBytes, lengthBytes: get.lengthBytes };
    let body: Uint8Array;
    try {
      body = (await withRetries(this.#retry, () => this.#store.get(key, range))).body;
    } catch (e) {
      if (isStoreError(e, "NotFound") || isStoreError(e, "InvalidRange")) {
        throw new LsvdError("data", `Cannot read object "${key}": ${(e as Error).message}`, { cause: e });
      }
      throw e;
    }
    if (body.length !== get.lengthBytes) {
      throw new LsvdError(
        "data",
        `Cannot read object "${key}": got ${body.length} of ${get.lengthBytes} bytes at ${get.offsetBytes} (truncated)`,
      );
    }
    return body;
  }
}

/** At most `limit` tasks at once, first come first served. */
class Gate {
  #free: number;
  #waiting: (() => void)[] = [];

  constructor(limit: number) {
    this.#free = limit;
  }

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.#free > 0) this.#free--;
    else await new Promise<void>((resolve) => this.#waiting.push(resolve));
    try {
      return await task();
    } finally {
      const next = this.#waiting.shift();
      if (next !== undefined) next();
      else this.#free++;
    }
  }
}
