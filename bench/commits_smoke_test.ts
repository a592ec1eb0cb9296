import assert from "node:assert/strict";
import { main } from "./commits.ts";

Deno.test("bench/commits.ts measures 16 connections' write + FLUSH on nbdkit file, lsvd's NBD layer on a file and lsvd --journal, at a tiny size", async () => {
  const lines: string[] = [];
  const log = console.log;
  console.log = (...a: unknown[]) => void lines.push(a.join(" "));
  try {
    assert.equal(
      await main(["--store", "dir", "--rounds", "1", "--seconds", "2", "--jobs", "4", "--floor"]),
      0,
    );
  } finally {
    console.log = log;
  }
  // IOPS, ratio, write mean and p99, FLUSH mean and p99, CPU per commit: all measured, none missing.
  const row = (setup: string) => lines.find((l) => l.startsWith(`| 1 | ${setup} |`));
  for (const setup of ["nbdkit-file", "deno-file", "lsvd-1"]) {
    assert.match(
      row(setup) ?? lines.join("\n"),
      /^\| 1 \| [\w-]+ \| [1-9]\d* \| [0-9.]+ \| \d+ \| [0-9.]+ \| \d+ \| [0-9.]+ \| \d+ \|$/,
    );
  }
});
