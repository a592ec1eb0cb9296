/**
 * @module
 * The ObjectStore over a local directory: the embedded default store. Each object is a file
 * whose path relative to the root is exactly its key, so the directory is a faithful copy of
 * what the bucket would hold (and `aws s3 sync` can move it either way).
 *
 * Writes are atomic: the bytes go to a temp file under `<root>/.lsvd-tmp/` (same file system,
 * never listed), are fsynced, then renamed into place; create-only writes use link(), which
 * fails when the key exists, instead of rename, which would replace it.
 *
 * Ranged reads go through a bounded set of open files (`file_handles.ts`): one pread on a file
 * that is already open, which is what lets reads the page cache holds run near memory speed.
 */

import { assert, assertEqual, AssertionError } from "../util/assert.ts";
import {
  FileHandles,
  NotAFileError,
  type OpenFile,
  readAt,
  readInto,
  withFreshFile,
} from "./file_handles.ts";
import { compareKeys } from "./key_order.ts";
import {
  assertRange,
  type ByteRange,
  contentEtag,
  type GetResult,
  type HeadResult,
  lazyPutResult,
  type ListedObject,
  type ListOptions,
  type ListPage,
  type ObjectStore,
  type PutOptions,
  type PutResult,
  StoreError,
} from "./store.ts";

/** Temp files live here; a key may not start with this segment. */
const TEMP_DIRECTORY = ".lsvd-tmp";
/** Serialises conditional overwrites across processes (inside the never-listed temp folder). */
const LOCK_FILE = "conditional.lock";
const LIST_PAGE_KEYS_MAX = 1000;
/** A racing delete may remove a freshly made parent directory; try again this often. */
const PLACE_ATTEMPTS_MAX = 4;

/** Bound on remembered directories (volumes use a handful; a cleared set only costs mkdirs). */
const MADE_DIRECTORIES_MAX = 4096;
/**
 * Open files kept for reads: a 4 KiB random read over 1 GiB of 4 MiB objects touches 256 files, so
 * this covers a working set of ~1 GiB of recent objects at a small share of the usual 1,024 fd limit.
 */
export const OPEN_FILES_MAX = 256;

export interface DirectoryStoreOptions {
  /** fsync files and directories so a write survives power loss; default true. */
  fsync?: boolean;
  /** Files kept open for reads (default OPEN_FILES_MAX). */
  openFilesMax?: number;
}

/** The walk's state while collecting one page of keys. */
interface ListWalk {
  prefix: string;
  startAfter: string | undefined;
  wanted: number;
  keys: string[];
}

export class DirectoryStore implements ObjectStore {
  readonly description: string;
  readonly rootPath: string;
  #fsync: boolean;
  #madeDirectories = new Set<string>();
  #handles: FileHandles;
  /** check() made the root: close() removes it again while it is empty. */
  #createdRoot = false;

  constructor(rootPath: string, options: DirectoryStoreOptions = {}) {
    assert(rootPath !== "", "the root path must not be empty");
    this.rootPath = rootPath.replace(/\/+$/, "") || "/";
    this.description = `the ${this.rootPath} directory`;
    this.#fsync = options.fsync ?? true;
    this.#handles = new FileHandles(options.openFilesMax ?? OPEN_FILES_MAX);
  }

  /**
   * Start-up probe: creates the root if needed and proves files can be written there. A root it
   * created is removed again by close() while it holds nothing (a start that failed).
   */
  async check(): Promise<void> {
    const probe = `${this.rootPath}/${TEMP_DIRECTORY}/check-${crypto.randomUUID()}`;
    try {
      if (await Deno.lstat(this.rootPath).then(() => false, () => true)) this.#createdRoot = true;
      const write = async () => {
        await Deno.mkdir(`${this.rootPath}/${TEMP_DIRECTORY}`, { recursive: true });
        await Deno.writeFile(probe, new Uint8Array(0), { createNew: true });
      };
      // Another process's close() may remove an empty temp folder between the two steps.
      await write().catch((error) => error instanceof Deno.errors.NotFound ? write() : Promise.reject(error));
      await Deno.remove(probe);
    } catch (error) {
      const cause = error instanceof Error ? error.message : String(error);
      throw new StoreError("Fatal", `Cannot use ${this.description}: ${cause}`, { cause: error });
    }
  }

  async put(key: string, body: Uint8Array, options: PutOptions = {}): Promise<PutResult> {
    this.#checkKey("write", key);
    const copy = body; // callers leave it unchanged until put() settles (ObjectStore.put)
    const temp = await this.#writeTemp(key, copy);
    try {
      if (options.ifMatch !== undefined) await this.#placeIfMatch(key, temp, options.ifMatch, copy);
      else await this.#place(key, temp, options.ifNoneMatch === true, copy);
    } finally {
      this.#handles.invalidate(this.#path(key)); // a rename may have replaced the file
      await Deno.remove(temp).catch(() => {});
    }
    return lazyPutResult(copy);
  }

  async head(key: string): Promise<HeadResult> {
    const { body } = await this.get(key);
    return { sizeBytes: body.length, etag: contentEtag(body) };
  }

  async get(key: string, range?: ByteRange): Promise<GetResult> {
    this.#checkKey("read", key);
    if (range !== undefined) assertRange(range);
    try {
      const read = (file: OpenFile) => Promise.resolve(this.#readRange(file, key, range));
      // Ranges are read from log objects (never replaced); whole objects may be replaced keys.
      return await (range === undefined
        ? withFreshFile(this.#path(key), read)
        : this.#handles.use(this.#path(key), read));
    } catch (error) {
      throw this.#mapReadError(key, error);
    }
  }

  /** A ranged read into dest on a file that is open already (ObjectStore.readNow). */
  readNow(key: string, offsetBytes: number, dest: Uint8Array): boolean {
    assertRange({ offsetBytes, lengthBytes: dest.length });
    // No key check: only a checked key's file is ever open (get()), and a path names one key.
    try {
      return this.#handles.useNow(this.#path(key), (file) => readInto(file, offsetBytes, dest)) ?? false;
    } catch (error) {
      if (error instanceof AssertionError) throw error;
      return false; // get() tries again and reports it
    }
  }

  async list(options: ListOptions): Promise<ListPage> {
    const maxKeys = Math.min(options.maxKeys ?? LIST_PAGE_KEYS_MAX, LIST_PAGE_KEYS_MAX);
    assert(Number.isInteger(maxKeys) && maxKeys >= 1, `bad maxKeys ${maxKeys}`);
    const walk: ListWalk = {
      prefix: options.prefix,
      startAfter: options.startAfter || undefined,
      wanted: maxKeys + 1,
      keys: [],
    };
    try {
      await this.#walk(walk, walkBase(options.prefix));
    } catch (error) {
      throw this.#ioError(`list keys under "${options.prefix}" in`, error);
    }
    const objects = await this.#sizes(walk.keys.slice(0, maxKeys));
    return { objects, isTruncated: walk.keys.length > maxKeys };
  }

  async delete(key: string): Promise<void> {
    this.#checkKey("delete", key);
    try {
      await Deno.remove(this.#path(key));
    } catch (error) {
      if (isMissing(error)) return;
      throw this.#ioError(`delete object "${key}" from`, error);
    } finally {
      this.#handles.invalidate(this.#path(key));
    }
    await this.#removeEmptyParents(key);
  }

  async copy(sourceKey: string, destinationKey: string, options: PutOptions = {}): Promise<void> {
    const source = await this.get(sourceKey);
    await this.put(destinationKey, source.body, options);
  }

  /**
   * Releases open files, and leaves no trace of a store that holds nothing: the temp folder goes
   * while it is empty (rmdir, so never a file of another process's write), and a root that check()
   * created goes while it is empty too.
   */
  async close(): Promise<void> {
    this.#handles.clear();
    this.#madeDirectories.clear();
    await Deno.remove(`${this.rootPath}/${TEMP_DIRECTORY}`).catch(() => {});
    if (this.#createdRoot) await Deno.remove(this.rootPath).catch(() => {});
  }

  #path(key: string): string {
    return `${this.rootPath}/${key}`;
  }

  #checkKey(action: string, key: string): void {
    if (!isPlainKey(key)) {
      throw new StoreError(
        "Fatal",
        `Cannot ${action} object "${key}" in ${this.description}: the key is not a relative path of plain names`,
      );
    }
  }

  async #writeTemp(key: string, body: Uint8Array): Promise<string> {
    const directory = `${this.rootPath}/${TEMP_DIRECTORY}`;
    const temp = `${directory}/${crypto.randomUUID()}`;
    try {
      await this.#ensureDirectory(directory);
      const file = await Deno.open(temp, { write: true, createNew: true }).catch(async (error) => {
        if (!(error instanceof Deno.errors.NotFound)) throw error;
        await this.#ensureDirectory(directory, true); // someone removed the temp folder
        return await Deno.open(temp, { write: true, createNew: true });
      });
      try {
        await writeAll(file, body);
        if (this.#fsync) await file.sync();
      } finally {
        file.close();
      }
      return temp;
    } catch (error) {
      await Deno.remove(temp).catch(() => {});
      throw this.#ioError(`write object "${key}" to`, error);
    }
  }

  /** Moves the temp file to the key: rename (replace) or link (create-only). */
  async #place(key: string, temp: string, ifNoneMatch: boolean, body: Uint8Array): Promise<void> {
    const path = this.#path(key);
    const parent = path.slice(0, path.lastIndexOf("/"));
    for (let attempt = 1;; attempt++) {
      try {
        await this.#ensureDirectory(parent, attempt > 1);
        if (ifNoneMatch) await Deno.link(temp, path);
        else await Deno.rename(temp, path);
        break;
      } catch (error) {
        if (ifNoneMatch && error instanceof Deno.errors.AlreadyExists) {
          if (await this.#holds(key, body)) return;
          throw new StoreError(
            "PreconditionFailed",
            `Cannot write object "${key}" to ${this.description}: the key already exists`,
          );
        }
        if (error instanceof Deno.errors.NotFound && attempt < PLACE_ATTEMPTS_MAX) continue;
        throw this.#ioError(`write object "${key}" to`, error);
      }
    }
    if (this.#fsync) await syncDirectory(parent);
  }

  /** Replaces key by the temp file only while key still has `etag`, under the directory's lock. */
  async #placeIfMatch(key: string, temp: string, etag: string, body: Uint8Array): Promise<void> {
    const lock = await this.#lock(key);
    try {
      let current: Uint8Array | undefined;
      try {
        current = await Deno.readFile(this.#path(key));
      } catch (error) {
        if (!isMissing(error)) throw this.#ioError(`write object "${key}" to`, error);
      }
      if (current === undefined || contentEtag(current) !== etag) {
        if (current !== undefined && sameBytes(current, body)) return; // our own write, retried
        const cause = current === undefined ? "the key does not exist" : "the key has changed";
        throw new StoreError(
          "PreconditionFailed",
          `Cannot write object "${key}" to ${this.description}: ${cause}`,
        );
      }
      await this.#place(key, temp, false, body);
    } finally {
      lock.close(); // closing the file releases the lock
    }
  }

  async #lock(key: string): Promise<Deno.FsFile> {
    const directory = `${this.rootPath}/${TEMP_DIRECTORY}`;
    try {
      await this.#ensureDirectory(directory);
      const open = () => Deno.open(`${directory}/${LOCK_FILE}`, { write: true, create: true });
      const file = await open().catch(async (error) => {
        if (!(error instanceof Deno.errors.NotFound)) throw error;
        await this.#ensureDirectory(directory, true); // another process's close() removed the empty folder
        return await open();
      });
      try {
        await file.lock(true);
      } catch (error) {
        file.close();
        throw error;
      }
      return file;
    } catch (error) {
      throw this.#ioError(`lock ${directory}/${LOCK_FILE} to write object "${key}" to`, error);
    }
  }

  /**
   * mkdir -p, skipped for directories this store already made: one fewer syscall round trip per PUT.
   * `again` forces it when a directory made earlier has since gone (delete prunes empty ones).
   */
  async #ensureDirectory(directory: string, again = false): Promise<void> {
    if (!again && this.#madeDirectories.has(directory)) return;
    await Deno.mkdir(directory, { recursive: true });
    if (this.#madeDirectories.size >= MADE_DIRECTORIES_MAX) this.#madeDirectories.clear();
    this.#madeDirectories.add(directory);
  }

  /** True when key holds exactly these bytes (a retried create-only write that landed before). */
  async #holds(key: string, body: Uint8Array): Promise<boolean> {
    try {
      return sameBytes(await Deno.readFile(this.#path(key)), body);
    } catch {
      return false;
    }
  }

  #readRange(file: OpenFile, key: string, range?: ByteRange): GetResult {
    const sizeBytes = file.sizeBytes;
    if (range === undefined) {
      const body = readExactly(file, 0, sizeBytes);
      return { body, totalSizeBytes: sizeBytes, etag: contentEtag(body) };
    }
    if (range.offsetBytes >= sizeBytes) {
      const last = range.offsetBytes + range.lengthBytes - 1;
      throw new StoreError(
        "InvalidRange",
        `Cannot read object "${key}": range ${range.offsetBytes}-${last} not satisfiable (size ${sizeBytes})`,
      );
    }
    const length = Math.min(range.lengthBytes, sizeBytes - range.offsetBytes);
    return { body: readExactly(file, range.offsetBytes, length), totalSizeBytes: sizeBytes };
  }

  /**
   * Visits a directory's entries in key order, collecting keys. Sorting a file by its name and
   * a directory by its name plus `/` orders whole subtrees correctly among their siblings.
   * Returns true once enough keys are collected.
   */
  async #walk(walk: ListWalk, directoryKey: string): Promise<boolean> {
    // Entries that cannot hold a wanted key are dropped before sorting: a page after a key of a
    // large directory (the log objects after a checkpoint) sorts only what follows it.
    const entries = await this.#sortedEntries(directoryKey, (e) => mayHoldWanted(walk, e));
    for (const { sortKey, isDirectory } of entries) {
      if (isDirectory) {
        if (await this.#walk(walk, sortKey)) return true;
      } else {
        walk.keys.push(sortKey);
        if (walk.keys.length >= walk.wanted) return true;
      }
    }
    return false;
  }

  async #sortedEntries(
    directoryKey: string,
    keep: (e: WalkEntry) => boolean,
  ): Promise<WalkEntry[]> {
    const entries: WalkEntry[] = [];
    try {
      for await (const entry of Deno.readDir(`${this.rootPath}/${directoryKey}`)) {
        if (directoryKey === "" && entry.name === TEMP_DIRECTORY) continue;
        if (entry.isDirectory) entries.push({ sortKey: `${directoryKey}${entry.name}/`, isDirectory: true });
        else if (entry.isFile) entries.push({ sortKey: `${directoryKey}${entry.name}`, isDirectory: false });
      }
    } catch (error) {
      if (await Deno.stat(this.rootPath).then((i) => !i.isDirectory, () => false)) {
        throw new StoreError("Fatal", `Cannot use ${this.description}: ${this.rootPath} is not a directory`);
      }
      if (isMissing(error)) return []; // no root yet, or removed by a concurrent delete
      throw error;
    }
    return entries.filter(keep).sort((a, b) => compareKeys(a.sortKey, b.sortKey));
  }

  async #sizes(keys: string[]): Promise<ListedObject[]> {
    const sizes = await Promise.all(keys.map(async (key) => {
      try {
        return (await Deno.stat(this.#path(key))).size;
      } catch (error) {
        if (isMissing(error)) return undefined; // deleted since the directory was read
        throw this.#ioError(`list object "${key}" in`, error);
      }
    }));
    return keys.flatMap((key, i) => sizes[i] === undefined ? [] : [{ key, sizeBytes: sizes[i] }]);
  }

  /** Keeps the tree free of directories no key needs, as a bucket has none. */
  async #removeEmptyParents(key: string): Promise<void> {
    const segments = key.split("/").slice(0, -1);
    while (segments.length > 0) {
      try {
        await Deno.remove(this.#path(segments.join("/")));
      } catch {
        return; // not empty (or already gone): parents above are not empty either
      }
      segments.pop();
    }
  }

  #mapReadError(key: string, error: unknown): StoreError {
    if (error instanceof StoreError) return error;
    if (isMissing(error) || error instanceof NotAFileError) return this.#notFound("read", key);
    return this.#ioError(`read object "${key}" from`, error);
  }

  #notFound(action: string, key: string): StoreError {
    return new StoreError(
      "NotFound",
      `Cannot ${action} object "${key}" from ${this.description}: no such key`,
    );
  }

  #ioError(action: string, error: unknown): StoreError {
    if (error instanceof StoreError) return error;
    const cause = error instanceof Error ? error.message : String(error);
    return new StoreError("Fatal", `Cannot ${action} ${this.description}: ${cause}`, { cause: error });
  }
}

/** A relative path of plain names outside the temp folder: what a key must be here. */
function isPlainKey(key: string): boolean {
  const segments = key.split("/");
  return key !== "" && !key.includes("\0") && segments[0] !== TEMP_DIRECTORY &&
    !segments.some((s) => s === "" || s === "." || s === "..");
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** Deno's own errors, or node:fs ones (the read path) carrying an errno code. */
interface WalkEntry {
  sortKey: string;
  isDirectory: boolean;
}

/** Whether a directory entry is a wanted key, or a directory that may hold one (in key order). */
function mayHoldWanted(walk: ListWalk, e: WalkEntry): boolean {
  const after = walk.startAfter;
  if (e.isDirectory) {
    if (!e.sortKey.startsWith(walk.prefix) && !walk.prefix.startsWith(e.sortKey)) return false;
    return after === undefined || compareKeys(e.sortKey, after) >= 0 || after.startsWith(e.sortKey);
  }
  return e.sortKey.startsWith(walk.prefix) && (after === undefined || compareKeys(e.sortKey, after) > 0);
}

/**
 * Where a listing's walk starts: every key under `prefix` is a file below the directory its last
 * "/" ends (a key is a relative path), so the directories above it need not be read. A volume's
 * keys beside its log (`vol/snapshot/`, `vol/epoch/`, ...) are then listed without reading the
 * volume's directory of log objects, whose size grows with the log. The temp folder is never listed.
 */
function walkBase(prefix: string): string {
  const base = prefix.slice(0, prefix.lastIndexOf("/") + 1);
  return base === `${TEMP_DIRECTORY}/` || base.startsWith(`${TEMP_DIRECTORY}/`) ? "" : base;
}

function isMissing(error: unknown): boolean {
  if (error instanceof Deno.errors.NotFound || error instanceof Deno.errors.NotADirectory) return true;
  const code = (error as { code?: unknown } | null)?.code;
  return code === "ENOENT" || code === "ENOTDIR" || code === "EISDIR";
}

async function writeAll(file: Deno.FsFile, body: Uint8Array): Promise<void> {
  let written = 0;
  while (written < body.length) written += await file.write(body.subarray(written));
}

function readExactly(file: OpenFile, offsetBytes: number, lengthBytes: number): Uint8Array {
  const body = readAt(file, offsetBytes, lengthBytes);
  assertEqual(body.length, lengthBytes, "the file shrank while it was read");
  return body;
}

/** fsync a directory so a rename or link in it survives power loss. */
async function syncDirectory(path: string): Promise<void> {
  const directory = await Deno.open(path, { read: true });
  try {
    await directory.sync();
  } finally {
    directory.close();
  }
}
