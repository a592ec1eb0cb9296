/**
 * @module
 * The client side of the NBD fixed-newstyle handshake (NetworkBlockDevice/nbd doc/proto.md), run by
 * the daemon on a socket it then hands to the kernel: the kernel's NBD driver only speaks the
 * transmission phase, so someone must negotiate the export, its size and its transmission flags.
 * Uses NBD_OPT_GO (falling back to NBD_OPT_EXPORT_NAME on old servers) and never negotiates
 * structured replies, which the kernel does not understand.
 */

import {
  FLAG_FIXED_NEWSTYLE,
  FLAG_NO_ZEROES,
  IHAVEOPT,
  INFO_EXPORT,
  NBD_MAGIC as NBDMAGIC,
  OPT_ABORT,
  OPT_EXPORT_NAME,
  OPT_GO,
  OPTION_REPLY_MAGIC,
  REP_ACK,
  REP_ERR_UNSUP,
  REP_INFO,
} from "../nbd/protocol.ts";

/** A byte stream: the raw fd through libc in production, anything in tests. */
export interface HandshakeChannel {
  read(length: number, what: string): Promise<Uint8Array>;
  write(bytes: Uint8Array, what: string): Promise<void>;
}

/** What the server told us about the export. */
export interface NegotiatedExport {
  sizeBytes: number;
  /** Transmission flags (NBD_FLAG_*), passed to the kernel unchanged. */
  transmissionFlags: number;
}

// The wire constants live in one place, the server's protocol module; the kernel side reuses them.
export {
  FLAG_CAN_MULTI_CONN as NBD_FLAG_CAN_MULTI_CONN,
  FLAG_HAS_FLAGS as NBD_FLAG_HAS_FLAGS,
  FLAG_READ_ONLY as NBD_FLAG_READ_ONLY,
  FLAG_SEND_FLUSH as NBD_FLAG_SEND_FLUSH,
  FLAG_SEND_FUA as NBD_FLAG_SEND_FUA,
  FLAG_SEND_TRIM as NBD_FLAG_SEND_TRIM,
} from "../nbd/protocol.ts";

/** Error replies have the high bit set (NBD_REP_FLAG_ERROR). */
const REP_FLAG_ERROR = 0x80000000;
/** Bound on one option reply's payload: INFO replies are tiny; anything larger is garbage. */
const MAX_REPLY_BYTES = 64 * 1024;
/** Bound on replies to one option (INFO replies before the ACK). */
const MAX_REPLIES = 64;

const REPLY_ERRORS: Record<number, string> = {
  0x80000001: "unsupported option",
  0x80000002: "policy refusal",
  0x80000003: "invalid request",
  0x80000004: "platform error",
  0x80000005: "TLS required",
  0x80000006: "unknown export",
  0x80000007: "server shutting down",
  0x80000008: "block size constraints not met",
  0x80000009: "too big",
};

/** Runs the handshake and leaves the channel in the transmission phase of exportName. */
export async function negotiateExport(
  channel: HandshakeChannel,
  exportName: string,
): Promise<NegotiatedExport> {
  const greeting = new DataView((await channel.read(18, "the server greeting")).buffer);
  if (greeting.getBigUint64(0) !== NBDMAGIC || greeting.getBigUint64(8) !== IHAVEOPT) {
    throw new Error("Cannot negotiate with the NBD server: it does not speak the newstyle protocol");
  }
  const serverFlags = greeting.getUint16(16);
  if (!(serverFlags & FLAG_FIXED_NEWSTYLE)) {
    throw new Error("Cannot negotiate with the NBD server: it does not support fixed newstyle");
  }
  const noZeroes = (serverFlags & FLAG_NO_ZEROES) !== 0;
  await channel.write(u32(FLAG_FIXED_NEWSTYLE | (noZeroes ? FLAG_NO_ZEROES : 0)), "the client flags");
  const go = await optionGo(channel, exportName);
  return go ?? await optionExportName(channel, exportName, noZeroes);
}

/** NBD_OPT_GO; undefined when the server does not support it. */
async function optionGo(
  channel: HandshakeChannel,
  exportName: string,
): Promise<NegotiatedExport | undefined> {
  const name = new TextEncoder().encode(exportName);
  const payload = new Uint8Array(4 + name.length + 2);
  new DataView(payload.buffer).setUint32(0, name.length);
  payload.set(name, 4); // followed by zero information requests: the server sends NBD_INFO_EXPORT anyway
  await channel.write(encodeOption(OPT_GO, payload), "NBD_OPT_GO");
  let result: NegotiatedExport | undefined;
  for (let i = 0; i < MAX_REPLIES; i++) {
    const reply = await readOptionReply(channel, OPT_GO);
    if (reply.type === REP_ERR_UNSUP) return undefined;
    if (reply.type & REP_FLAG_ERROR) {
      const cause = REPLY_ERRORS[reply.type] ?? `error 0x${reply.type.toString(16)}`;
      const detail = reply.data.length ? ` (${new TextDecoder().decode(reply.data)})` : "";
      throw new Error(`Cannot open export "${exportName}": ${cause}${detail}`);
    }
    if (reply.type === REP_INFO) result = parseInfo(reply.data) ?? result;
    if (reply.type === REP_ACK) {
      if (!result) throw new Error(`Cannot open export "${exportName}": the server sent no size`);
      return result;
    }
  }
  throw new Error(`Cannot open export "${exportName}": more than ${MAX_REPLIES} replies to NBD_OPT_GO`);
}

/** The old NBD_OPT_EXPORT_NAME, which has no error reply: the server closes on failure. */
async function optionExportName(
  channel: HandshakeChannel,
  exportName: string,
  noZeroes: boolean,
): Promise<NegotiatedExport> {
  await channel.write(
    encodeOption(OPT_EXPORT_NAME, new TextEncoder().encode(exportName)),
    "NBD_OPT_EXPORT_NAME",
  );
  const reply = new DataView((await channel.read(10, `export "${exportName}"`)).buffer);
  if (!noZeroes) await channel.read(124, "the export padding");
  return { sizeBytes: toSafeSize(reply.getBigUint64(0)), transmissionFlags: reply.getUint16(8) };
}

/** Asks the server to end the handshake politely (used when we give up after a failure). */
export async function abortHandshake(channel: HandshakeChannel): Promise<void> {
  await channel.write(encodeOption(OPT_ABORT, new Uint8Array(0)), "NBD_OPT_ABORT");
}

/** "IHAVEOPT", option, length, payload. */
export function encodeOption(option: number, payload: Uint8Array): Uint8Array {
  const bytes = new Uint8Array(16 + payload.length);
  const view = new DataView(bytes.buffer);
  view.setBigUint64(0, IHAVEOPT);
  view.setUint32(8, option);
  view.setUint32(12, payload.length);
  bytes.set(payload, 16);
  return bytes;
}

async function readOptionReply(
  channel: HandshakeChannel,
  option: number,
): Promise<{ type: number; data: Uint8Array }> {
  const header = new DataView((await channel.read(20, "an option reply")).buffer);
  if (header.getBigUint64(0) !== OPTION_REPLY_MAGIC || header.getUint32(8) !== option) {
    throw new Error("Cannot negotiate with the NBD server: malformed option reply");
  }
  const length = header.getUint32(16);
  if (length > MAX_REPLY_BYTES) {
    throw new Error(`Cannot negotiate with the NBD server: reply of ${length} bytes`);
  }
  const data = length ? await channel.read(length, "an option reply") : new Uint8Array(0);
  return { type: header.getUint32(12), data };
}

/** NBD_INFO_EXPORT -> size and flags; other information types are ignored. */
export function parseInfo(data: Uint8Array): NegotiatedExport | undefined {
  if (data.length < 2) throw new Error("Cannot negotiate with the NBD server: empty NBD_REP_INFO");
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  if (view.getUint16(0) !== INFO_EXPORT) return undefined;
  if (data.length !== 12) throw new Error("Cannot negotiate with the NBD server: malformed NBD_INFO_EXPORT");
  return { sizeBytes: toSafeSize(view.getBigUint64(2)), transmissionFlags: view.getUint16(10) };
}

function toSafeSize(size: bigint): number {
  if (size > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new Error(`Cannot use an export of ${size} bytes: too large`);
  }
  return Number(size);
}

function u32(value: number): Uint8Array {
  const bytes = new Uint8Array(4);
  new DataView(bytes.buffer).setUint32(0, value);
  return bytes;
}
