/**
 * @module
 * The write-back journal's files in memory, for the seeded simulation and unit tests: the fault
 * model of journal_files.ts (bytes appended since the last sync may be lost or torn by a crash;
 * everything synced survives) with a crash you can cause. With `recycle`, segments are reused as
 * the directory's are (journal_files.ts): a deleted segment this handle created becomes the spare,
 * and the next segment starts as its bytes, written over from the start; a crash leaves what was
 * not synced as the new bytes, the old ones, or a torn mix.
 */

import { LsvdError } from "../util/errors.ts";
import type { JournalFiles } from "./journal_files.ts";

interface MemoryFile {
  bytes: Uint8Array;
  /** The file's length: the end of what was appended, or of the recycled bytes under it. */
  length: number;
  /** Where the next append goes. */
  end: number;
  syncedLength: number;
  /** A recycled file's earlier bytes: what an unsynced overwrite may still show after a crash. */
  under?: Uint8Array;
}

/**
 * The journal in memory, for the simulation: `crash(random)` returns the files a restarted process
 * would find (each keeps what was synced plus a random part of what was not, possibly damaged at
 * the end: a torn write) and kills this handle (its later calls fail, as a dead process's would).
 */
export class MemoryJournalFiles implements JournalFiles {
  readonly description: string;
  #files: Map<string, MemoryFile>;
  #identity: { text: string | undefined; id?: string };
  #lock: { held: boolean };
  #dead = false;
  #holding = false;
  readonly #recycle: boolean;
  readonly concurrentSyncs: number;
  #syncCalls = 0;
  /** Segments this handle created (only they are recycled) and the spare, when there is one. */
  #created = new Set<string>();
  #spare: Uint8Array | undefined;

  constructor(
    description = "memory-journal",
    state?: { files: Map<string, MemoryFile>; identity: { text: string | undefined; id?: string } },
    options: { recycle?: boolean; concurrentSyncs?: number } = {},
  ) {
    this.description = description;
    this.#files = state?.files ?? new Map();
    this.#identity = state?.identity ?? { text: undefined };
    this.#lock = { held: false };
    this.#recycle = options.recycle ?? false;
    this.concurrentSyncs = options.concurrentSyncs ?? 1;
  }

  /** Everything synced survives; of the rest a random prefix, its last bytes maybe damaged. */
  crash(random: () => number): MemoryJournalFiles {
    this.#dead = true;
    const files = new Map<string, MemoryFile>();
    for (const [name, f] of this.#files) {
      const unsynced = f.end - f.syncedLength;
      const kept = f.syncedLength + Math.floor(random() * (unsynced + 1));
      // What was appended after `kept` did not reach the disk: a recycled file shows its old bytes.
      const under = f.under ?? new Uint8Array(0);
      const length = Math.max(kept, Math.min(f.length, under.length));
      const bytes = f.bytes.slice(0, length);
      bytes.set(under.subarray(kept, length), kept);
      if (kept > f.syncedLength && random() < 0.5) {
        // A torn write: the last bytes that reached the disk are garbage (within one header's
        // length of the end, so no whole record follows them; see the design note on write-back).
        const span = Math.min(32, kept - f.syncedLength);
        bytes[kept - 1 - Math.floor(random() * span)]! ^= 0x5a;
      }
      files.set(name, { bytes, length, end: length, syncedLength: length });
    }
    return new MemoryJournalFiles(this.description, { files, identity: { ...this.#identity } }, {
      recycle: this.#recycle,
      concurrentSyncs: this.concurrentSyncs,
    });
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
    const other = new MemoryJournalFiles(this.description, { files: this.#files, identity: this.#identity }, {
      recycle: this.#recycle,
      concurrentSyncs: this.concurrentSyncs,
    });
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
    const under = this.#spare;
    this.#spare = undefined;
    this.#files.set(
      name,
      under === undefined
        ? { bytes: new Uint8Array(0), length: 0, end: 0, syncedLength: 0 }
        : { bytes: under.slice(), length: under.length, end: 0, syncedLength: 0, under },
    );
    this.#created.add(name);
    return Promise.resolve();
  }

  async append(name: string, bytes: Uint8Array): Promise<void> {
    this.#alive();
    await Promise.resolve(); // a real write returns later
    this.#alive();
    const f = this.#files.get(name);
    if (f === undefined) throw new Deno.errors.NotFound(name);
    if (f.end + bytes.length > f.bytes.length) {
      const grown = new Uint8Array(Math.max(2 * f.bytes.length, f.end + bytes.length));
      grown.set(f.bytes.subarray(0, f.length));
      f.bytes = grown;
    }
    f.bytes.set(bytes, f.end);
    f.end += bytes.length;
    f.length = Math.max(f.length, f.end);
  }

  async sync(name: string): Promise<void> {
    this.#alive();
    const f = this.#files.get(name);
    const through = f?.end ?? 0;
    // Overlapping syncs return out of order (1 to 3 turns, by call), as the kernel's may.
    const turns = this.concurrentSyncs > 1 ? 1 + (this.#syncCalls++ % 3) : 1;
    for (let i = 0; i < turns; i++) await Promise.resolve();
    this.#alive();
    if (f !== undefined) f.syncedLength = Math.max(f.syncedLength, through);
  }

  remove(name: string): Promise<void> {
    this.#alive();
    const f = this.#files.get(name);
    this.#files.delete(name);
    if (this.#recycle && f !== undefined && this.#created.delete(name) && this.#spare === undefined) {
      this.#spare = f.bytes.slice(0, f.length);
    }
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

  id(): Promise<string> {
    this.#alive();
    this.#identity.id ??= crypto.randomUUID();
    return Promise.resolve(this.#identity.id);
  }
}
