/**
 * @module
 * Serves a MemoryDevice over NBD until SIGTERM/SIGINT, for measuring the server alone with fio
 * against `nbdkit memory`, and for tests that need the server in a separate process.
 * Usage: deno run -A tests/nbd/serve_memory.ts SOCKET_PATH [SIZE_BYTES] [--read-only] [--assert-on-read]
 * (--assert-on-read makes the first READ hit a broken invariant, to check that the daemon crashes.)
 */

import { AssertionError } from "node:assert";
import { startNbdServer } from "../../src/nbd/server.ts";
import { MemoryDevice } from "../support/memory_device.ts";

const [socketPath, sizeArg] = Deno.args;
if (socketPath === undefined) {
  console.error("usage: serve_memory.ts SOCKET_PATH [SIZE_BYTES] [--read-only]");
  Deno.exit(2);
}
const device = new MemoryDevice({
  sizeBytes: Number(sizeArg ?? 256 * 1024 * 1024),
  readOnly: Deno.args.includes("--read-only"),
});
if (Deno.args.includes("--assert-on-read")) {
  device.failNext("read", new AssertionError({ message: "injected invariant failure" }));
}
const server = await startNbdServer({ device, socketPath, log: (line) => console.error(`lsvd: ${line}`) });
console.error("lsvd: Device is now operational.");
const stopped = new Promise<void>((resolve) => {
  for (const signal of ["SIGTERM", "SIGINT"] as const) Deno.addSignalListener(signal, () => resolve());
});
await stopped;
await server.stop();
console.error("lsvd: Device has shut down.");
Deno.exit(0);
