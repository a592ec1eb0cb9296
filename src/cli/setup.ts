/**
 * @module
 * `lsvd setup`: the flow `fly volumes lsvd setup` had. It asks which service (Tigris, Amazon S3,
 * another S3-compatible one), the keys, region or endpoint, bucket, prefix, size and an optional
 * mount point; proves the bucket works with the same probe `serve` runs at start (write, read
 * back, delete under the prefix); then writes one env file that systemd (EnvironmentFile=),
 * `docker run --env-file` and `fly secrets import` all read, and says how to use it. The secret
 * key goes into that file (mode 0600) and nowhere else: never on the terminal or in a log. A size
 * is written only for a new volume: an existing one has its size in the bucket, and a size in the
 * env file would pin it (after a grow, serve would refuse to start with the old one).
 * Every answer is also a flag, and --non-interactive never asks, for scripts.
 */

import { resolve } from "node:path";
import { LazyS3Store } from "../store/lazy_s3.ts";
import { probeStore } from "../store/probe.ts";
import { normalizePrefix } from "../format/keys.ts";
import { listLogState, volumeExists } from "../log/log_state.ts";
import { type Logger, stderrLogger } from "../util/log.ts";
import {
  flagOption,
  helpText,
  type Options,
  parseOptions,
  parseSize,
  textOption,
  UsageError,
  wantsHelp,
} from "./options.ts";
import { sectorSizeProblem } from "../util/sizes.ts";
import { VOLUME_BYTES_MAX } from "../util/constants.ts";
import { Prompter } from "./prompt.ts";
import { bucketNameProblem, CREDENTIALS_NOTE, endpointProblem, STORE_OPTIONS } from "./store_options.ts";
import { toolRetry } from "./tool_support.ts";
import { retrying } from "../store/retry.ts";
import { recordedSizeBytes } from "../log/recorded_size.ts";
import type { FormatRecord } from "../log/format_record.ts";
import { cipherOf } from "../log/volume_encryption.ts";
import { loadEncryptionKey } from "./encryption_key.ts";

const SERVICES: [key: string, label: string][] = [
  ["tigris", "Tigris (fly storage)"],
  ["aws", "Amazon S3"],
  ["other", "Another S3-compatible service (R2, MinIO, Ceph RGW, ...)"],
];
const TIGRIS_ENDPOINT = "https://fly.storage.tigris.dev";

const SETUP_OPTIONS = {
  service: textOption({
    group: "store",
    help: "tigris, aws or other (S3-compatible at --endpoint)",
    placeholder: "NAME",
  }),
  "access-key-id": textOption({
    group: "store",
    help: "S3 access key",
    env: ["AWS_ACCESS_KEY_ID"],
    placeholder: "KEY",
  }),
  "secret-access-key": textOption({
    group: "store",
    help: "S3 secret key (a flag shows in ps; the variable does not)",
    env: ["AWS_SECRET_ACCESS_KEY"],
    placeholder: "SECRET",
  }),
  bucket: STORE_OPTIONS.bucket,
  prefix: STORE_OPTIONS.prefix,
  endpoint: STORE_OPTIONS.endpoint,
  region: STORE_OPTIONS.region,
  "path-style": STORE_OPTIONS["path-style"],
  size: textOption({
    group: "volume",
    help: "Volume size for the first start (bytes or K/M/G/T); not written for a volume that exists",
    env: ["FLY_LSVD_DEVICE_SIZE"],
    placeholder: "SIZE",
  }),
  mount: textOption({
    group: "volume",
    help: "Where serve mounts the volume (optional; attaches /dev/nbd0)",
    env: ["FLY_LSVD_MOUNT_POINT"],
    placeholder: "PATH",
  }),
  "encryption-key-file": textOption({
    group: "volume",
    help: "Key file of an encrypted volume (at least 32 secret bytes): the env file names the file, never " +
      "holds the key; a new volume is created encrypted, an existing one must be encrypted with this key",
    placeholder: "FILE",
  }),
  "env-file": textOption({ help: "Env file to write", default: "lsvd.env", placeholder: "PATH" }),
  force: flagOption({ help: "Overwrite an existing env file" }),
  "non-interactive": flagOption({ help: "Never ask: every missing answer is an error (for scripts)" }),
};

type SetupOptions = Options<typeof SETUP_OPTIONS>;
/** The answers setup may ask for: each a text option. */
type Answer =
  | "access-key-id"
  | "secret-access-key"
  | "bucket"
  | "prefix"
  | "endpoint"
  | "region"
  | "size"
  | "mount";

const EXAMPLES = [
  "lsvd setup                                      # asks, checks the bucket, writes ./lsvd.env",
  "AWS_SECRET_ACCESS_KEY=tsec_... lsvd setup --non-interactive --service tigris --access-key-id tid_... \\",
  "  --bucket my-bucket --prefix vol1 --size 100G --env-file /etc/lsvd.env",
  "systemd: EnvironmentFile=/etc/lsvd.env    docker: docker run --env-file lsvd.env ... lsvd serve",
];

/** Everything the env file records. */
interface Settings {
  service: string;
  accessKeyId: string;
  secretAccessKey: string;
  endpoint: string | undefined;
  region: string;
  pathStyle: boolean;
  bucket: string;
  prefix: string;
  /** Only for a new volume (an existing one's size is in the bucket). */
  size: string | undefined;
  mount: string | undefined;
  /** An encrypted volume's key file (absolute): the env file names it, never holds the key. */
  keyFile?: string | undefined;
}

export async function setupCommand(args: string[], log: Logger = stderrLogger): Promise<number> {
  if (wantsHelp(args)) {
    console.log(helpText({
      command: "setup",
      summary: "Asks for (or takes as flags) where the volume lives, checks that the bucket works, and\n" +
        "writes an env file for systemd, docker --env-file and Fly secrets (mode 0600: it holds the secret\n" +
        "key, which setup never prints). The size is written only for a new volume: an existing one keeps\n" +
        "the size its bucket records (a size in the env file would pin it, and serve refuses to shrink).",
      specs: SETUP_OPTIONS,
      examples: EXAMPLES,
      notes: [CREDENTIALS_NOTE],
    }));
    return 0;
  }
  const options = parseOptions(args, SETUP_OPTIONS).noPositionals();
  const v = options.values;
  const envFile = resolve(v["env-file"]);
  if (!v.force && await exists(envFile)) {
    throw new UsageError(`Cannot write ${envFile}: it exists (give --force to replace it)`);
  }
  const sizeProblem = v.size === undefined ? undefined : checkSize(v.size);
  if (sizeProblem !== undefined) throw new UsageError(`Invalid ${options.source("size")}: ${sizeProblem}`);
  const interactive = !v["non-interactive"] && Deno.stdin.isTerminal();
  const prompter = interactive ? new Prompter() : undefined;
  let settings: Settings;
  try {
    const ask = asker(options, prompter);
    const store = await gatherStore(options, prompter, ask);
    const recorded = await checkBucket(store, log);
    const keyFile = checkKeyFile(options, recorded?.format, store.prefix);
    settings = { ...store, ...await gatherVolume(options, ask, recorded, log), keyFile };
  } finally {
    prompter?.close();
  }
  for (const [name, value] of Object.entries(envEntries(settings))) checkEnvValue(name, value);
  await Deno.writeTextFile(envFile, envFileText(settings), { mode: 0o600 });
  await Deno.chmod(envFile, 0o600);
  console.log(usageText(envFile));
  return 0;
}

type Ask = (
  name: Answer,
  question: string,
  extra?: {
    default?: string;
    secret?: boolean;
    check?: (a: string) => string | undefined;
    optional?: boolean;
  },
) => Promise<string | undefined>;

/** Each answer from its flag or variable, else asked (interactive), else a one-line error. */
function asker(options: SetupOptions, prompter: Prompter | undefined): Ask {
  return async (name, question, extra = {}) => {
    const given = options.values[name];
    if (given !== undefined) {
      const problem = extra.check?.(given);
      if (problem !== undefined) throw new UsageError(`Invalid ${options.source(name)}: ${problem}`);
      return given;
    }
    if (prompter === undefined) {
      if (extra.default !== undefined || extra.optional) return extra.default;
      throw new UsageError(`Missing --${name}: give it (or run lsvd setup on a terminal to be asked)`);
    }
    const answer = await prompter.ask(question + (extra.optional ? " (Enter for none)" : ""), {
      ...extra,
      allowEmpty: extra.optional === true,
    });
    return answer === "" ? undefined : answer;
  };
}

type StoreSettings = Omit<Settings, "size" | "mount">;

/** Where the volume lives: service, keys, endpoint and region, bucket, prefix. */
async function gatherStore(
  options: SetupOptions,
  prompter: Prompter | undefined,
  get: Ask,
): Promise<StoreSettings> {
  const v = options.values;
  let service = v.service;
  if (service === undefined) {
    if (options.isSet("endpoint")) {
      service = v.endpoint === TIGRIS_ENDPOINT ? "tigris" : "other";
    } else if (prompter !== undefined) {
      service = await prompter.choose("Which object storage service?", SERVICES, "tigris");
    } else throw new UsageError("Missing --service: give tigris, aws or other");
  }
  if (!SERVICES.some(([k]) => k === service)) {
    throw new UsageError(`Invalid ${options.source("service")}: "${service}" must be tigris, aws or other`);
  }
  const accessKeyId = (await get("access-key-id", "Access key ID"))!;
  const secretAccessKey = (await get("secret-access-key", "Secret access key", { secret: true }))!;
  let endpoint: string | undefined;
  let region: string;
  let pathStyle = v["path-style"];
  if (service === "tigris") {
    endpoint = v.endpoint ?? TIGRIS_ENDPOINT;
    region = v.region ?? "auto";
  } else if (service === "aws") {
    endpoint = v.endpoint;
    region = (await get("region", "Region", { default: "us-east-1" }))!;
  } else {
    endpoint = await get("endpoint", "Endpoint URL", { check: checkUrl });
    region = (await get("region", "Region ('auto' for R2)", { default: "us-east-1" }))!;
    if (!options.isSet("path-style") && prompter !== undefined) {
      pathStyle = await prompter.confirm(
        "Path-style URLs (MinIO, Ceph RGW and most self-hosted servers)?",
        true,
      );
    }
  }
  const bucket = (await get("bucket", "Bucket", { check: checkBucketName }))!;
  const prefix = normalizePrefix((await get("prefix", "Prefix inside the bucket", { optional: true })) ?? "");
  const settings = { service, accessKeyId, secretAccessKey, endpoint, region, pathStyle, bucket, prefix };
  for (
    const [name, value] of Object.entries(envEntries({ ...settings, size: undefined, mount: undefined }))
  ) {
    checkEnvValue(name, value);
  }
  return settings;
}

/**
 * The size (asked only for a new volume: an existing one keeps the size its bucket records) and
 * the optional mount point.
 */
async function gatherVolume(
  options: SetupOptions,
  get: Ask,
  existing: { sizeBytes: number | undefined } | undefined,
  log: Logger,
): Promise<Pick<Settings, "size" | "mount">> {
  let size: string | undefined;
  if (existing === undefined) {
    size = (await get("size", "Volume size", { default: "10G", check: checkSize }))!;
    log(`The first start creates a volume of ${size} here.`);
  } else {
    const given = options.values.size;
    log(
      "The env file sets no size: serve opens the volume at the size its bucket records, and grows it " +
        "when started once with a larger --size" +
        (given === undefined ? "." : ` (${options.source("size")}=${given} is not written).`),
    );
  }
  const mount = await get("mount", "Mount point", { optional: true, check: checkMount });
  return { size, mount };
}

function checkUrl(a: string): string | undefined {
  const problem = endpointProblem(a);
  return problem === undefined ? undefined : `"${a}" ${problem}`;
}

function checkBucketName(a: string): string | undefined {
  const problem = bucketNameProblem(a);
  return problem === undefined ? undefined : `"${a}" ${problem}`;
}

function checkSize(a: string): string | undefined {
  try {
    return sectorSizeProblem(parseSize(a, "size"), VOLUME_BYTES_MAX);
  } catch (e) {
    return (e as Error).message.replace(/^Invalid size: /, "");
  }
}

function checkMount(a: string): string | undefined {
  return a.startsWith("/") ? undefined : `"${a}" is not an absolute path`;
}

/**
 * Proves the bucket works under the prefix, as serve will at start, and says what is there:
 * undefined for an empty prefix, else the volume found (its recorded size when there is one).
 */
async function checkBucket(
  s: StoreSettings,
  log: Logger,
): Promise<{ sizeBytes: number | undefined; format: FormatRecord | undefined } | undefined> {
  const store = new LazyS3Store({
    bucket: s.bucket,
    region: s.region,
    forcePathStyle: s.pathStyle,
    credentials: { accessKeyId: s.accessKeyId, secretAccessKey: s.secretAccessKey },
    ...(s.endpoint === undefined ? {} : { endpoint: s.endpoint }),
  });
  try {
    log(
      `Checking bucket ${s.bucket}${s.prefix === "" ? "" : `, prefix ${s.prefix}`} at ${
        s.endpoint ?? `Amazon S3 (${s.region})`
      }.`,
    );
    await store.check();
    await probeStore(store, s.prefix);
    const retried = retrying(store, toolRetry(log));
    const state = await listLogState(retried, s.prefix);
    if (!volumeExists(state)) {
      log("The bucket works. It holds no volume here yet.");
      return undefined;
    }
    const sizeBytes = await recordedSizeBytes(retried, s.prefix);
    log(
      `The bucket works. It already holds a volume here${
        sizeBytes === undefined ? "" : ` of ${sizeBytes} bytes`
      }; serve will open it.`,
    );
    return { sizeBytes, format: state.format };
  } finally {
    await store.close();
  }
}

/** The variables serve reads, in the names Fly's lsvd used where there is one. */
function envEntries(s: Settings): Record<string, string> {
  return {
    AWS_ACCESS_KEY_ID: s.accessKeyId,
    AWS_SECRET_ACCESS_KEY: s.secretAccessKey,
    ...(s.endpoint === undefined ? {} : { AWS_ENDPOINT_URL_S3: s.endpoint }),
    AWS_REGION: s.region,
    BUCKET_NAME: s.bucket,
    ...(s.prefix === "" ? {} : { LSVD_PREFIX: s.prefix }),
    ...(s.pathStyle ? { LSVD_PATH_STYLE: "true" } : {}),
    ...(s.size === undefined ? {} : { FLY_LSVD_DEVICE_SIZE: s.size }),
    ...(s.mount === undefined ? {} : { FLY_LSVD_MOUNT_POINT: s.mount }),
    ...(s.keyFile === undefined ? {} : { LSVD_ENCRYPTION_KEY_FILE: s.keyFile }),
  };
}

/**
 * The key file the env file names, checked as serve will check it (readable, mode 0600, long
 * enough, this volume's key; a volume that exists must be encrypted with it, or not at all without
 * one). Only the file: a key in LSVD_ENCRYPTION_KEY is not copied into the env file.
 */
function checkKeyFile(
  options: SetupOptions,
  format: FormatRecord | undefined,
  prefix: string,
): string | undefined {
  const file = options.values["encryption-key-file"];
  const secret = loadEncryptionKey(options, { get: () => undefined, delete: () => {} });
  if (format !== undefined) cipherOf(format, secret, prefix);
  return file === undefined ? undefined : resolve(file);
}

/** systemd strips quotes and docker keeps them: only values neither changes can be written. */
function checkEnvValue(name: string, value: string): void {
  if (/[\s"'\\$`]/.test(value) || value === "") {
    throw new UsageError(`Cannot write ${name} to an env file: its value has spaces, quotes or '$' in it`);
  }
}

function envFileText(s: Settings): string {
  const lines = Object.entries(envEntries(s)).map(([k, v]) => `${k}=${v}`);
  return `# lsvd settings written by 'lsvd setup' on ${
    new Date().toISOString()
  }. Keep it secret (mode 0600).\n` +
    `# Read by systemd (EnvironmentFile=), docker run --env-file, and fly secrets import.\n${
      lines.join("\n")
    }\n`;
}

/** How to use the env file; never its values (the secret key is in it). */
export function usageText(envFile: string): string {
  return [
    `Wrote ${envFile} (mode 0600; it holds the secret key). Use it with:`,
    `  lsvd:    set -a; . ${envFile}; set +a; lsvd serve`,
    `  systemd: EnvironmentFile=${envFile}   (see docs/lsvd.service)`,
    `  docker:  docker run --env-file ${envFile} --stop-timeout 300 --privileged lsvd serve`,
    `  Fly:     fly secrets import < ${envFile}`,
  ].join("\n");
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}
