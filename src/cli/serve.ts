/**
 * @module
 * `lsvd serve`: builds store -> volume -> NBD server (-> kernel device -> filesystem), prints
 * `lsvd: Device is now operational.`, and on SIGTERM/SIGINT/SIGHUP takes it all down in reverse
 * order, flushing every remaining write to the store before exiting 0 -- once nothing else uses the
 * volume (a loop device, a mount, an open file: serve_lifecycle.ts waits, or a second signal
 * forces the stop). Everything that can fail locally (options, the NBD and metrics addresses, the
 * device) is checked before the store is touched, so a start that cannot succeed leaves the bucket
 * as it was.
 */

import { systemClock } from "../util/clock.ts";
import { messageOf } from "../util/errors.ts";
import { holdPin } from "../log/snapshots.ts";
import { resolve } from "node:path";
import type { ObjectStore } from "../store/store.ts";
import { probeStore } from "../store/probe.ts";
import { MeteredStore } from "../store/metered.ts";
import { requireConditionalWrites } from "../store/conditional_probe.ts";
import { LEASE_DURATION_MS_DEFAULT, lostReason, readLease } from "../log/lease.ts";
import { isLsvdError, LsvdError } from "../util/errors.ts";
import { type Logger, stderrLogger } from "../util/log.ts";
import { refuseBeforeWriting, Volume, type VolumeOptions } from "../volume/volume.ts";
import { DirectoryJournalFiles } from "../journal/journal_files.ts";
import { closeWithin, ShutdownSignals, waitForRelease } from "./serve_lifecycle.ts";
import { listLogState } from "../log/log_state.ts";
import { parsePoint, type Point, resolvePoint } from "../log/point.ts";
import { bindNbdListeners, ListenError, type NbdListeners, startNbdServer } from "../nbd/server.ts";
import { attachDevice, type Attachment, checkAttach } from "../attach/attach.ts";
import { describeHolders, type Holder } from "../attach/holders.ts";
import {
  DEFAULT_DEAD_CONNECTION_TIMEOUT_SECONDS,
  DEFAULT_REQUEST_TIMEOUT_SECONDS,
} from "../attach/kernel_device.ts";
import { askHolderToHandOver, HandOverRequests } from "./hand_over.ts";
import { MetricsRegistry } from "../metrics/registry.ts";
import { type MetricsServer, serveMetrics } from "../metrics/http.ts";
import {
  registerDaemonMetrics,
  registerDiskCacheMetrics,
  registerFollowMetrics,
} from "../metrics/daemon_metrics.ts";
import { Follower } from "../volume/follower.ts";
import { DiskCache, diskCacheMemoryBytes } from "../cache/disk_cache.ts";
import { exposedGc, GarbagePacer } from "../util/gc_pacer.ts";
import {
  availableMemoryBytes,
  nbdInputBufferBytes,
  type TuningDefaults,
  tuningDefaults,
} from "./memory_defaults.ts";
import {
  choiceOption,
  durationOption,
  flagOption,
  helpText,
  integerOption,
  type ListenAddress,
  listenOption,
  type Options,
  parseOptions,
  sizeOption,
  textOption,
  UsageError,
  wantsHelp,
} from "./options.ts";
import {
  DEFAULT_CACHE_BYTES,
  DEFAULT_FLUSH_POLICY,
  DEFAULT_RETENTION_MS,
  DEFAULT_SEAL_DELAY_MS,
  DEFAULT_VERIFY_READS,
} from "../volume/volume_options.ts";
import { DEFAULT_EXPORT_NAME } from "../nbd/session.ts";
import { OBJECT_DATA_BYTES_MAX, VOLUME_BYTES_MAX } from "../util/constants.ts";
import { buildStore, CREDENTIALS_NOTE, STORE_OPTIONS, type StoreSelection } from "./store_options.ts";
import { toolRetry } from "./tool_support.ts";
import { retrying } from "../store/retry.ts";
import { pinMallocMmapThreshold } from "../util/malloc_tuning.ts";
import { formatSize } from "../util/sizes.ts";
import type { TlsPolicy } from "../nbd/tls.ts";
import { TLS_OPTIONS, tlsPolicy } from "./tls_options.ts";
import { ENCRYPTION_OPTIONS, loadEncryptionKey } from "./encryption_key.ts";
import type { VolumeSecret } from "../crypto/sector_cipher.ts";

/** Every serve option; the tuning defaults are computed for this machine (see memory_defaults.ts). */
export function serveOptions(tuning: TuningDefaults) {
  return {
    ...STORE_OPTIONS,
    ...VOLUME_OPTIONS,
    ...LISTEN_OPTIONS,
    ...TLS_OPTIONS,
    ...ENCRYPTION_OPTIONS,
    ...METRICS_OPTIONS,
    ...ATTACH_OPTIONS,
    ...tuningOptions(tuning),
    ...CACHE_AND_POLICY_OPTIONS,
    ...JOURNAL_OPTIONS,
    ...COMMIT_RATE_OPTIONS,
  };
}

/** The volume: size, lease, fencing, read-only points, following, retention (serveOptions, in order). */
const VOLUME_OPTIONS = {
  size: sizeOption({
    group: "volume",
    help: "Volume size (bytes or K/M/G/T); required the first time, remembered after; larger grows it",
    env: ["FLY_LSVD_DEVICE_SIZE"],
    placeholder: "SIZE",
    sectorsUpTo: VOLUME_BYTES_MAX,
  }),
  "allow-shrink": flagOption({
    group: "volume",
    help: "Allow a --size smaller than the recorded one (never below written data)",
  }),
  takeover: flagOption({
    group: "volume",
    help:
      "Take the volume from the daemon holding its lease, fencing that daemon (it exits with an error); " +
      "with --device, a holder on this machine is first asked to hand over (an upgrade: the mount stays)",
  }),
  standby: flagOption({
    group: "volume",
    help:
      "Wait while another daemon holds the volume, following its log; take it over once that daemon's lease lapses",
  }),
  "lease-duration-ms": integerOption({
    group: "volume",
    help: "How long one lease renewal lasts (renewed every third of it); a standby waits this long",
    default: LEASE_DURATION_MS_DEFAULT,
    placeholder: "MS",
    min: 300,
    max: 3_600_000,
  }),
  "no-fencing": flagOption({
    group: "volume",
    help: "Write without the lease and fence (for stores without conditional writes): a second daemon " +
      "can then fork the log and lose acknowledged writes",
  }),
  "read-only": flagOption({
    group: "volume",
    help: "Serve read-only; the volume must exist; recovery archives nothing",
  }),
  follow: flagOption({
    group: "volume",
    help: "With --read-only: follow the log another daemon writes, serving its newest durable state " +
      "(for raw-block readers, exports, backups: a mounted filesystem cannot follow a changing disk)",
  }),
  "follow-interval": durationOption({
    group: "volume",
    help: "With --follow: how often to look for new objects (one LIST each time)",
    default: 1000,
    minMs: 10,
    placeholder: "DURATION",
  }),
  at: textOption({
    group: "volume",
    help: "With --read-only: serve the disk as it was after this object number or at this RFC 3339 time",
    placeholder: "POINT",
  }),
  snapshot: textOption({
    group: "volume",
    help: "With --read-only: serve the disk as snapshot NAME kept it ('lsvd snapshot list')",
    placeholder: "NAME",
  }),
  retention: durationOption({
    group: "volume",
    help: "Keep every point of the last DURATION exact for --at, export and rollback; older data is " +
      "garbage-collected (e.g. 24h, 30m; docs/design/gc-and-retention.md)",
    default: DEFAULT_RETENTION_MS,
    placeholder: "DURATION",
  }),
  "gc-interval": durationOption({
    group: "volume",
    help: "Run a garbage-collection pass this often; off disables collection",
    default: 60_000,
    placeholder: "DURATION|off",
    off: true,
  }),
};

/** The socket served when neither --socket nor --listen is given (relative to the working directory). */
const DEFAULT_SOCKET = "lsvd.sock";

/** Where NBD is served (serveOptions, in order). */
const LISTEN_OPTIONS = {
  socket: textOption({
    group: "serving",
    help: `Unix socket to serve NBD on, mode 0600 (default: ./${DEFAULT_SOCKET})`,
    placeholder: "PATH",
  }),
  listen: listenOption({
    group: "serving",
    help: "Also (or only, without --socket) serve NBD on TCP HOST:PORT",
    placeholder: "HOST:PORT",
  }),
  export: textOption({
    group: "serving",
    help: "NBD export name (the empty name selects it too)",
    default: DEFAULT_EXPORT_NAME,
    placeholder: "NAME",
  }),
};

const METRICS_OPTIONS = {
  metrics: listenOption({
    group: "serving",
    help: "Serve Prometheus metrics at http://HOST:PORT/metrics (read by 'lsvd status')",
    placeholder: "HOST:PORT",
  }),
};

/** Sizes, limits and policies, with defaults from the memory tuning (serveOptions, in order). */
function tuningOptions(tuning: TuningDefaults) {
  return {
    "object-size": sizeOption({
      group: "tuning",
      help: "Data bytes per log object",
      default: tuning.objectBytes,
      placeholder: "SIZE",
      sectorsUpTo: OBJECT_DATA_BYTES_MAX,
    }),
    "dirty-limit": sizeOption({
      group: "tuning",
      help: "Unflushed bytes held in memory before writers wait",
      default: tuning.dirtyBytes,
      placeholder: "SIZE",
    }),
    "seal-delay-ms": integerOption({
      group: "tuning",
      help: "Seal a partly filled object after this long",
      default: DEFAULT_SEAL_DELAY_MS,
      placeholder: "MS",
      min: 1,
      max: 3_600_000,
    }),
    uploads: integerOption({
      group: "tuning",
      help: "Object uploads in flight at once",
      default: tuning.uploads,
      placeholder: "N",
      min: 1,
      max: 1024,
    }),
    "cache-size": sizeOption({
      group: "tuning",
      help: "Read cache of recent object data (0: none)",
      default: tuning.cacheBytes,
      placeholder: "SIZE",
      zero: true,
    }),
  };
}

/** Cache directory, shutdown deadline, read checks and the FLUSH policy (after tuningOptions, in order). */
const CACHE_AND_POLICY_OPTIONS = {
  "cache-dir": textOption({
    group: "tuning",
    help: "Keep data read from the store in DIR too (up to --cache-dir-size), behind the read cache; " +
      "it is served from there on later reads and after a restart (docs/design/disk-cache.md)",
    placeholder: "DIR",
  }),
  "cache-dir-size": sizeOption({
    group: "tuning",
    help: "Most bytes --cache-dir holds on disk; its index takes 7 MiB of memory per GiB",
    default: 2 ** 30,
    placeholder: "SIZE",
    minBytes: 2 ** 20,
  }),
  "shutdown-timeout": integerOption({
    group: "serving",
    help: "A stop ends within this many seconds: at most half waiting for the volume to be released, then " +
      "flushing; exit 1 naming what was lost (default: keep trying)",
    placeholder: "SECONDS",
    min: 1,
    max: 7 * 86400,
  }),
  "verify-reads": choiceOption(["on", "off"], {
    group: "tuning",
    help: "on: check every range read from the store against its object's sector CRCs; off: only to " +
      "measure what the check costs (bench/)",
    default: DEFAULT_VERIFY_READS ? "on" : "off",
    placeholder: "on|off",
  }),
  "flush-policy": choiceOption(["group", "each"], {
    group: "tuning",
    help: "group: FLUSHes arriving while commits upload share the next object; each: one object per FLUSH",
    default: DEFAULT_FLUSH_POLICY,
    placeholder: "group|each",
  }),
};

const COMMIT_RATE_OPTIONS = {
  "puts-per-second": integerOption({
    group: "tuning",
    help: "group policy: at most N objects sealed by FLUSHes per second (default: no limit)",
    placeholder: "N",
    min: 1,
    max: 1_000_000,
  }),
};

/** Kernel device, filesystem and nbdfuse options (a part of serveOptions, in its order). */
const ATTACH_OPTIONS = {
  device: textOption({
    group: "kernel",
    help: "Connect the kernel NBD client to this device, e.g. /dev/nbd0",
    placeholder: "DEV",
  }),
  mount: textOption({
    group: "kernel",
    help: "Mount the device here (mkfs.ext4 first if empty; grow if it grew); implies --device /dev/nbd0",
    env: ["FLY_LSVD_MOUNT_POINT"],
    placeholder: "PATH",
  }),
  "dead-timeout": integerOption({
    group: "kernel",
    help: "While no lsvd serves the device (a crash, a restart, an upgrade) the kernel holds its I/O " +
      "this long for the next lsvd to resume it, then fails it with EIO",
    default: DEFAULT_DEAD_CONNECTION_TIMEOUT_SECONDS,
    placeholder: "SECONDS",
    min: 1,
    max: 86400,
  }),
  "io-timeout": integerOption({
    group: "kernel",
    help: "The kernel re-sends a request unanswered this long on another connection (requests in " +
      "flight when lsvd died wait this long for the next one)",
    default: DEFAULT_REQUEST_TIMEOUT_SECONDS,
    placeholder: "SECONDS",
    min: 1,
    max: 86400,
  }),
  fuse: textOption({
    group: "kernel",
    help: "Without kernel nbd: expose the volume as a file through nbdfuse, at DIR/nbd or DIR/FILE " +
      "(then losetup and mount it: README)",
    placeholder: "DIR[/FILE]",
  }),
};

/** The write-back journal's options (a part of serveOptions, in its order). */
const JOURNAL_OPTIONS = {
  journal: textOption({
    group: "durability",
    help: "Acknowledge FLUSH once writes are fdatasync'd to a local journal in DIR, uploading in the " +
      "background: a FLUSH then survives an lsvd or machine crash only while DIR's disk survives " +
      "(docs/design/write-back-journal.md)",
    placeholder: "DIR",
  }),
  "journal-delay": durationOption({
    group: "durability",
    help: "With --journal: seal a partly filled object this long after its first write (the window a " +
      "lost disk can lose, plus upload time; at most 3600 / delay PUTs an hour from the timer)",
    default: 2000,
    minMs: 1,
    maxMs: 3_600_000,
    placeholder: "DURATION",
  }),
  "journal-size": sizeOption({
    group: "durability",
    help: "With --journal: journal bytes on disk before writes wait for uploads",
    default: 2 ** 30,
    placeholder: "SIZE",
    minBytes: 4 * 2 ** 20,
  }),
  "journal-discard": flagOption({
    commandLineOnly: true,
    group: "durability",
    help: "With --journal: drop whatever the journal holds instead of replaying it (its writes are lost)",
  }),
  "abandon-journal": flagOption({
    commandLineOnly: true,
    group: "durability",
    help: "Start although the volume's lease names a write-back journal this start does not use (another " +
      "machine's, or a --journal left out or changed): the acknowledged writes only that journal holds are lost",
  }),
};

const DEFAULT_DEVICE = "/dev/nbd0";
/** How long a --takeover waits for a live holder on this host to store its writes and hand over. */
const HAND_OVER_WAIT_MS = 120_000;
/** At most one collection per 8 MiB of buffers, also with a small or no read cache (gc_pacer.ts). */
const GC_SLACK_BYTES_MIN = 8 * 1024 * 1024;

const SUMMARY =
  "Recovers the volume from its bucket (or directory) and serves it over NBD until SIGTERM, SIGINT or\n" +
  "SIGHUP (a closed terminal): then it flushes every write and exits 0.";

/** How a stop goes, for --help. */
const STOPPING_NOTE =
  "Stopping: SIGTERM, SIGINT (Ctrl-C) and SIGHUP (a closed terminal or SSH session) all stop\n" +
  "lsvd cleanly: unmount, disconnect, flush every write, release the lease, exit 0. While something\n" +
  "still uses the volume (a loop device on the --fuse file or its mount, a busy mount of --device,\n" +
  "a process with it open) lsvd keeps serving, says what holds it in one line, and stops by itself\n" +
  "once it is released; a second signal stops anyway after syncing those filesystems, exit 1.";

const EXAMPLES = [
  "lsvd serve --size 10G                                   # ./lsvd-data, ./lsvd.sock",
  "BUCKET_NAME=my-bucket AWS_ENDPOINT_URL_S3=https://fly.storage.tigris.dev AWS_REGION=auto \\",
  "  lsvd serve --prefix vol1 --size 100G --socket /run/lsvd.sock",
  "lsvd serve --bucket my-bucket --size 100G --mount /data  # attach /dev/nbd0, mkfs, mount",
  "lsvd serve --dir ./lsvd-data --size 10G --fuse /mnt/lsvd # no nbd module: a file via nbdfuse",
  "lsvd serve --bucket my-bucket --read-only --listen 127.0.0.1:10809",
  "lsvd serve --size 10G --listen 0.0.0.0:10809 --tls-cert server-cert.pem --tls-key server-key.pem",
  "  # then: nbdinfo 'nbds://HOST:10809/lsvd?tls-certificates=DIR' (DIR holds ca-cert.pem; README: TLS)",
];

/**
 * What serve decides that Volume.open takes as it is: named, typed and documented in VolumeOptions.
 * This list is the one place: ServeConfig must hold each (typed from it) and servedVolumeOptions()
 * hands each on (a pick of it). The prefix is normalised.
 */
const SHARED_WITH_VOLUME = [
  "prefix",
  "fencing",
  "leaseMode",
  "leaseDurationMs",
  "readOnly",
  "allowShrink",
  "abandonJournal",
  "sizeSource",
] as const satisfies readonly (keyof VolumeOptions)[];

type SharedWithVolume = Required<Pick<VolumeOptions, (typeof SHARED_WITH_VOLUME)[number]>>;

/** The fields of SHARED_WITH_VOLUME, taken from the configuration. */
function sharedWithVolume(config: SharedWithVolume): SharedWithVolume {
  return Object.fromEntries(SHARED_WITH_VOLUME.map((key) => [key, config[key]])) as SharedWithVolume;
}

export interface ServeConfig extends SharedWithVolume {
  shutdownTimeoutMs: number | undefined;
  store: ObjectStore;
  /** A bucket (its check only reads), not a local directory (whose check creates it). */
  storeRemote: boolean;
  /** Which store and prefix, for the start-up line. */
  storeLine: string;
  sizeBytes: number | undefined;
  /** --follow: poll the log this often and apply what the writer stored (read-only). */
  follow: { intervalMs: number } | undefined;
  /** --at or --snapshot: serve this past point (read-only). */
  at: Point | undefined;
  socketPath: string | undefined;
  listen: ListenAddress | undefined;
  metrics: ListenAddress | undefined;
  exportName: string;
  /** TLS on the TCP listener (the unix socket offers it when not off). */
  tls: TlsPolicy;
  devicePath: string | undefined;
  mountPath: string | undefined;
  fusePath: string | undefined;
  /** Names the volume on /dev/nbdN, so a restarted daemon resumes the device it left. */
  backend: string;
  deadTimeoutSeconds: number;
  ioTimeoutSeconds: number;
  /** The tuning the options give, passed to Volume.open as it is. */
  engine: EngineTuning;
  /** `--cache-dir`: a persistent disk cache (src/cache/disk_cache.ts). */
  cacheDir: { dir: string; sizeBytes: number } | undefined;
  /** sizeGiven: --journal-size was set (not the default), so it must fit on DIR's filesystem. */
  journal:
    | { dir: string; delayMs: number; bytesMax: number; sizeGiven: boolean; discard: boolean }
    | undefined;
  /** An encrypted volume's key (never printed: VolumeSecret shows only where it came from). */
  encryptionKey: VolumeSecret | undefined;
}

/** Serve's options, parsed: typed values (serveOptions declares them) and where each came from. */
export type ServeOptions = Options<ReturnType<typeof serveOptions>>;

/** The volume's tuning from serve's options, in VolumeOptions' own terms. */
type EngineTuning =
  & Required<
    Pick<
      VolumeOptions,
      | "objectBytesMax"
      | "dirtyBytesMax"
      | "sealDelayMs"
      | "uploadsMax"
      | "cacheBytesMax"
      | "verifyReads"
      | "flushPolicy"
      | "retentionMs"
      | "gcIntervalMs"
    >
  >
  & Pick<VolumeOptions, "commitsPerSecondMax">;

export function buildServeConfig(options: ServeOptions, memoryBytes = availableMemoryBytes()): ServeConfig {
  const v = options.values;
  const socketPath = v.socket ?? (v.listen === undefined ? DEFAULT_SOCKET : undefined);
  refuseContradictions(options);
  const selection = buildStore(options);
  const at = servePoint(options);
  return {
    fencing: !v["no-fencing"],
    leaseDurationMs: v["lease-duration-ms"],
    leaseMode: v.takeover ? "takeover" : v.standby ? "standby" : "refuse",
    shutdownTimeoutMs: v["shutdown-timeout"] === undefined ? undefined : v["shutdown-timeout"] * 1000,
    store: selection.store,
    storeRemote: selection.remote,
    prefix: selection.prefix,
    storeLine: selection.line,
    sizeBytes: v.size,
    sizeSource: options.source("size"),
    allowShrink: v["allow-shrink"],
    readOnly: v["read-only"],
    follow: followConfig(options, at),
    at,
    socketPath: socketPath === undefined ? undefined : resolve(socketPath),
    listen: v.listen,
    metrics: v.metrics,
    exportName: v.export,
    tls: tlsPolicy(options, v.listen),
    // The seed mounted /dev/nbd0 whenever a mount point was set (FLY_LSVD_MOUNT_POINT alone).
    devicePath: v.device ?? (v.mount === undefined ? undefined : DEFAULT_DEVICE),
    mountPath: v.mount,
    fusePath: v.fuse,
    backend: backendIdentifier(selection, options, at),
    deadTimeoutSeconds: v["dead-timeout"],
    ioTimeoutSeconds: v["io-timeout"],
    engine: engineTuning(v),
    cacheDir: cacheDirConfig(options, memoryBytes),
    journal: journalConfig(options),
    abandonJournal: v["abandon-journal"],
    encryptionKey: loadEncryptionKey(options),
  };
}

function engineTuning(v: ServeOptions["values"]): EngineTuning {
  const commitsPerSecondMax = v["puts-per-second"];
  return {
    objectBytesMax: v["object-size"],
    dirtyBytesMax: v["dirty-limit"],
    sealDelayMs: v["seal-delay-ms"],
    uploadsMax: v.uploads,
    cacheBytesMax: v["cache-size"],
    verifyReads: v["verify-reads"] === "on",
    flushPolicy: v["flush-policy"],
    retentionMs: v.retention,
    gcIntervalMs: v["gc-interval"],
    ...(commitsPerSecondMax === undefined ? {} : { commitsPerSecondMax }),
  };
}

/** Option combinations no serve can take, each refused in one line naming the options. */
function refuseContradictions(options: ServeOptions): void {
  const v = options.values;
  if (v.mount !== undefined && v.fuse !== undefined) {
    throw new UsageError(
      `Invalid options: ${
        options.source("mount")
      } works with the kernel device; with --fuse, use losetup and mount`,
    );
  }
  if (v.device !== undefined && v.fuse !== undefined) {
    throw new UsageError("Invalid options: give either --device or --fuse, not both");
  }
  if (v["abandon-journal"] && v["read-only"]) {
    throw new UsageError(
      "Invalid options: --abandon-journal is for a start that writes; not with --read-only",
    );
  }
  if (v.takeover && v.standby) {
    throw new UsageError("Invalid options: give either --takeover or --standby, not both");
  }
}

/** Names the volume on a kernel device (stable across restarts and versions: resume checks it). */
function backendIdentifier(selection: StoreSelection, options: ServeOptions, at: Point | undefined): string {
  return [
    `lsvd ${selection.identity}`,
    `prefix=${selection.prefix}`,
    `export=${options.values.export}`,
    ...(options.values["read-only"] ? ["ro"] : []),
    ...(at === undefined ? [] : [`at=${at.text}`]),
  ].join(" ");
}

/** --journal and its companions; refused with --read-only, and the others without --journal. */
function journalConfig(options: ServeOptions): ServeConfig["journal"] {
  const v = options.values;
  if (v.journal === undefined) {
    // Refused when typed, not when an environment file many starts share sets them (LSVD_JOURNAL_SIZE
    // beside an LSVD_JOURNAL this start leaves out).
    for (const companion of ["journal-discard", "journal-size", "journal-delay"] as const) {
      if (options.isGiven(companion)) {
        throw new UsageError(`Invalid options: ${options.source(companion)} needs --journal`);
      }
    }
    return undefined;
  }
  if (v["read-only"]) {
    throw new UsageError(
      `Invalid options: ${options.source("journal")} writes; it cannot go with ${
        options.source("read-only")
      }`,
    );
  }
  return {
    dir: resolve(v.journal),
    delayMs: v["journal-delay"],
    bytesMax: v["journal-size"],
    sizeGiven: options.isSet("journal-size"),
    discard: v["journal-discard"],
  };
}

/** The disk cache's index (all allocated at open) may take at most this share of lsvd's memory. */
const CACHE_DIR_MEMORY_SHARE = 1 / 8;

function cacheDirConfig(options: ServeOptions, memoryBytes: number): ServeConfig["cacheDir"] {
  const v = options.values;
  if (v["cache-dir"] === undefined) {
    if (options.isGiven("cache-dir-size")) { // as the journal's companions
      throw new UsageError(`Invalid options: ${options.source("cache-dir-size")} needs --cache-dir`);
    }
    return undefined;
  }
  // An unset shell variable ("--cache-dir $DIR"): not the current directory.
  if (v["cache-dir"] === "") throw new UsageError(`Invalid ${options.source("cache-dir")}: empty`);
  if (v["verify-reads"] === "off") {
    throw new UsageError(
      "Invalid options: --cache-dir serves only sectors checked against their CRCs; drop --verify-reads off",
    );
  }
  const sizeBytes = v["cache-dir-size"];
  const allowedBytes = memoryBytes * CACHE_DIR_MEMORY_SHARE;
  if (diskCacheMemoryBytes(sizeBytes) > allowedBytes) {
    const MiB = 2 ** 20;
    const perGiB = diskCacheMemoryBytes(2 ** 30);
    let most = Math.floor(allowedBytes / perGiB * 1024) * MiB;
    while (most > MiB && diskCacheMemoryBytes(most) > allowedBytes) most -= MiB;
    const mib = (bytes: number) => (bytes / MiB).toFixed(0);
    throw new UsageError(
      `Invalid options: --cache-dir-size ${formatSize(sizeBytes)} needs ${
        mib(diskCacheMemoryBytes(sizeBytes))
      } MiB ` +
        `of memory for its index (${(perGiB / MiB).toFixed(1)} MiB per GiB), more than an eighth of the ` +
        `${mib(memoryBytes)} MiB lsvd may use here; at most --cache-dir-size ${formatSize(most)}`,
    );
  }
  return { dir: resolve(v["cache-dir"]), sizeBytes };
}

/** Segments are deleted whole: a few per journal, so a full journal frees space in steps. */
function journalSegmentBytes(bytesMax: number): number {
  return Math.min(64 * 2 ** 20, Math.floor(bytesMax / 4));
}

function listenMetrics(
  registry: MetricsRegistry,
  address: { hostname: string; port: number },
): MetricsServer {
  try {
    return serveMetrics(registry, address);
  } catch (e) {
    const reason = (e instanceof Error ? e.message : String(e)).replace(/ \(os error \d+\)$/, "");
    throw new ListenError(`Cannot serve metrics on ${address.hostname}:${address.port}: ${reason}`, {
      cause: e,
    });
  }
}

/**
 * The one line a fenced daemon exits with names the new holder, however it learned of it (or says
 * its lease was broken, when the lease still names this daemon).
 */
async function namingHolder(
  store: ObjectStore,
  config: ServeConfig,
  fenced: Error,
  volume: Volume,
): Promise<Error> {
  const now = await readLease(store, config.prefix).catch(() => undefined);
  const ours = volume.leaseHolder;
  if (now === undefined || ours === undefined) return fenced;
  return new LsvdError(
    "fenced",
    `Cannot keep writing the volume: ${lostReason(now.lease, ours, Date.now())}`,
    { cause: fenced },
  );
}

/** A fenced daemon with a journal says what acknowledged data only the journal holds (left in place). */
function withJournal(error: Error, volume: Volume): Error {
  const pending = volume.journalPending;
  if (pending === undefined || pending.bytes === 0) return error;
  return new LsvdError(
    "fenced",
    `${error.message}; ${pending.bytes} bytes of acknowledged writes exist only in journal ${pending.description}, ` +
      "left in place (a restart there refuses it while the log belongs to the other writer)",
    { cause: error },
  );
}

export async function serveCommand(args: string[], log: Logger = stderrLogger): Promise<number> {
  const memoryBytes = availableMemoryBytes();
  const specs = serveOptions(tuningDefaults(memoryBytes));
  if (wantsHelp(args)) {
    const memory = `${(memoryBytes / 2 ** 30).toFixed(1)} GiB`;
    console.log(helpText({
      command: "serve",
      summary: SUMMARY,
      specs,
      examples: EXAMPLES,
      notes: [
        STOPPING_NOTE,
        `The tuning defaults above are computed for ${memory} of memory (the cgroup limit, else RAM).`,
        CREDENTIALS_NOTE,
      ],
    }));
    return 0;
  }
  const config = buildServeConfig(parseOptions(args, specs).noPositionals(), memoryBytes);
  pinMallocMmapThreshold(); // RSS follows what the daemon holds, not what it has written
  log(config.storeLine);
  const signals = new ShutdownSignals(log);
  const handOver = new HandOverRequests(); // from the start: the default action of SIGUSR2 is to die
  try {
    return await serveUntilSignal(config, { signals, handOver }, log);
  } finally {
    handOver.dispose();
    signals.dispose();
  }
}

/** What is bound before the store is touched, released again if the start fails. */
interface Bound {
  listeners: NbdListeners;
  metricsServer: MetricsServer | undefined;
  registry: MetricsRegistry;
  store: MeteredStore;
  diskCache: DiskCache | undefined;
  garbage: GarbagePacer | undefined;
}

/**
 * The `--cache-dir` cache, if any. A takeover whose DIR is still held by a live daemon (the one it
 * takes over, which did not hand over, or was not asked: no --device) serves without it this run:
 * the cache is opened before the volume, so waiting for that daemon to let go would wait for the
 * fence this start has yet to set.
 */
function openDiskCache(config: ServeConfig, log: Logger): DiskCache | undefined {
  if (config.cacheDir === undefined) return undefined;
  try {
    return DiskCache.open({
      ...config.cacheDir,
      identity: `${config.store.description}, prefix "${config.prefix}"`,
      log,
      keepsUploads: config.storeRemote,
    });
  } catch (e) {
    if (config.leaseMode !== "takeover" || !isLsvdError(e, "unavailable")) throw e;
    log(`${e.message}; serving without a disk cache this run (--takeover).`);
    return undefined;
  }
}

async function bindLocally(config: ServeConfig, log: Logger): Promise<Bound> {
  await checkAttach({ ...config, log });
  const listeners = await bindNbdListeners(config);
  const registry = new MetricsRegistry();
  let metricsServer: MetricsServer | undefined;
  try {
    metricsServer = config.metrics === undefined ? undefined : listenMetrics(registry, config.metrics);
  } catch (e) {
    await listeners.close();
    throw e;
  }
  let diskCache: DiskCache | undefined;
  try {
    diskCache = openDiskCache(config, log);
  } catch (e) {
    await listeners.close();
    await metricsServer?.close();
    throw e;
  }
  registerDiskCacheMetrics(registry, diskCache);
  return {
    listeners,
    metricsServer,
    garbage: startGarbagePacer(config, registry),
    registry,
    store: new MeteredStore(config.store, registry, config.prefix),
    diskCache,
  };
}

/**
 * Dead buffers are freed once they exceed the read cache's size, at least GC_SLACK_BYTES_MIN
 * (src/util/gc_pacer.ts says why), not V8's own slack of tens of MiB: on the 512 MiB machine that
 * slack alone was half the budget. Only while the read cache is below its full default, i.e. the
 * daemon is sized for a machine under 2 GiB (memory_defaults.ts) or told to be small: each collection
 * stops the event loop for tens of ms (two memory-reducing mark-compacts, 35-80 ms measured under 16
 * concurrent commits), which cost ~10 % of commit throughput and a quarter of the FLUSH p99 at the
 * full cache, where V8's own incremental collections free the buffers soon enough (bench/RESULTS.md,
 * "Issue 23: the collection pacer only on small machines").
 */
function startGarbagePacer(config: ServeConfig, registry: MetricsRegistry): GarbagePacer | undefined {
  const collect = exposedGc();
  if (collect === undefined || config.engine.cacheBytesMax >= DEFAULT_CACHE_BYTES) return undefined;
  const pacer = new GarbagePacer({
    slackBytes: Math.max(GC_SLACK_BYTES_MIN, config.engine.cacheBytesMax),
    collect,
  });
  pacer.start();
  registry.gauge(
    "lsvd_process_gc_collections",
    "Garbage collections lsvd ran to free dead buffers sooner than V8 would (src/util/gc_pacer.ts)",
    () => pacer.collections,
  );
  return pacer;
}

async function release(bound: Bound): Promise<void> {
  bound.garbage?.stop();
  bound.diskCache?.close();
  await bound.listeners.close();
  await bound.metricsServer?.close();
  await bound.store.close();
}

async function serveUntilSignal(
  config: ServeConfig,
  { signals, handOver }: { signals: ShutdownSignals; handOver: HandOverRequests },
  log: Logger,
): Promise<number> {
  if (
    config.leaseMode === "takeover" && config.fencing && !config.readOnly && config.devicePath !== undefined
  ) {
    // Taking over a kernel device (an upgrade): the old daemon hands over rather than being fenced,
    // so the mount sees no error. Before binding: it may listen on our socket path until then.
    await askHolderToHandOver(config.store, config.prefix, { waitMs: HAND_OVER_WAIT_MS, log });
  }
  const bound = await bindLocally(config, log);
  const { store, registry } = bound;
  const served: { volume?: Volume } = {};
  registerDaemonMetrics(registry, () => served.volume);
  let opened: Volume | undefined;
  try {
    opened = await signals.race(openServedVolume(config, bound, signals, log));
  } catch (e) {
    await release(bound);
    throw e;
  }
  if (opened === undefined) {
    await release(bound);
    log(
      `Stopped during ${
        signals.phase === "recovering" ? "recovery" : "start-up"
      }; the device was never served.`,
    );
    return 0;
  }
  const volume = served.volume = opened;
  if (signals.requested) {
    log("Stopping before the device was served.");
    await volume.close();
    await release(bound);
    log("Device has shut down.");
    return 0;
  }
  const { ending, forced, stopStartedMs } = await serveVolume(
    config,
    { signals, handOver },
    bound,
    volume,
    log,
  );
  if (ending.kind === "fenced") {
    const error = withJournal(await namingHolder(store, config, ending.error, volume), volume);
    await store.close(); // the NBD listeners went with server.stop()
    bound.garbage?.stop();
    await bound.metricsServer?.close();
    throw withUnstored(error, ending.unstoredBytes, config);
  }
  return await closeServed(config, { bound, volume, ending, forced, stopStartedMs }, log);
}

/** The checks a start makes before recovery, then Volume.open with the served options. */
async function openServedVolume(
  config: ServeConfig,
  bound: Bound,
  signals: ShutdownSignals,
  log: Logger,
): Promise<Volume> {
  const { store, diskCache } = bound;
  // Refusals a glance at the prefix settles come before the first write (the directory store's
  // check makes its root, the probes write keys): a start that cannot succeed changes nothing.
  if (config.storeRemote) await store.check?.(); // a HEAD: a missing bucket or bad keys, in one line
  const peek = await refuseBeforeWriting({ ...config, store: retrying(store, toolRetry(log)) });
  if (!config.storeRemote) await store.check?.();
  await probeStore(store, config.prefix, { readOnly: config.readOnly });
  const atSequence = config.at === undefined ? undefined : await resolveServePoint(store, config, log);
  const writes = !config.readOnly;
  // A local directory implements both conditions itself (flock and link); a bucket may ignore them.
  if (writes && config.fencing && config.storeRemote) {
    await requireConditionalWrites(store, config.prefix);
  }
  if (writes && !config.fencing) {
    log(
      "Writing without fencing (--no-fencing): a second daemon on this volume can lose acknowledged writes.",
    );
  }
  if (writes && writesThrough(config)) {
    log(
      `Acknowledging each write to ${config.devicePath} once it is stored (a mount that outlives a crash ` +
        "of lsvd must lose no acknowledged write); --journal DIR acknowledges from a local journal, faster.",
    );
  }
  signals.phase = "recovering";
  return await Volume.open(servedVolumeOptions(config, { store, diskCache, signals, log, atSequence, peek }));
}

/**
 * A kernel device without a journal: the kernel keeps the device (and its mount) across a crash of
 * the daemon and never re-sends a write it saw acknowledged, so one must be stored before it is.
 */
function writesThrough(config: ServeConfig): boolean {
  return config.devicePath !== undefined && config.journal === undefined && !config.readOnly;
}

/** What Volume.open gets from serve's configuration. */
function servedVolumeOptions(
  config: ServeConfig,
  { store, diskCache, signals, log, atSequence, peek }: {
    store: ObjectStore;
    diskCache: DiskCache | undefined;
    signals: ShutdownSignals;
    log: Logger;
    atSequence: number | undefined;
    /** The glance the refusals before recovery took: Volume.open takes no second one. */
    peek: VolumeOptions["peek"];
  },
): VolumeOptions {
  return {
    stopRequested: () => signals.requested,
    store,
    log,
    ...sharedWithVolume(config),
    ...config.engine,
    ...(diskCache === undefined ? {} : { diskCache }),
    writeThrough: writesThrough(config),
    ...(config.encryptionKey === undefined ? {} : { encryptionKey: config.encryptionKey }),
    ...(config.sizeBytes === undefined ? {} : { sizeBytes: config.sizeBytes }),
    ...(atSequence === undefined ? {} : { atSequence }),
    ...(peek === undefined ? {} : { peek }),
    ...(config.journal === undefined ? {} : {
      journal: {
        files: new DirectoryJournalFiles(config.journal.dir, {
          preallocateBytes: journalSegmentBytes(config.journal.bytesMax),
          // A size asked for must fit; the default is a ceiling most journals never reach (data
          // leaves for the bucket within --journal-delay), and a full disk fails FLUSHes in one line.
          ...(config.journal.sizeGiven ? { bytesMax: config.journal.bytesMax } : {}),
        }),
        delayMs: config.journal.delayMs,
        bytesMax: config.journal.bytesMax,
        segmentBytes: journalSegmentBytes(config.journal.bytesMax),
        discard: config.journal.discard,
      },
    }),
  };
}

/** How a served volume's serving ended, and whether a stop took it from a holder. */
interface ServingEnd {
  ending: Ending;
  forced: Forced | undefined;
  stopStartedMs: number;
}

type Forced = { holders: Holder[]; by: "signal" | "deadline" };

/** Serves the opened volume over NBD (and attaches it) until a signal, a hand-over or a fence. */
async function serveVolume(
  config: ServeConfig,
  { signals, handOver }: { signals: ShutdownSignals; handOver: HandOverRequests },
  bound: Bound,
  volume: Volume,
  log: Logger,
): Promise<ServingEnd> {
  const pin = await pinServedPoint(config, bound, volume, log);
  let attachment: Attachment | undefined;
  const server = await startNbdServer({
    device: volume,
    exportName: config.exportName,
    log,
    listeners: bound.listeners,
    metrics: bound.registry,
    tls: config.tls,
    limits: { inputBufferBytes: nbdInputBufferBytes(config.engine.dirtyBytesMax) },
    // A kernel socket closed under a serving daemon: the kernel gave up on a slow request.
    onClientLeft: () => {
      if (signals.phase === "serving") attachment?.reconnect();
    },
  });
  log(`Serving NBD at ${server.uris.join(" and ")}.`);
  if (config.tls.mode !== "off") log(describeTls(config.tls, config.socketPath !== undefined));
  if (bound.metricsServer !== undefined) log(`Serving metrics at ${bound.metricsServer.url}.`);
  let ending: Ending = { kind: "stop" };
  let forced: Forced | undefined;
  let stopStartedMs = Date.now();
  try {
    attachment = await attachDevice({
      ...config,
      log,
      // A takeover waits for the old daemon's sockets to die; a restart finds them dead already.
      resumeWaitMs: config.leaseMode === "takeover" ? config.leaseDurationMs + 15_000 : 5_000,
    });
    signals.phase = "serving";
    if (!signals.requested) log("Device is now operational.");
    ending = await whyServingEnds(volume, signals, handOver);
    stopStartedMs = Date.now();
    if (ending.kind === "stop" && attachment !== undefined) {
      const outcome = await waitForHolders(config, signals, volume, attachment, log);
      if (outcome.kind === "failed") ending = fencedEnding(volume, outcome.error);
      if (outcome.kind === "forced") {
        forced = outcome;
        await attachment.forceRelease(forced.holders);
      }
    }
  } finally {
    signals.phase = "stopping";
    if (ending.kind === "stop") {
      await attachment?.detach();
      await server.stop();
    } else {
      // Answer nothing more and keep the device and its mount for the daemon that takes over.
      await server.stop({ quiet: true });
      await attachment?.handOver();
    }
    await pin?.release();
    if (ending.kind === "fenced") volume.abandon();
    else log("Flushing remaining writes to object storage.");
  }
  return { ending, forced, stopStartedMs };
}

/**
 * Never take the volume from under a filesystem: serve until it is released, or forced. A shutdown
 * deadline leaves at least half of itself to the flush.
 */
function waitForHolders(
  config: ServeConfig,
  signals: ShutdownSignals,
  volume: Volume,
  attachment: Attachment,
  log: Logger,
): ReturnType<typeof waitForRelease> {
  return waitForRelease({
    release: attachment.release,
    signals,
    failed: fencedError(volume),
    log,
    ...(config.shutdownTimeoutMs === undefined ? {} : { deadlineMs: config.shutdownTimeoutMs / 2 }),
  });
}

/**
 * A read-only daemon pins its point: garbage collection in the writer moves no data it reads. A
 * follower's pin moves with it (src/volume/follower.ts).
 */
async function pinServedPoint(
  config: ServeConfig,
  bound: Bound,
  volume: Volume,
  log: Logger,
): Promise<{ release(): Promise<void> } | undefined> {
  const store = bound.store;
  if (!config.readOnly) return undefined;
  if (config.follow !== undefined) {
    const follower = new Follower(volume, {
      store: retrying(store, toolRetry(log)),
      prefix: config.prefix,
      clock: systemClock,
      log,
      intervalMs: config.follow.intervalMs,
    });
    registerFollowMetrics(bound.registry, () => follower.stats);
    await follower.start();
    log(
      `Following the log from object ${volume.followPosition.sequence}, every ${config.follow.intervalMs} ms` +
        (follower.pinName === undefined ? "." : ` (pin "${follower.pinName}").`),
    );
    return { release: () => follower.stop() };
  }
  return await holdPin(retrying(store, toolRetry(log)), config.prefix, volume.stats.lastSequence, {
    clock: systemClock,
    purpose: "serve",
  }).catch((e) => {
    log(`Serving without a pin (garbage collection may move what this daemon reads): ${messageOf(e)}.`);
    return undefined;
  });
}

/** Closes a volume whose serving ended by a stop or a hand-over, within the shutdown deadline; the exit code. */
async function closeServed(
  config: ServeConfig,
  { bound, volume, ending, forced, stopStartedMs }: ServingEnd & { bound: Bound; volume: Volume },
  log: Logger,
): Promise<number> {
  const store = bound.store;
  bound.garbage?.stop();
  const flushDeadlineMs = config.shutdownTimeoutMs === undefined
    ? undefined
    : Math.max(0, stopStartedMs + config.shutdownTimeoutMs - Date.now());
  if (!await closeWithin(volume.close(), flushDeadlineMs)) {
    await bound.metricsServer?.close();
    if (volume.allStored) {
      // Only the checkpoint or the lease release was left: both just save the next start work.
      log(
        `Shutdown deadline of ${
          config.shutdownTimeoutMs! / 1000
        } s passed after every write was stored: stopped before the shutdown checkpoint and the lease release ` +
          "finished (they only save the next start work; it may read more of the log and fence this daemon first).",
      );
      if (forced === undefined) return 0;
      log(forcedLine(forced));
      return 1;
    }
    const left = volume.unflushed;
    const journal = volume.journalPending;
    const fate = journal === undefined
      ? "are lost"
      : `stay in journal ${journal.description} (${journal.bytes} acknowledged bytes), replayed at the next start`;
    log(
      `Shutdown deadline of ${
        config.shutdownTimeoutMs! / 1000
      } s passed: ${left.bytes} bytes in ${left.objects} objects from object ${left.firstSequence} on were not stored and ${fate}.`,
    );
    return 1;
  }
  bound.diskCache?.close();
  await store.close();
  await bound.metricsServer?.close();
  if (forced !== undefined) {
    log(forcedLine(forced));
    return 1;
  }
  if (ending.kind === "handOver" && config.devicePath !== undefined) {
    log(
      `Handed ${config.devicePath} over: every acknowledged write is stored; it stays connected${
        config.mountPath === undefined ? "" : " and mounted"
      }, its I/O held up to ${config.deadTimeoutSeconds} s for the next lsvd to resume it.`,
    );
  } else if (ending.kind === "handOver") {
    log("Handed the volume over: every acknowledged write is stored.");
  } else {
    log("Device has shut down.");
  }
  return 0;
}

function describeTls(tls: TlsPolicy & { mode: "on" | "require" }, socket: boolean): string {
  const tcp = tls.mode === "require" ? "required on TCP" : "offered on TCP (plaintext clients too)";
  const unix = socket ? ", offered on the unix socket" : "";
  const peers = tls.credentials.verifyPeer ? "; clients need a certificate from --tls-ca" : "";
  return `TLS ${tcp}${unix}; certificate ${tls.credentials.subject}${peers}.`;
}

/** The last line of a stop that took the volume from a holder still using it. */
function forcedLine(forced: { holders: Holder[]; by: "signal" | "deadline" }): string {
  return `Device has shut down while ${describeHolders(forced.holders).what} still used it (${
    forced.by === "signal" ? "a second signal" : "the shutdown deadline"
  } forced the stop): writes made there since its last sync are lost.`;
}

/** Why serving ended: a stop signal, a hand-over request, or another writer fencing this one. */
type Ending =
  | { kind: "stop" }
  | { kind: "handOver" }
  | { kind: "fenced"; error: Error; unstoredBytes: number };

async function whyServingEnds(
  volume: Volume,
  signals: ShutdownSignals,
  handOver: HandOverRequests,
): Promise<Ending> {
  // Another writer taking the volume over ends serving too (fencing.md), with one line and exit 1.
  return await Promise.race([
    signals.received.then((): Ending => ({ kind: "stop" })),
    handOver.requested.then((): Ending => ({ kind: "handOver" })),
    fencedError(volume).then((error) => fencedEnding(volume, error)),
  ]);
}

/** Resolves when another writer fenced the volume (never for other failures: they fail requests). */
function fencedError(volume: Volume): Promise<Error> {
  return volume.whenFailed().then((e) => isLsvdError(e, "fenced") ? e : new Promise<never>(() => {}));
}

function fencedEnding(volume: Volume, error: Error): Ending {
  return { kind: "fenced", error, unstoredBytes: volume.unflushed.bytes };
}

/** The fenced line says whether acknowledged writes were lost, and that the device stays for the new holder. */
function withUnstored(error: Error, unstoredBytes: number, config: ServeConfig): Error {
  const device = config.devicePath === undefined
    ? ""
    : `; ${config.devicePath} stays connected${config.mountPath === undefined ? "" : " and mounted"} for it`;
  const fate = unstoredBytes === 0
    ? "nothing acknowledged was left unstored"
    : `fenced mid-write: ${unstoredBytes} bytes of acknowledged writes were not stored`;
  return new LsvdError("fenced", `${error.message} (${fate})${device}`, { cause: error });
}

/** --follow and --follow-interval: only read-only, and not with a past point. */
function followConfig(options: ServeOptions, at: Point | undefined): ServeConfig["follow"] {
  const v = options.values;
  if (!v.follow) {
    if (options.isSet("follow-interval")) {
      throw new UsageError(`Invalid options: ${options.source("follow-interval")} needs --follow`);
    }
    return undefined;
  }
  if (!v["read-only"]) {
    throw new UsageError(
      "Invalid options: --follow serves another daemon's writes and needs --read-only (a writer waiting to take over: --standby)",
    );
  }
  if (at !== undefined) {
    throw new UsageError("Invalid options: --follow serves the newest state; not with --at or --snapshot");
  }
  if (v.mount !== undefined || v.fuse !== undefined) {
    throw new UsageError(
      "Invalid options: a mounted filesystem cannot follow a disk that changes under it; serve --follow " +
        "to raw-block readers, or mount a fixed point (--read-only --at POINT or --snapshot NAME)",
    );
  }
  return { intervalMs: v["follow-interval"] };
}

function servePoint(options: ServeOptions): Point | undefined {
  const { snapshot, at } = options.values;
  if (snapshot !== undefined) {
    if (at !== undefined) {
      throw new UsageError("Invalid options: give either --at or --snapshot");
    }
    if (!options.values["read-only"]) {
      throw new UsageError(
        `Invalid options: ${options.source("snapshot")} serves a past state and needs --read-only`,
      );
    }
    return { kind: "snapshot", name: snapshot, text: snapshot };
  }
  if (at === undefined) return undefined;
  if (!options.values["read-only"]) {
    throw new UsageError(
      `Invalid options: ${options.source("at")} serves a past state and needs --read-only`,
    );
  }
  return parsePoint(at, options.source("at"));
}

/** The object a `--at` point names, said in one line (serving a past state never changes the bucket). */
async function resolveServePoint(store: ObjectStore, config: ServeConfig, log: Logger): Promise<number> {
  const retried = retrying(store, toolRetry(log));
  const state = await listLogState(retried, config.prefix);
  const resolved = await resolvePoint(retried, state, config.at!);
  log(`Serving the volume as of ${resolved.description}, read-only.`);
  return resolved.sequence;
}
