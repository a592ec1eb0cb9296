/**
 * @module
 * What the NBD layer counts for `--metrics`: requests by command, bytes read and written by
 * clients, and error replies. Created once per server and shared by its connections; the hot path
 * only adds to pre-made counters.
 */

import type { Counter, MetricsRegistry } from "../metrics/registry.ts";
import * as p from "./protocol.ts";

const COMMAND_NAMES: Readonly<Record<number, string>> = {
  [p.CMD_READ]: "read",
  [p.CMD_WRITE]: "write",
  [p.CMD_FLUSH]: "flush",
  [p.CMD_TRIM]: "trim",
  [p.CMD_WRITE_ZEROES]: "write_zeroes",
  [p.CMD_BLOCK_STATUS]: "block_status",
};

export class NbdCounters {
  #requests = new Map<number, Counter>();
  #readBytes: Counter;
  #writtenBytes: Counter;
  #errors: Counter;

  constructor(registry: MetricsRegistry) {
    for (const [command, name] of Object.entries(COMMAND_NAMES)) {
      this.#requests.set(
        Number(command),
        registry.counter("lsvd_nbd_requests_total", "NBD requests accepted, by command", { command: name }),
      );
    }
    this.#readBytes = registry.counter("lsvd_nbd_read_bytes_total", "Bytes NBD clients read");
    this.#writtenBytes = registry.counter(
      "lsvd_nbd_written_bytes_total",
      "Bytes NBD clients wrote (WRITE payloads)",
    );
    this.#errors = registry.counter("lsvd_nbd_error_replies_total", "NBD requests answered with an error");
  }

  /** A request that passed validation and goes to the device. */
  request(command: number, lengthBytes: number): void {
    this.#requests.get(command)?.inc();
    if (command === p.CMD_READ) this.#readBytes.inc(lengthBytes);
    else if (command === p.CMD_WRITE) this.#writtenBytes.inc(lengthBytes);
  }

  error(): void {
    this.#errors.inc();
  }
}
