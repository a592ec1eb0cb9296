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
import { type LoadedLog, loadLog } from "../log/load.ts";
import { parsePoint, type ResolvedPoint, resolvePoint } from "../log/point.ts";
import { holdPin } from "../log/snapshots.ts";
import type { StoreSelection } from "./store_options.ts";
import { planReads } from "../log/read_plan.ts";
import { isLsvdError, LsvdError } from "../util/errors.ts";
import type { RetryPolicy } from "../store/retry.ts";
import { Gate, ObjectReader } from "./export_reader.ts";
import { systemClock } from "../util/clock.ts";
import { SECTOR_BYTES } from "../util/constants.ts";
import type { LogState } from "../log/log_state.ts";
import { type Logger, stderrLogger } from "../util/log.ts";
import { forEachBounded, readInOrder } from "../util/ordered.ts";
import { Progress, stderrTerminal } from "../util/progress.ts";
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
  const reader = new ObjectReader(store, state, retry, loaded.lineage);
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
    // No fsync, as cp and dd: the image is complete in the page cache when export exits (run
    // `sync` before relying on it surviving a power cut); syncing a large image here cost as much
    // time as fetching it.
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
