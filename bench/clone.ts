/**
 * @module
 * Clone cost against source size, and flatten throughput against a raw copy (issue 21), on the
 * directory store, in process (no daemon: what is timed is the store work, not process start).
 *
 * - Clone: sources of N log objects (each a real object of the volume's log, written through the
 *   engine with a FLUSH each), then `createClone` three times per source; median time and the
 *   store requests one clone makes, by kind. A clone lists the keys beside the source's log and
 *   its objects after the newest checkpoint, reads a few small keys and writes two: the same
 *   requests for any size (the directory store's LIST still reads its whole directory per page).
 *   A 16 GiB volume of 4 MiB objects has 4,096 objects, the `full` scale's largest source.
 * - Flatten: a source of M MiB of random data, a clone that overwrote nothing, then flatten (open,
 *   copy every sector through the verified read into the clone's log, close, record, release the pin)
 *   against a raw copy of the same objects (whole-object GET, create-only PUT under a new key, four
 *   objects at once, as flatten reads four pieces ahead).
 *
 *   deno run -A bench/clone.ts                   # small: 64/256/1024 objects, 64 MiB flatten
 *   deno run -A bench/clone.ts --scale full      # 256/1024/4096 objects, 256 MiB flatten
 *   deno run -A bench/clone.ts --scale tiny      # what bench/clone_smoke_test.ts runs
 */

import { parseArgs } from "node:util";
import { DirectoryStore } from "../src/store/directory.ts";
import type { ObjectStore } from "../src/store/store.ts";
import { Volume } from "../src/volume/volume.ts";
import { createClone, finishFlatten } from "../src/log/clone.ts";
import { readFormatRecord } from "../src/log/format_record.ts";
import { listLogState } from "../src/log/log_state.ts";
import { systemClock } from "../src/util/clock.ts";
import { forEachBounded } from "../src/util/ordered.ts";
import { countingStore } from "../tests/support/counting_store.ts";

const MiB = 2 ** 20;
const SCALES = {
  tiny: { objects: [16, 64], flattenMiB: 8 },
  small: { objects: [64, 256, 1024], flattenMiB: 64 },
  full: { objects: [256, 1024, 4096], flattenMiB: 256 },
};
const retry = { clock: systemClock, attemptsMax: 3 };

/** A source of `objects` log objects: one 4 KiB write and a FLUSH each. */
async function buildSource(store: ObjectStore, prefix: string, objects: number): Promise<void> {
  const v = await Volume.open({ store, prefix, sizeBytes: 64 * MiB, log: () => {} });
  const sector = new Uint8Array(4096);
  for (let i = 0; v.stats.lastSequence < objects; i++) {
    sector.fill(i & 0xff);
    await v.write((i % 16384) * 4096, sector);
    await v.flush();
  }
  await v.close();
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

async function cloneCost(dir: string, objects: number): Promise<string> {
  const { store, counts } = countingStore(new DirectoryStore(dir));
  const source = `src${objects}/`;
  await buildSource(store, source, objects);
  const times: number[] = [];
  let requests = "";
  for (let i = 0; i < 3; i++) {
    counts.clear();
    const t0 = performance.now();
    await createClone(store, {
      source,
      target: `c${objects}-${i}/`,
      point: undefined,
      retry,
      wallNowMs: Date.now(),
    });
    times.push(performance.now() - t0);
    requests = [...counts].map(([k, n]) => `${k} ${n}`).join(", ");
  }
  return `| ${objects} | ${median(times).toFixed(1)} ms | ${requests} |`;
}

async function flattenVsRaw(dir: string, mib: number): Promise<string[]> {
  const store = new DirectoryStore(dir);
  const src = await Volume.open({ store, prefix: "fsrc/", sizeBytes: mib * MiB, log: () => {} });
  const chunk = new Uint8Array(MiB);
  for (let i = 0; i < mib; i++) {
    crypto.getRandomValues(chunk.subarray(0, 65536));
    for (let k = 1; k < 16; k++) chunk.copyWithin(k * 65536, 0, 65536);
    chunk[0] = i & 0xff;
    await src.write(i * MiB, chunk);
  }
  await src.close();
  await createClone(store, {
    source: "fsrc/",
    target: "fdst/",
    point: undefined,
    retry,
    wallNowMs: Date.now(),
  });
  const t0 = performance.now();
  const clone = await Volume.open({ store, prefix: "fdst/", log: () => {} });
  const through = await clone.copyFromParents();
  await clone.close();
  await finishFlatten(store, "fdst/", (await readFormatRecord(store, "fdst/"))!, through, retry);
  const flattenMs = performance.now() - t0;
  const state = await listLogState(store, "fsrc/", retry);
  const t1 = performance.now();
  await forEachBounded(state.objects, 4, async (o) => {
    const { body } = await store.get(o.key);
    await store.put(`raw/${o.key}`, body, { ifNoneMatch: true });
  });
  const rawMs = performance.now() - t1;
  const rate = (ms: number) => (mib / (ms / 1000)).toFixed(0);
  return [
    `| flatten ${mib} MiB | ${flattenMs.toFixed(0)} ms | ${rate(flattenMs)} MiB/s |`,
    `| raw copy of the source's objects | ${rawMs.toFixed(0)} ms | ${rate(rawMs)} MiB/s |`,
    `| flatten / raw | | ${(rawMs / flattenMs).toFixed(2)} x |`,
  ];
}

export async function runCloneBench(scale: keyof typeof SCALES): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "lsvd-bench-clone-" });
  try {
    const lines = [
      "| source objects | clone (median of 3) | store requests of one clone |",
      "| --- | --- | --- |",
    ];
    for (const n of SCALES[scale].objects) lines.push(await cloneCost(dir, n));
    lines.push("", "| flatten | time | throughput |", "| --- | --- | --- |");
    lines.push(...await flattenVsRaw(dir, SCALES[scale].flattenMiB));
    return lines.join("\n");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) {
  const { values } = parseArgs({ args: Deno.args, options: { scale: { type: "string", default: "small" } } });
  const scale = values.scale as keyof typeof SCALES;
  if (!(scale in SCALES)) throw new Error(`--scale is tiny, small or full`);
  console.log(await runCloneBench(scale));
}
