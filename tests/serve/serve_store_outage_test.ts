/**
 * @module
 * The real daemon against stores that misbehave at the network edge:
 * - an endpoint that answers every request with 200 and an HTML page is refused at start, in one
 *   line, before "operational" (the SDK would otherwise take its pages for an empty bucket and for
 *   stored writes);
 * - Ceph RGW behind a fault proxy (tests/support/fault_proxy.ts) black-holed for 15 s while a
 *   libnbd client writes and flushes: no client error, the daemon resumes by itself, exits 0 on
 *   SIGTERM, and every written block reads back after a restart.
 *
 * LSVD_LONG_TESTS=1 adds 3-minute outages (black hole and refused connections).
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { Daemon, scratch, unixUri } from "../support/daemon.ts";
import { runClientOk, SYSTEM_PYTHON } from "../support/clients.ts";
import { type FaultMode, FaultProxy } from "../support/fault_proxy.ts";
import { type Rgw, rgwEnv, startRgw } from "../support/rgw.ts";

const LONG = Deno.env.get("LSVD_LONG_TESTS") === "1";
const BLOCK = 4096;
const BLOCKS = 4096; // a 16 MiB region of the disk
const ROUND_BLOCKS = 64; // 256 KiB per round
const ROUNDS = 160;
const FLUSH_EVERY = 4;

/**
 * Round r writes ROUND_BLOCKS blocks from roundStart(r), each filled with (r, block) as u32 pairs,
 * and every FLUSH_EVERY rounds flushes and prints `flushed r <unix seconds>`. libnbd raises on
 * any error reply, so a clean exit means every write and flush succeeded.
 */
const WRITER = `
import nbd, struct, sys, time
h = nbd.NBD()
h.connect_uri(sys.argv[1])
for r in range(1, ${ROUNDS} + 1):
    start = (r * 97) % (${BLOCKS} - ${ROUND_BLOCKS})
    h.pwrite(b"".join(struct.pack(">II", r, b) * (${BLOCK} // 8) for b in range(start, start + ${ROUND_BLOCKS})), start * ${BLOCK})
    if r % ${FLUSH_EVERY} == 0:
        h.flush()
        print("flushed", r, time.time(), flush=True)
`;
import { forEachLine } from "../support/lines.ts";

function roundStart(round: number): number {
  return (round * 97) % (BLOCKS - ROUND_BLOCKS);
}

/** Spawns the writer; returns its "flushed" lines as they come and its exit. */
function startWriter(uri: string) {
  const child = new Deno.Command(SYSTEM_PYTHON, {
    args: ["-c", WRITER, uri],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const flushes: { round: number; atMs: number }[] = [];
  const reading = forEachLine(child.stdout, (line) => {
    const [, round, seconds] = line.split(" ");
    flushes.push({ round: Number(round), atMs: Number(seconds) * 1000 });
  });
  const stderr = new Response(child.stderr).text();
  const finished = (async () => {
    const status = await child.status;
    await reading;
    return { code: status.code, stderr: await stderr };
  })();
  return { flushes, finished, kill: () => child.kill("SIGKILL") };
}

async function waitFor(condition: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Every block holds the newest round that wrote it (or zeros), whole. */
function verifyDisk(disk: Uint8Array): void {
  const newest = new Array<number>(BLOCKS).fill(0);
  for (let r = 1; r <= ROUNDS; r++) {
    for (let b = roundStart(r); b < roundStart(r) + ROUND_BLOCKS; b++) newest[b] = r;
  }
  const view = new DataView(disk.buffer, disk.byteOffset, disk.byteLength);
  for (let b = 0; b < BLOCKS; b++) {
    for (let i = 0; i < BLOCK; i += 8) {
      const round = view.getUint32(b * BLOCK + i), block = view.getUint32(b * BLOCK + i + 4);
      const want = newest[b]!;
      if (round !== want || block !== (want === 0 ? 0 : b)) {
        assert.fail(`block ${b} byte ${i}: found round ${round} block ${block}, want round ${want}`);
      }
    }
  }
}

/** Writes through the daemon while the store is in `mode` for outageMs; then checks everything. */
async function outageStory(rgw: Rgw, mode: FaultMode, outageMs: number): Promise<void> {
  const t = await scratch();
  const proxy = FaultProxy.forEndpoint(rgw.endpoint);
  const prefix = `outage-${mode}-${outageMs}`;
  const storeArgs = ["--bucket", rgw.bucket, "--path-style", "--prefix", prefix, "--socket", t.socket];
  let daemon: Daemon | undefined;
  try {
    daemon = await Daemon.start({
      args: [...storeArgs, "--endpoint", proxy.endpoint, "--size", "64M"],
      env: rgwEnv(rgw),
    });
    const writer = startWriter(unixUri(t.socket));
    await waitFor(() => writer.flushes.length >= 3, 60_000, "the first flushes");
    await proxy.setMode(mode);
    const outageStartMs = Date.now();
    await new Promise((resolve) => setTimeout(resolve, outageMs));
    const flushedInOutage = writer.flushes.filter((f) => f.atMs > outageStartMs + 1_000).length;
    await proxy.setMode("pass");
    const restoredMs = Date.now();
    const result = await Promise.race([
      writer.finished,
      new Promise<never>((_, reject) =>
        setTimeout(() => reject(new Error("the writer never finished")), 120_000)
      ),
    ]);
    assert.equal(result.code, 0, `the writer failed: ${result.stderr}\n--- daemon log\n${daemon.log}`);
    assert.equal(writer.flushes.length, ROUNDS / FLUSH_EVERY);
    assert.equal(flushedInOutage, 0, "no flush can complete while the store is away");
    assert(writer.flushes.at(-1)!.atMs >= restoredMs - 1_000, "writes went on after the store returned");

    const stopped = await daemon.stop(120_000);
    assert.equal(stopped.code, 0, stopped.log);
    // The volume failing would print `lsvd: Cannot write object "<key>": <why>`.
    assert.doesNotMatch(stopped.log, /^lsvd: Cannot /m, stopped.log);
    // The outage is two lines, not one per retry.
    const outageLines = stopped.log.split("\n").filter((l) => /Object storage|Retrying/.test(l));
    assert.equal(outageLines.length, 2, stopped.log);
    assert.match(
      outageLines[0]!,
      /^lsvd: Object storage unreachable \(Cannot .*\); retrying until it returns\.$/,
    );
    const awayS = Number(
      outageLines[1]!.match(/^lsvd: Object storage reachable again after (\d+) s\.$/)?.[1],
    );
    assert(awayS >= outageMs / 1000 - 5, outageLines[1]);

    // A fresh daemon straight on RGW reads everything back.
    daemon = await Daemon.start({ args: [...storeArgs, "--endpoint", rgw.endpoint], env: rgwEnv(rgw) });
    const out = join(t.dir, "disk.bin");
    await runClientOk("nbdcopy", [unixUri(t.socket), out], { timeoutMs: 120_000 });
    verifyDisk((await Deno.readFile(out)).subarray(0, BLOCKS * BLOCK));
    assert.equal((await daemon.stop()).code, 0);
    daemon = undefined;
  } finally {
    daemon?.kill();
    await daemon?.exited;
    await proxy.close();
    await t.remove();
  }
}

Deno.test({
  name: "lsvd serve refuses an endpoint that answers every request with 200 and an HTML page",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    let requests = 0;
    const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (request) => {
      requests++;
      await request.arrayBuffer();
      return new Response("<!DOCTYPE html><html><body><h1>Welcome to nginx!</h1></body></html>", {
        status: 200,
        headers: { "content-type": "text/html" },
      });
    });
    const t = await scratch();
    try {
      const endpoint = `http://127.0.0.1:${server.addr.port}`;
      const daemon = Daemon.spawn({
        args: [
          "--bucket",
          "vol",
          "--endpoint",
          endpoint,
          "--path-style",
          "--size",
          "1G",
          "--socket",
          t.socket,
        ],
        env: {
          ...Deno.env.toObject(),
          AWS_ACCESS_KEY_ID: "a",
          AWS_SECRET_ACCESS_KEY: "s",
          AWS_REGION: "us-east-1",
        },
      });
      const { code, log } = await daemon.finished();
      assert.equal(code, 1, log);
      assert.doesNotMatch(log, /operational|Creating a volume/);
      const lsvdLines = log.split("\n").filter((l) => l.startsWith("lsvd:"));
      // Refused by the first request that reads an answer: the prefix check's listing or the probe's PUT.
      const escaped = endpoint.replaceAll(".", "\\.");
      assert.match(
        lsvdLines.at(-1)!,
        new RegExp(
          `^lsvd: Cannot [^\n]*: the answer (is not an S3 ListBucketResult|has no ETag, so the write is not confirmed) ` +
            `\\(is ${escaped} an S3 endpoint\\?\\)$`,
        ),
      );
      assert(requests >= 2, "the daemon reached the endpoint");
    } finally {
      await server.shutdown();
      await t.remove();
    }
  },
});

Deno.test({
  name: "lsvd serve rides out a store outage: writes and flushes succeed and data verifies",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    const rgw = await startRgw();
    try {
      await t.step("15 s black hole", () => outageStory(rgw, "blackhole", 15_000));
      if (LONG) {
        await t.step("3-minute black hole", () => outageStory(rgw, "blackhole", 180_000));
        await t.step("3 minutes of refused connections", () => outageStory(rgw, "refuse", 180_000));
      }
    } finally {
      await rgw.stop();
    }
  },
});
