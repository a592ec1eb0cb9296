/**
 * @module
 * Keeps the C allocator from hoarding freed object buffers, so the daemon's resident memory follows
 * what it holds rather than how much it has written.
 *
 * lsvd allocates and frees a 4 MiB buffer for every log object it seals, uploads or copies, and
 * keeps small long-lived buffers (the extent map's dense regions) at the same time. glibc's malloc
 * serves large blocks with mmap, but after the first such block is freed it raises its mmap
 * threshold to that size ("dynamic threshold"), so later 4 MiB buffers come from the heap, where
 * small long-lived blocks allocated between them pin the freed space. Measured on a random 4 KiB
 * fill of 16 GiB (1 GiB at a time, the directory store): RSS grew 8.7 MiB per GiB written while the
 * extent map grew 1.7 MiB per GiB; with the threshold pinned at 128 KiB, RSS after 8 GiB was where
 * it was after 1 GiB (bench/RESULTS.md, "Memory: where random-write RSS growth came from").
 *
 * Pinning the threshold (`mallopt(M_MMAP_THRESHOLD, 128 KiB)`, which also turns the dynamic
 * adjustment off) costs one mmap/munmap and its page faults per large buffer: about 0.1-0.2 ms per
 * 4 MiB object, against the tens of milliseconds its upload takes. Users can do the same from the
 * environment (`GLIBC_TUNABLES=glibc.malloc.mmap_threshold=131072`); doing it here means the
 * compiled binary behaves the same wherever it is dropped. Where glibc or FFI is unavailable (another
 * libc, a runtime without the permission) nothing happens and the daemon runs as before.
 */

const M_MMAP_THRESHOLD = -3; // glibc <malloc.h>
export const MMAP_THRESHOLD_BYTES = 128 * 1024;

/** Pins glibc's mmap threshold; true when glibc accepted it. Never throws. */
export function pinMallocMmapThreshold(bytes: number = MMAP_THRESHOLD_BYTES): boolean {
  if (Deno.build.os !== "linux") return false;
  try {
    // Ask rather than demand: a runtime started without --allow-ffi must not prompt or fail.
    if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") return false;
    const libc = Deno.dlopen("libc.so.6", { mallopt: { parameters: ["i32", "i32"], result: "i32" } });
    try {
      return libc.symbols.mallopt(M_MMAP_THRESHOLD, bytes) === 1;
    } finally {
      libc.close();
    }
  } catch {
    return false; // not glibc (e.g. musl), or no dynamic loader: keep the allocator's defaults
  }
}
