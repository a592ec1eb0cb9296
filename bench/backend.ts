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
  /** The gateway's daemons and the proxy: whose CPU a run can read. */
  pids(): number[];
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
  /** Where the daemons' ceph.conf lives (in their command lines): finds their processes. */
  directory?: string;
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
  options: {
    delayMs: number;
    memoryBytes: number;
    /**
     * "low": the gateway's daemons and the proxy run at nice 19, so on this machine's 2 cores they
     * take the CPU the set-up under test leaves over, as a remote store's would not compete at all.
     */
    priority?: "normal" | "low";
  },
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
    if (options.priority === "low") {
      if (rgw.directory === undefined) throw new Error("Cannot lower Ceph RGW's priority: no directory");
      for (const pid of [...pidsMentioning(rgw.directory), proxy.pid]) await renice(pid, 19);
    }
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
      pids: () => [...(rgw.directory === undefined ? [] : pidsMentioning(rgw.directory)), daemon.pid],
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

/** Processes whose command line mentions `needle`. */
export function pidsMentioning(needle: string): number[] {
  const pids: number[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name) || Number(entry.name) === Deno.pid) continue;
    try {
      if (Deno.readTextFileSync(`/proc/${entry.name}/cmdline`).includes(needle)) {
        pids.push(Number(entry.name));
      }
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

/** Sets the nice value of every thread of a process (setpriority applies to one thread on Linux). */
async function renice(pid: number, nice: number): Promise<void> {
  const tids = [...Deno.readDirSync(`/proc/${pid}/task`)].map((t) => t.name);
  const o = await new Deno.Command("renice", {
    args: ["-n", String(nice), "-p", ...tids],
    stdout: "null",
    stderr: "piped",
  })
    .output();
  if (!o.success) {
    throw new Error(`Cannot renice process ${pid}: ${new TextDecoder().decode(o.stderr).trim()}`);
  }
}
