/**
 * @module
 * Who holds a lease, and when a restart may prove that holder is gone (docs/design/fencing.md).
 *
 * A holder records its host, pid and a nonce, and (newer lsvd) the machine's boot id, its pid
 * namespace and its own start time (field 22 of /proc/PID/stat, clock ticks after boot). A starting
 * writer on the same host, the same boot and the same pid namespace can then look the holder up:
 * a pid that does not exist, a zombie (killed, not yet reaped by its parent) or a pid now used by a
 * process that started at another time is certainly not the holder any more, so the lease is taken
 * without --takeover (and the holder's uploads are still fenced: the kernel may send them late).
 * Anything else (another host, another boot of a machine with that name, a holder from an older
 * lsvd with no boot id whose pid lives) may still run and needs --takeover or --standby.
 *
 * /proc is read through a ProcessTable so the decision is unit-tested with made-up processes.
 */

import { hasExited, parseProcStat, type ProcessStat } from "./proc_stat.ts";
export { parseProcStat, type ProcessStat };

export interface LeaseHolder {
  host: string;
  pid: number;
  /** Tells apart two holders with one host and pid (tests, containers sharing a pid namespace). */
  nonce: string;
  /** /proc/sys/kernel/random/boot_id of the holder's machine; absent in leases of older lsvd. */
  bootId?: string;
  /** The holder's pid namespace (`pid:[4026531836]`): its pid means something only inside it. */
  pidNamespace?: string;
  /** The holder process's start time: field 22 of /proc/PID/stat (clock ticks after boot). */
  startTime?: number;
}

/** What this machine says about itself and its processes (read from /proc; injected in tests). */
export interface ProcessTable {
  host: string;
  bootId: string | undefined;
  pidNamespace: string | undefined;
  /** The pid's stat, undefined when no such process exists; throws when it cannot be told. */
  stat(pid: number): ProcessStat | undefined;
}

/** How a lease's holder stands, seen from this machine. */
export type HolderState =
  | { gone: false }
  | {
    gone: true;
    /** exited: no such pid; zombie: killed or crashed, not yet reaped; reused: the pid is another process. */
    why: "exited" | "zombie" | "reused";
  };

function readOrUndefined(read: () => string): string | undefined {
  try {
    return read().trim() || undefined;
  } catch {
    return undefined;
  }
}

/** This machine, read from /proc. */
export function localProcesses(): ProcessTable {
  return {
    host: Deno.hostname(),
    bootId: readOrUndefined(() => Deno.readTextFileSync("/proc/sys/kernel/random/boot_id")),
    pidNamespace: readOrUndefined(() => Deno.readLinkSync("/proc/self/ns/pid")),
    stat(pid: number): ProcessStat | undefined {
      let text: string;
      try {
        text = Deno.readTextFileSync(`/proc/${pid}/stat`);
      } catch (e) {
        if (e instanceof Deno.errors.NotFound) return undefined;
        throw e; // hidden or unreadable: it may well run
      }
      const stat = parseProcStat(text);
      if (stat === undefined) throw new Error(`cannot parse /proc/${pid}/stat`);
      return stat;
    },
  };
}

/** This process as a lease holder (with what lets a restart on this machine prove it gone). */
export function currentHolder(machine: ProcessTable = localProcesses()): LeaseHolder {
  const holder: LeaseHolder = { host: machine.host, pid: Deno.pid, nonce: crypto.randomUUID() };
  if (machine.bootId !== undefined) holder.bootId = machine.bootId;
  if (machine.pidNamespace !== undefined) holder.pidNamespace = machine.pidNamespace;
  let own: ProcessStat | undefined;
  try {
    own = machine.stat(Deno.pid);
  } catch {
    own = undefined;
  }
  if (own !== undefined) holder.startTime = own.startTime;
  return holder;
}

/**
 * Whether this machine can prove the holder is gone: same host, same boot (when the lease records
 * one), same pid namespace (when recorded), and its pid is not alive, is a zombie, or belongs to a
 * process that started at another time (when the start time is recorded). Otherwise it may run.
 */
export function holderState(holder: LeaseHolder, machine: ProcessTable): HolderState {
  const mayRun = { gone: false } as const;
  if (holder.host !== machine.host) return mayRun;
  if (holder.bootId !== undefined && holder.bootId !== machine.bootId) return mayRun;
  if (holder.pidNamespace !== undefined && holder.pidNamespace !== machine.pidNamespace) return mayRun;
  let stat: ProcessStat | undefined;
  try {
    stat = machine.stat(holder.pid);
  } catch {
    return mayRun;
  }
  if (stat === undefined) return { gone: true, why: "exited" };
  if (hasExited(stat)) return { gone: true, why: "zombie" };
  if (holder.startTime !== undefined && stat.startTime !== holder.startTime) {
    return { gone: true, why: "reused" };
  }
  return mayRun;
}

/**
 * The holder a local lock file names (the journal's, the disk cache's): JSON as currentHolder()
 * writes it, an older lsvd's `{pid, host}`, or a bare pid (this host's); undefined when it cannot be
 * read (torn by a crash).
 */
export function parseLockHolder(text: string, host: string): LeaseHolder | undefined {
  const trimmed = text.trim();
  if (/^\d+$/.test(trimmed)) return { host, pid: Number(trimmed), nonce: "" };
  try {
    const h = JSON.parse(trimmed) as Partial<LeaseHolder>;
    return typeof h.host === "string" && Number.isSafeInteger(h.pid)
      ? { nonce: "", ...h } as LeaseHolder
      : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Whether the holder a local lock file names is gone: as holderState(), and also when it ran in an
 * earlier boot of this host, since no process outlives a reboot. A lease in the bucket cannot use
 * that rule (another machine may share the host name), but a lock in a local directory can: no other
 * machine's process writes there. So a machine that crashed and rebooted replays its journal and
 * keeps its disk cache, whatever process has the old pid now (pid 1 in a container).
 */
export function lockHolderGone(holder: LeaseHolder, machine: ProcessTable): boolean {
  const earlierBoot = holder.host === machine.host && holder.bootId !== undefined &&
    machine.bootId !== undefined && holder.bootId !== machine.bootId;
  return earlierBoot || holderState(holder, machine).gone;
}

/** `which is gone (killed or crashed)` and the like, for the line a restart prints. */
export function goneText(holder: LeaseHolder, state: HolderState & { gone: true }): string {
  switch (state.why) {
    case "exited":
      return "which is gone (killed or crashed)";
    case "zombie":
      return "which is gone (killed or crashed; a zombie its parent has not reaped yet)";
    case "reused":
      return `which is gone (killed or crashed; pid ${holder.pid} now belongs to another process)`;
  }
}
