/**
 * @module
 * S3Store's one-request-per-call contract, retries through withRetries and create-only logic
 * against a scripted fake S3 endpoint, for the answers a real server gives only under load or by
 * bad luck: 503 SlowDown, 500 on a conditional PUT that landed (RGW does this to racing creates),
 * and many requests at once. The S3 semantics themselves are tested against Ceph RGW in
 * s3_rgw_test.ts.
 */

import assert from "node:assert/strict";
import { S3Store } from "../../src/store/s3.ts";
import { isStoreError } from "../../src/store/store.ts";
import { withRetries } from "../../src/store/retry.ts";
import { systemClock } from "../../src/util/clock.ts";

const retry = { clock: systemClock, attemptsMax: 4 };

type Handler = (request: Request, body: Uint8Array) => Response | Promise<Response>;

function s3Error(status: number, code: string): Response {
  const xml =
    `<?xml version="1.0" encoding="UTF-8"?><Error><Code>${code}</Code><Message>${code}</Message></Error>`;
  return new Response(xml, { status, headers: { "content-type": "application/xml" } });
}

function objectResponse(body: Uint8Array): Response {
  return new Response(body.slice() as Uint8Array<ArrayBuffer>, {
    status: 200,
    headers: { "content-length": `${body.length}`, etag: '"e"', "content-type": "application/octet-stream" },
  });
}

/** Runs fn with a store pointed at a fake S3 server answering through handler. */
async function withFakeS3(handler: Handler, fn: (store: S3Store) => Promise<void>, connections = 10) {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (request) => {
    const body = new Uint8Array(await request.arrayBuffer());
    return await handler(request, body);
  });
  const store = new S3Store({
    bucket: "fake",
    endpoint: `http://127.0.0.1:${server.addr.port}`,
    region: "us-east-1",
    forcePathStyle: true,
    credentials: { accessKeyId: "a", secretAccessKey: "s" },
    connections,
  });
  try {
    await fn(store);
  } finally {
    await store.close();
    await server.shutdown();
  }
}

Deno.test("withRetries() retries S3Store's 503 SlowDown and succeeds when the server recovers", async () => {
  let puts = 0;
  await withFakeS3((request) => {
    assert.equal(request.method, "PUT");
    return ++puts <= 2
      ? s3Error(503, "SlowDown")
      : new Response(null, { status: 200, headers: { etag: '"e"' } });
  }, async (store) => {
    await withRetries(retry, () => store.put("k", new Uint8Array([1, 2, 3])));
  });
  assert.equal(puts, 3);
});

Deno.test("S3Store makes one request per call: a 500 is a Transient error at once", async () => {
  let gets = 0;
  await withFakeS3(() => {
    gets++;
    return s3Error(500, "InternalError");
  }, async (store) => {
    await assert.rejects(store.get("k"), (e) => isStoreError(e, "Transient"));
  });
  assert.equal(gets, 1);
});

Deno.test("withRetries() gives up with S3Store's Transient error after attemptsMax 500 answers", async () => {
  let gets = 0;
  await withFakeS3(() => {
    gets++;
    return s3Error(500, "InternalError");
  }, async (store) => {
    await assert.rejects(withRetries(retry, () => store.get("k")), (e) => {
      assert(isStoreError(e, "Transient"), `${e}`);
      assert.equal(e.message, 'Cannot read object "k" from bucket "fake": the server answered InternalError');
      return true;
    });
  });
  assert.equal(gets, 4);
});

/** A fake that stores the first PUT but answers it 500, then 412 (the RGW racing-create quirk). */
function landedThen412(stored: { body?: Uint8Array }): Handler {
  let puts = 0;
  return (request, body) => {
    if (request.method === "PUT") {
      assert.equal(request.headers.get("if-none-match"), "*");
      if (++puts === 1) {
        stored.body ??= body;
        return s3Error(500, "InternalError");
      }
      return s3Error(412, "PreconditionFailed");
    }
    if (request.method === "GET" && stored.body) return objectResponse(stored.body);
    return s3Error(404, "NoSuchKey");
  };
}

Deno.test("S3Store create-only put answered 500 then 412 succeeds when the stored bytes are its own", async () => {
  const stored: { body?: Uint8Array } = {};
  await withFakeS3(landedThen412(stored), async (store) => {
    await withRetries(retry, () => store.put("k", new Uint8Array([1, 2, 3]), { ifNoneMatch: true }));
  });
  assert.deepEqual(stored.body, new Uint8Array([1, 2, 3]));
});

Deno.test("S3Store create-only put answered 500 then 412 fails when another writer's bytes are stored", async () => {
  const stored: { body?: Uint8Array } = { body: new Uint8Array([9, 9, 9]) };
  await withFakeS3(landedThen412(stored), async (store) => {
    await assert.rejects(
      withRetries(retry, () => store.put("k", new Uint8Array([1, 2, 3]), { ifNoneMatch: true })),
      (e) => isStoreError(e, "PreconditionFailed"),
    );
  });
});

/** The most requests the fake saw at once while `requests` GETs ran on `connections` connections. */
async function peakInFlight(connections: number, requests: number): Promise<number> {
  let inFlight = 0;
  let peak = 0;
  await withFakeS3(async () => {
    peak = Math.max(peak, ++inFlight);
    await new Promise((resolve) => setTimeout(resolve, 50));
    inFlight--;
    return objectResponse(new Uint8Array([7]));
  }, async (store) => {
    const results = await Promise.all(Array.from({ length: requests }, (_, i) => store.get(`k${i}`)));
    assert(results.every((r) => r.body[0] === 7 && r.totalSizeBytes === 1));
  }, connections);
  return peak;
}

Deno.test("S3Store keeps at most `connections` requests in flight", async () => {
  assert.equal(await peakInFlight(4, 24), 4);
});

Deno.test("S3Store uses more than the SDK's default 50 sockets when connections allows", async () => {
  assert.equal(await peakInFlight(80, 160), 80);
});
