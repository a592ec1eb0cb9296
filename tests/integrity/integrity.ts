/**
 * @module
 * Damaged objects through the real daemon and the real CLI (issue 11), run by
 * integrity_dir_test.ts on the directory store and integrity_rgw_test.ts on Ceph RGW; the damage is
 * done the way a faulty store or a bad copy would do it, by writing modified bytes back (on RGW a
 * PUT through the S3 client):
 * - a flipped data byte: exactly the reads of that 4 KiB fail with EIO (qemu-io, nbdsh), every other
 *   sector reads back as written, the daemon logs the object and byte range, `lsvd verify` names it;
 * - a flipped header bit, with no checkpoints and with the object after the newest checkpoint: the
 *   daemon refuses to start with one line naming the object and `lsvd verify` / `lsvd rollback`;
 * - a truncated object: start refused naming it, and `lsvd verify` names it.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { checkpointPrefix } from "../../src/format/keys.ts";
import { decodeHeader, HEADER_BYTES, SECTOR_BYTES } from "../../src/format/object.ts";
import { Daemon, unixUri } from "../support/daemon.ts";
import {
  describeFailure,
  runClient,
  runClientOk,
  runNbdsh,
  seededBytes,
  sha256Hex,
} from "../support/clients.ts";
import {
  allKeys,
  args,
  copyVolume,
  logKeys,
  lsvd,
  serveDaemon,
  type ToolboxTarget,
} from "../tools/toolbox.ts";

export const VOLUME_BYTES = 16 * 2 ** 20;
const SEED = 11;

/** A volume of seeded random bytes over the whole disk, written by one session (shut down cleanly). */
export async function writeRandomVolume(t: ToolboxTarget, prefix: string): Promise<Uint8Array> {
  const data = seededBytes(VOLUME_BYTES, SEED);
  const file = join(t.dir, "random.bin");
  await Deno.writeFile(file, data);
  const d = await serveDaemon(t, prefix, ["--size", String(VOLUME_BYTES)]);
  await runClientOk("nbdcopy", [file, unixUri(join(t.dir, "nbd.sock"))]);
  assert.equal((await d.stop()).code, 0);
  await Deno.remove(file);
  return data;
}

/** Rewrites one stored object with `change` applied to a copy of its bytes. */
async function damage(
  t: ToolboxTarget,
  key: string,
  change: (bytes: Uint8Array) => Uint8Array,
): Promise<void> {
  const bytes = (await t.store.get(key)).body.slice();
  await t.store.put(key, change(bytes));
}

/** The first log object holding at least `sectors` data sectors, and the disk address of its data. */
async function dataObject(t: ToolboxTarget, prefix: string, sectors: number) {
  for (const key of await logKeys(t.store, prefix + "/")) {
    const head = (await t.store.get(key, { offsetBytes: 0, lengthBytes: HEADER_BYTES })).body;
    const entry = decodeHeader(head)[0];
    if (entry !== undefined && entry.lengthBytes >= sectors * SECTOR_BYTES) return { key, entry };
  }
  throw new Error(`no object under ${prefix} holds ${sectors} sectors`);
}

async function deleteCheckpoints(t: ToolboxTarget, prefix: string): Promise<void> {
  for (const key of await allKeys(t.store, checkpointPrefix(prefix + "/"))) await t.store.delete(key);
}

/**
 * Reads the whole served disk with nbdsh in 1 MiB requests, and every failed request again in
 * 4 KiB ones; returns the offsets of the 4 KiB reads that failed with EIO and the sha256 of the
 * disk with those sectors as zeros.
 */
async function scanDisk(socket: string): Promise<{ failed: number[]; sha: string; otherErrors: string[] }> {
  const script = `
import errno, hashlib, json
h = nbd.NBD()
h.connect_uri(${JSON.stringify(unixUri(socket))})
size = h.get_size()
failed, other, digest = [], [], hashlib.sha256()
for at in range(0, size, 1 << 20):
    try:
        digest.update(h.pread(1 << 20, at))
        continue
    except nbd.Error:
        pass
    for s in range(at, at + (1 << 20), 4096):
        try:
            digest.update(h.pread(4096, s))
        except nbd.Error as e:
            code = e.errno if isinstance(e.errno, int) else getattr(errno, str(e.errno), None)
            (failed if code == errno.EIO else other).append(s)
            digest.update(bytes(4096))
h.shutdown()
print(json.dumps({"failed": failed, "other": other, "sha": digest.hexdigest()}))
`;
  const r = await runNbdsh(script, { timeoutMs: 120_000 });
  if (r.code !== 0) throw new Error(describeFailure(r));
  const out = JSON.parse(r.stdout.trim().split("\n").at(-1)!);
  return { failed: out.failed, sha: out.sha, otherErrors: out.other.map(String) };
}

/** A flipped data byte: EIO on exactly the reads of its sector, everything else served as written. */
export async function flippedDataByte(t: ToolboxTarget, source: string, data: Uint8Array): Promise<void> {
  const p = `${source}-data`;
  await copyVolume(t, source, p);
  const { key, entry } = await dataObject(t, p, 8);
  const sector = 5;
  const disk = entry.addressBytes + sector * SECTOR_BYTES;
  const from = HEADER_BYTES + sector * SECTOR_BYTES;
  await damage(t, key, (b) => {
    b[from + 1234]! ^= 0x04;
    return b;
  });
  const socket = join(t.dir, "nbd.sock");
  const d = await serveDaemon(t, p);
  try {
    const uri = unixUri(socket);
    const bad = await runClient("qemu-io", ["-f", "raw", uri, "-c", `read ${disk} 4096`]);
    assert.match(bad.stdout + bad.stderr, /read failed: Input\/output error/, describeFailure(bad));
    for (const at of [disk - SECTOR_BYTES, disk + SECTOR_BYTES]) {
      const pattern = data[at]!; // qemu-io checks a pattern only for uniform data: compare bytes instead
      const good = await runClient("qemu-io", ["-f", "raw", uri, "-c", `read -v ${at} 16`]);
      assert.equal(good.code, 0, describeFailure(good));
      assert.match(good.stdout, new RegExp(pattern.toString(16).padStart(2, "0")), describeFailure(good));
    }
    const scan = await scanDisk(socket);
    assert.deepEqual(scan.otherErrors, []);
    assert.deepEqual(scan.failed, [disk], "exactly the damaged sector fails");
    const expected = data.slice();
    expected.fill(0, disk, disk + SECTOR_BYTES);
    assert.equal(scan.sha, await sha256Hex(expected), "every other byte is served as written");
    const lines = d.lines.filter((l) => l.includes("do not match their CRC-32"));
    assert.ok(lines.length >= 1, d.log);
    assert.ok(
      lines.every((l) => l.includes(`"${key}"`) && l.includes(`bytes ${from}-${from + SECTOR_BYTES - 1}`)),
      d.log,
    );
  } finally {
    assert.equal((await d.stop()).code, 0);
  }
  const v = await lsvd(t, ["verify", ...args(t, p)]);
  assert.equal(v.code, 1, v.err);
  assert.match(
    v.out,
    new RegExp(`^${key}: 1 data sectors fail their CRC: ${sector} \\(disk byte ${disk}\\)`, "m"),
  );
  // Export checks what it copies as reads do: it fails naming the bytes and leaves no image behind.
  const image = join(t.dir, "export.img");
  const e = await lsvd(t, ["export", ...args(t, p), image]);
  assert.equal(e.code, 1, e.err);
  assert.match(
    e.err,
    new RegExp(`"${key}": bytes ${from}-${from + SECTOR_BYTES - 1} .*do not match their CRC-32`),
  );
  await assert.rejects(Deno.stat(image));
}

/** Flips the bit that moves header entry 0 by one sector: aligned, in range, and wrong. */
function flipHeaderBit(b: Uint8Array): Uint8Array {
  b[6]! ^= 0x10;
  return b;
}

async function assertStartRefused(t: ToolboxTarget, prefix: string, key: string, why: RegExp): Promise<void> {
  const d = Daemon.spawn({ args: args(t, prefix, "--socket", join(t.dir, "nbd.sock")), env: t.env });
  const { code, log } = await d.finished(120_000);
  assert.equal(code, 1, log);
  const lines = log.split("\n").filter((l) => l.startsWith("lsvd: ") && !/Retrying/.test(l));
  const last = lines.at(-1) ?? "";
  assert.ok(last.includes(`Cannot recover object "${key}"`), log);
  assert.match(last, why);
  assert.match(last, /'lsvd verify' lists every damaged object, 'lsvd rollback --to \d+'/);
  assert.ok(!log.includes("    at "), log);
  assert.ok(!log.includes("Device is now operational"), log);
}

/** A flipped header bit in an object recovery replays: start refused; verify names the object. */
export async function flippedHeaderBit(
  t: ToolboxTarget,
  source: string,
  withCheckpoint: boolean,
): Promise<void> {
  const p = `${source}-header-${withCheckpoint ? "cp" : "nocp"}`;
  await copyVolume(t, source, p);
  let key: string;
  if (withCheckpoint) {
    // A session that ends without a checkpoint leaves its objects after the newest one.
    const checkpointed = await allKeys(t.store, checkpointPrefix(p + "/"));
    assert.ok(checkpointed.length >= 1, "the clean shutdown left a checkpoint");
    const d = await serveDaemon(t, p);
    await runClientOk("qemu-io", [
      "-f",
      "raw",
      unixUri(join(t.dir, "nbd.sock")),
      "-c",
      "write -P 0x5a 1M 2M",
      "-c",
      "flush",
    ]);
    d.kill();
    await d.exited;
    key = (await logKeys(t.store, p + "/")).at(-1)!;
    assert.deepEqual(
      await allKeys(t.store, checkpointPrefix(p + "/")),
      checkpointed,
      "no checkpoint covers it",
    );
    const head = (await t.store.get(key, { offsetBytes: 0, lengthBytes: HEADER_BYTES })).body;
    assert.deepEqual(decodeHeader(head)[0], { addressBytes: 1 << 20, lengthBytes: 2 << 20 });
  } else {
    await deleteCheckpoints(t, p);
    key = (await dataObject(t, p, 8)).key;
  }
  await damage(t, key, flipHeaderBit);
  await assertStartRefused(t, p, key, /header|checksum/);
  const v = await lsvd(t, ["verify", ...args(t, p)]);
  assert.equal(v.code, 1, v.err);
  assert.match(v.out, new RegExp(`^${key}: header CRC mismatch`, "m"));
}

/** A truncated object: start refused naming it (as truncated); verify names it. */
export async function truncatedObject(t: ToolboxTarget, source: string): Promise<void> {
  const p = `${source}-truncated`;
  await copyVolume(t, source, p);
  await deleteCheckpoints(t, p);
  const { key } = await dataObject(t, p, 8);
  await damage(t, key, (b) => b.slice(0, b.length - 3 * SECTOR_BYTES));
  await assertStartRefused(t, p, key, /truncated/);
  const v = await lsvd(t, ["verify", ...args(t, p)]);
  assert.equal(v.code, 1, v.err);
  assert.match(v.out, new RegExp(`^${key}: .*truncated`, "m"));
}

/**
 * `lsvd info` counts the bytes reads can check; an object without a trailer (as a writer that knows
 * only header + data stores it) is served unchecked and counted as such.
 */
export async function verifiableBytes(t: ToolboxTarget, source: string, data: Uint8Array): Promise<void> {
  const info = JSON.parse((await lsvd(t, ["info", "--json", ...args(t, source)])).out);
  assert.deepEqual(info.verification, {
    verifiableBytes: VOLUME_BYTES,
    unverifiableBytes: 0,
    objectsWithoutTables: 0,
    damagedObjects: [],
  });
  const p = `${source}-bare`;
  await copyVolume(t, source, p);
  await deleteCheckpoints(t, p);
  const { key, entry } = await dataObject(t, p, 8);
  await damage(t, key, (b) => b.slice(0, HEADER_BYTES + entry.lengthBytes));
  const bare = JSON.parse((await lsvd(t, ["info", "--json", ...args(t, p)])).out).verification;
  assert.equal(bare.unverifiableBytes, entry.lengthBytes);
  assert.equal(bare.verifiableBytes, VOLUME_BYTES - entry.lengthBytes);
  assert.equal(bare.objectsWithoutTables, 1);
  const text = (await lsvd(t, ["info", ...args(t, p)])).out;
  assert.match(text, /^Verifiable: .* in 1 objects without CRCs .* is served unchecked$/m);
  const d = await serveDaemon(t, p);
  try {
    const scan = await scanDisk(join(t.dir, "nbd.sock"));
    assert.deepEqual([scan.failed, scan.otherErrors], [[], []]);
    assert.equal(scan.sha, await sha256Hex(data));
  } finally {
    assert.equal((await d.stop()).code, 0);
  }
}
