/**
 * @module
 * The bytes a filesystem has free for an unprivileged writer (statvfs(3): f_bavail × f_frsize), so
 * a bound given on the command line (`--cache-dir-size`) is checked against the disk it lands on at
 * start. The cache's files grow as they fill: a bound the disk cannot hold fills it to the last
 * block, after which the cache keeps nothing new and everything else writing there fails too. Deno
 * has no statfs; glibc's statvfs is called through FFI. Where FFI or glibc is unavailable (another
 * libc, a runtime without the permission) the answer is undefined and callers skip the check.
 */

/**
 * The room a directory's own files may grow into: its filesystem's free bytes plus the blocks those
 * files (names in `dir`; missing ones count 0) hold already, which they reuse. Undefined when the
 * free bytes cannot be told (freeBytes).
 */
export function roomBytes(dir: string, ownFiles: readonly string[]): number | undefined {
  const free = freeBytes(dir);
  if (free === undefined) return undefined;
  let own = 0;
  for (const name of ownFiles) {
    try {
      own += (Deno.statSync(`${dir}/${name}`).blocks ?? 0) * 512;
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
  }
  return free + own;
}

/** struct statvfs on 64-bit glibc is 112 bytes (11 longs, then ints); room to spare. */
const STATVFS_BUFFER_BYTES = 256;
const F_FRSIZE = 1;
const F_BLOCKS = 2;
const F_BAVAIL = 4;

/**
 * Free bytes on the filesystem holding `path` (an existing file or directory), or undefined: also
 * for a filesystem that reports no size at all, which cannot say what is free.
 */
export function freeBytes(path: string): number | undefined {
  if (Deno.build.os !== "linux") return undefined;
  try {
    // Ask rather than demand: a runtime started without --allow-ffi must not prompt or fail.
    if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") return undefined;
    const libc = Deno.dlopen("libc.so.6", { statvfs: { parameters: ["buffer", "buffer"], result: "i32" } });
    try {
      const fields = new BigUint64Array(STATVFS_BUFFER_BYTES / 8);
      if (libc.symbols.statvfs(new TextEncoder().encode(`${path}\0`), fields) !== 0) return undefined;
      if (fields[F_BLOCKS] === 0n) return undefined; // no size reported (proc, some FUSE mounts): unknown
      return Number(fields[F_BAVAIL]! * fields[F_FRSIZE]!);
    } finally {
      libc.close();
    }
  } catch {
    return undefined; // not glibc (e.g. musl), or no dynamic loader
  }
}
