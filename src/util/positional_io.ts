/**
 * @module
 * Positional reads and writes on a node:fs descriptor (pread / pwrite, synchronous): one system
 * call per transfer and no file offset to move first. Deno's FsFile has neither: its seekSync is an
 * op of its own, and on the disk cache's hit path it cost more of the thread than the read itself
 * (bench/RESULTS.md, "the disk cache's hits without a seek"). Synchronous, because a page-cache hit
 * takes microseconds, less than a trip through Deno's blocking-op pool (src/store/file_handles.ts).
 */

import * as fs from "node:fs";

/** Reads into dest from positionBytes until dest is full or the file ends; the bytes read. */
export function preadFully(fd: number, positionBytes: number, dest: Uint8Array): number {
  let filled = 0;
  while (filled < dest.length) {
    const n = fs.readSync(fd, dest, filled, dest.length - filled, positionBytes + filled);
    if (n === 0) break;
    filled += n;
  }
  return filled;
}

/** Writes all of bytes at positionBytes (a short write is continued, an error thrown). */
export function pwriteFully(fd: number, positionBytes: number, bytes: Uint8Array): void {
  let written = 0;
  while (written < bytes.length) {
    written += fs.writeSync(fd, bytes, written, bytes.length - written, positionBytes + written);
  }
}
