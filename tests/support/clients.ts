/**
 * @module
 * Runs external NBD clients (nbdinfo, nbdcopy, qemu-io, fio, nbdsh...) from tests: every run is
 * bounded by a timeout, output is captured, and a failure reports the command with its output.
 */

/** Debian's python, which sees python3-libnbd (a pyenv python3 earlier in PATH does not). */
export const SYSTEM_PYTHON = "/usr/bin/python3";

export interface RunOptions {
  /** Killed (SIGKILL) after this long; default 60 s. */
  timeoutMs?: number;
  stdin?: Uint8Array | string;
  env?: Record<string, string>;
  cwd?: string;
}

export interface RunResult {
  command: string;
  code: number;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

/** Runs a program to completion (or timeout) and captures its output. */
export async function runClient(
  program: string,
  args: string[],
  options: RunOptions = {},
): Promise<RunResult> {
  const command = [program, ...args].join(" ");
  const controller = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    controller.abort();
  }, options.timeoutMs ?? 60_000);
  try {
    const child = new Deno.Command(program, {
      args,
      stdin: options.stdin === undefined ? "null" : "piped",
      stdout: "piped",
      stderr: "piped",
      signal: controller.signal,
      ...(options.env === undefined ? {} : { env: options.env }),
      ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
    }).spawn();
    if (options.stdin !== undefined) {
      const writer = child.stdin.getWriter();
      const input = typeof options.stdin === "string"
        ? new TextEncoder().encode(options.stdin)
        : options.stdin;
      await writer.write(input).catch(() => {});
      await writer.close().catch(() => {});
    }
    const output = await child.output();
    const decoder = new TextDecoder();
    return {
      command,
      code: output.code,
      stdout: decoder.decode(output.stdout),
      stderr: decoder.decode(output.stderr),
      timedOut,
    };
  } finally {
    clearTimeout(timer);
  }
}

/** Like runClient, but throws (with the output) unless the program exits 0 in time. */
export async function runClientOk(
  program: string,
  args: string[],
  options: RunOptions = {},
): Promise<RunResult> {
  const result = await runClient(program, args, options);
  if (result.code !== 0 || result.timedOut) throw new Error(describeFailure(result));
  return result;
}

export function describeFailure(result: RunResult): string {
  const why = result.timedOut ? "timed out" : `exited with ${result.code}`;
  return `${result.command} ${why}\n--- stdout\n${result.stdout}\n--- stderr\n${result.stderr}`;
}

/**
 * Runs a Python script under nbdsh (Debian's python3 -m nbd), where `nbd` is imported.
 * The script creates its own handles, so it can drive option negotiation itself.
 */
export function runNbdsh(script: string, options: RunOptions = {}): Promise<RunResult> {
  return runClient(SYSTEM_PYTHON, ["-m", "nbd", "-c", script], options);
}

/** True when a program can be found on PATH (for clear skips on machines without a client). */
export function hasProgram(program: string): boolean {
  const path = Deno.env.get("PATH") ?? "";
  return path.split(":").some((dir) => {
    try {
      return Deno.statSync(`${dir}/${program}`).isFile;
    } catch {
      return false;
    }
  });
}

export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Deterministic pseudo-random bytes (xorshift32) for data that must be reproducible from a seed. */
export function seededBytes(lengthBytes: number, seed: number): Uint8Array {
  const out = new Uint8Array(lengthBytes);
  const words = new Uint32Array(out.buffer, 0, Math.floor(lengthBytes / 4));
  let x = seed >>> 0 || 1;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x >>> 0;
  }
  return out;
}
