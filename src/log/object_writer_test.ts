import assert from "node:assert/strict";
import { MemoryStore } from "../store/memory.ts";
import { isLsvdError } from "../util/errors.ts";
import { putLogObject, tryPutLogObject } from "./object_writer.ts";

const KEY = "vol/0000000000000007";

Deno.test("tryPutLogObject() stores once and answers false, changing nothing, when the number is taken", async () => {
  const store = new MemoryStore();
  const put = { key: KEY, bytes: new Uint8Array([1]) };
  assert.equal(await tryPutLogObject(store, put), true);
  assert.equal(await tryPutLogObject(store, { key: KEY, bytes: new Uint8Array([2]) }), false);
  assert.deepEqual([...store.rawGet(KEY)!], [1]);
  assert.equal(store.stats.puts, 2);
});

Deno.test("putLogObject() fails a taken number with kind fenced naming the key", async () => {
  const store = new MemoryStore();
  store.rawPut(KEY, new Uint8Array([9]));
  await assert.rejects(putLogObject(store, { key: KEY, bytes: new Uint8Array([1]) }), (e) => {
    assert(isLsvdError(e, "fenced"), String(e));
    assert.equal(
      e.message,
      `Cannot write object "${KEY}": it already exists; another writer is using this volume`,
    );
    return true;
  });
  assert.deepEqual([...store.rawGet(KEY)!], [9]);
});
