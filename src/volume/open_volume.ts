/**
 * @module
 * Opening a volume, as named steps: check what a glance settles (before the lease) -> scan the journal ->
 * acquire the lease -> load the log -> fence the previous writer and take over -> adopt the journal ->
 * repair -> settle the size. Each step leaves the bucket as it found it when it refuses; the result is
 * the built parts the Volume facade (volume.ts) is made from, with `giveBack` for the lease and journal
 * lock when what follows fails. The facade then records the size, starts the journal and schedules GC.
 */

import { SECTOR_BYTES } from "../util/constants.ts";
import type { SectorCipher } from "../crypto/sector_cipher.ts";
import { type CipherFor, lineageCiphers, resolveEncryption } from "../log/volume_encryption.ts";
import { LsvdError } from "../util/errors.ts";
import { type AcquiredLease, acquireLease, claimEpoch, fencedError, LeaseKeeper } from "../log/lease.ts";
import { closeWindow, readWriterEpoch } from "../log/fence.ts";
import { logKey } from "../format/keys.ts";
import type { LogState } from "../log/log_state.ts";
import { Progress, stderrTerminal } from "../util/progress.ts";
import { listLogState, volumeExists } from "../log/log_state.ts";
import { type LoadedLog, loadLog } from "../log/load.ts";
import { repairLog } from "../log/repair.ts";
import { peekVolume, recordedSizeBytes, type VolumePeek } from "../log/recorded_size.ts";
import { type ExtentMap } from "../map/extent_map.ts";
import { isLsvdError } from "../util/errors.ts";
import { isStoreError, type ObjectStore } from "../store/store.ts";
import type { ScannedJournal } from "../journal/journal_replay.ts";
import { adoptJournal, prepareJournal } from "./journal_start.ts";
import { WarmLog } from "./warm_standby.ts";
import { type ResolvedVolumeOptions, volumeStore } from "./volume_options.ts";
import type { RetryingStore } from "../store/retry.ts";

/** A scanned journal with its id (what prepareJournal returns). */
type PreparedJournal = ScannedJournal & { id: string };

/** Where the lease keeper reports to; the facade sets these once it is built (no-ops until then). */
export interface LeaseEvents {
  onLost?: (error: Error) => void;
  onRenewed?: () => void;
}

/** What opening built: the parts a Volume is made of. */
export interface OpenedVolume {
  o: ResolvedVolumeOptions;
  /** o.store retried until a signal stops the start (the steps after opening use it too). */
  store: RetryingStore;
  state: LogState;
  loaded: LoadedLog;
  sizeBytes: number;
  epoch: number;
  keeper: LeaseKeeper | undefined;
  leaseEvents: LeaseEvents;
  scanned: ScannedJournal | undefined;
  /** An encrypted volume's data key (undefined for a plain volume). */
  cipher: SectorCipher | undefined;
  /** The data key of each log object it reads (a clone's ancestors have their own); undefined: plain. */
  cipherFor: CipherFor | undefined;
  /** Gives the lease and the journal lock back after a later step failed (the log was written). */
  giveBack(): Promise<void>;
}

/**
 * Opens the log of a volume for serving; throws LsvdError with a user-facing message. A writer first
 * takes the lease and, unless the previous writer released it cleanly, fences that writer
 * (docs/design/fencing.md) before it replays or archives anything.
 */
export async function openVolumeLog(given: ResolvedVolumeOptions): Promise<OpenedVolume> {
  const stopped = () =>
    given.stopRequested()
      ? new LsvdError("closed", "Recovery stopped: a signal asked lsvd to stop")
      : undefined;
  // Every store call of opening waits out an outage until a signal stops it.
  const store = volumeStore(given, stopped);
  const o = { ...given, store };
  const cipher = await checkBeforeLease(o);
  const scanned = await scanJournal(o);
  const warm = await warmStandby(o, stopped);
  const acquired = await takeLease(o, scanned, warm).catch(async (e) => {
    await warm?.release();
    throw e;
  });
  const leaseEvents: LeaseEvents = {};
  const keeper = acquired === undefined ? undefined : new LeaseKeeper(o.store, o.prefix, acquired, {
    clock: o.clock,
    log: o.log,
    onLost: (e) => leaseEvents.onLost?.(e),
    onRenewed: () => leaseEvents.onRenewed?.(),
  });
  const giveBack = async (wroteLog: boolean) => {
    await o.journal?.files.unlock();
    if (keeper !== undefined) await (wroteLog ? keeper.lapse() : keeper.release()).catch(() => keeper.stop());
  };
  const progress = { wroteLog: false }; // from the fence on, giving the lease back must not skip the next fence
  try {
    const opened = await recover(o, { stopped, scanned, acquired, keeper, progress, warm });
    // Each ancestor of an encrypted clone: its own salt, its fingerprint checked (one line naming it).
    const cipherFor = lineageCiphers(opened.loaded.lineage, cipher, o.encryptionKey);
    const giveBackNow = () => giveBack(progress.wroteLog);
    return {
      ...opened,
      o: given,
      store,
      keeper,
      leaseEvents,
      scanned,
      cipher,
      cipherFor,
      giveBack: giveBackNow,
    };
  } catch (e) {
    await giveBack(progress.wroteLog);
    throw e;
  } finally {
    await warm?.release();
  }
}

/**
 * Refusals made before the lease: a refused shrink, a start that cannot succeed, or a missing or
 * wrong encryption key leaves the bucket as it was. Returns the volume's data key (a new encrypted
 * volume's format record is written here, before anything else).
 */
async function checkBeforeLease(
  o: ResolvedVolumeOptions,
): Promise<SectorCipher | undefined> {
  if (!o.readOnly && o.sizeBytes !== undefined && !o.allowShrink) {
    const recorded = await recordedSizeBytes(o.store, o.prefix);
    if (recorded !== undefined && o.sizeBytes < recorded) throw shrinkRefused(o, recorded, o.sizeBytes);
  }
  // A writer without --size on a prefix without a log writes nothing. One glance serves both
  // checks, and the caller's, if it took one, serves them all.
  const peek = !o.readOnly && o.sizeBytes === undefined ? await refuseBeforeWriting(o) : o.peek;
  const cipher = await resolveEncryption(o.store, o.prefix, {
    secret: o.encryptionKey,
    create: !o.readOnly && o.sizeBytes !== undefined,
    nowMs: o.clock.wallMs(),
    peek,
  });
  if (cipher !== undefined) o.log(`The volume is encrypted (AES-256-GCM through ${cipher.engine}).`);
  return cipher;
}

/** Before the store is touched: a journal in use or damaged, or another volume's, leaves the bucket as it was. */
async function scanJournal(o: ResolvedVolumeOptions): Promise<PreparedJournal | undefined> {
  if (o.journal === undefined) return undefined;
  // Another volume's journal is refused there, before its id goes into this volume's lease.
  return await prepareJournal(o.journal, {
    log: o.log,
    volume: { store: o.store.description, prefix: o.prefix },
  });
}

/**
 * A standby (without a journal) loads the log before it waits and follows it while it does, so the
 * takeover starts warm (src/volume/warm_standby.ts). Loading never modifies the bucket.
 */
async function warmStandby(
  o: ResolvedVolumeOptions,
  stopped: () => LsvdError | undefined,
): Promise<WarmLog | undefined> {
  if (o.readOnly || !o.fencing || o.leaseMode !== "standby" || o.journal !== undefined) return undefined;
  o.log(`Loading the log to follow it while standing by (${o.store.description}).`);
  return await WarmLog.start(o, await loadVolume(o, stopped));
}

/** A writer with fencing takes the lease, naming the journal it adopts; the journal lock goes back if it fails. */
async function takeLease(
  o: ResolvedVolumeOptions,
  scanned: PreparedJournal | undefined,
  warm: WarmLog | undefined,
): Promise<AcquiredLease | undefined> {
  if (o.readOnly || !o.fencing) return undefined;
  return await acquireLease(o.store, o.prefix, {
    clock: o.clock,
    log: o.log,
    mode: o.leaseMode,
    durationMs: o.leaseDurationMs,
    windowObjects: o.uploadsMax,
    ...(o.leaseHolder === undefined ? {} : { holder: o.leaseHolder }),
    // Recorded before anything is acknowledged from the journal, so there is no moment when
    // acknowledged writes exist only there and the bucket does not say so.
    ...(scanned === undefined ? {} : { journal: { dir: o.journal!.files.description, id: scanned.id } }),
    abandonJournal: o.abandonJournal,
    ...(warm === undefined ? {} : { whileWaiting: () => warm.follow() }),
  }).catch(async (e) => {
    await o.journal?.files.unlock();
    throw e;
  });
}

/** What recover needs from the steps before it. */
interface RecoverInputs {
  stopped: () => LsvdError | undefined;
  scanned: ScannedJournal | undefined;
  acquired: AcquiredLease | undefined;
  keeper: LeaseKeeper | undefined;
  progress: { wroteLog: boolean };
  /** A standby's log, followed while it waited (used unless it cannot be trusted). */
  warm: WarmLog | undefined;
}

/** Load -> fence/take over -> adopt the journal -> repair; returns the loaded log, its size and our epoch. */
async function recover(
  o: ResolvedVolumeOptions,
  r: RecoverInputs,
): Promise<{ state: LogState; loaded: LoadedLog; sizeBytes: number; epoch: number }> {
  const { acquired, keeper } = r;
  o.log(`Starting recovery from ${o.store.description}.`);
  // A warm standby's followed log is what a load now would give, up to its last poll; the fence
  // walks from its end, and catchUp applies the rest.
  await r.warm?.drain();
  const followed = r.warm?.current;
  const warm = followed === undefined ? undefined : r.warm;
  if (r.warm !== undefined && warm === undefined) {
    o.log(`Loading the log again (the standby's followed log cannot be used: ${r.warm.staleReason}).`);
  }
  let { state, loaded } = followed ?? await loadVolume(o, r.stopped);
  if (o.readOnly && !volumeExists(state)) throw noVolume(o);
  let epoch = loaded.writerEpoch + 1;
  // Checked before the fence or any repair: a refused start leaves the bucket as it found it.
  const wantedBytes = checkSize(o, loaded);
  let found = o.journal === undefined ? undefined : await logEnd(o, loaded);
  if (acquired !== undefined && keeper !== undefined) {
    const sizeBytes = loaded.volumeSizeBytes ?? wantedBytes; // fence objects keep the recorded size
    r.progress.wroteLog = true;
    const taken = await takeOver(o, { acquired, keeper, loaded, sizeBytes });
    epoch = taken.epoch;
    if (taken.fenced || warm !== undefined) {
      // What the fence accepted and its fence objects, read like a follower's next poll instead of
      // a second load from the checkpoint (which doubled a cold takeover's reads).
      const log = warm ?? WarmLog.afterLease(o, { state, loaded });
      ({ state, loaded } = await log.catchUp() ?? await loadVolume(o, r.stopped));
    }
    if (
      found !== undefined && taken.leftSequence !== undefined && taken.leftSequence !== found.lastSequence
    ) {
      found = { lastSequence: taken.leftSequence, lastEpoch: taken.leftEpoch! };
    }
    await checkNoNewerWriter(o, loaded, epoch);
    if (keeper.lost !== undefined) throw keeper.lost;
  }
  if (o.journal !== undefined && r.scanned !== undefined && found !== undefined) {
    await adoptJournal(o.journal, r.scanned, {
      ...found,
      store: o.store.description,
      prefix: o.prefix,
      volumeCreatedAt: state.format?.createdAt,
      writerEpoch: epoch,
    });
  }
  const sizeBytes = await repair(o, loaded, keeper);
  return { state, loaded, sizeBytes, epoch };
}

/** Settles the size (again: the fence may have accepted more of the log) and repairs a writer's log. */
async function repair(
  o: ResolvedVolumeOptions,
  loaded: LoadedLog,
  keeper: LeaseKeeper | undefined,
): Promise<number> {
  if (o.readOnly) {
    const first = loaded.beyond[0];
    if (first !== undefined && o.atSequence === undefined) {
      o.log(
        `Ignoring ${loaded.beyond.length} objects after the recovery point (read-only, left in place; first is "${first.key}").`,
      );
    }
  }
  const sizeBytes = checkSize(o, loaded);
  if (!o.readOnly) {
    // Repair deletes without conditions: only while the lease is provably still ours.
    if (keeper !== undefined && loaded.beyond.length > 0) await keeper.confirm();
    await repairLog(o.store, loaded, { recoveryId: o.recoveryId, log: o.log });
  }
  const fromCheckpoint = loaded.checkpointSequence === 0
    ? ""
    : ` after checkpoint ${loaded.checkpointSequence}`;
  o.log(`Recovery complete (processed ${loaded.replayed} objects${fromCheckpoint}).`);
  return sizeBytes;
}

/** Lists and loads the log (never modifying it), with a progress line for long replays. */
async function loadVolume(
  o: ResolvedVolumeOptions,
  stopped: () => LsvdError | undefined,
): Promise<{ state: LogState; loaded: LoadedLog }> {
  const state = await listLogState(o.store, o.prefix);
  const progress = new Progress({
    what: "Replaying the log",
    unit: "objects",
    total: 0,
    clock: o.clock,
    log: o.log,
    terminal: stderrTerminal(),
  });
  const loaded = await loadLog(o.store, state, {
    concurrency: o.recoveryConcurrency,
    log: o.log,
    onProgress: (done, total) => {
      if (done === 1) progress.setTotal(total);
      progress.update(done);
      const stop = stopped();
      if (stop !== undefined) throw stop;
    },
    ...(o.atSequence === undefined ? {} : { atSequence: o.atSequence }),
  });
  progress.finish();
  return { state, loaded };
}

/**
 * After taking the lease: makes our epoch higher than every epoch in the log (logs written before
 * epoch keys existed) and, unless the previous writer released the lease, closes its upload window.
 * Returns our epoch and whether the log changed (then it is loaded again).
 */
async function takeOver(
  o: ResolvedVolumeOptions,
  t: { acquired: AcquiredLease; keeper: LeaseKeeper; loaded: LoadedLog; sizeBytes: number },
): Promise<{ epoch: number; fenced: boolean; leftSequence?: number; leftEpoch?: number }> {
  const { acquired, keeper, loaded } = t;
  const last = loaded.lastSequence;
  const lastEpoch = await lastEpochOf(o, loaded);
  let epoch = acquired.stored.lease.epoch;
  if (lastEpoch >= epoch) {
    epoch = await claimEpoch(o.store, o.prefix, {
      atLeast: lastEpoch,
      holder: acquired.stored.lease.holder,
    });
  }
  const previous = acquired.previous;
  const fence = previous === undefined ? loaded.state.objects.length > 0 : !previous.released;
  let left: { leftSequence: number; leftEpoch: number } | undefined;
  if (fence) {
    const closed = await closeWindow(o.store, {
      prefix: o.prefix,
      epoch,
      afterSequence: last,
      afterEpoch: lastEpoch,
      windowObjects: Math.max(1, acquired.stored.lease.windowObjects),
      volumeSizeBytes: t.sizeBytes,
      sealTimeMs: o.clock.wallMs(),
      recoveryId: o.recoveryId,
      log: o.log,
    });
    left = { leftSequence: closed.fenceSequence - 1, leftEpoch: closed.leftEpoch };
  }
  if (fence || epoch !== acquired.stored.lease.epoch) {
    await keeper.update({ epoch, windowObjects: o.uploadsMax });
  }
  return { epoch, fenced: fence, ...left };
}

/** The loaded log's last object and its epoch (what a journal's owner check compares). */
async function logEnd(
  o: ResolvedVolumeOptions,
  loaded: LoadedLog,
): Promise<{ lastSequence: number; lastEpoch: number }> {
  return { lastSequence: loaded.lastSequence, lastEpoch: await lastEpochOf(o, loaded) };
}

/** The writer epoch of the loaded log's last object (logs never lower it along the way). */
async function lastEpochOf(o: ResolvedVolumeOptions, loaded: LoadedLog): Promise<number> {
  const last = loaded.lastSequence;
  // A clone that wrote nothing yet has no object of its own: its epochs start afresh.
  if (last === 0 || last <= loaded.lineage.through) return 0;
  return loaded.lastTrailer?.writerEpoch ??
    await epochOrZero(o, { key: logKey(o.prefix, last), sequence: last });
}

/** An object's writer epoch; 0 when its trailer is damaged (that fails its reads later, not the start). */
function epochOrZero(
  o: ResolvedVolumeOptions,
  object: { key: string; sequence: number },
): Promise<number> {
  return readWriterEpoch(o.store, object.key, object.sequence).catch((e) => {
    if (isLsvdError(e, "data") || isStoreError(e, "NotFound")) return 0;
    throw e;
  });
}

/**
 * Before a writer writes or archives anything: the log it loaded must hold no object of a newer
 * writer. One that fenced us while we were still starting may have placed objects past our fence
 * (our uploads would then land after its objects) or after a gap we would archive.
 */
async function checkNoNewerWriter(
  o: ResolvedVolumeOptions,
  loaded: LoadedLog,
  epoch: number,
): Promise<void> {
  const found = [await lastEpochOf(o, loaded)];
  for (const b of loaded.beyond) found.push(await epochOrZero(o, b));
  const newest = Math.max(...found);
  if (newest > epoch) {
    throw fencedError(
      `Cannot open the volume for writing: the log holds objects of writer epoch ${newest}, newer than ours (${epoch}); ` +
        "another writer took the volume over while this one was starting",
    );
  }
}

/**
 * The size to serve: the recorded one, or a new/grown one. Shrinking needs allowShrink (a filesystem
 * may still claim the space where nothing is written yet) and never goes below written data.
 */
function checkSize(o: ResolvedVolumeOptions, loaded: LoadedLog): number {
  const recorded = loaded.volumeSizeBytes;
  const wanted = o.readOnly ? recorded ?? o.sizeBytes : o.sizeBytes ?? recorded;
  if (wanted === undefined) throw noRecordedSize();
  if (!o.readOnly && recorded !== undefined && wanted < recorded) {
    if (!o.allowShrink) throw shrinkRefused(o, recorded, wanted);
    const end = mappedEndBytes(loaded.map);
    if (end > wanted) {
      throw new LsvdError(
        "invalid",
        `Cannot shrink the volume from ${recorded} to ${wanted} bytes: data is written up to byte ${end}`,
      );
    }
  }
  return wanted;
}

/**
 * The refusals a glance at the prefix settles (peekVolume), made before anything is written (the
 * start-up probes, the lease, an epoch), so a start that cannot succeed leaves the store as it was:
 * read-only on a prefix without a volume, and a writer without a size on a prefix without a log.
 * Returns the glance (undefined: a writer with a size needs none), for Volume.open to take as its
 * own (VolumeOptions.peek); given `peek`, judges that one instead of glancing again.
 */
export async function refuseBeforeWriting(
  o: {
    store: ObjectStore;
    prefix: string;
    readOnly: boolean;
    sizeBytes?: number | undefined;
    peek?: VolumePeek | undefined;
  },
): Promise<VolumePeek | undefined> {
  if (!o.readOnly && o.sizeBytes !== undefined) return o.peek;
  const peek = o.peek ?? await peekVolume(o.store, o.prefix);
  if (o.readOnly && !peek.exists) throw noVolume(o);
  if (!o.readOnly && !peek.hasLog) throw noRecordedSize();
  return peek;
}

function noVolume(o: { store: ObjectStore; prefix: string }): LsvdError {
  return new LsvdError(
    "invalid",
    `Cannot open the volume: ${o.store.description} holds no volume under prefix "${o.prefix}"`,
  );
}

function noRecordedSize(): LsvdError {
  return new LsvdError(
    "invalid",
    "Cannot open the volume: it has no recorded size yet; give --size the first time",
  );
}

function shrinkRefused(o: ResolvedVolumeOptions, recorded: number, wanted: number): LsvdError {
  const where = `${o.prefix === "" ? "" : `prefix ${o.prefix} of `}${o.store.description}`;
  const source = o.sizeSource;
  // A size from the environment is easy to forget: an env file written once keeps pinning it.
  const fromEnvironment = source.startsWith("--")
    ? ""
    : `; the size comes from the environment variable ${source} (an env file, e.g. from lsvd setup): ` +
      "remove it there to serve the recorded size";
  return new LsvdError(
    "invalid",
    `Cannot shrink the volume in ${where} from ${recorded} to ${wanted} bytes (${source}) without --allow-shrink: ` +
      `a filesystem on it may still use the space${fromEnvironment}`,
  );
}

function mappedEndBytes(map: ExtentMap): number {
  let end = 0;
  for (const e of map.entries()) end = Math.max(end, (e.startSector + e.lengthSectors) * SECTOR_BYTES);
  return end;
}
