/**
 * @module
 * The start-up probe of conditional writes: stores that honour If-None-Match and If-Match pass;
 * the memory store with its conditions switched off (a store without conditional writes) is
 * refused with one line that says what --no-fencing gives up. RGW is probed in s3_rgw_test.ts.
 */

import assert from "node:assert/strict";
import { DirectoryStore } from "../../src/store/directory.ts";
import { MemoryStore } from "../../src/store/memory.ts";
import { probeConditionalWrites, requireConditionalWrites } from "../../src/store/conditional_probe.ts";
import { isStoreError } from "../../src/store/store.ts";

Deno.test("probeConditionalWrites() passes the memory and directory stores and leaves no key", async () => {
  const memory = new MemoryStore();
  assert.equal(await probeConditionalWrites(memory, "vol/"), undefined);
  assert.deepEqual(memory.keys(), []);
  const root = await Deno.makeTempDir({ prefix: "lsvd-probe-" });
  try {
    const directory = new DirectoryStore(root);
    assert.equal(await probeConditionalWrites(directory, ""), undefined);
    assert.deepEqual((await directory.list({ prefix: "" })).objects, []);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("requireConditionalWrites() refuses a store that ignores conditions, in one line", async () => {
  const store = new MemoryStore({ ignoreConditions: true });
  await assert.rejects(requireConditionalWrites(store, ""), (e) => {
    assert(isStoreError(e, "Fatal"));
    assert.match(
      e.message,
      /^Cannot guarantee a single writer on the memory store: it ignores If-None-Match/,
    );
    assert.match(e.message, /--no-fencing/);
    assert(!e.message.includes("\n"));
    return true;
  });
  assert.deepEqual(store.keys(), []);
});
