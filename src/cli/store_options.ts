/**
 * @module
 * Which store and prefix a command uses, decided in one place for `serve` and every offline tool
 * (info, verify, export, import, rollback), so they all take the same options and environment:
 * `--bucket` (or BUCKET_NAME) with `--endpoint`, `--region`, `--path-style`, `--connections`, or
 * `--dir` for a local directory store, and `--prefix`. A bucket is used when
 * one is named; the local directory only when `--dir` is given or nothing about S3 is configured
 * at all -- an S3 setting without a bucket (a typo in a secret) is an error, never a silent fall
 * back to a local disk that is not bottomless. The chosen store is always said in one line.
 */

import { resolve } from "node:path";
import { normalizePrefix } from "../format/keys.ts";
import { DirectoryStore } from "../store/directory.ts";
import { LazyS3Store } from "../store/lazy_s3.ts";
import type { ObjectStore } from "../store/store.ts";
import { flagOption, integerOption, type Options, textOption, UsageError } from "./options.ts";
import { S3_CONNECTIONS_DEFAULT } from "../store/s3_options.ts";

/** The directory store used when nothing about S3 is configured (relative to the working directory). */
const DEFAULT_DIR = "lsvd-data";

export const STORE_OPTIONS = {
  bucket: textOption({
    group: "store",
    help: "S3 bucket holding the volume",
    env: ["BUCKET_NAME"],
    placeholder: "NAME",
  }),
  dir: textOption({
    group: "store",
    help: `Local directory store instead of a bucket (default without any S3 setting: ./${DEFAULT_DIR})`,
    placeholder: "PATH",
  }),
  prefix: textOption({
    group: "store",
    help: "Key prefix, so one bucket can hold many volumes",
    placeholder: "P",
  }),
  endpoint: textOption({
    group: "store",
    help: "S3 endpoint URL (Tigris, R2, MinIO, Ceph...); default Amazon S3",
    env: ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"],
    placeholder: "URL",
  }),
  region: textOption({
    group: "store",
    help: "S3 region; 'auto' for R2 and Tigris",
    env: ["AWS_REGION", "AWS_DEFAULT_REGION"],
    placeholder: "R",
  }),
  "path-style": flagOption({
    group: "store",
    help: "Path-style S3 URLs (needed by most non-AWS servers)",
  }),
  connections: integerOption({
    group: "store",
    help: "Concurrent S3 connections",
    default: S3_CONNECTIONS_DEFAULT,
    min: 1,
    max: 4096,
    placeholder: "N",
  }),
};

/** Options that carry the store options (serve's and every tool's). */
export type StoreOptions = Options<typeof STORE_OPTIONS>;

/** Credential variables read by the S3 client (the standard AWS chain). */
export const CREDENTIAL_VARIABLES = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"];

/** A note for help texts listing where credentials come from. */
export const CREDENTIALS_NOTE =
  "Credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN " +
  "for temporary keys),\nor AWS_PROFILE / instance roles through the standard AWS chain. Fly's names are accepted:\n" +
  "BUCKET_NAME, AWS_ENDPOINT_URL_S3, AWS_REGION. Any S3 setting without a bucket is an error.";

/** Environment variables that only make sense with a bucket; any of them set means S3 was meant. */
const S3_ONLY_VARIABLES = [...CREDENTIAL_VARIABLES, "AWS_PROFILE"];
const S3_OPTIONS = ["endpoint", "region", "path-style"] as const;

export interface StoreSelection {
  store: ObjectStore;
  /** Normalised ("" or ending in one "/"). */
  prefix: string;
  /** False for the local directory store (its check() creates the directory). */
  remote: boolean;
  /** One line for the log: which store and prefix, e.g. `Using bucket b, prefix vol1/ at URL.` */
  line: string;
  /** Which store, stable across restarts and versions (names a kernel device's backend). */
  identity: string;
}

/** Builds the store the options select; throws a one-line UsageError when they contradict. */
export function buildStore(
  options: StoreOptions,
  env: (name: string) => string | undefined = (n) => Deno.env.get(n),
): StoreSelection {
  const { bucket, dir } = options.values;
  const prefix = normalizePrefix(options.values.prefix ?? "");
  const shown = prefix === "" ? "" : `, prefix ${prefix}`;
  if (bucket !== undefined && dir !== undefined) {
    throw new UsageError(
      `Invalid options: give either a bucket (${options.source("bucket")}) or ${
        options.source("dir")
      }, not both`,
    );
  }
  if (dir === undefined && bucket === undefined) {
    const hint = s3SettingIn(options, env);
    if (hint !== undefined) {
      throw new UsageError(
        `No bucket configured although ${hint} is set: set BUCKET_NAME or --bucket (or --dir PATH for a local directory)`,
      );
    }
  }
  if (bucket === undefined) {
    const root = resolve(dir ?? DEFAULT_DIR);
    const why = dir === undefined ? " (no bucket configured)" : "";
    const line = `Using local directory ${root}${shown}${why}.`;
    return { store: new DirectoryStore(root), prefix, remote: false, line, identity: `dir:${root}` };
  }
  const { endpoint, region } = options.values;
  for (
    const [name, value, problem] of [
      ["bucket", bucket, bucketNameProblem(bucket)],
      ["endpoint", endpoint, endpoint === undefined ? undefined : endpointProblem(endpoint)],
    ] as const
  ) {
    if (problem !== undefined) throw new UsageError(`Invalid ${options.source(name)}: "${value}" ${problem}`);
  }
  const store = new LazyS3Store({
    bucket,
    connections: options.values.connections,
    forcePathStyle: options.values["path-style"],
    ...(endpoint === undefined ? {} : { endpoint }),
    ...(region === undefined ? {} : { region }),
  });
  const where = endpoint ?? `Amazon S3 (region ${region ?? "us-east-1"})`;
  return {
    store,
    prefix,
    remote: true,
    line: `Using bucket ${bucket}${shown} at ${where}.`,
    identity: `s3:${endpoint ?? "aws"}/${bucket}`,
  };
}

/** Why a bucket name cannot be one (S3's characters, a little more lenient for other servers), or undefined. */
export function bucketNameProblem(name: string): string | undefined {
  return /^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$/.test(name)
    ? undefined
    : "is not a bucket name (letters, digits, '.', '-' and '_')";
}

/** Why an endpoint is not an http(s) URL, or undefined. */
export function endpointProblem(url: string): string | undefined {
  try {
    const u = new URL(url);
    if (u.protocol === "http:" || u.protocol === "https:") return undefined;
  } catch {
    // not a URL at all
  }
  return "is not an http:// or https:// URL";
}

/** The first S3 setting found (a flag or a variable name), or undefined for a bare start. */
function s3SettingIn(options: StoreOptions, env: (name: string) => string | undefined): string | undefined {
  const option = S3_OPTIONS.find((name) => options.isSet(name));
  if (option !== undefined) return options.source(option);
  return S3_ONLY_VARIABLES.find((name) => (env(name) ?? "") !== "");
}
