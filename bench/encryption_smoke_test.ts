/**
 * @module
 * Keeps bench/encryption.ts from rotting: a tiny run (16 MiB volume, 1 s per volume, one round)
 * must finish and report both workloads for the plain and the encrypted volume.
 */

import assert from "node:assert/strict";
import { main } from "./encryption.ts";

Deno.test("bench/encryption.ts measures writes and reads, encrypted and not, side by side at a tiny size", async () => {
  const lines: string[] = [];
  const log = console.log;
  console.log = (...a: unknown[]) => void lines.push(a.join(" "));
  try {
    assert.equal(await main(["--volume-mib", "16", "--seconds", "1", "--rounds", "1"]), 0);
  } finally {
    console.log = log;
  }
  const table = lines.join("\n");
  for (const workload of ["randwrite-4k", "seqread-1m"]) {
    for (const volume of ["plain", "encrypted"]) {
      const figure = new RegExp(`\\| ${workload} \\| ${volume} \\| (\\d+) `).exec(table)?.[1];
      assert(Number(figure) > 0, `${workload} ${volume}:\n${table}`);
    }
  }
});
