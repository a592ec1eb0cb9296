/**
 * @module
 * `lsvd export [--at POINT] FILE|-`: the disk as a raw image, read straight from the bucket.
 * The log is loaded (never modified) as it stands or as it stood at POINT, and the extent map
 * becomes ranged GETs (src/log/read_plan.ts), many in flight at once.
 *
 * To a FILE the image is sparse: the file is sized with ftruncate and only mapped sectors are
 * written, each at its offset (pwrite), in whatever order the GETs finish; never-written and
 * trimmed ranges stay holes. An existing FILE is refused unless --force, and then replaced only once
 * the new image is complete. To `-`, a block device or a pipe the image goes in disk order, window
 * by window (holes as zeros), with the same GETs in flight. What export may write to, and what a
 * failure (or SIGINT/SIGTERM) removes -- only what export created -- is export_target.ts.
 */

import { type LoadedLog, loadLog } from "../log/load.ts";
import { parsePoint, type Point, resolvePoint } from "../log/point.ts";
import { type HeldPin, holdPin } from "../log/snapshots.ts";
import type { StoreSelection } from "./store_options.ts";
import { planReads } from "../log/read_plan.ts";
import { isLsvdError, LsvdError } from "../util/errors.ts";
import { ENCRYPTION_OPTIONS, loadEncryptionKey } from "./encryption_key.ts";
import type { VolumeSecret } from "../crypto/sector_cipher.ts";
import { checkedCipher, lineageCiphers } from "../log/volume_encryption.ts";
import { Gate, ObjectReader } from "./export_reader.ts";
import { systemClock } from "../util/clock.ts";
import { SECTOR_BYTES } from "../util/constants.ts";
import { type Logger, stderrLogger } from "../util/log.ts";
import { forEachBounded, readInOrder } from "../util/ordered.ts";
import { Progress, stderrTerminal } from "../util/progress.ts";
import { flagOption, textOption, UsageError } from "./options.ts";
import { type ExportTarget, openExportTarget, PipeClosed } from "./export_target.ts";
import {
  Interrupted,
  interruptible,
  listVolume,
  parallelOption,
  parseTool,
  retriedSelection,
  TOOL_LOAD_CONCURRENCY,
  unlessStopped,
  where,
} from "./tool_support.ts";

const OPTIONS = {
  ...ENCRYPTION_OPTIONS,
  at: textOption({
    help: "Export the disk as it was after this object number or at this RFC 3339 time",
    placeholder: "POINT",
  }),
  snapshot: textOption({
    help: "Export the disk as snapshot NAME kept it",
    placeholder: "NAME",
  }),
  force: flagOption({
    commandLineOnly: true,
    help: "Replace FILE if it exists (once the new image is complete), or write onto a device",
  }),
  parallel: parallelOption("GETs in flight at once"),
};

const SUMMARY =
  "Writes the disk as a raw image to FILE (sparse: never-written ranges are holes) or, with -,\n" +
  "to standard output. With --force, FILE may also be a block device (written in place, holes as\n" +
  "zeros; refused while mounted or when smaller than the volume) or a pipe. POINT is an object\n" +
  "number or an RFC 3339 time (the newest object sealed at or before it), or a snapshot name.\n" +
  "Reads the bucket directly; changes nothing there but a short-lived pin key that keeps garbage\n" +
  "collection off what the export reads.";

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
  const [path, extra] = parsed.positionals;
  if (path === undefined) throw new UsageError("Missing FILE: give a file name, or - for standard output");
  if (extra !== undefined) throw new UsageError(`Unexpected argument "${extra}"`);
  const { force, parallel, at, snapshot } = parsed.values;
  if (at !== undefined && snapshot !== undefined) throw new UsageError("Give either --at or --snapshot");
  const point = snapshot !== undefined
    ? { kind: "snapshot" as const, name: snapshot, text: snapshot }
    : at === undefined
    ? undefined
    : parsePoint(at, parsed.options.source("at"));
  const secret = loadEncryptionKey(parsed.options);
  // Before the store: a target export cannot write costs no download, and is refused in one line.
  const target = await openExportTarget(path, force);
  const held: { pin?: HeldPin | undefined } = {};
  try {
    const exported = await interruptible(
      log,
      (stopped) =>
        unlessStopped(exportVolume({ ...parsed, point, parallel, target, held, log, secret }), stopped),
    );
    await target.finish();
    log(
      `Exported ${exported.sizeBytes} bytes (${exported.mappedBytes} bytes of data) to ${target.name}.`,
    );
    return 0;
  } catch (e) {
    await target.abort();
    if (e instanceof PipeClosed) return PIPE_CLOSED_STATUS; // the reader has what it wanted: say nothing
    if (e instanceof Interrupted) {
      log(
        `Export ${e.message}; ${
          target.sparse ? `${target.name} was not written` : "the image is incomplete"
        }.`,
      );
      return e.exitCode;
    }
    throw e;
  } finally {
    await held.pin?.release();
  }
}

/** What a shell shows for a writer killed by SIGPIPE, as cat or dd into `| head`. */
const PIPE_CLOSED_STATUS = 141;

async function exportVolume(
  o: {
    selection: StoreSelection;
    point: Point | undefined;
    parallel: number;
    target: ExportTarget;
    held: { pin?: HeldPin | undefined };
    log: Logger;
    secret: VolumeSecret | undefined;
  },
): Promise<{ sizeBytes: number; mappedBytes: number }> {
  const { log } = o;
  const selection = retriedSelection(o.selection, log);
  const { store, prefix } = selection;
  let state = await listVolume(selection, { mustExist: true });
  // Before the pin: a missing or wrong key (an ancestor's too) is refused with nothing written.
  const cipher = await checkedCipher(store, { prefix, record: state.format, secret: o.secret });
  const resolved = o.point === undefined ? undefined : await resolvePoint(store, state, o.point);
  // A pin keeps garbage collection from moving what this export reads (released at the end).
  o.held.pin = await holdPin(store, selection.prefix, resolved?.sequence ?? state.endSequence, {
    clock: systemClock,
    purpose: "export",
  }).catch((e) => {
    if (isLsvdError(e, "invalid")) throw e; // the point is no longer kept
    log(`Exporting without a pin (garbage collection may race this export): ${(e as Error).message}.`);
    return undefined;
  });
  state = await listVolume(selection, { mustExist: true });
  const loaded = await loadLog(store, state, {
    concurrency: TOOL_LOAD_CONCURRENCY,
    log,
    ...(resolved === undefined ? {} : { atSequence: resolved.sequence }),
  });
  if (loaded.lastSequence === 0 || loaded.volumeSizeBytes === undefined) {
    throw new LsvdError(
      "invalid",
      `Cannot export: the volume ${where(selection)} has no recorded size`,
    );
  }
  const sizeBytes = loaded.volumeSizeBytes;
  await o.target.prepare(sizeBytes, log);
  const what = resolved === undefined ? `object ${loaded.lastSequence}` : resolved.description;
  log(`Exporting ${sizeBytes} bytes as of ${what} ${where(selection)}.`);
  const reader = new ObjectReader(loaded.lineage.readStore(store), state, loaded.lineage);
  const mappedBytes = mappedBytesOf(loaded);
  // An encrypted volume's pieces are decrypted too, each with its lineage member's key.
  reader.cipherFor = lineageCiphers(loaded.lineage, cipher, o.secret);
  const progress = new Progress({
    what: "Exporting",
    unit: "bytes",
    total: mappedBytes,
    clock: systemClock,
    log,
    terminal: stderrTerminal(),
  });
  try {
    if (o.target.sparse) await exportSparse(o.target, loaded, reader, o.parallel, progress);
    else await exportInOrder(o.target, loaded, reader, o.parallel, progress);
  } finally {
    progress.finish();
  }
  return { sizeBytes, mappedBytes };
}

function mappedBytesOf(loaded: LoadedLog): number {
  let sectors = 0;
  for (const run of loaded.map.runs()) for (let i = 1; i < run.length; i += 4) sectors += run[i]!;
  return sectors * SECTOR_BYTES;
}

/** Mapped data only, each piece at its offset, in whatever order the GETs finish. */
async function exportSparse(
  target: ExportTarget,
  loaded: LoadedLog,
  reader: ObjectReader,
  parallel: number,
  progress: Progress,
): Promise<void> {
  const sizeBytes = loaded.volumeSizeBytes!;
  let done = 0;
  const gets = planReads(loaded.map, 0, sizeBytes / SECTOR_BYTES, {
    gapBytesMax: GAP_BYTES_MAX,
    getBytesMax: GET_BYTES_MAX,
  });
  await forEachBounded(gets, parallel, async (get) => {
    const body = await reader.read(get);
    for (const p of get.pieces) {
      const bytes = p.lengthSectors * SECTOR_BYTES;
      await target.writeAt(
        body.subarray(p.bodyOffsetBytes, p.bodyOffsetBytes + bytes),
        p.diskSector * SECTOR_BYTES,
      );
      done += bytes;
    }
    progress.update(done);
  });
}

/** Every byte in disk order, window by window (holes as zeros), with the same GETs in flight. */
async function exportInOrder(
  target: ExportTarget,
  loaded: LoadedLog,
  reader: ObjectReader,
  parallel: number,
  progress: Progress,
): Promise<void> {
  const sizeBytes = loaded.volumeSizeBytes!;
  const windows: number[] = [];
  for (let at = 0; at < sizeBytes; at += WINDOW_BYTES) windows.push(at);
  const gate = new Gate(parallel);
  let done = 0;
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
    await target.writeNext(window);
    progress.update(done);
  });
}
