/**
 * @module
 * The one place that turns an internal error into an NBD error value (nbdkit's `nbd_errno()`).
 * A failed command gets this errno and the connection goes on; a broken invariant
 * (AssertionError) is never mapped: it is rethrown so the daemon crashes loudly.
 */

import { AssertionError } from "../util/assert.ts";
import { isStoreError } from "../store/store.ts";
import { type ErrorKind, LsvdError } from "../util/errors.ts";
import { EINVAL, EIO, ENOMEM, ENOSPC, ENOTSUP, EOVERFLOW, EPERM, ESHUTDOWN } from "./protocol.ts";

/** errno-style codes an error may carry in a `code` property, and the NBD value each maps to. */
const CODE_TO_ERRNO: Readonly<Record<string, number>> = {
  EPERM,
  EACCES: EPERM,
  EROFS: EPERM,
  EIO,
  ENOMEM,
  EINVAL,
  ENOSPC,
  EDQUOT: ENOSPC,
  EFBIG: ENOSPC,
  EOVERFLOW,
  ENOTSUP,
  EOPNOTSUPP: ENOTSUP,
  ESHUTDOWN,
};

/** What each LsvdError kind tells a client. */
const KIND_TO_ERRNO: Readonly<Record<ErrorKind, number>> = {
  invalid: EINVAL,
  unavailable: EIO,
  data: EIO,
  fenced: EIO,
  closed: ESHUTDOWN,
};

/**
 * Maps an error thrown by the device to an NBD errno: LsvdError by its kind, StoreError and anything unknown -> EIO,
 * RangeError -> EINVAL, Deno.errors.PermissionDenied / read-only -> EPERM, out of space -> ENOSPC,
 * and any error whose `code` names one of the errno values above -> that value.
 * Rethrows AssertionError: an invariant broke inside, which must crash, not become EIO.
 */
export function nbdErrno(e: unknown): number {
  if (e instanceof AssertionError) throw e;
  if (e instanceof LsvdError) return KIND_TO_ERRNO[e.kind];
  if (isStoreError(e)) return EIO;
  const code = e instanceof Error ? (e as { code?: unknown }).code : undefined;
  if (typeof code === "string" && Object.hasOwn(CODE_TO_ERRNO, code)) return CODE_TO_ERRNO[code] ?? EIO;
  if (e instanceof RangeError) return EINVAL;
  if (e instanceof Deno.errors.PermissionDenied || e instanceof Deno.errors.NotCapable) return EPERM;
  if (e instanceof Deno.errors.NotSupported) return ENOTSUP;
  return EIO;
}

/** An error carrying an errno code, for devices that want a specific NBD answer. */
export class DeviceError extends Error {
  readonly code: string;
  constructor(code: keyof typeof CODE_TO_ERRNO | string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "DeviceError";
    this.code = code;
  }
}

/** True for an error that must crash the daemon rather than become an errno. */
export function isInvariantFailure(e: unknown): boolean {
  return e instanceof AssertionError;
}
