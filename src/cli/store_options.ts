/**
 * @module
 * Which store and prefix a command uses, decided in one place for `serve` and every offline tool
 * (info, verify, export, import, rollback), so they all take the same options and environment:
 * `--bucket` (or BUCKET_NAME) with `--endpoint`, `--region`, `--path-style`, `--connections`, or
 * `--dir` for a local directory store (default ./lsvd-data), and `--prefix`.
 */

import { resolve } from "node:path";
import { normalizePrefix } from "../format/keys.ts";
import { DirectoryStore } from "../store/directory.ts";
import { S3Store } from "../store/s3.ts";
import type { ObjectStore } from "../store/store.ts";
import { type OptionSpec, type OptionValues, parseInteger, UsageError } from "./options.ts";

export const STORE_OPTIONS: Record<string, OptionSpec> = {
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
};

export interface StoreSelection {
  store: ObjectStore;
  /** Normalised ("" or ending in one "/"). */
  prefix: string;
  /** False for the local directory store (its check() creates the directory). */
  remote: boolean;
}

/** Builds the store the options select; throws a one-line UsageError when they contradict. */
export function buildStore(values: OptionValues): StoreSelection {
  const str = (k: string) => values[k] as string | undefined;
  if (str("bucket") !== undefined && str("dir") !== undefined) {
    throw new UsageError("Invalid options: give either --bucket or --dir, not both");
  }
  const prefix = normalizePrefix(str("prefix") ?? "");
  if (str("bucket") === undefined) {
    return { store: new DirectoryStore(resolve(str("dir") ?? "lsvd-data")), prefix, remote: false };
  }
  const store = new S3Store({
    bucket: str("bucket")!,
    connections: parseInteger(str("connections")!, "--connections", 1, 4096),
    forcePathStyle: values["path-style"] === true,
    ...(str("endpoint") === undefined ? {} : { endpoint: str("endpoint")! }),
    ...(str("region") === undefined ? {} : { region: str("region")! }),
  });
  return { store, prefix, remote: true };
}
