import assert from "node:assert/strict";
import { main } from "./offload.ts";

Deno.test("bench/offload.ts measures inline, async-op and worker reads side by side at a tiny size", async () => {
  const lines: string[] = [];
  const log = console.log;
  console.log = (...a: unknown[]) => void lines.push(a.join(" "));
  try {
    assert.equal(await main(["--rounds", "1", "--seconds", "0.3"]), 0);
  } finally {
    console.log = log;
  }
  const table = lines.join("\n");
  for (const mode of ["inline", "inline-crc", "async-op", "worker-1", "worker-2", "worker-2-crc"]) {
    // reads per second: a whole number of at least 4 digits (every mode reads thousands in 0.3 s)
    assert.match(table, new RegExp(`\\| ${mode} \\| [1-9][0-9]{0,2}(,[0-9]{3})+ \\| [0-9.]+ \\|`));
  }
  // Inline reads keep this thread busy for the whole run: its CPU per read is measured, not 0.
  assert.doesNotMatch(table, /\| inline \| [^|]+ \| [^|]+ \| 0\.00 \|/);
});
