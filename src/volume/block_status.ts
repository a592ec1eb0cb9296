/**
 * @module
 * BLOCK_STATUS answers: which runs of the disk hold data and which read as zeros (never
 * written, trimmed or zeroed), from the extent map with the open object laid over it.
 */

import { SECTOR_BYTES } from "../util/constants.ts";
import type { AllocationExtent } from "./block_device.ts";
import type { ExtentMap } from "../map/extent_map.ts";
import type { OpenObject } from "./open_object.ts";

/** Extents reported at most per answer: a huge fragmented range gets a prefix, as NBD allows. */
const EXTENTS_PER_ANSWER_MAX = 4096;

type Run = [number, number];

export function blockStatus(
  map: ExtentMap,
  open: OpenObject | undefined,
  offsetBytes: number,
  lengthBytes: number,
): AllocationExtent[] {
  const a = offsetBytes / SECTOR_BYTES, b = a + lengthBytes / SECTOR_BYTES;
  let data: Run[] = [];
  let end = b;
  map.lookup(a, b - a, (e) => {
    if (data.length >= EXTENTS_PER_ANSWER_MAX) {
      end = Math.min(end, e.startSector); // report a prefix rather than build a huge answer
      return;
    }
    if (e.startSector < end) data.push([e.startSector, e.startSector + e.lengthSectors]);
  });
  if (open !== undefined && !open.isEmpty) {
    const o = open.overlay(a, end);
    data = unionRuns(subtractRuns(data, o.zero), o.data.map((s) => [s, s + 1] as Run));
  }
  return toAllocation(data, a, end);
}

function subtractRuns(runs: Run[], cut: Run[]): Run[] {
  let out = runs;
  for (const [ca, cb] of cut) {
    const next: Run[] = [];
    for (const [s, e] of out) {
      if (e <= ca || s >= cb) next.push([s, e]);
      else {
        if (s < ca) next.push([s, ca]);
        if (e > cb) next.push([cb, e]);
      }
    }
    out = next;
  }
  return out;
}

function unionRuns(a: Run[], b: Run[]): Run[] {
  const all = [...a, ...b].sort((x, y) => x[0] - y[0]);
  const out: Run[] = [];
  for (const [s, e] of all) {
    const last = out.at(-1);
    if (last && s <= last[1]) last[1] = Math.max(last[1], e);
    else out.push([s, e]);
  }
  return out;
}

function toAllocation(data: Run[], a: number, end: number): AllocationExtent[] {
  const out: AllocationExtent[] = [];
  const push = (lengthSectors: number, zero: boolean) => {
    if (lengthSectors <= 0) return;
    const last = out.at(-1);
    if (last && last.zero === zero) last.lengthBytes += lengthSectors * SECTOR_BYTES;
    else out.push({ lengthBytes: lengthSectors * SECTOR_BYTES, zero });
  };
  let at = a;
  for (const [s, e] of data) {
    push(s - at, true);
    push(e - s, false);
    at = e;
  }
  push(end - at, true);
  return out;
}
