/**
 * @module
 * The S3 backend of a benchmark run: Ceph RGW on loopback (started by the tests' own
 * `tests/support/rgw.ts`) plus the WAN delay proxy in front of it, in its own process.
 */

import { join } from "node:path";
import { Daemon, startDaemon } from "./process.ts";
import { deleteBucket, makeS3Client } from "./s3_client.ts";
import type { S3Backend } from "./targets.ts";

export interface RunningBackend extends S3Backend {
  delayMs: number;
  /** RGW's process ids, for the record (their RSS is not lsvd's). */
  stop(): Promise<void>;
}

/** The shape `startRgw` returns, read loosely so small naming differences do not matter. */
interface RgwHandle {
  endpoint: string;
  accessKeyId?: string;
  secretAccessKey?: string;
  accessKey?: string;
  secretKey?: string;
  createBucket(name?: string): Promise<unknown>;
  stop(): Promise<void>;
}

async function importStartRgw(
  repoRoot: string,
): Promise<(options?: Record<string, unknown>) => Promise<RgwHandle>> {
  const url = new URL(`file://${join(repoRoot, "tests/support/rgw.ts")}`).href;
  let module: Record<string, unknown>;
  try {
    module = await import(url);
  } catch (e) {
    throw new Error(`Cannot start Ceph RGW: tests/support/rgw.ts cannot be loaded (${(e as Error).message})`);
  }
  const start = module.startRgw;
  if (typeof start !== "function") {
    throw new Error("Cannot start Ceph RGW: tests/support/rgw.ts has no startRgw");
  }
  return start as (options?: Record<string, unknown>) => Promise<RgwHandle>;
}

export async function startBackend(
  repoRoot: string,
  options: { delayMs: number; memoryBytes: number },
): Promise<RunningBackend> {
  const startRgw = await importStartRgw(repoRoot);
  const rgw = await startRgw({ memstoreDeviceBytes: options.memoryBytes });
  let proxy: Daemon | undefined;
  try {
    const port = new URL(rgw.endpoint).port;
    proxy = await startDaemon(Deno.execPath(), {
      args: [
        "run",
        "--allow-net",
        join(repoRoot, "bench/delay_proxy.ts"),
        "--target",
        `127.0.0.1:${port}`,
        "--delay-ms",
        String(options.delayMs),
      ],
      readyPattern: /delay_proxy: listening on /,
      readyTimeoutMs: 60_000,
      label: "delay proxy",
    });
    const wanPort = proxy.output.match(/listening on [\d.]+:(\d+)/)?.[1];
    if (wanPort === undefined) throw new Error(`Cannot start the delay proxy: no port in\n${proxy.output}`);
    const accessKeyId = rgw.accessKeyId ?? rgw.accessKey;
    const secretAccessKey = rgw.secretAccessKey ?? rgw.secretKey;
    if (accessKeyId === undefined || secretAccessKey === undefined) {
      throw new Error("Cannot use Ceph RGW: startRgw returned no keys");
    }
    let buckets = 0;
    const runId = Date.now().toString(36);
    const daemon = proxy;
    const admin = makeS3Client({ endpoint: rgw.endpoint, accessKeyId, secretAccessKey }, 8);
    return {
      endpoint: rgw.endpoint.replace(/\/$/, ""),
      wanEndpoint: `http://127.0.0.1:${wanPort}`,
      accessKeyId,
      secretAccessKey,
      delayMs: options.delayMs,
      async newBucket() {
        const name = `bench-${runId}-${++buckets}`;
        await rgw.createBucket(name);
        return name;
      },
      dropBucket: (name) => deleteBucket(admin, name),
      async wanRequests() {
        const pattern = /^delay_proxy: requests /;
        const said = daemon.waitForLine(pattern, 10_000);
        daemon.child.kill("SIGUSR1");
        await said;
        const line = daemon.output.split("\n").filter((l) => pattern.test(l)).at(-1)!;
        return JSON.parse(line.replace(pattern, "")) as Record<string, number>;
      },
      async stop() {
        admin.destroy();
        await daemon.stop(5_000);
        await rgw.stop();
      },
    };
  } catch (e) {
    await proxy?.stop(2_000);
    await rgw.stop();
    throw e;
  }
}
