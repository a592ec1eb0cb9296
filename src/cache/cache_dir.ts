/**
 * @module
 * What opening a disk cache's directory (`serve --cache-dir DIR`, src/cache/disk_cache.ts) checks
 * and creates before any slot is read: the lock naming the daemon that uses DIR, the identity of the
 * volume it caches, room on the disk for SIZE, and files only this user can read (the memory SIZE
 * needs is checked before, with the options: serve.ts cacheDirConfig). Each
 * refusal is one line naming DIR (docs/design/disk-cache.md, "Files" and "Bounds").
 */

import { currentHolder, localProcesses, lockHolderGone, parseLockHolder } from "../util/lease_holder.ts";
import { LsvdError, messageOf } from "../util/errors.ts";
import type { Logger } from "../util/log.ts";
import { roomBytes } from "../util/disk_space.ts";
import { formatSize } from "../util/sizes.ts";
import * as fs from "node:fs";

export const LOCK_FILE = "lsvd-cache.lock";
export const ID_FILE = "lsvd-cache.id";
export const DATA_FILE = "lsvd-cache.data";
export const INDEX_FILE = "lsvd-cache.slots";
/** The index of an older lsvd (16-byte records without the sector CRC): dropped at open. */
export const OLD_INDEX_FILE = "lsvd-cache.index";

/**
 * Opens (or creates) one of the cache's files for reading and writing, readable by this user only
 * (an older lsvd's too): a node:fs descriptor, for pread/pwrite (util/positional_io.ts), also
 * pushed on `opened` so a failed open can close what it opened.
 */
export function openPrivate(path: string, opened: number[]): number {
  const fd = fs.openSync(path, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o600);
  opened.push(fd);
  fs.fchmodSync(fd, 0o600);
  return fd;
}

/**
 * Creates the lock file exclusively, naming this process as a lease names its holder (host, boot,
 * pid namespace, pid, start time). One left by a process this machine proves gone (exited, a zombie,
 * its pid now another process, or an earlier boot: lease_holder.ts lockHolderGone) or unreadable
 * (torn by a crash: nobody can hold it) is replaced; any other refuses.
 */
export function takeLock(path: string, where: string): void {
  const machine = localProcesses();
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      Deno.writeTextFileSync(path, `${JSON.stringify(currentHolder(machine))}\n`, {
        createNew: true,
        mode: 0o600,
      });
      return;
    } catch (e) {
      if (!(e instanceof Deno.errors.AlreadyExists)) {
        throw new LsvdError("invalid", `Cannot use ${where}: ${messageOf(e)}`);
      }
    }
    const holder = parseLockHolder(Deno.readTextFileSync(path), machine.host);
    if (holder !== undefined && holder.pid !== Deno.pid && !lockHolderGone(holder, machine)) {
      throw new LsvdError(
        "unavailable", // free again once that daemon stops: serve --takeover goes on without it
        `Cannot use ${where}: another lsvd daemon (host ${holder.host} pid ${holder.pid}) uses it`,
      );
    }
    Deno.removeSync(path); // ours: an lsvd that did not stop cleanly left it
  }
  throw new LsvdError("invalid", `Cannot use ${where}: its lock file keeps coming back`);
}

/**
 * An index in the older layout (no sector CRC; lsvd created it): removed, with one line, so the
 * cache starts empty and refills (its data file's slots are overwritten as they are reused).
 */
export function dropOldIndex(dir: string, log: Logger): void {
  try {
    Deno.removeSync(`${dir}/${OLD_INDEX_FILE}`);
    log(`Disk cache "${dir}": the index of an older lsvd was dropped; the cache starts empty.`);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
}

/**
 * SIZE must fit on DIR's filesystem: its free bytes plus what the cache's own files hold already
 * (they are reused). Else the files would fill the disk as the cache fills, and then keep nothing.
 */
export function checkRoom(dir: string, sizeBytes: number, where: string): void {
  const room = roomBytes(dir, [DATA_FILE, INDEX_FILE]);
  if (room === undefined) return; // no statvfs here: the first failed write says it instead
  if (sizeBytes <= room) return;
  throw new LsvdError(
    "invalid",
    `Cannot use ${where}: --cache-dir-size ${formatSize(sizeBytes)} is more than its filesystem has free ` +
      `(${bytesSaid(room)}); give a smaller --cache-dir-size`,
  );
}

function bytesSaid(bytes: number): string {
  return bytes >= 2 ** 30 ? `${(bytes / 2 ** 30).toFixed(1)} GiB` : `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}

/** The first start writes the identity; a later one with another volume is refused. */
export function checkIdentity(path: string, identity: string, where: string): void {
  let found: string;
  try {
    found = Deno.readTextFileSync(path);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
    Deno.writeTextFileSync(path, identity + "\n", { createNew: true, mode: 0o600 });
    return;
  }
  if (found.trim() !== identity) {
    throw new LsvdError(
      "invalid",
      `Cannot use ${where}: it caches another volume (${found.trim()}); give each volume its own directory`,
    );
  }
}
