/**
 * @module
 * Runs one lsvd subcommand (`deno run -A main.ts <args>`) to completion for tests of the offline
 * tools: bounded by a timeout, stdin from bytes or a file, stdout captured as bytes (export to
 * `-` streams the image there) and stderr as text.
 */

import { join } from "node:path";
import { ROOT } from "./daemon.ts";

export interface LsvdRun {
  code: number;
  stdout: Uint8Array;
  /** stdout as text. */
  out: string;
  err: string;
}

export async function runLsvd(
  args: string[],
  options: { env?: Record<string, string>; stdin?: Uint8Array; timeoutMs?: number } = {},
): Promise<LsvdRun> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), options.timeoutMs ?? 120_000);
  try {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--no-prompt", join(ROOT, "main.ts"), ...args],
      cwd: ROOT,
      stdin: options.stdin === undefined ? "null" : "piped",
      stdout: "piped",
      stderr: "piped",
      signal: controller.signal,
      ...(options.env === undefined ? {} : { env: options.env }),
    }).spawn();
    if (options.stdin !== undefined) {
      const writer = child.stdin.getWriter();
      await writer.write(options.stdin);
      await writer.close();
    }
    const output = await child.output();
    return {
      code: output.code,
      stdout: output.stdout,
      out: new TextDecoder().decode(output.stdout),
      err: new TextDecoder().decode(output.stderr),
    };
  } finally {
    clearTimeout(timer);
  }
}

/** Runs lsvd and throws with its output unless it exits 0. */
export async function runLsvdOk(
  args: string[],
  options: { env?: Record<string, string>; stdin?: Uint8Array; timeoutMs?: number } = {},
): Promise<LsvdRun> {
  const r = await runLsvd(args, options);
  if (r.code !== 0) throw new Error(`lsvd ${args.join(" ")} exited with ${r.code}\n${r.out}\n${r.err}`);
  return r;
}
