/**
 * @module
 * nbdcopy moves random data in and out over several connections with many requests in flight;
 * checksums of the source, the device and the copy back must match.
 */

import assert from "node:assert/strict";
import { runClientOk, seededBytes, sha256Hex } from "../support/clients.ts";
import { withServer } from "./fixture.ts";

const MiB = 1024 * 1024;

Deno.test("startNbdServer() round-trips random data through nbdcopy with 4 connections", async () => {
  await withServer({ sizeBytes: 32 * MiB }, async (f) => {
    const source = seededBytes(32 * MiB, 1234);
    // A zero region in the middle, so nbdcopy's sparse handling (zero/trim requests) is exercised.
    source.fill(0, 8 * MiB, 12 * MiB);
    await Deno.writeFile(`${f.dir}/in.img`, source);
    const copyArgs = ["--connections=4", "--threads=4", "--requests=32", "--request-size=262144"];
    await runClientOk("nbdcopy", [...copyArgs, `${f.dir}/in.img`, f.uri], { timeoutMs: 120_000 });
    const onDevice = new Uint8Array(32 * MiB);
    await f.device.read(0, onDevice);
    assert.equal(await sha256Hex(onDevice), await sha256Hex(source));
    await runClientOk("nbdcopy", [...copyArgs, f.uri, `${f.dir}/out.img`], { timeoutMs: 120_000 });
    assert.equal(await sha256Hex(await Deno.readFile(`${f.dir}/out.img`)), await sha256Hex(source));
    assert.ok(f.server.connectionsAccepted >= 8, `${f.server.connectionsAccepted} connections`);
  });
});

Deno.test("startNbdServer() accepts nbdcopy's flush and reports the zero region as a hole", async () => {
  await withServer({ sizeBytes: 8 * MiB }, async (f) => {
    const source = seededBytes(8 * MiB, 99);
    source.fill(0, 2 * MiB, 6 * MiB);
    await Deno.writeFile(`${f.dir}/in.img`, source);
    await runClientOk("nbdcopy", ["--flush", `${f.dir}/in.img`, f.uri], { timeoutMs: 60_000 });
    assert.ok(f.device.flushCount >= 1);
    const zeroRuns = f.device.blockStatus(0, 8 * MiB).filter((e) => e.zero);
    assert.ok(
      zeroRuns.some((e) => e.lengthBytes >= 4 * MiB),
      JSON.stringify(f.device.blockStatus(0, 8 * MiB)),
    );
  });
});
