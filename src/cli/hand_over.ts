/**
 * @module
 * Handing a served kernel device from one lsvd to the next without the mount noticing (an upgrade).
 *
 * The old daemon, on SIGUSR2, stops answering the kernel (requests it has not started stay
 * unanswered; the kernel re-sends them), finishes what it started, stores every acknowledged write,
 * releases the lease and closes its sockets without disconnecting /dev/nbdN or unmounting; the
 * kernel holds new requests until the next daemon resumes the device (kernel_device.ts).
 *
 * The new daemon, started with --takeover while the lease names a live lsvd on this host, sends it
 * that signal and waits (bounded) for the lease to be released before it reads the log: a takeover
 * that fenced a daemon still serving would let it acknowledge writes the successor never loads.
 * Only when the holder does not hand over in time does the takeover fence it.
 */

import { describeLease, type Lease, readLease } from "../log/lease.ts";
import type { ObjectStore } from "../store/store.ts";
import type { Logger } from "../util/log.ts";
import { messageOf } from "../util/errors.ts";

export const HAND_OVER_SIGNAL: Deno.Signal = "SIGUSR2";
const POLL_INTERVAL_MS = 250;

/** Resolves when this daemon is asked to hand over; dispose() stops listening. */
export class HandOverRequests {
  readonly requested: Promise<void>;
  #listener: () => void;

  constructor() {
    let resolve!: () => void;
    this.requested = new Promise((r) => resolve = r);
    this.#listener = () => resolve();
    Deno.addSignalListener(HAND_OVER_SIGNAL, this.#listener);
  }

  dispose(): void {
    Deno.removeSignalListener(HAND_OVER_SIGNAL, this.#listener);
  }
}

/**
 * Asks the lease holder to hand over when it is a live `lsvd serve` on this host, and waits up to
 * waitMs for it to release the lease. Returns silently when there is nobody to ask; logs what
 * happened otherwise (the takeover that follows fences a holder that did not hand over).
 */
export async function askHolderToHandOver(
  store: ObjectStore,
  prefix: string,
  p: { waitMs: number; log: Logger },
): Promise<void> {
  const stored = await readLease(store, prefix).catch(() => undefined);
  if (stored === undefined || stored.lease.released) return;
  const pid = localServePid(stored.lease);
  if (pid === undefined) return;
  p.log(`Asking lsvd pid ${pid} on this host to hand the volume over (${HAND_OVER_SIGNAL}).`);
  try {
    Deno.kill(pid, HAND_OVER_SIGNAL);
  } catch (e) {
    p.log(`Cannot signal pid ${pid}: ${messageOf(e)}; taking over without it.`);
    return;
  }
  const deadline = Date.now() + p.waitMs;
  while (Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, POLL_INTERVAL_MS));
    const now = await readLease(store, prefix).catch(() => stored);
    if (now === undefined || now.lease.released) {
      p.log(`lsvd pid ${pid} handed the volume over.`);
      return;
    }
    if (now.etag !== stored.etag && now.lease.epoch !== stored.lease.epoch) return; // someone else took it
    if (localServePid(stored.lease) === undefined) {
      p.log(`lsvd pid ${pid} exited without handing over; taking over and fencing what it left.`);
      return;
    }
  }
  p.log(
    `lsvd pid ${pid} did not hand over within ${p.waitMs / 1000} s (${
      describeLease(stored.lease)
    }); taking over and fencing it.`,
  );
}

/** The holder's pid when it is a live `lsvd serve` process of this host (never this process). */
function localServePid(lease: Lease): number | undefined {
  const { host, pid } = lease.holder;
  if (host !== Deno.hostname() || pid === Deno.pid) return undefined;
  let cmdline: string;
  try {
    cmdline = Deno.readTextFileSync(`/proc/${pid}/cmdline`);
  } catch {
    return undefined; // gone
  }
  // A recycled pid must not get the signal: only a process running `serve` (lsvd or deno main.ts).
  const args = cmdline.split("\0");
  return args.includes("serve") ? pid : undefined;
}
