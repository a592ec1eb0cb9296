/**
 * @module
 * Concurrent commits without Postgres, in seconds: fio's nbd engine with 16 connections, each an
 * 8 KiB random write then a FLUSH (what pgbench's commits do to the device), against `nbdkit file` on
 * a local sparse file (each FLUSH an fdatasync on the same disk) and against `lsvd serve --journal`
 * on a directory store or on Ceph RGW behind the bench's 20 ms delay proxy. A fresh server per run,
 * the set-ups alternated round by round; prints IOPS, write latency (mean, p99), FLUSH latency (mean,
 * p99) and the server's CPU per commit, so the same-round ratio is what to read on a shared machine.
 *
 * `deno run -A bench/commits.ts [--store bucket|dir] [--rounds N] [--seconds S] [--jobs N]
 * [--repo DIR ...] [-- extra serve flags]`; each `--repo` (default this checkout) is one lsvd set-up
 * (a `git worktree` of another commit for a before/after); `DENO_V8_FLAGS` reaches the daemons.
 */

import { join } from "node:path";
import { startRgw } from "../tests/support/rgw.ts";
import { startDelayProxy } from "./delay_proxy.ts";

interface Run {
  iops: number;
  writeMeanUs: number;
  writeP99Ms: number;
  flushMeanUs: number;
  flushP99Ms: number;
  cpuUsPerCommit: number;
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
    repos: repos.length > 0 ? repos : [new URL("..", import.meta.url).pathname],
    extra: args.indexOf("--") >= 0 ? args.slice(args.indexOf("--") + 1) : [],
  };
}

function cpuTicks(pid: number): number {
  const fields = Deno.readTextFileSync(`/proc/${pid}/stat`).split(") ")[1]!.split(" ");
  return Number(fields[11]) + Number(fields[12]); // utime + stime, in clock ticks (100 a second)
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
  const rgw = o.store === "bucket" ? await startRgw() : undefined;
  const target = rgw === undefined ? undefined : new URL(rgw.endpoint);
  const proxy = target === undefined
    ? undefined
    : startDelayProxy({ targetHostname: target.hostname, targetPort: Number(target.port), delayMs: 20 });
  const env: Record<string, string> = rgw === undefined ? {} : {
    AWS_ACCESS_KEY_ID: rgw.accessKeyId,
    AWS_SECRET_ACCESS_KEY: rgw.secretAccessKey,
    AWS_REGION: rgw.region,
  };
  const setups = ["nbdkit-file", ...o.repos.map((_, i) => `lsvd-${i + 1}`)];
  console.log(`lsvd set-ups: ${o.repos.map((r, i) => `lsvd-${i + 1} = ${r}`).join(", ")}; store ${o.store}`);
  console.log(
    "| round | set-up | IOPS | ÷ nbdkit | write mean µs | write p99 ms | FLUSH mean µs | FLUSH p99 ms | CPU µs/commit |",
  );
  console.log("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
  try {
    for (let round = 1; round <= o.rounds; round++) {
      let nbdkitIops = NaN;
      for (const setup of setups) {
        const dir = await Deno.makeTempDir({ prefix: "lsvd-commits-" });
        const socket = join(dir, "sock");
        let command: Deno.Command;
        if (setup === "nbdkit-file") {
          await Deno.writeFile(join(dir, "img"), new Uint8Array(0));
          await Deno.truncate(join(dir, "img"), 1 << 30);
          command = new Deno.Command("nbdkit", { args: ["-f", "-U", socket, "file", join(dir, "img")] });
        } else {
          const repo = o.repos[Number(setup.slice(5)) - 1]!;
          const bucket = `commits-${round}-${setup}-${Date.now()}`;
          if (rgw !== undefined) await rgw.createBucket(bucket);
          const store = proxy === undefined
            ? ["--dir", join(dir, "store")]
            : ["--bucket", bucket, "--endpoint", `http://127.0.0.1:${proxy.port}`, "--path-style"];
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
          const cpu0 = cpuTicks(child.pid);
          const r = await fio(socket, o.seconds, o.jobs);
          const cpuUs = (cpuTicks(child.pid) - cpu0) * 10_000 / (r.iops * o.seconds);
          if (setup === "nbdkit-file") nbdkitIops = r.iops;
          console.log(
            `| ${round} | ${setup} | ${r.iops.toFixed(0)} | ${(r.iops / nbdkitIops).toFixed(2)} | ${
              r.writeMeanUs.toFixed(0)
            } | ${r.writeP99Ms.toFixed(1)} | ${r.flushMeanUs.toFixed(0)} | ${r.flushP99Ms.toFixed(1)} | ${
              cpuUs.toFixed(0)
            } |`,
          );
        } finally {
          child.kill("SIGTERM");
          await child.status;
          await Deno.remove(dir, { recursive: true });
        }
      }
    }
  } finally {
    await proxy?.close();
    await rgw?.stop();
  }
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
