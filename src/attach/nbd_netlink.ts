/**
 * @module
 * The kernel NBD driver's generic-netlink control interface (NetworkBlockDevice/nbd
 * doc/netlink-proto.md, linux include/uapi/linux/nbd-netlink.h): connect a device to already
 * negotiated sockets, hand a connected device new sockets (reconfigure), disconnect it, ask whether
 * it is connected. Unlike the ioctl interface, NBD_CMD_CONNECT returns at once and the kernel keeps
 * its own references to the sockets, so the device outlives the process that connected it (no
 * NBD_CFLAG_DISCONNECT_ON_CLOSE or DESTROY_ON_DISCONNECT is asked for): when that process dies, its
 * sockets die, requests wait up to the dead-connection timeout, and NBD_CMD_RECONFIGURE replaces the
 * dead sockets with a new daemon's (drivers/block/nbd.c nbd_genl_reconfigure, nbd_reconnect_socket).
 */

import type { Libc } from "./libc.ts";
import {
  attributeString,
  attributeU32,
  attributeU64,
  decodeAttributes,
  errnoText,
  GenericNetlink,
  listAttributes,
  type NetlinkAttribute,
} from "./netlink.ts";

const NBD_GENL_FAMILY_NAME = "nbd";
const NBD_GENL_VERSION = 1;
const NBD_CMD_CONNECT = 1;
const NBD_CMD_DISCONNECT = 2;
const NBD_CMD_RECONFIGURE = 3;
const NBD_CMD_STATUS = 5;
const NBD_ATTR_INDEX = 1;
const NBD_ATTR_SIZE_BYTES = 2;
const NBD_ATTR_BLOCK_SIZE_BYTES = 3;
const NBD_ATTR_TIMEOUT = 4;
const NBD_ATTR_SERVER_FLAGS = 5;
const NBD_ATTR_SOCKETS = 7;
const NBD_ATTR_DEAD_CONN_TIMEOUT = 8;
const NBD_ATTR_DEVICE_LIST = 9;
/** Linux 5.14 and later: a string the kernel keeps and shows in /sys/block/nbdN/backend. */
const NBD_ATTR_BACKEND_IDENTIFIER = 10;
const NBD_DEVICE_ITEM = 1;
const NBD_DEVICE_INDEX = 1;
const NBD_DEVICE_CONNECTED = 2;
const NBD_SOCK_ITEM = 1;
const NBD_SOCK_FD = 1;

/** Everything NBD_CMD_CONNECT needs. */
export interface NbdConnectRequest {
  index: number;
  sizeBytes: number;
  blockSizeBytes: number;
  /** Transmission flags from the handshake. */
  serverFlags: number;
  /** Per-request timeout in seconds. */
  timeoutSeconds: number;
  /** How long requests wait for a dead connection to be replaced, in seconds. */
  deadConnectionTimeoutSeconds: number;
  /** Connected, negotiated socket fds (the kernel takes its own references). */
  socketFds: readonly number[];
  /**
   * Names what serves the device; a reconfigure must name the same (the kernel refuses another).
   * Omitted: the kernel accepts any reconfigure.
   */
  backend?: string;
}

/** Everything NBD_CMD_RECONFIGURE needs. */
export interface NbdReconfigureRequest {
  index: number;
  /** The device's backend identifier (required by the kernel when the connect set one). */
  backend: string | undefined;
  /** Negotiated socket fds; each replaces one dead socket, the rest are dropped by the kernel. */
  socketFds: readonly number[];
  /** New per-request and dead-connection timeouts in seconds. */
  timeoutSeconds: number;
  deadConnectionTimeoutSeconds: number;
  /** A new size for the device (a volume that grew); omitted, the size stays. */
  sizeBytes?: number;
}

/** A control channel to the kernel's "nbd" generic netlink family. */
export class NbdNetlink {
  readonly #libc: Libc;
  readonly #netlink: GenericNetlink;
  readonly #family: number;

  private constructor(libc: Libc, netlink: GenericNetlink, family: number) {
    this.#libc = libc;
    this.#netlink = netlink;
    this.#family = family;
  }

  /** Opens the channel; undefined when the kernel has no "nbd" family (module not loaded or too old). */
  static async open(libc: Libc): Promise<NbdNetlink | undefined> {
    const netlink = new GenericNetlink(libc);
    try {
      const family = await netlink.resolveFamily(NBD_GENL_FAMILY_NAME);
      if (family === undefined) {
        netlink.close();
        return undefined;
      }
      return new NbdNetlink(libc, netlink, family);
    } catch (error) {
      netlink.close();
      throw error;
    }
  }

  /** NBD_CMD_CONNECT; resolves once the kernel has started the device. */
  async connect(request: NbdConnectRequest): Promise<void> {
    const attributes = [
      attributeU32(NBD_ATTR_INDEX, request.index),
      attributeU64(NBD_ATTR_SIZE_BYTES, request.sizeBytes),
      attributeU64(NBD_ATTR_BLOCK_SIZE_BYTES, request.blockSizeBytes),
      attributeU64(NBD_ATTR_SERVER_FLAGS, request.serverFlags),
      ...socketAttributes(request),
    ];
    await this.#command(NBD_CMD_CONNECT, attributes, `connect /dev/nbd${request.index}`);
  }

  /**
   * NBD_CMD_RECONFIGURE: each socket replaces one dead socket of the connected device. The kernel
   * answers success even when it found no dead socket (it drops the rest silently), so the caller
   * checks which sockets it kept. Requests queued while every socket was dead go out on the new ones;
   * requests that were in flight on a dead socket are re-sent once their per-request timeout fires.
   */
  async reconfigure(request: NbdReconfigureRequest): Promise<void> {
    const attributes = [
      attributeU32(NBD_ATTR_INDEX, request.index),
      ...(request.sizeBytes === undefined ? [] : [attributeU64(NBD_ATTR_SIZE_BYTES, request.sizeBytes)]),
      ...socketAttributes(request),
    ];
    await this.#command(NBD_CMD_RECONFIGURE, attributes, `reconnect /dev/nbd${request.index}`);
  }

  /** NBD_CMD_DISCONNECT: the kernel sends NBD_CMD_DISC and drops its sockets. */
  async disconnect(index: number): Promise<void> {
    await this.#command(
      NBD_CMD_DISCONNECT,
      [attributeU32(NBD_ATTR_INDEX, index)],
      `disconnect /dev/nbd${index}`,
    );
  }

  /** NBD_CMD_STATUS for one device: true when it is connected. */
  async isConnected(index: number): Promise<boolean> {
    const replies = await this.#command(
      NBD_CMD_STATUS,
      [attributeU32(NBD_ATTR_INDEX, index)],
      `query /dev/nbd${index}`,
    );
    for (const reply of replies) {
      const list = decodeAttributes(reply).get(NBD_ATTR_DEVICE_LIST);
      if (!list) continue;
      for (const [type, item] of listAttributes(list)) {
        if (type !== NBD_DEVICE_ITEM) continue;
        const fields = decodeAttributes(item);
        const itemIndex = fields.get(NBD_DEVICE_INDEX);
        const connected = fields.get(NBD_DEVICE_CONNECTED);
        if (!itemIndex || !connected) continue;
        if (new DataView(itemIndex.buffer, itemIndex.byteOffset).getUint32(0, true) === index) {
          return connected[0] !== 0;
        }
      }
    }
    return false;
  }

  close(): void {
    this.#netlink.close();
  }

  async #command(command: number, attributes: NetlinkAttribute[], action: string): Promise<Uint8Array[]> {
    const result = await this.#netlink.request({
      family: this.#family,
      command,
      version: NBD_GENL_VERSION,
      attributes,
    });
    if (result.errno !== 0) throw new Error(`Cannot ${action}: ${errnoText(this.#libc, result.errno)}`);
    return result.replies;
  }
}

function socketList(fds: readonly number[]): NetlinkAttribute[] {
  return fds.map((fd) => ({ type: NBD_SOCK_ITEM, value: [attributeU32(NBD_SOCK_FD, fd)] }));
}

/** What connect and reconfigure both hand the kernel: timeouts, sockets and the backend identifier. */
function socketAttributes(request: {
  timeoutSeconds: number;
  deadConnectionTimeoutSeconds: number;
  socketFds: readonly number[];
  backend?: string | undefined;
}) {
  return [
    attributeU64(NBD_ATTR_TIMEOUT, request.timeoutSeconds),
    attributeU64(NBD_ATTR_DEAD_CONN_TIMEOUT, request.deadConnectionTimeoutSeconds),
    { type: NBD_ATTR_SOCKETS, value: socketList(request.socketFds) },
    ...(request.backend === undefined ? [] : [attributeString(NBD_ATTR_BACKEND_IDENTIFIER, request.backend)]),
  ];
}
