/**
 * @module
 * bench/clone.ts at its tiny scale on both stores (the directory store and Ceph RGW behind the WAN
 * proxy), so the clone benchmark cannot rot.
 */

import assert from "node:assert/strict";
import { runCloneBench } from "./clone.ts";

Deno.test({
  name: "bench/clone.ts runs at the tiny scale on dir and RGW and reports clone cost and flatten throughput",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const table = await runCloneBench("tiny");
    assert.match(table, /^\| 16 GiB \| 64 \| [\d.]+ ms \| \d+ ms \| .*put 2 \| n\/a \|$/m);
    assert.match(
      table,
      /^\| 16 GiB \| 64 \| [\d.]+ ms \| \d+ ms \| .*put 2 \| GET \d+, HEAD \d+, PUT 2 \|$/m,
    );
    assert.equal(table.match(/^\| flatten \/ raw \| \| [\d.]+ x \|$/gm)?.length, 2);
    assert.equal(table.match(/^check: the same requests at every size: PASS$/gm)?.length, 2);
  },
});
