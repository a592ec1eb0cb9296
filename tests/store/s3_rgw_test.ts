/**
 * @module
 * S3Store against a real Ceph RADOS Gateway started for this file: the conformance suite, then
 * the error mapping a user meets (wrong secret, missing bucket, unreachable endpoint).
 */

import assert from "node:assert/strict";
import { S3Store, type S3StoreOptions } from "../../src/store/s3.ts";
import { isStoreError } from "../../src/store/store.ts";
import { probeStore } from "../../src/store/probe.ts";
import { probeConditionalWrites } from "../../src/store/conditional_probe.ts";
import { freePort } from "../support/ports.ts";
import { type Rgw, startRgw } from "../support/rgw.ts";
import { runStoreConformanceSteps } from "./conformance.ts";

function storeOn(rgw: Rgw, overrides: Partial<S3StoreOptions> = {}): S3Store {
  return new S3Store({
    bucket: rgw.bucket,
    endpoint: rgw.endpoint,
    region: rgw.region,
    forcePathStyle: true,
    credentials: { accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey },
    ...overrides,
  });
}

async function fatalMessage(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (error) {
    assert(isStoreError(error, "Fatal"), `expected a Fatal StoreError, got ${error}`);
    assert(!error.message.includes("\n"), `the message should be one line: ${error.message}`);
    return error.message;
  }
  return assert.fail("expected a Fatal StoreError, but the operation succeeded");
}

Deno.test({
  name: "S3Store against Ceph RGW",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    const rgw = await startRgw();
    try {
      await t.step("S3Store passes the object store conformance suite", async (t) => {
        await runStoreConformanceSteps(t, () => storeOn(rgw));
      });

      await t.step("S3Store.checkBucket() succeeds on a bucket that exists", async () => {
        const store = storeOn(rgw);
        await store.checkBucket();
        await store.check();
        await store.close();
      });

      await t.step("probeStore() passes on RGW and leaves no key behind", async () => {
        const store = storeOn(rgw);
        try {
          await probeStore(store, "probe-test");
          await probeStore(store, "probe-test", { readOnly: true });
          assert.deepEqual((await store.list({ prefix: "probe-test/" })).objects, []);
        } finally {
          await store.close();
        }
      });

      await t.step(
        "S3Store ranged GETs return exactly the range asked for, up to the object's end",
        async () => {
          const store = storeOn(rgw);
          try {
            const body = Uint8Array.from({ length: 5000 }, (_, i) => i % 251);
            await store.put("ranges/k", body);
            for (
              const [offsetBytes, lengthBytes] of [[0, 5000], [0, 1], [4999, 1], [4000, 4096], [1, 9999]]
            ) {
              const got = await store.get("ranges/k", {
                offsetBytes: offsetBytes!,
                lengthBytes: lengthBytes!,
              });
              assert.deepEqual(got.body, body.subarray(offsetBytes!, offsetBytes! + lengthBytes!));
              assert.equal(got.totalSizeBytes, 5000);
            }
            await store.delete("ranges/k");
          } finally {
            await store.close();
          }
        },
      );

      await t.step("probeConditionalWrites() finds If-None-Match and If-Match honoured by RGW", async () => {
        const store = storeOn(rgw);
        assert.equal(await probeConditionalWrites(store, "probe-test/"), undefined);
        assert.deepEqual((await store.list({ prefix: "probe-test/" })).objects, []);
        await store.close();
      });

      await t.step("S3Store with a wrong secret fails with a Fatal credentials error", async () => {
        const store = storeOn(rgw, {
          credentials: { accessKeyId: rgw.accessKeyId, secretAccessKey: "wrong-secret" },
        });
        const check = await fatalMessage(store.checkBucket());
        assert.match(check, /^Cannot open bucket "lsvd-test" at .*: the credentials were rejected/);
        const read = await fatalMessage(store.get("some/key"));
        assert.match(
          read,
          /^Cannot read object "some\/key" from bucket "lsvd-test": the credentials were rejected \(SignatureDoesNotMatch\)$/,
        );
        await store.close();
      });

      await t.step("S3Store on a missing bucket fails with a Fatal 'does not exist' error", async () => {
        const store = storeOn(rgw, { bucket: "no-such-bucket" });
        assert.equal(
          await fatalMessage(store.get("k")),
          'Cannot read object "k" from bucket "no-such-bucket": the bucket does not exist',
        );
        assert.match(await fatalMessage(store.checkBucket()), /: the bucket does not exist$/);
        assert.match(await fatalMessage(store.put("k", new Uint8Array(1))), /: the bucket does not exist$/);
        assert.match(await fatalMessage(store.list({ prefix: "" })), /: the bucket does not exist$/);
        await store.close();
      });

      await t.step("S3Store.createBucket() buckets are usable from a fresh store", async () => {
        await rgw.createBucket("second-bucket");
        const store = storeOn(rgw, { bucket: "second-bucket" });
        await store.put("k", new TextEncoder().encode("v"), { ifNoneMatch: true });
        assert.equal(new TextDecoder().decode((await store.get("k")).body), "v");
        await store.close();
      });
    } finally {
      await rgw.stop();
    }
  },
});

Deno.test({
  name: "S3Store on an unreachable endpoint fails at once with a Transient error naming the endpoint",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const endpoint = `http://127.0.0.1:${freePort()}`;
    const store = new S3Store({
      bucket: "b",
      endpoint,
      forcePathStyle: true,
      credentials: { accessKeyId: "a", secretAccessKey: "s" },
      connectTimeoutMs: 1_000,
    });
    const started = performance.now();
    try {
      await assert.rejects(store.get("k"), (e) => {
        assert(isStoreError(e, "Transient"), `${e}`);
        assert.match(
          e.message,
          new RegExp(`^Cannot read object "k" from bucket "b": cannot reach ${endpoint}`),
        );
        return true;
      });
      const message = await fatalMessage(store.checkBucket());
      assert.match(message, new RegExp(`^Cannot open bucket "b" at ${endpoint}: cannot reach it \\(`));
      assert(performance.now() - started < 5_000, "one attempt each, no retries inside the store");
    } finally {
      await store.close();
    }
  },
});
