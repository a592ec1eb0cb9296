/**
 * @module
 * `lsvd lease show|break`: the writer lease from the command line. `break` is for an operator who
 * knows the holder is dead (its machine is gone): it marks the lease lapsed, never released, so the
 * next writer starts without --takeover and still fences whatever the dead holder left in flight.
 */

import { breakLease, describeLease, readLease } from "../log/lease.ts";
import { stderrLogger } from "../util/log.ts";
import { withRetries } from "../store/retry.ts";
import { UsageError } from "./options.ts";
import { parseTool, toolRetry } from "./tool_support.ts";

export async function leaseCommand(args: string[]): Promise<number> {
  const parsed = parseTool(args, {
    command: "lease",
    usage: "show|break [options]",
    summary:
      "Shows the writer lease (holder, epoch, expiry), or breaks it when its holder is known to be dead.",
    options: {},
  });
  if (parsed.help) return 0;
  const [action, ...extra] = parsed.positionals;
  if ((action !== "show" && action !== "break") || extra.length > 0) {
    throw new UsageError("Usage: lsvd lease show|break [options]; run 'lsvd lease --help'");
  }
  const { store, prefix } = parsed.selection;
  const retry = toolRetry(stderrLogger);
  try {
    if (parsed.selection.remote) await store.check?.(); // a directory check would create it
    if (action === "show") {
      const stored = await withRetries(retry, () => readLease(store, prefix));
      console.log(
        stored === undefined
          ? "No lease: no writer has opened this volume with fencing."
          : describeLease(stored.lease),
      );
      return 0;
    }
    const broken = await breakLease(store, prefix, retry);
    console.log(
      broken === undefined
        ? "No lease to break."
        : `Broke the lease of ${describeLease(broken)}; the next writer fences whatever it left in flight.`,
    );
    return 0;
  } finally {
    await store.close();
  }
}
