/**
 * @module
 * Generic netlink over a raw AF_NETLINK socket: message and attribute encode/decode (pure, host
 * byte order = little-endian on every platform Deno ships for Linux) and a small request/ack
 * client that resolves a family by name through the "nlctrl" controller. Just enough for the
 * kernel's "nbd" family; see netlink(7) and genetlink.
 */

import { assert } from "../util/assert.ts";
import { AF_NETLINK, type Libc, NETLINK_GENERIC, SOCK_CLOEXEC, SOCK_RAW } from "./libc.ts";

/** An attribute: raw payload, or nested attributes. */
export interface NetlinkAttribute {
  type: number;
  value: Uint8Array | NetlinkAttribute[];
}

/** A decoded netlink message. */
export interface NetlinkMessage {
  type: number;
  flags: number;
  seq: number;
  payload: Uint8Array;
}

const NLMSG_HEADER_BYTES = 16;
const GENL_HEADER_BYTES = 4;
const NLA_HEADER_BYTES = 4;
const NLA_F_NESTED = 0x8000;
const NLA_TYPE_MASK = 0x3fff;
export const NLMSG_ERROR = 2;
export const NLMSG_DONE = 3;
export const NLM_F_REQUEST = 1;
export const NLM_F_ACK = 4;
const GENL_ID_CTRL = 0x10;
const CTRL_CMD_GETFAMILY = 3;
const CTRL_ATTR_FAMILY_ID = 1;
const CTRL_ATTR_FAMILY_NAME = 2;
const RECEIVE_BUFFER_BYTES = 64 * 1024;
/** Bound on datagrams read while waiting for one acknowledgement. */
const MAX_DATAGRAMS_PER_REQUEST = 64;
const REQUEST_TIMEOUT_MS = 30_000;

export function attributeU32(type: number, value: number): NetlinkAttribute {
  const bytes = new Uint8Array(4);
  new DataView(bytes.buffer).setUint32(0, value, true);
  return { type, value: bytes };
}

export function attributeU64(type: number, value: number | bigint): NetlinkAttribute {
  const bytes = new Uint8Array(8);
  new DataView(bytes.buffer).setBigUint64(0, BigInt(value), true);
  return { type, value: bytes };
}

export function attributeString(type: number, value: string): NetlinkAttribute {
  const text = new TextEncoder().encode(value);
  const bytes = new Uint8Array(text.length + 1);
  bytes.set(text, 0);
  return { type, value: bytes };
}

/** Encodes attributes, each padded to 4 bytes; nested ones carry NLA_F_NESTED. */
export function encodeAttributes(attributes: readonly NetlinkAttribute[]): Uint8Array {
  const parts = attributes.map((attribute) => {
    const nested = Array.isArray(attribute.value);
    const payload = Array.isArray(attribute.value) ? encodeAttributes(attribute.value) : attribute.value;
    const length = NLA_HEADER_BYTES + payload.length;
    const bytes = new Uint8Array(align4(length));
    const view = new DataView(bytes.buffer);
    view.setUint16(0, length, true);
    view.setUint16(2, attribute.type | (nested ? NLA_F_NESTED : 0), true);
    bytes.set(payload, NLA_HEADER_BYTES);
    return bytes;
  });
  return concat(parts);
}

/** Decodes one level of attributes into (type -> payload); nested payloads decode again. */
export function decodeAttributes(bytes: Uint8Array): Map<number, Uint8Array> {
  const attributes = new Map<number, Uint8Array>();
  for (const [type, payload] of listAttributes(bytes)) attributes.set(type, payload);
  return attributes;
}

/** Decodes one level of attributes in order, keeping repeated types. */
export function listAttributes(bytes: Uint8Array): Array<[number, Uint8Array]> {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const list: Array<[number, Uint8Array]> = [];
  let offset = 0;
  while (offset + NLA_HEADER_BYTES <= bytes.length) {
    const length = view.getUint16(offset, true);
    if (length < NLA_HEADER_BYTES || offset + length > bytes.length) {
      throw new Error("Cannot decode a netlink attribute: bad length");
    }
    list.push([
      view.getUint16(offset + 2, true) & NLA_TYPE_MASK,
      bytes.subarray(offset + NLA_HEADER_BYTES, offset + length),
    ]);
    offset += align4(length);
  }
  return list;
}

/** nlmsghdr + genlmsghdr + attributes. */
export function encodeGenlRequest(request: {
  family: number;
  command: number;
  version: number;
  seq: number;
  flags: number;
  attributes: readonly NetlinkAttribute[];
}): Uint8Array {
  const attributes = encodeAttributes(request.attributes);
  const bytes = new Uint8Array(NLMSG_HEADER_BYTES + GENL_HEADER_BYTES + attributes.length);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, bytes.length, true);
  view.setUint16(4, request.family, true);
  view.setUint16(6, request.flags, true);
  view.setUint32(8, request.seq, true);
  view.setUint32(12, 0, true); // port id: 0 lets the kernel fill in ours
  bytes[16] = request.command;
  bytes[17] = request.version;
  bytes.set(attributes, NLMSG_HEADER_BYTES + GENL_HEADER_BYTES);
  return bytes;
}

/** Splits a datagram into messages. */
export function decodeMessages(datagram: Uint8Array): NetlinkMessage[] {
  const view = new DataView(datagram.buffer, datagram.byteOffset, datagram.byteLength);
  const messages: NetlinkMessage[] = [];
  let offset = 0;
  while (offset + NLMSG_HEADER_BYTES <= datagram.length) {
    const length = view.getUint32(offset, true);
    if (length < NLMSG_HEADER_BYTES || offset + length > datagram.length) {
      throw new Error("Cannot decode a netlink message: bad length");
    }
    messages.push({
      type: view.getUint16(offset + 4, true),
      flags: view.getUint16(offset + 6, true),
      seq: view.getUint32(offset + 8, true),
      payload: datagram.subarray(offset + NLMSG_HEADER_BYTES, offset + length),
    });
    offset += align4(length);
  }
  return messages;
}

/** A generic netlink socket that sends one request at a time and waits for its acknowledgement. */
export class GenericNetlink {
  readonly #libc: Libc;
  readonly #fd: number;
  #seq = 1;

  constructor(libc: Libc) {
    this.#libc = libc;
    this.#fd = libc.raw.socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_GENERIC);
    if (this.#fd < 0) throw new Error(`Cannot open a generic netlink socket: ${libc.lastError()}`);
    libc.setSocketTimeouts(this.#fd, REQUEST_TIMEOUT_MS);
  }

  /** The numeric id of a generic netlink family, or undefined when the kernel does not have it. */
  async resolveFamily(name: string): Promise<number | undefined> {
    const attributes = [attributeString(CTRL_ATTR_FAMILY_NAME, name)];
    const result = await this.request({
      family: GENL_ID_CTRL,
      command: CTRL_CMD_GETFAMILY,
      version: 1,
      attributes,
    });
    if (result.errno === 2) return undefined; // ENOENT: family not registered
    this.#check(result.errno, `look up the "${name}" netlink family`);
    for (const payload of result.replies) {
      const id = decodeAttributes(payload).get(CTRL_ATTR_FAMILY_ID);
      if (id && id.length >= 2) return new DataView(id.buffer, id.byteOffset).getUint16(0, true);
    }
    throw new Error(`Cannot look up the "${name}" netlink family: no id in the reply`);
  }

  /**
   * Sends a request with NLM_F_ACK and collects the attribute payloads of every reply until the
   * acknowledgement; errno is 0 on success or the positive error the kernel returned.
   */
  async request(request: {
    family: number;
    command: number;
    version: number;
    attributes: readonly NetlinkAttribute[];
  }): Promise<{ errno: number; replies: Uint8Array[] }> {
    const seq = this.#seq++;
    const bytes = encodeGenlRequest({ ...request, seq, flags: NLM_F_REQUEST | NLM_F_ACK });
    const sent = Number(await this.#libc.raw.write_async(this.#fd, bytes, BigInt(bytes.length)));
    if (sent !== bytes.length) throw new Error("Cannot send a netlink request: write failed");
    const replies: Uint8Array[] = [];
    const buffer = new Uint8Array(RECEIVE_BUFFER_BYTES);
    for (let i = 0; i < MAX_DATAGRAMS_PER_REQUEST; i++) {
      const n = Number(await this.#libc.raw.read_async(this.#fd, buffer, BigInt(buffer.length)));
      if (n <= 0) throw new Error("Cannot read a netlink reply: the kernel did not answer in time");
      for (const message of decodeMessages(buffer.slice(0, n))) {
        if (message.seq !== seq) continue;
        if (message.type === NLMSG_ERROR) return { errno: decodeErrno(message.payload), replies };
        if (message.type === NLMSG_DONE) return { errno: 0, replies };
        replies.push(message.payload.subarray(GENL_HEADER_BYTES));
      }
    }
    throw new Error(
      `Cannot read a netlink reply: no acknowledgement in ${MAX_DATAGRAMS_PER_REQUEST} datagrams`,
    );
  }

  /** Throws "Cannot <action>: <strerror>" when errno is not 0. */
  #check(errno: number, action: string): void {
    if (errno !== 0) throw new Error(`Cannot ${action}: ${errnoText(this.#libc, errno)}`);
  }

  close(): void {
    this.#libc.close(this.#fd);
  }
}

/** strerror(errno), e.g. "Device or resource busy". */
export function errnoText(libc: Libc, errno: number): string {
  const message = libc.raw.strerror(errno);
  return message ? Deno.UnsafePointerView.getCString(message) : `errno ${errno}`;
}

function decodeErrno(payload: Uint8Array): number {
  assert(payload.length >= 4, "netlink error message without an error code");
  return -new DataView(payload.buffer, payload.byteOffset).getInt32(0, true);
}

function align4(n: number): number {
  return (n + 3) & ~3;
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((sum, p) => sum + p.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}
