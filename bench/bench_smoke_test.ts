/**
 * @module
 * Keeps the benchmark harness from rotting: the delay proxy really delays each request on a
 * keep-alive connection, and `bench/run.ts` at its tiniest size runs every workload against the
 * targets that start quickly (nbdkit memory, the raw baselines, lsvd on the directory store and
 * on Ceph RGW) plus the memory and restart phases, and fails when any measurement errors or
 * yields no figure.
 */

import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { startDelayProxy } from "./delay_proxy.ts";
import { run } from "./process.ts";
import { randReadBeyondCacheWan, WORKLOADS } from "./workloads.ts";

const REPO_ROOT = dirname(dirname(fileURLToPath(import.meta.url)));
const SMOKE_TARGETS = ["nbdkit-memory", "raw-dir", "raw-s3", "lsvd-dir", "lsvd-rgw"];

Deno.test("startDelayProxy() delays every request on a keep-alive connection once", async () => {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => new Response("ok"));
  const proxy = startDelayProxy({ targetHostname: "127.0.0.1", targetPort: server.addr.port, delayMs: 60 });
  try {
    const client = Deno.createHttpClient({ http2: false });
    const times: number[] = [];
    for (let i = 0; i < 3; i++) {
      const t0 = performance.now();
      const response = await fetch(`http://127.0.0.1:${proxy.port}/`, { client });
      assert.equal(await response.text(), "ok");
      times.push(performance.now() - t0);
    }
    client.close();
    for (const ms of times) assert.ok(ms >= 55, `a request took ${ms.toFixed(1)} ms, expected ≥ 60 ms`);
    assert.equal(proxy.delayedExchanges, 3, "one delay per request, over one kept-alive connection");
    assert.deepEqual(proxy.requestsByMethod, { GET: 3 });
  } finally {
    await proxy.close();
    await server.shutdown();
  }
});

Deno.test({
  name: "bench/run.ts --scale tiny measures every workload on the quick targets without an error",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const jsonPath = await Deno.makeTempFile({ prefix: "lsvd-bench-smoke-", suffix: ".json" });
    try {
      const result = await run(Deno.execPath(), [
        "run",
        "-A",
        join(REPO_ROOT, "bench/run.ts"),
        "--scale",
        "tiny",
        "--targets",
        SMOKE_TARGETS.join(","),
        "--json",
        jsonPath,
      ], { timeoutMs: 170_000 });
      assert.equal(
        result.code,
        0,
        `the harness failed:\n${result.stdout.slice(-3000)}\n${result.stderr.slice(-3000)}`,
      );
      const report = JSON.parse(await Deno.readTextFile(jsonPath));
      assert.deepEqual(report.errors, []);
      // The disk cache's workload runs only when named (against lsvd-rgw and lsvd-rgw-diskcache).
      for (const w of WORKLOADS.filter((w) => w !== randReadBeyondCacheWan)) {
        for (const target of ["nbdkit-memory", "lsvd-dir", "lsvd-rgw"]) {
          const value = report.samples[w.name]?.[target]?.[0]?.value;
          assert.ok(Number.isFinite(value) && value > 0, `${w.name} on ${target} gave ${value}`);
        }
      }
      assert.ok(report.samples["randwrite-4k"]["raw-dir"][0].value > 0);
      assert.ok(report.samples["randread-4k-cold-wan"]["raw-s3"][0].littleBound > 0);
      for (const kind of ["sequential", "random-4k"]) {
        assert.ok(Number.isFinite(report.memory[kind]?.[0]?.peakRssMiB));
        assert.ok(
          Number.isFinite(report.memory[kind]?.[0]?.mapMiB),
          "the extent map size is read from --metrics",
        );
      }
      assert.ok(Object.values(report.restart).length > 0, "the restart phase ran");
      assert.ok(
        report.checks.some((c: { status: string }) => c.status !== "n/a"),
        "some targets were checked",
      );
    } finally {
      await Deno.remove(jsonPath).catch(() => {});
    }
  },
});

Deno.test({
  name:
    "bench/run.ts --scale tiny --workloads postgres,postgres-select runs pgbench (and -S) on every set-up and counts PUTs and bytes",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const jsonPath = await Deno.makeTempFile({ prefix: "lsvd-bench-smoke-pg-", suffix: ".json" });
    try {
      const result = await run(Deno.execPath(), [
        "run",
        "-A",
        join(REPO_ROOT, "bench/run.ts"),
        "--scale",
        "tiny",
        "--workloads",
        "postgres,postgres-select",
        "--targets",
        "lsvd-dir,lsvd-rgw,lsvd-rgw-diskcache,nbdkit-memory",
        "--no-memory",
        "--no-restart",
        "--json",
        jsonPath,
      ], { timeoutMs: 240_000 });
      assert.equal(
        result.code,
        0,
        `the harness failed:\n${result.stdout.slice(-3000)}\n${result.stderr.slice(-3000)}`,
      );
      const report = JSON.parse(await Deno.readTextFile(jsonPath));
      assert.deepEqual(report.errors, []);
      const runs = report.postgres as { setup: string; clients: number; figures: Record<string, number> }[];
      const setups = [
        "local-loop",
        "nbdkit-memory-fuse",
        "nbdkit-file-fuse",
        "lsvd-dir-each",
        "lsvd-dir-group",
        "lsvd-rgw-each",
        "lsvd-rgw-group",
        "lsvd-rgw-group-10pps",
        "lsvd-dir-journal",
        "lsvd-rgw-journal",
        "local-loop-select",
        "lsvd-rgw-select",
        "lsvd-rgw-diskcache-select",
      ];
      assert.deepEqual([...new Set(runs.map((r) => r.setup))], setups);
      for (const r of runs) {
        const f = r.figures;
        assert.ok(f.tps! > 0 && f.latP99Ms! >= f.latP50Ms!, `${r.setup}: ${JSON.stringify(f)}`);
        if (r.setup.endsWith("-select")) {
          // Select-only writes nothing; with --cache-dir the reads were served from the disk cache.
          if (r.setup.includes("diskcache")) {
            assert.ok(f.diskCacheHits! > 0, `${r.setup}: ${JSON.stringify(f)}`);
          }
          continue;
        }
        assert.ok(f.walBytesPerTxn! > 0, `${r.setup}: ${JSON.stringify(f)}`);
        if (r.setup === "local-loop" || r.setup.startsWith("nbdkit-")) continue;
        assert.ok(
          f.putsPerTxn! > 0 && f.bucketBytesPerTxn! > 0 && f.costUsdPerHour! > 0,
          `${r.setup}: ${JSON.stringify(f)}`,
        );
        if (r.setup.startsWith("lsvd-rgw")) {
          assert.ok(Number.isFinite(f.getsPerTxn), `${r.setup} counted no GETs`);
        }
      }
      const checks = report.checks.filter((c: { name: string }) => c.name.startsWith("Postgres"));
      assert.equal(checks.length, 5);
      for (const c of checks) assert.notEqual(c.status, "n/a", c.name);
    } finally {
      await Deno.remove(jsonPath).catch(() => {});
    }
  },
});

Deno.test({
  name: "bench/tools.ts --scale tiny measures import, export and verify against raw PUT and GET",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const jsonPath = await Deno.makeTempFile({ prefix: "lsvd-bench-tools-smoke-", suffix: ".json" });
    try {
      const result = await run(
        Deno.execPath(),
        ["run", "-A", join(REPO_ROOT, "bench/tools.ts"), "--scale", "tiny", "--json", jsonPath],
        { timeoutMs: 170_000 },
      );
      assert.equal(
        result.code,
        0,
        `bench/tools.ts failed:\n${result.stdout.slice(-3000)}\n${result.stderr.slice(-3000)}`,
      );
      const report = JSON.parse(await Deno.readTextFile(jsonPath));
      for (const figure of ["raw-put", "import", "raw-get", "export", "verify"]) {
        const value = report.samples[figure]?.[0];
        assert.ok(Number.isFinite(value) && value > 0, `${figure} gave ${value}`);
      }
      assert.equal(report.checks.length, 3);
      assert.ok(report.checks.every((c: { status: string }) => c.status !== "n/a"));
    } finally {
      await Deno.remove(jsonPath).catch(() => {});
    }
  },
});
