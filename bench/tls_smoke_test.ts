/**
 * @module
 * Keeps bench/tls.ts from rotting: a tiny run (16 MiB volume, 1 s per client, one round) must
 * finish and report every workload for every client, plaintext and TLS.
 */

import assert from "node:assert/strict";
import { main } from "./tls.ts";

Deno.test("bench/tls.ts measures reads with and without TLS side by side at a tiny size", async () => {
  const lines: string[] = [];
  const log = console.log;
  console.log = (...a: unknown[]) => void lines.push(a.join(" "));
  try {
    assert.equal(await main(["--volume-mib", "16", "--seconds", "1", "--rounds", "1"]), 0);
  } finally {
    console.log = log;
  }
  const table = lines.join("\n");
  for (const workload of ["seqread-1m", "randread-4k"]) {
    for (const client of ["plain, no TLS", "plain, --tls on", "TLS, --tls on"]) {
      const figure = new RegExp(`\\| ${workload} \\| ${client} \\| (\\d+) `).exec(table)?.[1];
      assert(Number(figure) > 0, `${workload} ${client}:\n${table}`);
    }
  }
});
