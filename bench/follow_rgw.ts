/**
 * @module
 * Cold `--takeover` and warm `--standby` of a volume with N objects since its last checkpoint on a
 * real Ceph RGW (tests/support/rgw.ts starts one), the taking daemon's requests delayed by
 * bench/delay_proxy.ts (a fixed delay per request, like a distant region), in process: the writer
 * builds the log straight against RGW, holds the lease and stops (its lease no longer renewed);
 * the timed Volume.open goes through the proxy. Times from open() (cold) or from the lease being
 * taken (warm, which followed the log while the writer wrote) to open() resolving.
 *
 *   deno run -A bench/follow_rgw.ts [--objects 1000] [--delay-ms 20]
 */

import { parseArgs } from "node:util";
import { S3Store } from "../src/store/s3.ts";
import { Volume } from "../src/volume/volume.ts";
import { startRgw } from "../tests/support/rgw.ts";
import { startDelayProxy } from "./delay_proxy.ts";

const LEASE_MS = 3000;
const quiet = () => {};

function store(rgw: Awaited<ReturnType<typeof startRgw>>, endpoint: string): S3Store {
  return new S3Store({
    bucket: rgw.bucket,
    endpoint,
    forcePathStyle: true,
    region: rgw.region,
    credentials: { accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey },
  });
}

/** A writer that writes `objects` objects (one 4 KiB write + FLUSH each) under `prefix`, then stops dead. */
async function writeThenDie(s: S3Store, prefix: string, objects: number, meanwhile?: () => void) {
  const writer = await Volume.open({
    store: s,
    prefix,
    sizeBytes: 64 * 2 ** 20,
    log: quiet,
    gcIntervalMs: 0,
    checkpointEveryObjects: 1_000_000,
    leaseDurationMs: LEASE_MS,
  });
  meanwhile?.();
  const block = new Uint8Array(4096);
  for (let i = 0; writer.stats.lastSequence < objects; i++) {
    block[0] = i & 0xff;
    await writer.write((i % 16384) * 4096, block);
    await writer.flush();
  }
  writer.abandon(); // as kill -9: no checkpoint, no release, renewals stop
}

async function main() {
  const { values } = parseArgs({
    args: Deno.args,
    options: { objects: { type: "string", default: "1000" }, "delay-ms": { type: "string", default: "20" } },
  });
  const objects = Number(values.objects), delayMs = Number(values["delay-ms"]);
  const rgw = await startRgw();
  const url = new URL(rgw.endpoint);
  const proxy = startDelayProxy({ targetHostname: url.hostname, targetPort: Number(url.port), delayMs });
  const direct = store(rgw, rgw.endpoint), delayed = store(rgw, `http://127.0.0.1:${proxy.port}`);
  try {
    await writeThenDie(direct, "cold/", objects);
    const t0 = performance.now();
    const cold = await Volume.open({
      store: delayed,
      prefix: "cold/",
      log: quiet,
      gcIntervalMs: 0,
      leaseMode: "takeover",
    });
    const coldMs = performance.now() - t0;
    await cold.close();
    let takenMs = 0;
    let opening: Promise<Volume> | undefined;
    await writeThenDie(direct, "warm/", objects, () => {
      opening = Volume.open({
        store: delayed,
        prefix: "warm/",
        log: (l) => {
          if (l.startsWith("Taking the volume over")) takenMs = performance.now();
        },
        gcIntervalMs: 0,
        leaseMode: "standby",
        leaseDurationMs: LEASE_MS,
      });
    });
    const warm = await opening!;
    const warmMs = performance.now() - takenMs;
    await warm.close();
    console.log(
      `| ${objects} objects since the checkpoint, RGW + ${delayMs} ms per request | cold --takeover ${
        (coldMs / 1000).toFixed(2)
      } s | warm --standby ${(warmMs / 1000).toFixed(2)} s after taking the lease |`,
    );
  } finally {
    await direct.close();
    await delayed.close();
    await proxy.close();
    await rgw.stop();
  }
}

if (import.meta.main) await main();
