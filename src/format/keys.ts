/**
 * @module
 * The one place where bucket keys are built and parsed. Log objects are 16 lower-case hex
 * digits under an optional prefix; everything else lsvd keeps lives beside them under
 * names that can never be mistaken for a log object.
 */

import assert from "node:assert/strict";

const LOG_NAME = /^[0-9a-f]{16}$/;
/** Sequence numbers stay below 2^53 so they are exact JavaScript numbers. */
export const SEQUENCE_MAX = Number.MAX_SAFE_INTEGER;

/** Normalises a user prefix: empty stays empty, anything else ends in exactly one `/`. */
export function normalizePrefix(prefix: string): string {
  const trimmed = prefix.replace(/^\/+/, "").replace(/\/+$/, "");
  return trimmed === "" ? "" : `${trimmed}/`;
}

export function sequenceName(sequence: number): string {
  if (!(Number.isSafeInteger(sequence) && sequence >= 1)) assert.fail(`bad sequence ${sequence}`);
  return sequence.toString(16).padStart(16, "0");
}

export function logKey(prefix: string, sequence: number): string {
  return `${prefix}${sequenceName(sequence)}`;
}

/** The sequence number of a log key under prefix, or undefined when the key is not a log object. */
export function parseLogKey(prefix: string, key: string): number | undefined {
  if (!key.startsWith(prefix)) return undefined;
  const name = key.slice(prefix.length);
  if (!LOG_NAME.test(name)) return undefined;
  const sequence = parseInt(name, 16);
  return Number.isSafeInteger(sequence) && sequence >= 1 ? sequence : undefined;
}

/**
 * Objects found after a gap are moved under `archive/<recovery id>/<name>` so new writes can take
 * their numbers; the recovery id keeps repeated archivals apart.
 */
export function archiveKey(prefix: string, recoveryId: string, sequence: number): string {
  return `${prefix}archive/${recoveryId}/${sequenceName(sequence)}`;
}

/** Map checkpoints: the extent map after applying every object up to and including sequence. */
export function checkpointKey(prefix: string, sequence: number): string {
  return `${prefix}checkpoint/${sequenceName(sequence)}`;
}

export function checkpointPrefix(prefix: string): string {
  return `${prefix}checkpoint/`;
}

export function parseCheckpointKey(prefix: string, key: string): number | undefined {
  return parseLogKey(checkpointPrefix(prefix), key);
}
