/**
 * @module
 * `lsvd journal show DIR`: what a write-back journal holds (docs/design/write-back-journal.md),
 * without taking it: which volume and writer it belongs to, how many records and bytes, whether
 * it is damaged. The operator reads this before choosing `serve --journal-discard`.
 */

import { join, resolve } from "node:path";
import { LsvdError } from "../util/errors.ts";
import { DirectoryJournalFiles } from "../journal/journal_files.ts";
import { scanJournal } from "../journal/journal_replay.ts";
import { helpText, UsageError, wantsHelp } from "./options.ts";

export async function journalCommand(args: string[]): Promise<number> {
  if (wantsHelp(args)) {
    console.log(helpText({
      command: "journal",
      usage: "show DIR",
      summary: "Shows what the write-back journal in DIR holds (serve --journal DIR), without changing it.",
      specs: {},
      examples: ["lsvd journal show /var/lib/lsvd/journal"],
      notes: ["To drop a journal's writes, start serve with --journal DIR --journal-discard."],
    }));
    return 0;
  }
  const [action, dir, ...extra] = args;
  if (action !== "show" || dir === undefined || extra.length > 0) {
    throw new UsageError("Usage: lsvd journal show DIR; run 'lsvd journal --help'");
  }
  const path = resolve(dir);
  try {
    await Deno.stat(path);
  } catch {
    throw new LsvdError("invalid", `Cannot read journal ${path}: no such directory`);
  }
  const scanned = await scanJournal(new DirectoryJournalFiles(path));
  const id = scanned.identity;
  console.log(`Journal ${path}`);
  console.log(
    id === undefined
      ? "  volume: unknown (no identity.json)"
      : `  volume: prefix "${id.prefix}" of ${id.store}${
        id.volumeCreatedAt === undefined ? "" : ` (created ${id.volumeCreatedAt})`
      }\n  writer: epoch ${id.writerEpoch}, started after object ${id.startSequence} (epoch ${id.startEpoch})`,
  );
  const journalId = await Deno.readTextFile(join(path, "id")).then((t) => t.trim(), () => undefined);
  if (journalId !== undefined) console.log(`  id: ${journalId} (what the volume's writer lease names it by)`);
  console.log(
    `  holds: ${scanned.records} records, ${scanned.bytes} bytes in ${scanned.segments.length} segments` +
      (scanned.tornBytes > 0
        ? ` (and a torn tail of ${scanned.tornBytes} bytes: cut short by a crash, unacknowledged unless the disk damaged it)`
        : ""),
  );
  return 0;
}
