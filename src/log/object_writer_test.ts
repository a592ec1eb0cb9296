import assert from "node:assert/strict";
import { MemoryStore } from "../store/memory.ts";
import { ManualClock } from "../util/clock.ts";
import { isLsvdError } from "../util/errors.ts";
import { putLogObject, tryPutLogObject } from "./object_writer.ts";

const KEY = "vol/0000000000000007";
const retry = { clock: new ManualClock(), attemptsMax: 3 };

Deno.test("tryPutLogObject() stores once and answers false, changing nothing, when the number is taken", async () => {
  const store = new MemoryStore();
  let attempts = 0;
  const put = { key: KEY, bytes: new Uint8Array([1]), onAttempt: () => attempts++ };
  assert.equal(await tryPutLogObject(store, retry, put), true);
  assert.equal(await tryPutLogObject(store, retry, { key: KEY, bytes: new Uint8Array([2]) }), false);
  assert.deepEqual([...store.rawGet(KEY)!], [1]);
  assert.equal(attempts, 1);
});

Deno.test("putLogObject() fails a taken number with kind fenced naming the key", async () => {
  const store = new MemoryStore();
  store.rawPut(KEY, new Uint8Array([9]));
  await assert.rejects(putLogObject(store, retry, { key: KEY, bytes: new Uint8Array([1]) }), (e) => {
    assert(isLsvdError(e, "fenced"), String(e));
    assert.equal(
      e.message,
      `Cannot write object "${KEY}": it already exists; another writer is using this volume`,
    );
    return true;
  });
  assert.deepEqual([...store.rawGet(KEY)!], [9]);
});
