/**
 * @module
 * The one way a log object is stored: a create-only PUT (If-None-Match: *), so no writer ever
 * overwrites an object another one stored. A 412 means the number is taken -- another writer is
 * using the volume -- and is named the same way wherever it ends a command: LsvdError "fenced"
 * naming the key. The log writer, fence objects, rollback's rescued object and `lsvd import` all
 * store through here (docs/design/fencing.md).
 */

import { isStoreError, type ObjectStore } from "../store/store.ts";
import { LsvdError } from "../util/errors.ts";

export interface LogObjectPut {
  key: string;
  bytes: Uint8Array;
}

/**
 * Stores a log object create-only: true when stored, false when its number is taken. Transient
 * errors are retried by the store (a RetryingStore); anything else propagates.
 */
export async function tryPutLogObject(
  store: ObjectStore,
  put: LogObjectPut,
): Promise<boolean> {
  try {
    await store.put(put.key, put.bytes, { ifNoneMatch: true });
    return true;
  } catch (e) {
    if (isStoreError(e, "PreconditionFailed")) return false;
    throw e;
  }
}

/** Stores a log object create-only; a taken number fails with takenError(). */
export async function putLogObject(store: ObjectStore, put: LogObjectPut): Promise<void> {
  if (!(await tryPutLogObject(store, put))) throw takenError(put.key);
}

/** The error of a writer whose object number another writer took (kind "fenced"). */
export function takenError(key: string): LsvdError {
  return new LsvdError(
    "fenced",
    `Cannot write object "${key}": it already exists; another writer is using this volume`,
  );
}
