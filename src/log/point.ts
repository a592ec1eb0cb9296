/**
 * @module
 * A point of a volume's log -- the state after object N -- named the way users name it: an object
 * number (`1234`) or a time (`2026-12-01T17:00:00Z`, RFC 3339). One parser and one resolver, so
 * `serve --at`, `export --at`, `rollback --to` and gc agree on what a point means.
 *
 * A time resolves to the newest object of the gap-free log whose trailer seal time (the writer's
 * wall clock when it sealed the object, trailer version 2) is at or before it. Seal times grow
 * along the log as long as writers' clocks do, so the search is a binary search over trailers:
 * about log2(objects) trailer reads. Objects without a seal time (version-1 trailers, objects
 * written by tools that know only the base format) cannot answer a time: that is said, and an
 * object number works instead.
 */

import type { ObjectStore } from "../store/store.ts";
import { LsvdError } from "../util/errors.ts";
import type { LoggedObject, LogState } from "./log_state.ts";
import { readObjectSummary } from "./object_reader.ts";
import { readSnapshot } from "./snapshots.ts";
import type { SequenceRanges } from "./collected.ts";
import { isSnapshotName } from "../format/keys.ts";
import { pointFloor } from "./parent.ts";

export type Point =
  | { kind: "sequence"; sequence: number; text: string }
  | { kind: "time"; timeMs: number; text: string }
  | { kind: "snapshot"; name: string; text: string };

export interface ResolvedPoint {
  /** The last object of the state: objects 1..sequence make it. */
  sequence: number;
  /** Seal time of that object when known (ms since 1970). */
  sealTimeMs: number | undefined;
  /** For log lines: `object 12 (sealed 2026-12-01T17:00:00.000Z)`. */
  description: string;
}

const RFC3339 = /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}:\d{2})$/;

/**
 * Parses an object number, an RFC 3339 time or a snapshot name (anything else a snapshot may be
 * called; an all-digit name is read as a number); throws LsvdError("invalid") naming `what`.
 */
export function parsePoint(raw: string, what: string): Point {
  const text = raw.trim();
  if (!/^\d/.test(text) && isSnapshotName(text)) return { kind: "snapshot", name: text, text };
  if (/^\d+$/.test(text)) {
    const sequence = Number(text);
    if (!Number.isSafeInteger(sequence) || sequence < 1) {
      throw new LsvdError("invalid", `Invalid ${what}: "${raw}" must be an object number of 1 or more`);
    }
    return { kind: "sequence", sequence, text };
  }
  const timeMs = RFC3339.test(text) ? Date.parse(text.replace(" ", "T")) : NaN;
  if (!Number.isFinite(timeMs)) {
    throw new LsvdError(
      "invalid",
      `Invalid ${what}: "${raw}" is neither an object number, an RFC 3339 time such as 2026-12-01T17:00:00Z, nor a snapshot name`,
    );
  }
  return { kind: "time", timeMs, text };
}

/**
 * Finds the object a point names in the log; throws LsvdError("invalid") past the log. The log may
 * skip numbers garbage collection deleted: a time that falls among deleted objects (whose seal
 * times are gone with them) is refused rather than resolved to a neighbour's state.
 */
export async function resolvePoint(
  store: ObjectStore,
  state: LogState,
  point: Point,
): Promise<ResolvedPoint> {
  const log = state.objects.slice(0, state.gapFreeCount);
  if (log.length === 0 && state.endSequence === 0) {
    throw new LsvdError(
      "invalid",
      `Cannot resolve ${point.text}: there is no volume under prefix "${state.prefix}"`,
    );
  }
  if (point.kind === "snapshot") {
    const snapshot = await readSnapshot(store, state.prefix, point.name);
    return resolvePoint(
      store,
      state,
      { kind: "sequence", sequence: snapshot.sequence, text: point.text },
    );
  }
  if (point.kind === "sequence") {
    if (point.sequence > state.endSequence) {
      const gap = state.objects.length > log.length ? ` (object ${state.endSequence + 1} is missing)` : "";
      throw new LsvdError(
        "invalid",
        `Cannot resolve object ${point.sequence}: the log ends at object ${state.endSequence}${gap}`,
      );
    }
    const floor = pointFloor(state.format);
    if (point.sequence < floor) {
      throw new LsvdError(
        "invalid",
        `Cannot resolve object ${point.sequence}: this clone's points start at object ${floor} (its branch point, or where it was flattened)`,
      );
    }
    const object = log.find((o) => o.sequence === point.sequence);
    const sealTimeMs = object === undefined
      ? undefined
      : await sealTimeOf(store, object).catch(() => undefined);
    return { sequence: point.sequence, sealTimeMs, description: describe(point.sequence, sealTimeMs) };
  }
  if (log.length === 0) {
    throw new LsvdError(
      "invalid",
      `Cannot resolve the time ${point.text}: this clone has written no object of its own yet; give object ${state.endSequence}`,
    );
  }
  return await resolveTime(store, log, point, state.collectedRecord?.collected ?? []);
}

async function resolveTime(
  store: ObjectStore,
  log: readonly LoggedObject[],
  point: { timeMs: number; text: string },
  collected: SequenceRanges,
): Promise<ResolvedPoint> {
  const sealed = async (i: number) => {
    const t = await sealTimeOf(store, log[i]!);
    if (t === undefined) {
      throw new LsvdError(
        "invalid",
        `Cannot resolve the time ${point.text}: object "${
          log[i]!.key
        }" records no seal time (written by lsvd 0.1 or another tool); give an object number instead`,
      );
    }
    return t;
  };
  const first = await sealed(0);
  if (first > point.timeMs) {
    throw new LsvdError(
      "invalid",
      `Cannot resolve the time ${point.text}: the first object was sealed later, at ${iso(first)}`,
    );
  }
  // Invariant: log[lo] was sealed at or before the time; everything after hi was sealed after it.
  let lo = 0, hi = log.length - 1, loTime = first;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    const t = await sealed(mid);
    if (t <= point.timeMs) [lo, loTime] = [mid, t];
    else hi = mid - 1;
  }
  const sequence = log[lo]!.sequence;
  // Objects garbage collection deleted right after it may have been sealed before the time too:
  // the point is then one of them, and which one cannot be known. Refuse rather than guess.
  const next = log[lo + 1]?.sequence ?? sequence + 1;
  if (next > sequence + 1 && collected.some(([a, b]) => a < next && b > sequence)) {
    throw new LsvdError(
      "invalid",
      `Cannot resolve the time ${point.text}: it falls among objects ${sequence + 1}-${
        next - 1
      } that garbage collection deleted (older than the retention window); give a later time or an object number`,
    );
  }
  return { sequence, sealTimeMs: loTime, description: describe(sequence, loTime) };
}

/** The seal time recorded in an object's trailer (undefined without one); data errors name the key. */
export async function sealTimeOf(
  store: ObjectStore,
  o: LoggedObject,
): Promise<number | undefined> {
  const summary = await readObjectSummary(store, o);
  return summary.trailer?.sealTimeMs;
}

function describe(sequence: number, sealTimeMs: number | undefined): string {
  return `object ${sequence}${sealTimeMs === undefined ? "" : ` (sealed ${iso(sealTimeMs)})`}`;
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}
