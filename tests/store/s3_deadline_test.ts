/**
 * @module
 * S3Store enforces a deadline on every request, against raw TCP servers that accept connections
 * and then never answer (a black-holed store), or answer the headers and stall in the body: the
 * request is aborted within its deadline as a Transient error, its connection slot is freed, and
 * withRetries tries again on a fresh connection.
 */

import assert from "node:assert/strict";
import { S3Store, type S3StoreOptions } from "../../src/store/s3.ts";
import { isStoreError } from "../../src/store/store.ts";
import { withRetries } from "../../src/store/retry.ts";
import { systemClock } from "../../src/util/clock.ts";

type Behaviour = "silent" | "stall-body" | "answer";

/** A TCP server whose nth connection (0-based) behaves as behaviourOf(n) says. */
function rawServer(behaviourOf: (n: number) => Behaviour) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const held: Deno.Conn[] = [];
  let connections = 0;
  const serving = (async () => {
    for await (const conn of listener) {
      held.push(conn);
      void serve(conn, behaviourOf(connections++)).catch(() => {});
    }
  })().catch(() => {});
  return {
    endpoint: `http://127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    get connections() {
      return connections;
    },
    async close() {
      listener.close();
      for (const c of held) tryClose(c);
      await serving;
    },
  };
}

async function serve(conn: Deno.Conn, behaviour: Behaviour): Promise<void> {
  const buffer = new Uint8Array(64 * 1024);
  if (behaviour === "silent") {
    while ((await conn.read(buffer)) !== null); // swallow whatever comes, answer nothing
    return;
  }
  await conn.read(buffer); // the request head (GETs have no body)
  const body = "abc";
  const length = behaviour === "stall-body" ? 100_000 : body.length;
  const head = `HTTP/1.1 200 OK\r\nContent-Length: ${length}\r\nETag: "e"\r\n` +
    `Content-Type: application/octet-stream\r\n\r\n${body}`;
  await conn.write(new TextEncoder().encode(head));
  while ((await conn.read(buffer)) !== null);
}

function tryClose(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // already closed
  }
}

function storeOn(endpoint: string, overrides: Partial<S3StoreOptions> = {}): S3Store {
  return new S3Store({
    bucket: "b",
    endpoint,
    forcePathStyle: true,
    credentials: { accessKeyId: "a", secretAccessKey: "s" },
    requestDeadlineMs: 500,
    ...overrides,
  });
}

/** Runs the operation, asserting it fails Transient with the deadline message; returns elapsed ms. */
async function expired(operation: Promise<unknown>, endpoint: string): Promise<number> {
  const started = performance.now();
  await assert.rejects(operation, (e) => {
    assert(isStoreError(e, "Transient"), `${e}`);
    assert.match(e.message, new RegExp(`: no answer within 0\\.5 s from ${endpoint}$`));
    return true;
  });
  return performance.now() - started;
}

Deno.test({
  name: "S3Store aborts a request to a server that never answers at its deadline",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const server = rawServer(() => "silent");
    const store = storeOn(server.endpoint);
    try {
      const get = await expired(store.get("k"), server.endpoint);
      assert(get >= 450 && get < 2_000, `the GET took ${get} ms`);
      const list = await expired(store.list({ prefix: "" }), server.endpoint);
      assert(list >= 450 && list < 2_000, `the list took ${list} ms`);
    } finally {
      await store.close();
      await server.close();
    }
  },
});

Deno.test({
  name: "S3Store's deadline grows with the bytes a PUT sends, and still fires",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const server = rawServer(() => "silent");
    // 4 MiB at 8 MiB/s: 500 ms more than the base deadline.
    const store = storeOn(server.endpoint, { deadlineBytesPerSecondMin: 8 * 1024 * 1024 });
    try {
      const started = performance.now();
      await assert.rejects(store.put("k", new Uint8Array(4 * 1024 * 1024)), (e) => {
        assert(isStoreError(e, "Transient"), `${e}`);
        assert.match(e.message, /: no answer within 1 s from /);
        return true;
      });
      const took = performance.now() - started;
      assert(took >= 950 && took < 3_000, `the PUT took ${took} ms`);
    } finally {
      await store.close();
      await server.close();
    }
  },
});

Deno.test({
  name: "S3Store aborts a GET whose body stalls after the headers",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const server = rawServer(() => "stall-body");
    const store = storeOn(server.endpoint, { deadlineBytesPerSecondMin: 1024 * 1024 * 1024 });
    try {
      const took = await expired(store.get("k"), server.endpoint);
      assert(took < 2_000, `the GET took ${took} ms`);
    } finally {
      await store.close();
      await server.close();
    }
  },
});

Deno.test({
  name: "withRetries() retries a request aborted at its deadline on a new connection, which answers",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const server = rawServer((n) => (n < 2 ? "silent" : "answer"));
    const store = storeOn(server.endpoint, { connections: 1 }); // the aborted requests must free the slot
    try {
      const started = performance.now();
      const result = await withRetries({ clock: systemClock, attemptsMax: 5 }, () => store.get("k"));
      const took = performance.now() - started;
      assert.equal(new TextDecoder().decode(result.body), "abc");
      assert.equal(server.connections, 3);
      // Two deadlines (2 × 500 ms) and two backoffs (100 + 200 ms), with slack for a loaded machine.
      assert(took >= 1_200 && took < 4_000, `the GET took ${took} ms`);
    } finally {
      await store.close();
      await server.close();
    }
  },
});
