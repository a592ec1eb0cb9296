import assert from "node:assert/strict";
import { main } from "./write_through.ts";

Deno.test("bench/write_through.ts measures buffered, write-through and journal writes side by side at a tiny size", async () => {
  const lines: string[] = [];
  const log = console.log, error = console.error;
  console.log = (...a: unknown[]) => void lines.push(a.join(" "));
  console.error = () => {};
  try {
    assert.equal(await main(["--rounds", "1", "--seconds", "0.3"]), 0);
  } finally {
    console.log = log;
    console.error = error;
  }
  const table = lines.join("\n");
  for (const workload of ["randwrite-4k", "seqwrite-1m", "commit-8k"]) {
    for (const mode of ["buffered", "write-through", "journal"]) {
      assert.match(table, new RegExp(`\\| ${workload} \\| ${mode} \\| [1-9][0-9]* (IOPS|MiB/s) \\|`));
    }
  }
});
