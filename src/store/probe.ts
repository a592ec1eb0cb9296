/**
 * @module
 * Proves at start-up that a store stores: a probe object is written under the volume's prefix,
 * listed, read back whole and in part byte for byte, and deleted. A bucket check (HEAD) passes on
 * anything that answers 200; an endpoint that is not S3, a proxy that swallows writes or a store
 * that serves stale bytes fails here, with one line, before lsvd says the device is operational
 * and acknowledges a single write.
 */

import { normalizePrefix, probeKey } from "../format/keys.ts";
import { systemClock } from "../util/clock.ts";
import { retrying, type RetryPolicy } from "./retry.ts";
import { type ObjectStore, StoreError } from "./store.ts";

export interface ProbeOptions {
  /** Read-only serving may lack write permission: then only the listing is checked. */
  readOnly?: boolean;
  /** Retries per step; default three attempts, so a passing hiccup does not stop a start. */
  retry?: RetryPolicy;
}

const PROBE_BYTES = 8192;
/** A part read back by range, so a store that ignores Range headers is caught too. */
const PROBE_RANGE = { offsetBytes: 1000, lengthBytes: 3000 };

/** Resolves when the store works under prefix; throws a Fatal StoreError with one line otherwise. */
export async function probeStore(
  store: ObjectStore,
  prefix: string,
  options: ProbeOptions = {},
): Promise<void> {
  const retried = retrying(store, options.retry ?? { clock: systemClock, attemptsMax: 3 });
  const normalized = normalizePrefix(prefix);
  try {
    if (options.readOnly === true) {
      await retried.list({ prefix: normalized, maxKeys: 1 });
    } else await writeReadDelete(retried, probeKey(normalized, crypto.randomUUID()));
  } catch (error) {
    const cause = error instanceof Error ? error.message : String(error);
    throw new StoreError("Fatal", `Cannot use ${store.description} for the volume: ${firstLower(cause)}`, {
      cause: error,
    });
  }
}

async function writeReadDelete(store: ObjectStore, key: string): Promise<void> {
  const body = crypto.getRandomValues(new Uint8Array(PROBE_BYTES));
  await store.put(key, body, { ifNoneMatch: true });
  let verified = false;
  try {
    await verify(store, key, body);
    verified = true;
  } finally {
    // After a failed check the check's error says more than a failed delete would.
    if (!verified) await store.delete(key).catch(() => {});
  }
  await store.delete(key);
}

async function verify(store: ObjectStore, key: string, body: Uint8Array): Promise<void> {
  const page = await store.list({ prefix: key, maxKeys: 10 });
  const listed = page.objects.find((o) => o.key === key);
  if (listed === undefined) throw new Error(`the probe object "${key}" was written but is not listed`);
  if (listed.sizeBytes !== body.length) {
    throw new Error(`the probe object "${key}" is listed with ${listed.sizeBytes} bytes, not ${body.length}`);
  }
  const whole = await store.get(key);
  if (!sameBytes(whole.body, body) || whole.totalSizeBytes !== body.length) {
    throw new Error(`the probe object "${key}" reads back different bytes than were written`);
  }
  const part = await store.get(key, PROBE_RANGE);
  const expected = body.subarray(PROBE_RANGE.offsetBytes, PROBE_RANGE.offsetBytes + PROBE_RANGE.lengthBytes);
  if (!sameBytes(part.body, expected) || part.totalSizeBytes !== body.length) {
    throw new Error(`a byte range of the probe object "${key}" reads back different bytes than were written`);
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function firstLower(text: string): string {
  return text.charAt(0).toLowerCase() + text.slice(1);
}
