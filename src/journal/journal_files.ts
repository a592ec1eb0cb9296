/**
 * @module
 * Where the write-back journal keeps its bytes: an interface with two implementations, a local
 * directory (the daemon, here) and memory with a crash model (journal_files_memory.ts: the seeded
 * simulation and unit tests), injected like the object store so the simulation drives the real
 * journal code.
 *
 * The fault model both honour: `append` may land partly or not at all until `sync` (fdatasync) of
 * that file returns; after `sync`, every byte appended before it survives a crash. `create`,
 * `remove` and `writeIdentity` are durable when they return (the directory is synced).
 *
 * A directory holds `identity.json`, `segment-<16 hex first record>.log` files, `lock` (the pid
 * and host of the daemon using it: a second daemon is refused while that process lives), `id`
 * (a random id made on first use, which the writer lease records: the bucket knows which journal
 * may hold acknowledged writes, wherever the directory is mounted) and `spare.zero`.
 *
 * Preallocated segments (`preallocateBytes`): a segment starts as `spare.zero`, a file of at least
 * that many bytes already on disk, renamed into place by `create`; records are then written over
 * it from the start. An fdatasync of a file that grew must also write its new size and extents
 * (ext4: a journal commit), which made a FLUSH cost about twice what one over written blocks costs
 * (bench/RESULTS.md, issue 23 commits); over preallocated blocks it writes the data alone, as a
 * database's WAL segments do. The spare is made in one of two ways:
 * - recycled: a segment this process created, deleted once its writes are in the store, is renamed
 *   to the spare instead (as Postgres recycles WAL segments), so a journal in steady use writes each
 *   byte once;
 * - zero-filled in the background (at lock, and when the open segment is half full and no segment
 *   was recycled), written and fdatasync'd before it is used.
 * Replay reads what follows a segment's last record, zeros or a recycled file's stale records (all
 * numbered below the segment's first: numbers only grow in one process, and a spare never outlives
 * it), as the unused end (journal_replay.ts). No spare ready: the segment starts empty and grows.
 */

import { currentHolder, localProcesses, lockHolderGone, parseLockHolder } from "../util/lease_holder.ts";
import * as fs from "node:fs";
import { join } from "node:path";
import { nativeFdatasync } from "../util/fdatasync.ts";
import { roomBytes } from "../util/disk_space.ts";
import { formatSize } from "../util/sizes.ts";
import { LsvdError, messageOf } from "../util/errors.ts";
import { assert } from "../util/assert.ts";

export interface JournalFiles {
  /** For messages: the directory. */
  readonly description: string;
  /** Takes the directory for this process; LsvdError "invalid" naming the holder if one lives. */
  lock(): Promise<void>;
  unlock(): Promise<void>;
  /** Segment names, oldest first. */
  segments(): Promise<string[]>;
  read(name: string): Promise<Uint8Array>;
  create(name: string): Promise<void>;
  append(name: string, bytes: Uint8Array): Promise<void>;
  sync(name: string): Promise<void>;
  /** How many sync() calls on one segment may run at once and overlap (1: one at a time pays best). */
  readonly concurrentSyncs: number;
  remove(name: string): Promise<void>;
  readIdentity(): Promise<string | undefined>;
  writeIdentity(text: string): Promise<void>;
  /** The directory's own random id, made (durably) on the first call; kept by --journal-discard. */
  id(): Promise<string>;
}

export function segmentName(firstRecord: number): string {
  return `segment-${firstRecord.toString(16).padStart(16, "0")}.log`;
}

const SEGMENT_PATTERN = /^segment-([0-9a-f]{16})\.log$/;

/** The number of a segment's first record, from its name (segmentName). */
export function segmentFirstRecord(name: string): number {
  const m = SEGMENT_PATTERN.exec(name);
  assert(m !== null, `a segment name: ${name}`);
  return parseInt(m[1]!, 16);
}
/** The spare segment's name (zeros, or a recycled segment's stale records). */
const SPARE = "spare.zero";
/** fdatasyncs in flight on a segment at most (4 measured best at 4 and 16 concurrent commits). */
const CONCURRENT_SYNCS = 4;
const ZEROS_CHUNK_BYTES = 1024 * 1024;

/** A segment this process has open: its file, and (native fdatasync) a second descriptor to sync. */
interface OpenSegment {
  file: Deno.FsFile;
  fd: number | undefined;
  /** Where the next record goes. */
  end: number;
  /** Its preallocated length (0 when it started empty). */
  preallocated: number;
  /** fdatasyncs in flight on `fd`: it is closed only after they return. */
  syncing: Set<Promise<unknown>>;
}

/**
 * Closes a segment's descriptors once no fdatasync runs on them: closing one before the thread
 * calls fdatasync made it fail (EBADF, read as an I/O error that fails the journal), or sync
 * whatever file reused the number.
 */
async function closeSegment(open: OpenSegment): Promise<void> {
  await Promise.allSettled(open.syncing);
  open.file.close();
  if (open.fd !== undefined) fs.closeSync(open.fd);
}

/** The daemon's journal: files in a local directory. */
export class DirectoryJournalFiles implements JournalFiles {
  readonly description: string;
  #dir: string;
  /** Segments this process created. */
  #open = new Map<string, OpenSegment>();
  /** fdatasync on a plain descriptor (several overlap), or undefined: FsFile.syncData, one at a time. */
  #fdatasync = nativeFdatasync();
  readonly concurrentSyncs: number;
  #locked = false;
  #preallocateBytes: number;
  #bytesMax: number | undefined;
  /** The spare: none, being made (zero-filled or recycled), ready, or failed (a full disk). */
  #spareState: "none" | "making" | "ready" | "failed" = "none";
  #spareMade: Promise<void> = Promise.resolve();

  /**
   * `preallocateBytes` > 0: segments start as zero-filled files of that size (above). `bytesMax`
   * (--journal-size): lock() refuses a directory whose filesystem cannot hold that many bytes of
   * records and two preallocated segments.
   */
  constructor(dir: string, options: { preallocateBytes?: number; bytesMax?: number } = {}) {
    this.#dir = dir;
    this.description = dir;
    this.#preallocateBytes = options.preallocateBytes ?? 0;
    this.#bytesMax = options.bytesMax;
    this.concurrentSyncs = this.#fdatasync === undefined ? 1 : CONCURRENT_SYNCS;
  }

  async lock(): Promise<void> {
    try {
      await this.#lock();
    } catch (e) {
      if (e instanceof LsvdError) throw e;
      // A directory lsvd cannot write (a read-only mount, no permission): one line, not a trace.
      throw new LsvdError("invalid", `Cannot use journal directory ${this.#dir}: ${messageOf(e)}`, {
        cause: e,
      });
    }
  }

  async #lock(): Promise<void> {
    // Acknowledged writes live here: for the daemon's user only, as the NBD socket is (0600).
    await Deno.mkdir(this.#dir, { recursive: true, mode: 0o700 });
    this.#checkRoom();
    const path = join(this.#dir, "lock");
    // Named as a lease names its holder (boot, pid namespace, start time), so a lock left by a
    // killed daemon whose pid another process now has (a reboot, a restarted container) is taken.
    const machine = localProcesses();
    const me = JSON.stringify(currentHolder(machine));
    for (let attempt = 0; attempt < 3; attempt++) {
      const tmp = `${path}.${Deno.pid}`;
      await Deno.writeTextFile(tmp, me, { mode: 0o600 });
      try {
        await Deno.link(tmp, path); // atomic: fails if a lock is there
        this.#locked = true;
        // The first segment's zeros are written while the volume opens, not on the first write.
        if (this.#preallocateBytes > 0) this.#makeSpare(() => this.#zeroFillSpare());
        return;
      } catch (e) {
        if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
      } finally {
        await Deno.remove(tmp).catch(() => {});
      }
      const holder = await Deno.readTextFile(path).then(
        (t) => parseLockHolder(t, machine.host),
        () => undefined,
      );
      if (holder !== undefined && lockHolderGone(holder, machine)) {
        await Deno.remove(path).catch(() => {}); // its daemon died (kill -9): the journal is ours
        continue;
      }
      const who = holder === undefined ? "another process" : `pid ${holder.pid} on ${holder.host}`;
      throw new LsvdError(
        "invalid",
        `Cannot use journal directory ${this.#dir}: ${who} is using it (${path})`,
      );
    }
    throw new LsvdError("invalid", `Cannot use journal directory ${this.#dir}: cannot take ${path}`);
  }

  /**
   * The journal fits on its filesystem: free bytes plus what its segments and spare hold already
   * (replayed, then deleted or reused). Else the spare's zeros and the records fill the disk, and a
   * FLUSH fails once it is full, or the start itself does.
   */
  #checkRoom(): void {
    if (this.#bytesMax === undefined) return;
    const own = [...Deno.readDirSync(this.#dir)]
      .filter((e) => e.isFile && (SEGMENT_PATTERN.test(e.name) || e.name === SPARE))
      .map((e) => e.name);
    const room = roomBytes(this.#dir, own);
    if (room === undefined) return; // no statvfs here: the first failed write says it instead
    if (this.#bytesMax + 2 * this.#preallocateBytes <= room) return;
    const segments = this.#preallocateBytes === 0
      ? ""
      : ` and 2 preallocated segments of ${formatSize(this.#preallocateBytes)}`;
    throw new LsvdError(
      "invalid",
      `Cannot use journal directory ${this.#dir}: --journal-size ${
        formatSize(this.#bytesMax)
      }${segments} need ` +
        `more than its filesystem has free (${(room / 2 ** 20).toFixed(1)} MiB); ` +
        `give a smaller --journal-size`,
    );
  }

  async unlock(): Promise<void> {
    await this.#spareMade; // a zero-fill still writing finishes before the directory is let go
    this.#spareState = "none";
    // Only the holder's own: a process refused the lock must not take the live daemon's spare.
    if (this.#locked && this.#preallocateBytes > 0) await Deno.remove(join(this.#dir, SPARE)).catch(() => {});
    const open = [...this.#open.values()];
    this.#open.clear();
    for (const o of open) await closeSegment(o);
    if (this.#locked) await Deno.remove(join(this.#dir, "lock")).catch(() => {});
    this.#locked = false;
  }

  async segments(): Promise<string[]> {
    const names: string[] = [];
    for await (const e of Deno.readDir(this.#dir)) {
      if (e.isFile && SEGMENT_PATTERN.test(e.name)) names.push(e.name);
    }
    return names.sort();
  }

  read(name: string): Promise<Uint8Array> {
    return Deno.readFile(join(this.#dir, name));
  }

  async create(name: string): Promise<void> {
    const path = join(this.#dir, name);
    if (this.#spareState === "making") await this.#spareMade;
    if (this.#spareState === "ready") {
      this.#spareState = "none"; // the next one: recycled, or zero-filled once this one is half full
      await Deno.rename(join(this.#dir, SPARE), path); // no segment of this name exists: names grow
      const file = await Deno.open(path, { write: true });
      this.#open.set(name, {
        file,
        fd: this.#syncDescriptor(path),
        end: 0,
        preallocated: this.#preallocateBytes,
        syncing: new Set(),
      });
    } else {
      if (this.#spareState === "failed") this.#spareState = "none"; // try again for the next one
      const file = await Deno.open(path, { write: true, createNew: true, mode: 0o600 });
      this.#open.set(name, {
        file,
        fd: this.#syncDescriptor(path),
        end: 0,
        preallocated: 0,
        syncing: new Set(),
      });
    }
    await this.#syncDir();
  }

  /** Starts making the spare (one at a time); its state tells create() whether it is there. */
  #makeSpare(make: () => Promise<boolean>): void {
    assert(this.#spareState === "none");
    this.#spareState = "making";
    this.#spareMade = make().then((made) => {
      this.#spareState = made ? "ready" : "failed";
    });
  }

  /**
   * Writes `spare.zero` (replacing one an earlier run left: this class made it) as zeros, then
   * fdatasyncs it. False when that fails (a full disk): the caller starts an empty segment instead.
   */
  async #zeroFillSpare(): Promise<boolean> {
    try {
      const file = await Deno.open(join(this.#dir, SPARE), {
        write: true,
        create: true,
        truncate: true,
        mode: 0o600,
      });
      try {
        const zeros = new Uint8Array(ZEROS_CHUNK_BYTES);
        for (let done = 0; done < this.#preallocateBytes;) {
          done += await file.write(zeros.subarray(0, Math.min(zeros.length, this.#preallocateBytes - done)));
        }
        await file.syncData();
      } finally {
        file.close();
      }
      return true;
    } catch {
      // Its partial zeros (a full disk) would keep the segments from the room they need.
      await Deno.remove(join(this.#dir, SPARE)).catch(() => {});
      return false;
    }
  }

  append(name: string, bytes: Uint8Array): Promise<void> {
    const open = this.#open.get(name);
    assert(open !== undefined, "a segment is appended to only after create()");
    const { file, end } = open;
    // Synchronous: appending lands in the OS page cache in microseconds, less than the two trips
    // through Deno's blocking-op thread pool an async write costs (a dup'd descriptor and a thread
    // wake-up; measured in bench/RESULTS.md, issue 23 commits), the same trade as the directory
    // store's pread (file_handles.ts): a write the kernel throttles holds the event loop meanwhile.
    // No seek: the file was opened here at offset 0 and only these writes move its offset, so it
    // is `end` (a write that throws fails the journal; no append follows it).
    try {
      for (let done = 0; done < bytes.length;) done += file.writeSync(bytes.subarray(done));
    } catch (e) {
      return Promise.reject(e); // the journal fails (kind unavailable), as for an async write
    }
    open.end = end + bytes.length;
    // No segment recycled by the time this one is half full (the store is behind): zeros, in time.
    if (this.#spareState === "none" && this.#preallocateBytes > 0 && open.end >= this.#preallocateBytes / 2) {
      this.#makeSpare(() => this.#zeroFillSpare());
    }
    return Promise.resolve();
  }

  async sync(name: string): Promise<void> {
    const open = this.#open.get(name);
    if (open === undefined) return;
    const fdatasync = this.#fdatasync;
    assert(fdatasync === undefined || open.fd !== undefined, "a sync descriptor when fdatasync is native");
    // No retry after a failure: the kernel may have dropped the pages it could not write and would
    // report the next sync clean. The journal fails instead.
    const syncing = fdatasync === undefined ? open.file.syncData().then(() => 0) : fdatasync(open.fd!);
    open.syncing.add(syncing);
    const result = await syncing.finally(() => open.syncing.delete(syncing));
    if (result !== 0) {
      throw new Error(`fdatasync of ${join(this.#dir, name)} failed (an I/O error, or the disk is full)`);
    }
  }

  /** A second, plain descriptor on a segment for native fdatasync (it syncs the file, any descriptor). */
  #syncDescriptor(path: string): number | undefined {
    return this.#fdatasync === undefined ? undefined : fs.openSync(path, "r");
  }

  /**
   * Deletes a segment; one this process created, long enough, becomes the spare when there is
   * none (recycled: its blocks are on disk already). Segments of an earlier process are deleted:
   * their record numbers may be reused by this one.
   */
  async remove(name: string): Promise<void> {
    const path = join(this.#dir, name);
    const open = this.#open.get(name);
    this.#open.delete(name); // no sync starts on it now
    if (open !== undefined) await closeSegment(open);
    if (
      open !== undefined && this.#spareState === "none" && this.#preallocateBytes > 0 &&
      Math.max(open.end, open.preallocated) >= this.#preallocateBytes
    ) {
      this.#makeSpare(async () => {
        try {
          await Deno.rename(path, join(this.#dir, SPARE));
          await this.#syncDir();
          return true;
        } catch {
          await Deno.remove(path).catch(() => {});
          return false;
        }
      });
      await this.#spareMade;
      return;
    }
    await Deno.remove(path);
  }

  async readIdentity(): Promise<string | undefined> {
    try {
      return await Deno.readTextFile(join(this.#dir, "identity.json"));
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return undefined;
      throw e;
    }
  }

  async writeIdentity(text: string): Promise<void> {
    await this.#writeDurably("identity.json", text);
  }

  async id(): Promise<string> {
    try {
      const text = (await Deno.readTextFile(join(this.#dir, "id"))).trim();
      if (text !== "") return text;
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    const made = crypto.randomUUID();
    await this.#writeDurably("id", `${made}\n`);
    return made;
  }

  async #writeDurably(name: string, text: string): Promise<void> {
    try {
      await this.#writeDurablyOrThrow(name, text);
    } catch (e) {
      // At start (the journal's id, its owner): a full disk or an I/O error says so in one line.
      throw new LsvdError("unavailable", `Cannot write ${join(this.#dir, name)}: ${messageOf(e)}`, {
        cause: e,
      });
    }
  }

  async #writeDurablyOrThrow(name: string, text: string): Promise<void> {
    const path = join(this.#dir, name);
    const file = await Deno.open(`${path}.tmp`, { write: true, create: true, truncate: true, mode: 0o600 });
    try {
      await file.write(new TextEncoder().encode(text));
      await file.syncData();
    } finally {
      file.close();
    }
    await Deno.rename(`${path}.tmp`, path);
    await this.#syncDir();
  }

  async #syncDir(): Promise<void> {
    const dir = await Deno.open(this.#dir, { read: true });
    try {
      await dir.syncData();
    } finally {
      dir.close();
    }
  }
}
