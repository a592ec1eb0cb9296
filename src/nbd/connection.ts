/**
 * @module
 * The transmission phase of one NBD connection: parse every complete request in the input buffer,
 * validate it at the edge (range, alignment, flags, read-only), start it on the device, and reply
 * as each completes, out of order. Bounded: past requestsInFlightMax requests or inFlightBytesMax
 * payload/reply bytes the loop stops reading the socket until replies drain.
 * Three channels for trouble: a failed command gets an errno reply and the connection goes on; a
 * protocol violation ends this connection; an AssertionError from below is rethrown (crash).
 * A daemon that lost the volume to another writer (an error of kind "fenced") answers nothing more:
 * the connection closes at once, so a kernel client re-sends its requests to the daemon that took
 * over instead of failing them with EIO.
 */

import { assert, assertFail } from "../util/assert.ts";
import {
  type AllocationExtent,
  type BlockDevice,
  SECTOR_BYTES,
  type WriteOptions,
} from "../volume/block_device.ts";
import { BufferPool } from "./buffer_pool.ts";
import { nbdErrno } from "./errors.ts";
import { isLsvdError } from "../util/errors.ts";
import { closeQuietly } from "./transport.ts";
import { MIN_BLOCK_BYTES } from "./sub_sector.ts";
import type { NbdCounters } from "./nbd_metrics.ts";
import { BASE_ALLOCATION_ID, type Negotiated } from "./handshake.ts";
import type { InputBuffer } from "./input_buffer.ts";
import * as p from "./protocol.ts";
import { ReplyWriter } from "./reply_writer.ts";
import type { NbdTransport } from "./transport.ts";

export interface ConnectionLimits {
  requestsInFlightMax: number;
  inFlightBytesMax: number;
  /** Largest READ/WRITE length; a larger WRITE ends the connection (its payload cannot be skipped). */
  payloadBytesMax: number;
  /**
   * What the socket is read into (input_buffer.ts): resident once a stream of WRITEs has cycled
   * through it; it grows for a larger message and shrinks back once emptied.
   */
  inputBufferBytes: number;
}

/** Why the transmission phase ended. */
export type EndReason = "disconnect" | "eof" | "stopped" | { violation: string };

/** READ replies up to this size are copied into the batched stage; larger ones are written as is. */
const COPY_REPLY_BYTES_MAX = 64 * 1024;
/** Descriptors per BLOCK_STATUS reply (the spec lets a server return fewer than the range needs). */
const DESCRIPTORS_MAX = 8192;
const IDLE_READ_BUFFERS_BYTES_MAX = 16 * 1024 * 1024;

const encoder = new TextEncoder();
const MESSAGES = {
  command: encoder.encode("unknown command"),
  flags: encoder.encode("flags not valid for this command"),
  readOnly: encoder.encode("the export is read-only"),
  zeroLength: encoder.encode("zero-length request"),
  alignment: encoder.encode(`offset and length must be multiples of ${MIN_BLOCK_BYTES}`),
  range: encoder.encode("request lies beyond the end of the export"),
  tooLarge: encoder.encode("request exceeds the maximum block size"),
  flushArgs: encoder.encode("FLUSH takes zero offset and length"),
  noContext: encoder.encode("no metadata context was negotiated"),
  shutdown: encoder.encode("the server is shutting down"),
};

const WRITE_COMMANDS = new Set([p.CMD_WRITE, p.CMD_TRIM, p.CMD_WRITE_ZEROES]);
/** The options of a FUA write (a plain write passes none: one object fewer per request). */
const FUA: WriteOptions = Object.freeze({ fua: true });

export class Connection {
  #device: BlockDevice;
  #input: InputBuffer;
  #writer: ReplyWriter;
  #negotiated: Negotiated;
  #limits: ConnectionLimits;
  #counters: NbdCounters | undefined;
  #pool = new BufferPool(IDLE_READ_BUFFERS_BYTES_MAX);
  #requestsInFlight = 0;
  #requestsStarted = 0;
  #inFlightBytes = 0;
  #stopping = false;
  /** Stopping without answering what is still buffered (a hand-over, or fenced). */
  #quiet = false;
  #transport: NbdTransport;
  #wake: (() => void) | undefined;

  constructor(
    transport: NbdTransport,
    input: InputBuffer,
    options: {
      device: BlockDevice;
      negotiated: Negotiated;
      limits: ConnectionLimits;
      counters?: NbdCounters;
    },
  ) {
    this.#counters = options.counters;
    this.#device = options.device;
    this.#input = input;
    this.#negotiated = options.negotiated;
    this.#limits = options.limits;
    this.#transport = transport;
    this.#writer = new ReplyWriter(transport, () => this.#progress());
  }

  /**
   * Stop taking requests; call after interrupting the input. Buffered requests get ESHUTDOWN, or,
   * quiet, no answer at all (a kernel client re-sends them to the next daemon); in-flight ones finish.
   */
  stop(options: { quiet?: boolean } = {}): void {
    this.#stopping = true;
    if (options.quiet) this.#quiet = true;
    this.#progress();
  }

  /** Requests started on the device so far. */
  get requestsStarted(): number {
    return this.#requestsStarted;
  }

  /** Serves requests until the client disconnects or breaks the protocol, or stop(); then drains. */
  async run(): Promise<EndReason> {
    const reason = await this.#readLoop().catch((e) => {
      // #abandon() closed the socket under a pending read.
      if (this.#quiet && e instanceof Deno.errors.BadResource) return "stopped" as const;
      throw e;
    });
    await this.#drained(0);
    await this.#writer.idle();
    return reason;
  }

  async #readLoop(): Promise<EndReason> {
    const input = this.#input;
    for (;;) {
      if (this.#writer.failed) return "eof";
      if (this.#quiet) return "stopped";
      if (input.available < p.REQUEST_HEADER_BYTES) {
        if (this.#stopping) return "stopped";
        if (!await input.fill(p.REQUEST_HEADER_BYTES)) return this.#stopping ? "stopped" : "eof";
        continue;
      }
      const request = p.decodeRequest(input.view, input.start);
      if (!request.magicOk) return { violation: "bad request magic" };
      const payloadBytes = request.command === p.CMD_WRITE ? request.lengthBytes : 0;
      if (payloadBytes > this.#limits.payloadBytesMax) {
        return { violation: `WRITE of ${payloadBytes} bytes exceeds the maximum block size` };
      }
      const messageBytes = p.REQUEST_HEADER_BYTES + payloadBytes;
      if (input.available < messageBytes) {
        if (this.#stopping) return "stopped";
        if (!await input.fill(messageBytes)) return this.#stopping ? "stopped" : "eof";
        continue;
      }
      if (this.#overLimit() && !this.#stopping) {
        await this.#drained(this.#limits.requestsInFlightMax - 1);
        continue;
      }
      if (request.command === p.CMD_DISC) return "disconnect";
      const payloadStart = input.start + p.REQUEST_HEADER_BYTES;
      this.#dispatch(request, input.bytes.subarray(payloadStart, payloadStart + payloadBytes));
      input.consume(messageBytes);
    }
  }

  #overLimit(): boolean {
    return this.#requestsInFlight >= this.#limits.requestsInFlightMax ||
      this.#inFlightBytes + this.#writer.pendingBytes >= this.#limits.inFlightBytesMax;
  }

  /** Waits until at most requestsMax requests are in flight and the byte budget has room. */
  async #drained(requestsMax: number): Promise<void> {
    while (
      !this.#writer.failed &&
      (this.#requestsInFlight > requestsMax ||
        (requestsMax > 0 && this.#inFlightBytes + this.#writer.pendingBytes >= this.#limits.inFlightBytesMax))
    ) {
      if (requestsMax > 0 && this.#stopping) return;
      await new Promise<void>((resolve) => this.#wake = resolve);
    }
  }

  #progress(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  #dispatch(request: p.Request, payload: Uint8Array): void {
    if (this.#quiet) return;
    if (this.#stopping) return this.#replyError(request, p.ESHUTDOWN, MESSAGES.shutdown);
    const refusal = this.#validate(request);
    if (refusal !== undefined) return this.#replyError(request, refusal.error, refusal.message);
    const bytes = request.command === p.CMD_READ || request.command === p.CMD_WRITE ? request.lengthBytes : 0;
    this.#counters?.request(request.command, request.lengthBytes);
    this.#requestsInFlight++;
    this.#requestsStarted++;
    this.#inFlightBytes += bytes;
    let done: Promise<void> | undefined;
    try {
      done = this.#start(request, payload);
    } catch (e) {
      done = Promise.reject(e); // a device method that throws instead of rejecting
    }
    if (done === undefined) return this.#finished(bytes); // answered at once, reply queued
    done.then(
      () => this.#finished(bytes),
      (e) => {
        this.#finished(bytes);
        if (isLsvdError(e, "fenced")) return this.#abandon();
        this.#replyError(request, nbdErrno(e), encoder.encode(e instanceof Error ? e.message : String(e)));
      },
    );
  }

  /** Another writer owns the volume now: answer nothing more (not even errors) and close. */
  #abandon(): void {
    this.#quiet = true;
    this.#stopping = true;
    closeQuietly(this.#transport);
    this.#progress();
  }

  #finished(bytes: number): void {
    this.#requestsInFlight--;
    this.#inFlightBytes -= bytes;
    this.#progress();
  }

  /**
   * Starts the command; resolves once its reply is queued, rejects with the device's error;
   * undefined when the reply is queued already (a read or write answered at once).
   */
  #start(request: p.Request, payload: Uint8Array): Promise<void> | undefined {
    const device = this.#device;
    const fua = (request.flags & p.CMD_FLAG_FUA) !== 0;
    switch (request.command) {
      case p.CMD_READ:
        return this.#read(request);
      case p.CMD_WRITE:
        return this.#write(request, payload, fua);
      case p.CMD_FLUSH:
        return this.#then(device.flush(), request);
      case p.CMD_TRIM:
        return this.#then(device.trim(request.offsetBytes, request.lengthBytes, { fua }), request);
      case p.CMD_WRITE_ZEROES:
        // FAST_ZERO and NO_HOLE need nothing special: zeroing is O(1) and never slower than a write.
        return this.#then(device.writeZeroes(request.offsetBytes, request.lengthBytes, { fua }), request);
      case p.CMD_BLOCK_STATUS:
        return Promise.resolve().then(() => this.#blockStatus(request));
      default:
        assertFail(`command ${request.command} passed validation`);
    }
  }

  /** Writes and queues the reply: at once when the device took the write at once (startWrite). */
  #write(request: p.Request, payload: Uint8Array, fua: boolean): Promise<void> | undefined {
    const device = this.#device;
    const options = fua ? FUA : undefined;
    const pending = device.startWrite !== undefined
      ? device.startWrite(request.offsetBytes, payload, options)
      : device.write(request.offsetBytes, payload, options);
    if (pending !== undefined) return this.#then(pending, request);
    this.#replyOk(request);
    return undefined;
  }

  async #then(operation: Promise<void>, request: p.Request): Promise<void> {
    await operation;
    this.#replyOk(request);
  }

  /** The refusal for an invalid request, or undefined when the device may run it. */
  #validate(request: p.Request): { error: number; message: Uint8Array } | undefined {
    const { command, flags, offsetBytes, lengthBytes } = request;
    const allowed = allowedFlags(command, this.#negotiated.structuredReplies);
    if (allowed === undefined) return { error: p.EINVAL, message: MESSAGES.command };
    if ((flags & ~allowed) !== 0) return { error: p.EINVAL, message: MESSAGES.flags };
    if (WRITE_COMMANDS.has(command) && this.#device.readOnly) {
      return { error: p.EPERM, message: MESSAGES.readOnly };
    }
    if (command === p.CMD_FLUSH) {
      return offsetBytes === 0 && lengthBytes === 0
        ? undefined
        : { error: p.EINVAL, message: MESSAGES.flushArgs };
    }
    if (lengthBytes === 0) return { error: p.EINVAL, message: MESSAGES.zeroLength };
    // 512-byte units: the device is the server's SubSectorDevice, which handles partial 4 KiB sectors.
    const unaligned = offsetBytes % MIN_BLOCK_BYTES !== 0 || lengthBytes % MIN_BLOCK_BYTES !== 0;
    // BLOCK_STATUS may ask about any byte range (the spec discusses unaligned queries); the rest must align.
    if (unaligned && command !== p.CMD_BLOCK_STATUS) return { error: p.EINVAL, message: MESSAGES.alignment };
    if (offsetBytes + lengthBytes > this.#device.sizeBytes) {
      return { error: p.EINVAL, message: MESSAGES.range };
    }
    if (command === p.CMD_READ && lengthBytes > this.#limits.payloadBytesMax) {
      return { error: p.EINVAL, message: MESSAGES.tooLarge };
    }
    if (command === p.CMD_BLOCK_STATUS && !this.#negotiated.baseAllocation) {
      return { error: p.EINVAL, message: MESSAGES.noContext };
    }
    return undefined;
  }

  /** Reads and queues the reply: at once when the device answers at once (startRead), else later. */
  #read(request: p.Request): Promise<void> | undefined {
    const headerBytes = this.#negotiated.structuredReplies
      ? p.OFFSET_DATA_HEADER_BYTES
      : p.SIMPLE_REPLY_HEADER_BYTES;
    const buffer = this.#pool.take(headerBytes + request.lengthBytes);
    const dest = buffer.subarray(headerBytes);
    const device = this.#device;
    let pending: Promise<void> | undefined;
    try {
      pending = device.startRead !== undefined
        ? device.startRead(request.offsetBytes, dest)
        : device.read(request.offsetBytes, dest);
    } catch (e) {
      this.#pool.give(buffer);
      throw e;
    }
    if (pending === undefined) return this.#replyRead(request, buffer, headerBytes);
    return pending.then(() => this.#replyRead(request, buffer, headerBytes), (e) => {
      this.#pool.give(buffer);
      throw e;
    });
  }

  #replyRead(request: p.Request, buffer: Uint8Array, headerBytes: number): undefined {
    const structured = this.#negotiated.structuredReplies;
    if (buffer.length <= COPY_REPLY_BYTES_MAX) {
      // The header is encoded straight into the stage, beside the data copied there.
      const at = this.#writer.reserve(buffer.length);
      encodeReadHeader(this.#writer.view, at, request, structured);
      this.#writer.bytes.set(buffer.subarray(headerBytes), at + headerBytes);
      this.#pool.give(buffer);
    } else {
      encodeReadHeader(new DataView(buffer.buffer, buffer.byteOffset, headerBytes), 0, request, structured);
      this.#writer.appendOwned(buffer, (b) => this.#pool.give(b));
    }
    return undefined;
  }

  #blockStatus(request: p.Request): void {
    const reqOne = (request.flags & p.CMD_FLAG_REQ_ONE) !== 0;
    const extents = this.#clippedExtents(request.offsetBytes, request.lengthBytes);
    const count = Math.min(extents.length, reqOne ? 1 : DESCRIPTORS_MAX);
    const writer = this.#writer;
    const at = writer.reserve(p.blockStatusChunkBytes(count));
    p.encodeBlockStatusHeader(writer.view, at, {
      ...request,
      contextId: BASE_ALLOCATION_ID,
      descriptors: count,
    });
    for (let i = 0; i < count; i++) {
      const extent = extents[i];
      assert(extent !== undefined && extent.lengthBytes > 0);
      const status = extent.zero ? p.STATE_HOLE | p.STATE_ZERO : 0;
      p.encodeDescriptor(writer.view, at, i, { lengthBytes: extent.lengthBytes, status });
    }
  }

  /** The device's extents for the sectors around an arbitrary byte range, clipped to that range. */
  #clippedExtents(offsetBytes: number, lengthBytes: number): AllocationExtent[] {
    const start = offsetBytes - offsetBytes % SECTOR_BYTES;
    const end = Math.min(
      this.#device.sizeBytes,
      Math.ceil((offsetBytes + lengthBytes) / SECTOR_BYTES) * SECTOR_BYTES,
    );
    const extents = this.#device.blockStatus(start, end - start);
    assert(extents.length > 0, "blockStatus returned no extents");
    if (start === offsetBytes && end === offsetBytes + lengthBytes) return extents;
    const clipped: AllocationExtent[] = [];
    let position = start;
    for (const extent of extents) {
      const from = Math.max(position, offsetBytes);
      const to = Math.min(position + extent.lengthBytes, offsetBytes + lengthBytes);
      if (to > from) clipped.push({ lengthBytes: to - from, zero: extent.zero });
      position += extent.lengthBytes;
    }
    return clipped;
  }

  #replyOk(request: p.Request): void {
    const at = this.#writer.reserve(p.SIMPLE_REPLY_HEADER_BYTES);
    p.encodeSimpleReply(this.#writer.view, at, request.handleHigh, request.handleLow, 0);
  }

  #replyError(request: p.Request, error: number, message: Uint8Array): void {
    this.#counters?.error();
    const writer = this.#writer;
    if (!this.#negotiated.structuredReplies) {
      const at = writer.reserve(p.SIMPLE_REPLY_HEADER_BYTES);
      p.encodeSimpleReply(writer.view, at, request.handleHigh, request.handleLow, error);
      return;
    }
    const at = writer.reserve(p.errorChunkBytes(message));
    p.encodeErrorChunk(writer.bytes, writer.view, at, { ...request, error, message });
  }
}

function encodeReadHeader(view: DataView, at: number, request: p.Request, structured: boolean): void {
  if (structured) p.encodeOffsetDataHeader(view, at, request);
  else p.encodeSimpleReply(view, at, request.handleHigh, request.handleLow, 0);
}

/** Flags each command accepts; undefined for a command we do not serve. FUA is valid on all. */
function allowedFlags(command: number, structuredReplies: boolean): number | undefined {
  switch (command) {
    case p.CMD_READ:
      return p.CMD_FLAG_FUA | (structuredReplies ? p.CMD_FLAG_DF : 0);
    case p.CMD_WRITE:
    case p.CMD_FLUSH:
    case p.CMD_TRIM:
      return p.CMD_FLAG_FUA;
    case p.CMD_WRITE_ZEROES:
      return p.CMD_FLAG_FUA | p.CMD_FLAG_NO_HOLE | p.CMD_FLAG_FAST_ZERO;
    case p.CMD_BLOCK_STATUS:
      return p.CMD_FLAG_FUA | p.CMD_FLAG_REQ_ONE;
    default:
      return undefined;
  }
}
