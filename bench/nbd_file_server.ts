/**
 * @module
 * The floor for lsvd's commits under Deno: lsvd's own NBD front end (src/nbd) serving a local file
 * with nothing behind it. A write is one `pwrite` into the page cache, answered at once; a FLUSH is
 * an `fdatasync` of the file, up to 4 overlapping, FLUSHes arriving meanwhile sharing them (what the
 * write-back journal does). No extent map, no journal records, no store. bench/commits.ts runs it as
 * the `deno-file` set-up beside `nbdkit file` (C, one thread per connection) and `lsvd serve
 * --journal`, so a commit's cost splits into the runtime with lsvd's NBD layer and lsvd's volume.
 *
 *   deno run -A bench/nbd_file_server.ts SOCKET FILE   # FILE exists; its size is the export's
 */

import * as fs from "node:fs";
import { startNbdServer } from "../src/nbd/server.ts";
import { nativeFdatasync } from "../src/util/fdatasync.ts";
import type { AllocationExtent, BlockDevice } from "../src/volume/block_device.ts";

const fdatasync = nativeFdatasync();

class FileDevice implements BlockDevice {
  readonly readOnly = false;
  readonly sizeBytes: number;
  #fd: number;
  #file: Deno.FsFile;
  #written = 0; // writes answered so far
  #synced = 0; // writes an fdatasync has covered
  #startedThrough = 0; // writes the furthest fdatasync started so far covers
  #inFlight = 0;
  #returned: Array<() => void> = []; // FLUSHes waiting for a sync to return

  constructor(path: string) {
    this.#fd = fs.openSync(path, "r+");
    this.#file = Deno.openSync(path, { read: true, write: true });
    this.sizeBytes = fs.fstatSync(this.#fd).size;
  }

  read(offsetBytes: number, dest: Uint8Array): Promise<void> {
    fs.readSync(this.#fd, dest, 0, dest.length, offsetBytes);
    return Promise.resolve();
  }

  startWrite(offsetBytes: number, data: Uint8Array): undefined {
    fs.writeSync(this.#fd, data, 0, data.length, offsetBytes);
    this.#written++;
  }

  write(offsetBytes: number, data: Uint8Array): Promise<void> {
    this.startWrite(offsetBytes, data);
    return Promise.resolve();
  }

  writeZeroes(offsetBytes: number, lengthBytes: number): Promise<void> {
    return this.write(offsetBytes, new Uint8Array(lengthBytes));
  }

  trim(offsetBytes: number, lengthBytes: number): Promise<void> {
    return this.writeZeroes(offsetBytes, lengthBytes);
  }

  /**
   * As the journal syncs (src/journal/journal.ts): a FLUSH that no fdatasync in flight covers starts
   * one at once, up to 4 in flight through FFI (src/util/fdatasync.ts; one at a time through
   * FsFile.syncData without it); past that it waits and tries again when one returns.
   */
  async flush(): Promise<void> {
    const through = this.#written;
    while (this.#synced < through) {
      if (this.#startedThrough < through && this.#inFlight < (fdatasync === undefined ? 1 : 4)) {
        const covers = this.#written;
        this.#startedThrough = covers;
        this.#inFlight++;
        try {
          if (fdatasync === undefined) await this.#file.syncData();
          else if (await fdatasync(this.#fd) !== 0) throw new Error("fdatasync failed");
          this.#synced = Math.max(this.#synced, covers);
        } finally {
          this.#inFlight--;
          for (const wake of this.#returned.splice(0)) wake();
        }
      } else {
        await new Promise<void>((resolve) => this.#returned.push(resolve));
      }
    }
  }

  blockStatus(_offsetBytes: number, lengthBytes: number): AllocationExtent[] {
    return [{ lengthBytes, zero: false }];
  }
}

if (import.meta.main) {
  const [socketPath, path] = Deno.args;
  if (socketPath === undefined || path === undefined) {
    console.error("usage: deno run -A bench/nbd_file_server.ts SOCKET FILE");
    Deno.exit(2);
  }
  const server = await startNbdServer({ device: new FileDevice(path), socketPath });
  const stop = () => Deno.exit(0);
  Deno.addSignalListener("SIGTERM", stop);
  Deno.addSignalListener("SIGINT", stop);
  console.log(`serving ${path} at ${server.socketPath}`);
}
