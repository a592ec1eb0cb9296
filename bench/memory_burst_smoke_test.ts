import assert from "node:assert/strict";
import { main } from "./memory_burst.ts";

Deno.test("bench/memory_burst.ts serves a burst with the VM's defaults and reports its peaks, at a tiny size", async () => {
  const lines: string[] = [];
  const log = console.log;
  console.log = (...a: unknown[]) => void lines.push(a.join(" "));
  try {
    assert.equal(await main(["--store", "dir", "--burst-mib", "8"]), 0);
  } finally {
    console.log = log;
  }
  const row = lines.find((l) => l.startsWith("| dir 1 |"));
  assert(row !== undefined, lines.join("\n"));
  // idle, peaks (MiB), external, heap, collections, MiB/s twice, the read's CPU seconds, the digest check
  assert.match(
    row,
    /^\| dir 1 \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| \d+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| yes \|$/,
  );
});
