/**
 * @module
 * `lsvd clone --prefix SRC [--snapshot NAME | --at POINT] --to-prefix DST` and
 * `lsvd flatten --prefix DST`. A clone is a new writable volume that reads what it has not
 * overwritten from its source as of the point, copying nothing (src/log/clone.ts); flatten copies
 * what it still reads into its own log and lets the source go (src/volume/flatten.ts).
 */

import { prefixName } from "./info.ts";
import { normalizePrefix } from "../format/keys.ts";
import { createClone, finishFlatten } from "../log/clone.ts";
import { parsePoint, type Point } from "../log/point.ts";
import { isStale, readSnapshots } from "../log/snapshots.ts";
import { systemClock } from "../util/clock.ts";
import { LsvdError } from "../util/errors.ts";
import { type Logger, stderrLogger } from "../util/log.ts";
import { Progress, stderrTerminal } from "../util/progress.ts";
import { Volume } from "../volume/volume.ts";
import { flagOption, textOption, UsageError } from "./options.ts";
import { ENCRYPTION_OPTIONS, loadEncryptionKey } from "./encryption_key.ts";
import { listVolume, parseTool, retriedSelection, where } from "./tool_support.ts";
import type { StoreSelection } from "./store_options.ts";
import type { ObjectStore } from "../store/store.ts";
import type { VolumeSecret } from "../crypto/sector_cipher.ts";

const CLONE_OPTIONS = {
  ...ENCRYPTION_OPTIONS,
  "to-prefix": textOption({
    help: "Where the clone lives (a new prefix of the source's bucket, or of --to-bucket; required)",
    placeholder: "DST",
  }),
  "to-bucket": textOption({
    help:
      "Put the clone in this other bucket of the same S3 store (it reads the source with the same credentials)",
    placeholder: "NAME",
  }),
  snapshot: textOption({ help: "Branch at this snapshot of the source", placeholder: "NAME" }),
  at: textOption({
    help: "Branch at this point: object number or RFC 3339 time in the retention window (default: now)",
    placeholder: "POINT",
  }),
  flatten: flagOption({
    help: "Then copy everything the clone reads into its own log at once (as 'lsvd flatten')",
  }),
};

const CLONE_SUMMARY = "Makes a writable copy of the volume under --prefix at a point, under --to-prefix.\n" +
  "No data is copied: the clone reads what it has not overwritten from the source, which keeps it\n" +
  "(a pin named clone-... in the source's 'snapshot list'). Safe while a daemon serves the source.\n" +
  "'lsvd flatten --prefix DST' later makes the clone independent. An encrypted source needs its\n" +
  "key; the clone is encrypted with it (its own salt, so its own data key).";

export async function cloneCommand(args: string[], log: Logger = stderrLogger): Promise<number> {
  const parsed = parseTool(args, {
    command: "clone",
    usage:
      "--prefix SRC [--snapshot NAME | --at POINT] --to-prefix DST [--to-bucket NAME] [--flatten] [options]",
    summary: CLONE_SUMMARY,
    options: CLONE_OPTIONS,
  });
  if (parsed.help) return 0;
  if (parsed.positionals.length > 0) throw new UsageError(`Unexpected argument "${parsed.positionals[0]}"`);
  const { "to-prefix": to, snapshot, at } = parsed.values;
  if (to === undefined || normalizePrefix(to) === "") throw new UsageError("clone needs --to-prefix DST");
  if (snapshot !== undefined && at !== undefined) throw new UsageError("Give --snapshot or --at, not both");
  const point: Point | undefined = snapshot !== undefined
    ? { kind: "snapshot", name: snapshot, text: snapshot }
    : at === undefined
    ? undefined
    : parsePoint(at, parsed.options.source("at"));
  const secret = loadEncryptionKey(parsed.options);
  const selection = retriedSelection(parsed.selection, log);
  if (selection.remote) await selection.store.check?.(); // a missing bucket is one line (createClone lists the source)
  const target = normalizePrefix(to);
  const targetStore = await otherBucket(selection, parsed.values["to-bucket"]);
  const made = await createClone(selection.store, {
    source: selection.prefix,
    target,
    ...(targetStore === undefined ? {} : { targetStore }),
    point,
    wallNowMs: systemClock.wallMs(),
    secret,
  });
  const clone = { ...selection, store: targetStore ?? selection.store, prefix: target };
  log(
    `Cloned ${made.resolved.description} ${where(selection)} to prefix "${target}"` +
      `${targetStore === undefined ? "" : ` in ${targetStore.description}`} ` +
      `(pin "${made.link.pin}" in the source keeps what the clone reads).`,
  );
  if (parsed.values.flatten) await flatten(clone, { log, secret });
  return 0;
}

/** `--to-bucket NAME`: that bucket of the same S3 store, checked; undefined for the source's own. */
async function otherBucket(
  selection: StoreSelection,
  name: string | undefined,
): Promise<ObjectStore | undefined> {
  if (name === undefined || name === selection.store.bucket) return undefined;
  if (name === "") throw new UsageError("--to-bucket needs a bucket name");
  if (selection.store.inBucket === undefined) {
    throw new LsvdError(
      "invalid",
      `Cannot clone into bucket "${name}": ${selection.store.description} has no buckets; give --to-prefix alone`,
    );
  }
  const store = selection.store.inBucket(name);
  await store.check?.(); // a missing bucket or one these credentials cannot use is one line
  return store;
}

const FLATTEN_SUMMARY =
  "Copies everything the clone under --prefix still reads from its source into its own\n" +
  "log (each sector checked against its CRC), then releases the source's pin. Needs the writer\n" +
  "lease (stop the daemon serving the clone first). Safe to run again after a crash.";

export async function flattenCommand(args: string[], log: Logger = stderrLogger): Promise<number> {
  const parsed = parseTool(args, {
    command: "flatten",
    usage: "--prefix DST [options]",
    summary: FLATTEN_SUMMARY,
    options: ENCRYPTION_OPTIONS,
  });
  if (parsed.help) return 0;
  if (parsed.positionals.length > 0) throw new UsageError(`Unexpected argument "${parsed.positionals[0]}"`);
  const secret = loadEncryptionKey(parsed.options);
  await flatten(retriedSelection(parsed.selection, log), { log, secret });
  return 0;
}

/** Copies what the clone under the selection's prefix reads from its source, records it, releases the pin. */
async function flatten(
  selection: StoreSelection,
  o: { log: Logger; secret: VolumeSecret | undefined },
): Promise<void> {
  const { log, secret } = o;
  const { store, prefix } = selection;
  const state = await listVolume(selection, { mustExist: true });
  const format = state.format;
  const link = format?.parent;
  if (format === undefined || link === undefined) {
    throw new LsvdError("invalid", `Cannot flatten: the volume ${where(selection)} is not a clone`);
  }
  if (link.flattenedThrough !== undefined) {
    await finishFlatten(store, prefix, format, undefined);
    log(
      `The clone ${where(selection)} was flattened at object ${link.flattenedThrough}; its pin is released.`,
    );
    return;
  }
  const now = systemClock.wallMs();
  const kept = (await readSnapshots(store, state)).filter((s) => !isStale(s, now));
  if (kept.length > 0) {
    throw new LsvdError(
      "invalid",
      `Cannot flatten: snapshot "${
        kept[0]!.name
      }" of the clone keeps a point that reads the source; delete its snapshots first`,
    );
  }
  const volume = await Volume.open({
    store,
    prefix,
    log,
    ...(secret === undefined ? {} : { encryptionKey: secret }),
  });
  let through: number;
  try {
    const progress = new Progress({
      what: "Flattening",
      unit: "bytes",
      total: volume.parentBytes,
      clock: systemClock,
      log,
      terminal: stderrTerminal(),
    });
    through = await volume.copyFromParents((done) => progress.update(done));
    progress.finish();
    await volume.close();
  } catch (e) {
    volume.abandon();
    throw e;
  }
  await finishFlatten(store, prefix, format, through);
  log(
    `Flattened the clone ${where(selection)} at object ${through}: it reads nothing of ${
      prefixName(link.prefix)
    } any more.`,
  );
}
