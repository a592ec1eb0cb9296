/**
 * @module
 * Connects the kernel's NBD client (/dev/nbdN) to the daemon's own NBD socket without the
 * nbd-client binary: open client sockets to the daemon's unix socket with libc, run the NBD
 * handshake on them, hand them to the kernel over generic netlink (or the ioctl interface on
 * kernels without it), and tune the block queue for sequential reads.
 *
 * A device outlives its daemon: it is connected with a backend identifier naming the volume and a
 * dead-connection timeout, so when the daemon dies (crash, kill -9, a hand-over to a new version)
 * the kernel keeps the queue and the mounted filesystem for that long. A daemon that finds the
 * device still connected with its own backend identifier resumes it (NBD_CMD_RECONFIGURE with new
 * sockets) instead of connecting it anew: nothing is disconnected, unmounted or formatted.
 */

import { processRunning } from "../util/proc_stat.ts";
import { type Logger, silentLogger } from "../util/log.ts";
import { Libc } from "./libc.ts";
import { type HandshakeChannel, NBD_FLAG_CAN_MULTI_CONN, negotiateExport } from "./nbd_client_handshake.ts";
import { NbdIoctlConnection } from "./nbd_ioctl.ts";
import { NbdNetlink } from "./nbd_netlink.ts";
import { nbdIndexOf, readSysfs, tuneQueue, waitForDevice } from "./nbd_sysfs.ts";
import { replaceDeadSockets, resumeDevice, type ResumeOptions } from "./nbd_resume.ts";

export const BLOCK_SIZE_BYTES = 4096;

export interface AttachKernelDeviceOptions {
  /** /dev/nbdN. */
  devicePath: string;
  /** The daemon's NBD unix socket. */
  socketPath: string;
  exportName: string;
  /** Sockets handed to the kernel when the server advertises CAN_MULTI_CONN (default 4). */
  connections?: number;
  log?: Logger;
  /**
   * Per-request timeout in seconds (default 120): a request unanswered this long is re-sent on
   * another (or a replaced) socket, so it is also how long requests in flight when a daemon died wait.
   */
  timeoutSeconds?: number;
  /**
   * How long requests wait for a replacement when every socket is dead, in seconds (default 120);
   * then they fail with EIO.
   */
  deadConnectionTimeoutSeconds?: number;
  /**
   * Names the volume (netlink only): stored with the device, and a device left connected under the
   * same name by a daemon that is gone is resumed rather than disconnected.
   */
  backend?: string;
  /** Bound on waiting for the previous daemon's sockets to die before resuming (default 0 ms). */
  resumeWaitMs?: number;
  /** Read-ahead of the device in KiB (default 8192). */
  readAheadKb?: number;
  /** Largest request the kernel builds, in KiB, capped by the driver's own limit (default 2048). */
  maxSectorsKb?: number;
  /** "auto" (default): netlink, or ioctls when the netlink family is missing. */
  controlInterface?: "auto" | "netlink" | "ioctl";
  /** Bound on each handshake in milliseconds (default 30000). */
  handshakeTimeoutMs?: number;
}

export interface KernelAttachment {
  readonly devicePath: string;
  readonly index: number;
  readonly sizeBytes: number;
  readonly connections: number;
  readonly controlInterface: "netlink" | "ioctl";
  /** True when the device was left connected by a previous daemon and resumed with new sockets. */
  readonly resumed: boolean;
  /** True while the kernel has the device connected. */
  isConnected(): Promise<boolean>;
  /** Disconnects the kernel (it sends NBD_CMD_DISC on every socket). Idempotent. */
  detach(): Promise<void>;
  /**
   * Gives the kernel new sockets in place of dead ones (it shuts down a socket whose request outlived
   * the per-request timeout, then holds I/O for the dead-connection timeout); resolves with how many
   * it took (0: none was dead, or the ioctl interface, which cannot).
   */
  reconnect(): Promise<number>;
  /**
   * Lets go without disconnecting (netlink): once this daemon's sockets close, the kernel holds the
   * requests for the dead-connection timeout, waiting for the next daemon to resume the device.
   */
  letGo(): void;
}

export const DEFAULT_DEAD_CONNECTION_TIMEOUT_SECONDS = 120;
export const DEFAULT_REQUEST_TIMEOUT_SECONDS = 120;

/** Throws the one-line error users see when the kernel cannot do NBD at all. */
export function checkKernelNbdSupport(devicePath: string): void {
  try {
    Deno.statSync("/sys/module/nbd");
  } catch {
    throw new Error(
      `Cannot connect ${devicePath}: the kernel has no nbd module (no /sys/module/nbd); use --fuse PATH instead`,
    );
  }
}

/** Connects devicePath to the NBD server on socketPath; see AttachKernelDeviceOptions for defaults. */
export async function attachKernelDevice(options: AttachKernelDeviceOptions): Promise<KernelAttachment> {
  const log = options.log ?? silentLogger;
  const { devicePath } = options;
  const index = nbdIndexOf(devicePath);
  checkKernelNbdSupport(devicePath);
  log("Connecting the kernel to the device.");
  const libc = new Libc();
  const fds: number[] = [];
  try {
    const netlink = options.controlInterface === "ioctl" ? undefined : await NbdNetlink.open(libc);
    if (!netlink && options.controlInterface === "netlink") {
      throw new Error(`Cannot connect ${devicePath}: the kernel has no "nbd" generic netlink family`);
    }
    const timeoutSeconds = options.timeoutSeconds ?? DEFAULT_REQUEST_TIMEOUT_SECONDS;
    const deadConnectionTimeoutSeconds = options.deadConnectionTimeoutSeconds ??
      DEFAULT_DEAD_CONNECTION_TIMEOUT_SECONDS;
    const replacing: ResumeOptions & { log: Logger } = {
      ...options,
      index,
      log,
      timeoutSeconds,
      deadConnectionTimeoutSeconds,
      openSocket: (kept) => openNegotiatedSocket(libc, options, kept),
    };
    if (netlink && options.backend !== undefined && connectedBackend(index) === options.backend) {
      return await resumeConnected(libc, netlink, replacing, options);
    }
    await releaseStaleDevice({ index, devicePath, netlink, log, backend: options.backend });
    const negotiated = await openNegotiatedSockets(libc, options, fds);
    const request = {
      index,
      devicePath,
      sizeBytes: negotiated.sizeBytes,
      blockSizeBytes: BLOCK_SIZE_BYTES,
      serverFlags: negotiated.transmissionFlags,
      timeoutSeconds,
      deadConnectionTimeoutSeconds,
      socketFds: fds,
      ...(options.backend === undefined ? {} : { backend: options.backend }),
    };
    const attachment = netlink
      ? await connectNetlink(libc, netlink, { ...request, log, replacing })
      : connectIoctl(libc, request);
    for (const fd of fds.splice(0)) libc.close(fd); // the kernel holds its own references
    await waitForDevice(index, true);
    tuneDevice(index, options, log);
    return attachment;
  } catch (error) {
    for (const fd of fds) libc.close(fd);
    libc.closeLibrary();
    throw error;
  }
}

/** A device this volume's previous daemon left connected: new sockets through NBD_CMD_RECONFIGURE. */
async function resumeConnected(
  libc: Libc,
  netlink: NbdNetlink,
  replacing: ResumeOptions & { log: Logger },
  options: AttachKernelDeviceOptions,
): Promise<KernelAttachment> {
  try {
    const resumed = await resumeDevice(libc, netlink, replacing);
    tuneDevice(replacing.index, options, replacing.log);
    return netlinkAttachment(libc, netlink, { ...replacing, replacing, resumed: true, ...resumed });
  } catch (error) {
    netlink.close();
    throw error;
  }
}

function tuneDevice(index: number, options: AttachKernelDeviceOptions, log: Logger): void {
  tuneQueue(index, {
    readAheadKb: options.readAheadKb ?? 8192,
    maxSectorsKb: options.maxSectorsKb ?? 2048,
    log,
  });
}

interface ConnectRequest {
  index: number;
  devicePath: string;
  sizeBytes: number;
  blockSizeBytes: number;
  serverFlags: number;
  timeoutSeconds: number;
  deadConnectionTimeoutSeconds: number;
  socketFds: number[];
  backend?: string;
}

/** Opens and negotiates the first socket, then as many more as the server allows; fds collects them. */
async function openNegotiatedSockets(
  libc: Libc,
  options: AttachKernelDeviceOptions,
  fds: number[],
): Promise<{ sizeBytes: number; transmissionFlags: number }> {
  const first = await openNegotiatedSocket(libc, options, fds);
  if (first.sizeBytes < BLOCK_SIZE_BYTES) {
    throw new Error(
      `Cannot connect ${options.devicePath}: the export is smaller than ${BLOCK_SIZE_BYTES} bytes`,
    );
  }
  const wanted = Math.max(1, Math.min(options.connections ?? 4, 16));
  const count = first.transmissionFlags & NBD_FLAG_CAN_MULTI_CONN ? wanted : 1;
  for (let i = 1; i < count; i++) {
    const next = await openNegotiatedSocket(libc, options, fds);
    if (next.sizeBytes !== first.sizeBytes || next.transmissionFlags !== first.transmissionFlags) {
      throw new Error(
        `Cannot connect ${options.devicePath}: the server changed the export between connections`,
      );
    }
  }
  return first;
}

async function openNegotiatedSocket(
  libc: Libc,
  options: AttachKernelDeviceOptions,
  fds: number[],
): Promise<{ sizeBytes: number; transmissionFlags: number }> {
  const fd = libc.connectUnix(options.socketPath);
  fds.push(fd);
  libc.setSocketTimeouts(fd, options.handshakeTimeoutMs ?? 30_000);
  const channel: HandshakeChannel = {
    read: (length, what) => libc.readExact(fd, length, what),
    write: (bytes, what) => libc.writeAll(fd, bytes, what),
  };
  const negotiated = await negotiateExport(channel, options.exportName);
  libc.setSocketTimeouts(fd, 0); // the kernel would treat a receive timeout as a dead connection
  return negotiated;
}

async function connectNetlink(
  libc: Libc,
  netlink: NbdNetlink,
  request: ConnectRequest & { log: Logger; replacing: ResumeOptions },
): Promise<KernelAttachment> {
  try {
    await netlink.connect(request);
  } catch (error) {
    netlink.close();
    throw error;
  }
  return netlinkAttachment(libc, netlink, {
    ...request,
    connections: request.socketFds.length,
    resumed: false,
  });
}

function netlinkAttachment(
  libc: Libc,
  netlink: NbdNetlink,
  p: {
    index: number;
    devicePath: string;
    sizeBytes: number;
    connections: number;
    resumed: boolean;
    log: Logger;
    replacing: ResumeOptions;
  },
): KernelAttachment {
  let done = false;
  const closeChannel = () => {
    done = true;
    netlink.close();
    libc.closeLibrary();
  };
  return {
    devicePath: p.devicePath,
    index: p.index,
    sizeBytes: p.sizeBytes,
    connections: p.connections,
    controlInterface: "netlink",
    resumed: p.resumed,
    isConnected: () => netlink.isConnected(p.index),
    async detach() {
      if (done) return;
      done = true;
      try {
        if (await netlink.isConnected(p.index)) await netlink.disconnect(p.index);
        // The kernel keeps the device configured while anything still has it open (a lazy unmount).
        await waitForDevice(p.index, false).catch((error) => p.log(error.message));
      } finally {
        closeChannel();
      }
    },
    letGo() {
      if (!done) closeChannel();
    },
    reconnect: () => done ? Promise.resolve(0) : replaceDeadSockets(libc, netlink, p.replacing),
  };
}

function connectIoctl(libc: Libc, request: ConnectRequest): KernelAttachment {
  const connection = NbdIoctlConnection.start(libc, request);
  let detached = false;
  let running = true;
  connection.finished.then(() => running = false, () => running = false);
  return {
    devicePath: request.devicePath,
    index: request.index,
    sizeBytes: request.sizeBytes,
    connections: request.socketFds.length,
    controlInterface: "ioctl",
    resumed: false,
    isConnected: () =>
      Promise.resolve(running && readSysfs(`/sys/block/nbd${request.index}/pid`) !== undefined),
    async detach() {
      if (detached) return;
      detached = true;
      try {
        await connection.disconnect();
      } finally {
        libc.closeLibrary();
      }
    },
    letGo() {
      // An ioctl connection lives in this process: it cannot outlive it, so letting go disconnects.
      void this.detach();
    },
    reconnect: () => Promise.resolve(0),
  };
}

/** The backend identifier a connected device carries ("" when none), or undefined when not connected. */
export function connectedBackend(index: number): string | undefined {
  if (readSysfs(`/sys/block/nbd${index}/pid`) === undefined) return undefined;
  return readSysfs(`/sys/block/nbd${index}/backend`) ?? "";
}

/**
 * A device connected for another volume is refused. One connected without a backend identifier (by
 * another tool, or an lsvd from before resuming) and left by a process that no longer exists is
 * disconnected; one held by a live process is refused.
 */
async function releaseStaleDevice(p: {
  index: number;
  devicePath: string;
  netlink: NbdNetlink | undefined;
  log: Logger;
  backend: string | undefined;
}): Promise<void> {
  const pid = readSysfs(`/sys/block/nbd${p.index}/pid`);
  if (pid === undefined) return;
  const backend = connectedBackend(p.index);
  if (backend) {
    throw new Error(`Cannot connect ${p.devicePath}: it is connected to another volume (${backend})`);
  }
  if (processRunning(pid)) {
    throw new Error(`Cannot connect ${p.devicePath}: it is already connected (pid ${pid})`);
  }
  if (!p.netlink) {
    throw new Error(`Cannot connect ${p.devicePath}: it is left connected by gone process ${pid}`);
  }
  p.log(`${p.devicePath} was left connected by process ${pid}, which is gone; disconnecting it.`);
  await p.netlink.disconnect(p.index);
  await waitForDevice(p.index, false);
}
