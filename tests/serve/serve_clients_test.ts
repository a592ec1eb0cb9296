/**
 * @module
 * Real NBD clients against the real daemon over the directory store: nbdinfo, nbdcopy (random data
 * in, restart, out, checksums match) and fio with crc32c verification through its nbd engine.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { Daemon, scratch, unixUri } from "../support/daemon.ts";
import { runClientOk, seededBytes, sha256Hex } from "../support/clients.ts";

const MiB = 1024 * 1024;

/** fio's nbd engine prints a line before the JSON report. */
function fioJson(stdout: string) {
  return JSON.parse(stdout.slice(stdout.indexOf("{")));
}

Deno.test("nbdinfo sees the export, lists it and maps data vs holes", async () => {
  const t = await scratch();
  try {
    const d = await Daemon.start({ args: ["--dir", t.store, "--size", "64M", "--socket", t.socket] });
    const uri = unixUri(t.socket);
    assert.equal((await runClientOk("nbdinfo", ["--size", uri])).stdout.trim(), String(64 * MiB));
    assert.match((await runClientOk("nbdinfo", ["--list", uri])).stdout, /export="lsvd"/);
    await runClientOk("qemu-io", ["-f", "raw", uri, "-c", "write -P 1 8M 2M", "-c", "flush"]);
    const map = (await runClientOk("nbdinfo", ["--map", uri])).stdout.trim().split("\n").map((l) =>
      l.trim().split(/\s+/)
    );
    // offset length type description
    assert.deepEqual(map.map((m) => [m[0], m[1], m[2]]), [
      ["0", String(8 * MiB), "3"],
      [String(8 * MiB), String(2 * MiB), "0"],
      [String(10 * MiB), String(54 * MiB), "3"],
    ]);
    assert.equal((await d.stop()).code, 0);
  } finally {
    await t.remove();
  }
});

Deno.test("nbdcopy copies random data in and, after a restart, out with the same checksum", async () => {
  const t = await scratch();
  try {
    const input = seededBytes(48 * MiB, 42);
    const inFile = join(t.dir, "in.bin"), outFile = join(t.dir, "out.bin");
    await Deno.writeFile(inFile, input);
    let d = await Daemon.start({
      args: ["--dir", t.store, "--size", "48M", "--socket", t.socket, "--object-size", "1M"],
    });
    await runClientOk("nbdcopy", ["--connections=4", "--flush", inFile, unixUri(t.socket)], {
      timeoutMs: 120_000,
    });
    assert.equal((await d.stop()).code, 0);
    d = await Daemon.start({ args: ["--dir", t.store, "--socket", t.socket, "--cache-size", "0"] });
    await runClientOk("nbdcopy", [unixUri(t.socket), outFile], { timeoutMs: 120_000 });
    assert.equal((await d.stop()).code, 0);
    assert.equal(await sha256Hex(await Deno.readFile(outFile)), await sha256Hex(input));
  } finally {
    await t.remove();
  }
});

Deno.test("fio verifies crc32c of random writes through its nbd engine, also after a restart", async () => {
  const t = await scratch();
  try {
    const common = [
      "--name=verify",
      "--ioengine=nbd",
      `--uri=${unixUri(t.socket)}`,
      "--size=32M",
      "--bs=4k",
      "--verify=crc32c",
      "--verify_state_save=0",
      "--randseed=7",
      "--output-format=json",
    ];
    let d = await Daemon.start({
      args: ["--dir", t.store, "--size", "32M", "--socket", t.socket, "--object-size", "512K"],
    });
    const w = await runClientOk("fio", [...common, "--rw=randwrite", "--iodepth=32", "--do_verify=1"], {
      timeoutMs: 180_000,
    });
    assert.equal(fioJson(w.stdout).jobs[0].error, 0);
    assert.equal((await d.stop()).code, 0);
    d = await Daemon.start({ args: ["--dir", t.store, "--socket", t.socket, "--cache-size", "0"] });
    const r = await runClientOk("fio", [...common, "--rw=randread", "--iodepth=16", "--verify_only"], {
      timeoutMs: 180_000,
    });
    const job = fioJson(r.stdout).jobs[0];
    assert.equal(job.error, 0);
    assert(job.read.io_bytes >= 32 * MiB, `verified ${job.read.io_bytes} bytes`);
    assert.equal((await d.stop()).code, 0);
  } finally {
    await t.remove();
  }
});
