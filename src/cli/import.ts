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
 * given, or the file's size, or (stdin without --size) the bytes read so far -- then one last
 * object without data records the final size.
 */

import { ObjectBuilder } from "../format/object.ts";
import { RetryingStore } from "../store/retry.ts";
import { checkpointKey, epochKey, formatKey, leaseKey, logKey } from "../format/keys.ts";
import { readLease } from "../log/lease.ts";
import { ensureFormatRecord } from "../log/format_record.ts";
import { applyObject } from "../log/apply.ts";
import { encodeMapCheckpoint, objectCrcOf, storeCheckpoint } from "../log/checkpoints.ts";
import { putLogObject } from "../log/object_writer.ts";
import { encryptObject } from "../crypto/object_cipher.ts";
import type { SectorCipher, VolumeSecret } from "../crypto/sector_cipher.ts";
import { resolveEncryption } from "../log/volume_encryption.ts";
import { ENCRYPTION_OPTIONS, loadEncryptionKey } from "./encryption_key.ts";
import { ExtentMap } from "../map/extent_map.ts";
import type { LogState } from "../log/log_state.ts";
import { type ObjectStore, StoreError } from "../store/store.ts";
import { systemClock } from "../util/clock.ts";
import { HEADER_ENTRIES, OBJECT_DATA_BYTES_MAX, SECTOR_BYTES, VOLUME_BYTES_MAX } from "../util/constants.ts";
import { isLsvdError, LsvdError, messageOf } from "../util/errors.ts";
import { type Logger, stderrLogger } from "../util/log.ts";
import { Progress, stderrTerminal } from "../util/progress.ts";
import { sizeOption, UsageError } from "./options.ts";
import { DEFAULT_OBJECT_BYTES } from "../volume/volume_options.ts";
import { blockDeviceBytes, type DeviceHold, holdDevice, kindOf, osErrorText } from "./local_files.ts";
import type { StoreSelection } from "./store_options.ts";
import {
  Interrupted,
  interruptible,
  listVolume,
  parallelOption,
  parseTool,
  retriedSelection,
  takeToolLease,
  type ToolLease,
  toolRetry,
  unlessStopped,
  where,
} from "./tool_support.ts";

const OPTIONS = {
  ...ENCRYPTION_OPTIONS,
  size: sizeOption({
    help: "Volume size (bytes or K/M/G/T); default the file's or device's size; at least the image's size",
    sectorsUpTo: VOLUME_BYTES_MAX,
    placeholder: "SIZE",
  }),
  "object-size": sizeOption({
    help: "Data bytes per log object",
    default: DEFAULT_OBJECT_BYTES,
    sectorsUpTo: OBJECT_DATA_BYTES_MAX,
    placeholder: "SIZE",
  }),
  parallel: parallelOption("PUTs in flight at once"),
};

const SUMMARY =
  "Imports a raw disk image (FILE, a block device such as /dev/sdb, or - for standard input) into\n" +
  "a NEW volume: the prefix must hold no volume. All-zero 4 KiB blocks are skipped. Writes to the\n" +
  "bucket (create-only); an import that fails or is stopped removes what it wrote.";

export async function importCommand(args: string[], log: Logger = stderrLogger): Promise<number> {
  const parsed = parseTool(args, {
    command: "import",
    usage: "[options] FILE|-",
    summary: SUMMARY,
    options: OPTIONS,
  });
  if (parsed.help) return 0;
  const [path, extra] = parsed.positionals;
  if (path === undefined) throw new UsageError("Missing FILE: give an image file, or - for standard input");
  if (extra !== undefined) throw new UsageError(`Unexpected argument "${extra}"`);
  const { "object-size": objectBytes, parallel, size: givenSize } = parsed.values;
  // Everything about the source is checked before the bucket is touched.
  const source = await openSource(path, log);
  try {
    checkSourceSize(source, givenSize);
    const secret = loadEncryptionKey(parsed.options);
    const request = { selection: parsed.selection, objectBytes, parallel, givenSize, log, secret };
    return await importSource(source, request);
  } finally {
    source.close();
  }
}

interface ImportRequest {
  selection: StoreSelection;
  objectBytes: number;
  parallel: number;
  givenSize: number | undefined;
  log: Logger;
  /** Create the volume encrypted with this key. */
  secret: VolumeSecret | undefined;
}

/** Takes the lease on an empty prefix and imports; a failure or a signal undoes what was stored. */
async function importSource(source: Source, o: ImportRequest): Promise<number> {
  const { log } = o;
  const selection = retriedSelection(o.selection, log);
  refuseNonEmpty(await listVolume(selection, { mustExist: false }), where(selection));
  const leaseExisted = (await readLease(selection.store, selection.prefix)) !== undefined;
  const lease = await takeToolLease(selection, log, o.parallel);
  const guard = new WriteGuard();
  // Retried outside the guard: once stopped, no attempt of a write passes it.
  const store = new RetryingStore(guardedStore(o.selection.store, guard), toolRetry(log));
  const importer = new Importer(store, selection.prefix, { ...o, lease });
  let result: ImportResult;
  try {
    result = await interruptible(log, (stopped) =>
      unlessStopped(
        (async () => {
          importer.cipher = await createFormatRecord(store, selection.prefix, o.secret);
          const known = source.sizeBytes;
          log(
            `Importing ${source.name}${known === undefined ? "" : ` (${known} bytes)`} into a new volume ${
              where(selection)
            }.`,
          );
          return await importer.run(
            source,
            o.givenSize ?? (known === undefined ? undefined : roundUp(known)),
          );
        })(),
        stopped,
      ));
  } catch (e) {
    // Nothing of this import may land after what it wrote is removed: stop, then wait for every PUT.
    await guard.stop();
    const undone = await undoImport({ selection, lease, objects: importer.objects, leaseExisted });
    return failedImport(e, undone, log);
  }
  // The volume is complete: a lease that cannot be marked released only makes the next start fence.
  await lease.release().catch((e) => {
    lease.abandon();
    log(`Could not release the lease (${messageOf(e)}); the next writer takes it over.`);
  });
  log(
    `Imported ${result.sizeBytes} bytes (${result.dataBytes} bytes of data, the rest zeros) as ${result.objects} objects.`,
  );
  return 0;
}

/** The exit of an undone import: a signal's status, or the cause and what was undone in one line. */
function failedImport(e: unknown, undone: string, log: Logger): number {
  if (e instanceof Interrupted) {
    log(`Import ${e.message}; ${undone}.`);
    return e.exitCode;
  }
  if (e instanceof LsvdError || e instanceof StoreError) {
    throw new LsvdError(e instanceof LsvdError ? e.kind : "unavailable", `${e.message}; ${undone}`, {
      cause: e,
    });
  }
  log(`Import failed; ${undone}.`);
  throw e;
}

/** The image being imported: a file, a block device, a pipe or standard input. */
interface Source {
  name: string;
  input: { read(into: Uint8Array): Promise<number | null> };
  /** Known for a file or a block device; undefined for a stream (read until it ends). */
  sizeBytes: number | undefined;
  close(): void;
}

/** Opens the image, sized as what it is: a regular file by its length, a block device by lseek. */
async function openSource(path: string, log: Logger): Promise<Source> {
  if (path === "-") {
    if (Deno.stdin.isTerminal()) {
      throw new UsageError(
        "Cannot import standard input: it is a terminal; pipe an image into it or give a FILE",
      );
    }
    return { name: "standard input", input: Deno.stdin, sizeBytes: undefined, close: () => {} };
  }
  const info = await Deno.stat(path).catch((e) => {
    throw new UsageError(`Cannot import ${path}: ${osErrorText(e)}`);
  });
  const kind = kindOf(info);
  if (kind === "directory" || kind === "socket") {
    throw new UsageError(`Cannot import ${path}: it is a ${kind}; give a raw disk image or a block device`);
  }
  let hold: DeviceHold | "busy" | undefined;
  if (kind === "block device") {
    hold = holdDevice(path, false);
    if (hold === "busy") {
      log(
        `${path} is in use (mounted, or held by another program): writes to it while it is read can make the image inconsistent.`,
      );
    }
  }
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (e) {
    if (typeof hold === "object") hold.release();
    throw new UsageError(`Cannot import ${path}: ${osErrorText(e)}`);
  }
  const sizeBytes = kind === "file"
    ? info.size
    : kind === "block device"
    ? await blockDeviceBytes(file)
    : undefined;
  return {
    name: path,
    input: file,
    sizeBytes,
    close: () => {
      file.close();
      if (typeof hold === "object") hold.release();
    },
  };
}

/** Refusals the source's size allows before anything is written. */
function checkSourceSize(source: Source, givenSize: number | undefined): void {
  const bytes = source.sizeBytes;
  if (bytes === undefined) return;
  if (givenSize !== undefined && bytes > givenSize) {
    throw new UsageError(`Invalid --size: the image is ${bytes} bytes, larger than ${givenSize}`);
  }
  if (givenSize === undefined && bytes === 0) {
    throw new UsageError(
      `Cannot import ${source.name}: it is empty; give --size for a volume of zeros that size`,
    );
  }
  if (givenSize === undefined && roundUp(bytes) > VOLUME_BYTES_MAX) {
    throw new UsageError(
      `Cannot import ${source.name}: it is ${bytes} bytes, more than a volume holds (16 TiB)`,
    );
  }
}

/**
 * Import only creates volumes. Epoch keys alone (a start that failed before it wrote the volume) are
 * no volume: import takes the next epoch above them and leaves them.
 */
function refuseNonEmpty(state: LogState, at: string): void {
  const held = state.objects.length + state.checkpoints.length + state.archived.count;
  if (held > 0 || state.format !== undefined) {
    throw new LsvdError(
      "invalid",
      `Cannot import into the volume ${at}: it already holds ${state.objects.length} log objects and ${
        held - state.objects.length
      } other keys; import creates a new volume, give an unused --prefix`,
    );
  }
}

/**
 * After a failed or interrupted import: removes exactly what it wrote -- its log objects (newest
 * first, so what is left is always a log), its checkpoint, the format record, its epoch key and the
 * lease (left released when one was there before) -- while the lease is provably still its own.
 * Says what it did, for the one line the failure ends with.
 */
async function undoImport(
  o: {
    selection: StoreSelection;
    lease: ToolLease;
    objects: number;
    leaseExisted: boolean;
  },
): Promise<string> {
  const { selection, lease, objects, leaseExisted } = o;
  const { store, prefix } = selection;
  const at = where(selection);
  try {
    await lease.confirm();
  } catch (e) {
    lease.abandon();
    if (!isLsvdError(e, "fenced")) return leftBehind(at, objects, e);
    // Another writer took the volume meanwhile: what is there is its volume now, not ours to delete.
    return `left what it had written ${at} in place (${messageOf(e)})`;
  }
  try {
    if (objects > 0) await store.delete(checkpointKey(prefix, objects));
    // Newest first, a batch at a time: what is left is always a log.
    for (let top = objects; top >= 1; top -= UNDO_BATCH) {
      const batch = Array.from({ length: Math.min(UNDO_BATCH, top) }, (_, i) => top - i);
      await Promise.all(
        batch.map((sequence) => store.delete(logKey(prefix, sequence))),
      );
    }
    await store.delete(formatKey(prefix));
    if (leaseExisted) await lease.release();
    else lease.abandon();
    await store.delete(epochKey(prefix, lease.epoch));
    if (!leaseExisted) await store.delete(leaseKey(prefix));
    return `removed what it had written ${at} (${objects} log objects), so the import can simply be run again`;
  } catch (e) {
    lease.abandon();
    return leftBehind(at, objects, e);
  }
}

/** Deletes of a failed import's objects in flight at once. */
const UNDO_BATCH = 32;

function leftBehind(at: string, objects: number, e: unknown): string {
  return `could not remove what it had written ${at} (${objects} log objects, format.json, epoch/, ` +
    `lease.json: ${messageOf(e)}); delete them before importing there again`;
}

/** Stops a failed import's store writes: none starts after stop(), which waits for those in flight. */
class WriteGuard {
  #stopped = false;
  #inFlight = new Set<Promise<unknown>>();

  track<T>(write: () => Promise<T>): Promise<T> {
    if (this.#stopped) return Promise.reject(new LsvdError("closed", "The import was stopped"));
    const p = write();
    const settled = p.then(() => {}, () => {}).finally(() => this.#inFlight.delete(settled));
    this.#inFlight.add(settled);
    return p;
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    while (this.#inFlight.size > 0) await Promise.all(this.#inFlight);
  }
}

/** The store as the import writes it: every write goes through the guard. */
function guardedStore(store: ObjectStore, guard: WriteGuard): ObjectStore {
  return {
    description: store.description,
    put: (key, body, options) => guard.track(() => store.put(key, body, options)),
    get: (key, range) => store.get(key, range),
    head: (key) => store.head(key),
    list: (options) => store.list(options),
    delete: (key) => guard.track(() => store.delete(key)),
    copy: (from, to, options) => guard.track(() => store.copy(from, to, options)),
    close: () => store.close(),
  };
}

function roundUp(bytes: number): number {
  return Math.max(SECTOR_BYTES, Math.ceil(bytes / SECTOR_BYTES) * SECTOR_BYTES);
}

interface ImportResult {
  sizeBytes: number;
  dataBytes: number;
  objects: number;
}

/** Bytes read from the image at once. */
const READ_BYTES = 4 * 1024 * 1024;

/** A plain volume's format record, or an encrypted one's (returning its data key). */
async function createFormatRecord(
  store: ObjectStore,
  prefix: string,
  secret: VolumeSecret | undefined,
): Promise<SectorCipher | undefined> {
  if (secret === undefined) {
    await ensureFormatRecord(store, prefix, undefined, Date.now());
    return undefined;
  }
  return await resolveEncryption(store, prefix, { secret, create: true, nowMs: Date.now() });
}

interface ImporterOptions {
  objectBytes: number;
  parallel: number;
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
  /** An encrypted volume's data key: objects are stored encrypted. Set before run(). */
  cipher: SectorCipher | undefined;

  constructor(store: ObjectStore, prefix: string, options: ImporterOptions) {
    this.#store = store;
    this.#prefix = prefix;
    this.#o = options;
  }

  /** Objects numbered so far (some may not be stored yet): what a failed import has to remove. */
  get objects(): number {
    return this.#sequence;
  }

  /** Reads the whole source; sizeBytes is the volume's when known before reading (a file, --size). */
  async run(source: Source, sizeBytes: number | undefined): Promise<ImportResult> {
    const { input, name } = source;
    const totalBytes = source.sizeBytes;
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
    // Checked as the image is read, before any of the bytes past the limit are stored.
    const limitBytes = sizeBytes ?? VOLUME_BYTES_MAX;
    for (let eof = false; !eof;) {
      // A fresh buffer each time: objects being built and uploaded keep views of earlier ones.
      const buffer = new Uint8Array(READ_BYTES);
      let filled = 0;
      while (filled < buffer.length) {
        const n = await readSource(input, buffer.subarray(filled), name);
        if (n === null) break;
        filled += n;
      }
      eof = filled < buffer.length;
      if (filled === 0) break;
      if (readBytes + filled > limitBytes) {
        throw new LsvdError(
          "invalid",
          sizeBytes === undefined
            ? `Cannot import ${name}: it holds more than a volume holds (16 TiB)`
            : `Cannot import ${name}: it holds more than the ${sizeBytes} bytes of the volume (--size)`,
        );
      }
      if (readBytes === 0) warnIfNotRaw(buffer, name, this.#o.log);
      // A partial last block reads as if padded with zeros (the buffer is zeroed).
      await this.#scan(
        buffer.subarray(0, Math.ceil(filled / SECTOR_BYTES) * SECTOR_BYTES),
        readBytes,
        sizeAt,
      );
      readBytes += filled;
      progress.update(readBytes);
    }
    if (readBytes === 0 && sizeBytes === undefined) {
      throw new LsvdError("invalid", `Cannot import ${name}: it is empty; give --size for a volume of zeros`);
    }
    const finalSize = sizeAt();
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
    const plain = builder.finish({
      sequence,
      writerEpoch: this.#o.lease.epoch,
      volumeSizeBytes: sizeBytes,
      sealTimeMs: Date.now(),
    });
    const body = this.cipher === undefined ? plain : encryptObject(this.cipher, plain);
    applyObject(this.#map, sequence, { entries, zeroRanges: [] });
    this.#lastCrc32 = objectCrcOf(body);
    this.#lastSizeBytes = sizeBytes;
    this.#dataBytes += this.#pendingBytes;
    this.#runs = [];
    this.#pendingBytes = 0;
    const key = logKey(this.#prefix, sequence);
    const put: Promise<void> = putLogObject(this.#store, { key, bytes: body })
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
    await storeCheckpoint(this.#store, this.#prefix, { sequence: this.#sequence, bytes });
  }

  async #drain(): Promise<void> {
    await Promise.all(this.#inFlight);
    if (this.#failure !== undefined) throw this.#failure;
  }
}

/** Magic bytes of container and compressed formats a raw image does not start with. */
const NOT_RAW: { magic: number[]; what: string; fix: string }[] = [
  { magic: [0x51, 0x46, 0x49, 0xfb], what: "a qcow2 image", fix: "qemu-img convert -O raw IMAGE disk.img" },
  { magic: [0x4b, 0x44, 0x4d, 0x56], what: "a VMDK image", fix: "qemu-img convert -O raw IMAGE disk.img" },
  { magic: [0x76, 0x68, 0x64, 0x78], what: "a VHDX image", fix: "qemu-img convert -O raw IMAGE disk.img" },
  { magic: [0x1f, 0x8b], what: "gzip-compressed data", fix: "zcat IMAGE | lsvd import -" },
  { magic: [0xfd, 0x37, 0x7a, 0x58, 0x5a], what: "xz-compressed data", fix: "xzcat IMAGE | lsvd import -" },
  { magic: [0x28, 0xb5, 0x2f, 0xfd], what: "zstd-compressed data", fix: "zstdcat IMAGE | lsvd import -" },
];

/**
 * Import stores bytes as they are: an image that starts like a container or compressed file gets a
 * warning with the command that gives the disk inside (it may still be meant: a raw device holding one).
 */
function warnIfNotRaw(first: Uint8Array, name: string, log: Logger): void {
  const found = NOT_RAW.find((f) => f.magic.every((b, i) => first[i] === b));
  if (found === undefined) return;
  log(
    `${name} starts like ${found.what}; the volume gets its bytes as they are, not the disk inside ` +
      `(for that: ${name === "standard input" ? found.fix : found.fix.replace("IMAGE", name)}).`,
  );
}

/** One read of the image; an error reading it is one line naming it (a disk error, EISDIR ...). */
async function readSource(
  input: { read(into: Uint8Array): Promise<number | null> },
  into: Uint8Array,
  name: string,
): Promise<number | null> {
  try {
    return await input.read(into);
  } catch (e) {
    throw new LsvdError("invalid", `Cannot read ${name}: ${osErrorText(e)}`, { cause: e });
  }
}

/** True when the 4 KiB block starting at word `first` is all zeros. */
function isZeroBlock(words: Int32Array, first: number): boolean {
  const end = first + SECTOR_BYTES / 4;
  for (let i = first; i < end; i++) if (words[i] !== 0) return false;
  return true;
}
