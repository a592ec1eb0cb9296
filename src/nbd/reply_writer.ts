/**
 * @module
 * Batches replies into as few socket writes as possible. Small replies (headers, short reads,
 * errors) are encoded straight into a staging buffer; a large READ reply is queued as its own
 * buffer, uncopied. One writer loop drains the queue; replies that complete while a write is in
 * flight pile up in the stage and leave in the next write, so a deep queue costs one write per
 * batch rather than one per reply.
 */

import { assertFail } from "../util/assert.ts";
import { type NbdTransport, writeAll } from "./transport.ts";

const STAGE_BYTES = 1024 * 1024;
const SPARE_STAGES_MAX = 2;

interface Segment {
  bytes: Uint8Array;
  release: ((bytes: Uint8Array) => void) | undefined;
}

export class ReplyWriter {
  /** The staging buffer and a view of it; valid until the next reserve(). */
  bytes: Uint8Array;
  view: DataView;
  /** Bytes accepted but not yet written to the socket. */
  pendingBytes = 0;
  #used = 0;
  #stageBuffer: ArrayBuffer;
  #spares: ArrayBuffer[] = [];
  #queue: Segment[] = [];
  #transport: NbdTransport;
  #onWritten: () => void;
  #scheduled = false;
  #running = false;
  #failed = false;
  #idleWaiters: Array<() => void> = [];

  /** onWritten runs after every socket write, so a reader waiting for replies to drain can go on. */
  constructor(transport: NbdTransport, onWritten: () => void) {
    this.#transport = transport;
    this.#onWritten = onWritten;
    this.#stageBuffer = new ArrayBuffer(STAGE_BYTES);
    this.bytes = new Uint8Array(this.#stageBuffer);
    this.view = new DataView(this.#stageBuffer);
  }

  /** True once a socket write failed; later replies are dropped. */
  get failed(): boolean {
    return this.#failed;
  }

  /** Room for n bytes in the stage; returns their offset in this.bytes / this.view. */
  reserve(n: number): number {
    if (n > STAGE_BYTES) assertFail(`reply of ${n} bytes does not fit the stage`);
    if (this.#used + n > STAGE_BYTES) this.#seal();
    const at = this.#used;
    this.#used += n;
    this.pendingBytes += n;
    this.#schedule();
    return at;
  }

  /** Queues a buffer as is; release gets it back once written (or dropped). */
  appendOwned(bytes: Uint8Array, release?: (bytes: Uint8Array) => void): void {
    if (this.#used > 0) this.#seal();
    this.#queue.push({ bytes, release });
    this.pendingBytes += bytes.length;
    this.#schedule();
  }

  /** Resolves once everything accepted so far has been written (or the socket failed). */
  idle(): Promise<void> {
    if (!this.#running && !this.#scheduled && this.pendingBytes === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  #schedule(): void {
    if (this.#running || this.#scheduled) return;
    this.#scheduled = true;
    // After the current burst of completions has run, so they share one write.
    queueMicrotask(() => {
      this.#scheduled = false;
      void this.#drain();
    });
  }

  #seal(): void {
    const buffer = this.#stageBuffer;
    this.#queue.push({
      bytes: new Uint8Array(buffer, 0, this.#used),
      release: () => {
        if (this.#spares.length < SPARE_STAGES_MAX) this.#spares.push(buffer);
      },
    });
    this.#stageBuffer = this.#spares.pop() ?? new ArrayBuffer(STAGE_BYTES);
    this.bytes = new Uint8Array(this.#stageBuffer);
    this.view = new DataView(this.#stageBuffer);
    this.#used = 0;
  }

  async #drain(): Promise<void> {
    if (this.#running) return;
    this.#running = true;
    for (;;) {
      if (this.#queue.length === 0 && this.#used > 0) this.#seal();
      const segment = this.#queue.shift();
      if (segment === undefined) break;
      if (!this.#failed) {
        try {
          await writeAll(this.#transport, segment.bytes);
        } catch {
          this.#failed = true; // the peer went away; the reader sees it too and ends the session
        }
      }
      this.pendingBytes -= segment.bytes.length;
      segment.release?.(segment.bytes);
      this.#onWritten();
    }
    this.#running = false;
    for (const resolve of this.#idleWaiters.splice(0)) resolve();
  }
}
