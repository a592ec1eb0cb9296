/**
 * @module
 * Concurrent commits without Postgres, in seconds: fio's nbd engine with 16 connections, each an
 * 8 KiB random write then a FLUSH (what pgbench's commits do to the device), against `nbdkit file` on
 * a local sparse file (each FLUSH an fdatasync on the same disk) and against `lsvd serve --journal`
 * on a directory store or on Ceph RGW behind the bench's 20 ms delay proxy. A fresh server per run,
 * the set-ups alternated round by round; prints IOPS, write latency (mean, p99), FLUSH latency (mean,
 * p99) and the server's CPU per commit, so the same-round ratio is what to read on a shared machine;
 * on a bucket also the CPU per commit of the local Ceph and the delay proxy, which share the cores
 * here (a remote store would not); `--store-low-priority` runs them at nice 19, to see the set-ups
 * without that competition.
 *
 * `deno run -A bench/commits.ts [--store bucket|dir] [--rounds N] [--seconds S] [--jobs N]
 * [--repo DIR ...] [--floor] [--store-low-priority] [-- extra serve flags]`; each `--repo` (default this checkout) is one lsvd
 * set-up (a `git worktree` of another commit for a before/after); `DENO_V8_FLAGS` reaches the daemons.
 * `--floor` adds `deno-file` (bench/nbd_file_server.ts): lsvd's NBD front end under Deno serving a
 * local file with nothing behind it, the floor for what the runtime and the NBD layer cost.
 */

import { join } from "node:path";
import { type RunningBackend, startBackend } from "./backend.ts";
import { cpuTicksOf } from "./process.ts";

interface Run {
  iops: number;
  writeMeanUs: number;
  writeP99Ms: number;
  flushMeanUs: number;
  flushP99Ms: number;
  cpuUsPerCommit: number;
}

/** The local object store's CPU: Ceph's daemons and the delay proxy, which share the cores here. */
function storeTicks(backend: RunningBackend | undefined): number {
  return backend === undefined ? 0 : cpuTicksOf(backend.pids());
}

function options(args: string[]) {
  const own = args.indexOf("--") >= 0 ? args.slice(0, args.indexOf("--")) : args;
  const one = (name: string, fallback: string) => {
    const i = own.lastIndexOf(name);
    return i >= 0 && own[i + 1] !== undefined ? own[i + 1]! : fallback;
  };
  const repos = own.flatMap((a, i) => (a === "--repo" && own[i + 1] !== undefined ? [own[i + 1]!] : []));
  const store = one("--store", "bucket");
  if (store !== "bucket" && store !== "dir") throw new Error(`--store must be bucket or dir, not ${store}`);
  return {
    store,
    rounds: Number(one("--rounds", "3")),
    seconds: Number(one("--seconds", "8")),
    jobs: Number(one("--jobs", "16")),
    floor: own.includes("--floor"),
    storePriority: own.includes("--store-low-priority") ? "low" as const : "normal" as const,
    repos: repos.length > 0 ? repos : [new URL("..", import.meta.url).pathname],
    extra: args.indexOf("--") >= 0 ? args.slice(args.indexOf("--") + 1) : [],
  };
}

async function waitForSocket(path: string, child: Deno.ChildProcess): Promise<void> {
  for (let i = 0; i < 600; i++) {
    try {
      await Deno.stat(path);
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  child.kill("SIGKILL");
  throw new Error(`no socket ${path} after 60 s`);
}

async function fio(socket: string, seconds: number, jobs: number): Promise<Omit<Run, "cpuUsPerCommit">> {
  const o = await new Deno.Command("fio", {
    args: [
      "--name=commit",
      "--ioengine=nbd",
      `--uri=nbd+unix:///?socket=${socket}`,
      "--rw=randwrite",
      "--bs=8k",
      "--size=256M",
      "--fsync=1",
      "--time_based",
      `--runtime=${seconds}`,
      "--iodepth=1",
      `--numjobs=${jobs}`,
      "--group_reporting",
      "--output-format=json",
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(o.stdout);
  if (!o.success) throw new Error(`fio failed: ${new TextDecoder().decode(o.stderr).trim()}`);
  const job = JSON.parse(text.slice(text.indexOf("{"))).jobs[0];
  const p99 = (lat: { percentile?: Record<string, number> }) => (lat.percentile?.["99.000000"] ?? NaN) / 1e6;
  return {
    iops: job.write.iops,
    writeMeanUs: job.write.clat_ns.mean / 1000,
    writeP99Ms: p99(job.write.clat_ns),
    flushMeanUs: job.sync.lat_ns.mean / 1000,
    flushP99Ms: p99(job.sync.lat_ns),
  };
}

export async function main(args: string[]): Promise<number> {
  const o = options(args);
  const repoRoot = new URL("..", import.meta.url).pathname;
  const backend = o.store === "bucket"
    ? await startBackend(repoRoot, { delayMs: 20, memoryBytes: 3 * 2 ** 30, priority: o.storePriority })
    : undefined;
  const env: Record<string, string> = backend === undefined ? {} : {
    AWS_ACCESS_KEY_ID: backend.accessKeyId,
    AWS_SECRET_ACCESS_KEY: backend.secretAccessKey,
    AWS_REGION: "us-east-1",
  };
  const setups = [
    "nbdkit-file",
    ...(o.floor ? ["deno-file"] : []),
    ...o.repos.map((_, i) => `lsvd-${i + 1}`),
  ];
  console.log(
    `lsvd set-ups: ${o.repos.map((r, i) => `lsvd-${i + 1} = ${r}`).join(", ")}; store ${o.store}${
      backend === undefined ? "" : `, its priority ${o.storePriority}`
    }`,
  );
  console.log(
    "| round | set-up | IOPS | ÷ nbdkit | write mean µs | write p99 ms | FLUSH mean µs | FLUSH p99 ms | CPU µs/commit |" +
      (backend === undefined ? "" : " store CPU µs/commit |"),
  );
  console.log(
    "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |" +
      (backend === undefined ? "" : " ---: |"),
  );
  try {
    for (let round = 1; round <= o.rounds; round++) {
      let nbdkitIops = NaN;
      for (const setup of setups) {
        const dir = await Deno.makeTempDir({ prefix: "lsvd-commits-" });
        const socket = join(dir, "sock");
        let command: Deno.Command;
        let bucket: string | undefined;
        if (setup === "nbdkit-file" || setup === "deno-file") {
          await Deno.writeFile(join(dir, "img"), new Uint8Array(0));
          await Deno.truncate(join(dir, "img"), 1 << 30);
          command = setup === "nbdkit-file"
            ? new Deno.Command("nbdkit", { args: ["-f", "-U", socket, "file", join(dir, "img")] })
            : new Deno.Command(Deno.execPath(), {
              args: [
                "run",
                "-A",
                new URL("nbd_file_server.ts", import.meta.url).pathname,
                socket,
                join(dir, "img"),
              ],
              stdout: "null",
            });
        } else {
          const repo = o.repos[Number(setup.slice(5)) - 1]!;
          bucket = await backend?.newBucket();
          const store = backend === undefined || bucket === undefined
            ? ["--dir", join(dir, "store")]
            : ["--bucket", bucket, "--endpoint", backend.wanEndpoint, "--path-style"];
          command = new Deno.Command(Deno.execPath(), {
            args: [
              "run",
              "-A",
              join(repo, "main.ts"),
              "serve",
              ...store,
              "--journal",
              join(dir, "journal"),
              "--size",
              "1G",
              "--socket",
              socket,
              "--gc-interval",
              "off",
              ...o.extra,
            ],
            env,
            stdout: "null",
            stderr: "null",
          });
        }
        const child = command.spawn();
        try {
          await waitForSocket(socket, child);
          await new Promise((r) => setTimeout(r, 1000));
          const cpu0 = cpuTicksOf([child.pid]);
          const store0 = storeTicks(backend);
          const r = await fio(socket, o.seconds, o.jobs);
          const cpuUs = (cpuTicksOf([child.pid]) - cpu0) * 10_000 / (r.iops * o.seconds);
          const storeUs = (storeTicks(backend) - store0) * 10_000 / (r.iops * o.seconds);
          if (setup === "nbdkit-file") nbdkitIops = r.iops;
          console.log(
            `| ${round} | ${setup} | ${r.iops.toFixed(0)} | ${(r.iops / nbdkitIops).toFixed(2)} | ${
              r.writeMeanUs.toFixed(0)
            } | ${r.writeP99Ms.toFixed(1)} | ${r.flushMeanUs.toFixed(0)} | ${r.flushP99Ms.toFixed(1)} | ${
              cpuUs.toFixed(0)
            } |${backend === undefined ? "" : ` ${storeUs.toFixed(0)} |`}`,
          );
        } finally {
          child.kill("SIGTERM");
          await child.status;
          await Deno.remove(dir, { recursive: true });
          if (bucket !== undefined) await backend?.dropBucket(bucket);
        }
      }
    }
  } finally {
    await backend?.stop();
  }
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
