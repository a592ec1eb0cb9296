/**
 * @module
 * The worker side of bench/offload.ts: reads 4 KiB sectors of a file with pread into slots of a
 * SharedArrayBuffer that the main thread hands it, and rings the main thread's completion bell.
 * Slot states: 0 free, 1 asked (offset set by the main thread), 2 done (data in the slot, and its
 * CRC-32 when asked to verify).
 */

import * as fs from "node:fs";
import { crc32 } from "../src/format/crc32.ts";

const SECTOR_BYTES = 4096;

interface Start {
  path: string;
  shared: SharedArrayBuffer;
  data: SharedArrayBuffer;
  slots: number;
  worker: number;
  workers: number;
  /** Also compute each sector's CRC-32 here (the check lsvd makes on every read miss). */
  verify: boolean;
}

/** The worker's global scope (type-checked with the main program's window types). */
const scope = self as unknown as {
  onmessage: (event: MessageEvent<Start>) => void;
  postMessage(message: unknown): void;
};

scope.onmessage = (event: MessageEvent<Start>) => {
  const s = event.data;
  const control = new Int32Array(s.shared); // [0]: completions, [1 + w]: doorbell of worker w, then states, offsets
  const states = new Int32Array(s.shared, (1 + s.workers) * 4, s.slots);
  const sectors = new Int32Array(s.shared, (1 + s.workers + s.slots) * 4, s.slots);
  const crcs = new Int32Array(s.shared, (1 + s.workers + 2 * s.slots) * 4, s.slots);
  const data = new Uint8Array(s.data);
  const fd = fs.openSync(s.path, "r");
  const mine: number[] = [];
  for (let i = s.worker; i < s.slots; i += s.workers) mine.push(i);
  scope.postMessage("ready"); // the main thread starts its clock only now (loading a worker takes time)
  for (;;) {
    const bell = Atomics.load(control, 1 + s.worker);
    if (bell < 0) break; // the main thread is done
    let served = 0;
    for (const i of mine) {
      if (Atomics.load(states, i) !== 1) continue;
      fs.readSync(fd, data, i * SECTOR_BYTES, SECTOR_BYTES, sectors[i]! * SECTOR_BYTES);
      if (s.verify) crcs[i] = crc32(data.subarray(i * SECTOR_BYTES, (i + 1) * SECTOR_BYTES));
      Atomics.store(states, i, 2);
      served++;
    }
    if (served > 0) {
      Atomics.add(control, 0, served);
      Atomics.notify(control, 0);
      continue;
    }
    Atomics.wait(control, 1 + s.worker, bell);
  }
  fs.closeSync(fd);
  scope.postMessage("closed");
};
