/**
 * @module
 * What moving a read miss's pread off the one JavaScript thread would take (issue 23): the same 4 KiB
 * random reads of a file the OS page cache holds, done three ways side by side in one run, each
 * copying the sector into a reply buffer as the NBD reply does:
 *   inline       pread on the main thread (what lsvd's directory store and disk cache do today)
 *   inline-crc   the same plus the sector's CRC-32 (lsvd checks every miss against its object's table)
 *   async-op     Deno's async file read (node:fs.read: an op on Deno's blocking thread pool), QD32
 *   worker-N     N Web Workers pread into SharedArrayBuffer slots, QD32, the main thread waking on
 *                Atomics.waitAsync (no message per read, the cheapest hand-off JavaScript has)
 *   worker-N-crc the same, the workers also computing the CRC-32
 * For each: reads per second, and CPU per read on the main thread (from /proc/thread-self/stat)
 * and in the whole process. The main thread's CPU per read is what bounds one thread's IOPS.
 *
 *   deno run -A bench/offload.ts                 # 3 rounds of 3 s
 *   deno run -A bench/offload.ts --rounds 5 --seconds 5 --write-results
 */

import * as fs from "node:fs";
import { parseArgs } from "node:util";
import { join } from "node:path";
import { loadAverage, prependToResults } from "./report.ts";
import { formatNumber, median } from "./stats.ts";
import { crc32 } from "../src/format/crc32.ts";

const SECTOR_BYTES = 4096;
const FILE_BYTES = 256 * 2 ** 20;
const DEPTH = 32;
const CLOCK_TICK_MS = 10; // USER_HZ on Linux

interface Sample {
  readsPerSecond: number;
  mainUsPerRead: number;
  processUsPerRead: number;
}

/** utime + stime of this JavaScript thread and of the process, in ms (`deno test` runs JS off the main thread). */
function cpuMs(): { main: number; all: number } {
  const ticks = (path: string) => {
    const fields = Deno.readTextFileSync(path).split(") ")[1]!.split(" ");
    return (Number(fields[11]) + Number(fields[12])) * CLOCK_TICK_MS; // fields 14 and 15 of stat
  };
  return { main: ticks("/proc/thread-self/stat"), all: ticks("/proc/self/stat") };
}

function randomSector(): number {
  return Math.floor(Math.random() * (FILE_BYTES / SECTOR_BYTES));
}

async function measure(seconds: number, body: (untilMs: number) => Promise<number>): Promise<Sample> {
  const cpu0 = cpuMs();
  const t0 = performance.now();
  const reads = await body(t0 + seconds * 1000);
  const elapsedS = (performance.now() - t0) / 1000;
  const cpu1 = cpuMs();
  return {
    readsPerSecond: reads / elapsedS,
    mainUsPerRead: ((cpu1.main - cpu0.main) * 1000) / reads,
    processUsPerRead: ((cpu1.all - cpu0.all) * 1000) / reads,
  };
}

function inline(path: string, seconds: number, verify: boolean): Promise<Sample> {
  const fd = fs.openSync(path, "r");
  const buffer = new Uint8Array(SECTOR_BYTES);
  const reply = new Uint8Array(SECTOR_BYTES * DEPTH);
  return measure(seconds, (untilMs) => {
    let reads = 0;
    while (performance.now() < untilMs) {
      for (let k = 0; k < 256; k++, reads++) {
        fs.readSync(fd, buffer, 0, SECTOR_BYTES, randomSector() * SECTOR_BYTES);
        if (verify && crc32(buffer) === 0.5) throw new Error("unreachable: keeps the CRC computed");
        reply.set(buffer, (reads % DEPTH) * SECTOR_BYTES);
      }
    }
    return Promise.resolve(reads);
  }).finally(() => fs.closeSync(fd));
}

function asyncOp(path: string, seconds: number): Promise<Sample> {
  const fd = fs.openSync(path, "r");
  const reply = new Uint8Array(SECTOR_BYTES * DEPTH);
  const readOne = (buffer: Uint8Array) =>
    new Promise<void>((resolve, reject) =>
      fs.read(fd, buffer, 0, SECTOR_BYTES, randomSector() * SECTOR_BYTES, (e) => e ? reject(e) : resolve())
    );
  return measure(seconds, async (untilMs) => {
    let reads = 0;
    await Promise.all(Array.from({ length: DEPTH }, async (_, slot) => {
      const buffer = new Uint8Array(SECTOR_BYTES);
      while (performance.now() < untilMs) {
        await readOne(buffer);
        reply.set(buffer, slot * SECTOR_BYTES);
        reads++;
      }
    }));
    return reads;
  }).finally(() => fs.closeSync(fd));
}

async function workers(path: string, seconds: number, count: number, verify: boolean): Promise<Sample> {
  const shared = new SharedArrayBuffer((1 + count + 3 * DEPTH) * 4);
  const data = new SharedArrayBuffer(DEPTH * SECTOR_BYTES);
  const control = new Int32Array(shared);
  const states = new Int32Array(shared, (1 + count) * 4, DEPTH);
  const sectors = new Int32Array(shared, (1 + count + DEPTH) * 4, DEPTH);
  const view = new Uint8Array(data);
  const reply = new Uint8Array(SECTOR_BYTES * DEPTH);
  const ready: Promise<unknown>[] = [];
  const pool = Array.from({ length: count }, (_, worker) => {
    const w = new Worker(new URL("./offload_worker.ts", import.meta.url), { type: "module" });
    ready.push(new Promise((resolve) => (w.onmessage = resolve)));
    w.postMessage({ path, shared, data, slots: DEPTH, worker, workers: count, verify });
    return w;
  });
  await Promise.all(ready);
  const ring = (worker: number) => {
    Atomics.add(control, 1 + worker, 1);
    Atomics.notify(control, 1 + worker);
  };
  try {
    return await measure(seconds, async (untilMs) => {
      for (let i = 0; i < DEPTH; i++) {
        sectors[i] = randomSector();
        Atomics.store(states, i, 1);
      }
      for (let w = 0; w < count; w++) ring(w);
      let reads = 0;
      while (performance.now() < untilMs) {
        const seen = Atomics.load(control, 0);
        const rang = new Set<number>();
        for (let i = 0; i < DEPTH; i++) {
          if (Atomics.load(states, i) !== 2) continue;
          reply.set(view.subarray(i * SECTOR_BYTES, (i + 1) * SECTOR_BYTES), i * SECTOR_BYTES);
          reads++;
          sectors[i] = randomSector();
          Atomics.store(states, i, 1);
          rang.add(i % count);
        }
        for (const w of rang) ring(w);
        if (rang.size === 0) {
          const wait = Atomics.waitAsync(control, 0, seen);
          if (wait.async) await wait.value;
        }
      }
      return reads;
    });
  } finally {
    const closed = pool.map((w) => new Promise((resolve) => (w.onmessage = resolve)));
    for (let w = 0; w < count; w++) {
      Atomics.store(control, 1 + w, -1);
      Atomics.notify(control, 1 + w);
    }
    await Promise.race([Promise.all(closed), new Promise((r) => setTimeout(r, 2000))]);
    for (const w of pool) w.terminate();
  }
}

const MODES: Record<string, (path: string, seconds: number) => Promise<Sample>> = {
  "inline": (p, s) => inline(p, s, false),
  "inline-crc": (p, s) => inline(p, s, true),
  "async-op": asyncOp,
  "worker-1": (p, s) => workers(p, s, 1, false),
  "worker-2": (p, s) => workers(p, s, 2, false),
  "worker-2-crc": (p, s) => workers(p, s, 2, true),
};

async function makeFile(dir: string): Promise<string> {
  const path = join(dir, "data");
  const file = await Deno.open(path, { write: true, create: true });
  const chunk = new Uint8Array(2 ** 20);
  for (let i = 0; i < FILE_BYTES / chunk.length; i++) {
    crypto.getRandomValues(chunk.subarray(0, 65536));
    await file.write(chunk);
  }
  file.close();
  await Deno.readFile(path); // into the page cache: these are the reads lsvd's misses make
  return path;
}

export async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      rounds: { type: "string", default: "3" },
      seconds: { type: "string", default: "3" },
      "write-results": { type: "boolean" },
    },
  });
  const rounds = Number(values.rounds);
  const seconds = Number(values.seconds);
  const dir = await Deno.makeTempDir({ prefix: "lsvd-bench-offload-" });
  const samples: Record<string, Sample[]> = Object.fromEntries(Object.keys(MODES).map((m) => [m, []]));
  const load0 = await loadAverage();
  try {
    const path = await makeFile(dir);
    for (let round = 0; round < rounds; round++) {
      const names = Object.keys(MODES);
      const order = [...names.slice(round % names.length), ...names.slice(0, round % names.length)];
      for (const mode of order) samples[mode]!.push(await MODES[mode]!(path, seconds));
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  const load1 = await loadAverage();
  const inlineRate = median(samples.inline!.map((s) => s.readsPerSecond));
  const rows = Object.entries(samples).map(([mode, list]) => {
    const rate = median(list.map((s) => s.readsPerSecond));
    return `| ${mode} | ${formatNumber(rate)} | ${(rate / inlineRate).toFixed(2)} | ${
      formatNumber(median(list.map((s) => s.mainUsPerRead)))
    } | ${formatNumber(median(list.map((s) => s.processUsPerRead)))} |`;
  });
  const table = [
    `## Moving a miss's pread off the main thread (${
      new Date().toISOString()
    }, ${rounds} rounds of ${seconds} s)`,
    "",
    `\`deno run -A bench/offload.ts --rounds ${rounds} --seconds ${seconds}\` (load average ${load0} before, ${load1} after)`,
    "",
    "| mode | reads/s (median) | × inline | main-thread CPU µs per read | process CPU µs per read |",
    "| ---- | ---------------: | -------: | --------------------------: | ----------------------: |",
    ...rows,
    "",
  ].join("\n");
  console.log(table);
  if (values["write-results"]) await prependToResults(table);
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
