/**
 * @module
 * Resident memory of one lsvd daemon across a long random 4 KiB fill, step by step: the curve that
 * shows whether RSS follows what the daemon holds (the extent map, fixed buffers) or how much it has
 * written. bench/memory.ts checks a two-point growth figure; this prints every step so a slow climb
 * (allocator fragmentation) can be told from GC-timing noise (which goes up and down).
 *
 *   deno run -A bench/memory_growth.ts [--steps 8] [--step-gib 1] [--env NAME=VALUE ...] [--main PATH]
 *
 * Each step writes a fresh `--step-gib` region once, in random order (fio, QD32, ends with a FLUSH),
 * then waits a second and reads VmRSS, VmHWM and the daemon's `lsvd_map_bytes`. The store is a
 * directory under the system temp dir, removed afterwards. `--env` passes environment variables to
 * the daemon (e.g. GLIBC_TUNABLES=... to compare allocator settings); `--main` runs another
 * checkout's main.ts (to compare before and after a change).
 */

import { parseArgs } from "node:util";
import { join } from "node:path";
import { type FioJob, runFio } from "./fio.ts";
import { procStatusBytes, startDaemon, waitForPath } from "./process.ts";
import { scrapeLsvdMetrics } from "./lsvd_metrics.ts";
import { freePort } from "../tests/support/ports.ts";

const GiB = 1 << 30;
const MiB = 1 << 20;

const { values } = parseArgs({
  args: Deno.args,
  options: {
    steps: { type: "string", default: "8" },
    "step-gib": { type: "string", default: "1" },
    env: { type: "string", multiple: true, default: [] },
    main: { type: "string", default: new URL("../main.ts", import.meta.url).pathname },
  },
});
const steps = Number(values.steps);
const stepBytes = Number(values["step-gib"]) * GiB;
if (!(steps >= 2) || !(stepBytes >= 64 * MiB)) throw new Error("Need --steps >= 2 and --step-gib >= 1/16");
const env: Record<string, string> = { PATH: Deno.env.get("PATH") ?? "" };
for (const pair of values.env) {
  const at = pair.indexOf("=");
  if (at <= 0) throw new Error(`Bad --env "${pair}": expected NAME=VALUE`);
  env[pair.slice(0, at)] = pair.slice(at + 1);
}

const tmp = await Deno.makeTempDir({ prefix: "lsvd-memory-growth-" });
const socketPath = join(tmp, "nbd.sock");
const port = freePort();
const main = values.main;
const daemon = await startDaemon(Deno.execPath(), {
  label: "lsvd (memory growth)",
  env,
  args: [
    "run",
    "-A",
    main,
    "serve",
    "--dir",
    join(tmp, "data"),
    "--size",
    String(steps * stepBytes),
    "--socket",
    socketPath,
    "--metrics",
    `127.0.0.1:${port}`,
  ],
});
try {
  await waitForPath(socketPath, 60_000);
  const sample = async (label: string) => {
    const rss = await procStatusBytes(daemon.pid, "VmRSS");
    const peak = await procStatusBytes(daemon.pid, "VmHWM");
    const map = (await scrapeLsvdMetrics(port)).get("lsvd_map_bytes") ?? NaN;
    console.log(
      `| ${label} | ${(rss / MiB).toFixed(0)} | ${(peak / MiB).toFixed(0)} | ${(map / MiB).toFixed(2)} |`,
    );
    return rss;
  };
  console.log(`env: ${values.env.join(" ") || "(none)"}; ${steps} steps of ${stepBytes / GiB} GiB`);
  console.log("| written | RSS MiB | peak RSS MiB | extent map MiB |\n|---|---:|---:|---:|");
  await new Promise((r) => setTimeout(r, 300));
  await sample("0");
  const device = { kind: "nbd" as const, socketPath, exportName: "lsvd" };
  const rss: number[] = [];
  for (let i = 0; i < steps; i++) {
    const job: FioJob = {
      name: "step",
      rw: "randwrite",
      blockSizeBytes: 4096,
      iodepth: 32,
      offsetBytes: i * stepBytes,
      sizeBytes: stepBytes,
      endFsync: true,
    };
    await runFio(job, device);
    await new Promise((r) => setTimeout(r, 1000));
    rss.push(await sample(`${((i + 1) * stepBytes) / GiB} GiB`));
  }
  const perGiB = (rss[rss.length - 1]! - rss[0]!) / MiB / (((steps - 1) * stepBytes) / GiB);
  console.log(`RSS growth from the first step to the last: ${perGiB.toFixed(2)} MiB per GiB written`);
} finally {
  await daemon.stop();
  await Deno.remove(tmp, { recursive: true }).catch(() => {});
}
