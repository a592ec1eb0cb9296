/**
 * @module
 * bench/clone.ts at its tiny scale, so the clone benchmark cannot rot.
 */

import assert from "node:assert/strict";
import { runCloneBench } from "./clone.ts";

Deno.test("bench/clone.ts runs at the tiny scale and reports clone cost and flatten throughput", async () => {
  const table = await runCloneBench("tiny");
  assert.match(table, /^\| 64 \| [\d.]+ ms \| .*put 2/m);
  assert.match(table, /^\| flatten \/ raw \| \| [\d.]+ x \|$/m);
});
