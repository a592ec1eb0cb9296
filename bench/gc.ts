/**
 * @module
 * Garbage collection on vs off, side by side in one run (issue 12): the same daemon (directory
 * store) with `--gc-interval off` and with collection every second under a short retention window,
 * each filled sequentially and then overwritten by 4 KiB random writes (QD32) while collection runs.
 * Measured per mode: foreground 4 KiB random-write IOPS, bucket log bytes ÷ live bytes once the window
 * has passed, and write amplification = bytes GC copied (from its pass log lines) ÷ bytes clients
 * wrote. Rounds alternate the modes so machine noise hits both.
 *
 *   deno run -A bench/gc.ts                  # small: 64 MiB volume, 3 overwrites, 2 rounds (~3 min)
 *   deno run -A bench/gc.ts --full           # 256 MiB volume, 4 overwrites, 2 rounds (< 10 min)
 *   deno run -A bench/gc.ts --write-results  # also prepend the table to bench/RESULTS.md
 */

import { prependToResults } from "./report.ts";
import { median } from "./stats.ts";
import { parseArgs } from "node:util";
import { join } from "node:path";
import { Daemon } from "../tests/support/daemon.ts";
import { runFio } from "./fio.ts";

const MiB = 2 ** 20;
const RETENTION = "2s";
/** Longest wait for collection to catch up after the workload. */
const SETTLE_MS_MAX = 120_000;
/** The log counts as settled once it has not shrunk for this long (one pass can take seconds). */
const STEADY_MS = 20_000;

interface Mode {
  name: "gc off" | "gc on";
  interval: string;
}

interface Figures {
  iops: number;
  bucketBytes: number;
  liveBytes: number;
  clientBytes: number;
  copiedBytes: number;
  passes: number;
}

const MODES: Mode[] = [{ name: "gc off", interval: "off" }, { name: "gc on", interval: "1s" }];

async function logBytes(dir: string): Promise<number> {
  let n = 0;
  for await (const e of Deno.readDir(dir)) {
    if (!e.isFile || !/^[0-9a-f]{16}$/.test(e.name)) continue;
    // A pass may delete the file between the listing and the stat.
    n += await Deno.stat(join(dir, e.name)).then((st) => st.size, () => 0);
  }
  return n;
}

async function measure(mode: Mode, volumeBytes: number, overwrites: number): Promise<Figures> {
  const dir = await Deno.makeTempDir({ prefix: "lsvd-bench-gc-" });
  const store = join(dir, "store"), socket = join(dir, "nbd.sock");
  const device = { kind: "nbd" as const, socketPath: socket, exportName: "lsvd" };
  const d = await Daemon.start({
    args: [
      "--dir",
      store,
      "--socket",
      socket,
      "--size",
      String(volumeBytes),
      "--retention",
      RETENTION,
      "--gc-interval",
      mode.interval,
    ],
  });
  try {
    await runFio(
      { name: "fill", rw: "write", blockSizeBytes: MiB, iodepth: 8, sizeBytes: volumeBytes, endFsync: true },
      device,
    );
    const overwrite = await runFio({
      name: "overwrite",
      rw: "randwrite",
      blockSizeBytes: 4096,
      iodepth: 32,
      sizeBytes: volumeBytes,
      ioSizeBytes: overwrites * volumeBytes,
      endFsync: true,
      randomMap: false,
    }, device);
    // Let the window pass over the overwrites, then let passes run until the log stops shrinking
    // (a pass copies at most 64 MiB; with GC off this is just the window's wait).
    await new Promise((r) => setTimeout(r, 3000));
    let last = await logBytes(store), steadySince = Date.now();
    const deadline = Date.now() + (mode.interval === "off" ? 0 : SETTLE_MS_MAX);
    while (Date.now() < deadline && Date.now() - steadySince < STEADY_MS) {
      await new Promise((r) => setTimeout(r, 1000));
      const now = await logBytes(store);
      if (now < last) steadySince = Date.now();
      last = now;
    }
    const code = (await d.stop()).code;
    if (code !== 0) throw new Error(`lsvd exited with ${code}\n${d.log}`);
    let copiedBytes = 0, passes = 0;
    for (const m of d.log.matchAll(/Garbage collection pass \d+: .*copied ([\d.]+) MiB/g)) {
      copiedBytes += Number(m[1]) * MiB;
      passes++;
    }
    return {
      iops: overwrite.iops,
      bucketBytes: await logBytes(store),
      liveBytes: volumeBytes,
      clientBytes: volumeBytes + overwrite.ios * 4096,
      copiedBytes,
      passes,
    };
  } finally {
    if (d.child.pid !== undefined) await d.stop().catch(() => {});
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/** Runs the comparison; prints (and with --write-results records) the table. */
export async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      full: { type: "boolean" },
      rounds: { type: "string" },
      "volume-mib": { type: "string" },
      "write-results": { type: "boolean" },
    },
  });
  const volumeBytes = Number(values["volume-mib"] ?? (values.full ? 256 : 64)) * MiB;
  const overwrites = values.full ? 4 : 3;
  const rounds = Number(values.rounds ?? 2);
  const results = new Map<string, Figures[]>(MODES.map((m) => [m.name, []]));
  for (let round = 0; round < rounds; round++) {
    const order = round % 2 === 0 ? MODES : [...MODES].reverse();
    for (const mode of order) {
      const f = await measure(mode, volumeBytes, overwrites);
      results.get(mode.name)!.push(f);
      console.error(
        `round ${round + 1} ${mode.name}: ${f.iops.toFixed(0)} IOPS, bucket ${
          (f.bucketBytes / MiB).toFixed(1)
        } MiB, ` +
          `copied ${(f.copiedBytes / MiB).toFixed(1)} MiB in ${f.passes} passes`,
      );
    }
  }
  const row = (name: string) => {
    const fs = results.get(name)!;
    const iops = median(fs.map((f) => f.iops));
    const ratio = median(fs.map((f) => f.bucketBytes / f.liveBytes));
    const wa = median(fs.map((f) => f.copiedBytes / f.clientBytes));
    return { iops, ratio, wa };
  };
  const off = row("gc off"), on = row("gc on");
  const drop = 1 - on.iops / off.iops;
  const command = `deno run -A bench/gc.ts ${args.join(" ")}`.trim();
  const table = [
    `## GC on vs off (${new Date().toISOString()}, ${rounds} rounds, ${volumeBytes / MiB} MiB volume, ` +
    `${overwrites} random overwrites (fio --norandommap), retention ${RETENTION}, directory store)`,
    "",
    `\`${command}\``,
    "",
    "| mode | 4 KiB randwrite IOPS (median) | bucket ÷ live | write amplification (GC copied ÷ client) |",
    "| ---- | ----------------------------: | ------------: | ---------------------------------------: |",
    `| gc off | ${off.iops.toFixed(0)} | ${off.ratio.toFixed(2)} | ${off.wa.toFixed(2)} |`,
    `| gc on | ${on.iops.toFixed(0)} | ${on.ratio.toFixed(2)} | ${on.wa.toFixed(2)} |`,
    "",
    `Foreground IOPS drop with GC on: ${(100 * drop).toFixed(1)}% (target ≤ 20%: ${
      drop <= 0.2 ? "PASS" : "MISS"
    }); ` +
    `bucket ÷ live with GC: ${on.ratio.toFixed(2)} (target ≤ 1.3: ${on.ratio <= 1.3 ? "PASS" : "MISS"}); ` +
    `write amplification: ${on.wa.toFixed(2)} (target ≤ 1.5: ${on.wa <= 1.5 ? "PASS" : "MISS"}).`,
    "",
  ].join("\n");
  console.log(table);
  if (values["write-results"]) await prependToResults(table);
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
