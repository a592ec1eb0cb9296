/**
 * @module
 * The offline tools read their options through the same typed declarations as serve: a bad value
 * is one line naming the flag or the variable it came from (never a flag the user did not type),
 * sizes are held to the one sector-size rule, and the declared defaults reach the command. Runs the
 * real CLI on a directory store, before anything is read, so nothing is created.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { runLsvd } from "../support/lsvd_cli.ts";

function assertRefused(r: { code: number; err: string }, line: string, what: string): void {
  assert.equal(r.code, 1, `${what}: ${r.err}`);
  assert.equal(r.err.trim(), `lsvd: ${line}`, what);
}

Deno.test("lsvd tools name the flag or variable a bad option came from, in one line", async () => {
  const dir = await Deno.makeTempDir({ prefix: "lsvd-tool-options-" });
  const store = join(dir, "store");
  const env = { PATH: Deno.env.get("PATH") ?? "" };
  try {
    const cases: [string[], Record<string, string>, string][] = [
      // Before, the tools parsed --parallel themselves and named "--parallel" whatever the source.
      [
        ["verify"],
        { LSVD_PARALLEL: "0" },
        'Invalid LSVD_PARALLEL: "0" must be a whole number from 1 to 1024',
      ],
      [
        ["export", "-"],
        { LSVD_PARALLEL: "many" },
        'Invalid LSVD_PARALLEL: "many" must be a whole number from 1 to 1024',
      ],
      [["import", "--size", "5000", "-"], {}, "Invalid --size: 5000 bytes is not a multiple of 4096"],
      [
        ["import", "-"],
        { LSVD_OBJECT_SIZE: "1G" },
        "Invalid LSVD_OBJECT_SIZE: 1073741824 bytes is more than the maximum, 256M",
      ],
      [
        ["gc", "--dry-run", "--object-size", "6K"],
        {},
        "Invalid --object-size: 6144 bytes is not a multiple of 4096",
      ],
      [
        ["gc", "--dry-run"],
        { LSVD_RETENTION: "a while" },
        'Invalid LSVD_RETENTION: "a while" is not a duration such as 500ms, 90s, 30m, 24h or 7d',
      ],
      [["export", "-"], { LSVD_AT: "0" }, 'Invalid LSVD_AT: "0" must be an object number of 1 or more'],
      [["rollback"], { LSVD_TO: "0" }, 'Invalid LSVD_TO: "0" must be an object number of 1 or more'],
      [["info"], { LSVD_JSON: "maybe" }, 'Invalid LSVD_JSON: "maybe" is not a boolean (use true or false)'],
      [
        ["info"],
        { LSVD_CONNECTIONS: "0" },
        'Invalid LSVD_CONNECTIONS: "0" must be a whole number from 1 to 4096',
      ],
    ];
    for (const [args, vars, line] of cases) {
      const r = await runLsvd([...args, "--dir", store], { env: { ...env, ...vars } });
      assertRefused(r, line, `${args.join(" ")} ${JSON.stringify(vars)}`);
    }
    await assert.rejects(Deno.stat(store), Deno.errors.NotFound, "a refused tool created the store");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("lsvd gc --dry-run and import print the defaults they run with, declared once", async () => {
  for (const command of ["gc", "import"]) {
    const r = await runLsvd([command, "--help"]);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /--object-size SIZE .*\(default: 4M\)/, command);
  }
  const gc = await runLsvd(["gc", "--help"]);
  assert.match(gc.out, /--retention DURATION .*\(default: 24h\)/);
  assert.match((await runLsvd(["verify", "--help"])).out, /--parallel N .*\(default: 32\)/);
});
