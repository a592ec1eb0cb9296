/**
 * @module
 * Keeps bench/disk_cache.ts from rotting: a tiny run (16 MiB working set on Ceph RGW behind a short
 * WAN delay, a 2 MiB memory cache so reads miss it, 1 s per measured run) must produce every row with I/O done, and the warmed disk cache
 * must answer the reads of (a) and (c) (hits in their notes), so the bench measures what it says.
 */

import assert from "node:assert/strict";
import { main } from "./disk_cache.ts";

Deno.test({
  name:
    "bench/disk_cache.ts measures (a), (b), (c), the local file (page cache, cold, O_DIRECT) and nbdkit file at a tiny size",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const log = console.log;
    console.log = () => {};
    let rows;
    try {
      rows = await main(["--size-mib", "16", "--seconds", "1", "--delay-ms", "5", "--memory-cache-mib", "2"]);
    } finally {
      console.log = log;
    }
    const names = rows.map((r) => r.name.split(" ")[0]);
    assert.deepEqual(names, [
      "(b)",
      "(a)",
      "(c)",
      "local-file",
      "local-file-cold",
      "local-file-direct",
      "nbdkit-file",
    ]);
    for (const r of rows) assert.ok(r.fio.iops > 0 && r.fio.ios > 0, `${r.name}: no I/O`);
    for (const r of rows.slice(1, 3)) {
      const hits = Number(/([\d,]+) disk-cache hits/.exec(r.note ?? "")?.[1]?.replaceAll(",", ""));
      assert.ok(hits > 0, `${r.name}: the disk cache answered nothing: ${r.note}`);
    }
    assert.match(rows[1]!.note!, /\(100\.0 %\) in the disk cache/, "the sequential warm-up fills the cache");
  },
});

Deno.test("bench/disk_cache_index.ts measures the index's memory at a tiny size", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--v8-flags=--expose-gc",
      new URL("./disk_cache_index.ts", import.meta.url).pathname,
      "--size-mib",
      "16",
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  assert.match(text, /^--cache-dir-size 16 MiB: \d+ slots, all filled$/m);
  const perGiB = Number(/per GiB of SIZE: +([\d.]+) MiB/.exec(text)?.[1]);
  // 17 bytes of typed arrays a slot alone are 4.25 MiB per GiB; Map entries come on top.
  assert.ok(perGiB > 4 && perGiB < 64, text);
  assert.match(text, /the fill's writes, per 4 MiB added: +\d+\.\d\d ms of this thread/);
});
