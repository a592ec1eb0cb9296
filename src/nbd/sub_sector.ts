/**
 * @module
 * 512-byte requests on a 4 KiB device. Many NBD clients assume 512-byte sectors: a default
 * `losetup` over nbdfuse lets ext4 read 1 KiB at offset 1024, qemu guests write single 512-byte
 * sectors. The volume (and the bucket format) work in 4 KiB sectors, so this adapter, shared by
 * every connection of a server, turns a partial-sector request into whole sectors: reads read the
 * covering sectors and copy out; writes read-modify-write the partial head and tail sectors.
 *
 * Read-modify-write is only correct if nothing else changes those sectors between its read and
 * its write, so writes that overlap (rounded out to 4 KiB) are ordered: a read-modify-write waits
 * for every earlier overlapping write, and any write waits for earlier overlapping read-modify-
 * writes. Aligned writes among themselves are ordered by the volume as before, and pay only a
 * counter while no read-modify-write is in flight.
 */

import type { AllocationExtent, BlockDevice, WriteOptions } from "../volume/block_device.ts";
import { SECTOR_BYTES } from "../volume/block_device.ts";

/** The smallest request unit NBD clients may use (advertised as the minimum block size). */
export const MIN_BLOCK_BYTES = 512;

interface PendingWrite {
  startBytes: number;
  endBytes: number;
  readModifyWrite: boolean;
  done: Promise<void>;
}

export class SubSectorDevice implements BlockDevice {
  readonly inner: BlockDevice;
  /** Writes tracked by range: read-modify-writes, and aligned writes started while one is in flight. */
  #pending = new Set<PendingWrite>();
  #readModifyWrites = 0;
  /** Aligned writes started while no read-modify-write was in flight, not yet settled. */
  #untrackedInFlight = 0;
  #untrackedDrained: PromiseWithResolvers<void> | undefined;

  constructor(inner: BlockDevice) {
    this.inner = inner;
  }

  /** The adapter itself, or a new one around a bare device. */
  static of(device: BlockDevice): SubSectorDevice {
    return device instanceof SubSectorDevice ? device : new SubSectorDevice(device);
  }

  get sizeBytes(): number {
    return this.inner.sizeBytes;
  }

  get readOnly(): boolean {
    return this.inner.readOnly;
  }

  read(offsetBytes: number, dest: Uint8Array): Promise<void> {
    return this.startRead(offsetBytes, dest) ?? Promise.resolve();
  }

  /** An aligned read is the inner device's own, answered at once when it can be. */
  startRead(offsetBytes: number, dest: Uint8Array): Promise<void> | undefined {
    if (!isAligned(offsetBytes, dest.length)) return this.#readCovering(offsetBytes, dest);
    const inner = this.inner;
    return inner.startRead !== undefined ? inner.startRead(offsetBytes, dest) : inner.read(offsetBytes, dest);
  }

  async #readCovering(offsetBytes: number, dest: Uint8Array): Promise<void> {
    const start = floorSector(offsetBytes);
    const covering = new Uint8Array(ceilSector(offsetBytes + dest.length) - start);
    await this.inner.read(start, covering);
    dest.set(covering.subarray(offsetBytes - start, offsetBytes - start + dest.length));
  }

  /** An aligned write while no read-modify-write is in flight is the inner device's own, done at once when it can be. */
  startWrite(offsetBytes: number, data: Uint8Array, options?: WriteOptions): Promise<void> | undefined {
    const inner = this.inner;
    if (
      inner.startWrite === undefined || this.#readModifyWrites > 0 || !isAligned(offsetBytes, data.length)
    ) {
      return this.write(offsetBytes, data, options);
    }
    this.#untrackedInFlight++;
    let done: Promise<void> | undefined;
    try {
      done = inner.startWrite(offsetBytes, data, options);
    } catch (e) {
      this.#untrackedSettled();
      throw e;
    }
    if (done === undefined) this.#untrackedSettled(); // never in flight: nothing can wait for it
    else done.then(this.#untrackedSettled, this.#untrackedSettled);
    return done;
  }

  write(offsetBytes: number, data: Uint8Array, options?: WriteOptions): Promise<void> {
    if (isAligned(offsetBytes, data.length)) {
      // It may have to wait behind a read-modify-write: then it keeps its own copy of the data.
      const payload = this.#readModifyWrites > 0 ? data.slice() : data;
      return this.#ordered(
        offsetBytes,
        data.length,
        false,
        () => this.inner.write(offsetBytes, payload, options),
      );
    }
    const copy = data.slice(); // the caller may reuse data once we return
    return this.#ordered(offsetBytes, data.length, true, async () => {
      const start = floorSector(offsetBytes);
      const covering = new Uint8Array(ceilSector(offsetBytes + copy.length) - start);
      await this.#readEdges(start, covering, offsetBytes, copy.length);
      covering.set(copy, offsetBytes - start);
      await this.inner.write(start, covering, options);
    });
  }

  writeZeroes(offsetBytes: number, lengthBytes: number, options?: WriteOptions): Promise<void> {
    if (isAligned(offsetBytes, lengthBytes)) {
      return this.#ordered(
        offsetBytes,
        lengthBytes,
        false,
        () => this.inner.writeZeroes(offsetBytes, lengthBytes, options),
      );
    }
    const inner = innerSectors(offsetBytes, lengthBytes);
    return this.#ordered(offsetBytes, lengthBytes, true, async () => {
      // Partial sectors at the edges become read-modify-writes of zeros; whole ones stay O(1) zeroing.
      const edges: Promise<void>[] = [];
      for (const edge of edgeSectors(offsetBytes, lengthBytes)) {
        edges.push((async () => {
          const sector = new Uint8Array(SECTOR_BYTES);
          await this.inner.read(edge.sectorBytes, sector);
          sector.fill(0, edge.fromBytes, edge.toBytes);
          await this.inner.write(edge.sectorBytes, sector, options);
        })());
      }
      if (inner.lengthBytes > 0) {
        edges.push(this.inner.writeZeroes(inner.startBytes, inner.lengthBytes, options));
      }
      await Promise.all(edges);
    });
  }

  trim(offsetBytes: number, lengthBytes: number, options?: WriteOptions): Promise<void> {
    // A trim is advisory: whole sectors inside the range are discarded, partial ones keep their data.
    const inner = isAligned(offsetBytes, lengthBytes)
      ? { startBytes: offsetBytes, lengthBytes }
      : innerSectors(offsetBytes, lengthBytes);
    if (inner.lengthBytes === 0) return options?.fua ? this.inner.flush() : Promise.resolve();
    return this.#ordered(
      inner.startBytes,
      inner.lengthBytes,
      false,
      () => this.inner.trim(inner.startBytes, inner.lengthBytes, options),
    );
  }

  flush(): Promise<void> {
    return this.inner.flush();
  }

  blockStatus(offsetBytes: number, lengthBytes: number): AllocationExtent[] {
    return this.inner.blockStatus(offsetBytes, lengthBytes);
  }

  /** Reads only the partial head and tail sectors of [offsetBytes, +lengthBytes) into covering. */
  async #readEdges(
    start: number,
    covering: Uint8Array,
    offsetBytes: number,
    lengthBytes: number,
  ): Promise<void> {
    const reads: Promise<void>[] = [];
    if (offsetBytes % SECTOR_BYTES !== 0) {
      reads.push(this.inner.read(start, covering.subarray(0, SECTOR_BYTES)));
    }
    const end = offsetBytes + lengthBytes;
    const lastSector = floorSector(end);
    if (end % SECTOR_BYTES !== 0 && (lastSector !== start || reads.length === 0)) {
      const at = lastSector - start;
      reads.push(this.inner.read(lastSector, covering.subarray(at, at + SECTOR_BYTES)));
    }
    await Promise.all(reads);
  }

  /**
   * Runs op after the earlier writes it must follow (see the module comment). While no
   * read-modify-write is in flight an aligned write only bumps a counter (the hot path); a
   * read-modify-write waits for every such write still in flight, and meanwhile aligned writes are
   * tracked by range so the next ones wait only where they overlap it.
   */
  #ordered(
    offsetBytes: number,
    lengthBytes: number,
    readModifyWrite: boolean,
    op: () => Promise<void>,
  ): Promise<void> {
    if (!readModifyWrite && this.#readModifyWrites === 0) return this.#untracked(op);
    return this.#tracked(offsetBytes, lengthBytes, readModifyWrite, op);
  }

  #untracked(op: () => Promise<void>): Promise<void> {
    this.#untrackedInFlight++;
    let done: Promise<void>;
    try {
      done = op();
    } catch (e) {
      this.#untrackedSettled();
      throw e;
    }
    done.then(this.#untrackedSettled, this.#untrackedSettled);
    return done;
  }

  readonly #untrackedSettled = (): void => {
    if (--this.#untrackedInFlight > 0) return;
    const drained = this.#untrackedDrained;
    this.#untrackedDrained = undefined;
    drained?.resolve();
  };

  async #tracked(
    offsetBytes: number,
    lengthBytes: number,
    readModifyWrite: boolean,
    op: () => Promise<void>,
  ): Promise<void> {
    const startBytes = floorSector(offsetBytes);
    const endBytes = ceilSector(offsetBytes + lengthBytes);
    const before: Promise<void>[] = [];
    // No untracked write starts while a read-modify-write is registered, so this count only falls.
    if (readModifyWrite && this.#untrackedInFlight > 0) {
      this.#untrackedDrained ??= Promise.withResolvers<void>();
      before.push(this.#untrackedDrained.promise);
    }
    for (const p of this.#pending) {
      if ((readModifyWrite || p.readModifyWrite) && p.startBytes < endBytes && startBytes < p.endBytes) {
        before.push(p.done);
      }
    }
    let settle!: () => void;
    const entry: PendingWrite = {
      startBytes,
      endBytes,
      readModifyWrite,
      done: new Promise<void>((resolve) => settle = resolve),
    };
    this.#pending.add(entry);
    if (readModifyWrite) this.#readModifyWrites++;
    try {
      if (before.length > 0) await Promise.all(before);
      await op();
    } finally {
      this.#pending.delete(entry);
      if (readModifyWrite) this.#readModifyWrites--;
      settle();
    }
  }
}

function isAligned(offsetBytes: number, lengthBytes: number): boolean {
  return offsetBytes % SECTOR_BYTES === 0 && lengthBytes % SECTOR_BYTES === 0;
}

function floorSector(bytes: number): number {
  return bytes - bytes % SECTOR_BYTES;
}

function ceilSector(bytes: number): number {
  return Math.ceil(bytes / SECTOR_BYTES) * SECTOR_BYTES;
}

/** The whole sectors inside a byte range (possibly none). */
function innerSectors(offsetBytes: number, lengthBytes: number): { startBytes: number; lengthBytes: number } {
  const startBytes = ceilSector(offsetBytes);
  const endBytes = floorSector(offsetBytes + lengthBytes);
  return { startBytes, lengthBytes: Math.max(0, endBytes - startBytes) };
}

/** The partial sectors at the edges of a range, with the bytes of each that the range covers. */
function edgeSectors(
  offsetBytes: number,
  lengthBytes: number,
): { sectorBytes: number; fromBytes: number; toBytes: number }[] {
  const end = offsetBytes + lengthBytes;
  const edges: { sectorBytes: number; fromBytes: number; toBytes: number }[] = [];
  const first = floorSector(offsetBytes);
  if (offsetBytes % SECTOR_BYTES !== 0 || end - first < SECTOR_BYTES) {
    edges.push({
      sectorBytes: first,
      fromBytes: offsetBytes - first,
      toBytes: Math.min(end - first, SECTOR_BYTES),
    });
  }
  const last = floorSector(end);
  if (end % SECTOR_BYTES !== 0 && last !== first) {
    edges.push({ sectorBytes: last, fromBytes: 0, toBytes: end - last });
  }
  return edges;
}
