/**
 * @module
 * fdatasync(2) through FFI on Deno's blocking thread pool, for callers that keep several in flight
 * on one file (the write-back journal). Deno's own `FsFile.syncData()` duplicates the descriptor for
 * every call and closes it after; several of those at once on one file measured slower than one at a
 * time, while several plain fdatasyncs overlap in the kernel as nbdkit's threads' do (bench/RESULTS.md,
 * "concurrent fdatasyncs"). Where FFI or glibc is unavailable (a runtime without the permission,
 * another libc), `nativeFdatasync()` is undefined and callers keep `syncData()`, one at a time.
 */

const SYMBOLS = { fdatasync: { parameters: ["i32"], result: "i32", nonblocking: true } } as const;

let fdatasync: ((fd: number) => Promise<number>) | null | undefined;

/** fdatasync on a descriptor from node:fs (a real one), resolving to its return value (0, or -1). */
export function nativeFdatasync(): ((fd: number) => Promise<number>) | undefined {
  if (fdatasync === undefined) {
    fdatasync = null;
    try {
      // Ask rather than demand: a runtime started without --allow-ffi must not prompt or fail.
      if (Deno.build.os === "linux" && Deno.permissions.querySync({ name: "ffi" }).state === "granted") {
        const libc = Deno.dlopen("libc.so.6", SYMBOLS);
        fdatasync = (fd) => libc.symbols.fdatasync(fd);
      }
    } catch {
      fdatasync = null; // not glibc, or no dynamic loader
    }
  }
  return fdatasync ?? undefined;
}
