/**
 * @module
 * The block-device targets fio drives: `nbdkit memory` (the NBD transport limit), lsvd on the
 * directory store and on RGW, and the two peers from Debian (nbdkit's S3 plugin, s3backer over
 * FUSE). Every start gets fresh state (a new bucket or directory), and `restart` stops the target
 * — flushing — and starts it again on the same data, optionally through the WAN delay proxy, so
 * a read that follows is cold.
 */

import { join } from "node:path";
import type { FioDevice } from "./fio.ts";
import { Daemon, run, startDaemon, waitForPath } from "./process.ts";

/** An S3 backend (RGW) as the benchmark sees it: a direct and a delayed endpoint. */
export interface S3Backend {
  endpoint: string;
  wanEndpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
  newBucket(): Promise<string>;
  /** Removes a bucket made by newBucket and everything in it. */
  dropBucket(name: string): Promise<void>;
  /** Requests sent through the WAN proxy so far, by HTTP method (counted on the wire). */
  wanRequests(): Promise<Record<string, number>>;
  /** The local gateway's processes and the proxy's, whose CPU a run can read (they share the cores). */
  pids?(): number[];
}

export interface TargetContext {
  repoRoot: string;
  tmpDir: string;
  volumeBytes: number;
  /** Extra `lsvd serve` options (e.g. a smaller --dirty-limit for small runs). */
  lsvdArgs: string[];
  s3: S3Backend | undefined;
  /** Distinct name for each started instance. */
  nextId(): number;
}

export interface Instance {
  device: FioDevice;
  /** The daemon process, for /proc/PID/status. */
  pid(): number;
  /** The same data, served again from a fresh start; wan routes the store through the delay proxy. */
  restart(options: { wan: boolean }): Promise<void>;
  stop(): Promise<void>;
}

export interface DeviceTarget {
  name: string;
  needsS3: boolean;
  start(ctx: TargetContext): Promise<Instance>;
}

export const LSVD_CONNECTIONS = 100;
export const LSVD_UPLOADS = 32;
const READY_TIMEOUT_MS = 120_000;

function s3Env(s3: S3Backend): Record<string, string> {
  return {
    AWS_ACCESS_KEY_ID: s3.accessKeyId,
    AWS_SECRET_ACCESS_KEY: s3.secretAccessKey,
    AWS_REGION: "us-east-1",
  };
}

function requireS3(ctx: TargetContext): S3Backend {
  if (ctx.s3 === undefined) throw new Error("Cannot start an S3 target: no S3 backend was started");
  return ctx.s3;
}

async function stopChecked(daemon: Daemon): Promise<void> {
  const code = await daemon.stop();
  if (code !== 0) throw new Error(`Cannot stop ${daemon.label} cleanly: exit code ${code}\n${daemon.output}`);
}

/** A daemon that serves an NBD unix socket, restarted by a start function. */
function socketInstance(
  socketPath: string,
  exportName: string,
  start: (wan: boolean) => Promise<Daemon>,
  first: Daemon,
  cleanup: () => Promise<void> = () => Promise.resolve(),
): Instance {
  let daemon = first;
  return {
    device: { kind: "nbd", socketPath, exportName },
    pid: () => daemon.pid,
    async restart({ wan }) {
      await stopChecked(daemon);
      await Deno.remove(socketPath).catch(() => {});
      daemon = await start(wan);
    },
    async stop() {
      try {
        await stopChecked(daemon);
      } finally {
        await Deno.remove(socketPath).catch(() => {});
        await cleanup();
      }
    },
  };
}

export const nbdkitMemory: DeviceTarget = {
  name: "nbdkit-memory",
  needsS3: false,
  async start(ctx) {
    const socketPath = join(ctx.tmpDir, `nbdkit-memory-${ctx.nextId()}.sock`);
    const daemon = await startNbdkit(socketPath, ["memory", `size=${ctx.volumeBytes}`], {}, "nbdkit memory");
    // Memory is the transport limit: a "restart" keeps the process (its data would be lost).
    return {
      ...socketInstance(socketPath, "", () => Promise.resolve(daemon), daemon),
      restart: () => Promise.resolve(),
    };
  },
};

async function startNbdkit(
  socketPath: string,
  pluginArgs: string[],
  env: Record<string, string>,
  label: string,
): Promise<Daemon> {
  const daemon = await startDaemon("nbdkit", {
    args: ["--foreground", "--exit-with-parent", "--unix", socketPath, ...pluginArgs],
    env,
    label,
  });
  try {
    await waitForPath(socketPath, READY_TIMEOUT_MS);
  } catch (e) {
    await daemon.stop(2_000, "SIGKILL");
    throw new Error(`Cannot start ${label}: ${(e as Error).message}\n${daemon.output}`);
  }
  return daemon;
}

export const nbdkitS3: DeviceTarget = {
  name: "nbdkit-s3",
  needsS3: true,
  async start(ctx) {
    const s3 = requireS3(ctx);
    const bucket = await s3.newBucket();
    const socketPath = join(ctx.tmpDir, `nbdkit-s3-${ctx.nextId()}.sock`);
    const start = (wan: boolean) =>
      // The plugin wants whole-object requests; the blocksize filter does the read-modify-write.
      startNbdkit(
        socketPath,
        [
          "--filter=blocksize",
          "S3",
          `endpoint-url=${wan ? s3.wanEndpoint : s3.endpoint}`,
          `bucket=${bucket}`,
          "key=disk",
          `size=${ctx.volumeBytes}`,
          "object-size=64k",
        ],
        s3Env(s3),
        "nbdkit S3 plugin",
      );
    return socketInstance(socketPath, "", start, await start(false), () => s3.dropBucket(bucket));
  },
};

/** extraArgs may name a fresh local directory of the instance (`--cache-dir`), removed at cleanup. */
function lsvdTarget(
  name: string,
  store: "dir" | "s3",
  more: string[] | ((localDir: string) => string[]) = [],
): DeviceTarget {
  return {
    name,
    needsS3: store === "s3",
    async start(ctx) {
      const id = ctx.nextId();
      const socketPath = join(ctx.tmpDir, `${name}-${id}.sock`);
      const dir = join(ctx.tmpDir, `${name}-${id}-data`);
      const localDir = join(ctx.tmpDir, `${name}-${id}-local`);
      const extraArgs = typeof more === "function" ? more(localDir) : more;
      const bucket = store === "dir" ? undefined : await requireS3(ctx).newBucket();
      const storeArgs = bucket === undefined ? ["--dir", dir] : ["--bucket", bucket, "--path-style"];
      const cleanup = async () => {
        await Deno.remove(localDir, { recursive: true }).catch(() => {});
        if (bucket === undefined) await Deno.remove(dir, { recursive: true }).catch(() => {});
        else await requireS3(ctx).dropBucket(bucket);
      };
      const start = (wan: boolean) => startLsvd(ctx, { socketPath, storeArgs, wan, label: name, extraArgs });
      return socketInstance(socketPath, "lsvd", start, await start(false), cleanup);
    },
  };
}

export interface LsvdStart {
  socketPath: string;
  storeArgs: string[];
  wan: boolean;
  label: string;
  extraArgs?: string[];
}

/** `deno run -A main.ts serve ...`, ready when it prints `lsvd: Device is now operational.` */
export function startLsvd(ctx: TargetContext, o: LsvdStart): Promise<Daemon> {
  const isS3 = o.storeArgs.includes("--bucket");
  const endpointArgs = isS3
    ? ["--endpoint", o.wan ? requireS3(ctx).wanEndpoint : requireS3(ctx).endpoint]
    : [];
  return startDaemon(Deno.execPath(), {
    args: [
      "run",
      "-A",
      join(ctx.repoRoot, "main.ts"),
      "serve",
      ...o.storeArgs,
      ...endpointArgs,
      "--socket",
      o.socketPath,
      "--size",
      String(ctx.volumeBytes),
      "--connections",
      String(LSVD_CONNECTIONS),
      "--uploads",
      String(LSVD_UPLOADS),
      ...ctx.lsvdArgs,
      ...(o.extraArgs ?? []),
    ],
    env: isS3 ? s3Env(requireS3(ctx)) : {},
    cwd: ctx.repoRoot,
    readyPattern: /lsvd: Device is now operational\./,
    readyTimeoutMs: READY_TIMEOUT_MS,
    label: o.label,
  });
}

export const lsvdDir = lsvdTarget("lsvd-dir", "dir");
export const lsvdRgw = lsvdTarget("lsvd-rgw", "s3");
/** lsvd with read verification off: what checking every read against sector CRCs costs (issue 11). */
export const lsvdDirNoVerify = lsvdTarget("lsvd-dir-noverify", "dir", ["--verify-reads", "off"]);
export const lsvdRgwNoVerify = lsvdTarget("lsvd-rgw-noverify", "s3", ["--verify-reads", "off"]);
/** lsvd on RGW with a disk cache (issue 23): reads beyond the memory cache from local disk. */
export const lsvdRgwDiskCache = lsvdTarget("lsvd-rgw-diskcache", "s3", (dir) => ["--cache-dir", dir]);
/** The same on the directory store: its reads beyond the memory cache must not get slower (issue 23). */
export const lsvdDirDiskCache = lsvdTarget("lsvd-dir-diskcache", "dir", (dir) => ["--cache-dir", dir]);

export const s3backer: DeviceTarget = {
  name: "s3backer",
  needsS3: true,
  async start(ctx) {
    const s3 = requireS3(ctx);
    const bucket = await s3.newBucket();
    const mount = join(ctx.tmpDir, `s3backer-${ctx.nextId()}`);
    await Deno.mkdir(mount, { recursive: true });
    const start = (wan: boolean) => startS3backer(s3, bucket, mount, ctx.volumeBytes, wan);
    let daemon = await start(false);
    return {
      device: { kind: "file", path: join(mount, "file") },
      pid: () => daemon.pid,
      async restart({ wan }) {
        await stopS3backer(daemon, mount);
        daemon = await start(wan);
      },
      async stop() {
        try {
          await stopS3backer(daemon, mount);
        } finally {
          await s3.dropBucket(bucket);
        }
      },
    };
  },
};

async function startS3backer(
  s3: S3Backend,
  bucket: string,
  mount: string,
  sizeBytes: number,
  wan: boolean,
): Promise<Daemon> {
  const daemon = await startDaemon("s3backer", {
    args: [
      "-f",
      `--baseURL=${wan ? s3.wanEndpoint : s3.endpoint}/`,
      `--accessId=${s3.accessKeyId}`,
      `--accessKey=${s3.secretAccessKey}`,
      `--size=${sizeBytes}`,
      "--blockSize=64k",
      "--listBlocks",
      bucket,
      mount,
    ],
    label: "s3backer",
  });
  try {
    await waitForPath(join(mount, "file"), READY_TIMEOUT_MS);
  } catch (e) {
    await daemon.stop(2_000, "SIGKILL");
    throw new Error(`Cannot start s3backer: ${(e as Error).message}\n${daemon.output}`);
  }
  return daemon;
}

/** Unmounting makes s3backer write back its dirty blocks and exit. */
async function stopS3backer(daemon: Daemon, mount: string): Promise<void> {
  const result = await run("fusermount3", ["-u", mount], { timeoutMs: 300_000 });
  if (result.code !== 0) {
    await daemon.stop(5_000, "SIGKILL");
    throw new Error(`Cannot unmount s3backer at ${mount}: ${result.stderr.trim()}`);
  }
  const timer = setTimeout(() => void daemon.stop(5_000), 300_000);
  const status = await daemon.status();
  clearTimeout(timer);
  if (status.code !== 0) {
    throw new Error(`Cannot stop s3backer cleanly: exit code ${status.code}\n${daemon.output}`);
  }
}

export const DEVICE_TARGETS: readonly DeviceTarget[] = [
  nbdkitMemory,
  lsvdDir,
  lsvdRgw,
  nbdkitS3,
  s3backer,
  lsvdDirNoVerify,
  lsvdRgwNoVerify,
  lsvdRgwDiskCache,
  lsvdDirDiskCache,
];
