/**
 * @module
 * Clones through the real CLI and daemon with real NBD clients (qemu-io, nbdcopy), run by
 * clone_dir_test.ts: a source is cloned (two small keys, no data), source and clone each write and
 * each sees only its own writes, a clone of a clone of a clone reads right (and an independent
 * reader written here, knowing only the base object format and docs/FORMAT.md "Clones", rebuilds
 * it), the source collects garbage with a short window while clones read it, the pins refuse what
 * would hurt a clone, and after flattening (innermost first) the source's data is deleted and
 * every clone still reads back right.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { type Daemon, unixUri } from "../support/daemon.ts";
import { runClientOk, seededBytes, sha256Hex } from "../support/clients.ts";
import { parseLogKey } from "../../src/format/keys.ts";
import { args, assertOneLine, diskSha, lsvd, lsvdOk, serveDaemon, type ToolboxTarget } from "./toolbox.ts";
import { allKeys } from "./toolbox.ts";

const MiB = 2 ** 20;
const BYTES = 8 * MiB;
const HEADER_BYTES = 12288;

/** Writes `pattern` over [offset, offset+length) through qemu-io and flushes. */
async function fill(d: Daemon, t: ToolboxTarget, pattern: number, offsetMiB: number, lengthMiB: number) {
  assert.ok(d.child.pid > 0);
  await runClientOk("qemu-io", [
    "-f",
    "raw",
    unixUri(join(t.dir, "nbd.sock")),
    "-c",
    `write -P ${pattern} ${offsetMiB}M ${lengthMiB}M`,
    "-c",
    "flush",
  ]);
}

function patterned(image: Uint8Array, pattern: number, offsetMiB: number, lengthMiB: number): Uint8Array {
  const out = image.slice();
  out.fill(pattern, offsetMiB * MiB, (offsetMiB + lengthMiB) * MiB);
  return out;
}

/** Serves `prefix` (writable), runs `work`, stops cleanly. */
async function session(
  t: ToolboxTarget,
  prefix: string,
  work: (d: Daemon) => Promise<unknown>,
  extra: string[] = [],
) {
  const d = await serveDaemon(t, prefix, extra);
  try {
    await work(d);
  } finally {
    assert.equal((await d.stop()).code, 0, d.log);
  }
}

/** The sha of the disk a read-only serve of `prefix` shows. */
async function readSha(t: ToolboxTarget, prefix: string): Promise<string> {
  let sha = "";
  await session(t, prefix, async () => void (sha = await diskSha(t)), ["--read-only"]);
  return sha;
}

/**
 * An independent reader of docs/FORMAT.md "Clones", knowing only the base object format: the
 * source's disk at the point (recursively), then the volume's own objects in key order.
 */
async function seedRead(t: ToolboxTarget, prefix: string, upTo = Infinity): Promise<Uint8Array> {
  const record = JSON.parse(new TextDecoder().decode((await t.store.get(`${prefix}format.json`)).body));
  const parent = record.parent;
  const disk = parent === undefined
    ? new Uint8Array(BYTES)
    : await seedRead(t, parent.prefix, parent.sequence);
  const own = (await allKeys(t.store, prefix))
    .map((key) => ({ key, sequence: parseLogKey(prefix, key) }))
    .filter((o) => o.sequence !== undefined && o.sequence <= upTo)
    .sort((a, b) => a.sequence! - b.sequence!);
  for (const o of own) {
    const body = (await t.store.get(o.key)).body;
    const view = new DataView(body.buffer, body.byteOffset, body.length);
    let at = HEADER_BYTES;
    for (let i = 0; i < 1024; i++) {
      const address = Number(view.getBigUint64(i * 12)), length = view.getUint32(i * 12 + 8);
      if (length === 0) break;
      disk.set(body.subarray(at, at + length), address);
      at += length;
    }
  }
  return disk;
}

export async function runCloneStory(t: ToolboxTarget): Promise<void> {
  const base = seededBytes(BYTES, 21);
  const baseFile = join(t.dir, "clone-base.bin");
  await Deno.writeFile(baseFile, base);
  await session(
    t,
    "src",
    () => runClientOk("nbdcopy", ["--flush", baseFile, unixUri(join(t.dir, "nbd.sock"))]),
    [
      "--size",
      String(BYTES),
    ],
  );
  await Deno.remove(baseFile);

  // A clone is two small keys, whatever the source holds.
  const before = new Set(await allKeys(t.store, ""));
  const made = await lsvdOk(t, ["clone", ...args(t, "src"), "--to-prefix", "c1"]);
  assert.match(made.err, /Cloned object \d+ .* to prefix "c1\/"/);
  const added = (await allKeys(t.store, "")).filter((k) => !before.has(k)).sort();
  assert.deepEqual(added, ["c1/format.json", "src/snapshot/clone-c1"]);

  // Each writes; each sees only its own writes.
  const srcImage = patterned(base, 0x11, 0, 1);
  let c1Image = patterned(base, 0x22, 1, 1);
  await session(t, "src", (d) => fill(d, t, 0x11, 0, 1));
  await session(t, "c1", async (d) => {
    await fill(d, t, 0x22, 1, 1);
    assert.equal(await diskSha(t), await sha256Hex(c1Image));
  });
  assert.equal(await readSha(t, "src"), await sha256Hex(srcImage));

  // Depth 3: c1 → c2 → c3 (at a snapshot of c2), each writing its own MiB.
  await lsvdOk(t, ["clone", ...args(t, "c1"), "--to-prefix", "c2"]);
  const c2Image = patterned(c1Image, 0x33, 2, 1);
  await session(t, "c2", (d) => fill(d, t, 0x33, 2, 1));
  await lsvdOk(t, ["snapshot", "create", "s", ...args(t, "c2")]);
  await session(t, "c2", (d) => fill(d, t, 0x66, 6, 1)); // after the snapshot: not in c3
  await lsvdOk(t, ["clone", ...args(t, "c2"), "--snapshot", "s", "--to-prefix", "c3"]);
  const c3Image = patterned(c2Image, 0x44, 3, 1);
  await session(t, "c3", (d) => fill(d, t, 0x44, 3, 1));
  c1Image = patterned(c1Image, 0x55, 5, 1);
  await session(t, "c1", (d) => fill(d, t, 0x55, 5, 1)); // after c2 was made: not in c2 or c3
  assert.equal(await readSha(t, "c3"), await sha256Hex(c3Image));
  assert.equal(await sha256Hex(await seedRead(t, "c3/")), await sha256Hex(c3Image), "the independent reader");
  assert.equal(await readSha(t, "c1"), await sha256Hex(c1Image));

  // export reads through the chain; serve --at shows the clone at its branch point; verify is clean.
  const image = join(t.dir, "c3.img");
  await lsvdOk(t, ["export", ...args(t, "c3"), image]);
  assert.equal(await sha256Hex(await Deno.readFile(image)), await sha256Hex(c3Image));
  await Deno.remove(image);
  const branch = JSON.parse((await lsvdOk(t, ["info", "--json", ...args(t, "c1")])).out).parent.through;
  let atBranch = "";
  await session(t, "c1", async () => void (atBranch = await diskSha(t)), [
    "--read-only",
    "--at",
    String(branch),
  ]);
  assert.equal(atBranch, await sha256Hex(base));
  assert.match((await lsvdOk(t, ["verify", ...args(t, "c3")])).err, /are good/);

  // info and snapshot list name the link both ways.
  const info = JSON.parse((await lsvdOk(t, ["info", "--json", ...args(t, "c1")])).out);
  assert.equal(info.parent.prefix, "src/");
  assert.equal(info.format.format, 3);
  assert.ok(info.parent.readsBytes >= 6 * MiB, `c1 still reads ${info.parent.readsBytes} bytes from src`);
  const srcInfo = (await lsvdOk(t, ["info", ...args(t, "src")])).out;
  assert.match(srcInfo, /^Clones: +"c1\/" at object \d+ \(pin clone-c1\)$/m);
  assert.match(
    (await lsvdOk(t, ["snapshot", "list", ...args(t, "src")])).out,
    /clone-c1\tobject \d+.*\(clone "c1\/"/,
  );

  // What would hurt a clone is refused in one line.
  assertOneLine(await lsvd(t, ["snapshot", "delete", "clone-c1", ...args(t, "src")]), /reads through it/);
  assertOneLine(await lsvd(t, ["rollback", "--to", "1", ...args(t, "src")]), /clone under "c1\/"/);
  assertOneLine(await lsvd(t, ["rollback", "--to", "1", ...args(t, "c1")]), /points start at object/);
  assertOneLine(await lsvd(t, ["rollback", "--to", "1", ...args(t, "c3")]), /branch point/);
  assertOneLine(await lsvd(t, ["flatten", ...args(t, "c1")]), /snapshot "clone-c2"/);
  assertOneLine(await lsvd(t, ["clone", ...args(t, "src"), "--to-prefix", "c2"]), /already holds a volume/);
  if (t.storeArgs[0] === "--dir") {
    assertOneLine(
      await lsvd(t, ["clone", ...args(t, "src"), "--to-prefix", "c9", "--to-bucket", "b"]),
      /has no buckets; give --to-prefix alone/,
    );
  }

  // The source overwrites everything and collects with a short window; clones still read right.
  await session(t, "src", async (d) => {
    for (const p of [0x71, 0x72, 0x73]) {
      await fill(d, t, p, 0, 8);
      await new Promise((r) => setTimeout(r, 1200));
    }
    await d.waitForLine(/Garbage collection pass \d+: deleted [1-9]/, 20_000);
  }, ["--retention", "1s", "--gc-interval", "300ms"]);
  assert.equal(await readSha(t, "c1"), await sha256Hex(c1Image));

  // A clone flattened as it is made (clone --flatten) reads the source's state of that moment.
  const made4 = await lsvdOk(t, ["clone", ...args(t, "src"), "--to-prefix", "c4", "--flatten"]);
  assert.match(made4.err, /Flattened the clone/);
  const c4Image = new Uint8Array(BYTES).fill(0x73);

  // Flatten innermost first, then delete the source's data: every clone reads the same.
  for (const p of ["c3", "c2", "c1"]) {
    if (p === "c2") {
      assertOneLine(await lsvd(t, ["flatten", ...args(t, p)]), /snapshot "s" of the clone/);
      await lsvdOk(t, ["snapshot", "delete", "s", ...args(t, p)]);
    }
    const r = await lsvdOk(t, ["flatten", ...args(t, p)]);
    assert.match(r.err, /Flattened the clone .* reads nothing of/);
  }
  assert.equal((await lsvdOk(t, ["snapshot", "list", ...args(t, "src")])).out, "");
  for (const k of await allKeys(t.store, "src/")) await t.store.delete(k);
  assert.equal(await readSha(t, "c1"), await sha256Hex(c1Image));
  assert.equal(await readSha(t, "c3"), await sha256Hex(c3Image));
  assert.equal(await readSha(t, "c4"), await sha256Hex(c4Image));
  const flat = JSON.parse((await lsvdOk(t, ["info", "--json", ...args(t, "c1")])).out);
  assert.ok(flat.parent.flattenedThrough > 0);
  assert.equal(flat.parent.readsBytes, 0);
  const again = await lsvdOk(t, ["flatten", ...args(t, "c1")]);
  assert.match(again.err, /was flattened at object \d+/);
}

/**
 * A clone in another bucket of the same S3 store (`--to-bucket`), under the same prefix as its
 * source: it reads the source from the source's bucket, writes its own, survives the source's GC,
 * and after flatten reads right with the source's data deleted. `t2` is the second bucket.
 */
export async function runCrossBucketStory(
  t: ToolboxTarget,
  t2: ToolboxTarget,
  bucket2: string,
): Promise<void> {
  const size = ["--size", String(BYTES)];
  await session(t, "xsrc", (d) => fill(d, t, 0x61, 0, 8), size);
  const before = [new Set(await allKeys(t.store, "")), new Set(await allKeys(t2.store, ""))];
  const made = await lsvdOk(t, ["clone", ...args(t, "xsrc"), "--to-prefix", "xsrc", "--to-bucket", bucket2]);
  assert.match(made.err, new RegExp(`to prefix "xsrc/" in the ${bucket2} bucket`));
  const pin = `clone-${bucket2}_xsrc`;
  assert.deepEqual((await allKeys(t.store, "")).filter((k) => !before[0]!.has(k)), [`xsrc/snapshot/${pin}`]);
  assert.deepEqual((await allKeys(t2.store, "")).filter((k) => !before[1]!.has(k)), ["xsrc/format.json"]);

  // Each writes; each sees only its own writes.
  const base = new Uint8Array(BYTES).fill(0x61, 0, 8 * MiB);
  const cloneImage = patterned(base, 0x62, 1, 2);
  await session(t2, "xsrc", async (d) => {
    await fill(d, t2, 0x62, 1, 2);
    assert.equal(await diskSha(t2), await sha256Hex(cloneImage));
  });
  await session(t, "xsrc", (d) => fill(d, t, 0x63, 4, 1));
  assert.equal(await readSha(t, "xsrc"), await sha256Hex(patterned(base, 0x63, 4, 1)));
  assert.equal(await readSha(t2, "xsrc"), await sha256Hex(cloneImage));

  const image = join(t.dir, "xsrc-clone.img");
  await lsvdOk(t2, ["export", ...args(t2, "xsrc"), image]);
  assert.equal(
    await sha256Hex(await Deno.readFile(image)),
    await sha256Hex(cloneImage),
    "export reads the other bucket",
  );
  await Deno.remove(image);
  assert.match((await lsvdOk(t2, ["verify", ...args(t2, "xsrc")])).err, /are good/);
  const info = JSON.parse((await lsvdOk(t2, ["info", "--json", ...args(t2, "xsrc")])).out);
  assert.equal(info.parent.bucket, t.storeArgs[t.storeArgs.indexOf("--bucket") + 1]);
  assert.ok(info.parent.readsBytes >= 6 * MiB);
  assert.match(
    (await lsvdOk(t, ["info", ...args(t, "xsrc")])).out,
    new RegExp(`^Clones: +"xsrc/" in bucket "${bucket2}" at object \\d+ \\(pin ${pin}\\)$`, "m"),
  );
  assertOneLine(
    await lsvd(t, ["snapshot", "delete", pin, ...args(t, "xsrc")]),
    new RegExp(
      `"xsrc/" in bucket "${bucket2}" reads through it; run 'lsvd flatten --bucket ${bucket2} --prefix xsrc/'`,
    ),
  );
  assertOneLine(await lsvd(t, ["rollback", "--to", "1", ...args(t, "xsrc")]), /in bucket "lsvd-test-2"/);

  // The source overwrites everything and collects with a short window; the clone still reads right.
  await session(t, "xsrc", async (d) => {
    for (const p of [0x71, 0x72]) {
      await fill(d, t, p, 0, 8);
      await new Promise((r) => setTimeout(r, 1200));
    }
    await d.waitForLine(/Garbage collection pass \d+: deleted [1-9]/, 20_000);
  }, ["--retention", "1s", "--gc-interval", "300ms"]);
  assert.equal(await readSha(t2, "xsrc"), await sha256Hex(cloneImage));

  // clone --to-bucket --flatten: an independent copy in the other bucket at once.
  const copied = await lsvdOk(t, [
    "clone",
    ...args(t, "xsrc"),
    "--to-prefix",
    "flat",
    "--to-bucket",
    bucket2,
    "--flatten",
  ]);
  assert.match(copied.err, /Flattened the clone/);

  // Flatten releases the pin in the source's bucket; then the source's data can go.
  assert.match((await lsvdOk(t2, ["flatten", ...args(t2, "xsrc")])).err, /reads nothing of "xsrc\/"/);
  assert.equal((await lsvdOk(t, ["snapshot", "list", ...args(t, "xsrc")])).out, "");
  for (const k of await allKeys(t.store, "xsrc/")) await t.store.delete(k);
  assert.equal(await readSha(t2, "xsrc"), await sha256Hex(cloneImage));
  assert.equal(await readSha(t2, "flat"), await sha256Hex(new Uint8Array(BYTES).fill(0x72)));
  assertOneLine(
    await lsvd(t, ["clone", ...args(t2, "xsrc"), "--to-prefix", "y", "--to-bucket", "no-such-bucket"]),
    /no-such-bucket/,
  );
}
