/**
 * @module
 * The three steps by which `Volume.open` brings up a write-back journal, kept out of volume.ts:
 *
 *   prepareJournal  before the store is touched: lock the directory, check every record
 *                   (or drop them all: --journal-discard), and read its id (which the lease
 *                   records, so a start without this journal is refused)
 *   adoptJournal    after the lease and fence, before repair: refuse a journal the log has moved
 *                   past under another writer; else record this writer as its owner (so a crash
 *                   during replay leaves a journal the next start still accepts)
 *   startJournal    after the volume is open: replay the records through the writer, store them,
 *                   empty the journal, and return the running Journal
 */

import type { Logger } from "../util/log.ts";
import { Journal } from "../journal/journal.ts";
import {
  checkJournalOwner,
  checkJournalVolume,
  emptyJournal,
  type FoundLog,
  type JournalIdentity,
  replayRecords,
  scanJournal,
  type ScannedJournal,
} from "../journal/journal_replay.ts";
import type { LogWriter } from "./log_writer.ts";
import type { RecordSealer } from "../journal/journal_codec.ts";
import type { JournalConfig } from "./volume_options.ts";

/**
 * `volume`: the store and prefix this start opens. A journal holding another volume's records is
 * refused before its id goes into this volume's lease, and before --journal-discard could drop
 * that volume's acknowledged writes.
 */
export async function prepareJournal(
  config: JournalConfig,
  o: { log: Logger; volume: { store: string; prefix: string } },
): Promise<ScannedJournal & { id: string }> {
  const files = config.files;
  await files.lock();
  try {
    const id = await files.id();
    return { ...await checkRecords(config, o), id };
  } catch (e) {
    await files.unlock();
    throw e;
  }
}

async function checkRecords(
  config: JournalConfig,
  { log, volume }: { log: Logger; volume: { store: string; prefix: string } },
): Promise<ScannedJournal> {
  const files = config.files;
  const ofThisVolume = (scanned: ScannedJournal) =>
    checkJournalVolume(files, scanned, { ...volume, volumeCreatedAt: undefined });
  if (config.discard) {
    const dropped = await scanJournal(files).catch(() => undefined);
    if (dropped !== undefined) ofThisVolume(dropped);
    await emptyJournal(files);
    log(
      `Discarded journal ${files.description}${
        dropped === undefined ? " (damaged)" : `: ${dropped.bytes} bytes in ${dropped.records} records`
      } (--journal-discard).`,
    );
    return {
      identity: undefined,
      segments: [],
      records: 0,
      bytes: 0,
      lastRecord: dropped?.lastRecord,
      tornBytes: 0,
    };
  }
  const scanned = await scanJournal(files);
  ofThisVolume(scanned);
  if (scanned.tornBytes > 0) {
    log(
      `Journal ${files.description}: dropping a torn tail of ${scanned.tornBytes} bytes: records a crash ` +
        "cut short, which no FLUSH acknowledged (unless the disk itself damaged the journal's last record).",
    );
  }
  return scanned;
}

export async function adoptJournal(
  config: JournalConfig,
  scanned: ScannedJournal,
  found: FoundLog & { writerEpoch: number },
): Promise<void> {
  checkJournalOwner(config.files, scanned, found);
  const identity: JournalIdentity = {
    version: 1,
    store: found.store,
    prefix: found.prefix,
    volumeCreatedAt: found.volumeCreatedAt,
    writerEpoch: found.writerEpoch,
    startSequence: found.lastSequence,
    startEpoch: found.lastEpoch,
  };
  await config.files.writeIdentity(JSON.stringify(identity));
}

export async function startJournal(
  config: JournalConfig,
  scanned: ScannedJournal,
  o: {
    writer: LogWriter;
    sizeBytes: number;
    mayAcknowledge: () => boolean;
    log: Logger;
    /** An encrypted volume's keys: journal records are sealed with its journal key. */
    sealer: RecordSealer | undefined;
  },
): Promise<{ journal: Journal; replayed: number }> {
  const { writer, log } = o;
  const files = config.files;
  let replayed = 0;
  if (scanned.records > 0) {
    log(`Replaying ${scanned.records} records (${scanned.bytes} bytes) from journal ${files.description}.`);
    replayed = await replayRecords(files, scanned, {
      sizeBytes: o.sizeBytes,
      sealer: o.sealer,
      write: (offset, data) => writer.write(offset, data),
      writeZeroes: (offset, length) => writer.writeZeroes(offset, length),
    });
    await writer.flush();
    log(`Replayed ${replayed} journal records; they are in the store.`);
  }
  await emptyJournal(files);
  const journal = new Journal({
    files,
    bytesMax: config.bytesMax,
    segmentBytes: config.segmentBytes,
    firstRecord: (scanned.lastRecord ?? 0) + 1,
    mayAcknowledge: o.mayAcknowledge,
    log,
    sealer: o.sealer,
    target: {
      write: (offset, data) => writer.write(offset, data),
      writeZeroes: (offset, length) => writer.writeZeroes(offset, length),
      coveringSequence: () => writer.lastSequence + (writer.open.isEmpty ? 0 : 1),
      durable: (sequence) => writer.durable(sequence),
      sealNow: () => void writer.flush().catch(() => {}),
      get failure() {
        return writer.failure;
      },
    },
  });
  return { journal, replayed };
}
