/**
 * @module
 * `lsvd lease show|break`: the writer lease from the command line. `break` is for an operator who
 * knows the holder is dead (its machine is gone): it marks the lease lapsed, never released, so the
 * next writer starts without --takeover and still fences whatever the dead holder left in flight. A
 * lease that looks live (not lapsed by its own times, its holder not provably gone) needs --force.
 * Neither drops the write-back journal a lease records: a start without it stays refused.
 */

import {
  breakLease,
  breakRefusal,
  describeLease,
  type Lease,
  leaseBroken,
  leaseLapsed,
  readLease,
} from "../log/lease.ts";
import { holderState, localProcesses } from "../util/lease_holder.ts";
import { stderrLogger } from "../util/log.ts";
import { LsvdError } from "../util/errors.ts";
import { flagOption, UsageError } from "./options.ts";
import { parseTool, retriedSelection } from "./tool_support.ts";

const OPTIONS = {
  force: flagOption({
    commandLineOnly: true,
    help: "break: break a lease that looks live (renewed in time by a holder not known to be gone)",
  }),
};

/** The line about a journal a lease records, or undefined. */
export function journalLine(lease: Lease): string | undefined {
  const j = lease.journal;
  if (j === undefined) return undefined;
  return `Journal ${j.dir} on host ${j.host} (id ${j.id}) may hold acknowledged writes not yet in the store: ` +
    `'lsvd serve --journal ${j.dir}' on ${j.host} replays them; any other start is refused without --abandon-journal.`;
}

export async function leaseCommand(args: string[]): Promise<number> {
  const parsed = parseTool(args, {
    command: "lease",
    usage: "show|break [options]",
    summary:
      "Shows the writer lease (holder, epoch, whether it is held, lapsed or released), or breaks it\n" +
      "when its holder is known to be dead (--force if it still looks live).",
    options: OPTIONS,
  });
  if (parsed.help) return 0;
  const [action, ...extra] = parsed.positionals;
  if ((action !== "show" && action !== "break") || extra.length > 0) {
    throw new UsageError("Usage: lsvd lease show|break [options]; run 'lsvd lease --help'");
  }
  if (action === "show" && parsed.values.force) {
    throw new UsageError("Invalid options: --force goes with 'lease break'");
  }
  const { store, prefix } = retriedSelection(parsed.selection, stderrLogger);
  try {
    if (parsed.selection.remote) await store.check?.(); // a directory check would create it
    const stored = await readLease(store, prefix);
    const now = Date.now();
    if (action === "show") {
      if (stored === undefined) {
        console.log("No lease: no writer has opened this volume with fencing.");
        return 0;
      }
      const state = holderState(stored.lease.holder, localProcesses());
      const gone = stored.lease.released || leaseLapsed(stored.lease, now) || !state.gone
        ? ""
        : ` (pid ${stored.lease.holder.pid} on this host is gone: a restart takes the lease without --takeover)`;
      console.log(`${describeLease(stored.lease, now)}${gone}`);
      const journal = journalLine(stored.lease);
      if (journal !== undefined) console.log(journal);
      return 0;
    }
    if (stored === undefined) {
      console.log("No lease to break.");
      return 0;
    }
    const lease = stored.lease;
    if (lease.released || leaseBroken(lease)) {
      console.log(`Nothing to break: ${describeLease(lease, now)}.`);
      return 0;
    }
    const refusal = breakRefusal(lease, now, localProcesses());
    if (refusal !== undefined && !parsed.values.force) throw new LsvdError("invalid", refusal);
    await breakLease(store, prefix, stored);
    console.log(
      `Broke the lease of ${describeLease(lease, now)}; the next writer fences whatever it left in flight.`,
    );
    const journal = journalLine(lease);
    if (journal !== undefined) console.log(journal);
    return 0;
  } finally {
    await store.close();
  }
}
