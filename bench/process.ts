/**
 * @module
 * Child processes for the benchmark: daemons started in the foreground (so the harness can `wait`
 * for them; PID 1 here reaps slowly), their output kept for error messages, a bounded wait for a
 * readiness line, and a bounded stop (SIGTERM, then SIGKILL).
 */

import { parseProcCpuTicks } from "../src/util/proc_stat.ts";

export interface DaemonOptions {
  args: string[];
  env?: Record<string, string>;
  cwd?: string;
  /** A line on stdout or stderr that says the daemon is ready. */
  readyPattern?: RegExp;
  readyTimeoutMs?: number;
  label: string;
}

/** Output kept per daemon, enough to explain a failure. */
const TAIL_LINES = 60;

export class Daemon {
  readonly label: string;
  readonly child: Deno.ChildProcess;
  readonly startedAtMs: number;
  #lines: { atMs: number; text: string }[] = [];
  #waiters: { pattern: RegExp; resolve: (atMs: number) => void }[] = [];
  #status: Promise<Deno.CommandStatus>;
  #exited = false;

  constructor(command: string, options: DaemonOptions) {
    this.label = options.label;
    this.startedAtMs = performance.now();
    this.child = new Deno.Command(command, {
      args: options.args,
      env: options.env ?? {},
      ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#status = this.child.status.then((s) => {
      this.#exited = true;
      return s;
    });
    void this.#pump(this.child.stdout);
    void this.#pump(this.child.stderr);
  }

  get pid(): number {
    return this.child.pid;
  }

  get exited(): boolean {
    return this.#exited;
  }

  get output(): string {
    return this.#lines.map((l) => l.text).join("\n");
  }

  /** When (performance.now()) the first kept line matching pattern appeared. */
  lineTime(pattern: RegExp): number | undefined {
    return this.#lines.find((l) => pattern.test(l.text))?.atMs;
  }

  async #pump(stream: ReadableStream<Uint8Array>): Promise<void> {
    const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
    let partial = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        const parts = (partial + value).split("\n");
        partial = parts.pop() ?? "";
        for (const line of parts) this.#addLine(line);
      }
    } catch {
      // The stream ends with the process; nothing to report beyond the exit status.
    }
    if (partial !== "") this.#addLine(partial);
  }

  #addLine(line: string): void {
    const now = performance.now();
    this.#lines.push({ atMs: now, text: line });
    if (this.#lines.length > TAIL_LINES) this.#lines.shift();
    this.#waiters = this.#waiters.filter((w) => {
      if (!w.pattern.test(line)) return true;
      w.resolve(now);
      return false;
    });
  }

  /** Resolves with the time (performance.now()) the line appeared; throws on exit or timeout. */
  waitForLine(pattern: RegExp, timeoutMs: number): Promise<number> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(
          new Error(
            `Cannot start ${this.label}: no line matching ${pattern} within ${timeoutMs} ms\n${this.output}`,
          ),
        );
      }, timeoutMs);
      const done = (atMs: number) => {
        clearTimeout(timer);
        resolve(atMs);
      };
      this.#waiters.push({ pattern, resolve: done });
      void this.#status.then((s) => {
        clearTimeout(timer);
        reject(new Error(`Cannot start ${this.label}: it exited with code ${s.code}\n${this.output}`));
      });
    });
  }

  /** SIGTERM, wait up to graceMs, then SIGKILL. Returns the exit code (or signal-derived code). */
  async stop(graceMs = 30_000, signal: Deno.Signal = "SIGTERM"): Promise<number> {
    if (!this.#exited) {
      try {
        this.child.kill(signal);
      } catch {
        // Already gone.
      }
    }
    const timer = setTimeout(() => {
      try {
        this.child.kill("SIGKILL");
      } catch {
        // Already gone.
      }
    }, graceMs);
    const status = await this.#status;
    clearTimeout(timer);
    return status.code;
  }

  status(): Promise<Deno.CommandStatus> {
    return this.#status;
  }
}

/** Starts a daemon and waits for its readiness line (when given); stops it if that fails. */
export async function startDaemon(command: string, options: DaemonOptions): Promise<Daemon> {
  const daemon = new Daemon(command, options);
  if (options.readyPattern !== undefined) {
    try {
      await daemon.waitForLine(options.readyPattern, options.readyTimeoutMs ?? 60_000);
    } catch (e) {
      await daemon.stop(2_000, "SIGKILL");
      throw e;
    }
  }
  return daemon;
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion with a time bound; throws when it cannot start or overruns. */
export async function run(
  command: string,
  args: string[],
  options: { env?: Record<string, string>; timeoutMs?: number } = {},
): Promise<RunResult> {
  const child = new Deno.Command(command, {
    args,
    env: options.env ?? {},
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
  }, options.timeoutMs ?? 600_000);
  const out = await child.output();
  clearTimeout(timer);
  const decoder = new TextDecoder();
  const result = { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
  if (timedOut) {
    throw new Error(
      `Cannot run ${command}: no exit within ${options.timeoutMs} ms\n${result.stderr.slice(-2000)}`,
    );
  }
  return result;
}

/** Waits until a path exists (a unix socket, a FUSE file), bounded. */
export async function waitForPath(path: string, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    try {
      await Deno.stat(path);
      return;
    } catch {
      if (performance.now() > deadline) throw new Error(`Cannot find ${path} within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

/** Reads a field such as VmHWM or VmRSS from /proc/PID/status, in bytes. */
/** CPU (utime + stime) the processes have used so far, in clock ticks (100 a second). */
export function cpuTicksOf(pids: number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    const used = parseProcCpuTicks(Deno.readTextFileSync(`/proc/${pid}/stat`));
    if (used === undefined) throw new Error(`Cannot read the CPU time in /proc/${pid}/stat`);
    ticks += used;
  }
  return ticks;
}

export async function procStatusBytes(pid: number, field: "VmHWM" | "VmRSS"): Promise<number> {
  const text = await Deno.readTextFile(`/proc/${pid}/status`);
  const match = text.match(new RegExp(`^${field}:\\s+(\\d+) kB`, "m"));
  if (match === null) throw new Error(`Cannot read ${field} of process ${pid}: field missing`);
  return Number(match[1]) * 1024;
}
