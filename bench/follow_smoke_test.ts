/**
 * @module
 * bench/follow.ts at its tiny scale, so the follower benchmark cannot rot.
 */

import assert from "node:assert/strict";
import { runFollowBench } from "./follow.ts";

Deno.test("bench/follow.ts runs at the tiny scale and reports follower lag and warm and cold failover", async () => {
  const table = await runFollowBench("tiny", { min: 1, max: 3 });
  assert.match(table, /^\| 250 ms \| \d+ \| [\d.]+ s \| [\d.]+ s \| [\d.]+ s \| \d+ \|$/m);
  assert.match(table, /^\| cold --takeover \| 100 \| [\d.]+ s \| \d+ GET/m);
  assert.match(table, /^\| warm --standby \| 100 \| [\d.]+ s \| \d+ GET/m);
});
