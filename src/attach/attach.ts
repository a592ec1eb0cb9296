/**
 * @module
 * What `lsvd serve` does after the NBD server is listening: connect the kernel to /dev/nbdN (then
 * format/grow/mount it), or expose the volume as a file through nbdfuse; and the reverse, in order,
 * on shutdown: give back what lsvd holds (its mounts of /dev/nbdN, once idle), say what else still
 * uses the volume (holders.ts) so serve can wait for it, then unmount, disconnect the kernel or
 * stop nbdfuse. Failures here are the user's environment (no nbd module, no mkfs.ext4, a busy
 * mount point) and become AttachError lines.
 * A device a previous daemon left connected for this volume is resumed, and a filesystem already
 * mounted from it stays as it is (no mkfs, no fsck, no second mount); a daemon that hands over
 * lets go of the device without unmounting or disconnecting it.
 */

import { resolve } from "node:path";
import type { Logger } from "../util/log.ts";
import { attachKernelDevice, checkKernelNbdSupport, type KernelAttachment } from "./kernel_device.ts";
import { findMounts, mountDevice, unmountDevice, unmountIdle } from "./filesystem.ts";
import { type FuseExport, splitFusePath, startFuseExport } from "./fuse.ts";
import { findHolders, type Holder } from "./holders.ts";

/** Bound on syncing the filesystems still on the volume before a forced stop. */
const FORCED_SYNC_TIMEOUT_MS = 30_000;

export class AttachError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "AttachError";
  }
}

export interface AttachOptions {
  socketPath: string | undefined;
  exportName: string;
  readOnly: boolean;
  devicePath: string | undefined;
  mountPath: string | undefined;
  fusePath: string | undefined;
  log: Logger;
  /** Names the volume on the kernel device, so a later daemon can resume it (kernel_device.ts). */
  backend?: string;
  /** Seconds the kernel holds requests while no daemon serves the device (then EIO). */
  deadTimeoutSeconds?: number;
  /** Seconds before the kernel re-sends an unanswered request. */
  ioTimeoutSeconds?: number;
  /** How long to wait for a previous daemon that is handing over to let go of the device. */
  resumeWaitMs?: number;
}

export interface Attachment {
  /**
   * Gives back what lsvd holds itself (every mount of /dev/nbdN that a plain umount can take down)
   * and returns what else still uses the volume: [] when detach() loses nothing.
   */
  release(): Promise<Holder[]>;
  /**
   * Before a stop forced while holders remain: syncs their filesystems (bounded) while the volume
   * is still served, so only what is written after that is lost.
   */
  forceRelease(holders: Holder[]): Promise<void>;
  /** Unmounts, then disconnects; never throws (it logs), so shutdown always goes on to flush. */
  detach(): Promise<void>;
  /**
   * Lets go of the kernel device without unmounting or disconnecting it, for the next daemon to
   * resume (its sockets die when the NBD server closes them); nbdfuse is stopped as in detach.
   */
  handOver(): Promise<void>;
  /**
   * The kernel may have given up on a socket (a request outlived --io-timeout): give it new ones.
   * Never throws (it logs); calls while one runs are folded into one more round.
   */
  reconnect(): void;
}

async function wrap<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof Error && e.name !== "AssertionError") throw new AttachError(e.message, { cause: e });
    throw e;
  }
}

/**
 * Checks what attachDevice will need (the unix socket, the nbd module and device, the nbdfuse
 * directory) before the volume is opened, so a start that cannot succeed changes nothing.
 */
export async function checkAttach(options: AttachOptions): Promise<void> {
  const { devicePath, fusePath } = options;
  if (devicePath === undefined && fusePath === undefined) return;
  if (options.socketPath === undefined) {
    throw new AttachError("Cannot attach: --device and --fuse need the unix socket (--socket)");
  }
  if (fusePath !== undefined) {
    await wrap(() => splitFusePath(fusePath));
    await wrap(() => checkFuseTools(fusePath));
    return;
  }
  await wrap(async () => {
    checkKernelNbdSupport(devicePath!);
    const info = await Deno.stat(devicePath!).catch(() => undefined);
    if (info === undefined) throw new Error(`Cannot connect ${devicePath}: no such device`);
  });
}

/** nbdfuse on PATH and the kernel's FUSE device: without either, --fuse cannot start. */
async function checkFuseTools(fusePath: string): Promise<void> {
  if (!(await onPath("nbdfuse"))) {
    throw new Error(
      `Cannot expose the volume at ${fusePath}: nbdfuse is not installed (apt-get install libnbd-bin)`,
    );
  }
  if (!(await Deno.stat("/dev/fuse").then((i) => i.isCharDevice, () => false))) {
    throw new Error(
      `Cannot expose the volume at ${fusePath}: /dev/fuse is missing (modprobe fuse; in a container, ` +
        "give it --device /dev/fuse --cap-add SYS_ADMIN)",
    );
  }
}

/** True when an executable file of this name is in a PATH directory (what spawning it will find). */
async function onPath(command: string): Promise<boolean> {
  for (const directory of (Deno.env.get("PATH") ?? "").split(":")) {
    if (directory === "") continue;
    const info = await Deno.stat(`${directory}/${command}`).catch(() => undefined);
    if (info?.isFile && ((info.mode ?? 0) & 0o111) !== 0) return true;
  }
  return false;
}

/** Attaches what the options ask for; undefined when they ask for nothing. */
export async function attachDevice(options: AttachOptions): Promise<Attachment | undefined> {
  const { devicePath, fusePath } = options;
  if (devicePath === undefined && fusePath === undefined) return undefined;
  if (options.socketPath === undefined) {
    throw new AttachError("Cannot attach: --device and --fuse need the unix socket (--socket)");
  }
  const socketPath = options.socketPath;
  if (fusePath !== undefined) return await attachFuse(options, fusePath, socketPath);
  return await attachKernel(options, devicePath!, socketPath);
}

/** --fuse: the volume as a file through nbdfuse. */
async function attachFuse(options: AttachOptions, fusePath: string, socketPath: string): Promise<Attachment> {
  const log = options.log;
  const fuse: FuseExport = await wrap(() =>
    startFuseExport({
      path: fusePath,
      socketPath,
      exportName: options.exportName,
      readOnly: options.readOnly,
      log,
    })
  );
  log(`The volume is the file ${fuse.filePath}.`);
  const stop = () => logFailure(log, "stop nbdfuse", () => fuse.stop());
  return {
    release: () => holdersOrNone(log, () => findHolders(fuse.filePath)),
    forceRelease: (holders) => syncHolders(holders, log),
    detach: stop,
    handOver: stop,
    reconnect: () => {},
  };
}

/** --device (and --mount): the kernel NBD client on the unix socket, resumed when it outlived a daemon. */
async function attachKernel(
  options: AttachOptions,
  devicePath: string,
  socketPath: string,
): Promise<Attachment> {
  const log = options.log;
  const kernel: KernelAttachment = await wrap(() =>
    attachKernelDevice({
      devicePath: devicePath,
      socketPath,
      exportName: options.exportName,
      log,
      ...(options.backend === undefined ? {} : { backend: options.backend }),
      ...(options.deadTimeoutSeconds === undefined
        ? {}
        : { deadConnectionTimeoutSeconds: options.deadTimeoutSeconds }),
      ...(options.ioTimeoutSeconds === undefined ? {} : { timeoutSeconds: options.ioTimeoutSeconds }),
      ...(options.resumeWaitMs === undefined ? {} : { resumeWaitMs: options.resumeWaitMs }),
    })
  );
  const mountPath = options.mountPath;
  if (mountPath !== undefined && kernel.resumed && keepsMount(devicePath, mountPath, log)) {
    // The filesystem never went away: the kernel held its requests while no daemon served them.
  } else if (mountPath !== undefined) {
    try {
      await wrap(() =>
        mountDevice({ devicePath: devicePath, mountPoint: mountPath, log, readOnly: options.readOnly })
      );
    } catch (e) {
      await kernel.detach().catch(() => {});
      throw e;
    }
  }
  let tried = false;
  return {
    release: () =>
      holdersOrNone(log, async () => {
        // Every mount of the device, not only --mount's: a plain umount loses nothing.
        const busy = await unmountIdle(devicePath, tried ? undefined : log);
        tried = true;
        return await findHolders(devicePath, { ownMounts: busy });
      }),
    async forceRelease(holders) {
      await syncHolders(holders, log);
      await logFailure(log, `unmount ${devicePath}`, () => unmountDevice(devicePath, { log, attempts: 1 }));
    },
    async detach() {
      await logFailure(log, `unmount ${devicePath}`, () => unmountDevice(devicePath, { log }));
      await logFailure(log, `disconnect ${devicePath}`, () => kernel.detach());
    },
    handOver() {
      kernel.letGo();
      return Promise.resolve();
    },
    reconnect: reconnector(kernel, log),
  };
}

/** One reconnect round at a time; a request during a round asks for one more after it. */
function reconnector(kernel: KernelAttachment, log: Logger): () => void {
  let running = false;
  let again = false;
  const round = async () => {
    running = true;
    try {
      do {
        again = false;
        const kept = await kernel.reconnect();
        if (kept > 0) {
          log(
            `The kernel dropped ${kept} connection${kept === 1 ? "" : "s"} to ${kernel.devicePath} ` +
              "(a request took longer than --io-timeout); gave it new ones.",
          );
        }
      } while (again);
    } catch (e) {
      log(`Cannot reconnect ${kernel.devicePath}: ${(e as Error).message}`);
    } finally {
      running = false;
    }
  };
  return () => {
    if (running) again = true;
    else void round();
  };
}

/** True when a resumed device is still mounted (at mountPath or elsewhere): that mount is kept. */
function keepsMount(devicePath: string, mountPath: string, log: Logger): boolean {
  const mounts = findMounts(devicePath);
  if (mounts.length === 0) return false;
  const here = mounts.find((m) => m.mountPoint === resolve(mountPath));
  log(
    here
      ? `${devicePath} is still mounted on ${mountPath}; keeping that mount.`
      : `${devicePath} is still mounted on ${mounts.map((m) => m.mountPoint).join(", ")}; ` +
        `keeping it there (not mounting it on ${mountPath} too).`,
  );
  return true;
}

async function logFailure(log: Logger, action: string, fn: () => Promise<void>): Promise<void> {
  try {
    await fn();
  } catch (e) {
    log(`Cannot ${action}: ${(e as Error).message}`);
  }
}

/** What holds the volume; when that cannot be found out, nothing (the stop goes on as it would). */
async function holdersOrNone(log: Logger, find: () => Promise<Holder[]>): Promise<Holder[]> {
  try {
    return await find();
  } catch (e) {
    if (e instanceof Error && e.name === "AssertionError") throw e;
    log(`Cannot tell what still uses the volume: ${(e as Error).message}`);
    return [];
  }
}

/** `sync -f` on every filesystem the holders have on the volume, all together, bounded. */
async function syncHolders(holders: Holder[], log: Logger): Promise<void> {
  const paths = holders.flatMap((h) => h.syncPaths);
  if (paths.length === 0) return;
  log(`Syncing ${paths.join(", ")} before stopping.`);
  let children: Deno.ChildProcess[];
  try {
    children = paths.map((path) =>
      new Deno.Command("sync", { args: ["-f", path], stdin: "null", stdout: "null", stderr: "null" }).spawn()
    );
  } catch (e) {
    log(`Cannot sync ${paths.join(", ")}: ${(e as Error).message}; stopping anyway.`);
    return;
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<"expired">((resolve) =>
    timer = setTimeout(() => resolve("expired"), FORCED_SYNC_TIMEOUT_MS)
  );
  const outcome = await Promise.race([Promise.all(children.map((c) => c.status)), expired]);
  clearTimeout(timer);
  if (outcome === "expired") {
    log(`Cannot sync within ${FORCED_SYNC_TIMEOUT_MS / 1000} s; stopping anyway.`);
  } else if (outcome.some((status) => !status.success)) {
    log(`Cannot sync ${paths.filter((_, i) => !outcome[i]!.success).join(", ")}; stopping anyway.`);
  }
}
