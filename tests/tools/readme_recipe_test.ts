/**
 * @module
 * The README's toolbox recipe (import, info, verify, export, serve, export --at, rollback) run
 * exactly as printed with bash -e in an empty directory, `lsvd` on PATH as this checkout's main.ts:
 * every line must succeed, including the `cmp`s that prove export, --at and rollback give the disk.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
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
