/**
 * @module
 * `lsvd import FILE|- [--size SIZE]`: a raw image into a NEW volume. The image is read in
 * order; all-zero 4 KiB blocks are skipped (they read as zeros anyway), the rest are packed into
 * full-size log objects (--object-size of data, at most 1,024 header entries), built exactly as
 * the log writer builds them (src/format/object.ts: trailer version 2 with sequence, the epoch of
 * the lease this tool holds, volume size, seal time, header and sector CRCs) and stored with
 * create-only PUTs, many in flight. The format record is written first. The result is a normal
 * volume: `serve` opens it like any other.
 *
 * Every object's trailer records a volume size, so any prefix of the log is a disk: the --size
 * given, or the file's size, or (stdin without --size) the bytes read so far — then one last
 * object without data records the final size.
 */

import { ObjectBuilder } from "../format/object.ts";
import { logKey } from "../format/keys.ts";
import { ensureFormatRecord } from "../log/format_record.ts";
import { applyObject } from "../log/apply.ts";
import { encodeMapCheckpoint, objectCrcOf, storeCheckpoint } from "../log/checkpoints.ts";
import { putLogObject } from "../log/object_writer.ts";
import { ExtentMap } from "../map/extent_map.ts";
import type { LogState } from "../log/log_state.ts";
import type { ObjectStore } from "../store/store.ts";
import { systemClock } from "../util/clock.ts";
import { HEADER_ENTRIES, OBJECT_DATA_BYTES_MAX, SECTOR_BYTES, VOLUME_BYTES_MAX } from "../util/constants.ts";
import { LsvdError } from "../util/errors.ts";
import { type Logger, stderrLogger } from "../util/log.ts";
import { Progress, stderrTerminal } from "../util/progress.ts";
import { type RetryPolicy, withRetries } from "../store/retry.ts";
import { parseInteger, parseSize, UsageError } from "./options.ts";
import { listVolume, parseTool, takeToolLease, type ToolLease, toolRetry, where } from "./tool_support.ts";

const OPTIONS = {
  size: {
    type: "string" as const,
    help: "Volume size (bytes or K/M/G/T); default the file's size; at least the image's size",
    placeholder: "SIZE",
  },
  "object-size": {
    type: "string" as const,
    help: "Data bytes per log object",
    default: "4M",
    placeholder: "SIZE",
  },
  parallel: { type: "string" as const, help: "PUTs in flight at once", default: "32", placeholder: "N" },
};

const SUMMARY =
  "Imports a raw disk image (FILE, or - for standard input) into a NEW volume: the prefix must\n" +
  "hold no volume. All-zero 4 KiB blocks are skipped. Writes to the bucket (create-only).";

export async function importCommand(args: string[], log: Logger = stderrLogger): Promise<number> {
  const parsed = parseTool(args, {
    command: "import",
    usage: "[options] FILE|-",
    summary: SUMMARY,
    options: OPTIONS,
  });
  if (parsed.help) return 0;
  const [source, extra] = parsed.positionals;
  if (source === undefined) throw new UsageError("Missing FILE: give an image file, or - for standard input");
  if (extra !== undefined) throw new UsageError(`Unexpected argument "${extra}"`);
  const v = parsed.values;
  const objectBytes = parseSize(v["object-size"] as string, "--object-size");
  if (objectBytes % SECTOR_BYTES !== 0 || objectBytes > OBJECT_DATA_BYTES_MAX) {
    throw new UsageError(`Invalid --object-size: ${objectBytes} must be a multiple of 4096 up to 256M`);
  }
  const parallel = parseInteger(v.parallel as string, "--parallel", 1, 1024);
  const givenSize = v.size === undefined ? undefined : parseSize(v.size as string, "--size");
  if (givenSize !== undefined && (givenSize % SECTOR_BYTES !== 0 || givenSize > VOLUME_BYTES_MAX)) {
    throw new UsageError(`Invalid --size: ${givenSize} must be a multiple of 4096 up to 16 TiB`);
  }
  const input = source === "-" ? Deno.stdin : await openImage(source);
  const inputBytes = source === "-" ? undefined : (await (input as Deno.FsFile).stat()).size;
  if (givenSize !== undefined && inputBytes !== undefined && inputBytes > givenSize) {
    throw new UsageError(`Invalid --size: the image is ${inputBytes} bytes, larger than ${givenSize}`);
  }
  const retry = toolRetry(log);
  const { selection } = parsed;
  const state = await listVolume(selection, retry, { mustExist: false });
  refuseNonEmpty(state, where(selection));
  const lease = await takeToolLease(selection, retry, log, parallel);
  try {
    await withRetries(
      retry,
      () => ensureFormatRecord(selection.store, selection.prefix, undefined, Date.now()),
    );
    const sizeBytes = givenSize ?? (inputBytes === undefined ? undefined : roundUp(inputBytes));
    log(`Importing ${source === "-" ? "standard input" : source} into a new volume ${where(selection)}.`);
    const importer = new Importer(selection.store, selection.prefix, {
      objectBytes,
      parallel,
      retry,
      lease,
      log,
    });
    try {
      const result = await importer.run(input, sizeBytes, inputBytes);
      log(
        `Imported ${result.sizeBytes} bytes (${result.dataBytes} bytes of data, the rest zeros) as ${result.objects} objects.`,
      );
    } finally {
      await importer.settle();
    }
    await lease.release();
    return 0;
  } catch (e) {
    // Every PUT has settled: nothing of this import is in flight, the lease can go.
    await lease.release().catch(() => lease.abandon());
    throw e;
  }
}

async function openImage(path: string): Promise<Deno.FsFile> {
  try {
    return await Deno.open(path, { read: true });
  } catch (e) {
    throw new UsageError(`Cannot import ${path}: ${(e as Error).message}`);
  }
}

function refuseNonEmpty(state: LogState, at: string): void {
  const held = state.objects.length + state.checkpoints.length + state.archived.count + state.epochs.length;
  if (held > 0 || state.format !== undefined) {
    throw new LsvdError(
      "invalid",
      `Cannot import into the volume ${at}: it already holds ${state.objects.length} log objects and ${
        held - state.objects.length
      } other keys; import creates a new volume, give an unused --prefix`,
    );
  }
}

function roundUp(bytes: number): number {
  return Math.max(SECTOR_BYTES, Math.ceil(bytes / SECTOR_BYTES) * SECTOR_BYTES);
}

/** Bytes read from the image at once. */
const READ_BYTES = 4 * 1024 * 1024;

interface ImporterOptions {
  objectBytes: number;
  parallel: number;
  retry: RetryPolicy;
  lease: ToolLease;
  log: Logger;
}

/** One run of non-zero data at a disk address, as the views it was read in. */
interface Run {
  addressBytes: number;
  parts: Uint8Array[];
  lengthBytes: number;
}

/** Packs non-zero blocks into objects and PUTs them, at most `parallel` at once. */
class Importer {
  #store: ObjectStore;
  #prefix: string;
  #o: ImporterOptions;
  #runs: Run[] = [];
  #pendingBytes = 0;
  #sequence = 0;
  #dataBytes = 0;
  #inFlight = new Set<Promise<void>>();
  #failure: unknown;
  /** The disk as imported so far, for the checkpoint that lets serve and export start from one GET. */
  #map = new ExtentMap();
  #lastCrc32 = 0;
  #lastSizeBytes = 0;

  constructor(store: ObjectStore, prefix: string, options: ImporterOptions) {
    this.#store = store;
    this.#prefix = prefix;
    this.#o = options;
  }

  async run(
    input: { read(into: Uint8Array): Promise<number | null> },
    sizeBytes: number | undefined,
    totalBytes: number | undefined,
  ): Promise<{ sizeBytes: number; dataBytes: number; objects: number }> {
    const progress = new Progress({
      what: "Importing",
      unit: "bytes",
      total: totalBytes ?? 0,
      clock: systemClock,
      log: this.#o.log,
      terminal: stderrTerminal(),
    });
    let readBytes = 0;
    const sizeAt = () => sizeBytes ?? roundUp(readBytes);
    for (let eof = false; !eof;) {
      // A fresh buffer each time: objects being built and uploaded keep views of earlier ones.
      const buffer = new Uint8Array(READ_BYTES);
      let filled = 0;
      while (filled < buffer.length) {
        const n = await input.read(buffer.subarray(filled));
        if (n === null) break;
        filled += n;
      }
      eof = filled < buffer.length;
      if (filled === 0) break;
      // A partial last block reads as if padded with zeros (the buffer is zeroed).
      await this.#scan(
        buffer.subarray(0, Math.ceil(filled / SECTOR_BYTES) * SECTOR_BYTES),
        readBytes,
        sizeAt,
      );
      readBytes += filled;
      progress.update(readBytes);
    }
    const finalSize = sizeAt();
    if (finalSize > VOLUME_BYTES_MAX || (sizeBytes !== undefined && readBytes > sizeBytes)) {
      throw new LsvdError(
        "invalid",
        `Cannot import: the image is ${readBytes} bytes, larger than the volume`,
      );
    }
    if (this.#pendingBytes > 0) await this.#seal(finalSize);
    // The last object records the final size (stdin grows it; an all-zero image has no data object).
    if (this.#sequence === 0 || (sizeBytes === undefined && totalBytes === undefined)) {
      await this.#seal(finalSize);
    }
    await this.#drain();
    await this.#checkpoint();
    progress.finish();
    return { sizeBytes: finalSize, dataBytes: this.#dataBytes, objects: this.#sequence };
  }

  /**
   * Adds the non-zero blocks of `bytes` (at disk address `at`), sealing objects as they fill. Runs
   * of adjacent blocks become one view of the buffer (no copy, no object per block).
   */
  async #scan(bytes: Uint8Array, at: number, sizeAt: () => number): Promise<void> {
    const words = new Int32Array(bytes.buffer, bytes.byteOffset, bytes.length >> 2);
    let partStart = -1; // where the piece of the current run inside `bytes` starts
    const endPart = (end: number) => {
      if (partStart < 0) return;
      this.#runs.at(-1)!.parts.push(bytes.subarray(partStart, end));
      partStart = -1;
    };
    for (let off = 0; off < bytes.length; off += SECTOR_BYTES) {
      if (isZeroBlock(words, off >> 2)) {
        endPart(off);
        continue;
      }
      const address = at + off;
      const last = this.#runs.at(-1);
      if (last !== undefined && last.addressBytes + last.lengthBytes === address) {
        if (partStart < 0) partStart = off; // continues a run from the previous buffer
        last.lengthBytes += SECTOR_BYTES;
      } else {
        endPart(off);
        if (this.#runs.length === HEADER_ENTRIES) await this.#seal(Math.max(sizeAt(), address));
        this.#runs.push({ addressBytes: address, parts: [], lengthBytes: SECTOR_BYTES });
        partStart = off;
      }
      this.#pendingBytes += SECTOR_BYTES;
      if (this.#pendingBytes === this.#o.objectBytes) {
        endPart(off + SECTOR_BYTES);
        await this.#seal(Math.max(sizeAt(), roundUp(address + SECTOR_BYTES)));
      }
    }
    endPart(bytes.length);
  }

  /** Builds the pending runs into the next object and starts its PUT (waiting for a free slot). */
  async #seal(sizeBytes: number): Promise<void> {
    while (this.#inFlight.size >= this.#o.parallel) await Promise.race(this.#inFlight);
    if (this.#failure !== undefined) throw this.#failure;
    this.#o.lease.check();
    const builder = new ObjectBuilder({ dataBytes: this.#pendingBytes, zeroRanges: 0 });
    const entries = this.#runs.map((r) => ({ addressBytes: r.addressBytes, lengthBytes: r.lengthBytes }));
    for (const run of this.#runs) {
      const data = builder.addEntry(run.addressBytes, run.lengthBytes);
      let p = 0;
      for (const part of run.parts) {
        data.set(part, p);
        p += part.length;
      }
    }
    const sequence = ++this.#sequence;
    const body = builder.finish({
      sequence,
      writerEpoch: this.#o.lease.epoch,
      volumeSizeBytes: sizeBytes,
      sealTimeMs: Date.now(),
    });
    applyObject(this.#map, sequence, { entries, zeroRanges: [] });
    this.#lastCrc32 = objectCrcOf(body);
    this.#lastSizeBytes = sizeBytes;
    this.#dataBytes += this.#pendingBytes;
    this.#runs = [];
    this.#pendingBytes = 0;
    const key = logKey(this.#prefix, sequence);
    const put: Promise<void> = putLogObject(this.#store, this.#o.retry, { key, bytes: body })
      .then(() => {}, (e) => void (this.#failure ??= e))
      .finally(() => this.#inFlight.delete(put));
    this.#inFlight.add(put);
  }

  /** Once every object is stored: the checkpoint of the whole import (as the writer stores at shutdown). */
  async #checkpoint(): Promise<void> {
    const bytes = encodeMapCheckpoint(this.#map, {
      sequence: this.#sequence,
      volumeSizeBytes: this.#lastSizeBytes,
      writerEpoch: this.#o.lease.epoch,
      objectCrc32: this.#lastCrc32,
    });
    await storeCheckpoint(this.#store, this.#prefix, { sequence: this.#sequence, bytes }, this.#o.retry);
  }

  /** Resolves once no PUT is in flight (after a failure too). */
  async settle(): Promise<void> {
    await Promise.all(this.#inFlight);
  }

  async #drain(): Promise<void> {
    await Promise.all(this.#inFlight);
    if (this.#failure !== undefined) throw this.#failure;
  }
}

/** True when the 4 KiB block starting at word `first` is all zeros. */
function isZeroBlock(words: Int32Array, first: number): boolean {
  const end = first + SECTOR_BYTES / 4;
  for (let i = first; i < end; i++) if (words[i] !== 0) return false;
  return true;
}
