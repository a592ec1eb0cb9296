/**
 * @module
 * A deliberately small NBD server over a file, run in the same Deno process as the kernel attach
 * in the VM test: it proves attach never blocks the event loop that must answer the kernel (the
 * situation of `lsvd serve --device`). Fixed newstyle with NBD_OPT_GO/EXPORT_NAME, then READ,
 * WRITE, FLUSH, TRIM, DISC, one request at a time per connection. Not for production.
 */

import assert from "node:assert";

const NBDMAGIC = 0x4e42444d41474943n;
const IHAVEOPT = 0x49484156454f5054n;
const OPTION_REPLY_MAGIC = 0x0003e889045565a9n;
const REQUEST_MAGIC = 0x25609513;
const SIMPLE_REPLY_MAGIC = 0x67446698;
const TRANSMISSION_FLAGS = 1 | 4 | 32 | 256; // HAS_FLAGS, SEND_FLUSH, SEND_TRIM, CAN_MULTI_CONN
const MAX_REQUEST_BYTES = 32 * 1024 * 1024;
const EINVAL = 22;

/** A running server; close() stops listening and ends every connection. */
export interface FileNbdServer {
  readonly requests: { reads: number; writes: number; flushes: number };
  close(): Promise<void>;
}

/** Serves imagePath (its current size) on a unix socket. */
export async function startFileNbdServer(imagePath: string, socketPath: string): Promise<FileNbdServer> {
  await Deno.remove(socketPath).catch(() => {});
  const file = await Deno.open(imagePath, { read: true, write: true });
  const sizeBytes = (await file.stat()).size;
  const listener = Deno.listen({ transport: "unix", path: socketPath });
  const requests = { reads: 0, writes: 0, flushes: 0 };
  const connections = new Set<Deno.Conn>();
  let fileLock = Promise.resolve();
  const withFile = <T>(op: () => Promise<T>): Promise<T> => {
    const result = fileLock.then(op);
    fileLock = result.then(() => {}, () => {});
    return result;
  };
  const serving = (async () => {
    for await (const conn of listener) {
      connections.add(conn);
      const session = new Session(conn, { sizeBytes, file, withFile, requests });
      session.run().catch(() => {}).finally(() => {
        connections.delete(conn);
        try {
          conn.close();
        } catch { /* already closed */ }
      });
    }
  })();
  return {
    requests,
    async close() {
      listener.close();
      await serving.catch(() => {});
      for (const conn of connections) {
        try {
          conn.close();
        } catch { /* already closed */ }
      }
      await withFile(() => file.sync());
      file.close();
    },
  };
}

interface Backing {
  sizeBytes: number;
  file: Deno.FsFile;
  withFile: <T>(op: () => Promise<T>) => Promise<T>;
  requests: { reads: number; writes: number; flushes: number };
}

class Session {
  readonly #conn: Deno.Conn;
  readonly #backing: Backing;
  #buffered: Uint8Array<ArrayBuffer> = new Uint8Array(0);

  constructor(conn: Deno.Conn, backing: Backing) {
    this.#conn = conn;
    this.#backing = backing;
  }

  async run(): Promise<void> {
    const greeting = new Uint8Array(18);
    const view = new DataView(greeting.buffer);
    view.setBigUint64(0, NBDMAGIC);
    view.setBigUint64(8, IHAVEOPT);
    view.setUint16(16, 1 | 2); // FIXED_NEWSTYLE | NO_ZEROES
    await this.#write(greeting);
    const clientFlags = new DataView((await this.#read(4)).buffer).getUint32(0);
    if (await this.#negotiate((clientFlags & 2) !== 0)) await this.#transmit();
  }

  /** Option haggling; true when the client entered transmission. */
  async #negotiate(noZeroes: boolean): Promise<boolean> {
    for (let i = 0; i < 32; i++) {
      const header = new DataView((await this.#read(16)).buffer);
      assert.equal(header.getBigUint64(0), IHAVEOPT);
      const option = header.getUint32(8);
      const length = header.getUint32(12);
      assert(length <= 4096, "option too long");
      await this.#read(length);
      if (option === 1) { // EXPORT_NAME
        const reply = new Uint8Array(noZeroes ? 10 : 134);
        new DataView(reply.buffer).setBigUint64(0, BigInt(this.#backing.sizeBytes));
        new DataView(reply.buffer).setUint16(8, TRANSMISSION_FLAGS);
        await this.#write(reply);
        return true;
      }
      if (option === 7 || option === 6) { // GO, INFO
        const info = new Uint8Array(12);
        new DataView(info.buffer).setBigUint64(2, BigInt(this.#backing.sizeBytes));
        new DataView(info.buffer).setUint16(10, TRANSMISSION_FLAGS);
        await this.#optionReply(option, 3, info);
        await this.#optionReply(option, 1, new Uint8Array(0));
        if (option === 7) return true;
        continue;
      }
      if (option === 2) { // ABORT
        await this.#optionReply(option, 1, new Uint8Array(0));
        return false;
      }
      await this.#optionReply(option, 0x80000001, new Uint8Array(0)); // ERR_UNSUP
    }
    return false;
  }

  async #transmit(): Promise<void> {
    const { file, withFile, sizeBytes, requests } = this.#backing;
    for (;;) {
      const request = new DataView((await this.#read(28)).buffer);
      assert.equal(request.getUint32(0), REQUEST_MAGIC);
      const type = request.getUint16(6);
      const handle = request.getBigUint64(8);
      const offset = Number(request.getBigUint64(16));
      const length = request.getUint32(24);
      assert(length <= MAX_REQUEST_BYTES, "request too long");
      const payload = type === 1 ? await this.#read(length) : undefined;
      if (type === 2) return; // DISC
      const inRange = offset + length <= sizeBytes;
      if (type === 0 && inRange) {
        requests.reads++;
        const data = await withFile(() => readAt(file, offset, length));
        await this.#write(concat(simpleReply(handle, 0), data));
      } else if (type === 1 && inRange) {
        requests.writes++;
        await withFile(() => writeAt(file, offset, payload!));
        await this.#write(simpleReply(handle, 0));
      } else if (type === 3) {
        requests.flushes++;
        await withFile(() => file.syncData());
        await this.#write(simpleReply(handle, 0));
      } else if (type === 4 && inRange) {
        await this.#write(simpleReply(handle, 0)); // TRIM is advisory
      } else {
        await this.#write(simpleReply(handle, EINVAL));
      }
    }
  }

  async #optionReply(option: number, type: number, data: Uint8Array): Promise<void> {
    const header = new Uint8Array(20);
    const view = new DataView(header.buffer);
    view.setBigUint64(0, OPTION_REPLY_MAGIC);
    view.setUint32(8, option);
    view.setUint32(12, type);
    view.setUint32(16, data.length);
    await this.#write(concat(header, data));
  }

  async #read(length: number): Promise<Uint8Array> {
    while (this.#buffered.length < length) {
      const chunk = new Uint8Array(Math.max(65536, length));
      const n = await this.#conn.read(chunk);
      if (n === null) throw new Error("connection closed");
      this.#buffered = concat(this.#buffered, chunk.subarray(0, n));
    }
    const out = this.#buffered.slice(0, length);
    this.#buffered = this.#buffered.subarray(length);
    return out;
  }

  async #write(bytes: Uint8Array): Promise<void> {
    let done = 0;
    while (done < bytes.length) done += await this.#conn.write(bytes.subarray(done));
  }
}

function simpleReply(handle: bigint, error: number): Uint8Array {
  const reply = new Uint8Array(16);
  const view = new DataView(reply.buffer);
  view.setUint32(0, SIMPLE_REPLY_MAGIC);
  view.setUint32(4, error);
  view.setBigUint64(8, handle);
  return reply;
}

async function readAt(file: Deno.FsFile, offset: number, length: number): Promise<Uint8Array> {
  await file.seek(offset, Deno.SeekMode.Start);
  const data = new Uint8Array(length);
  let done = 0;
  while (done < length) {
    const n = await file.read(data.subarray(done));
    if (n === null) break; // beyond the end of a sparse file: zeros
    done += n;
  }
  return data;
}

async function writeAt(file: Deno.FsFile, offset: number, data: Uint8Array): Promise<void> {
  await file.seek(offset, Deno.SeekMode.Start);
  let done = 0;
  while (done < data.length) done += await file.write(data.subarray(done));
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}
