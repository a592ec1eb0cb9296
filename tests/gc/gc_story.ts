/**
 * @module
 * Garbage collection through the real daemon and CLI, run by gc_dir_test.ts (directory store) and
 * gc_rgw_test.ts (Ceph RGW): a volume is written, snapshotted, overwritten four times with random
 * data while `serve` collects in the background with a short retention window; then the bucket
 * must hold about the live bytes only, the snapshot and a point inside the window must read back
 * exactly, a point older than the window is refused, and a reader written here from the base rules
 * of docs/FORMAT.md (not lsvd's code) replaying the remaining objects rebuilds the current disk.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { Daemon, unixUri } from "../support/daemon.ts";
import { runClientOk, seededBytes, sha256Hex } from "../support/clients.ts";
import { runLsvd, runLsvdOk } from "../support/lsvd_cli.ts";
import { listAll, type ObjectStore } from "../../src/store/store.ts";

export interface GcTarget {
  storeArgs: string[];
  env: Record<string, string>;
  store: ObjectStore;
  dir: string;
}

const VOLUME_BYTES = 8 * 2 ** 20;
const RETENTION = "3s";
const RETENTION_MS = 3000;

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** The base-format reader: every key of 16 lower-case hex digits, ascending, header entries applied. */
export async function seedOnlyReplay(
  store: ObjectStore,
  prefix: string,
  sizeBytes: number,
): Promise<Uint8Array> {
  const disk = new Uint8Array(sizeBytes);
  const keys: string[] = [];
  for await (const o of listAll(store, { prefix })) {
    if (/^[0-9a-f]{16}$/.test(o.key.slice(prefix.length))) keys.push(o.key);
  }
  keys.sort();
  for (const key of keys) {
    const { body } = await store.get(key);
    const view = new DataView(body.buffer, body.byteOffset, body.length);
    let at = 12288;
    for (let i = 0; i < 1024; i++) {
      const address = Number(view.getBigUint64(i * 12));
      const length = view.getUint32(i * 12 + 8);
      if (length === 0) break;
      disk.set(body.subarray(at, at + length), address);
      at += length;
    }
  }
  return disk;
}

async function logBytes(store: ObjectStore, prefix: string): Promise<number> {
  let n = 0;
  for await (const o of listAll(store, { prefix })) {
    if (/^[0-9a-f]{16}$/.test(o.key.slice(prefix.length))) n += o.sizeBytes;
  }
  return n;
}

export async function runGcStory(t: GcTarget): Promise<void> {
  const prefix = `gc${Date.now().toString(36)}`;
  const socket = join(t.dir, "gc.sock");
  const uri = unixUri(socket);
  const store = (...rest: string[]) => [...t.storeArgs, "--prefix", prefix, ...rest];
  const lsvdOk = (argv: string[]) => runLsvdOk(argv, { env: t.env });
  const serve = (extra: string[]) =>
    Daemon.start({
      args: store("--socket", socket, "--retention", RETENTION, "--gc-interval", "300ms", ...extra),
      env: t.env,
    });
  const images = [1, 2, 3, 4, 5].map((seed) => seededBytes(VOLUME_BYTES, 100 + seed));
  const shas = await Promise.all(images.map((b) => sha256Hex(b)));
  const write = async (i: number) => {
    const file = join(t.dir, `image-${i}.bin`);
    await Deno.writeFile(file, images[i]!);
    await runClientOk("nbdcopy", ["--flush", file, uri]);
    await Deno.remove(file);
  };
  const diskSha = async () => {
    const out = join(t.dir, `disk-${crypto.randomUUID()}.bin`);
    await runClientOk("nbdcopy", [uri, out]);
    const sha = await sha256Hex(await Deno.readFile(out));
    await Deno.remove(out);
    return sha;
  };

  // The first image, kept by a snapshot; then four overwrites, the window passing between them.
  let d = await serve(["--size", String(VOLUME_BYTES)]);
  await write(0);
  await lsvdOk(["snapshot", "create", "before", ...store()]);
  await write(1);
  const secondTime = new Date().toISOString();
  await sleep(20);
  await write(2);
  await write(3);
  await sleep(RETENTION_MS + 500);
  await write(4);
  await sleep(RETENTION_MS + 1500); // the window passes over the last overwrite too; passes run
  assert.equal(await diskSha(), shas[4]);
  const insideWindow = new Date().toISOString();
  await sleep(20);
  await runClientOk("qemu-io", ["-f", "raw", uri, "-c", "write -P 0x5a 1M 2M", "-c", "flush"]);
  const changedSha = await diskSha();
  assert.match(d.log, /Garbage collection pass \d+: deleted \d+ objects/);
  assert.equal((await d.stop()).code, 0);

  // Bucket bytes follow live data: the head (8 MiB) and the snapshot's image (8 MiB, all overwritten).
  const live = 2 * VOLUME_BYTES;
  const bucket = await logBytes(t.store, prefix + "/");
  assert(bucket <= 1.3 * live, `the log holds ${bucket} bytes for ${live} live bytes`);
  const info = JSON.parse((await lsvdOk(["info", "--json", ...store()])).out);
  assert(
    info.garbage.collectedObjects > 0 && info.garbage.retainedFromSequence > 0,
    JSON.stringify(info.garbage),
  );
  assert.deepEqual(info.gaps, [], "collected numbers are not gaps");
  const dryRun = await lsvdOk(["gc", "--dry-run", "--retention", RETENTION, ...store()]);
  assert.match(dryRun.out, /would delete \d+ objects/);

  // A reader that knows only the base format rebuilds the current disk from what remains.
  const replayed = await seedOnlyReplay(t.store, prefix + "/", VOLUME_BYTES);
  assert.equal(await sha256Hex(replayed), changedSha, "seed-only replay of the remaining objects");

  // The snapshot from before the overwrites reads back, served and exported.
  d = await serve(["--read-only", "--snapshot", "before"]);
  assert.equal(await diskSha(), shas[0], "serve --snapshot before");
  assert.equal((await d.stop()).code, 0);
  const exported = join(t.dir, "before.img");
  await lsvdOk(["export", "--snapshot", "before", ...store(), exported]);
  assert.equal(await sha256Hex(await Deno.readFile(exported)), shas[0], "export --snapshot before");
  await Deno.remove(exported);
  const list = await lsvdOk(["snapshot", "list", ...store()]);
  assert.match(list.out, /^before\tobject \d+/m);
  assert.doesNotMatch(list.out, /export-/, "the export's pin is gone");

  // A point older than the window is refused in one line, never served wrong.
  const old = await runLsvd(["export", "--at", secondTime, ...store(), join(t.dir, "old.img")], {
    env: t.env,
  });
  assert.equal(old.code, 1, old.err);
  assert.match(old.err, /^lsvd: .*(older points are gone|garbage collection deleted)/m);

  // Rolling back to a point inside the window gives exactly that disk.
  await lsvdOk(["rollback", "--to", insideWindow, ...store()]);
  d = await serve([]);
  assert.equal(await diskSha(), shas[4], "rollback to a point inside the window");
  assert.equal((await d.stop()).code, 0);
  const again = await seedOnlyReplay(t.store, prefix + "/", VOLUME_BYTES);
  assert.equal(await sha256Hex(again), shas[4], "seed-only replay after the rollback");

  // Snapshot and gc mistakes are one line each; deleting the snapshot lets its data go.
  const fails = async (argv: string[], pattern: RegExp) => {
    const r = await runLsvd(argv, { env: t.env });
    assert.equal(r.code, 1, r.err);
    assert.match(r.err, pattern);
    assert(!r.err.includes("    at "), r.err);
  };
  await fails(["snapshot", "create", "before", ...store()], /a snapshot of that name exists/);
  await fails(["snapshot", "create", "bad/name", ...store()], /NAME of 1-128 letters/);
  await fails(["gc", ...store()], /only plans \(--dry-run\)/);
  await lsvdOk(["snapshot", "delete", "before", ...store()]);
  await fails(["snapshot", "delete", "before", ...store()], /there is none/);
  await fails(
    ["export", "--snapshot", "before", ...store(), join(t.dir, "gone.img")],
    /no snapshot "before"/,
  );
}
