/**
 * @module
 * One measurement: a workload against a target, from a fresh start (new bucket or directory) to
 * a clean stop. Device targets run fio; the raw baselines run `raw_store.ts` in a child process.
 * Returns named figures; "value" is the workload's headline figure.
 */

import { join } from "node:path";
import { runFio } from "./fio.ts";
import { procStatusBytes, run } from "./process.ts";
import type { RawResult } from "./raw_store.ts";
import type { Scale } from "./scale.ts";
import type { DeviceTarget, TargetContext } from "./targets.ts";
import type { RawSpec, Workload } from "./workloads.ts";

export type RawTargetName = "raw-s3" | "raw-dir";

export interface RawTarget {
  name: RawTargetName;
  needsS3: boolean;
  spec(w: Workload, s: Scale): RawSpec | undefined;
}

export const RAW_TARGETS: readonly RawTarget[] = [
  { name: "raw-s3", needsS3: true, spec: (w, s) => w.rawS3?.(s) },
  { name: "raw-dir", needsS3: false, spec: (w, s) => w.rawDir?.(s) },
];

export type Figures = Record<string, number>;

const FIO_TIMEOUT_MS = 900_000;

export async function measureDevice(
  ctx: TargetContext,
  target: DeviceTarget,
  w: Workload,
  s: Scale,
): Promise<Figures> {
  const extra = w.lsvdArgs?.(s) ?? [];
  const instance = await target.start(
    extra.length === 0 ? ctx : { ...ctx, lsvdArgs: [...ctx.lsvdArgs, ...extra] },
  );
  try {
    const fill = w.fill?.(s);
    if (fill !== undefined) await runFio(fill, instance.device, FIO_TIMEOUT_MS);
    if (w.coldWan) await instance.restart({ wan: true });
    const warmup = w.warmup?.(s);
    if (warmup !== undefined) await runFio(warmup, instance.device, FIO_TIMEOUT_MS);
    const result = await runFio(w.job(s), instance.device, FIO_TIMEOUT_MS);
    return {
      value: w.metric(result),
      p50Ms: result.latencyP50Ms,
      p99Ms: result.latencyP99Ms,
      ios: result.ios,
      // A job stopped by its runtime cap never sent its final FLUSH: its figure is not a sustained one.
      cutShort: result.complete ? 0 : 1,
      // The target process's peak resident memory over the whole measurement (fill included).
      peakRssMiB: await procStatusBytes(instance.pid(), "VmHWM").then((b) => b / 2 ** 20, () => NaN),
    };
  } finally {
    await instance.stop();
  }
}

export async function measureRaw(
  ctx: TargetContext,
  target: RawTarget,
  spec: RawSpec,
): Promise<Figures> {
  const where: string[] = [];
  const env: Record<string, string> = {};
  let cleanup: () => Promise<void>;
  if (target.name === "raw-dir") {
    const dir = join(ctx.tmpDir, `raw-dir-${ctx.nextId()}`);
    where.push("--dir", dir);
    cleanup = () => Deno.remove(dir, { recursive: true }).catch(() => {});
  } else {
    const s3 = ctx.s3;
    if (s3 === undefined) throw new Error("Cannot measure raw S3: no S3 backend was started");
    const bucket = await s3.newBucket();
    where.push("--bucket", bucket, "--endpoint", s3.endpoint);
    if (spec.wan) where.push("--read-endpoint", s3.wanEndpoint);
    env.AWS_ACCESS_KEY_ID = s3.accessKeyId;
    env.AWS_SECRET_ACCESS_KEY = s3.secretAccessKey;
    cleanup = () => s3.dropBucket(bucket);
  }
  try {
    return await runRawStore(ctx, target, spec, where, env);
  } finally {
    await cleanup();
  }
}

async function runRawStore(
  ctx: TargetContext,
  target: RawTarget,
  spec: RawSpec,
  where: string[],
  env: Record<string, string>,
): Promise<Figures> {
  const script = join(ctx.repoRoot, "bench/raw_store.ts");
  const result = await run(Deno.execPath(), ["run", "-A", script, ...spec.args, ...where], {
    env,
    timeoutMs: FIO_TIMEOUT_MS,
  });
  if (result.code !== 0) {
    throw new Error(`Cannot measure ${target.name}: exit code ${result.code}\n${result.stderr.slice(-2000)}`);
  }
  const line = result.stdout.trim().split("\n").at(-1) ?? "";
  return spec.metrics(JSON.parse(line) as RawResult);
}
