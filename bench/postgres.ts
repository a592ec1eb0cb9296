/**
 * @module
 * The flagship workload measured with the real application: pgbench TPC-B on Debian's PostgreSQL
 * 15, on ext4 on a loop device with 4 KiB sectors, in five set-ups side by side in one run:
 *
 *   local-loop         the same stack on a local file (the floor: what the machine does without lsvd)
 *   nbdkit-memory-fuse nbdkit's memory plugin through the same nbdfuse + loop path as lsvd: what the
 *                      transport costs, so local-loop ÷ nbdkit-memory-fuse ÷ lsvd splits a gap (issue 23)
 *   nbdkit-file-fuse   the same with nbdkit's file plugin on a local copy: each FLUSH an fdatasync on
 *                      the local disk, as lsvd --journal's (the floor for a journalled commit)
 *   lsvd-dir-each      lsvd on the directory store, every FLUSH seals its own object
 *   lsvd-dir-group     ... group commit (FLUSHes arriving while commits upload share the next object)
 *   lsvd-rgw-each      lsvd on Ceph RGW through the WAN delay proxy (20 ms per request)
 *   lsvd-rgw-group
 *   lsvd-rgw-group-10pps  ... with at most 10 commit objects a second (--puts-per-second 10): FLUSHes
 *                         wait up to 100 ms, so Postgres gathers more commits into each WAL flush
 *   lsvd-dir-journal, lsvd-rgw-journal  ... with a local write-back journal (--journal, default
 *                         --journal-delay): a FLUSH is acknowledged once the journal is fdatasync'd,
 *                         objects fill by size or the delay (docs/design/write-back-journal.md)
 *
 * The database is built once (`pgbench -i`) on a local image, then copied into every set-up with
 * nbdcopy, so each starts from the same bytes, and read once (pg_prewarm) before the runs. Per client count: CHECKPOINT (not measured), pgbench
 * for a fixed time, then CHECKPOINT again, so the dirty pages of the run are written (and counted)
 * too. Counted per run: transactions, TPS, transaction latency p50/p99 (pgbench --log), the average
 * latency of END (pgbench -r: the commit), lsvd's PUTs, GETs and bytes uploaded (its `--metrics`
 * endpoint; on RGW also the PUTs counted on the wire by the WAN proxy, as a cross-check), WAL bytes
 * (pg_stat_wal) and data pages written (pg_stat_bgwriter), lsvd's CPU time and peak RSS.
 *
 * `--workloads postgres-select` runs pgbench -S (select-only, issue 23) instead, on a database larger
 * than lsvd's memory read cache (8 MiB here): local-loop-select, lsvd-rgw-select and lsvd-rgw-diskcache-select
 * (`--cache-dir`; needs the lsvd-rgw-diskcache target named). Both lsvd set-ups read the whole device
 * once after the copy (what fills a disk cache: reads, not writes, enter it), then every run starts
 * with Postgres restarted (empty shared buffers), no prewarm and the kernel's page cache dropped, so
 * the reads reach the device.
 */

import { join } from "node:path";
import { Ext4OnNbd, loopMount, loopUnmount, PG_BIN, PostgresServer } from "../tests/support/postgres.ts";
import { freePort } from "../tests/support/ports.ts";
import { scrapeLsvdMetrics } from "./lsvd_metrics.ts";
import type { Figures } from "./measure.ts";
import { cpuTicksOf, procStatusBytes, run, startDaemon, waitForPath } from "./process.ts";
import type { Scale } from "./scale.ts";
import { startLsvd, type TargetContext } from "./targets.ts";

/** AWS S3 Standard list prices, us-east-1: PUT/COPY/POST/LIST per 1,000 requests, GET per 1,000. */
export const PUT_USD_PER_1000 = 0.005;
export const GET_USD_PER_1000 = 0.0004;

const PG_VOLUME_BYTES = 4 * 2 ** 30;
const PAGE_BYTES = 8192;
const CLOCK_TICKS_PER_S = 100;

export interface PgSetup {
  name: string;
  /** The bench target whose presence in --targets enables this set-up ("" = always). */
  target: "" | "lsvd-dir" | "lsvd-rgw" | "lsvd-rgw-diskcache" | "nbdkit-memory";
  flushPolicy?: "each" | "group";
  /** Further `lsvd serve` options. */
  extraArgs?: string[];
  /** Serve with a write-back journal in the run's work directory. */
  journal?: boolean;
  /** Serve with --cache-dir in the run's work directory (issue 23). */
  cacheDir?: boolean;
  /**
   * With target nbdkit-memory: what serves the image over NBD (default nbdkit's memory plugin):
   * nbdkit's file plugin on a local copy, or lsvd's own NBD front end on one (bench/nbd_file_server.ts).
   */
  server?: "nbdkit-memory" | "nbdkit-file" | "deno-file";
  /** lsvd-dir: the store in /dev/shm, a store whose writes cost only memory copies. */
  storeInMemory?: boolean;
  /** Runs only when --pg-setups names it (set-ups that split a gap, not the headline). */
  onlyWhenNamed?: boolean;
  /** pgbench -S (select-only) from a cold start instead of TPC-B. */
  select?: boolean;
}

export const PG_SETUPS: readonly PgSetup[] = [
  { name: "local-loop", target: "" },
  { name: "nbdkit-memory-fuse", target: "nbdkit-memory" },
  { name: "nbdkit-file-fuse", target: "nbdkit-memory", server: "nbdkit-file" },
  { name: "deno-file-fuse", target: "nbdkit-memory", server: "deno-file", onlyWhenNamed: true },
  { name: "lsvd-dir-each", target: "lsvd-dir", flushPolicy: "each" },
  { name: "lsvd-dir-group", target: "lsvd-dir", flushPolicy: "group" },
  { name: "lsvd-rgw-each", target: "lsvd-rgw", flushPolicy: "each" },
  { name: "lsvd-rgw-group", target: "lsvd-rgw", flushPolicy: "group" },
  {
    name: "lsvd-rgw-group-10pps",
    target: "lsvd-rgw",
    flushPolicy: "group",
    extraArgs: ["--puts-per-second", "10"],
  },
  { name: "lsvd-dir-journal", target: "lsvd-dir", flushPolicy: "group", journal: true },
  { name: "lsvd-rgw-journal", target: "lsvd-rgw", flushPolicy: "group", journal: true },
  {
    name: "lsvd-shm-journal",
    target: "lsvd-dir",
    flushPolicy: "group",
    journal: true,
    storeInMemory: true,
    onlyWhenNamed: true,
  },
];

/**
 * `--workloads postgres-select`: pgbench -S on a cold device, with and without a disk cache. The
 * memory read cache is 8 MiB, so the database (16 MiB at scale 1, ~160 MiB at 10) is larger at
 * every scale.
 */
const SELECT_LSVD_ARGS = ["--cache-size", "8M"];
export const PG_SELECT_SETUPS: readonly PgSetup[] = [
  { name: "local-loop-select", target: "", select: true },
  {
    name: "lsvd-rgw-select",
    target: "lsvd-rgw",
    flushPolicy: "group",
    select: true,
    extraArgs: SELECT_LSVD_ARGS,
  },
  {
    name: "lsvd-rgw-diskcache-select",
    target: "lsvd-rgw-diskcache",
    flushPolicy: "group",
    extraArgs: SELECT_LSVD_ARGS,
    cacheDir: true,
    select: true,
  },
];

/** One pgbench run: set-up × clients. */
export interface PgRun {
  setup: string;
  clients: number;
  figures: Figures;
}

interface Counters {
  walBytes: number;
  dataBytes: number;
  puts: number;
  gets: number;
  uploadedBytes: number;
  wirePuts: number;
  diskHits: number;
  cpuTicks: number;
  storeCpuTicks: number;
}

/** lsvd's counters, from its Prometheus endpoint, and (RGW) the proxy's wire count of PUTs. */
interface Meter {
  read(): Promise<{ puts: number; gets: number; uploadedBytes: number; wirePuts: number; diskHits: number }>;
}

export async function measurePostgres(
  ctx: TargetContext,
  s: Scale,
  targets: string[],
  log: (line: string) => void,
  onError: (message: string) => void,
  select = false,
  /** Only these set-ups (by name); undefined: all of the named targets'. */
  only?: string[],
): Promise<PgRun[]> {
  // The postgres user walks from here down to its data directory.
  await Deno.chmod(ctx.tmpDir, 0o755);
  const image = join(ctx.tmpDir, "pg-pristine.img");
  const t0 = performance.now();
  await buildImage(ctx, image, s);
  log(
    `postgres: pgbench -i -s ${s.pgScale} image built in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
  );
  const runs: PgRun[] = [];
  try {
    for (const setup of select ? PG_SELECT_SETUPS : PG_SETUPS) {
      if (setup.target !== "" && !targets.includes(setup.target)) continue;
      if (only !== undefined ? !only.includes(setup.name) : setup.onlyWhenNamed) continue;
      const t1 = performance.now();
      let got: PgRun[];
      try {
        got = await runSetup(ctx, s, setup, image);
      } catch (e) {
        onError(`postgres ${setup.name}: ${(e as Error).message}`);
        continue; // the other set-ups still measure
      }
      for (const r of got) {
        log(
          `postgres ${r.setup} ${r.clients} clients: ${r.figures.tps?.toFixed(0)} TPS, ${
            r.figures.putsPerTxn?.toFixed(3)
          } PUTs/txn`,
        );
      }
      log(`postgres ${setup.name}: ${((performance.now() - t1) / 1000).toFixed(1)} s`);
      runs.push(...got);
    }
  } finally {
    await Deno.remove(image).catch(() => {});
  }
  return runs;
}

async function buildImage(ctx: TargetContext, image: string, s: Scale): Promise<void> {
  await checked("truncate", ["-s", String(PG_VOLUME_BYTES), image]);
  const mountPoint = join(ctx.tmpDir, "pg-build");
  const m = await loopMount(image, mountPoint, { mkfs: true });
  try {
    const pg = new PostgresServer(join(mountPoint, "pgdata"), freePort());
    await pg.init();
    await pg.start();
    try {
      await checked(join(PG_BIN, "pgbench"), [
        ...connection(pg),
        "-i",
        "-q",
        "-s",
        String(s.pgScale),
        "postgres",
      ]);
    } finally {
      await pg.stop();
    }
  } finally {
    await loopUnmount(mountPoint, m.loopDevice);
  }
}

async function runSetup(ctx: TargetContext, s: Scale, setup: PgSetup, image: string): Promise<PgRun[]> {
  const id = ctx.nextId();
  const work = join(ctx.tmpDir, `pg-${setup.name}-${id}`);
  await Deno.mkdir(work, { mode: 0o755 });
  const cleanups: (() => Promise<unknown>)[] = [() => Deno.remove(work, { recursive: true }).catch(() => {})];
  try {
    const attached = setup.target === ""
      ? await attachFloor(image, work, cleanups)
      : setup.target === "nbdkit-memory"
      ? await attachLocalServer(setup.server ?? "nbdkit-memory", image, work, cleanups)
      : await attachLsvd(ctx, setup, image, work, cleanups);
    const pg = new PostgresServer(join(attached.mountPoint, "pgdata"), freePort());
    await pg.start();
    cleanups.unshift(async () => {
      const code = await pg.stop();
      if (code !== 0) {
        throw new Error(`postgres (${setup.name}) did not stop cleanly: exit ${code}\n${pg.log}`);
      }
    });
    // The copied database starts cold: read every table and index once (sequentially, into the page
    // cache), so the runs measure commits rather than first reads of pages through the WAN.
    if (!setup.select) {
      await pg.query(
        "CREATE EXTENSION IF NOT EXISTS pg_prewarm; " +
          "SELECT sum(pg_prewarm(c.oid::regclass, 'read')) FROM pg_class c " +
          "WHERE c.relname LIKE 'pgbench%' AND c.relkind IN ('r', 'i')",
      );
    }
    const runs: PgRun[] = [];
    for (const clients of s.pgClients) {
      if (setup.select) await coldStart(pg);
      const figures = await measureRun(pg, s, { clients, work, attached, select: setup.select === true });
      runs.push({ setup: setup.name, clients, figures });
    }
    const rss = attached.pid === undefined ? NaN : await procStatusBytes(attached.pid, "VmHWM") / 2 ** 20;
    for (const r of runs) r.figures.peakRssMiB = rss;
    return runs;
  } finally {
    for (const c of cleanups) await c();
  }
}

interface Attached {
  mountPoint: string;
  meter: Meter | undefined;
  /** lsvd's process id. */
  pid: number | undefined;
  /** The local S3 gateway's and the WAN proxy's processes (RGW set-ups). */
  storePids?: () => number[];
}

async function attachFloor(
  image: string,
  work: string,
  cleanups: (() => Promise<unknown>)[],
): Promise<Attached> {
  const file = join(work, "disk.img");
  await checked("cp", ["--sparse=always", image, file]);
  const mountPoint = join(work, "fs");
  const m = await loopMount(file, mountPoint, { mkfs: false, fsck: false });
  cleanups.unshift(() => loopUnmount(mountPoint, m.loopDevice));
  return { mountPoint, meter: undefined, pid: undefined };
}

async function attachLsvd(
  ctx: TargetContext,
  setup: PgSetup,
  image: string,
  work: string,
  cleanups: (() => Promise<unknown>)[],
): Promise<Attached> {
  const socketPath = join(work, "lsvd.sock");
  const isRgw = setup.target === "lsvd-rgw" || setup.target === "lsvd-rgw-diskcache";
  const s3 = ctx.s3;
  if (isRgw && s3 === undefined) {
    throw new Error("Cannot run Postgres on lsvd-rgw: no S3 backend was started");
  }
  const dir = setup.storeInMemory
    ? await Deno.makeTempDir({ dir: "/dev/shm", prefix: "lsvd-bench-" })
    : join(work, "store");
  if (setup.storeInMemory) cleanups.unshift(() => Deno.remove(dir, { recursive: true }).catch(() => {}));
  const bucketName = isRgw ? await s3!.newBucket() : undefined;
  if (bucketName !== undefined) cleanups.unshift(() => s3!.dropBucket(bucketName));
  const metricsPort = freePort();
  const start = () =>
    startLsvd({ ...ctx, volumeBytes: PG_VOLUME_BYTES }, {
      socketPath,
      storeArgs: bucketName === undefined ? ["--dir", dir] : ["--bucket", bucketName, "--path-style"],
      wan: isRgw,
      label: setup.name,
      extraArgs: [
        "--flush-policy",
        setup.flushPolicy!,
        ...(setup.extraArgs ?? []),
        ...(setup.journal ? ["--journal", join(work, "journal")] : []),
        ...(setup.cacheDir
          ? ["--cache-dir", join(work, "cache"), "--cache-dir-size", String(PG_VOLUME_BYTES)]
          : []),
        "--metrics",
        `127.0.0.1:${metricsPort}`,
      ],
    });
  let daemon = await start();
  cleanups.unshift(async () => {
    const code = await daemon.stop();
    if (code !== 0) {
      throw new Error(`lsvd (${setup.name}) did not stop cleanly: exit ${code}\n${daemon.output}`);
    }
  });
  const uri = `nbd+unix:///lsvd?socket=${socketPath}`;
  await checked("nbdcopy", ["--destination-is-zero", "--flush", image, uri], 600_000);
  if (setup.select) {
    // What fills a disk cache is reads from the store (data just written is not kept): a restart
    // empties the memory cache, then one whole read pass; both select-only set-ups alike, so they
    // differ only in --cache-dir.
    const code = await daemon.stop();
    if (code !== 0) {
      throw new Error(`lsvd (${setup.name}) did not stop cleanly: exit ${code}\n${daemon.output}`);
    }
    daemon = await start();
    await checked("nbdcopy", [uri, "null:"], 600_000);
  }
  const { fs } = await Ext4OnNbd.attach(uri, work, { mkfs: false, fsck: false });
  cleanups.unshift(() => fs.detach());
  const meter: Meter = {
    async read() {
      const m = await scrapeLsvdMetrics(metricsPort);
      const wire = isRgw ? await s3!.wanRequests() : {};
      return {
        puts: m.get('lsvd_store_requests_total{op="put"}') ?? NaN,
        gets: m.get('lsvd_store_requests_total{op="get"}') ?? NaN,
        uploadedBytes: m.get("lsvd_store_uploaded_bytes_total") ?? NaN,
        wirePuts: wire.PUT ?? NaN,
        diskHits: m.get("lsvd_disk_cache_hits_total") ?? NaN,
      };
    },
  };
  const storePids = isRgw ? s3!.pids : undefined;
  return { mountPoint: fs.mountPoint, meter, pid: daemon.pid, ...(storePids ? { storePids } : {}) };
}

/** The same database through nbdkit (memory, or file on a local copy), nbdfuse and a loop device. */
async function attachLocalServer(
  server: "nbdkit-memory" | "nbdkit-file" | "deno-file",
  image: string,
  work: string,
  cleanups: (() => Promise<unknown>)[],
): Promise<Attached> {
  const socketPath = join(work, "nbdkit.sock");
  const file = join(work, "disk.img");
  if (server !== "nbdkit-memory") await checked("cp", ["--sparse=always", image, file]);
  const daemon = server === "deno-file"
    ? await startDaemon(Deno.execPath(), {
      args: ["run", "-A", new URL("nbd_file_server.ts", import.meta.url).pathname, socketPath, file],
      env: {},
      label: server,
    })
    : await startDaemon("nbdkit", {
      args: [
        ...["--foreground", "--exit-with-parent", "--unix", socketPath],
        ...(server === "nbdkit-file" ? ["file", file] : ["memory", `size=${PG_VOLUME_BYTES}`]),
      ],
      env: {},
      label: server,
    });
  cleanups.unshift(() => daemon.stop(5_000));
  await waitForPath(socketPath, 30_000);
  const uri = `nbd+unix:///?socket=${socketPath}`;
  if (server === "nbdkit-memory") {
    await checked("nbdcopy", ["--destination-is-zero", "--flush", image, uri], 600_000);
  }
  const { fs } = await Ext4OnNbd.attach(uri, work, { mkfs: false, fsck: false });
  cleanups.unshift(() => fs.detach());
  return { mountPoint: fs.mountPoint, meter: undefined, pid: undefined };
}

/** Select-only runs start cold: Postgres restarted (empty shared buffers), page cache dropped. */
async function coldStart(pg: PostgresServer): Promise<void> {
  const code = await pg.stop();
  if (code !== 0) throw new Error(`postgres did not stop cleanly: exit ${code}\n${pg.log}`);
  await checked("sync", []);
  await Deno.writeTextFile("/proc/sys/vm/drop_caches", "1\n");
  await pg.start();
}

interface RunSpec {
  clients: number;
  work: string;
  attached: Attached;
  /** pgbench -S instead of TPC-B. */
  select: boolean;
}

async function measureRun(pg: PostgresServer, s: Scale, spec: RunSpec): Promise<Figures> {
  const { clients, work, attached } = spec;
  await pg.query("CHECKPOINT");
  const before = await counters(pg, attached);
  const logDir = join(work, `log-${clients}`);
  await Deno.mkdir(logDir);
  const result = await run(join(PG_BIN, "pgbench"), [
    ...connection(pg),
    "-n",
    "-r",
    ...(spec.select ? ["-S"] : []),
    "-c",
    String(clients),
    "-j",
    String(Math.min(clients, 4)),
    "-T",
    String(s.pgSeconds),
    "-l",
    `--log-prefix=${join(logDir, "pgbench_log")}`,
    "postgres",
  ], { timeoutMs: (s.pgSeconds + 120) * 1000 });
  if (result.code !== 0) {
    throw new Error(`pgbench failed: exit ${result.code}\n${result.stderr.slice(-2000)}`);
  }
  // The run's dirty pages, written now, belong to it (its PUTs and bytes are counted, not its time).
  await pg.query("CHECKPOINT");
  const after = await counters(pg, attached);
  const transactions = Number(result.stdout.match(/number of transactions actually processed: (\d+)/)?.[1]);
  const tps = Number(result.stdout.match(/tps = ([\d.]+) \(without initial connection time\)/)?.[1]);
  if (!(transactions > 0) || !(tps > 0)) {
    throw new Error(`pgbench reported no transactions:\n${result.stdout}`);
  }
  const endMs = Number(result.stdout.match(/^\s*([\d.]+)\s+\d+\s+END;/m)?.[1]);
  const latencies = await transactionLatenciesMs(logDir);
  const isLsvd = attached.meter !== undefined;
  const puts = after.puts - before.puts;
  const gets = after.gets - before.gets;
  const pgBytes = after.walBytes - before.walBytes + after.dataBytes - before.dataBytes;
  const putsPerTxn = isLsvd ? puts / transactions : NaN;
  const getsPerTxn = gets / transactions;
  return {
    value: tps,
    tps,
    transactions,
    latP50Ms: percentile(latencies, 0.5),
    latP99Ms: percentile(latencies, 0.99),
    endAvgMs: endMs,
    puts: isLsvd ? puts : NaN,
    gets: isLsvd ? gets : NaN,
    wirePutsPerTxn: (after.wirePuts - before.wirePuts) / transactions,
    putsPerTxn,
    getsPerTxn,
    // Disk-cache reads that were served (lsvd_disk_cache_hits_total; NaN without --cache-dir).
    diskCacheHits: after.diskHits - before.diskHits,
    bucketBytesPerTxn: isLsvd ? (after.uploadedBytes - before.uploadedBytes) / transactions : NaN,
    walBytesPerTxn: (after.walBytes - before.walBytes) / transactions,
    dataBytesPerTxn: (after.dataBytes - before.dataBytes) / transactions,
    pgBytesPerTxn: pgBytes / transactions,
    costUsdPerHour: isLsvd
      ? tps * 3600 *
        (putsPerTxn * PUT_USD_PER_1000 + (Number.isFinite(getsPerTxn) ? getsPerTxn : 0) * GET_USD_PER_1000) /
        1000
      : NaN,
    lsvdCpuPerTxnMs: isLsvd
      ? (after.cpuTicks - before.cpuTicks) * 1000 / CLOCK_TICKS_PER_S / transactions
      : NaN,
    // The local Ceph and the WAN proxy share this machine's cores (a remote store would not).
    storeCpuPerTxnMs: attached.storePids === undefined
      ? NaN
      : (after.storeCpuTicks - before.storeCpuTicks) * 1000 / CLOCK_TICKS_PER_S / transactions,
  };

  async function counters(pg: PostgresServer, a: Attached): Promise<Counters> {
    const [wal, pages] = (await pg.query(
      "SELECT (SELECT wal_bytes FROM pg_stat_wal), " +
        "(SELECT buffers_checkpoint + buffers_clean + buffers_backend FROM pg_stat_bgwriter)",
    )).split("|").map(Number);
    const m = await a.meter?.read();
    return {
      walBytes: wal!,
      dataBytes: pages! * PAGE_BYTES,
      puts: m?.puts ?? NaN,
      gets: m?.gets ?? NaN,
      uploadedBytes: m?.uploadedBytes ?? NaN,
      wirePuts: m?.wirePuts ?? NaN,
      diskHits: m?.diskHits ?? NaN,
      cpuTicks: a.pid === undefined ? 0 : cpuTicksOf([a.pid]),
      storeCpuTicks: cpuTicksOf(a.storePids?.() ?? []),
    };
  }
}

function connection(pg: PostgresServer): string[] {
  return ["-h", "127.0.0.1", "-p", String(pg.port), "-U", "postgres"];
}

async function checked(program: string, args: string[], timeoutMs = 300_000): Promise<void> {
  const r = await run(program, args, { timeoutMs });
  if (r.code !== 0) {
    throw new Error(`${program} ${args.join(" ")} failed: exit ${r.code}\n${r.stderr.slice(-2000)}`);
  }
}

/** pgbench --log lines: client_id transaction_no time_us script_no epoch epoch_us; time is latency. */
async function transactionLatenciesMs(logDir: string): Promise<number[]> {
  const out: number[] = [];
  for await (const e of Deno.readDir(logDir)) {
    const text = await Deno.readTextFile(join(logDir, e.name));
    for (const line of text.split("\n")) {
      const us = Number(line.split(" ")[2]);
      if (Number.isFinite(us) && line !== "") out.push(us / 1000);
    }
  }
  return out.sort((a, b) => a - b);
}

function percentile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}
