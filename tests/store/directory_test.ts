/**
 * @module
 * DirectoryStore: the conformance suite on a temp directory, then what is particular to files:
 * the layout is exactly the keys, temp files never show, and bad keys are refused.
 */

import assert from "node:assert/strict";
import { DirectoryStore } from "../../src/store/directory.ts";
import { REVALIDATE_MS } from "../../src/store/file_handles.ts";
import { isStoreError, type ObjectStore } from "../../src/store/store.ts";
import { runStoreConformance } from "./conformance.ts";

async function withStore(fn: (store: DirectoryStore, root: string) => Promise<void>): Promise<void> {
  const root = await Deno.makeTempDir({ prefix: "lsvd-directory-store-" });
  try {
    await fn(new DirectoryStore(root), root);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

runStoreConformance("DirectoryStore", async () => {
  const root = await Deno.makeTempDir({ prefix: "lsvd-directory-store-" });
  const store: ObjectStore = new DirectoryStore(root);
  const close = store.close.bind(store);
  store.close = async () => {
    await close();
    await Deno.remove(root, { recursive: true });
  };
  return store;
});

const body = (text: string) => new TextEncoder().encode(text);

async function tree(root: string, relative = ""): Promise<string[]> {
  const found: string[] = [];
  for await (const entry of Deno.readDir(`${root}/${relative}`)) {
    const path = `${relative}${entry.name}`;
    found.push(entry.isDirectory ? `${path}/` : path);
    if (entry.isDirectory) found.push(...await tree(root, `${path}/`));
  }
  return found.sort();
}

Deno.test("DirectoryStore.put() stores each object as the file named by its key", () =>
  withStore(async (store, root) => {
    await store.put("vol/0000000000000001", body("one"));
    await store.put("vol/archive/x/0000000000000002", body("two"), { ifNoneMatch: true });
    assert.equal(await Deno.readTextFile(`${root}/vol/0000000000000001`), "one");
    assert.equal(await Deno.readTextFile(`${root}/vol/archive/x/0000000000000002`), "two");
    const files = (await tree(root)).filter((p) => !p.endsWith("/"));
    assert.deepEqual(files, ["vol/0000000000000001", "vol/archive/x/0000000000000002"]);
    assert.equal(store.description, `the ${root} directory`);
  }));

Deno.test("DirectoryStore.list() never shows temp files and delete() prunes empty directories", () =>
  withStore(async (store, root) => {
    await Deno.mkdir(`${root}/.lsvd-tmp`, { recursive: true });
    await Deno.writeTextFile(`${root}/.lsvd-tmp/leftover-from-a-crash`, "partial");
    await store.put("a/b/c", body("c"));
    assert.deepEqual((await store.list({ prefix: "" })).objects, [{ key: "a/b/c", sizeBytes: 1 }]);
    await store.delete("a/b/c");
    assert.deepEqual(await tree(root), [".lsvd-tmp/", ".lsvd-tmp/leftover-from-a-crash"]);
  }));

Deno.test("DirectoryStore.list() under a prefix with directories starts below them and keeps every answer", () =>
  withStore(async (store, root) => {
    await Deno.mkdir(`${root}/.lsvd-tmp`, { recursive: true });
    await Deno.writeTextFile(`${root}/.lsvd-tmp/leftover`, "partial");
    for (const k of ["v/0001", "v/0002", "v/snapshot/s1", "v/snapshot/s2", "v/snapshotx", "w/snapshot/t"]) {
      await store.put(k, body(k));
    }
    const keys = async (prefix: string, startAfter?: string) =>
      (await store.list({ prefix, ...(startAfter === undefined ? {} : { startAfter }) })).objects.map((o) =>
        o.key
      );
    assert.deepEqual(await keys("v/snapshot/"), ["v/snapshot/s1", "v/snapshot/s2"]);
    assert.deepEqual(await keys("v/snapshot/", "v/snapshot/s1"), ["v/snapshot/s2"]);
    assert.deepEqual(await keys("v/snap"), ["v/snapshot/s1", "v/snapshot/s2", "v/snapshotx"]);
    assert.deepEqual(await keys("v/0", "v/0001"), ["v/0002"]);
    assert.deepEqual(await keys("v/0001/"), [], "a file where the prefix names a directory");
    assert.deepEqual(await keys("x/y/"), [], "a directory that does not exist");
    assert.deepEqual(await keys(".lsvd-tmp/"), [], "the temp folder is never listed");
    const file = `${root}/v/0001`;
    await assert.rejects(new DirectoryStore(file).list({ prefix: "a/b/" }), (e) => isStoreError(e, "Fatal"));
  }));

Deno.test("DirectoryStore.get() sees files written by other tools", () =>
  withStore(async (store, root) => {
    await Deno.mkdir(`${root}/copied/in`, { recursive: true });
    await Deno.writeTextFile(`${root}/copied/in/key`, "from aws s3 sync");
    assert.equal(new TextDecoder().decode((await store.get("copied/in/key")).body), "from aws s3 sync");
    await assert.rejects(store.get("copied/in"), (e) => isStoreError(e, "NotFound"));
  }));

Deno.test("DirectoryStore refuses keys that are not plain relative paths", () =>
  withStore(async (store) => {
    for (const key of ["", "/abs", "a//b", "a/", "../escape", "a/./b", ".lsvd-tmp/x"]) {
      await assert.rejects(store.put(key, body("x")), (e) => isStoreError(e, "Fatal"), `key ${key}`);
    }
  }));

Deno.test("DirectoryStore on a root that does not exist lists nothing and creates it on put", async () => {
  const parent = await Deno.makeTempDir({ prefix: "lsvd-directory-store-" });
  try {
    const store = new DirectoryStore(`${parent}/not/yet`);
    assert.deepEqual(await store.list({ prefix: "" }), { objects: [], isTruncated: false });
    await assert.rejects(store.get("k"), (e) => isStoreError(e, "NotFound"));
    await store.put("k", body("v"));
    assert.equal(await Deno.readTextFile(`${parent}/not/yet/k`), "v");
  } finally {
    await Deno.remove(parent, { recursive: true });
  }
});

Deno.test("DirectoryStore.check() creates the root and fails with Fatal when it is not a directory", async () => {
  const parent = await Deno.makeTempDir({ prefix: "lsvd-directory-store-" });
  try {
    await new DirectoryStore(`${parent}/fresh`).check();
    assert((await Deno.stat(`${parent}/fresh`)).isDirectory);
    await Deno.writeTextFile(`${parent}/file`, "not a directory");
    await assert.rejects(new DirectoryStore(`${parent}/file`).check(), (e) => {
      assert(isStoreError(e, "Fatal"), `${e}`);
      assert.match(e.message, new RegExp(`^Cannot use the ${parent}/file directory: `));
      return true;
    });
  } finally {
    await Deno.remove(parent, { recursive: true });
  }
});

const range = (offsetBytes: number, lengthBytes: number) => ({ offsetBytes, lengthBytes });
const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);

Deno.test("DirectoryStore ranged get() keeps at most openFilesMax files open and reads each right", async () => {
  const root = await Deno.makeTempDir({ prefix: "lsvd-directory-store-" });
  const store = new DirectoryStore(root, { openFilesMax: 3 });
  try {
    const keys = Array.from({ length: 10 }, (_, i) => `v/${String(i).padStart(16, "0")}`);
    for (const [i, key] of keys.entries()) await store.put(key, body(`object ${i} `.repeat(100)));
    const opened = async () => (await Array.fromAsync(Deno.readDir("/proc/self/fd"))).length;
    const before = await opened();
    // Many reads at once across more files than the bound, in a scrambled order.
    const reads = Array.from({ length: 200 }, (_, n) => {
      const i = (n * 7) % keys.length;
      return store.get(keys[i]!, range(9, 5)).then((r) => [i, text(r.body)] as const);
    });
    for (const [i, got] of await Promise.all(reads)) {
      assert.equal(got, `object ${i} `.repeat(100).slice(9, 14));
    }
    assert(await opened() - before <= 3, `${await opened() - before} files left open, bound 3`);
  } finally {
    await store.close();
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("DirectoryStore ranged get() after put() over a key or delete() sees the change at once", () =>
  withStore(async (store) => {
    await store.put("k", body("first version"));
    assert.equal(text((await store.get("k", range(0, 5))).body), "first");
    await store.put("k", body("second version")); // rename over the open file
    assert.equal(text((await store.get("k", range(0, 6))).body), "second");
    assert.equal((await store.get("k", range(0, 6))).totalSizeBytes, 14);
    await store.delete("k");
    await assert.rejects(store.get("k", range(0, 1)), (e) => isStoreError(e, "NotFound"));
    await store.put("k", body("third"), { ifNoneMatch: true });
    assert.equal(text((await store.get("k", range(0, 5))).body), "third");
  }));

Deno.test("DirectoryStore ranged get() notices files deleted or replaced by another process", () =>
  withStore(async (store, root) => {
    await store.put("a", body("old a"));
    await store.put("b", body("old b"));
    assert.equal(text((await store.get("a", range(0, 5))).body), "old a");
    assert.equal(text((await store.get("b", range(0, 5))).body), "old b");
    await Deno.remove(`${root}/a`);
    await Deno.writeTextFile(`${root}/b.new`, "new b");
    await Deno.rename(`${root}/b.new`, `${root}/b`);
    await new Promise((r) => setTimeout(r, REVALIDATE_MS + 50));
    await assert.rejects(store.get("a", range(0, 5)), (e) => isStoreError(e, "NotFound"));
    assert.equal(text((await store.get("b", range(0, 5))).body), "new b");
    // Whole-object reads (format record, checkpoints: keys that can be replaced) are never stale.
    await Deno.writeTextFile(`${root}/b.new`, "newer");
    await Deno.rename(`${root}/b.new`, `${root}/b`);
    assert.equal(text((await store.get("b")).body), "newer");
  }));

Deno.test("DirectoryStore.readNow() reads only files a ranged get() opened, and follows put(), delete() and other processes", () =>
  withStore(async (store, root) => {
    await store.put("k", body("first version"));
    const dest = new Uint8Array(5);
    assert.equal(store.readNow("k", 0, dest), false, "not open yet: get() must open it");
    assert.equal(text((await store.get("k", range(6, 7))).body), "version");
    assert.equal(store.readNow("k", 0, dest), true);
    assert.equal(text(dest), "first");
    assert.equal(store.readNow("k", 10, dest), false, "past the end: get() reports it");
    await store.put("k", body("second version")); // drops the handle
    assert.equal(store.readNow("k", 0, dest), false);
    assert.equal(text((await store.get("k", range(0, 6))).body), "second");
    assert.equal(store.readNow("k", 0, dest), true);
    assert.equal(text(dest), "secon");
    await store.delete("k");
    assert.equal(store.readNow("k", 0, dest), false);
    // Another process replacing an open file: once the handle is due for its check, readNow()
    // leaves the read to get(), which notices.
    await store.put("m", body("old m"));
    await store.get("m", range(0, 1));
    await Deno.writeTextFile(`${root}/m.new`, "new m");
    await Deno.rename(`${root}/m.new`, `${root}/m`);
    await new Promise((r) => setTimeout(r, REVALIDATE_MS + 50));
    assert.equal(store.readNow("m", 0, dest), false);
    assert.equal(text((await store.get("m", range(0, 5))).body), "new m");
    assert.equal(store.readNow("m", 0, dest), true);
    assert.equal(text(dest), "new m");
  }));
