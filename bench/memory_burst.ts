/**
 * @module
 * The 512 MiB VM's memory run (tests/vm/memory_test.ts) on this machine, on a bucket or a directory,
 * so a change's effect on serve's peak RSS can be measured in seconds rather than a VM boot. Per round:
 * a fresh volume served with the VM's defaults (`--dirty-limit 28M --cache-size 14M --uploads 6`,
 * `--size 1G`), idle RSS 1 s after it is operational, then `nbdcopy --flush -- [ nbdkit random NM seed=7 ]`
 * (VmHWM after the write), then `nbdcopy -- URI - | head -c N | sha256sum` (VmHWM after the read-back,
 * the digest checked, the read's MiB/s and the daemon's CPU seconds for it: cold, the cache holds a
 * small part). The daemon is started through the checkout's bin/lsvd, with its Deno flags. The process gauges
 * (`lsvd_process_heap_*`, `lsvd_process_external_bytes`) are polled every 100 ms for their peaks.
 * The host runs 25–30 MiB above the VM on `--dir` (V8 sizes its heap by the machine's memory), so
 * figures compare only with each other (bench/RESULTS.md, "Issue 23: memory on a bucket").
 *
 * `deno run -A bench/memory_burst.ts --store bucket|dir [--rounds N] [--burst-mib 256] [--repo DIR]
 * [--rgw-ports MON,RGW] [--metrics-port P] [-- extra serve flags]`; `--repo` serves another checkout's
 * main.ts (a `git archive` of the base commit) for a before/after in one run; given more than once, the
 * rounds alternate between them (round n serves the ((n-1) mod count)th), each row naming its checkout.
 */

import { join } from "node:path";
import { type Rgw, startRgw } from "../tests/support/rgw.ts";
import { freePort } from "../tests/support/ports.ts";
import { cpuTicksOf } from "./process.ts";

const MiB = 1024 * 1024;
const VM_FLAGS = ["--dirty-limit", "28M", "--cache-size", "14M", "--uploads", "6"];

interface Phase {
  /** The daemon's user + system CPU seconds so far. */
  cpuSeconds: number;
  rssMiB: number;
  hwmMiB: number;
  gauges: Record<string, number>;
}

export interface BurstRound {
  idle: Phase;
  afterWrite: Phase;
  afterRead: Phase;
  peaks: Record<string, number>;
  writeMiBs: number;
  readMiBs: number;
  sameData: boolean;
}

async function shell(command: string): Promise<{ ms: number; out: string }> {
  const started = performance.now();
  const o = await new Deno.Command("bash", { args: ["-c", command], stdout: "piped", stderr: "inherit" })
    .output();
  if (!o.success) throw new Error(`Cannot run ${command}: exit ${o.code}`);
  return { ms: performance.now() - started, out: new TextDecoder().decode(o.stdout).trim() };
}

async function gauges(port: number): Promise<Record<string, number>> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^(lsvd_process_\w+) (\S+)$/gm)) out[m[1]!] = Number(m[2]);
  return out;
}

async function phase(pid: number, port: number): Promise<Phase> {
  const s = await Deno.readTextFile(`/proc/${pid}/status`);
  const kb = (k: string) => Number(s.match(new RegExp(`${k}:\\s+(\\d+)`))![1]) / 1024;
  const cpuSeconds = cpuTicksOf([pid]) / 100;
  return { cpuSeconds, rssMiB: kb("VmRSS"), hwmMiB: kb("VmHWM"), gauges: await gauges(port) };
}

/** One fresh volume: serve, idle, write the burst, read it back; stops the daemon. */
export async function burstRound(
  o: { repo: string; dir: string; rgw?: Rgw; burstMiB: number; metricsPort: number; extra: string[] },
): Promise<BurstRound> {
  const bucket = `burst-${Date.now()}`;
  if (o.rgw) await o.rgw.createBucket(bucket);
  const storeArgs = o.rgw
    ? ["--bucket", bucket, "--endpoint", o.rgw.endpoint, "--path-style"]
    : ["--dir", join(o.dir, `store-${Date.now()}`)];
  const socket = join(o.dir, "burst.sock");
  const env: Record<string, string> = o.rgw
    ? {
      AWS_ACCESS_KEY_ID: o.rgw.accessKeyId,
      AWS_SECRET_ACCESS_KEY: o.rgw.secretAccessKey,
      AWS_REGION: o.rgw.region,
    }
    : {};
  // The checkout's launcher, so its Deno and V8 flags are measured with it (bin/lsvd), with the
  // memory saver mode it chooses on the 512 MiB machine (this host has more memory).
  env.LSVD_MEMORY_SAVER = "on";
  const child = new Deno.Command(join(o.repo, "bin", "lsvd"), {
    args: [
      "serve",
      ...storeArgs,
      "--size",
      "1G",
      "--socket",
      socket,
      "--metrics",
      `127.0.0.1:${o.metricsPort}`,
      ...VM_FLAGS,
      ...o.extra,
    ],
    env,
    stdout: "null",
    stderr: "piped",
  }).spawn();
  try {
    return await measure(child, o, socket);
  } finally {
    try {
      child.kill("SIGTERM");
    } catch { /* exited */ }
    await child.status;
  }
}

async function measure(
  child: Deno.ChildProcess,
  o: { burstMiB: number; metricsPort: number },
  socket: string,
): Promise<BurstRound> {
  let log = "";
  const reading = (async () => {
    for await (const c of child.stderr.pipeThrough(new TextDecoderStream())) log += c;
  })();
  for (let waited = 0; !log.includes("Device is now operational."); waited += 100) {
    if (waited > 60_000) throw new Error(`lsvd serve did not start:\n${log}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  await new Promise((r) => setTimeout(r, 1000));
  const peaks: Record<string, number> = {};
  let polling = true;
  const poller = (async () => {
    while (polling) {
      for (const [k, v] of Object.entries(await gauges(o.metricsPort))) peaks[k] = Math.max(peaks[k] ?? 0, v);
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  const idle = await phase(child.pid, o.metricsPort);
  const uri = `nbd+unix:///lsvd?socket=${socket}`;
  const random = `[ nbdkit random ${o.burstMiB}M seed=7 ]`;
  const write = await shell(`nbdcopy --flush -- ${random} '${uri}'`);
  const afterWrite = await phase(child.pid, o.metricsPort);
  const read = await shell(`nbdcopy -- '${uri}' - | head -c ${o.burstMiB * MiB} | sha256sum`);
  const afterRead = await phase(child.pid, o.metricsPort);
  polling = false;
  await poller;
  const want = await shell(`nbdcopy -- ${random} - | sha256sum`);
  void reading;
  return {
    idle,
    afterWrite,
    afterRead,
    peaks,
    writeMiBs: o.burstMiB / (write.ms / 1000),
    readMiBs: o.burstMiB / (read.ms / 1000),
    sameData: read.out === want.out,
  };
}

function line(label: string, r: BurstRound): string {
  const f = (x: number | undefined) => x === undefined ? "-" : x.toFixed(1);
  const g = (k: string) => r.peaks[k] === undefined ? undefined : r.peaks[k]! / MiB;
  return `| ${label} | ${f(r.idle.rssMiB)} | ${f(r.afterWrite.hwmMiB)} | ${f(r.afterRead.hwmMiB)} | ${
    f(g("lsvd_process_external_bytes"))
  } | ${f(g("lsvd_process_heap_total_bytes"))} | ${r.afterRead.gauges.lsvd_process_gc_collections ?? "-"} | ${
    f(r.writeMiBs)
  } | ${f(r.readMiBs)} | ${f(r.afterRead.cpuSeconds - r.afterWrite.cpuSeconds)} | ${
    r.sameData ? "yes" : "NO"
  } |`;
}

/** Every value given for a repeatable option (`--repo A --repo B`). */
function options(args: string[], name: string): string[] {
  return args.flatMap((a, i) => a === name && args[i + 1] !== undefined ? [args[i + 1]!] : []);
}

function option(args: string[], name: string, fallback: string): string {
  const i = args.indexOf(name);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1]! : fallback;
}

export async function main(args: string[]): Promise<number> {
  const dashes = args.indexOf("--");
  const own = dashes >= 0 ? args.slice(0, dashes) : args;
  const store = option(own, "--store", "bucket");
  const rounds = Number(option(own, "--rounds", "1"));
  const ports = option(own, "--rgw-ports", "");
  const dir = await Deno.makeTempDir({ prefix: "lsvd-burst-" });
  const rgw = store === "bucket"
    ? await startRgw(ports === "" ? {} : { ports: ports.split(",").map(Number) as [number, number] })
    : undefined;
  console.log(
    "| store, round | idle RSS | peak after write | peak after read | peak external | peak heap reserved | collections | write MiB/s | read MiB/s | read CPU s | same data |",
  );
  console.log("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
  let failed = 0;
  const given = options(own, "--repo");
  const repos = given.length > 0 ? given : [new URL("..", import.meta.url).pathname];
  try {
    for (let n = 1; n <= rounds; n++) {
      const repo = repos[(n - 1) % repos.length]!;
      const r = await burstRound({
        repo,
        dir,
        ...(rgw === undefined ? {} : { rgw }),
        burstMiB: Number(option(own, "--burst-mib", "256")),
        metricsPort: Number(option(own, "--metrics-port", String(freePort()))),
        extra: dashes >= 0 ? args.slice(dashes + 1) : [],
      });
      if (!r.sameData) failed++;
      console.log(line(repos.length > 1 ? `${store} ${n} ${repo}` : `${store} ${n}`, r));
    }
  } finally {
    await rgw?.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
  return failed === 0 ? 0 : 1;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
