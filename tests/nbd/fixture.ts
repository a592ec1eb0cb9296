/**
 * @module
 * Starts an in-process NBD server over a MemoryDevice on a unix socket in a temp dir, runs a test
 * body, and always stops the server and removes the dir.
 */

import { type NbdServer, type NbdServerOptions, startNbdServer } from "../../src/nbd/server.ts";
import { MemoryDevice, type MemoryDeviceOptions } from "../support/memory_device.ts";

export interface Fixture {
  server: NbdServer;
  device: MemoryDevice;
  dir: string;
  socketPath: string;
  /** nbd+unix URI of the export. */
  uri: string;
  logLines: string[];
}

export interface FixtureOptions extends Partial<MemoryDeviceOptions> {
  server?: Partial<Omit<NbdServerOptions, "device">>;
}

export async function withServer<T>(options: FixtureOptions, body: (f: Fixture) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "lsvd-nbd-" });
  const socketPath = `${dir}/nbd.sock`;
  const device = new MemoryDevice({ sizeBytes: options.sizeBytes ?? 64 * 1024 * 1024, ...options });
  const logLines: string[] = [];
  const server = await startNbdServer({
    device,
    socketPath,
    log: (line) => logLines.push(line),
    ...options.server,
  });
  try {
    const uri = server.uris[0];
    if (uri === undefined) throw new Error("server has no address");
    return await body({ server, device, dir, socketPath, uri, logLines });
  } finally {
    await server.stop();
    await Deno.remove(dir, { recursive: true });
  }
}
