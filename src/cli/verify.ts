/**
 * @module
 * `lsvd verify`: fetches every log object whole (many at once, memory bounded by the number in
 * flight) and checks everything the format allows (src/log/verify.ts): trailer, sequence, the
 * whole-object CRC, the header CRC and every data sector's CRC; also that the log has no gaps and
 * that every checkpoint decodes. Each bad key is printed on its own line on standard output;
 * the exit status is 1 when anything is wrong. Never modifies the bucket.
 */

import { decodeCheckpoint } from "../format/checkpoint.ts";
import type { LoggedObject } from "../log/log_state.ts";
import { verifyObject } from "../log/verify.ts";
import { isStoreError, type ObjectStore } from "../store/store.ts";
import { systemClock } from "../util/clock.ts";
import { messageOf } from "../util/errors.ts";
import { type Logger, stderrLogger } from "../util/log.ts";
import { forEachBounded } from "../util/ordered.ts";
import { Progress, stderrTerminal } from "../util/progress.ts";
import { gapsOf } from "./info.ts";
import { ENCRYPTION_OPTIONS, loadEncryptionKey } from "./encryption_key.ts";
import type { SectorCipher } from "../crypto/sector_cipher.ts";
import { cipherOf } from "../log/volume_encryption.ts";
import { UsageError } from "./options.ts";
import { listVolume, parallelOption, parseTool, retriedSelection, where } from "./tool_support.ts";

const OPTIONS = {
  ...ENCRYPTION_OPTIONS,
  parallel: parallelOption("Objects fetched at once (memory: this many whole objects)"),
};

const SUMMARY = "Fetches every object of the volume and checks its trailer, sequence and every checksum;\n" +
  "prints each bad key on its own line and exits 1 when anything is wrong. Changes nothing.";

export interface VerifyReport {
  objects: number;
  bytes: number;
  /** One line per problem, each starting with the key it concerns. */
  problems: string[];
}

export async function verifyCommand(args: string[], log: Logger = stderrLogger): Promise<number> {
  const parsed = parseTool(args, {
    command: "verify",
    usage: "[options]",
    summary: SUMMARY,
    options: OPTIONS,
  });
  if (parsed.help) return 0;
  if (parsed.positionals.length > 0) throw new UsageError(`Unexpected argument "${parsed.positionals[0]}"`);
  const parallel = parsed.values.parallel;
  const secret = loadEncryptionKey(parsed.options);
  const selection = retriedSelection(parsed.selection, log);
  const state = await listVolume(selection, { mustExist: true });
  // Without a key an encrypted volume's CRCs (of the ciphertext) are still checked.
  const cipher = secret === undefined ? undefined : cipherOf(state.format, secret, selection.prefix);
  log(`Verifying ${state.objects.length} objects ${where(selection)}.`);
  const report = await verifyLog(selection.store, {
    objects: state.objects,
    checkpoints: state.checkpoints,
    requireTrailer: state.format !== undefined,
    firstSequence: (state.format?.parent?.through ?? 0) + 1,
    parallel,
    log,
    onProblem: (line) => console.log(line),
    cipher,
  });
  const mib = (report.bytes / 2 ** 20).toFixed(1);
  if (report.problems.length === 0) {
    log(`All ${report.objects} objects (${mib} MiB) and ${state.checkpoints.length} checkpoints are good.`);
    return 0;
  }
  log(
    `Found ${report.problems.length} problems in ${report.objects} objects (${mib} MiB); see the lines above.`,
  );
  return 1;
}

export interface VerifyLogOptions {
  objects: readonly LoggedObject[];
  checkpoints: readonly { sequence: number; key: string }[];
  requireTrailer: boolean;
  /** The first number of the volume's own log (a clone's starts above its parent's). */
  firstSequence?: number;
  parallel: number;
  log: Logger;
  /** Called once per problem line as it is found. */
  onProblem: (line: string) => void;
  /** An encrypted volume's key: sectors are authenticated too. */
  cipher?: SectorCipher | undefined;
}

export async function verifyLog(store: ObjectStore, o: VerifyLogOptions): Promise<VerifyReport> {
  const report: VerifyReport = { objects: 0, bytes: 0, problems: [] };
  const problem = (key: string, text: string) => {
    const line = `${key}: ${text}`;
    report.problems.push(line);
    o.onProblem(line);
  };
  for (const g of gapsOf(o.objects, o.firstSequence)) {
    const missing = g.from === g.to ? `object ${g.from} is missing` : `objects ${g.from}-${g.to} are missing`;
    const key = o.objects.find((x) => x.sequence > g.to)!.key;
    problem(key, `${missing} before it: the disk ends before the gap, this and later objects are ignored`);
  }
  const total = o.objects.reduce((n, x) => n + x.sizeBytes, 0);
  const progress = new Progress({
    what: "Verifying",
    unit: "bytes",
    total,
    clock: systemClock,
    log: o.log,
    terminal: stderrTerminal(),
  });
  await forEachBounded(o.objects, o.parallel, async (object) => {
    const bytes = await fetchWhole(store, object.key);
    if (bytes === undefined) problem(object.key, "it was listed but is gone");
    else {
      for (
        const p of verifyObject(object, bytes, { requireTrailer: o.requireTrailer, cipher: o.cipher })
          .problems
      ) {
        problem(object.key, p);
      }
    }
    report.objects++;
    report.bytes += object.sizeBytes;
    progress.update(report.bytes);
  });
  progress.finish();
  for (const c of o.checkpoints) {
    const bytes = await fetchWhole(store, c.key);
    try {
      if (bytes !== undefined) decodeCheckpoint(bytes);
    } catch (e) {
      problem(c.key, `checkpoint is damaged (${messageOf(e)}); it is ignored at start, the log is replayed`);
    }
  }
  return report;
}

async function fetchWhole(
  store: ObjectStore,
  key: string,
): Promise<Uint8Array | undefined> {
  try {
    return (await store.get(key)).body;
  } catch (e) {
    if (isStoreError(e, "NotFound")) return undefined;
    throw e;
  }
}
