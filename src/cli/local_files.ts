/**
 * @module
 * The local files `export` writes and `import` reads, as a user names them: what kind of file a path
 * is, a block device's size (fstat says 0 for one; lseek to its end says how many bytes it holds),
 * an exclusive hold on a block device (O_EXCL without O_CREAT: refused while it is mounted or held by
 * device-mapper, RAID or another exclusive opener), and OS errors as a few plain words.
 */

import { dirname } from "node:path";
import { cString, EBUSY, Libc, O_CLOEXEC, O_EXCL, O_RDONLY, O_WRONLY } from "../attach/libc.ts";

export type FileKind = "file" | "directory" | "block device" | "character device" | "named pipe" | "socket";

export function kindOf(info: Deno.FileInfo): FileKind {
  if (info.isFile) return "file";
  if (info.isDirectory) return "directory";
  if (info.isBlockDevice) return "block device";
  if (info.isCharDevice) return "character device";
  if (info.isFifo) return "named pipe";
  return "socket";
}

/** What a path names (following symbolic links), or undefined when nothing is there. */
export async function statOrUndefined(path: string): Promise<Deno.FileInfo | undefined> {
  try {
    return await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
}

/** The bytes an open block device holds; leaves the file positioned at its start. */
export async function blockDeviceBytes(file: Deno.FsFile): Promise<number> {
  const end = await file.seek(0, Deno.SeekMode.End);
  await file.seek(0, Deno.SeekMode.Start);
  return end;
}

/** /sys/dev/block/MAJOR:MINOR of a device node (Linux's dev_t: 12+20 bits of major, 20 of minor). */
function sysfsDirectory(info: Deno.FileInfo): string | undefined {
  const rdev = info.rdev;
  if (rdev === null || rdev === undefined) return undefined;
  const high = Math.floor(rdev / 2 ** 32);
  const low = rdev % 2 ** 32;
  const major = ((low >>> 8) & 0xfff) | ((high & 0xfffff000) >>> 0);
  const minor = (low & 0xff) | ((low >>> 12) & 0xfff00);
  return `/sys/dev/block/${major}:${minor}`;
}

/** True when the kernel marks the block device read-only (a read-only loop device, a locked card). */
export async function blockDeviceReadOnly(info: Deno.FileInfo): Promise<boolean> {
  const directory = sysfsDirectory(info);
  if (directory === undefined) return false;
  const text = await Deno.readTextFile(`${directory}/ro`).catch(() => "0");
  return text.trim() === "1";
}

/** An exclusive open of a block device, held until release(). */
export interface DeviceHold {
  release(): void;
}

/**
 * Opens a block device with O_EXCL and keeps it open: no filesystem can mount it meanwhile, and it
 * is refused ("busy") while one is mounted or something else holds it exclusively.
 */
export function holdDevice(path: string, write: boolean): DeviceHold | "busy" {
  const libc = new Libc();
  const fd = libc.raw.open(cString(path), (write ? O_WRONLY : O_RDONLY) | O_EXCL | O_CLOEXEC);
  if (fd < 0) {
    const errno = libc.lastErrno();
    const cause = libc.lastError();
    libc.closeLibrary();
    if (errno === EBUSY) return "busy";
    throw new Error(cause);
  }
  return {
    release() {
      libc.close(fd);
      libc.closeLibrary();
    },
  };
}

/**
 * An error of a local file operation in a few words: `no such file or directory`, `permission
 * denied`, `read-only file system`, ... (Deno's "(os error N): open '...'" and Node's "ECODE: ..., open
 * '...'" stripped: the message that carries it names the path already).
 */
export function osErrorText(e: unknown): string {
  const message = e instanceof Error ? e.message : String(e);
  const text = message
    .replace(/^E[A-Z]+: /, "")
    .replace(/, [a-z]+ '.*'$/, "")
    .replace(/ \(os error \d+\)(: .*)?$/, "");
  return text.charAt(0).toLowerCase() + text.slice(1);
}

/** Why a new file cannot be created at path, in a few words. */
export async function createErrorText(path: string, e: unknown): Promise<string> {
  if (e instanceof Deno.errors.NotFound || (e as { code?: string }).code === "ENOENT") {
    const parent = dirname(path);
    const info = await statOrUndefined(parent).catch(() => undefined);
    if (info === undefined) return `the directory ${parent} does not exist`;
    if (!info.isDirectory) return `${parent} is not a directory`;
  }
  return osErrorText(e);
}
