/**
 * @module
 * Proves at start that the store honours the two conditional writes fencing rests on
 * (docs/design/fencing.md): `If-None-Match: *` (create-only log objects, epochs, fence objects) and
 * `If-Match` (lease renewal and takeover). Some S3-compatible servers accept both headers and
 * ignore them (s3rver, some cheap providers); on such a store two daemons can fork the log and lose
 * acknowledged writes, so lsvd refuses it unless the user says `--no-fencing`.
 *
 * The probe writes one key under `probe/` (keys.ts), overwrites it only as the conditions allow,
 * and deletes it.
 */

import { probeKey } from "../format/keys.ts";
import { isStoreError, type ObjectStore, StoreError } from "./store.ts";

/** Why the store cannot fence writers, or undefined when it honours both conditions. */
export async function probeConditionalWrites(
  store: ObjectStore,
  prefix: string,
): Promise<string | undefined> {
  const nonce = crypto.randomUUID();
  const key = probeKey(prefix, nonce);
  const body = (step: number) =>
    new TextEncoder().encode(`lsvd conditional-write probe ${nonce} step ${step}\n`);
  try {
    const created = await store.put(key, body(1), { ifNoneMatch: true });
    if (await succeeds(store.put(key, body(2), { ifNoneMatch: true }))) {
      return "it ignores If-None-Match (a create-only write replaced an existing key)";
    }
    const wrongEtag = (await store.put(`${key}-other`, body(3))).etag;
    if (wrongEtag === created.etag) return "it gives different objects the same ETag";
    if (await succeeds(store.put(key, body(4), { ifMatch: wrongEtag }))) {
      return "it ignores If-Match (a write conditional on another ETag replaced the key)";
    }
    if (!(await succeeds(store.put(key, body(5), { ifMatch: created.etag })))) {
      return "it refuses If-Match with the key's current ETag";
    }
    return undefined;
  } finally {
    await store.delete(key).catch(() => {});
    await store.delete(`${key}-other`).catch(() => {});
  }
}

/** True when the conditional write succeeded, false on PreconditionFailed; rethrows anything else. */
async function succeeds(put: Promise<unknown>): Promise<boolean> {
  try {
    await put;
    return true;
  } catch (e) {
    if (isStoreError(e, "PreconditionFailed")) return false;
    throw e;
  }
}

/**
 * Throws one Fatal line when the store cannot fence writers. `what is lost` is said here once; the
 * README repeats it for `--no-fencing`.
 */
export async function requireConditionalWrites(store: ObjectStore, prefix: string): Promise<void> {
  const why = await probeConditionalWrites(store, prefix);
  if (why === undefined) return;
  throw new StoreError(
    "Fatal",
    `Cannot guarantee a single writer on ${store.description}: ${why}; ` +
      "run with --no-fencing to use it anyway, without protection against a second daemon forking the log " +
      "and losing acknowledged writes",
  );
}
