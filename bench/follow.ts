/**
 * @module
 * Followers and failover (issue 22), in process on the memory store with S3-like latency per request
 * (uniform in --latency-ms, default 10-30 ms), so what is timed is the store work, not process start:
 *
 * - Follower lag under sustained writes: a writer Volume writes 4 KiB blocks and FLUSHes every 8
 *   writes for a while; a follower (src/volume/follower.ts, its own store handle) polls at 1 s and at
 *   250 ms. Per object: the time from the writer's durable-through counter reaching it to the
 *   follower having applied it (median, p95, max), sampled every 5 ms.
 * - Failover, warm against cold: a log of N objects since the last checkpoint written by a writer
 *   that then dies (its handle crashed, its lease no longer renewed). Cold: `--takeover` (lease,
 *   load from nothing, fence, catch up). Warm: a `--standby` that started before the writer wrote,
 *   followed the log while it waited, and takes over once the lease lapses; timed from its
 *   "Taking the volume over" line to open() resolving (the lease wait itself is the lease duration
 *   for both). Store requests of each, counted on its handle.
 *
 *   deno run -A bench/follow.ts                   # small: 12 s of writes; failover with 1,000 objects
 *   deno run -A bench/follow.ts --scale tiny      # what bench/follow_smoke_test.ts runs
 *   deno run -A bench/follow.ts --latency-ms 20-80
 *   deno run -A bench/follow.ts --part cold       # only the cold takeover (runs on older checkouts too)
 */

import { parseArgs } from "node:util";
import { RetryingStore } from "../src/store/retry.ts";
import { MemoryStore } from "../src/store/memory.ts";
import { systemClock } from "../src/util/clock.ts";
import { Volume } from "../src/volume/volume.ts";

const SCALES = {
  tiny: { writeSeconds: 2, intervalsMs: [250], failoverObjects: 100 },
  small: { writeSeconds: 12, intervalsMs: [1000, 250], failoverObjects: 1000 },
  full: { writeSeconds: 60, intervalsMs: [1000, 250], failoverObjects: 1000 },
};
const SIZE_BYTES = 64 * 2 ** 20;
const LEASE_MS = 2000;
const quiet = () => {};

type Latency = { min: number; max: number };

function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))] ?? NaN;
}

/** Writes until `stop()` says so: 4 KiB blocks, a FLUSH every 8. */
async function writeLoad(v: Volume, until: () => boolean): Promise<void> {
  const block = new Uint8Array(4096);
  for (let i = 0; !until(); i++) {
    block[0] = i & 0xff;
    await v.write(((i * 7919) % 16384) * 4096, block);
    if (i % 8 === 7) await v.flush();
  }
  await v.flush();
}

async function lag(latency: Latency, intervalMs: number, writeSeconds: number): Promise<string> {
  const writerStore = new MemoryStore({ latencyMs: latency, seed: 1 });
  const writer = await Volume.open({
    store: writerStore,
    sizeBytes: SIZE_BYTES,
    log: quiet,
    gcIntervalMs: 0,
  });
  const followerStore = writerStore.reopen({ latencyMs: latency, seed: 2 });
  const volume = await Volume.open({ store: followerStore, readOnly: true, log: quiet, gcIntervalMs: 0 });
  const retry = { clock: systemClock, attemptsMax: 5 };
  // Imported here so `--part cold` also runs on a checkout from before followers (for comparison).
  const { Follower } = await import("../src/volume/follower.ts");
  const follower = new Follower(volume, {
    store: new RetryingStore(followerStore, retry),
    prefix: "",
    clock: systemClock,
    log: quiet,
    intervalMs,
  });
  await follower.start();
  const durableAt = new Map<number, number>(), appliedAt = new Map<number, number>();
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      const now = performance.now();
      for (let s = writer.stats.durableThrough; s > 0 && !durableAt.has(s); s--) durableAt.set(s, now);
      for (let s = follower.stats.appliedSequence; s > 0 && !appliedAt.has(s); s--) appliedAt.set(s, now);
      await new Promise((r) => setTimeout(r, 5));
    }
  })();
  const endMs = performance.now() + writeSeconds * 1000;
  await writeLoad(writer, () => performance.now() > endMs);
  const last = writer.stats.durableThrough;
  while (follower.stats.appliedSequence < last) await new Promise((r) => setTimeout(r, 5));
  sampling = false;
  await sampler;
  const lags = [...durableAt].filter(([s]) => s > 1 && appliedAt.has(s)).map(([s, t]) =>
    appliedAt.get(s)! - t
  );
  await follower.stop();
  await volume.close();
  await writer.close();
  const ms = (x: number) => `${(x / 1000).toFixed(2)} s`;
  return `| ${intervalMs} ms | ${lags.length} | ${ms(percentile(lags, 0.5))} | ${
    ms(percentile(lags, 0.95))
  } | ${ms(Math.max(...lags))} | ${follower.stats.polls} |`;
}

/** A writer that wrote `objects` objects (no checkpoint) and then died: crashed handle, lease not renewed. */
async function deadWriter(
  store: MemoryStore,
  objects: number,
  beforeDeath?: () => Promise<void>,
): Promise<void> {
  const writer = await Volume.open({
    store,
    sizeBytes: SIZE_BYTES,
    log: quiet,
    gcIntervalMs: 0,
    checkpointEveryObjects: 1_000_000,
    leaseDurationMs: LEASE_MS,
  });
  const block = new Uint8Array(4096);
  for (let i = 0; writer.stats.lastSequence < objects; i++) {
    block[0] = i & 0xff;
    await writer.write((i % 16384) * 4096, block);
    await writer.flush();
  }
  await beforeDeath?.();
  store.crash();
  writer.abandon();
}

function requests(store: MemoryStore): string {
  const s = store.stats;
  return `${s.gets} GET, ${s.puts} PUT, ${s.lists} LIST`;
}

async function coldTakeover(latency: Latency, objects: number): Promise<string> {
  const bucket = new MemoryStore({ seed: 3 });
  await deadWriter(bucket, objects);
  const store = bucket.reopen({ latencyMs: latency, seed: 4 });
  const t0 = performance.now();
  const v = await Volume.open({
    store,
    log: quiet,
    gcIntervalMs: 0,
    leaseMode: "takeover",
    leaseDurationMs: LEASE_MS,
  });
  const ms = performance.now() - t0;
  await v.close();
  return `| cold --takeover | ${objects} | ${(ms / 1000).toFixed(2)} s | ${requests(store)} |`;
}

async function warmStandby(latency: Latency, objects: number): Promise<string> {
  const bucket = new MemoryStore({ seed: 5 });
  const store = bucket.reopen({ latencyMs: latency, seed: 6 });
  let takenMs = 0;
  let opening: Promise<Volume> | undefined;
  await deadWriter(bucket, objects, async () => {
    // Started once the writer holds the lease and has written: it loads, then follows what comes.
    opening = Volume.open({
      store,
      log: (line) => {
        if (line.startsWith("Taking the volume over")) takenMs = performance.now();
      },
      gcIntervalMs: 0,
      leaseMode: "standby",
      leaseDurationMs: LEASE_MS,
    });
    await new Promise((r) => setTimeout(r, LEASE_MS));
  });
  const v = await opening!;
  const ms = performance.now() - takenMs;
  await v.close();
  return `| warm --standby | ${objects} | ${(ms / 1000).toFixed(2)} s | ${requests(store)} |`;
}

export async function runFollowBench(
  scale: keyof typeof SCALES,
  latency: Latency,
  part: "all" | "cold" = "all",
): Promise<string> {
  const s = SCALES[scale];
  if (part === "cold") return await coldTakeover(latency, s.failoverObjects);
  const lines = [
    `Store latency per request: ${latency.min}-${latency.max} ms (memory store).`,
    "",
    "| poll interval | objects | lag median | lag p95 | lag max | polls |",
    "| --- | --- | --- | --- | --- | --- |",
  ];
  for (const intervalMs of s.intervalsMs) lines.push(await lag(latency, intervalMs, s.writeSeconds));
  lines.push(
    "",
    "| failover | objects since checkpoint | lease taken → operational | store requests |",
    "| --- | --- | --- | --- |",
  );
  lines.push(await coldTakeover(latency, s.failoverObjects));
  lines.push(await warmStandby(latency, s.failoverObjects));
  return lines.join("\n");
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      scale: { type: "string", default: "small" },
      "latency-ms": { type: "string", default: "10-30" },
      part: { type: "string", default: "all" },
    },
  });
  const scale = values.scale as keyof typeof SCALES;
  if (!(scale in SCALES)) throw new Error(`--scale is tiny, small or full`);
  const [min, max] = values["latency-ms"]!.split("-").map(Number);
  if (!(min! >= 0 && max! >= min!)) throw new Error("--latency-ms is MIN-MAX, e.g. 10-30");
  const part = values.part === "cold" ? "cold" : "all";
  console.log(await runFollowBench(scale, { min: min!, max: max! }, part));
}
