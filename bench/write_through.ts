/**
 * @module
 * What acknowledging a write only once it is stored costs (serve --device without --journal:
 * VolumeOptions.writeThrough, docs/design/surviving-restarts.md), side by side in one run against
 * the old buffered acknowledgement and against --journal: one in-process Volume on a directory store
 * per mode, driven directly (no NBD, no kernel), so the figures are the volume's own.
 *   randwrite-4k:  4 KiB random writes, 32 at a time, for the run, then a FLUSH (counted in the time).
 *   seqwrite-1m:   1 MiB sequential writes, 8 at a time, then a FLUSH.
 *   commit-8k:     one 8 KiB write then a FLUSH, one at a time (a database commit's shape).
 * Rounds alternate the order of the modes so machine noise hits each.
 *
 *   deno run -A bench/write_through.ts                 # 3 rounds of 3 s
 *   deno run -A bench/write_through.ts --rounds 5 --seconds 5 --write-results
 */

import { parseArgs } from "node:util";
import { join } from "node:path";
import { DirectoryStore } from "../src/store/directory.ts";
import { DirectoryJournalFiles } from "../src/journal/journal_files.ts";
import { Volume, type VolumeOptions } from "../src/volume/volume.ts";
import { silentLogger } from "../src/util/log.ts";
import { prependToResults } from "./report.ts";
import { median } from "./stats.ts";

const MiB = 2 ** 20;
const VOLUME_BYTES = 256 * MiB;
const MODES = ["buffered", "write-through", "journal"] as const;
type Mode = typeof MODES[number];

interface Workload {
  name: string;
  unit: "IOPS" | "MiB/s";
  run(v: Volume, seconds: number): Promise<number>;
}

/** `depth` workers issue `op(i)` until the time is up; then one FLUSH; returns ops per second. */
async function drive(
  v: Volume,
  seconds: number,
  depth: number,
  op: (i: number) => Promise<void>,
): Promise<number> {
  const start = performance.now();
  const end = start + seconds * 1000;
  let done = 0;
  let next = 0;
  await Promise.all(Array.from({ length: depth }, async () => {
    while (performance.now() < end) {
      await op(next++);
      done++;
    }
  }));
  await v.flush();
  return done / ((performance.now() - start) / 1000);
}

function pattern(bytes: number, seed: number): Uint8Array {
  const b = new Uint8Array(bytes);
  for (let i = 0; i < bytes; i += 64) b[i] = (seed + i) & 0xff;
  return b;
}

const WORKLOADS: Workload[] = [
  {
    name: "randwrite-4k",
    unit: "IOPS",
    run(v, seconds) {
      const data = pattern(4096, 1);
      const sectors = VOLUME_BYTES / 4096;
      return drive(v, seconds, 32, (i) => v.write(((i * 2654435761) % sectors) * 4096, data));
    },
  },
  {
    name: "seqwrite-1m",
    unit: "MiB/s",
    run(v, seconds) {
      const data = pattern(MiB, 2);
      return drive(v, seconds, 8, (i) => v.write((i % (VOLUME_BYTES / MiB)) * MiB, data));
    },
  },
  {
    name: "commit-8k",
    unit: "IOPS",
    run(v, seconds) {
      const data = pattern(8192, 3);
      return drive(v, seconds, 1, async (i) => {
        await v.write((i % 1024) * 8192, data);
        await v.flush();
      });
    },
  },
];

async function openVolume(dir: string, mode: Mode): Promise<Volume> {
  const options: VolumeOptions = {
    store: new DirectoryStore(join(dir, "store")),
    log: silentLogger,
    sizeBytes: VOLUME_BYTES,
    gcIntervalMs: 0,
    writeThrough: mode === "write-through",
    ...(mode === "journal"
      ? {
        journal: {
          files: new DirectoryJournalFiles(join(dir, "journal")),
          delayMs: 2000,
          bytesMax: 1024 * MiB,
          segmentBytes: 64 * MiB,
          discard: false,
        },
      }
      : {}),
  };
  return await Volume.open(options);
}

export async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      rounds: { type: "string", default: "3" },
      seconds: { type: "string", default: "3" },
      "write-results": { type: "boolean", default: false },
    },
  });
  const rounds = Number(values.rounds), seconds = Number(values.seconds);
  const results = new Map<string, number[]>();
  for (let round = 0; round < rounds; round++) {
    const order = round % 2 === 0 ? [...MODES] : [...MODES].reverse();
    for (const mode of order) {
      const dir = await Deno.makeTempDir({ prefix: "lsvd-bench-wt-" });
      try {
        const v = await openVolume(dir, mode);
        for (const w of WORKLOADS) {
          const figure = await w.run(v, seconds);
          const key = `${w.name}|${mode}`;
          results.set(key, [...(results.get(key) ?? []), figure]);
          console.error(`round ${round + 1} ${w.name} ${mode}: ${figure.toFixed(0)} ${w.unit}`);
        }
        await v.close();
      } finally {
        await Deno.remove(dir, { recursive: true }).catch(() => {});
      }
    }
  }
  const command = `deno run -A bench/write_through.ts ${args.join(" ")}`.trim();
  const rows = WORKLOADS.flatMap((w) => {
    const base = median(results.get(`${w.name}|buffered`)!);
    return MODES.map((m) => {
      const med = median(results.get(`${w.name}|${m}`)!);
      return `| ${w.name} | ${m} | ${med.toFixed(0)} ${w.unit} | ${(med / base).toFixed(2)} × |`;
    });
  });
  const table = [
    `## Acknowledging writes once stored (write-through) against buffered and --journal (${
      new Date().toISOString()
    }, ${rounds} rounds of ${seconds} s, in-process Volume, directory store)`,
    "",
    `\`${command}\``,
    "",
    "| workload | mode | median | × buffered |",
    "| -------- | ---- | -----: | ---------: |",
    ...rows,
    "",
  ].join("\n");
  console.log(table);
  if (values["write-results"]) await prependToResults(table);
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
