/**
 * @module
 * One large buffer the socket is read into, so one read() can bring in many requests and
 * write payloads are handed to the device as views of it, without copying. It compacts when a
 * message would run past its end and grows (up to a bound) only for a message larger than itself.
 */

import { assert, assertFail } from "../util/assert.ts";
import type { NbdTransport } from "./transport.ts";

export class InputBuffer {
  bytes: Uint8Array;
  view: DataView;
  /** Unconsumed bytes are bytes[start, end). */
  start = 0;
  end = 0;
  #transport: NbdTransport;
  #initialBytes: number;
  #capacityMaxBytes: number;
  #interrupted: Promise<null> | undefined;

  constructor(transport: NbdTransport, options: { initialBytes: number; capacityMaxBytes: number }) {
    assert(options.initialBytes > 0 && options.initialBytes <= options.capacityMaxBytes);
    this.#transport = transport;
    this.#initialBytes = options.initialBytes;
    this.#capacityMaxBytes = options.capacityMaxBytes;
    this.bytes = new Uint8Array(options.initialBytes);
    this.view = new DataView(this.bytes.buffer);
  }

  get available(): number {
    return this.end - this.start;
  }

  /** From now on a pending or future fill() returns false as soon as `signal` resolves. */
  interruptOn(signal: Promise<null>): void {
    this.#interrupted = signal;
  }

  consume(n: number): void {
    assert(n <= this.available);
    this.start += n;
    if (this.start === this.end) {
      this.start = this.end = 0;
      if (this.bytes.length > this.#initialBytes) this.#replace(this.#initialBytes);
    }
  }

  /** Copies out and consumes n bytes (handshake use; not the hot path). */
  take(n: number): Uint8Array {
    const out = this.bytes.slice(this.start, this.start + n);
    this.consume(n);
    return out;
  }

  /** Reads until at least n bytes are available. False at end of stream, on a read error or interrupt. */
  async fill(n: number): Promise<boolean> {
    if (n > this.#capacityMaxBytes) assertFail(`message of ${n} bytes exceeds the input buffer`);
    this.#makeRoom(n);
    while (this.available < n) {
      let got: number | null;
      try {
        got = await this.#readOnce();
      } catch {
        return false; // reset by peer, closed under us: the session is over either way
      }
      if (got === null) return false;
      this.end += got;
    }
    return true;
  }

  #readOnce(): Promise<number | null> {
    const read = this.#transport.read(this.bytes.subarray(this.end));
    if (this.#interrupted === undefined) return read;
    read.catch(() => {}); // it fails once the transport closes; nobody waits for it then
    return Promise.race([read, this.#interrupted]);
  }

  #makeRoom(n: number): void {
    if (this.start + n <= this.bytes.length) return;
    if (n <= this.bytes.length) {
      this.bytes.copyWithin(0, this.start, this.end);
      this.end -= this.start;
      this.start = 0;
      return;
    }
    this.#replace(Math.min(this.#capacityMaxBytes, Math.max(n, 2 * this.bytes.length)));
  }

  #replace(capacityBytes: number): void {
    const next = new Uint8Array(capacityBytes);
    next.set(this.bytes.subarray(this.start, this.end));
    this.end -= this.start;
    this.start = 0;
    this.bytes = next;
    this.view = new DataView(next.buffer);
  }
}
