/**
 * @module
 * Runs the real daemon (`deno run -A main.ts serve ...`) as a child process for integration tests:
 * waits for `lsvd: Device is now operational.`, collects its log lines, and stops it with SIGTERM
 * (checking the shutdown lines and exit code 0) or SIGKILL (a crash). Every wait is bounded.
 */

import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { forEachLine } from "./lines.ts";

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const MAIN = join(ROOT, "main.ts");

export interface DaemonOptions {
  args: string[];
  env?: Record<string, string>;
  cwd?: string;
  /** Bound on start-up until "Device is now operational."; default 60 s. */
  startTimeoutMs?: number;
  /**
   * Run in a session and process group of its own, as a shell job is, so a test can signal the
   * whole group the way a terminal's Ctrl-C does (signalGroup()).
   */
  ownProcessGroup?: boolean;
}

export class Daemon {
  readonly child: Deno.ChildProcess;
  readonly lines: string[] = [];
  readonly exited: Promise<Deno.CommandStatus>;
  #output: Promise<void>;

  private constructor(child: Deno.ChildProcess) {
    this.child = child;
    this.exited = child.status;
    this.#output = Promise.all(
      [child.stderr, child.stdout].map((s) =>
        forEachLine(s, (l) => this.lines.push(l), { partialLast: true })
      ),
    ).then(() => {});
  }

  /** Spawns the daemon without waiting (for tests of start-up failures). */
  static spawn(options: DaemonOptions): Daemon {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--no-prompt", MAIN, "serve", ...options.args],
      cwd: options.cwd ?? ROOT,
      stdout: "piped",
      stderr: "piped",
      stdin: "null",
      ...(options.env === undefined ? {} : { env: options.env }),
      ...(options.ownProcessGroup ? { detached: true } : {}),
    }).spawn();
    return new Daemon(child);
  }

  /** Spawns the daemon and waits until it serves; throws with its log when it does not. */
  static async start(options: DaemonOptions): Promise<Daemon> {
    const daemon = Daemon.spawn(options);
    try {
      await daemon.waitForLine(/Device is now operational\./, options.startTimeoutMs ?? 60_000);
    } catch (e) {
      daemon.kill();
      await daemon.exited;
      throw new Error(`${(e as Error).message}\n--- daemon log\n${daemon.log}`);
    }
    return daemon;
  }

  get log(): string {
    return this.lines.join("\n");
  }

  async waitForLine(pattern: RegExp, timeoutMs: number): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    let exited = false;
    this.exited.then(() => (exited = true));
    while (Date.now() < deadline) {
      const found = this.lines.find((l) => pattern.test(l));
      if (found !== undefined) return found;
      if (exited) {
        await this.#output;
        const late = this.lines.find((l) => pattern.test(l));
        if (late !== undefined) return late;
        throw new Error(`the daemon exited before printing ${pattern}`);
      }
      await new Promise((r) => setTimeout(r, 25));
    }
    throw new Error(`the daemon did not print ${pattern} within ${timeoutMs} ms`);
  }

  /** SIGTERM, then the exit status and the whole log (bounded: SIGKILL after timeoutMs). */
  async stop(timeoutMs = 60_000): Promise<{ code: number; log: string }> {
    try {
      this.child.kill("SIGTERM");
    } catch {
      // already gone
    }
    const timer = setTimeout(() => this.kill(), timeoutMs);
    const status = await this.exited;
    clearTimeout(timer);
    await this.#output;
    return { code: status.code, log: this.log };
  }

  /** Sends signal to the daemon and everything it started (needs ownProcessGroup), as a terminal does. */
  signalGroup(signal: Deno.Signal): void {
    Deno.kill(-this.child.pid, signal);
  }

  /** SIGKILL: the process dies with whatever is in its memory. */
  kill(): void {
    try {
      this.child.kill("SIGKILL");
    } catch {
      // already gone
    }
  }

  /** Waits for exit (bounded) and returns code + log: for daemons expected to fail by themselves. */
  async finished(timeoutMs = 60_000): Promise<{ code: number; log: string }> {
    const timer = setTimeout(() => this.kill(), timeoutMs);
    const status = await this.exited;
    clearTimeout(timer);
    await this.#output;
    return { code: status.code, log: this.log };
  }
}

export function unixUri(socketPath: string, exportName = "lsvd"): string {
  return `nbd+unix:///${exportName}?socket=${socketPath}`;
}

/** A temp dir with a store dir and socket path; remove() when done. */
export async function scratch(): Promise<
  { dir: string; store: string; socket: string; remove(): Promise<void> }
> {
  const dir = await Deno.makeTempDir({ prefix: "lsvd-test-" });
  return {
    dir,
    store: join(dir, "store"),
    socket: join(dir, "nbd.sock"),
    remove: () => Deno.remove(dir, { recursive: true }).catch(() => {}),
  };
}
