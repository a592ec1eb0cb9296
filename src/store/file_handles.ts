/**
 * @module
 * Open files of the directory store, kept for reuse. A ranged GET of an object that lsvd wrote
 * moments ago (so the OS page cache holds it) costs far less as one positional read (pread) on a
 * file that is already open than as open + stat + seek + read + close: the syscalls are cheap, the
 * trips through Deno's blocking-op thread pool are not. For the same reason the pread itself runs
 * synchronously: a page-cache hit takes a few microseconds, less than handing it to the pool
 * (measured: 12k against 7k random 4 KiB reads/s on the same loaded machine); the price is that a
 * read the page cache misses holds the event loop for one disk read. `useNow` serves the store's
 * `readNow`, which skips even the promise when the file is open (docs/design/read-path.md).
 *
 * Bounded: at most `handlesMax` files stay open, least recently used closed first (a handle in use
 * is closed when its last reader is done). Coherent with the store's own writes: the store drops a
 * key's handle when it writes or deletes that key. Changes made behind its back (another process
 * deleting a file or renaming over it) are noticed within REVALIDATE_MS: a handle whose file's link
 * count has dropped to 0 is closed and the path opened again, so the caller then sees NotFound or
 * the new file. Checking on every read would cost more than the read itself (node:fs fstat builds
 * a Stats object with four Dates), which is why the store keeps handles only for ranged reads of
 * log objects, which are created once and never replaced, and reads whole objects (format record,
 * checkpoints: the keys that can be replaced) through a fresh open (`withFreshFile`).
 */

import * as fs from "node:fs";
import { preadFully } from "../util/positional_io.ts";

/** An open object file: its descriptor and size (objects never change once in place). */
export interface OpenFile {
  readonly fd: number;
  readonly sizeBytes: number;
}

/** How stale a kept handle may get when its file is deleted or replaced by another process. */
export const REVALIDATE_MS = 1000;

/** How often a handle answering reads at once moves to the recent end of the LRU order. */
const RECENCY_MS = 100;

interface Entry extends OpenFile {
  checkedAtMs: number;
  usedAtMs: number;
  readers: number;
  retired: boolean;
  closed: boolean;
}

/** Thrown (via `use`) when the path is not a regular file: a directory, say. */
export class NotAFileError extends Error {
  constructor(path: string) {
    super(`${path} is not a regular file`);
    this.name = "NotAFileError";
  }
}

/** A map slot: the open in progress, and the file once it is open. */
interface Slot {
  ready: Promise<Entry>;
  entry: Entry | undefined;
}

export class FileHandles {
  #handlesMax: number;
  /** path -> the open (or opening) file; Map order is recency, oldest first. */
  #slots = new Map<string, Slot>();

  constructor(handlesMax: number) {
    if (!(Number.isInteger(handlesMax) && handlesMax >= 1)) {
      throw new RangeError(`bad handlesMax ${handlesMax}`);
    }
    this.#handlesMax = handlesMax;
  }

  /** Open handles, opening ones included (tests and bounds). */
  get size(): number {
    return this.#slots.size;
  }

  /** Runs fn with an open handle of path. Open errors (ENOENT, ...) reach the caller as thrown. */
  async use<T>(path: string, fn: (file: OpenFile) => Promise<T>): Promise<T> {
    for (;;) {
      const slot = this.#acquire(path);
      // An open file is used without a trip through the microtask queue.
      const entry = slot.entry ?? await slot.ready;
      if (entry.closed) continue; // retired and closed between open and now: open again
      entry.readers++;
      try {
        const nowMs = Date.now(); // not performance.now(): that is an op call, this is not
        if (nowMs - entry.checkedAtMs >= REVALIDATE_MS) {
          entry.checkedAtMs = nowMs;
          if (fs.fstatSync(entry.fd).nlink === 0) {
            this.#retireEntry(path, entry); // unlinked or replaced by someone else: reopen the path
            continue;
          }
        }
        return await fn(entry);
      } finally {
        entry.readers--;
        if (entry.retired && entry.readers === 0) closeEntry(entry);
      }
    }
  }

  /**
   * Runs fn at once with path's handle when the file is open already and its revalidation is not
   * due; otherwise (not open yet, opening, due for its check) undefined: call use(). fn must not
   * keep the handle past its return.
   */
  useNow<T>(path: string, fn: (file: OpenFile) => T): T | undefined {
    const slot = this.#slots.get(path);
    const entry = slot?.entry;
    const nowMs = Date.now();
    if (entry === undefined || entry.closed || nowMs - entry.checkedAtMs >= REVALIDATE_MS) {
      return undefined;
    }
    if (nowMs - entry.usedAtMs >= RECENCY_MS) {
      entry.usedAtMs = nowMs; // recency, refreshed at most every RECENCY_MS (a Map move per read costs)
      this.#slots.delete(path);
      this.#slots.set(path, slot!);
    }
    return fn(entry); // synchronous: no reader count is needed, nothing can close it meanwhile
  }

  /** Forgets path's handle (its key was written or deleted); readers in progress finish first. */
  invalidate(path: string): void {
    const slot = this.#slots.get(path);
    if (slot === undefined) return;
    this.#slots.delete(path);
    slot.ready.then((e) => this.#retireEntry(path, e), () => {});
  }

  /** Closes every handle (as soon as its readers are done). */
  clear(): void {
    for (const path of [...this.#slots.keys()]) this.invalidate(path);
  }

  #acquire(path: string): Slot {
    const found = this.#slots.get(path);
    if (found !== undefined) {
      this.#slots.delete(path);
      this.#slots.set(path, found);
      return found;
    }
    const slot: Slot = { ready: openEntry(path), entry: undefined };
    this.#slots.set(path, slot);
    slot.ready.then((e) => (slot.entry = e), () => {
      if (this.#slots.get(path) === slot) this.#slots.delete(path);
    });
    while (this.#slots.size > this.#handlesMax) this.invalidate(this.#slots.keys().next().value!);
    return slot;
  }

  #retireEntry(path: string, entry: Entry): void {
    if (this.#slots.get(path)?.entry === entry) this.#slots.delete(path);
    entry.retired = true;
    if (entry.readers === 0) closeEntry(entry);
  }
}

async function openEntry(path: string): Promise<Entry> {
  const fd = await new Promise<number>((resolve, reject) =>
    fs.open(path, "r", (error, fd) => error ? reject(error) : resolve(fd))
  );
  let stat: fs.Stats;
  try {
    stat = fs.fstatSync(fd);
  } catch (error) {
    fs.closeSync(fd);
    throw error;
  }
  if (!stat.isFile()) {
    fs.closeSync(fd);
    throw new NotAFileError(path);
  }
  return {
    fd,
    sizeBytes: stat.size,
    checkedAtMs: Date.now(),
    usedAtMs: 0,
    readers: 0,
    retired: false,
    closed: false,
  };
}

/** Opens path, runs fn, closes: for reads that must see the file as it is now. */
export async function withFreshFile<T>(path: string, fn: (file: OpenFile) => Promise<T>): Promise<T> {
  const entry = await openEntry(path);
  try {
    return await fn(entry);
  } finally {
    closeEntry(entry);
  }
}

function closeEntry(entry: Entry): void {
  if (entry.closed) return;
  entry.closed = true;
  fs.close(entry.fd, () => {});
}

/** Reads lengthBytes at positionBytes (a synchronous pread, see above); fewer only at the end of the file. */
export function readAt(
  file: OpenFile,
  positionBytes: number,
  lengthBytes: number,
): Uint8Array {
  const body = new Uint8Array(lengthBytes);
  const filled = fill(file, positionBytes, body);
  return filled === lengthBytes ? body : body.subarray(0, filled);
}

/** Fills dest from positionBytes (a synchronous pread); false when the file ends first. */
export function readInto(file: OpenFile, positionBytes: number, dest: Uint8Array): boolean {
  return fill(file, positionBytes, dest) === dest.length;
}

function fill(file: OpenFile, positionBytes: number, dest: Uint8Array): number {
  return preadFully(file.fd, positionBytes, dest);
}
