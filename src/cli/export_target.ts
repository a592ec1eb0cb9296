/**
 * @module
 * Where `lsvd export` writes, chosen from what the path names before the bucket is read (so a bad
 * target costs no download), and what a failure may undo:
 *
 *   new FILE          created create-only; a failed export removes it: the only path export removes
 *   existing FILE     (--force) the image goes to a temp file beside it, renamed over it once complete;
 *                     a failed export leaves the old file as it was and removes only its temp file
 *   block device      (--force) the image written onto it in disk order, holes as zeros, never
 *                     truncated; refused while it is mounted or held (it is held with O_EXCL while
 *                     export writes) and when it is smaller than the volume
 *   character device, (--force) the image streamed in disk order, as to `-` (/dev/null is a sink)
 *   named pipe
 *   -                 standard output, refused when it is a terminal
 *
 * Directories, sockets and links to nothing are refused. A device or pipe is never removed or
 * truncated. A reader that closes its end early (`| head`, `| cmp` finding a difference) is
 * PipeClosed: export then ends quietly.
 */

import { open } from "node:fs/promises";
import type { FileHandle } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { LsvdError } from "../util/errors.ts";
import type { Logger } from "../util/log.ts";
import {
  blockDeviceBytes,
  blockDeviceReadOnly,
  createErrorText,
  type DeviceHold,
  holdDevice,
  kindOf,
  osErrorText,
  statOrUndefined,
} from "./local_files.ts";
import { UsageError } from "./options.ts";

/** The reader of a pipe export writes to closed it: not an error of lsvd's, nothing to say. */
export class PipeClosed extends Error {
  constructor() {
    super("the reader closed the pipe");
    this.name = "PipeClosed";
  }
}

export interface ExportTarget {
  /** `standard output` or the path as given, for log lines. */
  readonly name: string;
  /** True: positional writes of mapped data only (holes stay holes). False: every byte in disk order. */
  readonly sparse: boolean;
  /** Before the first write: sizes a file; refuses a device smaller than sizeBytes. */
  prepare(sizeBytes: number, log: Logger): Promise<void>;
  /** Sparse targets: bytes at their disk offset. */
  writeAt(bytes: Uint8Array, positionBytes: number): Promise<void>;
  /** Ordered targets: the next bytes of the image. */
  writeNext(bytes: Uint8Array): Promise<void>;
  /** After the last write: closes; a replaced file takes the old one's place. */
  finish(): Promise<void>;
  /** After a failure: closes, and removes what export created (a new file, a temp file), nothing else. */
  abort(): Promise<void>;
}

/** Opens what the export writes to, or refuses it in one line; nothing is changed by a refusal. */
export async function openExportTarget(path: string, force: boolean): Promise<ExportTarget> {
  if (path === "-") {
    if (Deno.stdout.isTerminal()) {
      throw new UsageError(
        "Cannot export to standard output: it is a terminal; redirect it (> disk.img, | ...) or give a FILE",
      );
    }
    return new StdoutTarget();
  }
  const link = await Deno.lstat(path).catch((e) => {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw new UsageError(`Cannot export to ${path}: ${osErrorText(e)}`);
  });
  if (link === undefined) return await createFile(path);
  const info = await statOrUndefined(path).catch((e) => {
    throw new UsageError(`Cannot export to ${path}: ${osErrorText(e)}`);
  });
  if (info === undefined) {
    throw new UsageError(`Cannot export to ${path}: it is a symbolic link to nothing`);
  }
  const kind = kindOf(info);
  if (kind === "directory") {
    throw new UsageError(
      `Cannot export to ${path}: it is a directory; give a file name (${join(path, "disk.img")})`,
    );
  }
  if (kind === "socket") throw new UsageError(`Cannot export to ${path}: it is a socket`);
  if (!force) {
    throw new UsageError(
      kind === "file"
        ? `Cannot export to ${path}: the file exists; give --force to overwrite it`
        : kind === "block device"
        ? `Cannot export to ${path}: it is a block device; give --force to write the image onto it ` +
          "(what it holds is overwritten)"
        : `Cannot export to ${path}: it is a ${kind}; give --force to write the image into it`,
    );
  }
  if (kind === "file") return await replaceFile(path, info);
  if (kind === "block device") return await openDevice(path, info);
  return await openStream(path);
}

/** A write error as one line naming the target (a full disk is the user's to fix, not a crash). */
function writeFailed(name: string, e: unknown): Error {
  if (e instanceof Deno.errors.BrokenPipe || (e as { code?: string }).code === "EPIPE") {
    return new PipeClosed();
  }
  if (e instanceof LsvdError || e instanceof UsageError) return e;
  return new LsvdError("invalid", `Cannot write the image to ${name}: ${osErrorText(e)}`, { cause: e });
}

class StdoutTarget implements ExportTarget {
  readonly name = "standard output";
  readonly sparse = false;

  prepare(): Promise<void> {
    return Promise.resolve();
  }

  writeAt(): Promise<void> {
    throw new Error("standard output takes the image in order");
  }

  async writeNext(bytes: Uint8Array): Promise<void> {
    try {
      for (let done = 0; done < bytes.length;) done += await Deno.stdout.write(bytes.subarray(done));
    } catch (e) {
      throw writeFailed(this.name, e);
    }
  }

  finish(): Promise<void> {
    return Promise.resolve();
  }

  abort(): Promise<void> {
    return Promise.resolve();
  }
}

/** A regular file written sparse: a new one (removed on failure) or a temp file replacing one. */
class FileTarget implements ExportTarget {
  readonly sparse = true;
  readonly name: string;
  #file: FileHandle;
  /** The path this export created and writes: the target itself, or the temp file beside it. */
  #written: string;
  /** Where the temp file goes once complete; undefined for a new file. */
  #replaces: string | undefined;

  constructor(o: { name: string; file: FileHandle; written: string; replaces?: string }) {
    this.name = o.name;
    this.#file = o.file;
    this.#written = o.written;
    this.#replaces = o.replaces;
  }

  async prepare(sizeBytes: number): Promise<void> {
    try {
      await this.#file.truncate(sizeBytes);
    } catch (e) {
      throw writeFailed(this.name, e);
    }
  }

  async writeAt(bytes: Uint8Array, positionBytes: number): Promise<void> {
    try {
      for (let done = 0; done < bytes.length;) {
        const { bytesWritten } = await this.#file.write(
          bytes,
          done,
          bytes.length - done,
          positionBytes + done,
        );
        done += bytesWritten;
      }
    } catch (e) {
      throw writeFailed(this.name, e);
    }
  }

  writeNext(): Promise<void> {
    throw new Error("a file takes the image sparse");
  }

  async finish(): Promise<void> {
    // No fsync, as cp and dd: the image is complete in the page cache when export exits (run
    // `sync` before relying on it surviving a power cut); syncing a large image here cost as much
    // time as fetching it.
    try {
      await this.#file.close();
      if (this.#replaces !== undefined) await Deno.rename(this.#written, this.#replaces);
    } catch (e) {
      throw writeFailed(this.name, e);
    }
  }

  async abort(): Promise<void> {
    await this.#file.close().catch(() => {});
    await Deno.remove(this.#written).catch(() => {}); // a partial image must not pass for an export
  }
}

async function createFile(path: string): Promise<ExportTarget> {
  try {
    return new FileTarget({ name: path, file: await open(path, "wx", 0o644), written: path });
  } catch (e) {
    if ((e as { code?: string }).code === "EEXIST") {
      throw new UsageError(`Cannot export to ${path}: the file exists; give --force to overwrite it`);
    }
    throw new UsageError(`Cannot export to ${path}: ${await createErrorText(path, e)}`);
  }
}

/** --force on an existing file: a temp file beside it (same file system), renamed over it at the end. */
async function replaceFile(path: string, info: Deno.FileInfo): Promise<ExportTarget> {
  const real = await Deno.realPath(path).catch((e) => {
    throw new UsageError(`Cannot export to ${path}: ${osErrorText(e)}`);
  });
  const base = basename(real);
  // Beside the file (a rename across file systems would copy); a name within NAME_MAX (255).
  const tag = `lsvd-export-${crypto.randomUUID().slice(0, 8)}`;
  const temp = join(dirname(real), base.length > 200 ? `.${tag}` : `.${base}.${tag}`);
  let file: FileHandle;
  try {
    file = await open(temp, "wx", 0o600);
  } catch (e) {
    throw new UsageError(
      `Cannot export to ${path}: cannot create the new image beside it (${await createErrorText(temp, e)})`,
    );
  }
  try {
    // The replacement keeps the old file's mode, and its owner when this process may give it.
    await file.chmod((info.mode ?? 0o644) & 0o7777);
    if (info.uid !== null && info.gid !== null) await file.chown(info.uid, info.gid).catch(() => {});
  } catch (e) {
    await file.close().catch(() => {});
    await Deno.remove(temp).catch(() => {});
    throw new UsageError(`Cannot export to ${path}: ${osErrorText(e)}`);
  }
  return new FileTarget({ name: path, file, written: temp, replaces: real });
}

/** A device or pipe taking the image in disk order; never truncated, never removed. */
class OrderedTarget implements ExportTarget {
  readonly sparse = false;
  readonly name: string;
  #file: Deno.FsFile;
  #device: { hold: DeviceHold; sizeBytes: number } | undefined;

  constructor(name: string, file: Deno.FsFile, device: { hold: DeviceHold; sizeBytes: number } | undefined) {
    this.name = name;
    this.#file = file;
    this.#device = device;
  }

  prepare(sizeBytes: number, log: Logger): Promise<void> {
    const device = this.#device;
    if (device !== undefined) {
      if (device.sizeBytes < sizeBytes) {
        throw new LsvdError(
          "invalid",
          `Cannot export to ${this.name}: the device holds ${device.sizeBytes} bytes, fewer than the volume's ${sizeBytes}`,
        );
      }
      if (device.sizeBytes > sizeBytes) {
        log(
          `${this.name} holds ${device.sizeBytes} bytes; the ${
            device.sizeBytes - sizeBytes
          } bytes after the image are left as they are.`,
        );
      }
    }
    return Promise.resolve();
  }

  writeAt(): Promise<void> {
    throw new Error("a device or pipe takes the image in order");
  }

  async writeNext(bytes: Uint8Array): Promise<void> {
    try {
      for (let done = 0; done < bytes.length;) done += await this.#file.write(bytes.subarray(done));
    } catch (e) {
      throw writeFailed(this.name, e);
    }
  }

  async finish(): Promise<void> {
    try {
      // A device is often detached or unplugged right after a restore: its writes are made durable.
      if (this.#device !== undefined) await this.#file.syncData();
    } catch (e) {
      throw writeFailed(this.name, e);
    } finally {
      this.#close();
    }
  }

  abort(): Promise<void> {
    this.#close();
    return Promise.resolve();
  }

  #close(): void {
    try {
      this.#file.close();
    } catch {
      // closed already
    }
    this.#device?.hold.release();
    this.#device = undefined;
  }
}

async function openDevice(path: string, info: Deno.FileInfo): Promise<ExportTarget> {
  if (await blockDeviceReadOnly(info)) {
    throw new UsageError(`Cannot export to ${path}: the device is read-only`);
  }
  let hold: DeviceHold | "busy";
  try {
    hold = holdDevice(path, true);
  } catch (e) {
    throw new UsageError(`Cannot export to ${path}: ${osErrorText(e)}`);
  }
  if (hold === "busy") {
    throw new UsageError(
      `Cannot export to ${path}: the device is in use (mounted, or held by another program); unmount it first`,
    );
  }
  try {
    const file = await Deno.open(path, { write: true });
    return new OrderedTarget(path, file, { hold, sizeBytes: await blockDeviceBytes(file) });
  } catch (e) {
    hold.release();
    throw new UsageError(`Cannot export to ${path}: ${osErrorText(e)}`);
  }
}

async function openStream(path: string): Promise<ExportTarget> {
  try {
    return new OrderedTarget(path, await Deno.open(path, { write: true }), undefined);
  } catch (e) {
    throw new UsageError(`Cannot export to ${path}: ${osErrorText(e)}`);
  }
}
