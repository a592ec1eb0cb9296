/**
 * @module
 * Encryption at rest against a plain volume, side by side in one run (issue 24): sustained 4 KiB
 * random writes (QD32, for the whole run, a FLUSH at the end counted in the time)
 * and 1 MiB sequential reads (QD8), fio's nbd engine over each daemon's unix socket. Both daemons
 * serve a directory store with a read cache a quarter of the volume (`--cache-size`; its
 * sixteenth keeps the CRC and tag tables), so a sequential pass misses the cache: every read
 * fetches, checks and (encrypted) decrypts its sectors, and every write is sealed, encrypted and
 * stored. The figures are what AES-256-GCM per sector costs on top of the rest of the path. Rounds
 * alternate which volume goes first so machine noise hits both.
 *
 *   deno run -A bench/encryption.ts                  # small: 64 MiB volume, 5 s per run, 3 rounds
 *   deno run -A bench/encryption.ts --full           # 512 MiB volume, 20 s per run, 3 rounds
 *   deno run -A bench/encryption.ts --write-results  # also prepend the table to bench/RESULTS.md
 */

import { prependToResults } from "./report.ts";
import { median } from "./stats.ts";
import { parseArgs } from "node:util";
import { join } from "node:path";
import { Daemon } from "../tests/support/daemon.ts";
import { type FioJob, runFio } from "./fio.ts";

const MiB = 2 ** 20;

interface Workload {
  name: string;
  job: Omit<FioJob, "sizeBytes" | "runtimeS" | "ioSizeBytes">;
  unit: "MiB/s" | "IOPS";
}

const WORKLOADS: Workload[] = [
  {
    name: "randwrite-4k",
    job: { name: "randwrite-4k", rw: "randwrite", blockSizeBytes: 4096, iodepth: 32, endFsync: true },
    unit: "IOPS",
  },
  {
    name: "seqread-1m",
    job: { name: "seqread-1m", rw: "read", blockSizeBytes: MiB, iodepth: 8 },
    unit: "MiB/s",
  },
];

const VOLUMES = ["plain", "encrypted"] as const;
type Volume = typeof VOLUMES[number];

async function startDaemon(dir: string, volumeBytes: number, extra: string[]): Promise<Daemon> {
  return await Daemon.start({
    args: [
      ...["--dir", join(dir, "store"), "--socket", join(dir, "nbd.sock")],
      ...["--size", String(volumeBytes), "--cache-size", String(volumeBytes / 4), "--gc-interval", "off"],
      ...extra,
    ],
  });
}

function measure(workload: Workload, socketPath: string, volumeBytes: number, seconds: number) {
  // Time-based both: writes go on for the whole run (sustained, past the dirty limit), reads loop.
  const job = { ...workload.job, sizeBytes: volumeBytes, ioSizeBytes: 1000 * volumeBytes, runtimeS: seconds };
  return runFio(job, { kind: "nbd", socketPath, exportName: "lsvd" });
}

/** Runs the comparison; prints (and with --write-results records) the table. */
export async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      full: { type: "boolean" },
      rounds: { type: "string" },
      seconds: { type: "string" },
      "volume-mib": { type: "string" },
      "write-results": { type: "boolean" },
    },
  });
  const volumeBytes = Number(values["volume-mib"] ?? (values.full ? 512 : 64)) * MiB;
  const seconds = Number(values.seconds ?? (values.full ? 20 : 5));
  const rounds = Number(values.rounds ?? 3);
  const dir = await Deno.makeTempDir({ prefix: "lsvd-bench-encryption-" });
  const keyFile = join(dir, "volume.key");
  await Deno.writeFile(keyFile, crypto.getRandomValues(new Uint8Array(32)), { mode: 0o600 });
  await Deno.chmod(keyFile, 0o600);
  const daemons: Daemon[] = [];
  const results = new Map<string, number[]>();
  try {
    const sockets = {} as Record<Volume, string>;
    for (const v of VOLUMES) {
      await Deno.mkdir(join(dir, v));
      daemons.push(
        await startDaemon(join(dir, v), volumeBytes, v === "plain" ? [] : ["--encryption-key-file", keyFile]),
      );
      sockets[v] = join(dir, v, "nbd.sock");
    }
    for (let round = 0; round < rounds; round++) {
      const order = round % 2 === 0 ? VOLUMES : [...VOLUMES].reverse();
      for (const workload of WORKLOADS) {
        for (const v of order) {
          const r = await measure(workload, sockets[v], volumeBytes, seconds);
          const figure = workload.unit === "IOPS" ? r.iops : r.bytesPerS / MiB;
          const key = `${workload.name}|${v}`;
          results.set(key, [...(results.get(key) ?? []), figure]);
          console.error(`round ${round + 1} ${workload.name} ${v}: ${figure.toFixed(0)} ${workload.unit}`);
        }
      }
    }
  } finally {
    for (const d of daemons) await d.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
  const table = report(args, { volumeBytes, seconds, rounds }, results);
  console.log(table);
  if (values["write-results"]) await prependToResults(table);
  return 0;
}

function report(
  args: string[],
  run: { volumeBytes: number; seconds: number; rounds: number },
  results: Map<string, number[]>,
): string {
  const command = `deno run -A bench/encryption.ts ${args.join(" ")}`.trim();
  const rows = WORKLOADS.flatMap((w) => {
    const base = median(results.get(`${w.name}|plain`)!);
    return VOLUMES.map((v) => {
      const figures = results.get(`${w.name}|${v}`)!;
      const m = median(figures);
      const all = figures.map((x) => x.toFixed(0)).join(" / ");
      return `| ${w.name} | ${v} | ${m.toFixed(0)} ${w.unit} | ${(m / base).toFixed(2)} × | ${all} |`;
    });
  });
  return [
    `## Encryption at rest vs plain (${
      new Date().toISOString()
    }, ${run.rounds} rounds of ${run.seconds} s, ` +
    `${
      run.volumeBytes / MiB
    } MiB volume, read cache a quarter of it, directory store, unix socket, fio nbd engine)`,
    "",
    `\`${command}\``,
    "",
    "| workload | volume | median | × plain | each round |",
    "| -------- | ------ | -----: | ------: | ---------- |",
    ...rows,
    "",
  ].join("\n");
}

if (import.meta.main) Deno.exit(await main(Deno.args));
