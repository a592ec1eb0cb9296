/**
 * @module
 * Store outages through a real network fault: Ceph RGW behind a proxy the test switches to
 * refusing connections or black-holing them (tests/support/fault_proxy.ts). S3Store calls retried
 * by withRetries with `attemptsMax: Infinity` wait the outage out — many at once, on fewer
 * connection slots than calls — and finish with the right bytes once the store is back, while a
 * shared StoreHealth logs exactly one line when it goes and one when it returns.
 *
 * Outages last 12 s here; LSVD_LONG_TESTS=1 makes them 3 minutes.
 */

import assert from "node:assert/strict";
import { S3Store } from "../../src/store/s3.ts";
import { StoreHealth } from "../../src/store/health.ts";
import { withRetries } from "../../src/store/retry.ts";
import { systemClock } from "../../src/util/clock.ts";
import { seededRandom } from "../../src/util/random.ts";
import { type FaultMode, FaultProxy } from "../support/fault_proxy.ts";
import { type Rgw, startRgw } from "../support/rgw.ts";

const OUTAGE_MS = Deno.env.get("LSVD_LONG_TESTS") === "1" ? 180_000 : 12_000;
const CALLS = 16;

function storeThrough(rgw: Rgw, proxy: FaultProxy): S3Store {
  return new S3Store({
    bucket: rgw.bucket,
    endpoint: proxy.endpoint,
    region: rgw.region,
    forcePathStyle: true,
    credentials: { accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey },
    connections: 4,
    requestDeadlineMs: 2_000,
  });
}

function objectBody(i: number): Uint8Array {
  return Uint8Array.from({ length: 64 * 1024 + i }, (_, j) => (i * 31 + j) % 256);
}

/**
 * Puts CALLS objects and reads back one written before, all while the proxy is in `mode` for
 * OUTAGE_MS; checks every call finished only after the store came back, with the right bytes.
 */
async function rideOut(rgw: Rgw, proxy: FaultProxy, mode: FaultMode, prefix: string): Promise<string[]> {
  const lines: string[] = [];
  const health = new StoreHealth({ clock: systemClock, log: (line) => lines.push(line) });
  const store = storeThrough(rgw, proxy);
  const retry = { clock: systemClock, attemptsMax: Infinity, health, random: seededRandom(1) };
  try {
    await store.put(`${prefix}before`, objectBody(999));
    await proxy.setMode(mode);
    const outageStarted = performance.now();
    let restoredAt = Infinity;
    const finishedAt: number[] = [];
    const puts = Array.from(
      { length: CALLS },
      (_, i) =>
        withRetries(retry, () => store.put(`${prefix}${i}`, objectBody(i), { ifNoneMatch: true }))
          .then(() => finishedAt.push(performance.now())),
    );
    const read = withRetries(retry, () => store.get(`${prefix}before`));
    await new Promise((resolve) => setTimeout(resolve, OUTAGE_MS));
    assert.equal(finishedAt.length, 0, "no call can succeed while the store is away");
    assert(health.unreachable, "the outage is noticed");
    restoredAt = performance.now();
    await proxy.setMode("pass");
    await Promise.all(puts);
    assert.deepEqual((await read).body, objectBody(999));
    assert(finishedAt.every((t) => t >= restoredAt));
    const resumeMs = Math.max(...finishedAt) - restoredAt;
    // The longest wait after the store returns: one capped backoff (5 s), or one deadline for a
    // request sent into the black hole just before it lifted, plus the queue for 4 connections.
    assert(resumeMs < 12_000, `the calls took ${resumeMs} ms to finish after the store returned`);
    for (let i = 0; i < CALLS; i++) {
      assert.deepEqual((await store.get(`${prefix}${i}`)).body, objectBody(i), `object ${i}`);
    }
    assert(restoredAt - outageStarted >= OUTAGE_MS);
    return lines;
  } finally {
    await proxy.setMode("pass");
    await store.close();
  }
}

Deno.test({
  name: "withRetries() over S3Store rides out a store outage through a fault proxy in front of RGW",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    const rgw = await startRgw();
    const proxy = FaultProxy.forEndpoint(rgw.endpoint);
    try {
      for (const mode of ["refuse", "blackhole"] as const) {
        await t.step(
          `${OUTAGE_MS / 1000} s of ${mode === "refuse" ? "refused connections" : "black hole"}`,
          async () => {
            const lines = await rideOut(rgw, proxy, mode, `outage-${mode}/`);
            assert.equal(lines.length, 2, lines.join("\n"));
            const cause = mode === "refuse" ? /cannot reach .*ECONNREFUSED/ : /no answer within 2.1 s from/;
            assert.match(
              lines[0]!,
              /^Object storage unreachable \(Cannot .*\); retrying until it returns\.$/,
            );
            assert.match(lines[0]!, cause);
            const awayS = Number(lines[1]!.match(/^Object storage reachable again after (\d+) s\.$/)?.[1]);
            assert(awayS >= OUTAGE_MS / 1000 - 3 && awayS <= OUTAGE_MS / 1000 + 12, lines[1]);
          },
        );
      }
    } finally {
      await proxy.close();
      await rgw.stop();
    }
  },
});
