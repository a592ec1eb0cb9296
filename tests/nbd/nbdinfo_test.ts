/**
 * @module
 * nbdinfo against the server: export size and flags, --list, and --map telling holes from data.
 */

import assert from "node:assert/strict";
import { runClientOk } from "../support/clients.ts";
import { withServer } from "./fixture.ts";

const MiB = 1024 * 1024;

Deno.test("startNbdServer() reports size, block sizes and flags to nbdinfo", async () => {
  await withServer({ sizeBytes: 96 * MiB }, async (f) => {
    const { stdout } = await runClientOk("nbdinfo", ["--json", f.uri]);
    const info = JSON.parse(stdout);
    const exp = info.exports[0];
    assert.equal(exp["export-size"], 96 * MiB);
    assert.equal(exp["block_size_minimum"], 512);
    assert.equal(exp["block_size_preferred"], 4096);
    assert.equal(exp["block_size_maximum"], 32 * MiB);
    assert.equal(exp["can_multi_conn"], true);
    assert.equal(exp["can_fua"], true);
    assert.equal(exp["can_trim"], true);
    assert.equal(exp["can_zero"], true);
    assert.equal(exp["can_fast_zero"], true);
    assert.equal(exp["is_read_only"], false);
    assert.deepEqual(exp["contexts"], ["base:allocation"]);
    assert.equal(info["protocol"], "newstyle-fixed");
  });
});

Deno.test("startNbdServer() lists its one export, with description, to nbdinfo --list", async () => {
  await withServer({ server: { exportName: "vol1", description: "test volume" } }, async (f) => {
    const { stdout } = await runClientOk("nbdinfo", ["--list", "--json", f.uri]);
    const exports = JSON.parse(stdout).exports;
    assert.equal(exports.length, 1);
    assert.equal(exports[0]["export-name"], "vol1");
    assert.equal(exports[0]["description"], "test volume");
  });
});

Deno.test("startNbdServer() maps holes and data for nbdinfo --map", async () => {
  await withServer({ sizeBytes: 16 * MiB }, async (f) => {
    await f.device.write(4 * MiB, new Uint8Array(2 * MiB).fill(7));
    await f.device.write(10 * MiB, new Uint8Array(4096).fill(1));
    const { stdout } = await runClientOk("nbdinfo", ["--map", "--json", f.uri]);
    const map = JSON.parse(stdout).map((e: { offset: number; length: number; type: number }) => [
      e.offset,
      e.length,
      e.type,
    ]);
    assert.deepEqual(map, [
      [0, 4 * MiB, 3],
      [4 * MiB, 2 * MiB, 0],
      [6 * MiB, 4 * MiB, 3],
      [10 * MiB, 4096, 0],
      [10 * MiB + 4096, 6 * MiB - 4096, 3],
    ]);
  });
});

Deno.test("startNbdServer() serves the export under the empty default name", async () => {
  await withServer({ sizeBytes: 8 * MiB }, async (f) => {
    const { stdout } = await runClientOk("nbdinfo", ["--size", `nbd+unix:///?socket=${f.socketPath}`]);
    assert.equal(stdout.trim(), String(8 * MiB));
  });
});
