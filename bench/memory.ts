/**
 * @module
 * Memory per GiB written: lsvd on the directory store is filled in two equal halves (sequential
 * 1 MiB writes, or random 4 KiB writes that touch every block once), each ending with a FLUSH.
 * RSS and peak RSS (VmRSS, VmHWM from /proc/PID/status) are read after start and after each half
 * (once the uploads have settled). Fixed costs (the runtime, the dirty-data buffer, the read cache)
 * are all paid in the first half, so the growth of RSS from the fill of N bytes to the fill of 2N,
 * per GiB written in between, is what the volume's size costs (the checked figure); the peak's
 * growth is reported beside it, and so is the growth of the extent map alone (`lsvd_map_bytes` from
 * the daemon's metrics), which RSS cannot separate from heap garbage in a single round.
 */

import { join } from "node:path";
import { type FioJob, runFio } from "./fio.ts";
import { procStatusBytes } from "./process.ts";
import type { Scale } from "./scale.ts";
import { startLsvd, type TargetContext } from "./targets.ts";
import { scrapeLsvdMetrics } from "./lsvd_metrics.ts";
import { freePort } from "../tests/support/ports.ts";
import type { Figures } from "./measure.ts";

const GiB = 1 << 30;
const KiB = 1024;

export type FillKind = "sequential" | "random-4k";

function fillJob(kind: FillKind, offsetBytes: number, sizeBytes: number): FioJob {
  return kind === "sequential"
    ? {
      name: "fill-seq",
      rw: "write",
      blockSizeBytes: 1 << 20,
      iodepth: 8,
      offsetBytes,
      sizeBytes,
      endFsync: true,
    }
    : {
      name: "fill-rand",
      rw: "randwrite",
      blockSizeBytes: 4 * KiB,
      iodepth: 32,
      offsetBytes,
      sizeBytes,
      endFsync: true,
    };
}

/** The fill ended with a FLUSH; give the uploads' buffers a moment to be released. */
function settle(): Promise<void> {
  return new Promise((r) => setTimeout(r, 1000));
}

export async function measureMemory(ctx: TargetContext, s: Scale, kind: FillKind): Promise<Figures> {
  const id = ctx.nextId();
  const socketPath = join(ctx.tmpDir, `memory-${id}.sock`);
  const dir = join(ctx.tmpDir, `memory-${id}-data`);
  const sized = { ...ctx, volumeBytes: s.memoryFillBytes };
  const metricsPort = freePort();
  const daemon = await startLsvd(sized, {
    socketPath,
    storeArgs: ["--dir", dir],
    wan: false,
    label: "lsvd (memory)",
    extraArgs: ["--metrics", `127.0.0.1:${metricsPort}`],
  });
  const mapBytes = async () => (await scrapeLsvdMetrics(metricsPort)).get("lsvd_map_bytes") ?? NaN;
  const cleanup = async () => {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    await Deno.remove(socketPath).catch(() => {});
  };
  let figures: Figures;
  try {
    await new Promise((r) => setTimeout(r, 300));
    const baselineRss = await procStatusBytes(daemon.pid, "VmRSS");
    const device = { kind: "nbd" as const, socketPath, exportName: "lsvd" };
    const half = s.memoryFillBytes / 2;
    await runFio(fillJob(kind, 0, half), device);
    await settle();
    const peak1 = await procStatusBytes(daemon.pid, "VmHWM");
    const rss1 = await procStatusBytes(daemon.pid, "VmRSS");
    const map1 = await mapBytes();
    await runFio(fillJob(kind, half, half), device);
    await settle();
    const peak2 = await procStatusBytes(daemon.pid, "VmHWM");
    const rss2 = await procStatusBytes(daemon.pid, "VmRSS");
    const map2 = await mapBytes();
    figures = {
      baselineRssMiB: baselineRss / (1 << 20),
      peakRssMiB: peak2 / (1 << 20),
      rssAfterHalfMiB: rss1 / (1 << 20),
      rssAfterMiB: rss2 / (1 << 20),
      peakOverBaselineKiBPerGiB: ((peak2 - baselineRss) / KiB) / (s.memoryFillBytes / GiB),
      peakGrowthKiBPerGiB: ((peak2 - peak1) / KiB) / (half / GiB),
      mapMiB: map2 / (1 << 20),
      mapGrowthKiBPerGiB: ((map2 - map1) / KiB) / (half / GiB),
      value: ((rss2 - rss1) / KiB) / (half / GiB),
    };
  } catch (e) {
    await daemon.stop();
    await cleanup();
    throw e;
  }
  const code = await daemon.stop();
  await cleanup();
  if (code !== 0) {
    throw new Error(`Cannot stop lsvd cleanly after the memory fill: exit code ${code}\n${daemon.output}`);
  }
  return figures;
}
