/**
 * @module
 * Where the write-back journal keeps its bytes: an interface with two implementations, a local
 * directory (the daemon) and memory with a crash model (the seeded simulation and unit tests),
 * injected like the object store so the simulation drives the real journal code.
 *
 * The fault model both honour: `append` may land partly or not at all until `sync` (fdatasync) of
 * that file returns; after `sync`, every byte appended before it survives a crash. `create`,
 * `remove` and `writeIdentity` are durable when they return (the directory is synced).
 *
 * A directory holds `identity.json`, `segment-<16 hex first record>.log` files and `lock` (the pid
 * and host of the daemon using it: a second daemon is refused while that process lives).
 */

import { join } from "node:path";
import { LsvdError, messageOf } from "../util/errors.ts";

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
  remove(name: string): Promise<void>;
  readIdentity(): Promise<string | undefined>;
  writeIdentity(text: string): Promise<void>;
}

export function segmentName(firstRecord: number): string {
  return `segment-${firstRecord.toString(16).padStart(16, "0")}.log`;
}

const SEGMENT_PATTERN = /^segment-[0-9a-f]{16}\.log$/;

/** The daemon's journal: files in a local directory. */
export class DirectoryJournalFiles implements JournalFiles {
  readonly description: string;
  #dir: string;
  #open = new Map<string, Deno.FsFile>();
  #locked = false;

  constructor(dir: string) {
    this.#dir = dir;
    this.description = dir;
  }

  async lock(): Promise<void> {
    try {
      await Deno.mkdir(this.#dir, { recursive: true });
    } catch (e) {
      throw new LsvdError("invalid", `Cannot use journal directory ${this.#dir}: ${messageOf(e)}`);
    }
    const path = join(this.#dir, "lock");
    const me = JSON.stringify({ pid: Deno.pid, host: Deno.hostname() });
    for (let attempt = 0; attempt < 3; attempt++) {
      const tmp = `${path}.${Deno.pid}`;
      await Deno.writeTextFile(tmp, me);
      try {
        await Deno.link(tmp, path); // atomic: fails if a lock is there
        this.#locked = true;
        return;
      } catch (e) {
        if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
      } finally {
        await Deno.remove(tmp).catch(() => {});
      }
      const holder = await Deno.readTextFile(path).then((t) => JSON.parse(t), () => undefined);
      if (holder?.host === Deno.hostname() && typeof holder.pid === "number" && !alive(holder.pid)) {
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

  async unlock(): Promise<void> {
    for (const f of this.#open.values()) f.close();
    this.#open.clear();
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
    const file = await Deno.open(join(this.#dir, name), { write: true, createNew: true });
    this.#open.set(name, file);
    await this.#syncDir();
  }

  async append(name: string, bytes: Uint8Array): Promise<void> {
    let file = this.#open.get(name);
    if (file === undefined) {
      file = await Deno.open(join(this.#dir, name), { append: true });
      this.#open.set(name, file);
    }
    for (let done = 0; done < bytes.length;) done += await file.write(bytes.subarray(done));
  }

  async sync(name: string): Promise<void> {
    await this.#open.get(name)?.syncData();
  }

  async remove(name: string): Promise<void> {
    this.#open.get(name)?.close();
    this.#open.delete(name);
    await Deno.remove(join(this.#dir, name));
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
    const path = join(this.#dir, "identity.json");
    const file = await Deno.open(`${path}.tmp`, { write: true, create: true, truncate: true });
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

function alive(pid: number): boolean {
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

interface MemoryFile {
  bytes: Uint8Array;
  length: number;
  syncedLength: number;
}

/**
 * The journal in memory, for the simulation: `crash(random)` returns the files a restarted process
 * would find (each keeps what was synced plus a random part of what was not, possibly damaged at
 * the end: a torn write) and kills this handle (its later calls fail, as a dead process's would).
 */
export class MemoryJournalFiles implements JournalFiles {
  readonly description: string;
  #files: Map<string, MemoryFile>;
  #identity: { text: string | undefined };
  #lock: { held: boolean };
  #dead = false;
  #holding = false;

  constructor(
    description = "memory-journal",
    state?: { files: Map<string, MemoryFile>; identity: { text: string | undefined } },
  ) {
    this.description = description;
    this.#files = state?.files ?? new Map();
    this.#identity = state?.identity ?? { text: undefined };
    this.#lock = { held: false };
  }

  /** Everything synced survives; of the rest a random prefix, its last bytes maybe damaged. */
  crash(random: () => number): MemoryJournalFiles {
    this.#dead = true;
    const files = new Map<string, MemoryFile>();
    for (const [name, f] of this.#files) {
      const unsynced = f.length - f.syncedLength;
      const kept = f.syncedLength + Math.floor(random() * (unsynced + 1));
      const bytes = f.bytes.slice(0, kept);
      if (kept > f.syncedLength && random() < 0.5) {
        // A torn write: the last bytes that reached the disk are garbage (within one header's
        // length of the end, so no whole record follows them; see the design note on write-back).
        const span = Math.min(32, kept - f.syncedLength);
        bytes[kept - 1 - Math.floor(random() * span)]! ^= 0x5a;
      }
      files.set(name, { bytes, length: kept, syncedLength: kept });
    }
    return new MemoryJournalFiles(this.description, { files, identity: { ...this.#identity } });
  }

  /** Total bytes of every segment (tests). */
  get totalBytes(): number {
    let n = 0;
    for (const f of this.#files.values()) n += f.length;
    return n;
  }

  /** Flips one byte of a segment (tests: corruption in the middle). */
  damage(name: string, offset: number): void {
    const f = this.#files.get(name);
    if (f === undefined || offset >= f.length) throw new RangeError(`no byte ${offset} in ${name}`);
    f.bytes[offset]! ^= 0xff;
  }

  #alive(): void {
    if (this.#dead) throw new LsvdError("closed", "Cannot use the journal: its process crashed");
  }

  lock(): Promise<void> {
    this.#alive();
    if (this.#lock.held) {
      return Promise.reject(
        new LsvdError(
          "invalid",
          `Cannot use journal directory ${this.description}: another process is using it`,
        ),
      );
    }
    this.#lock.held = this.#holding = true;
    return Promise.resolve();
  }

  /** A second handle on the same files and lock (tests: a second daemon). */
  sibling(): MemoryJournalFiles {
    const other = new MemoryJournalFiles(this.description, { files: this.#files, identity: this.#identity });
    other.#lock = this.#lock;
    return other;
  }

  unlock(): Promise<void> {
    if (this.#holding) this.#lock.held = false;
    this.#holding = false;
    return Promise.resolve();
  }

  segments(): Promise<string[]> {
    this.#alive();
    return Promise.resolve([...this.#files.keys()].sort());
  }

  read(name: string): Promise<Uint8Array> {
    this.#alive();
    const f = this.#files.get(name);
    if (f === undefined) return Promise.reject(new Deno.errors.NotFound(name));
    return Promise.resolve(f.bytes.slice(0, f.length));
  }

  create(name: string): Promise<void> {
    this.#alive();
    if (this.#files.has(name)) return Promise.reject(new Deno.errors.AlreadyExists(name));
    this.#files.set(name, { bytes: new Uint8Array(0), length: 0, syncedLength: 0 });
    return Promise.resolve();
  }

  async append(name: string, bytes: Uint8Array): Promise<void> {
    this.#alive();
    await Promise.resolve(); // a real write returns later
    this.#alive();
    const f = this.#files.get(name);
    if (f === undefined) throw new Deno.errors.NotFound(name);
    if (f.length + bytes.length > f.bytes.length) {
      const grown = new Uint8Array(Math.max(2 * f.bytes.length, f.length + bytes.length));
      grown.set(f.bytes.subarray(0, f.length));
      f.bytes = grown;
    }
    f.bytes.set(bytes, f.length);
    f.length += bytes.length;
  }

  async sync(name: string): Promise<void> {
    this.#alive();
    const f = this.#files.get(name);
    const through = f?.length ?? 0;
    await Promise.resolve();
    this.#alive();
    if (f !== undefined) f.syncedLength = Math.max(f.syncedLength, through);
  }

  remove(name: string): Promise<void> {
    this.#alive();
    this.#files.delete(name);
    return Promise.resolve();
  }

  readIdentity(): Promise<string | undefined> {
    this.#alive();
    return Promise.resolve(this.#identity.text);
  }

  writeIdentity(text: string): Promise<void> {
    this.#alive();
    this.#identity.text = text;
    return Promise.resolve();
  }
}
