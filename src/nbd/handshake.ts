/**
 * @module
 * Fixed newstyle negotiation: greet, read the client flags, then answer options until the client
 * picks the export (EXPORT_NAME or GO), aborts, or breaks the protocol. Errors in an option get
 * an NBD_REP_ERR_* reply and negotiation goes on; a protocol violation ends the connection.
 * There is one export; its name is configurable and the empty (default) name selects it too.
 *
 * TLS (doc/proto.md "TLS support"): without a StartTlsTransport the server is NOTLS and answers
 * STARTTLS with ERR_POLICY. With one in mode "on" (SELECTIVETLS, no TLS-only export) a client may
 * upgrade; in "require" (FORCEDTLS) every option but STARTTLS and ABORT gets ERR_TLS_REQD until it
 * has, and EXPORT_NAME, which cannot be refused, ends the connection. After the upgrade a second
 * STARTTLS is ERR_INVALID and the option state from before it is forgotten.
 */

import type { BlockDevice } from "../volume/block_device.ts";
import type { InputBuffer } from "./input_buffer.ts";
import * as p from "./protocol.ts";
import { type NbdTransport, writeAll } from "./transport.ts";
import { concatBytes } from "../util/bytes.ts";
import { SECTOR_BYTES } from "../volume/block_device.ts";
import { MIN_BLOCK_BYTES } from "./sub_sector.ts";
import type { StartTlsTransport } from "./tls.ts";

export interface ExportOptions {
  device: BlockDevice;
  exportName: string;
  description?: string | undefined;
  /** Largest READ/WRITE payload we accept; advertised as the maximum block size. */
  payloadBytesMax: number;
  /** The connection's socket when the server offers TLS (it is also the transport); else NOTLS. */
  startTls?: StartTlsTransport | undefined;
}

/** What the client and server agreed on, for the transmission phase. */
export interface Negotiated {
  structuredReplies: boolean;
  /** The client selected base:allocation, so BLOCK_STATUS is allowed. */
  baseAllocation: boolean;
  transmissionFlags: number;
}

export type HandshakeResult =
  | { kind: "transmission"; negotiated: Negotiated }
  /** violation: the client broke the protocol (worth a log line), rather than leaving or aborting. */
  | { kind: "closed"; reason: string; violation: boolean };

/** Option data larger than this is a client trying to make us buffer: hang up. */
export const OPTION_BYTES_MAX = 64 * 1024;
/** Options per connection before we hang up (a client looping forever in negotiation). */
export const OPTIONS_MAX = 256;
export const BASE_ALLOCATION_ID = 1;

interface State {
  structuredReplies: boolean;
  baseAllocation: boolean;
  noZeroes: boolean;
}

type Outcome = "continue" | "transmission" | { closed: string; violation?: boolean };

const encoder = new TextEncoder();

export function transmissionFlags(device: BlockDevice, structuredReplies: boolean): number {
  let flags = p.FLAG_HAS_FLAGS | p.FLAG_SEND_FLUSH | p.FLAG_SEND_FUA | p.FLAG_CAN_MULTI_CONN;
  flags |= device.readOnly
    ? p.FLAG_READ_ONLY
    : p.FLAG_SEND_TRIM | p.FLAG_SEND_WRITE_ZEROES | p.FLAG_SEND_FAST_ZERO;
  if (structuredReplies) flags |= p.FLAG_SEND_DF;
  return flags;
}

/** Runs the handshake over transport, reading through input (whose leftover bytes stay for later). */
export async function negotiate(
  transport: NbdTransport,
  input: InputBuffer,
  options: ExportOptions,
): Promise<HandshakeResult> {
  await writeAll(transport, p.encodeGreeting(p.FLAG_FIXED_NEWSTYLE | p.FLAG_NO_ZEROES));
  if (!await input.fill(4)) {
    return { kind: "closed", reason: "client left before sending its flags", violation: false };
  }
  const clientFlags = input.view.getUint32(input.start);
  input.consume(4);
  if ((clientFlags & ~(p.FLAG_C_FIXED_NEWSTYLE | p.FLAG_C_NO_ZEROES)) !== 0) {
    return { kind: "closed", reason: `unknown client flags 0x${clientFlags.toString(16)}`, violation: true };
  }
  const state: State = {
    structuredReplies: false,
    baseAllocation: false,
    noZeroes: (clientFlags & p.FLAG_C_NO_ZEROES) !== 0,
  };
  for (let count = 0; count < OPTIONS_MAX; count++) {
    const outcome = await nextOption(transport, input, options, state);
    if (outcome === "transmission") {
      const flags = transmissionFlags(options.device, state.structuredReplies);
      return { kind: "transmission", negotiated: { ...state, transmissionFlags: flags } };
    }
    if (outcome !== "continue") {
      return { kind: "closed", reason: outcome.closed, violation: outcome.violation ?? true };
    }
  }
  return { kind: "closed", reason: `more than ${OPTIONS_MAX} options`, violation: true };
}

async function nextOption(
  transport: NbdTransport,
  input: InputBuffer,
  options: ExportOptions,
  state: State,
): Promise<Outcome> {
  if (!await input.fill(p.OPTION_HEADER_BYTES)) {
    return { closed: "client left during negotiation", violation: false };
  }
  const header = p.decodeOptionHeader(input.take(p.OPTION_HEADER_BYTES));
  if (!header.magicOk) return { closed: "bad option magic" };
  if (header.lengthBytes > OPTION_BYTES_MAX) return { closed: `option data of ${header.lengthBytes} bytes` };
  if (!await input.fill(header.lengthBytes)) {
    return { closed: "client left during negotiation", violation: false };
  }
  const data = input.take(header.lengthBytes);
  if (header.option === p.OPT_STARTTLS && options.startTls !== undefined) {
    return await startTls(options.startTls, { transport, input, data, state });
  }
  const replies: Uint8Array[] = [];
  const reply = (replyType: number, payload?: Uint8Array) =>
    replies.push(p.encodeOptionReply(header.option, replyType, payload));
  const outcome = answerOption(header.option, data, { options, state, reply });
  if (outcome === "transmission" && header.option === p.OPT_EXPORT_NAME) {
    const flags = transmissionFlags(options.device, state.structuredReplies);
    replies.push(p.encodeExportNameReply(options.device.sizeBytes, flags, state.noZeroes));
  }
  if (replies.length > 0) await writeAll(transport, concatBytes(replies));
  return outcome;
}

/** ACKs STARTTLS and upgrades the socket; a failed TLS handshake ends the connection (no way back). */
async function startTls(
  tls: StartTlsTransport,
  message: { transport: NbdTransport; input: InputBuffer; data: Uint8Array; state: State },
): Promise<Outcome> {
  const { transport, input, data, state } = message;
  const refuse = async (replyType: number, text: string): Promise<Outcome> => {
    await writeAll(transport, p.encodeOptionReply(p.OPT_STARTTLS, replyType, encoder.encode(text)));
    return "continue";
  };
  if (data.length !== 0) return await refuse(p.REP_ERR_INVALID, "STARTTLS takes no data");
  if (tls.active) return await refuse(p.REP_ERR_INVALID, "TLS is already active");
  // Bytes after STARTTLS and before the TLS handshake would be plaintext injected into the session.
  if (input.available > 0) return { closed: "the client sent data after STARTTLS before the TLS handshake" };
  await writeAll(transport, p.encodeOptionReply(p.OPT_STARTTLS, p.REP_ACK));
  try {
    await tls.upgrade(input.interruption);
  } catch (e) {
    return { closed: `TLS handshake failed: ${e instanceof Error ? e.message : String(e)}` };
  }
  state.structuredReplies = false;
  state.baseAllocation = false;
  return "continue";
}

interface OptionContext {
  options: ExportOptions;
  state: State;
  reply: (replyType: number, payload?: Uint8Array) => void;
}

function answerOption(option: number, data: Uint8Array, ctx: OptionContext): Outcome {
  const tls = ctx.options.startTls;
  if (tls?.mode === "require" && !tls.active && option !== p.OPT_ABORT) {
    // EXPORT_NAME cannot answer an error: the spec says hang up.
    if (option === p.OPT_EXPORT_NAME) return { closed: "the client chose the export before starting TLS" };
    ctx.reply(p.REP_ERR_TLS_REQD, encoder.encode("TLS is required: send NBD_OPT_STARTTLS first"));
    return "continue";
  }
  switch (option) {
    case p.OPT_EXPORT_NAME:
      return exportName(data, ctx);
    case p.OPT_ABORT:
      ctx.reply(p.REP_ACK);
      return { closed: "client aborted negotiation", violation: false };
    case p.OPT_LIST:
      return list(data, ctx);
    case p.OPT_STARTTLS:
      ctx.reply(p.REP_ERR_POLICY, encoder.encode("TLS is not supported by this server"));
      return "continue";
    case p.OPT_INFO:
    case p.OPT_GO:
      return info(option === p.OPT_GO, data, ctx);
    case p.OPT_STRUCTURED_REPLY:
      if (data.length !== 0) return invalid(ctx, "STRUCTURED_REPLY takes no data");
      ctx.state.structuredReplies = true;
      ctx.reply(p.REP_ACK);
      return "continue";
    case p.OPT_LIST_META_CONTEXT:
    case p.OPT_SET_META_CONTEXT:
      return metaContext(option === p.OPT_SET_META_CONTEXT, data, ctx);
    default:
      ctx.reply(p.REP_ERR_UNSUP, encoder.encode(`option ${option} is not supported`));
      return "continue";
  }
}

function invalid(ctx: OptionContext, message: string): Outcome {
  ctx.reply(p.REP_ERR_INVALID, encoder.encode(message));
  return "continue";
}

function selects(name: string, options: ExportOptions): boolean {
  return name === "" || name === options.exportName;
}

function exportName(data: Uint8Array, ctx: OptionContext): Outcome {
  let name: string;
  try {
    name = new TextDecoder("utf-8", { fatal: true }).decode(data);
  } catch {
    return { closed: "export name is not UTF-8" };
  }
  // EXPORT_NAME cannot answer an error: the spec says hang up.
  return selects(name, ctx.options) ? "transmission" : { closed: `unknown export "${name.slice(0, 256)}"` };
}

function list(data: Uint8Array, ctx: OptionContext): Outcome {
  if (data.length !== 0) return invalid(ctx, "LIST takes no data");
  ctx.reply(p.REP_SERVER, p.encodeRepServer(ctx.options.exportName, ctx.options.description ?? ""));
  ctx.reply(p.REP_ACK);
  return "continue";
}

function info(go: boolean, data: Uint8Array, ctx: OptionContext): Outcome {
  const request = p.decodeInfoRequest(data);
  if (request === null) return invalid(ctx, "malformed INFO/GO request");
  const { options, state } = ctx;
  if (!selects(request.exportName, options)) {
    ctx.reply(p.REP_ERR_UNKNOWN, encoder.encode(`unknown export "${request.exportName.slice(0, 256)}"`));
    return "continue";
  }
  const flags = transmissionFlags(options.device, state.structuredReplies);
  ctx.reply(p.REP_INFO, p.encodeInfoExport(options.device.sizeBytes, flags));
  if (request.infoTypes.includes(p.INFO_NAME)) {
    ctx.reply(p.REP_INFO, p.encodeInfoString(p.INFO_NAME, options.exportName));
  }
  if (request.infoTypes.includes(p.INFO_DESCRIPTION) && options.description !== undefined) {
    ctx.reply(p.REP_INFO, p.encodeInfoString(p.INFO_DESCRIPTION, options.description));
  }
  // Sent even unasked. 512-byte requests work (read-modify-write of the 4 KiB sector), 4 KiB is faster.
  ctx.reply(p.REP_INFO, p.encodeInfoBlockSize(MIN_BLOCK_BYTES, SECTOR_BYTES, options.payloadBytesMax));
  ctx.reply(p.REP_ACK);
  return go ? "transmission" : "continue";
}

/** Whether a query names base:allocation; LIST also accepts the bare namespace `base:`. */
function matchesBaseAllocation(query: string, listing: boolean): boolean {
  return query === p.META_BASE_ALLOCATION || (listing && query === "base:");
}

function metaContext(set: boolean, data: Uint8Array, ctx: OptionContext): Outcome {
  const { options, state } = ctx;
  if (!state.structuredReplies) return invalid(ctx, "negotiate STRUCTURED_REPLY first");
  const request = p.decodeMetaContextRequest(data);
  if (request === null) return invalid(ctx, "malformed META_CONTEXT request");
  if (!selects(request.exportName, options)) {
    ctx.reply(p.REP_ERR_UNKNOWN, encoder.encode(`unknown export "${request.exportName.slice(0, 256)}"`));
    return "continue";
  }
  const matched = set
    ? request.queries.some((q) => matchesBaseAllocation(q, false))
    : request.queries.length === 0 || request.queries.some((q) => matchesBaseAllocation(q, true));
  if (set) state.baseAllocation = matched;
  if (matched) {
    ctx.reply(
      p.REP_META_CONTEXT,
      p.encodeRepMetaContext(set ? BASE_ALLOCATION_ID : 0, p.META_BASE_ALLOCATION),
    );
  }
  ctx.reply(p.REP_ACK);
  return "continue";
}
