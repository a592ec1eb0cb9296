/**
 * @module
 * S3Store refuses answers that are not the S3 answer it asked for, against fake endpoints a real
 * S3 server never imitates: a web server answering every request with 200 and an HTML page (the
 * SDK turns that into an empty listing and a PUT that "succeeded"), and servers that get one
 * detail wrong (a ranged GET answered with other bytes, a listing that miscounts its keys).
 * Every failure is one line naming the action; probeStore refuses such an endpoint outright.
 */

import assert from "node:assert/strict";
import { S3Store } from "../../src/store/s3.ts";
import { checkGetAnswer, checkListAnswer } from "../../src/store/s3_answers.ts";
import { probeStore } from "../../src/store/probe.ts";
import { isStoreError, type StoreErrorCode } from "../../src/store/store.ts";
import { MemoryStore } from "../../src/store/memory.ts";
import { DirectoryStore } from "../../src/store/directory.ts";
import { systemClock } from "../../src/util/clock.ts";

type Handler = (request: Request) => Response | Promise<Response>;

const HTML = "<!DOCTYPE html><html><head><title>Welcome</title></head><body><h1>It works!</h1></body></html>";

function htmlPage(): Response {
  return new Response(HTML, { status: 200, headers: { "content-type": "text/html" } });
}

/** Runs fn with a store pointed at a fake endpoint answering through handler. */
async function withFake(handler: Handler, fn: (store: S3Store, endpoint: string) => Promise<void>) {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (request) => {
    await request.arrayBuffer();
    return await handler(request);
  });
  const endpoint = `http://127.0.0.1:${server.addr.port}`;
  const store = new S3Store({
    bucket: "vol",
    endpoint,
    region: "us-east-1",
    forcePathStyle: true,
    credentials: { accessKeyId: "a", secretAccessKey: "s" },
  });
  try {
    await fn(store, endpoint);
  } finally {
    await store.close();
    await server.shutdown();
  }
}

/** The one-line message of the StoreError the operation fails with (asserting its code). */
async function failure(promise: Promise<unknown>, code: StoreErrorCode = "Fatal"): Promise<string> {
  try {
    await promise;
  } catch (error) {
    assert(isStoreError(error, code), `expected a ${code} StoreError, got ${error}`);
    assert(!error.message.includes("\n"), `the message should be one line: ${error.message}`);
    return error.message;
  }
  return assert.fail(`expected a ${code} StoreError, but the operation succeeded`);
}

Deno.test("S3Store refuses every answer of an endpoint that answers 200 with an HTML page", async () => {
  await withFake(htmlPage, async (store, endpoint) => {
    const hint = ` (is ${endpoint} an S3 endpoint?)`;
    assert.equal(
      await failure(store.list({ prefix: "p/" })),
      `Cannot list keys under "p/" in bucket "vol": the answer is not an S3 ListBucketResult${hint}`,
    );
    assert.equal(
      await failure(store.put("p/0000000000000001", new Uint8Array(4096), { ifNoneMatch: true })),
      `Cannot write object "p/0000000000000001" to bucket "vol": ` +
        `the answer has no ETag, so the write is not confirmed${hint}`,
    );
    assert.equal(
      await failure(store.get("p/0000000000000001", { offsetBytes: 4096, lengthBytes: 8192 })),
      `Cannot read object "p/0000000000000001" from bucket "vol": ` +
        `the answer to a GET of bytes 4096-12287 has no Content-Range${hint}`,
    );
    assert.match(
      await failure(store.copy("p/a", "p/b")),
      /^Cannot copy object "p\/a" to "p\/b" in bucket "vol": the answer has no ETag/,
    );
  });
});

Deno.test("probeStore() refuses an endpoint that answers 200 with an HTML page, in one line", async () => {
  let requests = 0;
  await withFake(() => (requests++, htmlPage()), async (store, endpoint) => {
    await store.check(); // a HEAD on the bucket cannot tell: that is why the probe exists
    const message = await failure(probeStore(store, "vol1"));
    assert.match(
      message,
      new RegExp(
        `^Cannot use the vol bucket for the volume: cannot write object "vol1/probe/[0-9a-f-]+" to bucket "vol": ` +
          `the answer has no ETag, so the write is not confirmed \\(is ${endpoint} an S3 endpoint\\?\\)$`,
      ),
    );
    const readOnly = await failure(probeStore(store, "vol1", { readOnly: true }));
    assert.match(readOnly, /^Cannot use the vol bucket for the volume: cannot list keys under "vol1\/"/);
  });
  assert(requests >= 3, `only ${requests} requests reached the fake`);
});

Deno.test("S3Store refuses a ranged GET answered with a different range", async () => {
  const answer = (status: number, contentRange: string, length: number) => () =>
    new Response(new Uint8Array(length), {
      status,
      headers: { "content-range": contentRange, etag: '"e"', "content-type": "application/octet-stream" },
    });
  await withFake(answer(206, "bytes 0-99/1000", 100), async (store) => {
    assert.match(
      await failure(store.get("k", { offsetBytes: 100, lengthBytes: 100 })),
      /^Cannot read object "k" from bucket "vol": the answer to a GET of bytes 100-199 holds bytes 0-99 \(is /,
    );
  });
  await withFake(answer(200, "", 1000), async (store) => {
    assert.match(
      await failure(store.get("k", { offsetBytes: 0, lengthBytes: 100 })),
      /the answer to a GET of bytes 0-99 has no Content-Range/,
    );
  });
  // The range reaching past the end of the object is answered up to the end: that is correct.
  await withFake(answer(206, "bytes 900-999/1000", 100), async (store) => {
    const result = await store.get("k", { offsetBytes: 900, lengthBytes: 4096 });
    assert.equal(result.body.length, 100);
    assert.equal(result.totalSizeBytes, 1000);
  });
});

Deno.test("S3Store refuses a listing whose KeyCount disagrees with its keys, or of another bucket", async () => {
  const listing = (name: string, keyCount: number) => () =>
    new Response(
      `<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>${name}</Name><Prefix>p/</Prefix>` +
        `<KeyCount>${keyCount}</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>` +
        `<Contents><Key>p/0000000000000001</Key><Size>4096</Size></Contents></ListBucketResult>`,
      { status: 200, headers: { "content-type": "application/xml" } },
    );
  await withFake(listing("vol", 1), async (store) => {
    assert.deepEqual(await store.list({ prefix: "p/" }), {
      objects: [{ key: "p/0000000000000001", sizeBytes: 4096 }],
      isTruncated: false,
    });
  });
  await withFake(listing("vol", 2), async (store) => {
    assert.match(await failure(store.list({ prefix: "p/" })), /the answer counts 2 keys but holds 1/);
  });
  await withFake(listing("other", 1), async (store) => {
    assert.match(await failure(store.list({ prefix: "p/" })), /the answer lists bucket "other" instead/);
  });
});

Deno.test("checkListAnswer() refuses keys outside the prefix, out of order, or a truncated empty page", () => {
  const request = { bucket: "b", prefix: "p/", startAfter: "p/2", maxKeys: 10 };
  const page = (keys: string[], IsTruncated = false) => ({
    Name: "b",
    IsTruncated,
    Contents: keys.map((Key) => ({ Key, Size: 1 })),
  });
  assert.deepEqual(checkListAnswer(page(["p/3", "p/4"]), request).objects.length, 2);
  assert.throws(() => checkListAnswer(page(["q/3"]), request), /"q\/3", which is not under the prefix/);
  assert.throws(() => checkListAnswer(page(["p/4", "p/3"]), request), /"p\/3" out of order/);
  assert.throws(() => checkListAnswer(page(["p/1"]), request), /"p\/1" out of order/);
  assert.throws(() => checkListAnswer(page([], true), request), /more keys follow but holds none/);
  assert.throws(
    () => checkListAnswer({ Name: "b", Contents: [{ Key: "p/3" }] }, request),
    /an entry without a key or size/,
  );
});

Deno.test("checkGetAnswer() calls a body shorter than its headers announce Transient", () => {
  assert.throws(
    () => checkGetAnswer({ ContentLength: 100 }, undefined, 60),
    (e: Error & { code?: string }) => e.code === "Transient" && /cut short \(60 of 100 bytes/.test(e.message),
  );
  assert.equal(checkGetAnswer({ ContentLength: 100 }, undefined, 100), 100);
});

Deno.test("probeStore() passes on the memory and directory stores and leaves nothing behind", async () => {
  const memory = new MemoryStore();
  await probeStore(memory, "vol1/");
  assert.deepEqual((await memory.list({ prefix: "" })).objects, []);
  const root = await Deno.makeTempDir({ prefix: "lsvd-probe-" });
  try {
    const directory = new DirectoryStore(root, { fsync: false });
    await probeStore(directory, "vol1");
    assert.deepEqual((await directory.list({ prefix: "" })).objects, []);
    assert.deepEqual([...Deno.readDirSync(root)].map((e) => e.name).filter((n) => n !== ".lsvd-tmp"), []);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("probeStore() refuses a store that reads back other bytes than it stored", async () => {
  class Forgetful extends MemoryStore {
    override async get(key: string, range?: { offsetBytes: number; lengthBytes: number }) {
      const result = await super.get(key, range);
      return { ...result, body: result.body.map((b) => b ^ 1) };
    }
  }
  const store = new Forgetful({ description: "the forgetful store" });
  const retry = { clock: systemClock, attemptsMax: 1 };
  assert.match(
    await failure(probeStore(store, "", { retry })),
    /^Cannot use the forgetful store for the volume: the probe object "probe\/[0-9a-f-]+" reads back different bytes/,
  );
  assert.deepEqual(
    (await store.list({ prefix: "" })).objects,
    [],
    "the probe object is deleted after a failure",
  );
});
