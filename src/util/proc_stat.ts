/**
 * @module
 * Processes as /proc shows them: the one parser of /proc/PID/stat, and whether a pid names a
 * running process (not gone, not a zombie). The lease's stronger proof (same boot, same start
 * time: src/util/lease_holder.ts) builds on the parser; a lock file or a device's pid uses
 * processRunning.
 */

/** One process as /proc/PID/stat shows it. */
export interface ProcessStat {
  /** R, S, D, T, Z (zombie), X (dead), ... */
  state: string;
  /** Field 22: clock ticks after boot when the process started. */
  startTime: number;
}

/**
 * Parses /proc/PID/stat: `pid (comm) state ppid ...`. The command name may hold spaces and
 * parentheses, so fields are counted after its last ")".
 */
export function parseProcStat(text: string): ProcessStat | undefined {
  const fields = fieldsFrom3(text);
  if (fields === undefined) return undefined;
  const state = fields[0];
  const startTime = Number(fields[22 - 3]);
  if (state === undefined || !Number.isSafeInteger(startTime)) return undefined;
  return { state, startTime };
}

/** CPU a process has used (fields 14 and 15 of /proc/PID/stat, utime + stime) in clock ticks, 100 a second. */
export function parseProcCpuTicks(text: string): number | undefined {
  const fields = fieldsFrom3(text);
  const ticks = fields === undefined ? NaN : Number(fields[14 - 3]) + Number(fields[15 - 3]);
  return Number.isSafeInteger(ticks) ? ticks : undefined;
}

/** The fields after the command name (which may hold spaces and parentheses): [0] is field 3. */
function fieldsFrom3(text: string): string[] | undefined {
  const close = text.lastIndexOf(")");
  return close < 0 ? undefined : text.slice(close + 1).trim().split(/\s+/);
}

/** A zombie or dead process has exited: only its parent's wait is left. */
export function hasExited(stat: ProcessStat): boolean {
  return stat.state === "Z" || stat.state === "X" || stat.state === "x";
}

/**
 * Whether `pid` names a process that is still running on this machine: false when /proc has no
 * such pid or it is a zombie. A stat that cannot be read or parsed counts as running (the careful
 * answer: whatever depends on the process being gone is not done).
 */
export function processRunning(pid: number | string): boolean {
  let text: string;
  try {
    text = Deno.readTextFileSync(`/proc/${pid}/stat`);
  } catch (e) {
    return !(e instanceof Deno.errors.NotFound);
  }
  const stat = parseProcStat(text);
  return stat === undefined || !hasExited(stat);
}
