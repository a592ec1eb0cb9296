/**
 * @module
 * The README's toolbox recipe (import, info, verify, export, serve, export --at, rollback) run
 * exactly as printed with bash -e in an empty directory, `lsvd` on PATH as this checkout's main.ts:
 * every line must succeed, including the `cmp`s that prove export, --at and rollback give the disk.
 * And the README's opening command, as printed, on a fresh copy of the checkout with no Deno on
 * PATH (Node and npm only): it installs Deno from npm, serves, and both `kill $!` and Ctrl-C (SIGINT
 * to the whole foreground job, as a terminal sends it) reach lsvd itself, which flushes and exits 0.
 */

import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { ROOT } from "../support/daemon.ts";
import { runClient } from "../support/clients.ts";

async function readmeRecipe(name: string): Promise<string> {
  const readme = await Deno.readTextFile(join(ROOT, "README.md"));
  const at = readme.indexOf(`<!-- recipe: ${name}`);
  assert(at >= 0, `README has no ${name} recipe`);
  const block = /```sh\n([\s\S]*?)```/.exec(readme.slice(at));
  assert(block !== null);
  return block[1]!;
}

Deno.test("the README's toolbox recipe works as printed", async () => {
  const dir = await Deno.makeTempDir({ prefix: "lsvd-recipe-" });
  try {
    const bin = join(dir, "bin");
    await Deno.mkdir(bin);
    await Deno.writeTextFile(
      join(bin, "lsvd"),
      `#!/bin/sh\nexec "${Deno.execPath()}" run -A "${join(ROOT, "main.ts")}" "$@"\n`,
    );
    await Deno.chmod(join(bin, "lsvd"), 0o755);
    const recipe = await readmeRecipe("toolbox");
    // If a line fails while the daemon runs, take it down (its pid is in LSVD_PID).
    const script = `trap 'kill $LSVD_PID 2>/dev/null || true' EXIT\n${recipe}`;
    const r = await runClient("bash", ["-e", "-c", script], {
      cwd: dir,
      timeoutMs: 180_000,
      env: { PATH: `${bin}:${Deno.env.get("PATH")}`, HOME: Deno.env.get("HOME") ?? dir },
    });
    assert.equal(r.code, 0, `the recipe failed:\n${r.stdout}\n${r.stderr}`);
    assert.match(r.stderr, /Imported 16777216 bytes/);
    assert.match(r.stderr, /All 4 objects .* are good/);
    assert.match(r.stdout, /would move 0000000000000005 to archive\/rollback-/);
    assert.match(r.stderr, /Rolled back .* to object 4/);
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

/** The first shell block of the README: the command a new user runs first. */
async function openingCommand(): Promise<string> {
  const readme = await Deno.readTextFile(join(ROOT, "README.md"));
  const block = /```sh\n([\s\S]*?)```/.exec(readme);
  assert(block !== null);
  const lines = block[1]!.trim().split("\n");
  assert.equal(lines.length, 1, "the opening block is one command");
  return lines[0]!;
}

/** What a fresh clone holds: every tracked (and new, not ignored) file of this checkout, modes kept. */
async function freshClone(dir: string): Promise<void> {
  const listed = await runClient("git", ["ls-files", "-z", "--cached", "--others", "--exclude-standard"], {
    cwd: ROOT,
  });
  assert.equal(listed.code, 0, listed.stderr);
  for (const path of new Set(listed.stdout.split("\0").filter((p) => p !== ""))) {
    const info = await Deno.stat(join(ROOT, path)).catch(() => undefined);
    if (!info?.isFile) continue; // deleted in the work tree
    await Deno.mkdir(dirname(join(dir, path)), { recursive: true });
    await Deno.copyFile(join(ROOT, path), join(dir, path));
    await Deno.chmod(join(dir, path), info.mode! & 0o777);
  }
}

/** PATH without any directory that has a deno (node and npm stay): the command must bring its own. */
function pathWithoutDeno(): string {
  return (Deno.env.get("PATH") ?? "").split(":").filter((dir) => {
    try {
      Deno.statSync(join(dir, "deno"));
      return false;
    } catch {
      return true;
    }
  }).join(":");
}

Deno.test({
  name:
    "the README's opening command works as printed on a fresh clone; kill and Ctrl-C stop lsvd itself, exit 0",
  sanitizeResources: false,
  async fn() {
    const command = await openingCommand();
    const dir = await Deno.makeTempDir({ prefix: "lsvd-clone-" });
    const env = { PATH: pathWithoutDeno(), npm_config_prefer_offline: "true" };
    let job: Deno.ChildProcess | undefined;
    try {
      await freshClone(dir);
      // In the background, stopped with kill $! as a script would.
      const script = `${command} 2>lsvd.log &
LSVD_PID=$!
until grep -q "Device is now operational" lsvd.log; do kill -0 $LSVD_PID; sleep 0.2; done
kill $LSVD_PID
wait $LSVD_PID
test ! -e lsvd.sock`;
      const r = await runClient("bash", ["-e", "-c", script], { cwd: dir, timeoutMs: 300_000, env });
      const log = await Deno.readTextFile(join(dir, "lsvd.log")).catch(() => "");
      assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}\n${log}`);
      assert.match(log, /^lsvd: Installing Deno \d+\.\d+\.\d+ from npm into .*\/\.tools\/ \(once\)\.$/m);
      assert.match(log, /^lsvd: Device has shut down\.$/m);
      const lease = JSON.parse(await Deno.readTextFile(join(dir, "lsvd-data", "lease.json")));
      assert.equal(lease.released, true);

      // In the foreground of its own job, stopped with Ctrl-C: the shell sees lsvd's own status.
      job = new Deno.Command("bash", {
        args: ["-c", `${command}; echo "status $?" >&2`],
        cwd: dir,
        env,
        detached: true,
        stdin: "null",
        stdout: "null",
        stderr: "piped",
      }).spawn();
      let output = "";
      const reading = (async () => {
        for await (const chunk of job!.stderr.pipeThrough(new TextDecoderStream())) output += chunk;
      })();
      const deadline = Date.now() + 120_000;
      while (!output.includes("Device is now operational.") && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      Deno.kill(-job.pid, "SIGINT");
      const status = await job.status;
      await reading;
      job = undefined;
      assert.equal(status.code, 0, output);
      assert.match(output, /^lsvd: Device has shut down\.$/m);
      assert.match(output, /^status 0$/m, output);
      assert.doesNotMatch(output, /Installing Deno/, "installed once");
    } finally {
      if (job !== undefined) {
        try {
          Deno.kill(-job.pid, "SIGKILL");
        } catch {
          // gone
        }
        await job.status;
      }
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
