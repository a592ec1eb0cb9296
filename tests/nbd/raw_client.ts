/**
 * @module
 * A minimal NBD client written against the protocol module, for tests that need byte-level control
 * (pipelining without reading replies, malformed input, watching graceful stop). Not for production.
 */

import * as p from "../../src/nbd/protocol.ts";
import { writeAll } from "../../src/nbd/transport.ts";

export interface Reply {
  handle: number;
  /** errno; 0 on success. */
  error: number;
  /** READ data (simple or OFFSET_DATA), or raw BLOCK_STATUS payload. */
  data: Uint8Array | undefined;
}

export class RawClient {
  readonly conn: Deno.Conn;
  sizeBytes = 0;
  transmissionFlags = 0;
  structured = false;
  #buffer = new Uint8Array(0);
  #readLengths = new Map<number, number>();

  constructor(conn: Deno.Conn) {
    this.conn = conn;
  }

  /** Connects and negotiates with NBD_OPT_GO (optionally structured replies and base:allocation). */
  static async connect(socketPath: string, options: { structured?: boolean; exportName?: string } = {}) {
    const client = new RawClient(await Deno.connect({ transport: "unix", path: socketPath }));
    try {
      await client.#negotiate(options.structured ?? false, options.exportName ?? "lsvd");
    } catch (e) {
      client.close();
      throw e;
    }
    return client;
  }

  async #negotiate(structured: boolean, exportName: string): Promise<void> {
    const greeting = await this.readExact(18);
    const view = new DataView(greeting.buffer);
    if (view.getBigUint64(0) !== p.NBD_MAGIC || view.getBigUint64(8) !== p.IHAVEOPT) {
      throw new Error("bad greeting");
    }
    await this.send(new Uint8Array([0, 0, 0, p.FLAG_C_FIXED_NEWSTYLE | p.FLAG_C_NO_ZEROES]));
    if (structured) {
      await this.send(p.encodeOptionHeader(p.OPT_STRUCTURED_REPLY, new Uint8Array(0)));
      await this.expectOptionReply(p.REP_ACK);
      const query = p.encodeMetaContextRequest({ exportName, queries: [p.META_BASE_ALLOCATION] });
      await this.send(p.encodeOptionHeader(p.OPT_SET_META_CONTEXT, query));
      await this.expectOptionReply(p.REP_META_CONTEXT);
      await this.expectOptionReply(p.REP_ACK);
      this.structured = true;
    }
    await this.send(p.encodeOptionHeader(p.OPT_GO, p.encodeInfoRequest({ exportName, infoTypes: [] })));
    for (;;) {
      const reply = await this.readOptionReply();
      if (reply.replyType === p.REP_ACK) return;
      if (reply.replyType !== p.REP_INFO) {
        throw new Error(`GO failed: reply type 0x${reply.replyType.toString(16)}`);
      }
      const info = new DataView(reply.data.buffer, reply.data.byteOffset, reply.data.byteLength);
      if (info.getUint16(0) === p.INFO_EXPORT) {
        this.sizeBytes = p.getU64(info, 2);
        this.transmissionFlags = info.getUint16(10);
      }
    }
  }

  async readOptionReply(): Promise<p.OptionReply> {
    const header = await this.readExact(20);
    const length = new DataView(header.buffer).getUint32(16);
    const whole = new Uint8Array(20 + length);
    whole.set(header);
    whole.set(await this.readExact(length), 20);
    const reply = p.decodeOptionReply(whole);
    if (reply === null) throw new Error("bad option reply magic");
    return reply;
  }

  async expectOptionReply(replyType: number): Promise<p.OptionReply> {
    const reply = await this.readOptionReply();
    if (reply.replyType !== replyType) {
      throw new Error(`expected option reply ${replyType}, got 0x${reply.replyType.toString(16)}`);
    }
    return reply;
  }

  send(bytes: Uint8Array): Promise<void> {
    return writeAll(this.conn, bytes);
  }

  /** Encodes a request (and WRITE payload) without sending it, for batching many into one write. */
  static encode(
    request: { command: number; handle: number; offsetBytes?: number; lengthBytes?: number; flags?: number },
    payload?: Uint8Array,
  ): Uint8Array {
    const out = new Uint8Array(p.REQUEST_HEADER_BYTES + (payload?.length ?? 0));
    p.encodeRequest(new DataView(out.buffer), 0, {
      flags: request.flags ?? 0,
      command: request.command,
      handleHigh: 0,
      handleLow: request.handle,
      offsetBytes: request.offsetBytes ?? 0,
      lengthBytes: request.lengthBytes ?? payload?.length ?? 0,
    });
    if (payload !== undefined) out.set(payload, p.REQUEST_HEADER_BYTES);
    return out;
  }

  /** Remembers READ lengths: simple replies do not carry them. */
  noteRead(handle: number, lengthBytes: number): void {
    this.#readLengths.set(handle, lengthBytes);
  }

  async request(
    request: { command: number; handle: number; offsetBytes?: number; lengthBytes?: number; flags?: number },
    payload?: Uint8Array,
  ): Promise<Reply> {
    if (request.command === p.CMD_READ) this.noteRead(request.handle, request.lengthBytes ?? 0);
    await this.send(RawClient.encode(request, payload));
    return this.readReply();
  }

  /** Reads one whole reply: a simple reply, or structured chunks up to the DONE flag. */
  async readReply(): Promise<Reply> {
    const first = await this.readExact(4);
    const magic = new DataView(first.buffer).getUint32(0);
    if (magic === p.SIMPLE_REPLY_MAGIC) {
      const rest = await this.readExact(12);
      const view = new DataView(rest.buffer);
      const handle = view.getUint32(8);
      const error = view.getUint32(0);
      const length = this.#readLengths.get(handle);
      this.#readLengths.delete(handle);
      const data = length !== undefined && error === 0 ? await this.readExact(length) : undefined;
      return { handle, error, data };
    }
    if (magic !== p.STRUCTURED_REPLY_MAGIC) throw new Error(`bad reply magic 0x${magic.toString(16)}`);
    return this.#readStructured();
  }

  async #readStructured(): Promise<Reply> {
    let error = 0;
    let data: Uint8Array | undefined;
    for (let first = true;; first = false) {
      if (!first) await this.readExact(4);
      const header = new DataView((await this.readExact(16)).buffer);
      const flags = header.getUint16(0);
      const type = header.getUint16(2);
      const handle = header.getUint32(8);
      const payload = await this.readExact(header.getUint32(12));
      const view = new DataView(payload.buffer);
      if (type === p.REPLY_TYPE_OFFSET_DATA) data = payload.subarray(8);
      else if (type === p.REPLY_TYPE_BLOCK_STATUS) data = payload;
      else if (type & 0x8000) error = view.getUint32(0);
      this.#readLengths.delete(handle);
      if (flags & p.REPLY_FLAG_DONE) return { handle, error, data };
    }
  }

  async readExact(n: number): Promise<Uint8Array> {
    while (this.#buffer.length < n) {
      const chunk = new Uint8Array(Math.max(65536, n));
      const got = await this.conn.read(chunk);
      if (got === null) throw new Error(`connection closed with ${this.#buffer.length} of ${n} bytes`);
      const next = new Uint8Array(this.#buffer.length + got);
      next.set(this.#buffer);
      next.set(chunk.subarray(0, got), this.#buffer.length);
      this.#buffer = next;
    }
    const out = this.#buffer.slice(0, n);
    this.#buffer = this.#buffer.subarray(n);
    return out;
  }

  /** True when the server closed the connection (reads end) within timeoutMs. */
  async closedByServer(timeoutMs: number): Promise<boolean> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<"timeout">((resolve) =>
      timer = setTimeout(() => resolve("timeout"), timeoutMs)
    );
    try {
      for (;;) {
        const read = this.conn.read(new Uint8Array(65536)).catch(() => null);
        const got = await Promise.race([read, timeout]);
        if (got === "timeout") return false;
        if (got === null) return true;
      }
    } finally {
      clearTimeout(timer);
    }
  }

  close(): void {
    try {
      this.conn.close();
    } catch {
      // already closed
    }
  }
}
