/**
 * @module
 * Clone cost against source size, and flatten throughput against a raw copy (issue 21), on the
 * directory store and on Ceph RGW behind the 20 ms WAN delay proxy (bench/delay_proxy.ts, in
 * process), in process (no daemon: what is timed is the store work, not process start; the end to
 * end `lsvd clone` command is timed beside it).
 *
 * - Clone: sources of growing size — a 1 GiB and a 16 GiB volume (and 4 GiB between), each with the
 *   log a volume of that size has once written in 4 MiB objects (256 objects per GiB at `full`;
 *   fewer at the smaller scales). Each object is a real object of the volume's log written through
 *   the engine (one 4 KiB write spread over the whole size, then a FLUSH), so the source has the
 *   volume size, the object count, the extent map and the checkpoints of the real thing, but not
 *   its 16 GiB of bytes: a clone reads no object body (a few small keys, listings, two small
 *   PUTs), so what could grow with the source is its object count and size, not its bytes.
 *   Then `createClone` seven times per source: median time and the store requests of one clone,
 *   counted at the store interface and, on RGW, on the wire by the proxy. `lsvd clone` (process
 *   start to exit) is timed too. Checks: clone < 1 s, and the largest source's median within
 *   1.5 × the smallest's.
 * - Flatten: a source of M MiB of random data, a clone that overwrote nothing, then flatten (open,
 *   copy every sector through the verified read into the clone's log, close, record, release the pin)
 *   against a raw copy of the same objects (whole-object GET, create-only PUT under a new key, four
 *   objects at once, as flatten reads four pieces ahead). On RGW both go through the proxy; the
 *   sources are written to RGW directly (building them is not what is measured).
 *
 *   deno run -A bench/clone.ts                   # small: 1/4/16 GiB as 64/256/1024 objects, 64 MiB flatten
 *   deno run -A bench/clone.ts --scale full      # 256/1024/4096 objects, 256 MiB flatten
 *   deno run -A bench/clone.ts --scale tiny      # what bench/clone_smoke_test.ts runs
 *   --stores dir,rgw (default both)  --delay-ms 20
 */

import { parseArgs } from "node:util";
import { join } from "node:path";
import { DirectoryStore } from "../src/store/directory.ts";
import { S3Store } from "../src/store/s3.ts";
import type { ObjectStore } from "../src/store/store.ts";
import { Volume } from "../src/volume/volume.ts";
import { createClone, finishFlatten } from "../src/log/clone.ts";
import { readFormatRecord } from "../src/log/format_record.ts";
import { listLogState } from "../src/log/log_state.ts";
import { forEachBounded } from "../src/util/ordered.ts";
import { countingStore } from "../tests/support/counting_store.ts";
import { rgwEnv, startRgw } from "../tests/support/rgw.ts";
import { ROOT } from "../tests/support/daemon.ts";
import { startDelayProxy } from "./delay_proxy.ts";

const MiB = 2 ** 20;
const GiB = 2 ** 30;
/** [volume GiB, log objects] per source, and the flatten size. */
const SCALES = {
  tiny: { sources: [[1, 16], [16, 64]], flattenMiB: 8, cliRuns: 1 },
  small: { sources: [[1, 64], [4, 256], [16, 1024]], flattenMiB: 64, cliRuns: 3 },
  full: { sources: [[1, 256], [4, 1024], [16, 4096]], flattenMiB: 256, cliRuns: 3 },
} as const;
type Scale = keyof typeof SCALES;
type StoreName = "dir" | "rgw";
const CLONE_MS_MAX = 1000;
const SIZE_RATIO_MAX = 1.5;
/** In-process clones per source (each a new target): a median of several, the machine being noisy. */
const CLONE_RUNS = 7;

/** Where a run measures: `timed` is what clones and flattens go through, `build` what sources are written to. */
interface Bench {
  name: StoreName;
  timed: ObjectStore;
  build: ObjectStore;
  /** Requests on the wire so far, by method (RGW: the proxy's count). */
  wire(): Record<string, number>;
  /** Store options for `lsvd clone`, and its environment. */
  cliArgs: string[];
  env: Record<string, string>;
  close(): Promise<void>;
}

/** A source: one 4 KiB write spread over `sizeBytes` and a FLUSH per object, until it has `objects`. */
async function buildSource(
  store: ObjectStore,
  prefix: string,
  sizeBytes: number,
  objects: number,
): Promise<void> {
  const v = await Volume.open({ store, prefix, sizeBytes, log: () => {} });
  const sector = new Uint8Array(4096);
  const stride = Math.floor(sizeBytes / objects / 4096) * 4096;
  for (let i = 0; v.stats.lastSequence < objects; i++) {
    sector.fill(i & 0xff);
    await v.write((i % objects) * stride, sector);
    await v.flush();
  }
  await v.close();
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function diff(after: Record<string, number>, before: Record<string, number>): string {
  return Object.entries(after).map(([k, n]) => [k, n - (before[k] ?? 0)] as const).filter(([, n]) => n > 0)
    .map(([k, n]) => `${k} ${n}`).join(", ");
}

/** `lsvd clone` as a user runs it: process start to exit. */
async function cliCloneMs(b: Bench, source: string, target: string): Promise<number> {
  const t0 = performance.now();
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      join(ROOT, "main.ts"),
      "clone",
      ...b.cliArgs,
      "--prefix",
      source,
      "--to-prefix",
      target,
    ],
    env: b.env,
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!out.success) throw new Error(`lsvd clone failed: ${new TextDecoder().decode(out.stderr)}`);
  return performance.now() - t0;
}

interface CloneRow {
  gib: number;
  objects: number;
  ms: number;
  cliMs: number;
  calls: string;
  wire: string;
}

async function cloneCost(b: Bench, gib: number, objects: number, cliRuns: number): Promise<CloneRow> {
  const source = `src${gib}g/`;
  await buildSource(b.build, source, gib * GiB, objects);
  const { store, counts } = countingStore(b.timed);
  const times: number[] = [];
  let calls = "", wire = "";
  for (let i = 0; i < CLONE_RUNS; i++) {
    counts.clear();
    const before = { ...b.wire() };
    const t0 = performance.now();
    await createClone(store, {
      source,
      target: `c${gib}g-${i}/`,
      point: undefined,
      wallNowMs: Date.now(),
    });
    times.push(performance.now() - t0);
    calls = [...counts].map(([k, n]) => `${k} ${n}`).join(", ");
    wire = diff(b.wire(), before);
  }
  const cli: number[] = [];
  for (let i = 0; i < cliRuns; i++) cli.push(await cliCloneMs(b, source, `cli${gib}g-${i}`));
  return { gib, objects, ms: median(times), cliMs: median(cli), calls, wire };
}

async function writeRandom(store: ObjectStore, prefix: string, mib: number): Promise<void> {
  const src = await Volume.open({ store, prefix, sizeBytes: mib * MiB, log: () => {} });
  const chunk = new Uint8Array(MiB);
  for (let i = 0; i < mib; i++) {
    crypto.getRandomValues(chunk.subarray(0, 65536));
    for (let k = 1; k < 16; k++) chunk.copyWithin(k * 65536, 0, 65536);
    chunk[0] = i & 0xff;
    await src.write(i * MiB, chunk);
  }
  await src.close();
}

async function flattenVsRaw(b: Bench, mib: number): Promise<{ flattenMs: number; rawMs: number }> {
  await writeRandom(b.build, "fsrc/", mib);
  const store = b.timed;
  await createClone(store, {
    source: "fsrc/",
    target: "fdst/",
    point: undefined,
    wallNowMs: Date.now(),
  });
  const t0 = performance.now();
  const clone = await Volume.open({ store, prefix: "fdst/", log: () => {} });
  const through = await clone.copyFromParents();
  await clone.close();
  await finishFlatten(store, "fdst/", (await readFormatRecord(store, "fdst/"))!, through);
  const flattenMs = performance.now() - t0;
  const state = await listLogState(store, "fsrc/");
  const t1 = performance.now();
  await forEachBounded(state.objects, 4, async (o) => {
    const { body } = await store.get(o.key);
    await store.put(`raw/${o.key}`, body, { ifNoneMatch: true });
  });
  return { flattenMs, rawMs: performance.now() - t1 };
}

async function dirBench(): Promise<Bench> {
  const dir = await Deno.makeTempDir({ prefix: "lsvd-bench-clone-" });
  const store = new DirectoryStore(dir);
  return {
    name: "dir",
    timed: store,
    build: store,
    wire: () => ({}),
    cliArgs: ["--dir", dir],
    env: Deno.env.toObject(),
    close: () => Deno.remove(dir, { recursive: true }),
  };
}

async function rgwBench(delayMs: number): Promise<Bench> {
  const rgw = await startRgw();
  const port = Number(new URL(rgw.endpoint).port);
  const proxy = startDelayProxy({ targetHostname: "127.0.0.1", targetPort: port, delayMs });
  const s3 = (endpoint: string) =>
    new S3Store({
      bucket: rgw.bucket,
      endpoint,
      forcePathStyle: true,
      region: rgw.region,
      credentials: { accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey },
    });
  const wan = `http://127.0.0.1:${proxy.port}`;
  const [timed, build] = [s3(wan), s3(rgw.endpoint)];
  return {
    name: "rgw",
    timed,
    build,
    wire: () => ({ ...proxy.requestsByMethod }),
    cliArgs: ["--bucket", rgw.bucket, "--endpoint", wan, "--path-style"],
    env: rgwEnv(rgw),
    async close() {
      await timed.close();
      await build.close();
      await proxy.close();
      await rgw.stop();
    },
  };
}

function report(name: StoreName, rows: CloneRow[], flat: { flattenMs: number; rawMs: number }, mib: number) {
  const where = name === "dir" ? "directory store" : "Ceph RGW through the WAN proxy";
  const lines = [
    `${where}:`,
    "",
    `| source | log objects | clone (median of ${CLONE_RUNS}) | \`lsvd clone\` end to end (median) | store calls of one clone | requests on the wire |`,
    "| --- | --- | --- | --- | --- | --- |",
  ];
  for (const r of rows) {
    lines.push(
      `| ${r.gib} GiB | ${r.objects} | ${r.ms.toFixed(1)} ms | ${r.cliMs.toFixed(0)} ms | ${r.calls} | ${
        r.wire || "n/a"
      } |`,
    );
  }
  const [small, large] = [rows[0]!, rows.at(-1)!];
  const ratio = large.ms / small.ms;
  const verdict = (ok: boolean) => ok ? "PASS" : "MISS";
  lines.push(
    "",
    `check: clone < ${CLONE_MS_MAX} ms at every size: ${verdict(rows.every((r) => r.ms < CLONE_MS_MAX))}`,
    `check: ${large.gib} GiB / ${small.gib} GiB clone time ${ratio.toFixed(2)} x ≤ ${SIZE_RATIO_MAX}: ${
      verdict(ratio <= SIZE_RATIO_MAX)
    }`,
    `check: the same requests at every size: ${verdict(rows.every((r) => r.calls === small.calls))}`,
  );
  const rate = (ms: number) => (mib / (ms / 1000)).toFixed(0);
  lines.push(
    "",
    "| flatten | time | throughput |",
    "| --- | --- | --- |",
    `| flatten ${mib} MiB | ${flat.flattenMs.toFixed(0)} ms | ${rate(flat.flattenMs)} MiB/s |`,
    `| raw copy of the source's objects | ${flat.rawMs.toFixed(0)} ms | ${rate(flat.rawMs)} MiB/s |`,
    `| flatten / raw | | ${(flat.rawMs / flat.flattenMs).toFixed(2)} x |`,
  );
  return lines.join("\n");
}

export async function runCloneBench(
  scale: Scale,
  options: { stores?: StoreName[]; delayMs?: number } = {},
): Promise<string> {
  const out: string[] = [];
  for (const name of options.stores ?? ["dir", "rgw"]) {
    const b = name === "dir" ? await dirBench() : await rgwBench(options.delayMs ?? 20);
    try {
      const rows: CloneRow[] = [];
      for (const [gib, objects] of SCALES[scale].sources) {
        rows.push(await cloneCost(b, gib, objects, SCALES[scale].cliRuns));
      }
      const mib = SCALES[scale].flattenMiB;
      out.push(report(name, rows, await flattenVsRaw(b, mib), mib));
    } finally {
      await b.close();
    }
  }
  return out.join("\n\n");
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      scale: { type: "string", default: "small" },
      stores: { type: "string", default: "dir,rgw" },
      "delay-ms": { type: "string", default: "20" },
    },
  });
  const scale = values.scale as Scale;
  if (!(scale in SCALES)) throw new Error(`--scale is tiny, small or full`);
  const stores = values.stores.split(",") as StoreName[];
  if (stores.some((s) => s !== "dir" && s !== "rgw")) throw new Error("--stores is a list of dir, rgw");
  console.log(await runCloneBench(scale, { stores, delayMs: Number(values["delay-ms"]) }));
  Deno.exit(0);
}
