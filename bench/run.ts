/**
 * @module
 * `deno task bench`: starts everything itself (Ceph RGW, the WAN delay proxy, every target), runs
 * each workload against each target in alternation, round after round (A B C, B C A, ...), then
 * prints medians and the issue's target ratios computed within this one run.
 *
 *   deno task bench                      small sizes (a few minutes; what CI smoke-runs)
 *   deno task bench --full               the sizes RESULTS.md quotes
 *   deno task bench --write-results      also prepend the run to bench/RESULTS.md (+ bench/results.svg)
 *   --scale tiny|small|full  --rounds N  --targets a,b  --workloads x,y  --delay-ms 20
 *   --no-memory  --no-restart  --json PATH (machine-readable results)
 *   --workloads postgres                 pgbench on Postgres (bench/postgres.ts): runs only when named
 *   --workloads postgres-select          pgbench -S on a cold device, with and without --cache-dir
 *
 * Exits 1 when any measurement failed; a MISS is a finding, printed, and does not fail the run.
 */

import { parseArgs } from "node:util";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { type RunningBackend, startBackend } from "./backend.ts";
import { type Figures, measureDevice, measureRaw, RAW_TARGETS } from "./measure.ts";
import { type FillKind, measureMemory } from "./memory.ts";
import { allChecks, checksTable, loadAverage, renderMarkdown, type RunRecord } from "./report.ts";
import { renderSvg } from "./plot.ts";
import { measurePostgres, PG_SELECT_SETUPS, PG_SETUPS } from "./postgres.ts";
import { measureRestart } from "./restart.ts";
import { type Scale, type ScaleName, SCALES } from "./scale.ts";
import { formatNumber } from "./stats.ts";
import { DEVICE_TARGETS, type TargetContext } from "./targets.ts";
import { randReadBeyondCacheWan, type Workload, WORKLOADS } from "./workloads.ts";

const REPO_ROOT = dirname(dirname(fileURLToPath(import.meta.url)));
const ALL_TARGETS = [...DEVICE_TARGETS.map((t) => t.name), ...RAW_TARGETS.map((t) => t.name)];

interface BenchOptions {
  scale: Scale;
  targets: string[];
  workloads: Workload[];
  delayMs: number;
  memory: boolean;
  restart: boolean;
  writeResults: boolean;
  jsonPath: string | undefined;
  /** The Postgres phase (bench/postgres.ts): runs only when "postgres" is named in --workloads. */
  postgres: boolean;
  /** pgbench -S (bench/postgres.ts PG_SELECT_SETUPS): only when "postgres-select" is named. */
  postgresSelect: boolean;
  /** Only these Postgres set-ups (--pg-setups); undefined: every set-up of the named targets. */
  pgSetups: string[] | undefined;
}

function list(text: string | undefined, known: string[], what: string, defaults = known): string[] {
  if (text === undefined) return defaults;
  const names = text.split(",").map((s) => s.trim()).filter((s) => s !== "");
  for (const n of names) {
    if (!known.includes(n)) throw new BenchUsageError(`Unknown ${what} "${n}"; known: ${known.join(", ")}`);
  }
  return names;
}

const USAGE = `Usage: deno task bench [options]

Starts Ceph RGW, a WAN delay proxy and every target, runs each workload against each target in
alternation and prints medians and the target ratios from the same run.

Options:
  --full                   The sizes bench/RESULTS.md quotes (same as --scale full)
  --scale tiny|small|full  Workload sizes (default: small, a few minutes)
  --rounds N               Rounds per workload and target
  --targets a,b            Only these targets (default: all)
  --workloads x,y          Only these workloads (default: all)
  --delay-ms MS            Added round-trip delay of the "WAN" proxy (default: 20)
  --no-memory              Skip the peak-RSS measurements
  --no-restart             Skip the restart timing
  --pg-setups a,b          Only these Postgres set-ups (default: every set-up of the named targets
                           but deno-file-fuse and lsvd-shm-journal, which split the commit gap)
  --write-results          Also prepend the run to bench/RESULTS.md and redraw bench/results.svg
  --json PATH              Write machine-readable results to PATH
  -h, --help               Show this help
`;

/** A bad command line: one line and exit 2, no stack trace. */
class BenchUsageError extends Error {}

function parseBenchOptions(args: string[]): BenchOptions {
  let parsed;
  try {
    parsed = parseBenchArgs(args);
  } catch (e) {
    throw new BenchUsageError((e as Error).message.replace(/\. To specify.*$/s, ""));
  }
  const { values } = parsed;
  if (values.help) throw new BenchUsageError("");
  return benchOptionsOf(values);
}

function parseBenchArgs(args: string[]) {
  return parseArgs({
    args,
    options: {
      help: { type: "boolean", short: "h" },
      full: { type: "boolean" },
      scale: { type: "string" },
      rounds: { type: "string" },
      targets: { type: "string" },
      workloads: { type: "string" },
      "delay-ms": { type: "string", default: "20" },
      "no-memory": { type: "boolean" },
      "no-restart": { type: "boolean" },
      "pg-setups": { type: "string" },
      "write-results": { type: "boolean" },
      json: { type: "string" },
    },
  });
}

function benchOptionsOf(values: ReturnType<typeof parseBenchArgs>["values"]): BenchOptions {
  const scaleName = (values.scale ?? (values.full ? "full" : "small")) as ScaleName;
  const base = SCALES[scaleName];
  if (base === undefined) {
    throw new BenchUsageError(`Unknown --scale "${values.scale}"; known: tiny, small, full`);
  }
  const scale = values.rounds === undefined ? base : { ...base, rounds: Number(values.rounds) };
  const fioNames = WORKLOADS.map((w) => w.name);
  const names = list(
    values.workloads,
    [...fioNames, "postgres", "postgres-select"],
    "workload",
    fioNames.filter((n) => n !== randReadBeyondCacheWan.name),
  );
  return {
    scale,
    // The verification-off twins run only when named (the cost of read verification, issue 11).
    // So does the disk-cache target (issue 23), with the workload made for it.
    targets: list(
      values.targets,
      ALL_TARGETS,
      "target",
      ALL_TARGETS.filter((n) => !n.endsWith("-noverify") && !n.endsWith("-diskcache")),
    ),
    workloads: WORKLOADS.filter((w) => names.includes(w.name)),
    delayMs: Number(values["delay-ms"]),
    memory: values["no-memory"] !== true,
    restart: values["no-restart"] !== true,
    writeResults: values["write-results"] === true,
    jsonPath: values.json,
    postgres: names.includes("postgres"),
    postgresSelect: names.includes("postgres-select"),
    pgSetups: values["pg-setups"] === undefined
      ? undefined
      : list(values["pg-setups"], [...PG_SETUPS, ...PG_SELECT_SETUPS].map((s) => s.name), "Postgres set-up"),
  };
}

function needsS3(o: BenchOptions): boolean {
  const s3Targets = [...DEVICE_TARGETS, ...RAW_TARGETS].filter((t) => t.needsS3).map((t) => t.name);
  return o.targets.some((t) => s3Targets.includes(t)) || (o.restart && o.targets.includes("lsvd-rgw"));
}

function rotate<T>(items: T[], by: number): T[] {
  const k = items.length === 0 ? 0 : by % items.length;
  return [...items.slice(k), ...items.slice(0, k)];
}

function record(run: RunRecord, workload: string, target: string, figures: Figures): void {
  let byTarget = run.samples.get(workload);
  if (byTarget === undefined) run.samples.set(workload, byTarget = new Map());
  const rounds = byTarget.get(target) ?? [];
  rounds.push(figures);
  byTarget.set(target, rounds);
}

async function attempt(
  run: RunRecord,
  label: string,
  body: () => Promise<Figures>,
): Promise<Figures | undefined> {
  const t0 = performance.now();
  try {
    const figures = await body();
    console.log(
      `${label.padEnd(48)} ${formatNumber(figures.value ?? NaN).padStart(10)}  (${
        ((performance.now() - t0) / 1000).toFixed(1)
      } s)`,
    );
    return figures;
  } catch (e) {
    const message = `${label}: ${(e as Error).message}`;
    console.log(`${label.padEnd(48)} ERROR`);
    console.error(message);
    run.errors.push(message);
    return undefined;
  }
}

async function runRounds(ctx: TargetContext, o: BenchOptions, run: RunRecord): Promise<void> {
  for (let round = 0; round < o.scale.rounds; round++) {
    for (const w of o.workloads) {
      for (const name of rotate(o.targets, round)) {
        const label = `[${round + 1}/${o.scale.rounds}] ${w.name} ${name}`;
        const device = DEVICE_TARGETS.find((t) => t.name === name);
        const raw = RAW_TARGETS.find((t) => t.name === name);
        const spec = raw?.spec(w, o.scale);
        if (device === undefined && spec === undefined) continue; // no baseline of this kind here
        const figures = await attempt(
          run,
          label,
          () => device !== undefined ? measureDevice(ctx, device, w, o.scale) : measureRaw(ctx, raw!, spec!),
        );
        if (figures !== undefined) record(run, w.name, name, figures);
      }
    }
  }
}

async function runMemoryAndRestart(ctx: TargetContext, o: BenchOptions, run: RunRecord): Promise<void> {
  if (o.memory && o.targets.includes("lsvd-dir")) {
    for (let round = 0; round < o.scale.rounds; round++) {
      for (const kind of ["sequential", "random-4k"] as FillKind[]) {
        const figures = await attempt(
          run,
          `[${round + 1}/${o.scale.rounds}] memory ${kind} KiB/GiB`,
          () => measureMemory(ctx, o.scale, kind),
        );
        if (figures !== undefined) run.memory.set(kind, [...(run.memory.get(kind) ?? []), figures]);
      }
    }
  }
  if (o.restart && o.targets.includes("lsvd-rgw")) {
    for (const objects of o.scale.restartObjects) {
      const figures = await attempt(
        run,
        `restart ${objects} objects/s`,
        () => measureRestart(ctx, objects, o.scale.restartRounds),
      );
      if (figures !== undefined) run.restart.set(objects, figures);
    }
  }
}

async function runPostgres(ctx: TargetContext, o: BenchOptions, run: RunRecord): Promise<void> {
  for (const select of [false, true]) {
    if (!(select ? o.postgresSelect : o.postgres)) continue;
    const fail = (message: string) => {
      console.log("postgres ERROR");
      console.error(message);
      run.errors.push(message);
    };
    try {
      run.postgres.push(
        ...await measurePostgres(
          ctx,
          o.scale,
          o.targets,
          (line) => console.log(line),
          fail,
          select,
          o.pgSetups,
        ),
      );
    } catch (e) {
      fail(`postgres: ${(e as Error).message}`);
    }
  }
}

async function machineDescription(): Promise<string> {
  const cpu = (await Deno.readTextFile("/proc/cpuinfo")).match(/model name\s*:\s*(.*)/)?.[1] ?? "unknown CPU";
  const memGiB = Deno.systemMemoryInfo().total / (1 << 30);
  return `${navigator.hardwareConcurrency} × ${cpu}, ${
    memGiB.toFixed(0)
  } GiB RAM, Deno ${Deno.version.deno}, kernel ${Deno.osRelease()}`;
}

async function writeResults(run: RunRecord): Promise<void> {
  const path = join(REPO_ROOT, "bench/RESULTS.md");
  await Deno.writeTextFile(join(REPO_ROOT, "bench/results.svg"), renderSvg(run));
  const header =
    "# Benchmark results\n\nNewest run first. Each run gives its exact command; bench/README.md says " +
    "what every target and workload measures.\n";
  let earlier = "";
  try {
    const old = await Deno.readTextFile(path);
    const at = old.indexOf("\n## ");
    // Older runs keep their tables; the plot file now shows the newest run, so their link goes.
    earlier = at < 0
      ? ""
      : old.slice(at + 1).split("\n").filter((l) => !l.includes("](results.svg)")).join("\n");
  } catch {
    // First run.
  }
  await Deno.writeTextFile(path, `${header}\n${renderMarkdown(run, "results.svg")}\n${earlier}`);
  console.log(`Wrote ${path} and bench/results.svg`);
}

function toJson(run: RunRecord): unknown {
  const samples: Record<string, Record<string, Figures[]>> = {};
  for (const [w, byTarget] of run.samples) samples[w] = Object.fromEntries(byTarget);
  return {
    scale: run.scale.name,
    samples,
    memory: Object.fromEntries(run.memory),
    restart: Object.fromEntries(run.restart),
    postgres: run.postgres,
    checks: allChecks(run),
    errors: run.errors,
  };
}

/** Quotes an argument only when a shell would need it, so the recorded command reruns as is. */
function shellQuote(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", `'"'"'`)}'`;
}

async function main(args: string[]): Promise<number> {
  const o = parseBenchOptions(args);
  const t0 = performance.now();
  const run: RunRecord = {
    scale: o.scale,
    command: `deno task bench ${args.map(shellQuote).join(" ")}`.trim(),
    startedAt: new Date().toISOString(),
    durationS: 0,
    loadBefore: await loadAverage(),
    loadAfter: "",
    machine: await machineDescription(),
    delayMs: o.delayMs,
    samples: new Map(),
    memory: new Map(),
    restart: new Map(),
    postgres: [],
    errors: [],
  };
  const tmpDir = await Deno.makeTempDir({ prefix: "lsvd-bench-" });
  let backend: RunningBackend | undefined;
  try {
    if (needsS3(o)) {
      const memoryBytes = o.scale.name === "full" ? 6 * 2 ** 30 : 2 ** 30;
      backend = await startBackend(REPO_ROOT, { delayMs: o.delayMs, memoryBytes });
    }
    let id = 0;
    const ctx: TargetContext = {
      repoRoot: REPO_ROOT,
      tmpDir,
      volumeBytes: o.scale.volumeBytes,
      lsvdArgs: ["--dirty-limit", String(o.scale.dirtyLimitBytes)],
      s3: backend,
      nextId: () => ++id,
    };
    await runRounds(ctx, o, run);
    await runMemoryAndRestart(ctx, o, run);
    await runPostgres(ctx, o, run);
  } finally {
    await backend?.stop();
    await Deno.remove(tmpDir, { recursive: true }).catch(() => {});
  }
  run.durationS = (performance.now() - t0) / 1000;
  run.loadAfter = await loadAverage();
  console.log(`\n${renderMarkdown(run, undefined)}`);
  if (o.writeResults) await writeResults(run);
  if (o.jsonPath !== undefined) await Deno.writeTextFile(o.jsonPath, JSON.stringify(toJson(run), null, 2));
  if (run.errors.length > 0) {
    console.error(`\n${run.errors.length} measurement(s) failed:\n${run.errors.join("\n\n")}`);
    return 1;
  }
  return 0;
}

export { checksTable };

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (e) {
    if (!(e instanceof BenchUsageError)) throw e;
    if (e.message === "") {
      console.log(USAGE);
      Deno.exit(0);
    }
    console.error(`bench: ${e.message}\n\n${USAGE}`);
    Deno.exit(2);
  }
}
