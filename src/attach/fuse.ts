/**
 * @module
 * `--fuse PATH`: where the kernel has no nbd module (this machine, many containers) but has FUSE,
 * expose the daemon's export as a regular file through nbdfuse, so `losetup` + `mount` still give
 * a kernel filesystem. nbdfuse runs as a child in the foreground; stopping it unmounts the FUSE
 * filesystem with fusermount3, which makes nbdfuse disconnect and exit.
 */

import type { Logger } from "../util/log.ts";

/** Bound on waiting for the file to appear, and for nbdfuse to exit after unmount. */
const FUSE_TIMEOUT_MS = 30_000;
/** After a lazy unmount: how long nbdfuse gets before SIGTERM, and then before SIGKILL. */
const BUSY_GRACE_MS = 2_000;
const POLL_INTERVAL_MS = 50;

export interface FuseExportOptions {
  /** MOUNTPOINT/FILENAME, or an existing directory (the file is then named "nbd" inside it). */
  path: string;
  socketPath: string;
  exportName: string;
  /** nbdfuse connections (-C), default 4. */
  connections?: number;
  readOnly?: boolean;
  log: Logger;
}

export interface FuseExport {
  /** The file that is the volume. */
  readonly filePath: string;
  /** The FUSE mount point (the directory holding the file). */
  readonly mountPoint: string;
  /** Resolves when nbdfuse exits (after stop(), or if it dies). */
  readonly exited: Promise<Deno.CommandStatus>;
  stop(): Promise<void>;
}

/** nbd+unix URI for an export on a unix socket. */
export function nbdUnixUri(exportName: string, socketPath: string): string {
  return `nbd+unix:///${encodeURIComponent(exportName)}?socket=${encodeURIComponent(socketPath)}`;
}

/** Starts nbdfuse and resolves once the file exists. */
export async function startFuseExport(options: FuseExportOptions): Promise<FuseExport> {
  const { mountPoint, filePath } = await splitFusePath(options.path);
  const args = [
    ...["-C", String(options.connections ?? 4)],
    ...(options.readOnly ? ["-r"] : []),
    options.path,
    nbdUnixUri(options.exportName, options.socketPath),
  ];
  let child: Deno.ChildProcess;
  try {
    // Its own session: Ctrl-C or a closed terminal reaches lsvd only, which decides when nbdfuse
    // may stop (not while a loop device or mount still uses the file).
    child = new Deno.Command("nbdfuse", {
      args,
      stdin: "null",
      stdout: "inherit",
      stderr: "inherit",
      detached: true,
    }).spawn();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new Error(
        `Cannot expose the volume at ${options.path}: nbdfuse is not installed (apt-get install libnbd-bin)`,
      );
    }
    throw error;
  }
  const exited = child.status;
  options.log(`Exposing the volume as ${filePath} through nbdfuse.`);
  try {
    await waitForFile(filePath, exited);
  } catch (error) {
    await stopChild(child, mountPoint);
    throw error;
  }
  let stopped: Promise<void> | undefined;
  return {
    filePath,
    mountPoint,
    exited,
    stop: () => stopped ??= stopChild(child, mountPoint),
  };
}

/** Where nbdfuse mounts and the file it shows; throws when the directory is missing. */
export async function splitFusePath(path: string): Promise<{ mountPoint: string; filePath: string }> {
  const info = await Deno.stat(path).catch(() => undefined);
  if (info?.isDirectory) return { mountPoint: path, filePath: `${path.replace(/\/+$/, "")}/nbd` };
  const slash = path.lastIndexOf("/");
  if (slash < 0) {
    // nbdfuse takes DIR or DIR/FILE; a bare name that is no directory is neither.
    throw new Error(`Cannot expose the volume at ${path}: no such directory (create it, or give DIR/FILE)`);
  }
  const mountPoint = slash > 0 ? path.slice(0, slash) : "/";
  const dir = await Deno.stat(mountPoint).catch(() => undefined);
  if (!dir?.isDirectory) {
    throw new Error(`Cannot expose the volume at ${path}: ${mountPoint} is not a directory`);
  }
  return { mountPoint, filePath: path };
}

async function waitForFile(filePath: string, exited: Promise<Deno.CommandStatus>): Promise<void> {
  let status: Deno.CommandStatus | undefined;
  exited.then((s) => status = s);
  const deadline = Date.now() + FUSE_TIMEOUT_MS;
  while (!(await Deno.stat(filePath).then((i) => i.isFile, () => false))) {
    if (status) {
      throw new Error(`Cannot expose the volume at ${filePath}: nbdfuse exited with code ${status.code}`);
    }
    if (Date.now() > deadline) {
      throw new Error(`Cannot expose the volume at ${filePath}: no file in ${FUSE_TIMEOUT_MS} ms`);
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_INTERVAL_MS));
  }
}

/**
 * fusermount3 -u, and a bounded wait for nbdfuse to exit. A busy mount (what still holds the file
 * was already waited for, so this is a stop forced past it, or only a shell's cwd) is detached
 * lazily; nbdfuse would then wait for the last user, so it is asked to stop (SIGTERM) after a
 * short grace. SIGKILL ends any wait.
 */
async function stopChild(child: Deno.ChildProcess, mountPoint: string): Promise<void> {
  if (await fusermount(["-u", mountPoint])) {
    if (await exitsWithin(child, FUSE_TIMEOUT_MS)) return;
  } else {
    await fusermount(["-u", "-z", mountPoint]);
    if (await exitsWithin(child, BUSY_GRACE_MS)) return;
    child.kill("SIGTERM");
    if (await exitsWithin(child, BUSY_GRACE_MS)) return;
  }
  child.kill("SIGKILL");
  await child.status;
}

async function exitsWithin(child: Deno.ChildProcess, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<"timeout">((resolve) => timer = setTimeout(() => resolve("timeout"), ms));
  const outcome = await Promise.race([child.status, timeout]);
  clearTimeout(timer);
  return outcome !== "timeout";
}

async function fusermount(args: string[]): Promise<boolean> {
  try {
    const output = await new Deno.Command("fusermount3", { args, stdout: "null", stderr: "null" }).output();
    return output.success;
  } catch {
    return false;
  }
}
