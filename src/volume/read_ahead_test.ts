import assert from "node:assert/strict";
import { seededRandom } from "../util/random.ts";
import { ReadAhead } from "./read_ahead.ts";

const ahead = () => new ReadAhead({ windowMinSectors: 256, windowMaxSectors: 4096 });

Deno.test("ReadAhead.observe() never prefetches for random 4 KiB reads over a small disk", () => {
  const r = ahead();
  const rand = seededRandom(5);
  let prefetched = 0;
  for (let i = 0; i < 20_000; i++) {
    const got = r.observe(Math.floor(rand() * 16384), 1); // 64 MiB: 8 streams' slack covers a quarter
    if (got !== undefined) prefetched += got.lengthSectors;
  }
  assert.equal(prefetched, 0);
});

Deno.test("ReadAhead.observe() prefetches for sequential readers, also when their reads arrive out of order", () => {
  const inOrder = ahead();
  let windows = 0;
  for (let s = 0; s < 8192; s += 32) if (inOrder.observe(s, 32) !== undefined) windows++;
  assert(windows >= 3, `${windows} prefetch windows`);
  const shuffled = ahead();
  windows = 0;
  for (let batch = 0; batch < 64; batch++) { // QD8 of 256-sector reads, each batch in reverse order
    for (let k = 7; k >= 0; k--) if (shuffled.observe((batch * 8 + k) * 256, 256) !== undefined) windows++;
  }
  assert(windows >= 3, `${windows} prefetch windows`);
});

Deno.test("ReadAhead.observe() fetches no more than the budget, and a stream without budget waits for room", () => {
  const r = ahead();
  let got;
  for (let s = 0; got === undefined && s < 4096; s += 32) got = r.observe(s, 32, 200);
  assert(got !== undefined);
  assert(got.lengthSectors <= 200, `${got.lengthSectors} sectors past a budget of 200`);
  const from = got.startSector + got.lengthSectors;
  // No budget left: nothing is fetched and the stream is not moved on past what it fetched.
  let s = from - 64;
  for (let k = 0; k < 4; k++, s += 32) assert.equal(r.observe(s, 32, 0), undefined);
  const next = r.observe(s, 32);
  assert(next !== undefined);
  assert.equal(next.startSector, Math.max(from, s + 32), "fetches on from where it stopped");
});
