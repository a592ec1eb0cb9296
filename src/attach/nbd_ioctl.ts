/**
 * @module
 * The kernel NBD driver's old ioctl interface (linux include/uapi/linux/nbd.h), used only when the
 * generic netlink family is missing. NBD_DO_IT blocks until the device is disconnected, so it runs
 * as a nonblocking FFI call on a worker thread while the event loop keeps serving the socket.
 */

import { type Libc, O_RDWR } from "./libc.ts";

const NBD_SET_SOCK = 0xab00;
const NBD_SET_BLKSIZE = 0xab01;
const NBD_DO_IT = 0xab03;
const NBD_CLEAR_SOCK = 0xab04;
const NBD_SET_SIZE_BLOCKS = 0xab07;
const NBD_DISCONNECT = 0xab08;
const NBD_SET_TIMEOUT = 0xab09;
const NBD_SET_FLAGS = 0xab0a;
/** Bound on waiting for NBD_DO_IT to return after NBD_DISCONNECT. */
const DO_IT_EXIT_TIMEOUT_MS = 30_000;

export interface NbdIoctlRequest {
  devicePath: string;
  sizeBytes: number;
  blockSizeBytes: number;
  serverFlags: number;
  timeoutSeconds: number;
  socketFds: readonly number[];
}

/** A device connected through ioctls, with NBD_DO_IT running on a worker thread. */
export class NbdIoctlConnection {
  readonly #libc: Libc;
  readonly #deviceFd: number;
  readonly #devicePath: string;
  readonly #running: Promise<number>;

  private constructor(libc: Libc, deviceFd: number, devicePath: string, running: Promise<number>) {
    this.#libc = libc;
    this.#deviceFd = deviceFd;
    this.#devicePath = devicePath;
    this.#running = running;
  }

  /** Configures the device and starts NBD_DO_IT; resolves once the device is configured. */
  static start(libc: Libc, request: NbdIoctlRequest): NbdIoctlConnection {
    const fd = libc.open(request.devicePath, O_RDWR);
    try {
      const set = (command: number, argument: number, what: string) => {
        if (libc.raw.ioctl(fd, BigInt(command), BigInt(argument)) !== 0) {
          throw new Error(`Cannot connect ${request.devicePath}: ${what} failed: ${libc.lastError()}`);
        }
      };
      libc.raw.ioctl(fd, BigInt(NBD_CLEAR_SOCK), 0n); // leftovers of a previous owner
      set(NBD_SET_BLKSIZE, request.blockSizeBytes, "NBD_SET_BLKSIZE");
      set(NBD_SET_SIZE_BLOCKS, Math.floor(request.sizeBytes / request.blockSizeBytes), "NBD_SET_SIZE_BLOCKS");
      set(NBD_SET_FLAGS, request.serverFlags, "NBD_SET_FLAGS");
      set(NBD_SET_TIMEOUT, request.timeoutSeconds, "NBD_SET_TIMEOUT");
      for (const socketFd of request.socketFds) set(NBD_SET_SOCK, socketFd, "NBD_SET_SOCK");
    } catch (error) {
      libc.close(fd);
      throw error;
    }
    const running = libc.raw.ioctl_async(fd, BigInt(NBD_DO_IT), 0n);
    return new NbdIoctlConnection(libc, fd, request.devicePath, running);
  }

  /** Resolves when NBD_DO_IT returns (the device was disconnected, by us or by a dead connection). */
  get finished(): Promise<number> {
    return this.#running;
  }

  /** NBD_DISCONNECT, wait (bounded) for NBD_DO_IT to return, NBD_CLEAR_SOCK, close. */
  async disconnect(): Promise<void> {
    const libc = this.#libc;
    await libc.raw.ioctl_async(this.#deviceFd, BigInt(NBD_DISCONNECT), 0n);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), DO_IT_EXIT_TIMEOUT_MS);
    });
    const outcome = await Promise.race([this.#running, timeout]);
    clearTimeout(timer);
    if (outcome === "timeout") {
      throw new Error(
        `Cannot disconnect ${this.#devicePath}: NBD_DO_IT did not return in ${DO_IT_EXIT_TIMEOUT_MS} ms`,
      );
    }
    libc.raw.ioctl(this.#deviceFd, BigInt(NBD_CLEAR_SOCK), 0n);
    libc.close(this.#deviceFd);
  }
}
