/**
 * @module
 * `lsvd serve`: builds store → volume → NBD server (→ kernel device → filesystem), prints
 * `lsvd: Device is now operational.`, and on SIGTERM/SIGINT takes it all down in reverse order,
 * flushing every remaining write to the store before exiting 0.
 */

import { resolve } from "node:path";
import type { ObjectStore } from "../store/store.ts";
import { DirectoryStore } from "../store/directory.ts";
import { S3Store } from "../store/s3.ts";
import { probeStore } from "../store/probe.ts";
import { type Logger, stderrLogger } from "../util/log.ts";
import { Volume } from "../volume/volume.ts";
import { closeWithin, ShutdownSignals } from "./serve_lifecycle.ts";
import { normalizePrefix } from "../format/keys.ts";
import { listLogState } from "../log/log_state.ts";
import { parsePoint, type Point, resolvePoint } from "../log/point.ts";
import { systemClock } from "../util/clock.ts";
import type { FlushPolicy } from "../volume/volume_options.ts";
import { startNbdServer } from "../nbd/server.ts";
import { attachDevice, AttachError, type Attachment } from "../attach/attach.ts";
import {
  helpText,
  type OptionSpec,
  type OptionValues,
  parseInteger,
  parseListen,
  parseOptions,
  parseSize,
  UsageError,
} from "./options.ts";

export const SERVE_OPTIONS: Record<string, OptionSpec> = {
  bucket: { type: "string", help: "S3 bucket holding the volume", env: ["BUCKET_NAME"], placeholder: "NAME" },
  dir: {
    type: "string",
    help: "Local directory store, used when no bucket is given (default: ./lsvd-data)",
    placeholder: "PATH",
  },
  prefix: { type: "string", help: "Key prefix, so one bucket can hold many volumes", placeholder: "P" },
  endpoint: {
    type: "string",
    help: "S3 endpoint URL (R2, MinIO, Ceph, Tigris...)",
    env: ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"],
    placeholder: "URL",
  },
  region: {
    type: "string",
    help: "S3 region; 'auto' for R2",
    env: ["AWS_REGION", "AWS_DEFAULT_REGION"],
    placeholder: "R",
  },
  "path-style": { type: "boolean", help: "Path-style S3 URLs (needed by most non-AWS servers)" },
  connections: { type: "string", help: "Concurrent S3 connections", default: "100", placeholder: "N" },
  size: {
    type: "string",
    help: "Volume size (bytes or K/M/G/T); required the first time, remembered after; larger grows it",
    env: ["FLY_LSVD_DEVICE_SIZE"],
    placeholder: "SIZE",
  },
  socket: {
    type: "string",
    help: "Unix socket to serve NBD on, mode 0600 (default: ./lsvd.sock)",
    placeholder: "PATH",
  },
  listen: {
    type: "string",
    help: "Also (or only, without --socket) serve NBD on TCP HOST:PORT",
    placeholder: "HOST:PORT",
  },
  export: {
    type: "string",
    help: "NBD export name (the empty name selects it too)",
    default: "lsvd",
    placeholder: "NAME",
  },
  "read-only": { type: "boolean", help: "Serve read-only; recovery archives nothing" },
  at: {
    type: "string",
    help: "With --read-only: serve the disk as it was after this object number or at this RFC 3339 time",
    placeholder: "POINT",
  },
  device: {
    type: "string",
    help: "Connect the kernel NBD client to this device, e.g. /dev/nbd0",
    placeholder: "DEV",
  },
  mount: {
    type: "string",
    help:
      "Mount the device here (mkfs.ext4 first if it is empty; grow if it grew); implies --device /dev/nbd0",
    env: ["FLY_LSVD_MOUNT_POINT"],
    placeholder: "PATH",
  },
  fuse: {
    type: "string",
    help: "Without kernel nbd: expose the volume as a file here via nbdfuse",
    placeholder: "PATH",
  },
  "object-size": { type: "string", help: "Data bytes per log object", default: "4M", placeholder: "SIZE" },
  "dirty-limit": {
    type: "string",
    help: "Unflushed bytes held in memory before writers wait",
    default: "256M",
    placeholder: "SIZE",
  },
  "seal-delay-ms": {
    type: "string",
    help: "Seal a partly filled object after this long",
    default: "1000",
    placeholder: "MS",
  },
  uploads: { type: "string", help: "Object uploads in flight at once", default: "32", placeholder: "N" },
  "shutdown-timeout": {
    type: "string",
    help:
      "On SIGTERM, give up flushing after this many seconds and exit 1 naming what was lost (default: keep trying)",
    placeholder: "SECONDS",
  },
  "cache-size": {
    type: "string",
    help: "Read cache of recent object data",
    default: "64M",
    placeholder: "SIZE",
  },
  "verify-reads": {
    type: "string",
    help: "on: check every range read from the store against its object's sector CRCs; off: only to " +
      "measure what the check costs (bench/)",
    default: "on",
    placeholder: "on|off",
  },
  "flush-policy": {
    type: "string",
    help: "group: FLUSHes arriving while commits upload share the next object; each: one object per FLUSH",
    default: "group",
    placeholder: "group|each",
  },
  "puts-per-second": {
    type: "string",
    help: "group policy: at most N objects sealed by FLUSHes per second (default: no limit)",
    placeholder: "N",
  },
};

const DEFAULT_DEVICE = "/dev/nbd0";

const SUMMARY =
  "Recovers the volume from its bucket (or directory) and serves it over NBD until SIGTERM/SIGINT.";

export interface ServeConfig {
  shutdownTimeoutMs: number | undefined;
  store: ObjectStore;
  prefix: string;
  sizeBytes: number | undefined;
  readOnly: boolean;
  /** --at: serve this past point (read-only). */
  at: Point | undefined;
  socketPath: string | undefined;
  listen: { hostname: string; port: number } | undefined;
  exportName: string;
  devicePath: string | undefined;
  mountPath: string | undefined;
  fusePath: string | undefined;
  objectBytesMax: number;
  dirtyBytesMax: number;
  sealDelayMs: number;
  uploadsMax: number;
  cacheBytesMax: number;
  verifyReads: boolean;
  flushPolicy: FlushPolicy;
  commitsPerSecondMax: number | undefined;
}

export function buildServeConfig(values: OptionValues): ServeConfig {
  const str = (k: string) => values[k] as string | undefined;
  if (str("bucket") !== undefined && str("dir") !== undefined) {
    throw new UsageError("Invalid options: give either --bucket or --dir, not both");
  }
  const connections = parseInteger(str("connections")!, "--connections", 1, 4096);
  const store: ObjectStore = str("bucket") !== undefined
    ? new S3Store({
      bucket: str("bucket")!,
      connections,
      forcePathStyle: values["path-style"] === true,
      ...(str("endpoint") === undefined ? {} : { endpoint: str("endpoint")! }),
      ...(str("region") === undefined ? {} : { region: str("region")! }),
    })
    : new DirectoryStore(resolve(str("dir") ?? "lsvd-data"));
  const listen = str("listen") === undefined ? undefined : parseListen(str("listen")!);
  const socketPath = str("socket") ?? (listen === undefined ? "lsvd.sock" : undefined);
  const size = str("size");
  const sizeBytes = size === undefined ? undefined : parseSize(size, "--size");
  if (sizeBytes !== undefined && sizeBytes % 4096 !== 0) {
    throw new UsageError(`Invalid --size: ${sizeBytes} bytes is not a multiple of 4096`);
  }
  if (str("mount") !== undefined && str("fuse") !== undefined) {
    throw new UsageError(
      "Invalid options: --mount works with the kernel device; with --fuse, use losetup and mount",
    );
  }
  if (str("device") !== undefined && str("fuse") !== undefined) {
    throw new UsageError("Invalid options: give either --device or --fuse, not both");
  }
  const shutdownTimeout = str("shutdown-timeout");
  return {
    shutdownTimeoutMs: shutdownTimeout === undefined
      ? undefined
      : parseInteger(shutdownTimeout, "--shutdown-timeout", 1, 7 * 86400) * 1000,
    store,
    prefix: str("prefix") ?? "",
    sizeBytes,
    readOnly: values["read-only"] === true,
    at: servePoint(values),
    socketPath: socketPath === undefined ? undefined : resolve(socketPath),
    listen,
    exportName: str("export")!,
    // The seed mounted /dev/nbd0 whenever a mount point was set (FLY_LSVD_MOUNT_POINT alone).
    devicePath: str("device") ?? (str("mount") === undefined ? undefined : DEFAULT_DEVICE),
    mountPath: str("mount"),
    fusePath: str("fuse"),
    objectBytesMax: parseSize(str("object-size")!, "--object-size"),
    dirtyBytesMax: parseSize(str("dirty-limit")!, "--dirty-limit"),
    sealDelayMs: parseInteger(str("seal-delay-ms")!, "--seal-delay-ms", 1, 3_600_000),
    uploadsMax: parseInteger(str("uploads")!, "--uploads", 1, 1024),
    cacheBytesMax: str("cache-size") === "0" ? 0 : parseSize(str("cache-size")!, "--cache-size"),
    verifyReads: parseOnOff(str("verify-reads")!, "--verify-reads"),
    flushPolicy: parseFlushPolicy(str("flush-policy")!),
    commitsPerSecondMax: str("puts-per-second") === undefined
      ? undefined
      : parseInteger(str("puts-per-second")!, "--puts-per-second", 1, 1_000_000),
  };
}

function parseOnOff(raw: string, name: string): boolean {
  if (raw === "on" || raw === "off") return raw === "on";
  throw new UsageError(`Invalid ${name}: "${raw}" must be on or off`);
}

function parseFlushPolicy(raw: string): FlushPolicy {
  if (raw === "group" || raw === "each") return raw;
  throw new UsageError(`Invalid --flush-policy: "${raw}" must be group or each`);
}

export async function serveCommand(args: string[], log: Logger = stderrLogger): Promise<number> {
  if (args.includes("--help")) {
    console.log(helpText("serve", SUMMARY, SERVE_OPTIONS));
    return 0;
  }
  const { values, positionals } = parseOptions(args, SERVE_OPTIONS);
  if (positionals.length > 0) throw new UsageError(`Unexpected argument "${positionals[0]}"`);
  const config = buildServeConfig(values);
  const signals = new ShutdownSignals(log);
  try {
    return await serveUntilSignal(config, signals, log);
  } finally {
    signals.dispose();
  }
}

async function serveUntilSignal(config: ServeConfig, signals: ShutdownSignals, log: Logger): Promise<number> {
  const opened = await signals.race((async () => {
    await config.store.check?.();
    await probeStore(config.store, config.prefix, { readOnly: config.readOnly });
    const atSequence = config.at === undefined ? undefined : await resolveServePoint(config, config.at, log);
    signals.phase = "recovering";
    return await Volume.open({
      stopRequested: () => signals.requested,
      store: config.store,
      prefix: config.prefix,
      readOnly: config.readOnly,
      log,
      objectBytesMax: config.objectBytesMax,
      dirtyBytesMax: config.dirtyBytesMax,
      sealDelayMs: config.sealDelayMs,
      uploadsMax: config.uploadsMax,
      cacheBytesMax: config.cacheBytesMax,
      verifyReads: config.verifyReads,
      flushPolicy: config.flushPolicy,
      ...(config.commitsPerSecondMax === undefined
        ? {}
        : { commitsPerSecondMax: config.commitsPerSecondMax }),
      ...(config.sizeBytes === undefined ? {} : { sizeBytes: config.sizeBytes }),
      ...(atSequence === undefined ? {} : { atSequence }),
    });
  })());
  if (opened === undefined) {
    log(
      `Stopped during ${
        signals.phase === "recovering" ? "recovery" : "start-up"
      }; the device was never served.`,
    );
    return 0;
  }
  const volume = opened;
  if (signals.requested) {
    log("Stopping before the device was served.");
    await volume.close();
    await config.store.close();
    log("Device has shut down.");
    return 0;
  }
  let server;
  try {
    server = await startNbdServer({
      device: volume,
      exportName: config.exportName,
      log,
      ...(config.socketPath === undefined ? {} : { socketPath: config.socketPath }),
      ...(config.listen === undefined ? {} : { listen: config.listen }),
    });
  } catch (e) {
    await volume.close();
    throw new AttachError((e as Error).message, { cause: e });
  }
  log(`Serving NBD at ${server.uris.join(" and ")}.`);
  let attachment: Attachment | undefined;
  try {
    attachment = await attachDevice({ ...config, log });
    signals.phase = "serving";
    if (!signals.requested) log("Device is now operational.");
    await signals.received;
  } finally {
    signals.phase = "stopping";
    await attachment?.detach();
    await server.stop();
    log("Flushing remaining writes to object storage.");
  }
  if (!await closeWithin(volume.close(), config.shutdownTimeoutMs)) {
    const left = volume.unflushed;
    log(
      `Shutdown deadline of ${
        config.shutdownTimeoutMs! / 1000
      } s passed: ${left.bytes} bytes in ${left.objects} objects from object ${left.firstSequence} on were not stored and are lost.`,
    );
    return 1;
  }
  await config.store.close();
  log("Device has shut down.");
  return 0;
}

function servePoint(values: OptionValues): Point | undefined {
  if (values.at === undefined) return undefined;
  if (values["read-only"] !== true) {
    throw new UsageError("Invalid options: --at serves a past state and needs --read-only");
  }
  return parsePoint(values.at as string, "--at");
}

/** The object a `--at` point names, said in one line (serving a past state never changes the bucket). */
async function resolveServePoint(config: ServeConfig, point: Point, log: Logger): Promise<number> {
  const retry = { clock: systemClock, attemptsMax: 6 };
  const state = await listLogState(config.store, normalizePrefix(config.prefix), retry);
  const resolved = await resolvePoint(config.store, state, point, retry);
  log(`Serving the volume as of ${resolved.description}, read-only.`);
  return resolved.sequence;
}
