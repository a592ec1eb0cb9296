import assert from "node:assert/strict";
import { LazyS3Store } from "./lazy_s3.ts";
import { StoreError } from "./store.ts";

Deno.test("LazyS3Store checks its options at once, before the SDK is loaded", () => {
  assert.throws(() => new LazyS3Store({ bucket: "" }), (e) => e instanceof StoreError && e.code === "Fatal");
  assert.throws(
    () => new LazyS3Store({ bucket: "b", connections: 0 }),
    /connections 0 is not a positive integer/,
  );
});

Deno.test("LazyS3Store loads the S3 store on its first request and answers through it", async () => {
  // A port nothing listens on: the request reaches the real S3 store, which names the endpoint.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  const store = new LazyS3Store({
    bucket: "b",
    endpoint: `http://127.0.0.1:${port}`,
    forcePathStyle: true,
    credentials: { accessKeyId: "a", secretAccessKey: "s" },
    connectTimeoutMs: 500,
    requestDeadlineMs: 1_000,
  });
  assert.equal(store.description, "the b bucket");
  await assert.rejects(store.head("k"), (e) => e instanceof StoreError && /127\.0\.0\.1/.test(e.message));
  await store.close();
  await new LazyS3Store({ bucket: "b" }).close(); // never loaded: nothing to close
});
