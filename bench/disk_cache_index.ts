/**
 * @module
 * What the disk cache's index costs in memory (issue 23: "a stated cost per GiB cached"): opens a
 * DiskCache of --size-mib in a temporary directory, fills every slot, and reports the V8 heap and
 * the memory outside it (typed arrays) at open and after the fill, each after a forced full GC,
 * and how long the fill's writes held the thread (what keeping data just uploaded costs the writer).
 * The per-slot arrays (the key -> slot table among them) are allocated at open; the fill should add nothing.
 *
 *   deno run -A --v8-flags=--expose-gc bench/disk_cache_index.ts --size-mib 1024
 */

import { parseArgs } from "node:util";
import { DiskCache } from "../src/cache/disk_cache.ts";
import { crc32 } from "../src/format/crc32.ts";

const MiB = 2 ** 20;
const FILL_SECTORS = 256;

export interface IndexCost {
  slots: number;
  /** Bytes at open (typed arrays for every slot), heap + external. */
  openBytes: number;
  /** Bytes the fill added, heap + external (nothing grows per entry since the slot table). */
  fillBytes: number;
  /** (open + fill) per GiB of SIZE. */
  bytesPerGiB: number;
  /** What the fill's writes cost this thread, per 4 MiB added (an object's worth), in ms. */
  fillMsPer4MiB: number;
}

export async function measureIndexCost(sizeBytes: number): Promise<IndexCost> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc === undefined) throw new Error("Run with --v8-flags=--expose-gc: the figures need a full GC");
  const used = () => {
    gc();
    gc();
    const m = Deno.memoryUsage();
    return m.heapUsed + m.external;
  };
  const dir = await Deno.makeTempDir({ prefix: "lsvd-bench-index-" });
  const body = new Uint8Array(FILL_SECTORS * 4096); // allocated before the first figure
  // The callers (the fetcher, the writer) hand the sectors' CRCs from the object's table.
  const crcs = new Uint32Array(FILL_SECTORS).fill(crc32(body.subarray(0, 4096)));
  try {
    const before = used();
    const cache = DiskCache.open({ dir, sizeBytes, identity: "bench", log: () => {} });
    try {
      const opened = used();
      const startedMs = performance.now();
      for (let sequence = 0; cache.sectors < cache.slots; sequence++) {
        const sectors = Math.min(FILL_SECTORS, cache.slots - cache.sectors);
        cache.add(
          `bench/${sequence}`,
          sequence,
          0,
          body.subarray(0, sectors * 4096),
          crcs.subarray(0, sectors),
        );
      }
      const fillMs = performance.now() - startedMs;
      const filled = used();
      return {
        slots: cache.slots,
        openBytes: opened - before,
        fillBytes: filled - opened,
        bytesPerGiB: (filled - before) / (sizeBytes / 2 ** 30),
        fillMsPer4MiB: fillMs / (cache.slots / 1024),
      };
    } finally {
      cache.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

export async function main(args: string[]): Promise<IndexCost> {
  const { values } = parseArgs({ args, options: { "size-mib": { type: "string", default: "1024" } } });
  const sizeMib = Number(values["size-mib"]);
  if (!(Number.isInteger(sizeMib) && sizeMib >= 1)) {
    throw new Error(`Invalid --size-mib ${values["size-mib"]}`);
  }
  const cost = await measureIndexCost(sizeMib * MiB);
  const mib = (n: number) => (n / MiB).toFixed(2);
  console.log(`--cache-dir-size ${sizeMib} MiB: ${cost.slots} slots, all filled`);
  console.log(`at open (typed arrays, every slot): ${mib(cost.openBytes)} MiB`);
  console.log(`the fill (grows nothing per entry): ${mib(cost.fillBytes)} MiB`);
  console.log(`per GiB of SIZE:                    ${mib(cost.bytesPerGiB)} MiB`);
  console.log(`the fill's writes, per 4 MiB added:  ${cost.fillMsPer4MiB.toFixed(2)} ms of this thread`);
  return cost;
}

if (import.meta.main) await main(Deno.args);
