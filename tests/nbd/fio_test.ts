/**
 * @module
 * fio's nbd engine with crc32c verification: several jobs (one connection each) and a deep queue
 * per connection, over the unix socket and over TCP.
 */

import assert from "node:assert/strict";
import { runClientOk } from "../support/clients.ts";
import { withServer } from "./fixture.ts";

const MiB = 1024 * 1024;

function fioArgs(uri: string, extra: string[]): string[] {
  return [
    "--name=verify",
    "--ioengine=nbd",
    `--uri=${uri}`,
    "--rw=randwrite",
    "--bsrange=4k-256k",
    "--bs_unaligned=0",
    "--iodepth=32",
    "--numjobs=4",
    "--size=8M",
    "--offset_increment=8M",
    "--verify=crc32c",
    "--verify_fatal=1",
    "--do_verify=1",
    "--group_reporting",
    "--output-format=json",
    ...extra,
  ];
}

function totalErrors(stdout: string): number {
  const report = JSON.parse(stdout.slice(stdout.indexOf("{")));
  return report.jobs.reduce((n: number, job: { error: number }) => n + job.error, 0);
}

Deno.test("startNbdServer() passes fio crc32c verification with 4 jobs at queue depth 32", async () => {
  await withServer({ sizeBytes: 32 * MiB }, async (f) => {
    const { stdout } = await runClientOk("fio", fioArgs(f.uri, []), { timeoutMs: 120_000, cwd: f.dir });
    assert.equal(totalErrors(stdout), 0);
    const written = f.device.blockStatus(0, 32 * MiB).filter((e) => !e.zero).reduce(
      (n, e) => n + e.lengthBytes,
      0,
    );
    assert.ok(written > 16 * MiB, `only ${written} bytes reached the device`);
  });
});

Deno.test("startNbdServer() passes fio crc32c verification over TCP", async () => {
  await withServer(
    { sizeBytes: 32 * MiB, server: { listen: { hostname: "127.0.0.1", port: 0 } } },
    async (f) => {
      const tcp = f.server.tcp;
      assert.ok(tcp !== undefined && tcp.port > 0);
      const uri = `nbd://127.0.0.1:${tcp.port}/lsvd`;
      const { stdout } = await runClientOk("fio", fioArgs(uri, ["--numjobs=2"]), {
        timeoutMs: 120_000,
        cwd: f.dir,
      });
      assert.equal(totalErrors(stdout), 0);
    },
  );
});
