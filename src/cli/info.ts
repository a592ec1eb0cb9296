/**
 * @module
 * `lsvd info [--json]`: what a volume's bucket holds, read without changing anything: size,
 * objects and their bytes, the first and last object with their seal times, gaps, writer epochs,
 * checkpoints, archived objects, how much of the disk holds data, and the format record.
 * The figures are gathered into one VolumeInfo object; the text and --json views both print it,
 * so a new figure (lease, snapshots, live and dead bytes) is one field and one line.
 */

import { crcCoverage } from "../log/coverage.ts";
import { type Lease, leaseBroken, leaseLapsed, readLease } from "../log/lease.ts";
import type { FormatRecord, ParentLink } from "../log/format_record.ts";
import { readSnapshots } from "../log/snapshots.ts";
import { loadLog } from "../log/load.ts";
import { coversAll } from "../log/collected.ts";
import type { LoggedObject, LogState } from "../log/log_state.ts";
import { readObjectSummary } from "../log/object_reader.ts";
import type { ObjectStore } from "../store/store.ts";
import { SECTOR_BYTES } from "../util/constants.ts";
import { type Logger, stderrLogger } from "../util/log.ts";
import { flagOption, UsageError } from "./options.ts";
import { listVolume, parseTool, retriedSelection, TOOL_LOAD_CONCURRENCY, where } from "./tool_support.ts";

export interface ObjectRef {
  sequence: number;
  key: string;
  sizeBytes: number;
  /** RFC 3339, from the trailer (null when the object records none). */
  sealedAt: string | null;
  writerEpoch: number | null;
}

export interface VolumeInfo {
  location: string;
  prefix: string;
  format: FormatRecord | null;
  /** From the newest trailer of the log (null when no object records one). */
  sizeBytes: number | null;
  /** Bytes of the disk that hold data now: the union of the mapped extents. */
  writtenBytes: number;
  objects: { count: number; bytes: number; first: ObjectRef | null; last: ObjectRef | null };
  /** Objects 1..gapFreeCount make the disk; the rest lie after a gap and are ignored until repaired. */
  gapFreeCount: number;
  gaps: { from: number; to: number }[];
  /** Epochs claimed (epoch/ keys) and recorded in the first and last trailers, ascending. */
  writerEpochs: number[];
  checkpoints: number[];
  archived: { count: number; bytes: number };
  snapshots: string[];
  /** Bytes the map reads from objects with per-sector CRC tables (checked on every read) and without. */
  verification: {
    verifiableBytes: number;
    unverifiableBytes: number;
    objectsWithoutTables: number;
    /** Keys whose trailer could not be read (run `lsvd verify`). */
    damagedObjects: string[];
  };
  /** Bytes of the log objects the current disk reads (live) and the rest: headers, trailers and
   *  data only past points need or nothing needs (what garbage collection can reclaim). */
  garbage: {
    liveBytes: number;
    deadBytes: number;
    /** Objects garbage collection deleted, and the oldest point it keeps (null: never ran). */
    collectedObjects: number;
    retainedFromSequence: number | null;
  };
  /** The writer lease (docs/design/fencing.md): null when no writer ever took one. */
  lease: LeaseInfo | null;
  /** A clone's parent: where, the point, and the bytes the disk still reads from it (null: not a clone). */
  parent: (ParentLink & { readsBytes: number }) | null;
  /** Clones that read this volume (their pins), ascending by point. */
  clones: { prefix: string; bucket?: string; sequence: number; through: number; pin: string }[];
}

export interface LeaseInfo {
  host: string;
  pid: number;
  epoch: number;
  /** RFC 3339 wall-clock times from the lease itself (the holder's clock). */
  acquiredAt: string;
  renewedAt: string;
  expiresAt: string;
  /** held: renewed in time; lapsed: not renewed in time (or broken), the holder may be dead;
   *  released: its holder shut down cleanly. */
  state: "held" | "lapsed" | "released";
  /** Lapsed because `lsvd lease break` broke it (its renewal time then reads 1970). */
  broken: boolean;
  /** The write-back journal its holder acknowledged from, while it may hold writes not in the store. */
  journal: { host: string; dir: string } | null;
}

const OPTIONS = {
  json: flagOption({ help: "Print one JSON object (for scripts) instead of text" }),
};

const SUMMARY = "Describes the volume from its bucket (or directory) without changing anything.";

export async function infoCommand(args: string[], log: Logger = stderrLogger): Promise<number> {
  const parsed = parseTool(args, { command: "info", usage: "[options]", summary: SUMMARY, options: OPTIONS });
  if (parsed.help) return 0;
  if (parsed.positionals.length > 0) throw new UsageError(`Unexpected argument "${parsed.positionals[0]}"`);
  const selection = retriedSelection(parsed.selection, log);
  const state = await listVolume(selection, { mustExist: true });
  const info = await collectInfo(selection.store, state, {
    log,
    location: where(selection),
  });
  console.log(parsed.values.json ? JSON.stringify(info, null, 2) : renderInfo(info));
  return 0;
}

export async function collectInfo(
  store: ObjectStore,
  state: LogState,
  options: { log: Logger; location: string },
): Promise<VolumeInfo> {
  const loaded = await loadLog(store, state, {
    concurrency: TOOL_LOAD_CONCURRENCY,
    log: options.log,
  });
  let writtenSectors = 0;
  for (const run of loaded.map.runs()) for (let i = 1; i < run.length; i += 4) writtenSectors += run[i]!;
  const log = state.objects;
  const [first, last, coverage, stored] = await Promise.all([
    refOf(store, log[0]),
    refOf(store, log.at(-1)),
    crcCoverage(store, { map: loaded.map, objects: log, concurrency: 32 }),
    readLease(store, state.prefix),
  ]);
  const epochs = new Set(state.epochs);
  for (const r of [first, last]) if (r?.writerEpoch) epochs.add(r.writerEpoch);
  if (loaded.writerEpoch > 0) epochs.add(loaded.writerEpoch);
  return {
    location: options.location,
    prefix: state.prefix,
    format: state.format ?? null,
    sizeBytes: loaded.volumeSizeBytes ?? null,
    writtenBytes: writtenSectors * SECTOR_BYTES,
    objects: { count: log.length, bytes: log.reduce((n, o) => n + o.sizeBytes, 0), first, last },
    gapFreeCount: state.gapFreeCount,
    // Numbers garbage collection deleted are not gaps.
    gaps: gapsOf(log, (state.format?.parent?.through ?? 0) + 1).filter((g) =>
      !coversAll(state.collectedRecord?.collected ?? [], g.from, g.to)
    ),
    writerEpochs: [...epochs].sort((a, b) => a - b),
    checkpoints: state.checkpoints.map((c) => c.sequence),
    archived: state.archived,
    snapshots: state.snapshots.map((s) => s.name),
    garbage: {
      liveBytes: writtenSectors * SECTOR_BYTES,
      deadBytes: log.reduce((n, o) => n + o.sizeBytes, 0) - writtenSectors * SECTOR_BYTES,
      collectedObjects: (state.collectedRecord?.collected ?? []).reduce((n, [a, b]) => n + b - a + 1, 0),
      retainedFromSequence: state.collectedRecord?.retainedFromSequence ?? null,
    },
    verification: {
      verifiableBytes: coverage.verifiableBytes,
      unverifiableBytes: coverage.unverifiableBytes,
      objectsWithoutTables: coverage.objectsWithoutTables,
      damagedObjects: coverage.damaged.map((d) => d.key),
    },
    lease: stored === undefined ? null : leaseInfo(stored.lease, Date.now()),
    parent: state.format?.parent === undefined
      ? null
      : { ...state.format.parent, readsBytes: loaded.lineage.bytesFromAncestors(loaded.map) },
    clones: (await readSnapshots(store, state)).flatMap((p) =>
      p.clone === undefined ? [] : [{
        prefix: p.clone.prefix,
        ...(p.clone.bucket === undefined ? {} : { bucket: p.clone.bucket }),
        sequence: p.sequence,
        through: p.clone.through,
        pin: p.name,
      }]
    ),
  };
}

/** How a line names a volume by its prefix (the empty prefix included). */
export function prefixName(prefix: string): string {
  return prefix === "" ? "the volume without prefix" : `"${prefix}"`;
}

function parentText(p: VolumeInfo["parent"]): string {
  if (p === null) return "none (not a clone)";
  const bucket = p.bucket === undefined ? "" : ` in bucket "${p.bucket}"`;
  const point = `clone of ${
    prefixName(p.prefix)
  }${bucket} at object ${p.sequence} (its objects up to ${p.through})`;
  if (p.flattenedThrough !== undefined) {
    return `${point}; flattened at object ${p.flattenedThrough}, reads nothing of it`;
  }
  return `${point}; still reads ${bytesText(p.readsBytes)} from it`;
}

function clonesText(c: VolumeInfo["clones"]): string {
  if (c.length === 0) return "none";
  return c.map((x) =>
    `"${x.prefix}"${
      x.bucket === undefined ? "" : ` in bucket "${x.bucket}"`
    } at object ${x.sequence} (pin ${x.pin})`
  ).join(", ");
}

export function leaseInfo(lease: Lease, wallNowMs: number): LeaseInfo {
  const at = (ms: number) => new Date(ms).toISOString();
  return {
    host: lease.holder.host,
    pid: lease.holder.pid,
    epoch: lease.epoch,
    acquiredAt: at(lease.acquiredAtMs),
    renewedAt: at(lease.renewedAtMs),
    expiresAt: at(lease.renewedAtMs + lease.durationMs),
    state: lease.released ? "released" : leaseLapsed(lease, wallNowMs) ? "lapsed" : "held",
    broken: leaseBroken(lease),
    journal: lease.journal === undefined ? null : { host: lease.journal.host, dir: lease.journal.dir },
  };
}

async function refOf(
  store: ObjectStore,
  o: LoggedObject | undefined,
): Promise<ObjectRef | null> {
  if (o === undefined) return null;
  const { trailer } = await readObjectSummary(store, o);
  const sealTimeMs = trailer?.sealTimeMs;
  return {
    sequence: o.sequence,
    key: o.key,
    sizeBytes: o.sizeBytes,
    sealedAt: sealTimeMs === undefined ? null : new Date(sealTimeMs).toISOString(),
    writerEpoch: trailer?.writerEpoch ?? null,
  };
}

/** Missing numbers between `first` (a clone's: above its parent's) and the highest object, as inclusive ranges. */
export function gapsOf(objects: readonly LoggedObject[], first = 1): { from: number; to: number }[] {
  const gaps: { from: number; to: number }[] = [];
  let expected = first;
  for (const o of objects) {
    if (o.sequence > expected) gaps.push({ from: expected, to: o.sequence - 1 });
    expected = o.sequence + 1;
  }
  return gaps;
}

export function renderInfo(i: VolumeInfo): string {
  const rows: [string, string][] = [
    ["Volume", i.location],
    ["Format", formatLine(i.format)],
    ["Encryption", encryptionLine(i.format)],
    ["Size", i.sizeBytes === null ? "not recorded" : bytesText(i.sizeBytes)],
    ["Written", `${bytesText(i.writtenBytes)} of the disk hold data`],
    ["Objects", `${i.objects.count} (${bytesText(i.objects.bytes)})`],
    ["First object", refText(i.objects.first)],
    ["Last object", refText(i.objects.last)],
    ["Gaps", gapsText(i)],
    ["Lease", leaseText(i.lease)],
    ["Writer epochs", i.writerEpochs.length === 0 ? "none recorded" : i.writerEpochs.join(", ")],
    [
      "Checkpoints",
      i.checkpoints.length === 0 ? "none" : i.checkpoints.map((c) => `after object ${c}`).join(", "),
    ],
    ["Archived", `${i.archived.count} objects (${bytesText(i.archived.bytes)})`],
    ["Snapshots", i.snapshots.length === 0 ? "none" : i.snapshots.join(", ")],
    ["Parent", parentText(i.parent)],
    ["Clones", clonesText(i.clones)],
    ["Live / dead", garbageText(i.garbage)],
    ["Verifiable", verifiableText(i.verification)],
  ];
  return rows.map(([k, v]) => `${(k + ":").padEnd(15)}${v}`).join("\n");
}

function garbageText(g: VolumeInfo["garbage"]): string {
  const collected = g.retainedFromSequence === null
    ? "garbage collection never ran"
    : `garbage collection deleted ${g.collectedObjects} objects and keeps points from object ${g.retainedFromSequence} on`;
  return `${bytesText(g.liveBytes)} live, ${
    bytesText(g.deadBytes)
  } dead or needed only by past points; ${collected}`;
}

function verifiableText(v: VolumeInfo["verification"]): string {
  const total = v.verifiableBytes + v.unverifiableBytes;
  const share = total === 0 ? "" : ` (${(100 * v.verifiableBytes / total).toFixed(1)}%)`;
  let text = `${
    bytesText(v.verifiableBytes)
  } of the data is checked by per-sector CRCs on every read${share}`;
  if (v.unverifiableBytes > 0) {
    text += `; ${
      bytesText(v.unverifiableBytes)
    } in ${v.objectsWithoutTables} objects without CRCs (older lsvd or other writers) is served unchecked`;
  }
  if (v.damagedObjects.length > 0) {
    text += `; ${v.damagedObjects.length} objects have damaged trailers (run 'lsvd verify'): ${
      v.damagedObjects.slice(0, 3).join(", ")
    }`;
  }
  return text;
}

function leaseText(l: LeaseInfo | null): string {
  if (l === null) return "none (no writer has taken one)";
  const who = `host ${l.host} pid ${l.pid}, epoch ${l.epoch}, since ${l.acquiredAt}`;
  const journal = l.journal === null
    ? ""
    : `; journal ${l.journal.dir} on host ${l.journal.host} may hold acknowledged writes not yet stored ` +
      "(a start without it is refused unless --abandon-journal)";
  if (l.state === "released") return `released by ${who} (shut down cleanly)${journal}`;
  if (l.broken) {
    return `lapsed (broken by 'lsvd lease break'): ${who} (a new writer takes it without --takeover)${journal}`;
  }
  if (l.state === "lapsed") {
    return `lapsed at ${l.expiresAt}: ${who} (not renewed; a new writer takes it without --takeover)${journal}`;
  }
  return `held by ${who}; renewed ${l.renewedAt}, expires ${l.expiresAt} unless renewed${journal}`;
}

function formatLine(f: FormatRecord | null): string {
  if (f === null) return "no format record (written by lsvd 0.1 or another tool)";
  return `${f.format} (opens with lsvd ${f.minimumLsvd} or newer; written by lsvd ${f.writtenBy}, created ${f.createdAt})`;
}

/** Algorithm and key fingerprint (never the key: the record holds none). */
function encryptionLine(f: FormatRecord | null): string {
  const e = f?.encryption;
  if (e === undefined) return "none (data is stored in the clear)";
  return `${e.algorithm} per 4 KiB sector, key fingerprint ${e.fingerprint} (${e.kdf}, salt ${e.salt})`;
}

function refText(r: ObjectRef | null): string {
  if (r === null) return "none";
  const sealed = r.sealedAt === null ? "no seal time recorded" : `sealed ${r.sealedAt}`;
  const epoch = r.writerEpoch === null ? "" : `, writer epoch ${r.writerEpoch}`;
  return `${r.sequence} (${r.key}, ${bytesText(r.sizeBytes)}, ${sealed}${epoch})`;
}

function gapsText(i: VolumeInfo): string {
  if (i.gaps.length === 0) return "none";
  const ranges = i.gaps.map((g) => g.from === g.to ? `${g.from}` : `${g.from}-${g.to}`).join(", ");
  const after = i.objects.count - i.gapFreeCount;
  return `objects ${ranges} missing; the disk is objects 1-${i.gapFreeCount}, ${after} objects after the first gap are ignored`;
}

export function bytesText(bytes: number): string {
  const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
  let v = bytes, u = 0;
  while (v >= 1024 && u < units.length - 1) [v, u] = [v / 1024, u + 1];
  return u === 0 ? `${bytes} bytes` : `${v.toFixed(1)} ${units[u]} (${bytes} bytes)`;
}
