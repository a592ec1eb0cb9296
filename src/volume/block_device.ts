/**
 * @module
 * What the NBD server (and anything else that exports a disk) needs from a volume.
 * Offsets and lengths are bytes; callers have already checked range and 4 KiB alignment,
 * implementations assert it again.
 */

export { SECTOR_BYTES } from "../util/constants.ts";

export interface WriteOptions {
  /** Force unit access: resolve only once this write is durable in the store. */
  fua?: boolean;
}

/** One run of the disk as BLOCK_STATUS reports it. */
export interface AllocationExtent {
  lengthBytes: number;
  /** Never written, trimmed or zeroed: reads as zeros without touching the store. */
  zero: boolean;
}

export interface BlockDevice {
  readonly sizeBytes: number;
  readonly readOnly: boolean;
  /** Reads into dest (length = dest.length) from offsetBytes. */
  read(offsetBytes: number, dest: Uint8Array): Promise<void>;
  /**
   * Optional: the same read, started; undefined when dest is filled already (every source
   * answered at once), else the promise read() would give. Lets the NBD layer answer a read that
   * needs no request without a promise of its own.
   */
  startRead?(offsetBytes: number, dest: Uint8Array): Promise<void> | undefined;
  /** The data may be reused by the caller as soon as the promise is created: copy it. */
  write(offsetBytes: number, data: Uint8Array, options?: WriteOptions): Promise<void>;
  /**
   * Optional: the same write, started; undefined when it is done already (nothing to wait for: room
   * in the dirty budget, no FUA), else the promise write() would give. Lets the NBD layer answer a
   * write without a promise of its own. It may throw where write() would reject.
   */
  startWrite?(offsetBytes: number, data: Uint8Array, options?: WriteOptions): Promise<void> | undefined;
  /** Sectors read back as zeros afterwards; costs O(1) store bytes however large. */
  writeZeroes(offsetBytes: number, lengthBytes: number, options?: WriteOptions): Promise<void>;
  /** Discard: lsvd makes trimmed sectors read as zeros too. */
  trim(offsetBytes: number, lengthBytes: number, options?: WriteOptions): Promise<void>;
  /** Resolves when every write that resolved before this call is durable in the store. */
  flush(): Promise<void>;
  /** Allocation status from offsetBytes, at most lengthBytes, in order, adjacent runs merged. */
  blockStatus(offsetBytes: number, lengthBytes: number): AllocationExtent[];
}
