/**
 * @module
 * The NBD wire protocol (NetworkBlockDevice/nbd doc/proto.md): constants and pure encode/decode
 * on Uint8Array/DataView, no I/O. Fixed-size messages are written into a caller's buffer at an
 * offset, so the hot path encodes replies without allocating.
 * All integers are big-endian. 64-bit handles travel as two u32 halves (no BigInt on the hot path);
 * 64-bit offsets are decoded to numbers, exact below 2^53, which covers every possible export.
 */

import { getU64, setU64 } from "../util/bytes.ts";

/** The u64 codec lives in src/util/bytes.ts, shared with the bucket format. */
export { getU64, setU64 };

// Handshake.
export const NBD_MAGIC = 0x4e42444d41474943n; // "NBDMAGIC"
export const IHAVEOPT = 0x49484156454f5054n; // "IHAVEOPT"
export const OPTION_REPLY_MAGIC = 0x3e889045565a9n;
export const FLAG_FIXED_NEWSTYLE = 1 << 0;
export const FLAG_NO_ZEROES = 1 << 1;
export const FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const FLAG_C_NO_ZEROES = 1 << 1;

// Options.
export const OPT_EXPORT_NAME = 1;
export const OPT_ABORT = 2;
export const OPT_LIST = 3;
export const OPT_STARTTLS = 5;
export const OPT_INFO = 6;
export const OPT_GO = 7;
export const OPT_STRUCTURED_REPLY = 8;
export const OPT_LIST_META_CONTEXT = 9;
export const OPT_SET_META_CONTEXT = 10;

// Option replies.
export const REP_ACK = 1;
export const REP_SERVER = 2;
export const REP_INFO = 3;
export const REP_META_CONTEXT = 4;
export const REP_ERR_UNSUP = 0x80000001;
export const REP_ERR_POLICY = 0x80000002;
export const REP_ERR_INVALID = 0x80000003;
export const REP_ERR_PLATFORM = 0x80000004;
export const REP_ERR_TLS_REQD = 0x80000005;
export const REP_ERR_UNKNOWN = 0x80000006;
export const REP_ERR_SHUTDOWN = 0x80000007;
export const REP_ERR_BLOCK_SIZE_REQD = 0x80000008;
export const REP_ERR_TOO_BIG = 0x80000009;

// NBD_REP_INFO payload types.
export const INFO_EXPORT = 0;
export const INFO_NAME = 1;
export const INFO_DESCRIPTION = 2;
export const INFO_BLOCK_SIZE = 3;

// Transmission flags.
export const FLAG_HAS_FLAGS = 1 << 0;
export const FLAG_READ_ONLY = 1 << 1;
export const FLAG_SEND_FLUSH = 1 << 2;
export const FLAG_SEND_FUA = 1 << 3;
export const FLAG_ROTATIONAL = 1 << 4;
export const FLAG_SEND_TRIM = 1 << 5;
export const FLAG_SEND_WRITE_ZEROES = 1 << 6;
export const FLAG_SEND_DF = 1 << 7;
export const FLAG_CAN_MULTI_CONN = 1 << 8;
export const FLAG_SEND_CACHE = 1 << 10;
export const FLAG_SEND_FAST_ZERO = 1 << 11;

// Requests.
export const REQUEST_MAGIC = 0x25609513;
export const REQUEST_HEADER_BYTES = 28;
export const CMD_READ = 0;
export const CMD_WRITE = 1;
export const CMD_DISC = 2;
export const CMD_FLUSH = 3;
export const CMD_TRIM = 4;
export const CMD_CACHE = 5;
export const CMD_WRITE_ZEROES = 6;
export const CMD_BLOCK_STATUS = 7;
export const CMD_FLAG_FUA = 1 << 0;
export const CMD_FLAG_NO_HOLE = 1 << 1;
export const CMD_FLAG_DF = 1 << 2;
export const CMD_FLAG_REQ_ONE = 1 << 3;
export const CMD_FLAG_FAST_ZERO = 1 << 4;

// Replies.
export const SIMPLE_REPLY_MAGIC = 0x67446698;
export const SIMPLE_REPLY_HEADER_BYTES = 16;
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;
export const STRUCTURED_REPLY_HEADER_BYTES = 20;
export const REPLY_FLAG_DONE = 1 << 0;
export const REPLY_TYPE_NONE = 0;
export const REPLY_TYPE_OFFSET_DATA = 1;
export const REPLY_TYPE_OFFSET_HOLE = 2;
export const REPLY_TYPE_BLOCK_STATUS = 5;
export const REPLY_TYPE_ERROR = 0x8001;
export const REPLY_TYPE_ERROR_OFFSET = 0x8002;
/** Structured header plus the 8-byte offset that opens an OFFSET_DATA payload. */
export const OFFSET_DATA_HEADER_BYTES = STRUCTURED_REPLY_HEADER_BYTES + 8;

// Metadata contexts.
export const META_BASE_ALLOCATION = "base:allocation";
export const STATE_HOLE = 1 << 0;
export const STATE_ZERO = 1 << 1;

// Error values (the only ones the protocol allows).
export const EPERM = 1;
export const EIO = 5;
export const ENOMEM = 12;
export const EINVAL = 22;
export const ENOSPC = 28;
export const EOVERFLOW = 75;
export const ENOTSUP = 95;
export const ESHUTDOWN = 108;

/** Longest string (export name, query, message) the protocol allows. */
export const STRING_BYTES_MAX = 4096;

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

function viewOf(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

// ---------------------------------------------------------------- handshake

/** S: NBDMAGIC, IHAVEOPT, 16-bit handshake flags. */
export function encodeGreeting(handshakeFlags: number): Uint8Array {
  const out = new Uint8Array(18);
  const view = viewOf(out);
  view.setBigUint64(0, NBD_MAGIC);
  view.setBigUint64(8, IHAVEOPT);
  view.setUint16(16, handshakeFlags);
  return out;
}

export const OPTION_HEADER_BYTES = 16;

export interface OptionHeader {
  magicOk: boolean;
  option: number;
  lengthBytes: number;
}

/** C: IHAVEOPT, 32-bit option, 32-bit data length. */
export function decodeOptionHeader(bytes: Uint8Array): OptionHeader {
  const view = viewOf(bytes);
  return {
    magicOk: view.getBigUint64(0) === IHAVEOPT,
    option: view.getUint32(8),
    lengthBytes: view.getUint32(12),
  };
}

export function encodeOptionHeader(option: number, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(OPTION_HEADER_BYTES + data.length);
  const view = viewOf(out);
  view.setBigUint64(0, IHAVEOPT);
  view.setUint32(8, option);
  view.setUint32(12, data.length);
  out.set(data, OPTION_HEADER_BYTES);
  return out;
}

/** S: reply magic, option, reply type, length, data. */
export function encodeOptionReply(option: number, replyType: number, data?: Uint8Array): Uint8Array {
  const payload = data ?? new Uint8Array(0);
  const out = new Uint8Array(20 + payload.length);
  const view = viewOf(out);
  view.setBigUint64(0, OPTION_REPLY_MAGIC);
  view.setUint32(8, option);
  view.setUint32(12, replyType);
  view.setUint32(16, payload.length);
  out.set(payload, 20);
  return out;
}

export interface OptionReply {
  option: number;
  replyType: number;
  data: Uint8Array;
}

/** The inverse of encodeOptionReply, for tests and clients; null when the magic is wrong. */
export function decodeOptionReply(bytes: Uint8Array): OptionReply | null {
  const view = viewOf(bytes);
  if (bytes.length < 20 || view.getBigUint64(0) !== OPTION_REPLY_MAGIC) return null;
  const length = view.getUint32(16);
  return { option: view.getUint32(8), replyType: view.getUint32(12), data: bytes.subarray(20, 20 + length) };
}

/** The reply to NBD_OPT_EXPORT_NAME: size, transmission flags, 124 zeroes unless NO_ZEROES. */
export function encodeExportNameReply(
  sizeBytes: number,
  transmissionFlags: number,
  noZeroes: boolean,
): Uint8Array {
  const out = new Uint8Array(noZeroes ? 10 : 134);
  const view = viewOf(out);
  setU64(view, 0, sizeBytes);
  view.setUint16(8, transmissionFlags);
  return out;
}

/** NBD_REP_SERVER data: u32 name length, name, optional description. */
export function encodeRepServer(name: string, description = ""): Uint8Array {
  const nameBytes = encoder.encode(name);
  const descriptionBytes = encoder.encode(description);
  const out = new Uint8Array(4 + nameBytes.length + descriptionBytes.length);
  viewOf(out).setUint32(0, nameBytes.length);
  out.set(nameBytes, 4);
  out.set(descriptionBytes, 4 + nameBytes.length);
  return out;
}

export function encodeInfoExport(sizeBytes: number, transmissionFlags: number): Uint8Array {
  const out = new Uint8Array(12);
  const view = viewOf(out);
  view.setUint16(0, INFO_EXPORT);
  setU64(view, 2, sizeBytes);
  view.setUint16(10, transmissionFlags);
  return out;
}

export function encodeInfoString(infoType: number, text: string): Uint8Array {
  const bytes = encoder.encode(text);
  const out = new Uint8Array(2 + bytes.length);
  viewOf(out).setUint16(0, infoType);
  out.set(bytes, 2);
  return out;
}

export function encodeInfoBlockSize(
  minimumBytes: number,
  preferredBytes: number,
  maximumBytes: number,
): Uint8Array {
  const out = new Uint8Array(14);
  const view = viewOf(out);
  view.setUint16(0, INFO_BLOCK_SIZE);
  view.setUint32(2, minimumBytes);
  view.setUint32(6, preferredBytes);
  view.setUint32(10, maximumBytes);
  return out;
}

export function encodeRepMetaContext(contextId: number, name: string): Uint8Array {
  const bytes = encoder.encode(name);
  const out = new Uint8Array(4 + bytes.length);
  viewOf(out).setUint32(0, contextId);
  out.set(bytes, 4);
  return out;
}

/** A string from a length-prefixed field; null when it overruns, is too long or is not UTF-8. */
function readString(bytes: Uint8Array, offset: number, lengthBytes: number): string | null {
  if (lengthBytes > STRING_BYTES_MAX || offset + lengthBytes > bytes.length) return null;
  try {
    return decoder.decode(bytes.subarray(offset, offset + lengthBytes));
  } catch {
    return null;
  }
}

export interface InfoRequest {
  exportName: string;
  infoTypes: number[];
}

/** NBD_OPT_INFO / NBD_OPT_GO data: u32 name length, name, u16 count, count × u16; null if malformed. */
export function decodeInfoRequest(data: Uint8Array): InfoRequest | null {
  if (data.length < 6) return null;
  const view = viewOf(data);
  const nameBytes = view.getUint32(0);
  const exportName = readString(data, 4, nameBytes);
  if (exportName === null || data.length < 6 + nameBytes) return null;
  const count = view.getUint16(4 + nameBytes);
  if (data.length !== 6 + nameBytes + 2 * count) return null;
  const infoTypes: number[] = [];
  for (let i = 0; i < count; i++) infoTypes.push(view.getUint16(6 + nameBytes + 2 * i));
  return { exportName, infoTypes };
}

export function encodeInfoRequest(request: InfoRequest): Uint8Array {
  const name = encoder.encode(request.exportName);
  const out = new Uint8Array(6 + name.length + 2 * request.infoTypes.length);
  const view = viewOf(out);
  view.setUint32(0, name.length);
  out.set(name, 4);
  view.setUint16(4 + name.length, request.infoTypes.length);
  request.infoTypes.forEach((t, i) => view.setUint16(6 + name.length + 2 * i, t));
  return out;
}

export interface MetaContextRequest {
  exportName: string;
  queries: string[];
}

/** LIST/SET_META_CONTEXT data: u32 name length, name, u32 count, count × (u32 length, query). */
export function decodeMetaContextRequest(data: Uint8Array): MetaContextRequest | null {
  if (data.length < 8) return null;
  const view = viewOf(data);
  const nameBytes = view.getUint32(0);
  const exportName = readString(data, 4, nameBytes);
  if (exportName === null || data.length < 8 + nameBytes) return null;
  const count = view.getUint32(4 + nameBytes);
  const queries: string[] = [];
  let offset = 8 + nameBytes;
  for (let i = 0; i < count; i++) {
    if (offset + 4 > data.length) return null;
    const length = view.getUint32(offset);
    const query = readString(data, offset + 4, length);
    if (query === null) return null;
    queries.push(query);
    offset += 4 + length;
  }
  return offset === data.length ? { exportName, queries } : null;
}

export function encodeMetaContextRequest(request: MetaContextRequest): Uint8Array {
  const parts = [encoder.encode(request.exportName), ...request.queries.map((q) => encoder.encode(q))];
  const out = new Uint8Array(8 + parts.reduce((n, p) => n + p.length, 0) + 4 * request.queries.length);
  const view = viewOf(out);
  let offset = 0;
  parts.forEach((part, i) => {
    view.setUint32(offset, part.length);
    out.set(part, offset + 4);
    offset += 4 + part.length;
    if (i === 0) {
      view.setUint32(offset, request.queries.length);
      offset += 4;
    }
  });
  return out;
}

// ---------------------------------------------------------------- transmission

/** One decoded request header; the handle stays opaque as two u32 halves. */
export interface Request {
  magicOk: boolean;
  flags: number;
  command: number;
  handleHigh: number;
  handleLow: number;
  offsetBytes: number;
  lengthBytes: number;
}

export function decodeRequest(view: DataView, offset: number): Request {
  return {
    magicOk: view.getUint32(offset) === REQUEST_MAGIC,
    flags: view.getUint16(offset + 4),
    command: view.getUint16(offset + 6),
    handleHigh: view.getUint32(offset + 8),
    handleLow: view.getUint32(offset + 12),
    offsetBytes: getU64(view, offset + 16),
    lengthBytes: view.getUint32(offset + 24),
  };
}

export function encodeRequest(view: DataView, offset: number, request: Omit<Request, "magicOk">): void {
  view.setUint32(offset, REQUEST_MAGIC);
  view.setUint16(offset + 4, request.flags);
  view.setUint16(offset + 6, request.command);
  view.setUint32(offset + 8, request.handleHigh);
  view.setUint32(offset + 12, request.handleLow);
  setU64(view, offset + 16, request.offsetBytes);
  view.setUint32(offset + 24, request.lengthBytes);
}

/** S: simple reply magic, error, handle (16 bytes; READ data follows when error is 0). */
export function encodeSimpleReply(
  view: DataView,
  offset: number,
  handleHigh: number,
  handleLow: number,
  error: number,
): void {
  view.setUint32(offset, SIMPLE_REPLY_MAGIC);
  view.setUint32(offset + 4, error);
  view.setUint32(offset + 8, handleHigh);
  view.setUint32(offset + 12, handleLow);
}

export interface ChunkHeader {
  flags: number;
  replyType: number;
  handleHigh: number;
  handleLow: number;
  lengthBytes: number;
}

/** S: structured magic, flags, type, handle, payload length (20 bytes). */
export function encodeChunkHeader(view: DataView, offset: number, chunk: ChunkHeader): void {
  view.setUint32(offset, STRUCTURED_REPLY_MAGIC);
  view.setUint16(offset + 4, chunk.flags);
  view.setUint16(offset + 6, chunk.replyType);
  view.setUint32(offset + 8, chunk.handleHigh);
  view.setUint32(offset + 12, chunk.handleLow);
  view.setUint32(offset + 16, chunk.lengthBytes);
}

export interface DecodedReply {
  structured: boolean;
  /** Simple replies: the error field. Structured: 0 (errors are in ERROR chunk payloads). */
  error: number;
  flags: number;
  replyType: number;
  handleHigh: number;
  handleLow: number;
  /** Structured payload length; 0 for simple replies (READ data length is known only to the client). */
  lengthBytes: number;
  headerBytes: number;
}

/** Decodes a simple reply or structured chunk header; null on an unknown magic. For tests and clients. */
export function decodeReplyHeader(view: DataView, offset: number): DecodedReply | null {
  const magic = view.getUint32(offset);
  if (magic === SIMPLE_REPLY_MAGIC) {
    return {
      structured: false,
      error: view.getUint32(offset + 4),
      flags: 0,
      replyType: 0,
      handleHigh: view.getUint32(offset + 8),
      handleLow: view.getUint32(offset + 12),
      lengthBytes: 0,
      headerBytes: SIMPLE_REPLY_HEADER_BYTES,
    };
  }
  if (magic !== STRUCTURED_REPLY_MAGIC) return null;
  return {
    structured: true,
    error: 0,
    flags: view.getUint16(offset + 4),
    replyType: view.getUint16(offset + 6),
    handleHigh: view.getUint32(offset + 8),
    handleLow: view.getUint32(offset + 12),
    lengthBytes: view.getUint32(offset + 16),
    headerBytes: STRUCTURED_REPLY_HEADER_BYTES,
  };
}

/** Bytes an ERROR chunk takes for a message (header included); the message is cut to fit u16. */
export function errorChunkBytes(message: Uint8Array): number {
  return STRUCTURED_REPLY_HEADER_BYTES + 6 + Math.min(message.length, STRING_BYTES_MAX);
}

/** A final NBD_REPLY_TYPE_ERROR chunk: errno, message length, message. */
export function encodeErrorChunk(
  bytes: Uint8Array,
  view: DataView,
  offset: number,
  reply: { handleHigh: number; handleLow: number; error: number; message: Uint8Array },
): void {
  const message = reply.message.subarray(0, STRING_BYTES_MAX);
  encodeChunkHeader(view, offset, {
    flags: REPLY_FLAG_DONE,
    replyType: REPLY_TYPE_ERROR,
    handleHigh: reply.handleHigh,
    handleLow: reply.handleLow,
    lengthBytes: 6 + message.length,
  });
  view.setUint32(offset + STRUCTURED_REPLY_HEADER_BYTES, reply.error);
  view.setUint16(offset + STRUCTURED_REPLY_HEADER_BYTES + 4, message.length);
  bytes.set(message, offset + STRUCTURED_REPLY_HEADER_BYTES + 6);
}

/** Bytes a BLOCK_STATUS chunk with n descriptors takes, header included. */
export function blockStatusChunkBytes(descriptors: number): number {
  return STRUCTURED_REPLY_HEADER_BYTES + 4 + 8 * descriptors;
}

/** Encodes a final BLOCK_STATUS chunk header and context id; descriptors follow via encodeDescriptor. */
export function encodeBlockStatusHeader(
  view: DataView,
  offset: number,
  reply: { handleHigh: number; handleLow: number; contextId: number; descriptors: number },
): void {
  encodeChunkHeader(view, offset, {
    flags: REPLY_FLAG_DONE,
    replyType: REPLY_TYPE_BLOCK_STATUS,
    handleHigh: reply.handleHigh,
    handleLow: reply.handleLow,
    lengthBytes: 4 + 8 * reply.descriptors,
  });
  view.setUint32(offset + STRUCTURED_REPLY_HEADER_BYTES, reply.contextId);
}

/** Descriptor i (length, status flags) of a BLOCK_STATUS chunk that starts at chunkOffset. */
export function encodeDescriptor(
  view: DataView,
  chunkOffset: number,
  index: number,
  descriptor: { lengthBytes: number; status: number },
): void {
  const at = chunkOffset + STRUCTURED_REPLY_HEADER_BYTES + 4 + 8 * index;
  view.setUint32(at, descriptor.lengthBytes);
  view.setUint32(at + 4, descriptor.status);
}

/** The header of a final OFFSET_DATA chunk carrying lengthBytes of data read at offsetBytes. */
export function encodeOffsetDataHeader(
  view: DataView,
  offset: number,
  reply: { handleHigh: number; handleLow: number; offsetBytes: number; lengthBytes: number },
): void {
  encodeChunkHeader(view, offset, {
    flags: REPLY_FLAG_DONE,
    replyType: REPLY_TYPE_OFFSET_DATA,
    handleHigh: reply.handleHigh,
    handleLow: reply.handleLow,
    lengthBytes: 8 + reply.lengthBytes,
  });
  setU64(view, offset + STRUCTURED_REPLY_HEADER_BYTES, reply.offsetBytes);
}
