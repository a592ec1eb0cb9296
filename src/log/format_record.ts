/**
 * @module
 * The format record (`prefix format.json`): a small JSON key beside the log naming the bucket
 * format version a volume uses and the oldest lsvd able to open it. Written when a volume is
 * created (or first opened for writing by this lsvd) and checked on every open, so an older
 * lsvd refuses a volume it cannot read instead of "repairing" it.
 *
 *   { "format": 2, "minimumLsvd": "0.2.0", "writtenBy": "0.2.0", "createdAt": "2026-12-01T…Z" }
 */

import { formatKey } from "../format/keys.ts";
import { isStoreError, type ObjectStore } from "../store/store.ts";
import { LsvdError } from "../util/errors.ts";
import { LSVD_VERSION } from "../version.ts";

/** The bucket format this lsvd writes (trailer version 2, format record, keys beside the log). */
export const FORMAT_VERSION = 2;
/** The oldest lsvd that can open a volume in FORMAT_VERSION. */
export const FORMAT_MINIMUM_LSVD = "0.2.0";

export interface FormatRecord {
  format: number;
  minimumLsvd: string;
  writtenBy: string;
  createdAt: string;
}

export async function readFormatRecord(
  store: ObjectStore,
  prefix: string,
): Promise<FormatRecord | undefined> {
  const key = formatKey(prefix);
  let body: Uint8Array;
  try {
    ({ body } = await store.get(key));
  } catch (e) {
    if (isStoreError(e, "NotFound")) return undefined;
    throw e;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder().decode(body));
  } catch {
    throw new LsvdError("data", `Cannot read the format record "${key}": it is not JSON`);
  }
  const r = parsed as Partial<FormatRecord>;
  if (typeof r.format !== "number" || typeof r.minimumLsvd !== "string") {
    throw new LsvdError("data", `Cannot read the format record "${key}": it lacks "format" or "minimumLsvd"`);
  }
  return {
    format: r.format,
    minimumLsvd: r.minimumLsvd,
    writtenBy: String(r.writtenBy ?? "unknown"),
    createdAt: String(r.createdAt ?? "unknown"),
  };
}

/** Refuses a volume that needs a newer lsvd; never changes the bucket. */
export function checkFormatRecord(record: FormatRecord | undefined, prefix: string): void {
  if (record === undefined) return;
  if (record.format > FORMAT_VERSION || compareVersions(record.minimumLsvd, LSVD_VERSION) > 0) {
    throw new LsvdError(
      "invalid",
      `Cannot open the volume at "${
        formatKey(prefix)
      }": it uses format ${record.format} and needs lsvd ${record.minimumLsvd} or newer (this is ${LSVD_VERSION}); upgrade lsvd`,
    );
  }
}

/** Writes the record unless an identical-format one is there (create-only; a racing writer's copy wins). */
export async function ensureFormatRecord(
  store: ObjectStore,
  prefix: string,
  existing: FormatRecord | undefined,
  nowMs: number,
): Promise<void> {
  if (existing !== undefined && existing.format >= FORMAT_VERSION) return;
  const record: FormatRecord = {
    format: FORMAT_VERSION,
    minimumLsvd: FORMAT_MINIMUM_LSVD,
    writtenBy: LSVD_VERSION,
    createdAt: existing?.createdAt ?? new Date(nowMs).toISOString(),
  };
  const body = new TextEncoder().encode(JSON.stringify(record, null, 2) + "\n");
  if (existing !== undefined) {
    await store.put(formatKey(prefix), body); // upgrading a format-1 volume: this lsvd writes format 2
    return;
  }
  try {
    await store.put(formatKey(prefix), body, { ifNoneMatch: true });
  } catch (e) {
    if (!isStoreError(e, "PreconditionFailed")) throw e;
  }
}

/** Compares dotted versions numerically ("0.10.0" > "0.9.1"). */
export function compareVersions(a: string, b: string): number {
  const pa = a.split(/[.-]/).map((x) => parseInt(x, 10) || 0);
  const pb = b.split(/[.-]/).map((x) => parseInt(x, 10) || 0);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return Math.sign(d);
  }
  return 0;
}
