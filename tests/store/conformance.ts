/**
 * @module
 * The one conformance suite every ObjectStore implementation must pass (memory, directory,
 * S3 against Ceph RGW), so the engine can rely on the same semantics whichever store it runs on.
 * Each case works under its own random key prefix, so one bucket can serve every case.
 */

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { withRetries } from "../../src/store/retry.ts";
import { systemClock } from "../../src/util/clock.ts";
import { isStoreError, listAll, type ObjectStore, type StoreErrorCode } from "../../src/store/store.ts";

export type MakeStore = () => ObjectStore | Promise<ObjectStore>;

type Case = (store: ObjectStore, prefix: string) => Promise<void>;

export interface ConformanceOptions {
  /** Runs once before the cases (e.g. start a server); its result is ignored. */
  setup?: () => Promise<void>;
  /** Runs once after the cases, even when one failed. */
  teardown?: () => Promise<void>;
  /** Passed to Deno.test: the S3 SDK keeps keep-alive sockets the sanitizers report. */
  sanitize?: boolean;
}

/** Registers one Deno test that runs every conformance case as a step. */
export function runStoreConformance(
  name: string,
  makeStore: MakeStore,
  options: ConformanceOptions = {},
): void {
  const sanitize = options.sanitize ?? true;
  Deno.test({
    name: `${name} passes the object store conformance suite`,
    sanitizeOps: sanitize,
    sanitizeResources: sanitize,
    fn: async (t) => {
      await options.setup?.();
      try {
        await runStoreConformanceSteps(t, makeStore);
      } finally {
        await options.teardown?.();
      }
    },
  });
}

/** Runs every case as a step of an enclosing test (for suites that manage their own server). */
export async function runStoreConformanceSteps(t: Deno.TestContext, makeStore: MakeStore): Promise<void> {
  for (const [caseName, fn] of Object.entries(CASES)) {
    const ok = await t.step(caseName, async () => {
      const store = await makeStore();
      try {
        await fn(store, `conformance-${crypto.randomUUID().slice(0, 8)}/`);
      } finally {
        await store.close();
      }
    });
    if (!ok) throw new Error(`Conformance case failed: ${caseName}`);
  }
}

function bytes(text: string): Uint8Array {
  return new TextEncoder().encode(text);
}

function text(body: Uint8Array): string {
  return new TextDecoder().decode(body);
}

function pattern(sizeBytes: number, salt: number): Uint8Array {
  const body = new Uint8Array(sizeBytes);
  for (let i = 0; i < sizeBytes; i++) body[i] = (i * 31 + salt + (i >> 8)) & 0xff;
  return body;
}

async function rejectsWith(promise: Promise<unknown>, code: StoreErrorCode): Promise<void> {
  try {
    await promise;
  } catch (error) {
    assert(isStoreError(error, code), `expected StoreError ${code}, got ${error}`);
    return;
  }
  assert.fail(`expected StoreError ${code}, but the operation succeeded`);
}

async function putMany(store: ObjectStore, keys: string[], concurrency = 32): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < keys.length) {
      const key = keys[next++]!;
      await store.put(key, bytes(key));
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
}

async function keysOf(store: ObjectStore, prefix: string, maxKeys = 1000): Promise<string[]> {
  const keys: string[] = [];
  for await (const o of listAll(store, { prefix, maxKeys })) keys.push(o.key);
  return keys;
}

/** Sorts keys by UTF-8 bytes, the order S3 lists in, independently of the stores' helper. */
function sortByUtf8(keys: string[]): string[] {
  const encoded = keys.map((k) => ({ k, b: new TextEncoder().encode(k) }));
  encoded.sort((x, y) => {
    const n = Math.min(x.b.length, y.b.length);
    for (let i = 0; i < n; i++) if (x.b[i] !== y.b[i]) return x.b[i]! - y.b[i]!;
    return x.b.length - y.b.length;
  });
  return encoded.map((e) => e.k);
}

const CASES: Record<string, Case> = {
  "put then get returns the same bytes and total size": async (store, p) => {
    const body = pattern(10_000, 7);
    await store.put(`${p}obj`, body);
    const got = await store.get(`${p}obj`);
    assert.deepEqual(got.body, body);
    assert.equal(got.totalSizeBytes, 10_000);
  },

  "the caller's buffer is free once put settles, and get returns a private one": async (store, p) => {
    const body = bytes("original");
    await store.put(`${p}obj`, body);
    body.fill(0);
    const first = await store.get(`${p}obj`);
    first.body.fill(0);
    assert.equal(text((await store.get(`${p}obj`)).body), "original");
  },

  "ranged get returns the bytes of the range and the whole size": async (store, p) => {
    const body = pattern(20_000, 3);
    await store.put(`${p}obj`, body);
    const got = await store.get(`${p}obj`, { offsetBytes: 4096, lengthBytes: 8192 });
    assert.deepEqual(got.body, body.slice(4096, 4096 + 8192));
    assert.equal(got.totalSizeBytes, 20_000);
    const first = await store.get(`${p}obj`, { offsetBytes: 0, lengthBytes: 1 });
    assert.deepEqual(first.body, body.slice(0, 1));
    const last = await store.get(`${p}obj`, { offsetBytes: 19_999, lengthBytes: 1 });
    assert.deepEqual(last.body, body.slice(19_999));
  },

  "ranged get running past the end is truncated to the object": async (store, p) => {
    const body = pattern(5000, 9);
    await store.put(`${p}obj`, body);
    const got = await store.get(`${p}obj`, { offsetBytes: 4000, lengthBytes: 4096 });
    assert.deepEqual(got.body, body.slice(4000));
    assert.equal(got.totalSizeBytes, 5000);
  },

  "ranged get starting at or past the end fails with InvalidRange": async (store, p) => {
    await store.put(`${p}obj`, pattern(5000, 1));
    await rejectsWith(store.get(`${p}obj`, { offsetBytes: 5000, lengthBytes: 10 }), "InvalidRange");
    await rejectsWith(store.get(`${p}obj`, { offsetBytes: 1 << 20, lengthBytes: 4096 }), "InvalidRange");
  },

  "get of a missing key fails with NotFound": async (store, p) => {
    await rejectsWith(store.get(`${p}missing`), "NotFound");
    await rejectsWith(store.get(`${p}missing`, { offsetBytes: 0, lengthBytes: 10 }), "NotFound");
    await rejectsWith(store.get(`${p}no/such/dir/key`), "NotFound");
  },

  "create-only put fails with PreconditionFailed when the key exists and keeps the content": async (
    store,
    p,
  ) => {
    await store.put(`${p}obj`, bytes("first"), { ifNoneMatch: true });
    await rejectsWith(store.put(`${p}obj`, bytes("second"), { ifNoneMatch: true }), "PreconditionFailed");
    assert.equal(text((await store.get(`${p}obj`)).body), "first");
  },

  "create-only put of a key written by a plain put fails too": async (store, p) => {
    await store.put(`${p}obj`, bytes("plain"));
    await rejectsWith(store.put(`${p}obj`, bytes("create"), { ifNoneMatch: true }), "PreconditionFailed");
    assert.equal(text((await store.get(`${p}obj`)).body), "plain");
  },

  "create-only put of byte-identical content succeeds, as a retry of a landed write must": async (
    store,
    p,
  ) => {
    const body = pattern(3000, 2);
    await store.put(`${p}obj`, body, { ifNoneMatch: true });
    await store.put(`${p}obj`, body, { ifNoneMatch: true });
    const different = body.slice();
    different[2999]! ^= 1;
    await rejectsWith(store.put(`${p}obj`, different, { ifNoneMatch: true }), "PreconditionFailed");
    await rejectsWith(store.put(`${p}obj`, body.slice(0, 2999), { ifNoneMatch: true }), "PreconditionFailed");
    assert.deepEqual((await store.get(`${p}obj`)).body, body);
  },

  "put returns the ETag that get and head report, and a new one for new content": async (store, p) => {
    const first = await store.put(`${p}obj`, bytes("one"));
    assert.match(first.etag, /^[^"]+$/, "ETags are passed around without quotes");
    assert.equal((await store.get(`${p}obj`)).etag, first.etag);
    assert.deepEqual(await store.head(`${p}obj`), { sizeBytes: 3, etag: first.etag });
    const second = await store.put(`${p}obj`, bytes("two"));
    assert.notEqual(second.etag, first.etag);
    assert.equal((await store.head(`${p}obj`)).etag, second.etag);
    await rejectsWith(store.head(`${p}missing`), "NotFound");
  },

  "put with ifMatch replaces only the version with that ETag": async (store, p) => {
    const first = await store.put(`${p}lease`, bytes("holder a"), { ifNoneMatch: true });
    const second = await store.put(`${p}lease`, bytes("holder b"), { ifMatch: first.etag });
    assert.equal(text((await store.get(`${p}lease`)).body), "holder b");
    await rejectsWith(
      store.put(`${p}lease`, bytes("holder c"), { ifMatch: first.etag }),
      "PreconditionFailed",
    );
    await rejectsWith(
      store.put(`${p}lease`, bytes("holder c"), { ifMatch: "0123456789abcdef" }),
      "PreconditionFailed",
    );
    assert.equal(text((await store.get(`${p}lease`)).body), "holder b");
    const third = await store.put(`${p}lease`, bytes("holder c"), { ifMatch: second.etag });
    assert.equal((await store.head(`${p}lease`)).etag, third.etag);
  },

  "put with ifMatch on a missing key fails with PreconditionFailed": async (store, p) => {
    const etag = (await store.put(`${p}other`, bytes("x"))).etag;
    await rejectsWith(store.put(`${p}missing`, bytes("x"), { ifMatch: etag }), "PreconditionFailed");
    await rejectsWith(store.get(`${p}missing`), "NotFound");
  },

  "put with ifMatch of byte-identical content succeeds, as a retry of a landed write must": async (
    store,
    p,
  ) => {
    const first = await store.put(`${p}lease`, bytes("version 1"));
    const second = await store.put(`${p}lease`, bytes("version 2"), { ifMatch: first.etag });
    assert.equal(
      (await store.put(`${p}lease`, bytes("version 2"), { ifMatch: first.etag })).etag,
      second.etag,
    );
  },

  "concurrent ifMatch puts on one ETag have exactly one winner": async (store, p) => {
    const base = await store.put(`${p}lease`, bytes("base"));
    const racers = 8;
    // As the engine does: a transient answer is retried (RGW answers some racing losers 500, then 412).
    const retry = { clock: systemClock, attemptsMax: 5 };
    const results = await Promise.allSettled(
      Array.from(
        { length: racers },
        (_, i) =>
          withRetries(retry, () => store.put(`${p}lease`, bytes(`racer ${i}`), { ifMatch: base.etag })),
      ),
    );
    const winners = results.flatMap((r, i) => r.status === "fulfilled" ? [i] : []);
    assert.equal(winners.length, 1, `winners: ${winners}`);
    for (const r of results) {
      if (r.status === "rejected") assert(isStoreError(r.reason, "PreconditionFailed"), `${r.reason}`);
    }
    assert.equal(text((await store.get(`${p}lease`)).body), `racer ${winners[0]}`);
  },

  "plain put overwrites": async (store, p) => {
    await store.put(`${p}obj`, bytes("one"));
    await store.put(`${p}obj`, bytes("two, longer"));
    const got = await store.get(`${p}obj`);
    assert.equal(text(got.body), "two, longer");
    assert.equal(got.totalSizeBytes, 11);
  },

  "concurrent create-only puts of one key have exactly one winner": async (store, p) => {
    const racers = 16;
    const results = await Promise.allSettled(
      Array.from(
        { length: racers },
        (_, i) => store.put(`${p}race`, bytes(`racer ${i}`), { ifNoneMatch: true }),
      ),
    );
    const winners = results.flatMap((r, i) => r.status === "fulfilled" ? [i] : []);
    assert.equal(winners.length, 1, `winners: ${winners}`);
    for (const r of results) {
      if (r.status === "rejected") assert(isStoreError(r.reason, "PreconditionFailed"), `${r.reason}`);
    }
    assert.equal(text((await store.get(`${p}race`)).body), `racer ${winners[0]}`);
  },

  "list returns keys in UTF-8 byte order with sizes, filtered by prefix": async (store, p) => {
    const names = ["a-b", "a/b", "a/c/d", "a0", "A", "b", "~", "é", "\u{1F600}", "\uFFFD", "a.b", "ab"];
    await putMany(store, names.map((n) => `${p}${n}`));
    await store.put(`${p.slice(0, -1)}-outside`, bytes("not under the prefix"));
    const page = await store.list({ prefix: p });
    assert.deepEqual(page.objects.map((o) => o.key), sortByUtf8(names.map((n) => `${p}${n}`)));
    assert.equal(page.isTruncated, false);
    for (const o of page.objects) assert.equal(o.sizeBytes, bytes(o.key).length);
    const underA = await store.list({ prefix: `${p}a` });
    assert.deepEqual(
      underA.objects.map((o) => o.key),
      sortByUtf8(["a-b", "a/b", "a/c/d", "a0", "a.b", "ab"].map((n) => `${p}${n}`)),
    );
    const underSlash = await store.list({ prefix: `${p}a/` });
    assert.deepEqual(underSlash.objects.map((o) => o.key), [`${p}a/b`, `${p}a/c/d`]);
    const none = await store.list({ prefix: `${p}zzz` });
    assert.deepEqual(none, { objects: [], isTruncated: false });
  },

  "list honours startAfter, including keys that are not stored": async (store, p) => {
    const names = ["a-b", "a/b", "a/c/d", "a0", "b"];
    await putMany(store, names.map((n) => `${p}${n}`));
    const after = async (startAfter: string) =>
      (await store.list({ prefix: p, startAfter: `${p}${startAfter}` })).objects.map((o) =>
        o.key.slice(p.length)
      );
    assert.deepEqual(await after("a-b"), ["a/b", "a/c/d", "a0", "b"]);
    assert.deepEqual(await after("a/"), ["a/b", "a/c/d", "a0", "b"]);
    assert.deepEqual(await after("a/b"), ["a/c/d", "a0", "b"]);
    assert.deepEqual(await after("a/c"), ["a/c/d", "a0", "b"]);
    assert.deepEqual(await after("a/c/d"), ["a0", "b"]);
    assert.deepEqual(await after("a/zz"), ["a0", "b"]);
    assert.deepEqual(await after("b"), []);
    const before = await store.list({ prefix: p, startAfter: "" });
    assert.equal(before.objects.length, names.length);
  },

  "list pages through 2,500 keys with maxKeys": async (store, p) => {
    const keys = Array.from({ length: 2500 }, (_, i) => `${p}many/${i.toString(16).padStart(6, "0")}`);
    await putMany(store, keys);
    const first = await store.list({ prefix: `${p}many/`, maxKeys: 1000 });
    assert.equal(first.objects.length, 1000);
    assert.equal(first.isTruncated, true);
    assert.deepEqual(first.objects.map((o) => o.key), keys.slice(0, 1000));
    const small = await store.list({ prefix: `${p}many/`, maxKeys: 7, startAfter: keys[2490]! });
    assert.deepEqual(small.objects.map((o) => o.key), keys.slice(2491, 2498));
    assert.equal(small.isTruncated, true);
    const tail = await store.list({ prefix: `${p}many/`, maxKeys: 9, startAfter: keys[2490]! });
    assert.deepEqual(tail.objects.map((o) => o.key), keys.slice(2491));
    assert.equal(tail.isTruncated, false);
    assert.deepEqual(await keysOf(store, `${p}many/`, 1000), keys);
    assert.deepEqual(await keysOf(store, `${p}many/`, 333), keys);
  },

  "keys with slashes round-trip": async (store, p) => {
    await store.put(`${p}x/y/z/deep`, bytes("deep"));
    await store.put(`${p}x/y/shallow`, bytes("shallow"));
    assert.equal(text((await store.get(`${p}x/y/z/deep`)).body), "deep");
    assert.equal(text((await store.get(`${p}x/y/shallow`)).body), "shallow");
    assert.deepEqual(await keysOf(store, `${p}x/`), [`${p}x/y/shallow`, `${p}x/y/z/deep`]);
  },

  "delete removes a key and deleting a missing key succeeds": async (store, p) => {
    await store.put(`${p}gone`, bytes("soon gone"));
    await store.put(`${p}kept`, bytes("kept"));
    await store.delete(`${p}gone`);
    await rejectsWith(store.get(`${p}gone`), "NotFound");
    await store.delete(`${p}gone`);
    await store.delete(`${p}never/existed`);
    assert.deepEqual(await keysOf(store, p), [`${p}kept`]);
    await store.put(`${p}gone`, bytes("back"), { ifNoneMatch: true });
    assert.equal(text((await store.get(`${p}gone`)).body), "back");
  },

  "copy duplicates an object; copying a missing key fails with NotFound": async (store, p) => {
    const body = pattern(70_000, 5);
    await store.put(`${p}source`, body);
    await store.copy(`${p}source`, `${p}archive/copy`);
    assert.deepEqual((await store.get(`${p}archive/copy`)).body, body);
    assert.deepEqual((await store.get(`${p}source`)).body, body);
    await rejectsWith(store.copy(`${p}missing`, `${p}archive/other`), "NotFound");
    await rejectsWith(store.get(`${p}archive/other`), "NotFound");
  },

  "create-only copy fails with PreconditionFailed when the destination exists": async (store, p) => {
    await store.put(`${p}source`, bytes("source"));
    await store.put(`${p}destination`, bytes("destination"));
    await rejectsWith(
      store.copy(`${p}source`, `${p}destination`, { ifNoneMatch: true }),
      "PreconditionFailed",
    );
    assert.equal(text((await store.get(`${p}destination`)).body), "destination");
    await store.copy(`${p}source`, `${p}fresh`, { ifNoneMatch: true });
    assert.equal(text((await store.get(`${p}fresh`)).body), "source");
    await store.copy(`${p}source`, `${p}destination`);
    assert.equal(text((await store.get(`${p}destination`)).body), "source");
  },

  "an 8 MiB object round-trips whole and by range": async (store, p) => {
    const body = pattern(8 << 20, 11);
    await store.put(`${p}large`, body);
    const whole = await store.get(`${p}large`);
    assert.equal(whole.totalSizeBytes, body.length);
    assert(whole.body.length === body.length && Buffer.compare(whole.body, body) === 0, "large body differs");
    const middle = await store.get(`${p}large`, { offsetBytes: 3 << 20, lengthBytes: 1 << 20 });
    assert.deepEqual(middle.body, body.slice(3 << 20, 4 << 20));
    assert.equal(middle.totalSizeBytes, body.length);
  },

  "an empty object round-trips and lists with size 0": async (store, p) => {
    await store.put(`${p}empty`, new Uint8Array(0));
    const got = await store.get(`${p}empty`);
    assert.equal(got.body.length, 0);
    assert.equal(got.totalSizeBytes, 0);
    assert.deepEqual((await store.list({ prefix: p })).objects, [{ key: `${p}empty`, sizeBytes: 0 }]);
    await rejectsWith(store.get(`${p}empty`, { offsetBytes: 0, lengthBytes: 1 }), "InvalidRange");
  },
};
