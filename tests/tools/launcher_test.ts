/**
 * bin/lsvd's choice of V8's memory saver mode (docs/design/memory-on-a-bucket.md): on with
 * LSVD_MEMORY_SAVER=on, off with off, by the memory lsvd's defaults see otherwise (under 2 GiB), and a bad value
 * refused in one line. The launcher execs Deno, so the daemon's own command line shows the choice.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { ROOT } from "../support/daemon.ts";
import { availableMemoryBytes } from "../../src/cli/memory_defaults.ts";

const SAVER = "--v8-flags=--memory-saver-mode";

/** Starts `bin/lsvd serve` with LSVD_MEMORY_SAVER=value and returns the daemon's command line. */
async function daemonCommandLine(value: string | undefined): Promise<string[]> {
  const dir = await Deno.makeTempDir({ prefix: "lsvd-launcher-" });
  const env: Record<string, string> = value === undefined ? {} : { LSVD_MEMORY_SAVER: value };
  const child = new Deno.Command(join(ROOT, "bin", "lsvd"), {
    args: ["serve", "--dir", join(dir, "store"), "--size", "16M", "--socket", join(dir, "sock")],
    env,
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    for (let i = 0; i < 300; i++) {
      const args = Deno.readTextFileSync(`/proc/${child.pid}/cmdline`).split("\0");
      if (args.some((a) => a.endsWith("main.ts"))) return args; // the shell has exec'd Deno
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error("bin/lsvd did not exec Deno within 6 s");
  } finally {
    child.kill("SIGTERM");
    await child.status;
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("bin/lsvd gives V8's memory saver mode on a small machine or when told, and refuses a bad LSVD_MEMORY_SAVER", async () => {
  assert((await daemonCommandLine("on")).includes(SAVER));
  assert(!(await daemonCommandLine("off")).includes(SAVER));
  assert.equal((await daemonCommandLine(undefined)).includes(SAVER), availableMemoryBytes() < 2 ** 31);
  const bad = await new Deno.Command(join(ROOT, "bin", "lsvd"), {
    args: ["--version"],
    env: { LSVD_MEMORY_SAVER: "yes" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(bad.code, 2);
  assert.equal(
    new TextDecoder().decode(bad.stderr),
    'lsvd: LSVD_MEMORY_SAVER must be on, off or auto, not "yes"\n',
  );
});
