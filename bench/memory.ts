/**
 * @module
 * Memory per GiB written: lsvd on the directory store is filled in two equal halves (sequential
 * 1 MiB writes, or random 4 KiB writes that touch every block once), each ending with a FLUSH.
 * Peak RSS (VmHWM from /proc/PID/status) is read after start, after each half. Fixed costs (the
 * runtime, the dirty-data buffer, the read cache) are all paid in the first half, so the growth of
 * the peak over the second half, per GiB written in it, is what the volume's size costs.
 */

import { join } from "node:path";
import { type FioJob, runFio } from "./fio.ts";
import { procStatusBytes } from "./process.ts";
import type { Scale } from "./scale.ts";
import { startLsvd, type TargetContext } from "./targets.ts";
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

export async function measureMemory(ctx: TargetContext, s: Scale, kind: FillKind): Promise<Figures> {
  const id = ctx.nextId();
  const socketPath = join(ctx.tmpDir, `memory-${id}.sock`);
  const dir = join(ctx.tmpDir, `memory-${id}-data`);
  const sized = { ...ctx, volumeBytes: s.memoryFillBytes };
  const daemon = await startLsvd(sized, {
    socketPath,
    storeArgs: ["--dir", dir],
    wan: false,
    label: "lsvd (memory)",
  });
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
    const peak1 = await procStatusBytes(daemon.pid, "VmHWM");
    await runFio(fillJob(kind, half, half), device);
    const peak2 = await procStatusBytes(daemon.pid, "VmHWM");
    const rss2 = await procStatusBytes(daemon.pid, "VmRSS");
    figures = {
      baselineRssMiB: baselineRss / (1 << 20),
      peakRssMiB: peak2 / (1 << 20),
      rssAfterMiB: rss2 / (1 << 20),
      peakOverBaselineKiBPerGiB: ((peak2 - baselineRss) / KiB) / (s.memoryFillBytes / GiB),
      value: ((peak2 - peak1) / KiB) / (half / GiB),
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
