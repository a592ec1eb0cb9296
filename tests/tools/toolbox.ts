/**
 * @module
 * The offline tools' story, run by toolbox_dir_test.ts on the directory store and by
 * toolbox_rgw_test.ts on Ceph RGW, always through the real CLI (`main.ts <command>`) and the real
 * daemon with real NBD clients (qemu-io, nbdcopy):
 * a volume is written in two sessions, then inspected (info), checked (verify), exported (whole,
 * at an object, at a time, to stdout), imported and re-exported, served at a past point, rolled
 * back, damaged; and every bad input gets one line and changes nothing.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { Daemon, unixUri } from "../support/daemon.ts";
import { runClientOk, seededBytes, sha256Hex } from "../support/clients.ts";
import { runLsvd, runLsvdOk } from "../support/lsvd_cli.ts";
import { listAll, type ObjectStore } from "../../src/store/store.ts";
import { parseLogKey } from "../../src/format/keys.ts";
import { readObjectSummary } from "../../src/log/object_reader.ts";
import { acquireLease, encodeLease } from "../../src/log/lease.ts";
import { leaseKey } from "../../src/format/keys.ts";
import { systemClock } from "../../src/util/clock.ts";

export interface ToolboxTarget {
  /** Store options (--dir ..., or --bucket ... --endpoint ... --path-style). */
  storeArgs: string[];
  env: Record<string, string>;
  /** The same store, for checks and deliberate damage. */
  store: ObjectStore;
  /** A scratch directory for sockets and files. */
  dir: string;
}

export const VOLUME_BYTES = 32 * 2 ** 20;

export interface WrittenVolume {
  prefix: string;
  /** The last object after the first session (random data over the whole disk). */
  firstPoint: number;
  /** sha256 of the disk after the first session and after the second. */
  firstSha: string;
  finalSha: string;
}

export function args(t: ToolboxTarget, prefix: string, ...rest: string[]): string[] {
  return [...t.storeArgs, "--prefix", prefix, ...rest];
}

export function serveDaemon(t: ToolboxTarget, prefix: string, extra: string[] = []): Promise<Daemon> {
  return Daemon.start({ args: args(t, prefix, "--socket", socketOf(t), ...extra), env: t.env });
}

function socketOf(t: ToolboxTarget): string {
  return join(t.dir, "nbd.sock");
}

/** Reads the whole disk of a served volume with nbdcopy; returns its sha256. */
export async function diskSha(t: ToolboxTarget): Promise<string> {
  const out = join(t.dir, `disk-${crypto.randomUUID()}.bin`);
  await runClientOk("nbdcopy", [unixUri(socketOf(t)), out]);
  const sha = await sha256Hex(await Deno.readFile(out));
  await Deno.remove(out);
  return sha;
}

/** sha256 of the disk a read-only serve shows (at a point when given). */
export async function servedSha(t: ToolboxTarget, prefix: string, at?: string): Promise<string> {
  const d = await serveDaemon(t, prefix, ["--read-only", ...(at === undefined ? [] : ["--at", at])]);
  try {
    return await diskSha(t);
  } finally {
    assert.equal((await d.stop()).code, 0);
  }
}

export async function logKeys(store: ObjectStore, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  for await (const o of listAll(store, { prefix })) {
    if (parseLogKey(prefix, o.key) !== undefined) keys.push(o.key);
  }
  return keys;
}

export async function allKeys(store: ObjectStore, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  for await (const o of listAll(store, { prefix })) keys.push(o.key);
  return keys;
}

/** Two sessions: random data over the whole disk, then overwrites, a zeroed range and new data. */
export async function writeVolume(t: ToolboxTarget, prefix: string): Promise<WrittenVolume> {
  const uri = unixUri(socketOf(t));
  const random = join(t.dir, `random-${prefix}.bin`);
  await Deno.writeFile(random, seededBytes(VOLUME_BYTES, 8));
  let d = await serveDaemon(t, prefix, ["--size", String(VOLUME_BYTES)]);
  await runClientOk("nbdcopy", [random, uri]);
  assert.equal((await d.stop()).code, 0);
  const firstPoint = (await logKeys(t.store, prefix + "/")).length;
  const firstSha = await sha256Hex(await Deno.readFile(random));
  await Deno.remove(random);
  await new Promise((r) => setTimeout(r, 20)); // seal times of the two sessions differ
  d = await serveDaemon(t, prefix);
  await runClientOk("qemu-io", [
    "-f",
    "raw",
    uri,
    "-c",
    "write -P 0x33 2M 4M",
    "-c",
    "write -z 8M 1M",
    "-c",
    "write -P 0x44 20M 1M",
  ]);
  const finalSha = await diskSha(t);
  assert.equal((await d.stop()).code, 0);
  assert.notEqual(finalSha, firstSha);
  return { prefix, firstPoint, firstSha, finalSha };
}

/** Runs lsvd with the target's environment. */
export function lsvd(t: ToolboxTarget, argv: string[], stdin?: Uint8Array) {
  return runLsvd(argv, { env: t.env, ...(stdin === undefined ? {} : { stdin }) });
}

export function lsvdOk(t: ToolboxTarget, argv: string[]) {
  return runLsvdOk(argv, { env: t.env });
}

/** A failed run: exit 1 and exactly one `lsvd:` line naming the problem, no stack trace. */
export function assertOneLine(r: { code: number; err: string; out: string }, pattern: RegExp): void {
  assert.equal(r.code, 1, `expected exit 1:\n${r.out}\n${r.err}`);
  const lines = r.err.trim().split("\n").filter((l) => l.startsWith("lsvd: ") && !/Retrying/.test(l));
  assert.match(lines.at(-1) ?? "", pattern, r.err);
  assert(!r.err.includes("    at "), r.err);
}

export async function infoAndVerify(t: ToolboxTarget, v: WrittenVolume): Promise<void> {
  const p = v.prefix;
  const info = JSON.parse((await lsvdOk(t, ["info", "--json", ...args(t, p)])).out);
  const keys = await logKeys(t.store, p + "/");
  assert.equal(info.sizeBytes, VOLUME_BYTES);
  assert.equal(info.objects.count, keys.length);
  assert.equal(info.gapFreeCount, keys.length);
  assert.deepEqual(info.gaps, []);
  assert.equal(info.writtenBytes, VOLUME_BYTES - 2 ** 20, "everything but the zeroed MiB holds data");
  assert.equal(info.objects.first.sequence, 1);
  assert.equal(info.objects.last.key, keys.at(-1));
  assert.ok(Date.parse(info.objects.last.sealedAt) >= Date.parse(info.objects.first.sealedAt));
  assert.deepEqual(info.writerEpochs, [1, 2], "two writer sessions");
  assert.equal(info.lease.state, "released", "the second session shut down cleanly");
  assert.equal(info.lease.epoch, 2);
  assert.ok(info.checkpoints.length >= 1, "serve checkpoints at shutdown");
  assert.equal(info.format.format, 2);
  const text = (await lsvdOk(t, ["info", ...args(t, p)])).out;
  assert.match(text, /^Size: +32\.0 MiB \(33554432 bytes\)$/m);
  assert.match(text, /^Gaps: +none$/m);
  assert.match(text, /^Lease: +released by host \S+ pid \d+, epoch 2, since /m);

  const good = await lsvdOk(t, ["verify", ...args(t, p)]);
  assert.equal(good.out, "");
  assert.match(good.err, new RegExp(`All ${keys.length} objects .* are good`));
}

/** Copies a volume's log to another prefix (keys as they are), for damage that must not hurt the rest. */
export async function copyVolume(t: ToolboxTarget, from: string, to: string): Promise<void> {
  for (const key of await allKeys(t.store, from + "/")) {
    await t.store.copy(key, to + "/" + key.slice(from.length + 1));
  }
}

/** verify names a flipped byte and a truncated object, one line each (and exits 1). */
export async function verifyDamage(t: ToolboxTarget, v: WrittenVolume): Promise<void> {
  const p = `${v.prefix}-damaged`;
  await copyVolume(t, v.prefix, p);
  const keys = await logKeys(t.store, p + "/");
  const flipped = keys[1]!, truncated = keys[2]!;
  const body = (await t.store.get(flipped)).body.slice();
  body[body.length - 100_000]! ^= 0x40; // a data byte
  await t.store.put(flipped, body);
  const whole = (await t.store.get(truncated)).body;
  await t.store.put(truncated, whole.slice(0, whole.length - 1000));
  const r = await lsvd(t, ["verify", "--parallel", "4", ...args(t, p)]);
  assert.equal(r.code, 1, r.err);
  const lines = r.out.trim().split("\n");
  assert.ok(lines.some((l) => l.startsWith(`${flipped}: whole-object CRC mismatch`)), r.out);
  assert.ok(lines.some((l) => l.startsWith(`${flipped}: 1 data sectors fail their CRC`)), r.out);
  assert.ok(lines.some((l) => l.startsWith(`${truncated}: `) && /truncated/.test(l)), r.out);
  assert.ok(lines.every((l) => l.startsWith(flipped) || l.startsWith(truncated)), r.out);
  assert.match(r.err, /Found 3 problems/);

  // export refuses to write damaged or missing bytes: one line naming the object, no image left.
  const out = join(t.dir, "damaged.img");
  const e = await lsvd(t, ["export", ...args(t, p), out]);
  assertOneLine(e, new RegExp(`Cannot read object "(${flipped}|${truncated})"`));
  await assert.rejects(Deno.stat(out), Deno.errors.NotFound);
  // Over an existing file (--force) the failed export leaves that file as it was, and no temp file.
  const before = [...Deno.readDirSync(t.dir)].map((f) => f.name).sort();
  const kept = join(t.dir, "kept.img");
  await Deno.writeTextFile(kept, "the previous image");
  assertOneLine(
    await lsvd(t, ["export", "--force", ...args(t, p), kept]),
    new RegExp(`Cannot read object "(${flipped}|${truncated})"`),
  );
  assert.equal(await Deno.readTextFile(kept), "the previous image");
  assert.deepEqual([...Deno.readDirSync(t.dir)].map((f) => f.name).sort(), [...before, "kept.img"].sort());
  await Deno.remove(kept);
}

async function fileSha(path: string): Promise<string> {
  return await sha256Hex(await Deno.readFile(path));
}

/** The seal time a log object's trailer records, as RFC 3339. */
export async function sealTimeText(t: ToolboxTarget, prefix: string, sequence: number): Promise<string> {
  const key = (await logKeys(t.store, prefix + "/"))[sequence - 1]!;
  const sizeBytes = (await t.store.get(key)).totalSizeBytes;
  const summary = await readObjectSummary(t.store, { sequence, key, sizeBytes });
  return new Date(summary.trailer!.sealTimeMs!).toISOString();
}

/** export to a file (sparse), to stdout, at an object number and at a time; bad inputs refused. */
export async function exportStory(t: ToolboxTarget, v: WrittenVolume): Promise<void> {
  const p = v.prefix;
  const file = join(t.dir, "export.img");
  const done = await lsvdOk(t, ["export", ...args(t, p), file]);
  assert.match(done.err, /Exported 33554432 bytes/);
  assert.equal(await fileSha(file), v.finalSha);
  const stat = await Deno.stat(file);
  assert.equal(stat.size, VOLUME_BYTES);
  assert.ok(stat.blocks! * 512 <= VOLUME_BYTES - 2 ** 20, `the zeroed MiB is a hole (${stat.blocks} blocks)`);

  const piped = await lsvdOk(t, ["export", ...args(t, p), "-"]);
  assert.equal(piped.stdout.length, VOLUME_BYTES);
  assert.equal(await sha256Hex(piped.stdout), v.finalSha);

  const atFile = join(t.dir, "export-at.img");
  await lsvdOk(t, ["export", "--at", String(v.firstPoint), ...args(t, p), atFile]);
  assert.equal(await fileSha(atFile), v.firstSha);
  assert.equal(
    await servedSha(t, p, String(v.firstPoint)),
    v.firstSha,
    "serve --at shows what export --at wrote",
  );
  const time = await sealTimeText(t, p, v.firstPoint);
  const timeFile = join(t.dir, "export-time.img");
  const byTime = await lsvdOk(t, ["export", "--at", time, ...args(t, p), timeFile]);
  assert.match(
    byTime.err,
    new RegExp(`as of object ${v.firstPoint} \\(sealed ${time.replaceAll(".", "\\.")}\\)`),
  );
  assert.equal(await fileSha(timeFile), v.firstSha);

  // Bad input: one line each, nothing written or overwritten.
  assertOneLine(await lsvd(t, ["export", ...args(t, p), file]), /the file exists; give --force/);
  assert.equal(await fileSha(file), v.finalSha);
  await lsvdOk(t, ["export", "--force", "--at", String(v.firstPoint), ...args(t, p), file]);
  assert.equal(await fileSha(file), v.firstSha);
  const missing = join(t.dir, "never.img");
  assertOneLine(
    await lsvd(t, ["export", ...args(t, "empty"), missing]),
    /There is no volume under prefix "empty\/"/,
  );
  assertOneLine(
    await lsvd(t, ["export", "--at", "100000", ...args(t, p), missing]),
    /the log ends at object \d+/,
  );
  assertOneLine(
    await lsvd(t, ["export", "--at", "1999-01-01T00:00:00Z", ...args(t, p), missing]),
    /the first object was sealed later/,
  );
  assertOneLine(
    await lsvd(t, ["export", "--at", "next week", ...args(t, p), missing]),
    /neither an object number/,
  );
  assertOneLine(
    await lsvd(t, ["export", "--at", "yesterday", ...args(t, p), missing]),
    /no snapshot "yesterday"/,
  );
  await assert.rejects(Deno.stat(missing), Deno.errors.NotFound);
  for (const f of [file, atFile, timeFile]) await Deno.remove(f);
}

/** export → import → export is byte-identical for the written volume (file and stdin) and a sparse image. */
export async function importStory(t: ToolboxTarget, v: WrittenVolume): Promise<void> {
  const image = join(t.dir, "image.img");
  await lsvdOk(t, ["export", ...args(t, v.prefix), image]);
  const imported = await lsvdOk(t, ["import", ...args(t, "copy"), image]);
  assert.match(
    imported.err,
    /Imported 33554432 bytes \(32505856 bytes of data, the rest zeros\) as 8 objects/,
  );
  const copied = join(t.dir, "copy.img");
  await lsvdOk(t, ["export", ...args(t, "copy"), copied]);
  assert.equal(await fileSha(copied), v.finalSha);
  const info = JSON.parse((await lsvdOk(t, ["info", "--json", ...args(t, "copy")])).out);
  assert.equal(info.sizeBytes, VOLUME_BYTES);
  assert.equal(info.writtenBytes, VOLUME_BYTES - 2 ** 20);
  assert.equal(info.format.format, 2);
  assert.ok(info.objects.first.sizeBytes > 4 * 2 ** 20, "objects are full size");
  assert.deepEqual(info.checkpoints, [8], "import leaves a checkpoint of the whole image");
  await lsvdOk(t, ["verify", ...args(t, "copy")]);
  const d = await serveDaemon(t, "copy"); // a normal volume: serve opens it for writing
  assert.equal(await diskSha(t), v.finalSha);
  assert.equal((await d.stop()).code, 0);

  const piped = await lsvd(t, ["import", ...args(t, "copy-stdin"), "-"], await Deno.readFile(image));
  assert.equal(piped.code, 0, piped.err);
  assert.equal(
    await sha256Hex((await lsvdOk(t, ["export", ...args(t, "copy-stdin"), "-"])).stdout),
    v.finalSha,
  );

  // A sparse image: a few blocks and one random MiB in 64 MiB; holes stay holes after the round trip.
  const sparse = join(t.dir, "sparse.img");
  const file = await Deno.open(sparse, { write: true, create: true, truncate: true });
  await file.truncate(64 * 2 ** 20);
  for (
    const [at, bytes] of [[0, 4096], [12_288, 8192], [40 * 2 ** 20, 2 ** 20], [64 * 2 ** 20 - 4096, 4096]]
  ) {
    await file.seek(at!, Deno.SeekMode.Start);
    await file.write(seededBytes(bytes!, at! + 1));
  }
  file.close();
  await lsvdOk(t, ["import", ...args(t, "sparse"), sparse]);
  const back = join(t.dir, "sparse-back.img");
  await lsvdOk(t, ["export", ...args(t, "sparse"), back]);
  assert.equal(await fileSha(back), await fileSha(sparse));
  assert.ok((await Deno.stat(back)).blocks! * 512 < 2 * 2 ** 20, "the exported image is sparse");
  const sparseInfo = JSON.parse((await lsvdOk(t, ["info", "--json", ...args(t, "sparse")])).out);
  assert.equal(sparseInfo.writtenBytes, 4096 + 8192 + 2 ** 20 + 4096);
  assert.equal(sparseInfo.sizeBytes, 64 * 2 ** 20);

  // An image whose size is not a whole number of sectors: the last sector is padded with zeros.
  const odd = join(t.dir, "odd.img");
  await Deno.writeFile(odd, seededBytes(10_000, 3));
  await lsvdOk(t, ["import", ...args(t, "odd"), odd]);
  const oddBack = (await lsvdOk(t, ["export", ...args(t, "odd"), "-"])).stdout;
  assert.equal(oddBack.length, 12_288);
  assert.deepEqual(oddBack.subarray(0, 10_000), seededBytes(10_000, 3));
  assert.ok(oddBack.subarray(10_000).every((b) => b === 0));

  // Bad input: a prefix holding a volume, a missing file; nothing written.
  const before = await allKeys(t.store, v.prefix + "/");
  assertOneLine(await lsvd(t, ["import", ...args(t, v.prefix), image]), /already holds \d+ log objects/);
  assert.deepEqual(await allKeys(t.store, v.prefix + "/"), before);
  assertOneLine(
    await lsvd(t, ["import", ...args(t, "nothing"), join(t.dir, "no-such.img")]),
    /Cannot import/,
  );
  assert.deepEqual(await allKeys(t.store, "nothing/"), []);

  // More data on standard input than --size: found while reading, after objects were stored. The
  // import removes what it stored (and its format, epoch and lease keys), so running it again works.
  const big = seededBytes(12 * 2 ** 20, 5);
  assertOneLine(
    await lsvd(t, ["import", "--size", "8M", "--object-size", "1M", ...args(t, "again"), "-"], big),
    /it holds more than the 8388608 bytes of the volume \(--size\); removed what it had written under prefix "again\/" .*\(8 log objects\)/,
  );
  assert.deepEqual(await allKeys(t.store, "again/"), []);
  const retried = await lsvd(t, ["import", ...args(t, "again"), "-"], big);
  assert.equal(retried.code, 0, retried.err);
  assert.equal(
    await sha256Hex((await lsvdOk(t, ["export", ...args(t, "again"), "-"])).stdout),
    await sha256Hex(big),
  );
  for (const f of [image, copied, sparse, back]) await Deno.remove(f);
}

/** rollback: refused while a daemon writes, --dry-run changes nothing, then the disk is the past state. */
export async function rollbackStory(t: ToolboxTarget, v: WrittenVolume): Promise<void> {
  const p = v.prefix;
  const d = await serveDaemon(t, p);
  const writes = ["-f", "raw", unixUri(socketOf(t))];
  for (let i = 0; i < 30; i++) writes.push("-c", `write -P ${i} 24M 64k`, "-c", "flush", "-c", "sleep 150");
  const writing = runClientOk("qemu-io", writes, { timeoutMs: 60_000 });
  await new Promise((r) => setTimeout(r, 300));
  const refused = await lsvd(t, ["rollback", "--to", String(v.firstPoint), ...args(t, p)]);
  await writing;
  assert.equal((await d.stop()).code, 0);
  assertOneLine(refused, /is being written|held by/);
  assert.deepEqual((await allKeys(t.store, p + "/")).filter((k) => k.includes("archive/")), []);

  // A live writer lease (as a daemon holds it): refused at once, naming the holder; nothing moves.
  const held = await acquireLease(t.store, p + "/", {
    clock: systemClock,
    log: () => {},
    windowObjects: 1,
    holder: { host: "other-host", pid: 4242, nonce: "test" },
  });
  assertOneLine(
    await lsvd(t, ["rollback", "--to", String(v.firstPoint), ...args(t, p)]),
    /its writer lease is held by host other-host pid 4242 .*stop that daemon first/,
  );
  await t.store.put(leaseKey(p + "/"), encodeLease({ ...held.stored.lease, released: true }));
  assert.deepEqual((await allKeys(t.store, p + "/")).filter((k) => k.includes("archive/")), []);

  const keys = await logKeys(t.store, p + "/");
  const newer = keys.slice(v.firstPoint);
  const dry = await lsvdOk(t, ["rollback", "--to", String(v.firstPoint), "--dry-run", ...args(t, p)]);
  const wouldMove = dry.out.split("\n").filter((l) => l.startsWith("would move "));
  assert.deepEqual(wouldMove.map((l) => l.split(" ")[2]), newer);
  assert.deepEqual(await logKeys(t.store, p + "/"), keys, "a dry run moves nothing");

  assertOneLine(await lsvd(t, ["rollback", "--to", "100000", ...args(t, p)]), /the log ends at object/);
  const done = await lsvdOk(t, ["rollback", "--to", String(v.firstPoint), ...args(t, p)]);
  assert.match(done.err, new RegExp(`moved ${newer.length} objects under`));
  assert.deepEqual(await logKeys(t.store, p + "/"), keys.slice(0, v.firstPoint));
  const archived = (await allKeys(t.store, p + "/archive/")).map((k) => k.split("/").at(-1));
  assert.deepEqual(archived, newer.map((k) => k.split("/").at(-1)), "the moved objects are in archive/");
  const after = await serveDaemon(t, p);
  assert.equal(await diskSha(t), v.firstSha, "served after the rollback: the state at the point");
  assert.equal((await after.stop()).code, 0);
}

/** Every step of the story, in order, as test steps. */
export async function runToolboxStory(ctx: Deno.TestContext, t: ToolboxTarget): Promise<void> {
  const v = await writeVolume(t, "vol");
  await ctx.step("info and verify describe and pass a good volume", () => infoAndVerify(t, v));
  await ctx.step(
    "export writes the disk now and at past points, sparse or to stdout",
    () => exportStory(t, v),
  );
  await ctx.step("import of exported and sparse images round-trips byte for byte", () => importStory(t, v));
  await ctx.step("verify names a damaged and a truncated object", () => verifyDamage(t, v));
  await ctx.step(
    "rollback moves newer objects to archive/ and serves the past state",
    () => rollbackStory(t, v),
  );
  await ctx.step("a start that cannot succeed writes nothing to the store", () => refusedStarts(t));
}

/**
 * Starts that cannot succeed change nothing in the store: no --size on a prefix without a volume,
 * --read-only (with or without --size) on one; refused in one line before the probe, the lease or
 * an epoch is written.
 */
export async function refusedStarts(t: ToolboxTarget): Promise<void> {
  const cases: [string[], RegExp][] = [
    [[], /^lsvd: Cannot open the volume: it has no recorded size yet; give --size the first time$/m],
    [["--read-only"], /^lsvd: Cannot open the volume: .* holds no volume under prefix "unsized\/"$/m],
    [["--read-only", "--size", "16M"], /^lsvd: Cannot open the volume: .* holds no volume under prefix/m],
  ];
  for (const [extra, pattern] of cases) {
    const d = Daemon.spawn({ args: args(t, "unsized", "--socket", socketOf(t), ...extra), env: t.env });
    const r = await d.finished();
    assert.equal(r.code, 1, r.log);
    assert.match(r.log, pattern);
    assert(!r.log.includes("Starting recovery"), r.log);
    assert.deepEqual(await allKeys(t.store, "unsized/"), [], `${extra.join(" ")}: nothing is written`);
  }
}

/** An unreachable endpoint and a missing bucket: one line each from every reading tool, nothing written. */
export async function storeErrors(t: ToolboxTarget, endpoint: string): Promise<void> {
  const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (closed.addr as Deno.NetAddr).port;
  closed.close();
  const unreachable = ["--bucket", "b", "--endpoint", `http://127.0.0.1:${port}`, "--path-style"];
  const missing = ["--bucket", "no-such-bucket", "--endpoint", endpoint, "--path-style"];
  const out = join(t.dir, "never.img");
  const image = join(t.dir, "image-for-errors.img");
  await Deno.writeFile(image, seededBytes(8192, 1));
  for (
    const command of [["info"], ["verify"], ["export", out], ["import", image], ["rollback", "--to", "1"]]
  ) {
    assertOneLine(await lsvd(t, [...command, ...unreachable]), /cannot reach/i);
    assertOneLine(await lsvd(t, [...command, ...missing]), /no-such-bucket.*(does not exist|NoSuchBucket)/);
  }
  await assert.rejects(Deno.stat(out), Deno.errors.NotFound);
  await Deno.remove(image);
}
