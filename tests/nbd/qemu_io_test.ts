/**
 * @module
 * qemu-io (qemu's own NBD client, `-f raw`) writes patterns with FUA, flushes, zeroes, and reads
 * them back with pattern verification.
 */

import assert from "node:assert/strict";
import { runClient, runClientOk } from "../support/clients.ts";
import { withServer } from "./fixture.ts";

function qemuIo(uri: string, commands: string[]) {
  return runClientOk("qemu-io", ["-f", "raw", ...commands.flatMap((c) => ["-c", c]), uri], {
    timeoutMs: 60_000,
  });
}

Deno.test("startNbdServer() stores qemu-io pattern writes with FUA and flush, and reads them back", async () => {
  await withServer({ sizeBytes: 64 * 1024 * 1024 }, async (f) => {
    await qemuIo(f.uri, ["write -P 0xab -f 0 1M", "write -P 0xcd 4M 64k", "flush"]);
    assert.ok(f.device.fuaCount >= 1, "FUA was not passed to the device");
    assert.ok(f.device.flushCount >= 1, "flush did not reach the device");
    const { stdout } = await qemuIo(f.uri, ["read -P 0xab 0 1M", "read -P 0xcd 4M 64k", "read -P 0 1M 3M"]);
    assert.doesNotMatch(stdout, /Pattern verification failed/);
    const direct = new Uint8Array(4096);
    await f.device.read(4 * 1024 * 1024, direct);
    assert.ok(direct.every((b) => b === 0xcd));
  });
});

Deno.test("startNbdServer() fails qemu-io pattern verification on wrong data", async () => {
  await withServer({ sizeBytes: 16 * 1024 * 1024 }, async (f) => {
    await qemuIo(f.uri, ["write -P 0x11 0 64k"]);
    const result = await runClient("qemu-io", ["-f", "raw", "-c", "read -P 0x22 0 64k", f.uri]);
    assert.match(result.stdout + result.stderr, /Pattern verification failed/);
  });
});

Deno.test("startNbdServer() zeroes ranges for qemu-io write -z, with and without unmap", async () => {
  await withServer({ sizeBytes: 16 * 1024 * 1024 }, async (f) => {
    await qemuIo(f.uri, ["write -P 0x5a 0 2M", "write -z 64k 128k", "write -z -u 1M 512k", "flush"]);
    const { stdout } = await qemuIo(f.uri, [
      "read -P 0x5a 0 64k",
      "read -P 0 64k 128k",
      "read -P 0x5a 192k 832k",
      "read -P 0 1M 512k",
      "read -P 0x5a 1536k 512k",
    ]);
    assert.doesNotMatch(stdout, /Pattern verification failed/);
  });
});
