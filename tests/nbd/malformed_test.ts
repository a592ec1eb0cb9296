/**
 * @module
 * Throws seeded random and truncated handshakes and random, truncated and absurd requests at the
 * server, then checks it still serves a normal client correctly. The memory device asserts range
 * and alignment like the engine does, so any request that slips past validation crashes the test.
 * Replay a failure with LSVD_NBD_FUZZ_SEED=<seed printed on failure>.
 */

import assert from "node:assert/strict";
import * as p from "../../src/nbd/protocol.ts";
import { runClientOk } from "../support/clients.ts";
import { withServer } from "./fixture.ts";
import { concatBytes } from "../../src/util/bytes.ts";
import { seededRandom } from "../../src/util/random.ts";

const CASES = 240;
const CONCURRENCY = 16;

type Rng = () => number;
const int = (rng: Rng, n: number) => Math.floor(rng() * n);
const pick = <T>(rng: Rng, items: readonly T[]): T => items[int(rng, items.length)] as T;

function randomBytes(rng: Rng, n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = int(rng, 256);
  return out;
}

const CLIENT_FLAGS = new Uint8Array([0, 0, 0, 3]);

/** A valid negotiation ending in GO, optionally with structured replies and base:allocation. */
function goodHandshake(rng: Rng): Uint8Array {
  const parts: Uint8Array[] = [CLIENT_FLAGS];
  if (rng() < 0.5) {
    parts.push(p.encodeOptionHeader(p.OPT_STRUCTURED_REPLY, new Uint8Array(0)));
    const query = p.encodeMetaContextRequest({ exportName: "", queries: [p.META_BASE_ALLOCATION] });
    parts.push(p.encodeOptionHeader(p.OPT_SET_META_CONTEXT, query));
  }
  parts.push(p.encodeOptionHeader(p.OPT_GO, p.encodeInfoRequest({ exportName: "", infoTypes: [3] })));
  return concatBytes(parts);
}

function randomOption(rng: Rng): Uint8Array {
  const option = pick(rng, [1, 2, 3, 5, 6, 7, 8, 9, 10, 11, int(rng, 2 ** 32)]);
  const data = rng() < 0.5 ? randomBytes(rng, int(rng, 64)) : p.encodeInfoRequest({
    exportName: pick(rng, ["", "lsvd", "x"]),
    infoTypes: [int(rng, 5)],
  });
  const header = p.encodeOptionHeader(option, data);
  if (rng() < 0.1) new DataView(header.buffer).setUint32(12, int(rng, 2 ** 32)); // lie about the length
  return header;
}

function randomRequest(rng: Rng): Uint8Array {
  const command = pick(rng, [0, 1, 2, 3, 4, 5, 6, 7, 8, int(rng, 65536)]);
  const lengthBytes = pick(rng, [
    0,
    1,
    4096,
    8192,
    65536,
    33 * 1024 * 1024,
    int(rng, 2 ** 32),
    4096 * int(rng, 64),
  ]);
  const offsetBytes = pick(rng, [0, 512, 4096 * int(rng, 4096), 2 ** 40, int(rng, 2 ** 53)]);
  const out = new Uint8Array(p.REQUEST_HEADER_BYTES);
  p.encodeRequest(new DataView(out.buffer), 0, {
    flags: rng() < 0.7 ? 0 : int(rng, 65536),
    command,
    handleHigh: int(rng, 2 ** 32),
    handleLow: int(rng, 2 ** 32),
    offsetBytes,
    lengthBytes,
  });
  if (rng() < 0.05) out[0] = 0; // bad magic
  if (command !== p.CMD_WRITE || lengthBytes > 256 * 1024) return out;
  return concatBytes([out, randomBytes(rng, rng() < 0.8 ? lengthBytes : int(rng, lengthBytes + 1))]);
}

/** One malformed conversation, as bytes to send. */
function randomCase(rng: Rng): Uint8Array {
  switch (int(rng, 5)) {
    case 0: // pure garbage
      return randomBytes(rng, int(rng, 200));
    case 1: { // truncated valid handshake
      const bytes = goodHandshake(rng);
      return bytes.subarray(0, int(rng, bytes.length));
    }
    case 2: // random options
      return concatBytes([CLIENT_FLAGS, ...Array.from({ length: 1 + int(rng, 6) }, () => randomOption(rng))]);
    case 3: { // good handshake, then random requests
      const requests = Array.from({ length: 1 + int(rng, 8) }, () => randomRequest(rng));
      return concatBytes([goodHandshake(rng), ...requests]);
    }
    default: { // good handshake, then truncated request stream
      const requests = concatBytes(Array.from({ length: 1 + int(rng, 4) }, () => randomRequest(rng)));
      return concatBytes([goodHandshake(rng), requests.subarray(0, int(rng, requests.length))]);
    }
  }
}

/** Sends bytes, drains whatever comes back for a moment, then hangs up. */
async function play(socketPath: string, bytes: Uint8Array, lingerMs: number): Promise<void> {
  const conn = await Deno.connect({ transport: "unix", path: socketPath });
  const sink = new Uint8Array(65536);
  const draining = (async () => {
    try {
      while (await conn.read(sink) !== null) { /* discard */ }
    } catch {
      // closed by either side
    }
  })();
  try {
    let done = 0;
    while (done < bytes.length) done += await conn.write(bytes.subarray(done));
  } catch {
    // the server may hang up first: that is one of the expected outcomes
  }
  await new Promise((resolve) => setTimeout(resolve, lingerMs));
  try {
    conn.close();
  } catch {
    // already closed
  }
  await draining;
}

Deno.test("startNbdServer() survives random and truncated handshakes and requests", async () => {
  const seed = Number(Deno.env.get("LSVD_NBD_FUZZ_SEED") ?? Math.floor(Math.random() * 2 ** 31));
  const rng = seededRandom(seed);
  try {
    await withServer({ sizeBytes: 16 * 1024 * 1024, server: { handshakeTimeoutMs: 2000 } }, async (f) => {
      const cases = Array.from({ length: CASES }, () => ({ bytes: randomCase(rng), lingerMs: int(rng, 50) }));
      for (let i = 0; i < cases.length; i += CONCURRENCY) {
        await Promise.all(
          cases.slice(i, i + CONCURRENCY).map((c) => play(f.socketPath, c.bytes, c.lingerMs)),
        );
      }
      assert.ok(f.device.operationCount > 0, "no random request reached the device: the generator is broken");
      // The server still serves a real client correctly.
      const io = (commands: string[]) =>
        runClientOk("qemu-io", ["-f", "raw", ...commands.flatMap((c) => ["-c", c]), f.uri]);
      await io(["write -P 0x3c 1M 256k", "flush"]);
      const { stdout } = await io(["read -P 0x3c 1M 256k"]);
      assert.doesNotMatch(stdout, /Pattern verification failed/);
      const { stdout: size } = await runClientOk("nbdinfo", ["--size", f.uri]);
      assert.equal(size.trim(), String(16 * 1024 * 1024));
      await waitForNoConnections(f.server);
    });
  } catch (e) {
    console.error(`malformed-input test failed with LSVD_NBD_FUZZ_SEED=${seed}`);
    throw e;
  }
});

async function waitForNoConnections(server: { connectionCount: number }): Promise<void> {
  const deadline = Date.now() + 5000;
  while (server.connectionCount > 0) {
    if (Date.now() > deadline) throw new Error(`${server.connectionCount} connections still open`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
