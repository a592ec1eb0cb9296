/**
 * @module
 * Resuming /dev/nbdN after its daemon died or handed over: negotiate new sockets with this daemon
 * and give them to the kernel with NBD_CMD_RECONFIGURE, which puts each in the place of one dead
 * socket. The kernel answers success even when it found no dead socket to replace (it drops the
 * rest), so which sockets it kept is read back: a socket the kernel holds outlives our close of it
 * in /proc/net/unix. None kept means the old daemon still serves (its sockets are alive): wait,
 * bounded, for it to let go (a takeover), then refuse in one line. A volume that grew since the
 * device was connected (`--size` larger at the restart) grows the device too, by one more
 * NBD_CMD_RECONFIGURE with the new size once this daemon's sockets serve it (the kernel applies a
 * size at once, so never while another daemon may still serve the old one); a filesystem on it
 * then grows online (resize2fs). A volume that shrank is refused: the end of a mounted
 * filesystem would vanish under it.
 */

import type { Logger } from "../util/log.ts";
import type { Libc } from "./libc.ts";
import type { NbdNetlink, NbdReconfigureRequest } from "./nbd_netlink.ts";
import { readSysfs } from "./nbd_sysfs.ts";

/** The kernel's own bound on sockets per device is large; lsvd never connects more than this. */
const SOCKETS_MAX = 16;
const RETRY_INTERVAL_MS = 200;

export interface ResumeOptions {
  index: number;
  devicePath: string;
  backend?: string;
  /** Sockets offered per round (the count lsvd connects with). */
  connections?: number;
  timeoutSeconds: number;
  deadConnectionTimeoutSeconds: number;
  /** How long to wait for live sockets of the previous daemon to die (default 0). */
  resumeWaitMs?: number;
  log?: Logger;
  /** Opens one negotiated socket to this daemon, pushing its fd onto `fds`. */
  openSocket(fds: number[]): Promise<{ sizeBytes: number; transmissionFlags: number }>;
}

/** Resumes the device; resolves with its size and the number of sockets the kernel took. */
export async function resumeDevice(
  libc: Libc,
  netlink: NbdNetlink,
  options: ResumeOptions,
): Promise<{ sizeBytes: number; connections: number }> {
  const { devicePath } = options;
  const deadline = Date.now() + (options.resumeWaitMs ?? 0);
  let kept = 0;
  let waited = false;
  for (;;) {
    kept = await replaceDeadSockets(libc, netlink, options);
    if (kept > 0) break;
    if (Date.now() >= deadline) {
      throw new Error(
        `Cannot resume ${devicePath}: another process still serves it (its sockets are alive); ` +
          "stop that lsvd, or start this one with --takeover to have it hand over",
      );
    }
    if (!waited) options.log?.(`Waiting for the previous daemon to let go of ${devicePath}.`);
    waited = true;
    await new Promise((resolve) => setTimeout(resolve, RETRY_INTERVAL_MS));
  }
  const deviceBytes = deviceSizeBytes(options.index);
  options.log?.(
    `${devicePath} was left connected for this volume; resumed it with ${kept} new connection${
      kept === 1 ? "" : "s"
    } (nothing disconnected or unmounted).`,
  );
  return { sizeBytes: deviceBytes, connections: kept };
}

/**
 * Offers new sockets in place of the device's dead ones, a batch at a time while the kernel keeps
 * a whole batch; returns how many it kept (0: none was dead). Also how a serving daemon replaces a
 * socket the kernel gave up on (a request outlived --io-timeout).
 */
export async function replaceDeadSockets(
  libc: Libc,
  netlink: NbdNetlink,
  options: ResumeOptions,
): Promise<number> {
  const deviceBytes = deviceSizeBytes(options.index);
  const batch = Math.max(1, Math.min(options.connections ?? 4, SOCKETS_MAX));
  let kept = 0;
  let volumeBytes = deviceBytes;
  for (;;) {
    const round = await offerSockets(libc, netlink, options, { batch, deviceBytes });
    kept += round.kept;
    volumeBytes = round.volumeBytes;
    if (round.kept < batch || kept >= SOCKETS_MAX) break;
  }
  if (kept > 0 && volumeBytes > deviceBytes) {
    await netlink.reconfigure(reconfigureRequest(options, { socketFds: [], sizeBytes: volumeBytes }));
    options.log?.(
      `${options.devicePath} grew from ${deviceBytes} to ${volumeBytes} bytes with the volume ` +
        "(grow a filesystem on it with resize2fs or xfs_growfs).",
    );
  }
  return kept;
}

/**
 * The NBD_CMD_RECONFIGURE of this device: its index, backend and timeouts as it was connected with,
 * and what changes: new sockets, or (with none) a new size.
 */
function reconfigureRequest(
  options: ResumeOptions,
  change: Pick<NbdReconfigureRequest, "socketFds" | "sizeBytes">,
): NbdReconfigureRequest {
  return {
    index: options.index,
    backend: options.backend,
    timeoutSeconds: options.timeoutSeconds,
    deadConnectionTimeoutSeconds: options.deadConnectionTimeoutSeconds,
    ...change,
  };
}

function deviceSizeBytes(index: number): number {
  return Number(readSysfs(`/sys/block/nbd${index}/size`) ?? "0") * 512;
}

/**
 * One NBD_CMD_RECONFIGURE with `batch` new sockets; returns how many the kernel kept and the size
 * this daemon serves (never less than the device's).
 */
async function offerSockets(
  libc: Libc,
  netlink: NbdNetlink,
  options: ResumeOptions,
  p: { batch: number; deviceBytes: number },
): Promise<{ kept: number; volumeBytes: number }> {
  const fds: number[] = [];
  let volumeBytes = p.deviceBytes;
  try {
    for (let i = 0; i < p.batch; i++) {
      const negotiated = await options.openSocket(fds);
      if (negotiated.sizeBytes < p.deviceBytes) {
        throw new Error(
          `Cannot resume ${options.devicePath}: it was connected with ${p.deviceBytes} bytes and the ` +
            `volume now has ${negotiated.sizeBytes} (fewer); unmount it and disconnect it (or restart with the old size)`,
        );
      }
      volumeBytes = negotiated.sizeBytes;
    }
    const inodes = fds.map(socketInode);
    await netlink.reconfigure(reconfigureRequest(options, { socketFds: fds }));
    for (const fd of fds.splice(0)) libc.close(fd);
    const open = openUnixSocketInodes();
    return { kept: inodes.filter((inode) => inode !== undefined && open.has(inode)).length, volumeBytes };
  } finally {
    for (const fd of fds) libc.close(fd);
  }
}

/** The inode of a socket fd of this process ("socket:[123]" -> "123"). */
function socketInode(fd: number): string | undefined {
  const target = Deno.readLinkSync(`/proc/self/fd/${fd}`);
  return /^socket:\[(\d+)\]$/.exec(target)?.[1];
}

/** Inodes of every unix socket that exists now (column 7 of /proc/net/unix). */
export function openUnixSocketInodes(table = Deno.readTextFileSync("/proc/net/unix")): Set<string> {
  const inodes = new Set<string>();
  for (const line of table.split("\n").slice(1)) {
    const inode = line.trim().split(/\s+/)[6];
    if (inode !== undefined) inodes.add(inode);
  }
  return inodes;
}
