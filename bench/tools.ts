/**
 * @module
 * `deno task bench:tools`: the offline tools against the backend limit, in one run. Ceph RGW
 * behind the 20 ms WAN delay proxy (bench/backend.ts); each round, in a fresh bucket:
 *
 *   raw PUT     raw_store.ts: N create-only 4 MiB PUTs, 32 in flight          → MiB/s
 *   import      `lsvd import` of an N × 4 MiB random image, --parallel 32     → image MiB/s
 *   raw GET     raw_store.ts: N whole-object 4 MiB GETs, 32 in flight         → MiB/s
 *   export      `lsvd export` of that volume to a file, --parallel 32          → image MiB/s
 *   verify      `lsvd verify` of that volume, --parallel 32                    → object MiB/s
 *
 * Every lsvd figure is end to end (process start to exit, listing and loading included) with
 * --connections 32, the raw figures use 32 connections too. Checks (issue 8): import ≥ 0.8 × raw
 * PUT, export ≥ 0.7 × raw GET, verify ≥ 0.7 × raw GET, medians over the rounds.
 *
 *   deno task bench:tools                       small (128 MiB, 2 rounds)
 *   deno task bench:tools --scale full          1 GiB, 3 rounds (what RESULTS.md quotes)
 *   --scale tiny|small|full  --rounds N  --delay-ms 20  --json PATH  --write-results
 */

import { parseArgs } from "node:util";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { type RunningBackend, startBackend } from "./backend.ts";
import { run } from "./process.ts";
import type { RawResult } from "./raw_store.ts";
import { formatNumber, median } from "./stats.ts";

const REPO_ROOT = dirname(dirname(fileURLToPath(import.meta.url)));
const MiB = 2 ** 20;
const OBJECT_BYTES = 4 * MiB;
const CONCURRENCY = 32;
const TIMEOUT_MS = 900_000;

const SIZES = {
  tiny: { bytes: 16 * MiB, rounds: 1 },
  small: { bytes: 128 * MiB, rounds: 2 },
  full: { bytes: 1024 * MiB, rounds: 3 },
};
type SizeName = keyof typeof SIZES;

const FIGURES = ["raw-put", "import", "raw-get", "export", "verify"] as const;
type FigureName = typeof FIGURES[number];

interface ToolsRun {
  scale: SizeName;
  imageBytes: number;
  rounds: number;
  delayMs: number;
  command: string;
  startedAt: string;
  /** MiB/s per round. */
  samples: Record<FigureName, number[]>;
  checks: { name: string; actual: number; bound: number; status: "PASS" | "MISS" | "n/a" }[];
}

function env(backend: RunningBackend): Record<string, string> {
  return {
    PATH: Deno.env.get("PATH") ?? "",
    HOME: Deno.env.get("HOME") ?? "/tmp",
    AWS_ACCESS_KEY_ID: backend.accessKeyId,
    AWS_SECRET_ACCESS_KEY: backend.secretAccessKey,
    AWS_REGION: "us-east-1",
  };
}

async function timed(label: string, command: string[], e: Record<string, string>): Promise<number> {
  const t0 = performance.now();
  const r = await run(Deno.execPath(), command, { env: e, timeoutMs: TIMEOUT_MS });
  const seconds = (performance.now() - t0) / 1000;
  if (r.code !== 0) throw new Error(`${label} failed (exit ${r.code}):\n${r.stderr.slice(-2000)}`);
  return seconds;
}

async function raw(args: string[], e: Record<string, string>): Promise<number> {
  const r = await run(Deno.execPath(), ["run", "-A", join(REPO_ROOT, "bench/raw_store.ts"), ...args], {
    env: e,
    timeoutMs: TIMEOUT_MS,
  });
  if (r.code !== 0) throw new Error(`raw_store.ts ${args[1]} failed:\n${r.stderr.slice(-2000)}`);
  return (JSON.parse(r.stdout.trim().split("\n").at(-1)!) as RawResult).bytesPerS / MiB;
}

async function round(
  backend: RunningBackend,
  image: string,
  imageBytes: number,
  tmp: string,
): Promise<Record<FigureName, number>> {
  const bucket = await backend.newBucket();
  const e = env(backend);
  const count = String(imageBytes / OBJECT_BYTES);
  const lsvd = (command: string, ...rest: string[]) => [
    "run",
    "-A",
    join(REPO_ROOT, "main.ts"),
    command,
    "--bucket",
    bucket,
    "--endpoint",
    backend.wanEndpoint,
    "--path-style",
    "--connections",
    String(CONCURRENCY),
    "--parallel",
    String(CONCURRENCY),
    "--prefix",
    "vol",
    ...rest,
  ];
  const common = [
    "--bucket",
    bucket,
    "--concurrency",
    String(CONCURRENCY),
    "--object-bytes",
    String(OBJECT_BYTES),
  ];
  try {
    const rawPut = await raw([
      "--mode",
      "put",
      "--count",
      count,
      "--endpoint",
      backend.wanEndpoint,
      "--prefix",
      "raw-put/",
      ...common,
    ], e);
    const importS = await timed("lsvd import", lsvd("import", image), e);
    const rawGet = await raw([
      "--mode",
      "get",
      "--count",
      count,
      "--objects",
      count,
      "--range-bytes",
      String(OBJECT_BYTES),
      "--endpoint",
      backend.endpoint,
      "--read-endpoint",
      backend.wanEndpoint,
      "--prefix",
      "raw-get/",
      ...common,
    ], e);
    const out = join(tmp, "export.img");
    const exportS = await timed("lsvd export", lsvd("export", "--force", out), e);
    await Deno.remove(out);
    const verifyS = await timed("lsvd verify", lsvd("verify"), e);
    const objectBytes = imageBytes + (imageBytes / OBJECT_BYTES) * (12_288 + 72 + 4096); // header, trailer, CRCs
    return {
      "raw-put": rawPut,
      import: imageBytes / MiB / importS,
      "raw-get": rawGet,
      export: imageBytes / MiB / exportS,
      verify: objectBytes / MiB / verifyS,
    };
  } finally {
    await backend.dropBucket(bucket).catch(() => {});
  }
}

function checks(samples: Record<FigureName, number[]>): ToolsRun["checks"] {
  const m = (f: FigureName) => median(samples[f]);
  const one = (name: string, actual: number, bound: number) => ({
    name,
    actual,
    bound,
    status:
      (!Number.isFinite(actual) || !Number.isFinite(bound) ? "n/a" : actual >= bound ? "PASS" : "MISS") as
        | "PASS"
        | "MISS"
        | "n/a",
  });
  return [
    one("import ≥ 0.8 × raw PUT bandwidth", m("import"), 0.8 * m("raw-put")),
    one("export ≥ 0.7 × raw GET bandwidth", m("export"), 0.7 * m("raw-get")),
    one("verify ≥ 0.7 × raw GET bandwidth", m("verify"), 0.7 * m("raw-get")),
  ];
}

function render(r: ToolsRun): string {
  const rows = FIGURES.map((f) =>
    `| ${f.padEnd(8)} | ${formatNumber(median(r.samples[f])).padStart(8)} | ${
      r.samples[f].map(formatNumber).join(", ")
    } |`
  );
  const checkRows = r.checks.map((c) =>
    `| ${c.name} | ${formatNumber(c.actual)} | ${formatNumber(c.bound)} | ${c.status} |`
  );
  return [
    `## Offline tools, ${r.startedAt} (${r.scale}: ${
      r.imageBytes / MiB
    } MiB image, ${r.rounds} rounds, WAN ${r.delayMs} ms)`,
    "",
    "```",
    r.command,
    "```",
    "",
    "| figure   | MiB/s (median) | rounds |",
    "| -------- | -------------- | ------ |",
    ...rows,
    "",
    "| check | actual MiB/s | bound MiB/s | status |",
    "| ----- | ------------ | ----------- | ------ |",
    ...checkRows,
    "",
  ].join("\n");
}

async function writeResults(text: string): Promise<void> {
  const path = join(REPO_ROOT, "bench/RESULTS.md");
  const old = await Deno.readTextFile(path);
  const at = old.indexOf("\n## ");
  const next = at < 0
    ? `${old.trimEnd()}\n\n${text}`
    : `${old.slice(0, at + 1)}${text}\n${old.slice(at + 1)}`;
  await Deno.writeTextFile(path, next);
  console.log(`Wrote ${path}`);
}

async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      scale: { type: "string", default: "small" },
      rounds: { type: "string" },
      "delay-ms": { type: "string", default: "20" },
      json: { type: "string" },
      "write-results": { type: "boolean" },
    },
  });
  const scale = values.scale as SizeName;
  if (!(scale in SIZES)) throw new Error(`Unknown --scale "${scale}"; known: tiny, small, full`);
  const { bytes } = SIZES[scale];
  const rounds = values.rounds === undefined ? SIZES[scale].rounds : Number(values.rounds);
  const delayMs = Number(values["delay-ms"]);
  const tmp = await Deno.makeTempDir({ prefix: "lsvd-bench-tools-" });
  const backend = await startBackend(REPO_ROOT, { delayMs, memoryBytes: Math.max(2 ** 30, 5 * bytes) });
  const r: ToolsRun = {
    scale,
    imageBytes: bytes,
    rounds,
    delayMs,
    command: `deno task bench:tools ${args.join(" ")}`.trim(),
    startedAt: new Date().toISOString(),
    samples: { "raw-put": [], import: [], "raw-get": [], export: [], verify: [] },
    checks: [],
  };
  try {
    const image = join(tmp, "image.img");
    const file = await Deno.open(image, { write: true, create: true });
    const chunk = new Uint8Array(MiB);
    for (let i = 0; i < bytes / MiB; i++) {
      for (let j = 0; j < MiB; j += 65536) crypto.getRandomValues(chunk.subarray(j, j + 65536));
      await file.write(chunk);
    }
    file.close();
    for (let i = 0; i < rounds; i++) {
      const figures = await round(backend, image, bytes, tmp);
      for (const f of FIGURES) r.samples[f].push(figures[f]);
      console.log(
        `[${i + 1}/${rounds}] ${FIGURES.map((f) => `${f} ${formatNumber(figures[f])} MiB/s`).join(", ")}`,
      );
    }
  } finally {
    await backend.stop();
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
  r.checks = checks(r.samples);
  const text = render(r);
  console.log(`\n${text}`);
  if (values.json !== undefined) await Deno.writeTextFile(values.json, JSON.stringify(r, null, 2));
  if (values["write-results"]) await writeResults(text);
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
