/**
 * @module
 * Keeps bench/gc.ts from rotting: a tiny run (16 MiB volume, one round) must finish and show
 * garbage collection shrinking the bucket.
 */

import assert from "node:assert/strict";
import { main } from "./gc.ts";

Deno.test("bench/gc.ts runs GC on and off side by side at a tiny size", async () => {
  const lines: string[] = [];
  const log = console.log;
  console.log = (...a: unknown[]) => void lines.push(a.join(" "));
  try {
    assert.equal(await main(["--volume-mib", "16", "--rounds", "1"]), 0);
  } finally {
    console.log = log;
  }
  const table = lines.join("\n");
  const ratio = (mode: string) =>
    Number(new RegExp(`\\| ${mode} \\| \\d+ \\| ([\\d.]+) \\|`).exec(table)?.[1]);
  assert(ratio("gc on") < ratio("gc off"), table);
});
