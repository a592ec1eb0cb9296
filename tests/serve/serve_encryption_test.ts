/**
 * @module
 * Encryption at rest through the real daemon and real NBD clients (docs/design/encryption.md), on
 * the directory store: a volume created with a key stores no plaintext and reads back after a
 * restart; without the key, with the wrong one, and a plain volume with a key are each refused in
 * one line before the bucket changes; a sector changed in the bucket (its CRCs made to match) is
 * EIO named in the log; the key shows in no log, format record, metrics or command line; and a
 * rollback that makes the same object numbers be written again never repeats a nonce.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { Daemon, ROOT, scratch, unixUri } from "../support/daemon.ts";
import { runClient, runClientOk } from "../support/clients.ts";
import { runLsvd, runLsvdOk } from "../support/lsvd_cli.ts";
import { DirectoryStore } from "../../src/store/directory.ts";
import { listAll, type ObjectStore } from "../../src/store/store.ts";
import { parseLogKey } from "../../src/format/keys.ts";
import {
  claimedTrailerBytes,
  dataBytesOf,
  decodeHeader,
  decodeTrailer,
  FLAG_ENCRYPTED,
  HEADER_BYTES,
  SECTOR_BYTES,
} from "../../src/format/object.ts";
import { crc32 } from "../../src/format/crc32.ts";
import { freePort } from "../support/ports.ts";
import { rgwTarget, startRgw } from "../support/rgw.ts";
import { createDecipheriv, hkdfSync } from "node:crypto";

/** A key file of 64 hex characters: the same bytes LSVD_ENCRYPTION_KEY gives as text. */
async function writeKey(path: string): Promise<string> {
  const text = Array.from(crypto.getRandomValues(new Uint8Array(32)), (b) => b.toString(16).padStart(2, "0"))
    .join("");
  await Deno.writeTextFile(path, text, { mode: 0o600 });
  await Deno.chmod(path, 0o600);
  return text;
}

/** Every key under the store directory with its bytes, to prove a refused start changed nothing. */
async function snapshotOf(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (d: string) => {
    for await (const e of Deno.readDir(d)) {
      const p = join(d, e.name);
      if (e.name === ".lsvd-tmp") continue;
      if (e.isDirectory) await walk(p);
      else out.set(p, new TextDecoder("latin1").decode(await Deno.readFile(p)));
    }
  };
  await walk(dir);
  return out;
}

async function logObjects(store: ObjectStore, prefix: string): Promise<Map<number, Uint8Array>> {
  const out = new Map<number, Uint8Array>();
  for await (const o of listAll(store, { prefix })) {
    const n = parseLogKey(prefix, o.key);
    if (n !== undefined) out.set(n, (await store.get(o.key)).body);
  }
  return out;
}

/** The nonces (epoch:sequence:index) of an encrypted object's data sectors, from its trailer. */
function noncesOf(object: Uint8Array): string[] {
  const dataBytes = dataBytesOf(decodeHeader(object));
  const trailer = decodeTrailer(object.subarray(HEADER_BYTES + dataBytes));
  if (dataBytes === 0) return [];
  assert((trailer.flags & FLAG_ENCRYPTED) !== 0, "a data object of an encrypted volume is encrypted");
  return Array.from(
    { length: dataBytes / SECTOR_BYTES },
    (_, k) => `${trailer.writerEpoch}:${trailer.sequence}:${k}`,
  );
}

/** True when `bytes` holds a run of 512 bytes all equal to `value` (a written pattern in the clear). */
function holdsRun(bytes: Uint8Array, value: number): boolean {
  let run = 0;
  for (const b of bytes) {
    run = b === value ? run + 1 : 0;
    if (run >= 512) return true;
  }
  return false;
}

/**
 * docs/FORMAT.md "Encrypted volumes" followed with node:crypto alone (not lsvd's code): the disk's
 * first 4 KiB, decrypted from the objects in key order.
 */
function readByFormatRules(
  objects: Map<number, Uint8Array>,
  secretText: string,
  saltHex: string,
): Uint8Array {
  const secret = new TextEncoder().encode(secretText);
  const salt = Uint8Array.from(saltHex.match(/../g)!, (h) => parseInt(h, 16));
  const key = new Uint8Array(hkdfSync("sha256", secret, salt, "lsvd data key v1", 32));
  let sector = new Uint8Array(SECTOR_BYTES);
  for (const n of [...objects.keys()].sort((a, b) => a - b)) {
    const object = objects.get(n)!;
    const v = new DataView(object.buffer, object.byteOffset);
    const claimed = v.getUint32(object.length - 4);
    const t = object.length - claimed; // the trailer: sequence at +32, epoch at +40, sectors at +24
    const sectors = v.getUint32(t + 24);
    let offset = 0;
    for (let i = 0; i < 1024 && v.getUint32(i * 12 + 8) !== 0; i++) {
      const address = v.getUint32(i * 12) * 2 ** 32 + v.getUint32(i * 12 + 4);
      const length = v.getUint32(i * 12 + 8);
      if (address === 0) {
        const nonce = new Uint8Array(12);
        const nv = new DataView(nonce.buffer);
        nv.setUint32(0, v.getUint32(t + 44)); // epoch (< 2^32)
        nv.setUint8(4, v.getUint32(t + 32) & 0xff); // sequence bits 39..32
        nv.setUint32(5, v.getUint32(t + 36)); // sequence bits 31..0
        nv.setUint8(9, 0);
        nv.setUint16(10, offset / SECTOR_BYTES);
        const zeroCount = v.getUint32(t + 16), originCount = v.getUint32(t + 20);
        const tagAt = t + 64 + 16 * zeroCount + 8 * originCount + 4 * sectors + 16 * (offset / SECTOR_BYTES);
        const d = createDecipheriv("aes-256-gcm", key, nonce);
        d.setAuthTag(object.subarray(tagAt, tagAt + 16));
        const from = HEADER_BYTES + offset;
        sector = new Uint8Array(d.update(object.subarray(from, from + SECTOR_BYTES)));
        d.final();
      }
      offset += length;
    }
  }
  return sector;
}

/**
 * Whether data sector 0 of an encrypted object authenticates under the data key of `saltHex`
 * (docs/FORMAT.md "Encrypted volumes", followed with node:crypto alone).
 */
function opensWith(object: Uint8Array, secretText: string, saltHex: string): boolean {
  const salt = Uint8Array.from(saltHex.match(/../g)!, (h) => parseInt(h, 16));
  const key = new Uint8Array(
    hkdfSync("sha256", new TextEncoder().encode(secretText), salt, "lsvd data key v1", 32),
  );
  const dataBytes = dataBytesOf(decodeHeader(object));
  assert(dataBytes > 0, "an object with data");
  const t = decodeTrailer(object.subarray(HEADER_BYTES + dataBytes));
  const nonce = new Uint8Array(12);
  const nv = new DataView(nonce.buffer);
  nv.setUint32(0, t.writerEpoch);
  nv.setUint8(4, Math.floor(t.sequence / 2 ** 32));
  nv.setUint32(5, t.sequence >>> 0);
  const trailerAt = HEADER_BYTES + dataBytes;
  const tagAt = trailerAt + 64 + 16 * t.zeroRanges.length + 8 * (t.origins?.length ?? 0) +
    4 * (dataBytes / SECTOR_BYTES);
  const d = createDecipheriv("aes-256-gcm", key, nonce);
  d.setAuthTag(object.subarray(tagAt, tagAt + 16));
  d.update(object.subarray(HEADER_BYTES, HEADER_BYTES + SECTOR_BYTES));
  try {
    d.final();
    return true;
  } catch {
    return false;
  }
}

/** Changes one byte of data sector `sector` and makes its CRC and the object's CRC match again. */
function tamper(object: Uint8Array, sector: number): Uint8Array {
  const out = object.slice();
  const at = HEADER_BYTES + sector * SECTOR_BYTES + 100;
  out[at]! ^= 0xff;
  const dataBytes = dataBytesOf(decodeHeader(out));
  const trailerAt = HEADER_BYTES + dataBytes;
  const t = decodeTrailer(out.subarray(trailerAt));
  const v = new DataView(out.buffer);
  const crcsAt = trailerAt + 64 + 16 * t.zeroRanges.length + 8 * (t.origins?.length ?? 0);
  const from = HEADER_BYTES + sector * SECTOR_BYTES;
  v.setUint32(crcsAt + 4 * sector, crc32(out.subarray(from, from + SECTOR_BYTES)));
  const crcAt = out.length - 8;
  v.setUint32(crcAt, crc32(out.subarray(0, crcAt)));
  assert.equal(claimedTrailerBytes(out), out.length - trailerAt);
  return out;
}

Deno.test("serve --encryption-key-file: encrypted at rest, refused without or with the wrong key, tampering is EIO, the key never shows", async () => {
  const t = await scratch();
  const store = new DirectoryStore(t.store);
  try {
    const keyFile = join(t.dir, "volume.key");
    const keyText = await writeKey(keyFile);
    const otherKey = join(t.dir, "other.key");
    await writeKey(otherKey);
    const uri = unixUri(t.socket);
    const base = ["--dir", t.store, "--prefix", "enc", "--socket", t.socket];
    const metrics = `127.0.0.1:${freePort()}`;

    let d = await Daemon.start({ args: [...base, "--size", "16M", "--encryption-key-file", keyFile] });
    await runClientOk("qemu-io", [
      "-f",
      "raw",
      uri,
      "-c",
      "write -P 0x5a 0 1M",
      "-c",
      "write -P 0xa5 4M 64k",
    ]);
    assert.equal((await d.stop()).code, 0);
    const format = await Deno.readTextFile(join(t.store, "enc", "format.json"));
    const record = JSON.parse(format);
    assert.deepEqual(record.requires, ["encrypted"]);
    assert.equal(record.encryption.algorithm, "AES-256-GCM");
    assert.match(record.encryption.fingerprint, /^[0-9a-f]{32}$/);
    assert(!format.includes(keyText), "the key is not in the format record");
    const objects = await logObjects(store, "enc/");
    assert.equal(readByFormatRules(objects, keyText, record.encryption.salt)[0], 0x5a);
    for (const [n, bytes] of objects) {
      assert(
        !holdsRun(bytes.subarray(HEADER_BYTES), 0x5a) && !holdsRun(bytes, 0xa5),
        `object ${n} holds plaintext`,
      );
    }

    // Refusals: one line, exit 1, nothing in the bucket changed (not even the lease).
    const before = await snapshotOf(t.store);
    for (
      const [extra, pattern] of [
        [[], /^lsvd: Cannot open the volume at "enc\/format\.json": it is encrypted; give its key/m],
        [
          ["--encryption-key-file", otherKey],
          /^lsvd: Cannot open the volume at .*: the key from the file .* is not its key/m,
        ],
      ] as [string[], RegExp][]
    ) {
      const r = await Daemon.spawn({ args: [...base, ...extra] }).finished();
      assert.equal(r.code, 1, r.log);
      assert.match(r.log, pattern);
      assert(!r.log.includes("    at "), r.log);
    }
    assert.deepEqual(await snapshotOf(t.store), before, "a refused start leaves the bucket as it was");

    // The key itself from the environment; it shows nowhere a user or another process looks.
    d = await Daemon.start({
      args: [...base, "--metrics", metrics],
      env: { ...Deno.env.toObject(), LSVD_ENCRYPTION_KEY: keyText },
    });
    await runClientOk("qemu-io", ["-f", "raw", uri, "-c", "read -P 0x5a 0 1M", "-c", "read -P 0xa5 4M 64k"]);
    const cmdline = await Deno.readTextFile(`/proc/${d.child.pid}/cmdline`);
    const exposition = await (await fetch(`http://${metrics}/metrics`)).text();
    assert.equal((await d.stop()).code, 0);
    const info = await runLsvdOk(["info", "--dir", t.store, "--prefix", "enc"]);
    assert.match(
      info.out,
      new RegExp(
        `^Encryption: +AES-256-GCM per 4 KiB sector, key fingerprint ${record.encryption.fingerprint} `,
        "m",
      ),
    );
    for (
      const [where, text] of [["cmdline", cmdline], ["metrics", exposition], ["log", d.log], [
        "info",
        info.out + info.err,
      ]]
    ) {
      assert(!text!.includes(keyText) && !text!.includes(keyText.slice(0, 16)), `the key shows in ${where}`);
    }

    // A sector changed in the bucket, its CRCs fixed so only authentication can catch it.
    const victim = [...objects].find(([, b]) => dataBytesOf(decodeHeader(b)) > 0)!;
    await store.put(`enc/${victim[0].toString(16).padStart(16, "0")}`, tamper(victim[1], 3));
    // verify: the CRCs pass without the key; with it, the forged sector is named.
    const where = ["--dir", t.store, "--prefix", "enc"];
    assert.equal((await runLsvd(["verify", ...where])).code, 0);
    const keyed = await runLsvd(["verify", ...where, "--encryption-key-file", keyFile]);
    assert.equal(keyed.code, 1, keyed.err);
    assert.match(keyed.out, /^enc\/0+\w+: 1 data sectors fail authentication \(AES-256-GCM\): 3$/m);
    d = await Daemon.start({ args: [...base, "--encryption-key-file", keyFile] });
    const bad = await runClient("qemu-io", ["-f", "raw", uri, "-c", "read -P 0x5a 0 1M"]);
    assert.match(bad.stdout + bad.stderr, /Input\/output error/);
    const ok = await runClient("qemu-io", ["-f", "raw", uri, "-c", "read -P 0xa5 4M 64k"]);
    assert.equal(ok.code, 0, "other sectors still read");
    const stopped = await d.stop();
    assert.match(stopped.log, /Cannot read object ".*": bytes \d+-\d+ \(data sector 3\) fail authentication/);

    // A plain volume opened with a key is refused too.
    const plain = ["--dir", t.store, "--prefix", "plain", "--socket", t.socket];
    d = await Daemon.start({ args: [...plain, "--size", "8M"] });
    assert.equal((await d.stop()).code, 0);
    const r = await Daemon.spawn({ args: [...plain, "--encryption-key-file", keyFile] }).finished();
    assert.equal(r.code, 1, r.log);
    assert.match(
      r.log,
      /^lsvd: Cannot open the volume at "plain\/format\.json" with an encryption key: it is not encrypted/m,
    );

    // Unusable keys are one line each, and never echoed.
    const loose = join(t.dir, "loose.key");
    await Deno.writeTextFile(loose, keyText);
    await Deno.chmod(loose, 0o644);
    for (
      const [extra, env, pattern] of [
        [
          ["--encryption-key-file", loose],
          {},
          /^lsvd: Refusing the encryption key file ".*loose\.key": others can read it \(mode 644\); chmod 600 it$/m,
        ],
        [
          [],
          { LSVD_ENCRYPTION_KEY: "short-secret-7f3a" },
          /^lsvd: Invalid encryption key from LSVD_ENCRYPTION_KEY: 17 bytes, fewer than 32/m,
        ],
        [
          ["--encryption-key-file", join(t.dir, "none.key")],
          {},
          /^lsvd: Cannot read the encryption key file ".*none\.key" \(--encryption-key-file\): no such file$/m,
        ],
        [
          ["--encryption-key-file", keyFile],
          { LSVD_ENCRYPTION_KEY: keyText },
          /^lsvd: Invalid options: give the key either in a file/m,
        ],
      ] as [string[], Record<string, string>, RegExp][]
    ) {
      const bad = await Daemon.spawn({ args: [...base, ...extra], env: { ...Deno.env.toObject(), ...env } })
        .finished();
      assert.equal(bad.code, 1, bad.log);
      assert.match(bad.log, pattern);
      assert(!bad.log.includes("short-secret-7f3a") && !bad.log.includes(keyText), bad.log);
      assert(!bad.log.includes("    at "), bad.log);
    }
  } finally {
    await store.close();
    await t.remove();
  }
});

Deno.test("an encrypted volume rolled back and written again never repeats a nonce", async () => {
  const t = await scratch();
  const store = new DirectoryStore(t.store);
  try {
    const keyFile = join(t.dir, "volume.key");
    await writeKey(keyFile);
    const uri = unixUri(t.socket);
    const args = ["--dir", t.store, "--prefix", "rb", "--socket", t.socket, "--encryption-key-file", keyFile];
    let d = await Daemon.start({ args: [...args, "--size", "16M"] });
    await runClientOk("qemu-io", ["-f", "raw", uri, "-c", "write -P 0x11 0 256k"]);
    assert.equal((await d.stop()).code, 0);
    const point = Math.max(...(await logObjects(store, "rb/")).keys());

    const writeSame = async () => {
      d = await Daemon.start({ args });
      await runClientOk("qemu-io", ["-f", "raw", uri, "-c", "write -P 0x22 1M 512k", "-c", "flush"]);
      await runClientOk("qemu-io", ["-f", "raw", uri, "-c", "write -P 0x33 2M 512k"]);
      assert.equal((await d.stop()).code, 0);
      const all = await logObjects(store, "rb/");
      return new Map([...all].filter(([n]) => n > point));
    };
    const first = await writeSame();
    await runLsvdOk(["rollback", "--dir", t.store, "--prefix", "rb", "--to", String(point)]);
    const second = await writeSame();

    const rewritten = [...second.keys()].filter((n) => first.has(n));
    const withData = rewritten.filter((n) => noncesOf(second.get(n)!).length > 0);
    assert(withData.length >= 1, `numbers written twice with data: ${rewritten.join(", ")}`);
    const used = new Set([...first.values()].flatMap(noncesOf));
    for (const n of withData) {
      for (const nonce of noncesOf(second.get(n)!)) assert(!used.has(nonce), `nonce ${nonce} used twice`);
      assert.notDeepEqual(
        second.get(n)!.subarray(HEADER_BYTES, HEADER_BYTES + SECTOR_BYTES),
        first.get(n)!.subarray(HEADER_BYTES, HEADER_BYTES + SECTOR_BYTES),
        `object ${n}: the same plaintext at the same number gives other ciphertext`,
      );
    }
    d = await Daemon.start({ args });
    await runClientOk("qemu-io", [
      "-f",
      "raw",
      uri,
      "-c",
      "read -P 0x11 0 256k",
      "-c",
      "read -P 0x22 1M 512k",
    ]);
    assert.equal((await d.stop()).code, 0);
  } finally {
    await t.remove();
  }
});

Deno.test("an encrypted volume's tools: GC copies, snapshot, export, verify and import", async () => {
  const t = await scratch();
  const store = new DirectoryStore(t.store);
  try {
    const keyFile = join(t.dir, "volume.key");
    await writeKey(keyFile);
    const uri = unixUri(t.socket);
    const where = ["--dir", t.store, "--prefix", "gc"];
    const key = ["--encryption-key-file", keyFile];
    const serve = (extra: string[]) =>
      Daemon.start({ args: [...where, "--socket", t.socket, ...key, ...extra] });
    let d = await serve(["--size", "16M", "--gc-interval", "off"]);
    await runClientOk("qemu-io", ["-f", "raw", uri, "-c", "write -P 0x11 0 4M", "-c", "flush"]);
    await runClientOk("qemu-io", ["-f", "raw", uri, "-c", "write -P 0x22 0 3M", "-c", "flush"]);
    assert.equal((await d.stop()).code, 0);
    // verify checks the ciphertext's CRCs without the key (before GC: verify reports a collected
    // gap as missing today, encrypted or not).
    const verified = await runLsvdOk(["verify", ...where]);
    assert.match(verified.err, /Verifying 3 objects/);

    // Garbage collection copies the last live MiB of the big object into a new, encrypted object.
    const copied = (b: Uint8Array) =>
      (decodeTrailer(b.subarray(b.length - claimedTrailerBytes(b))).flags & 1) !== 0;
    d = await serve(["--retention", "1s", "--gc-interval", "300ms"]);
    const deadline = Date.now() + 30_000;
    let objects = await logObjects(store, "gc/");
    while (![...objects.values()].some(copied)) {
      assert(Date.now() < deadline, `garbage collection made no copy\n${d.log}`);
      await new Promise((r) => setTimeout(r, 200));
      objects = await logObjects(store, "gc/");
    }
    await runClientOk("qemu-io", ["-f", "raw", uri, "-c", "read -P 0x22 0 3M", "-c", "read -P 0x11 3M 1M"]);
    assert.equal((await d.stop()).code, 0);
    objects = await logObjects(store, "gc/");
    for (const [n, bytes] of objects) {
      assert(
        !holdsRun(bytes.subarray(HEADER_BYTES), 0x11) && !holdsRun(bytes, 0x22),
        `object ${n} holds plaintext`,
      );
      noncesOf(bytes); // every data object is encrypted, copies too
    }
    await runLsvdOk(["snapshot", "create", "gcd", ...where]);
    d = await serve(["--gc-interval", "off"]);
    await runClientOk("qemu-io", ["-f", "raw", uri, "-c", "write -P 0x33 0 1M", "-c", "flush"]);
    assert.equal((await d.stop()).code, 0);

    // export needs the key.
    const image = join(t.dir, "image.raw");
    const refused = await runLsvd(["export", ...where, image]);
    assert.equal(refused.code, 1, refused.err);
    assert.match(
      refused.err,
      /^lsvd: Cannot open the volume at "gc\/format\.json": it is encrypted; give its key/m,
    );
    await runLsvdOk(["export", ...where, ...key, image]);
    const disk = await Deno.readFile(image);
    const all = (from: number, to: number, v: number) => disk.subarray(from, to).every((b) => b === v);
    assert(all(0, 1 << 20, 0x33) && all(1 << 20, 3 << 20, 0x22) && all(3 << 20, 4 << 20, 0x11), "export");
    await runLsvdOk(["export", ...where, ...key, "--snapshot", "gcd", image, "--force"]);
    const snap = await Deno.readFile(image);
    assert(
      snap.subarray(0, 3 << 20).every((b) => b === 0x22) &&
        snap.subarray(3 << 20, 4 << 20).every((b) => b === 0x11),
    );

    d = await serve(["--read-only", "--snapshot", "gcd"]);
    await runClientOk("qemu-io", [
      "-f",
      "raw",
      "-r",
      uri,
      "-c",
      "read -P 0x22 0 3M",
      "-c",
      "read -P 0x11 3M 1M",
    ]);
    assert.equal((await d.stop()).code, 0);

    // import makes a new encrypted volume of an image; it serves with the key.
    const imp = ["--dir", t.store, "--prefix", "imp"];
    await runLsvdOk(["import", ...imp, ...key, image]);
    for (const [n, bytes] of await logObjects(store, "imp/")) {
      assert(
        !holdsRun(bytes.subarray(HEADER_BYTES), 0x22) && !holdsRun(bytes, 0x11),
        `imported object ${n} holds plaintext`,
      );
      noncesOf(bytes);
    }
    d = await Daemon.start({ args: [...imp, "--socket", t.socket, ...key] });
    await runClientOk("qemu-io", ["-f", "raw", uri, "-c", "read -P 0x22 0 3M", "-c", "read -P 0x11 3M 1M"]);
    assert.equal((await d.stop()).code, 0);
  } finally {
    await t.remove();
  }
});

Deno.test("serve --journal on an encrypted volume: segments hold no plaintext, replay needs the key and decrypts", async () => {
  const t = await scratch();
  try {
    const keyFile = join(t.dir, "volume.key");
    await writeKey(keyFile);
    const journal = join(t.dir, "journal");
    const uri = unixUri(t.socket);
    const args = ["--dir", t.store, "--socket", t.socket, "--journal", journal, "--journal-delay", "1h"];
    const key = ["--encryption-key-file", keyFile];
    const d = await Daemon.start({ args: [...args, ...key, "--size", "16M"] });
    await runClientOk("qemu-io", ["-f", "raw", uri, "-c", "write -P 0x77 0 256k", "-c", "flush"]);
    d.kill(); // nothing uploaded: the writes are only in the journal
    await d.exited;
    let segments = 0;
    for await (const e of Deno.readDir(journal)) {
      if (!e.isFile || e.name === "id" || e.name.endsWith(".json") || e.name === "lock") continue;
      const bytes = await Deno.readFile(join(journal, e.name));
      segments += bytes.length > 0 ? 1 : 0;
      assert(!holdsRun(bytes, 0x77), `journal file ${e.name} holds plaintext`);
    }
    assert(segments >= 1, "the journal holds the writes");

    const refused = await Daemon.spawn({ args }).finished();
    assert.equal(refused.code, 1, refused.log);
    assert.match(refused.log, /^lsvd: Cannot open the volume at "format\.json": it is encrypted/m);
    const again = await Daemon.start({ args: [...args, ...key] });
    assert.match(again.log, /Replaying \d+ records \(\d+ bytes\) from journal/);
    await runClientOk("qemu-io", ["-f", "raw", uri, "-c", "read -P 0x77 0 256k"]);
    assert.equal((await again.stop()).code, 0);
  } finally {
    await t.remove();
  }
});

Deno.test("the README's encryption recipe works as printed", async () => {
  const t = await scratch();
  const bin = join(t.dir, "bin");
  await Deno.mkdir(bin);
  await Deno.writeTextFile(
    join(bin, "lsvd"),
    `#!/bin/sh\nexec "${Deno.execPath()}" run -A "${join(ROOT, "main.ts")}" "$@"\n`,
    { mode: 0o755 },
  );
  try {
    const readme = await Deno.readTextFile(join(ROOT, "README.md"));
    const at = readme.indexOf("<!-- recipe: encryption ");
    assert(at >= 0, "README has no encryption recipe");
    const script = /```sh\n([\s\S]*?)```/.exec(readme.slice(at))![1]!;
    const r = await runClient("bash", [
      "-e",
      "-c",
      `trap '[ -n "$LSVD_PID" ] && kill $LSVD_PID 2>/dev/null; true' ERR\n${script}`,
    ], { cwd: t.dir, timeoutMs: 120_000, env: { PATH: `${bin}:${Deno.env.get("PATH")}` } });
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
    assert.match(r.stdout, /^refused without the key$/m);
    assert.match(r.stderr, /^lsvd: Cannot open the volume at "format\.json": it is encrypted/m);
    const disk = await Deno.readFile(join(t.dir, "disk.img"));
    assert.equal(disk.length, 1 << 30);
    assert(disk.subarray(0, 1 << 20).every((b) => b === 0x5a), "the exported image holds what was written");
  } finally {
    await t.remove();
  }
});

Deno.test({
  name:
    "an encrypted volume on Ceph RGW with --cache-dir: no plaintext in the bucket or the cache, reads back after restarts",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const rgw = await startRgw();
    const t = await scratch();
    const target = rgwTarget(rgw, t.dir);
    const cacheDir = join(t.dir, "cache");
    try {
      const keyFile = join(t.dir, "volume.key");
      await writeKey(keyFile);
      const uri = unixUri(t.socket);
      const serve = (extra: string[] = []) =>
        Daemon.start({
          args: [
            ...target.storeArgs,
            ...["--prefix", "encrgw", "--socket", t.socket, "--encryption-key-file", keyFile],
            ...["--cache-dir", cacheDir, ...extra],
          ],
          env: target.env,
        });
      let d = await serve(["--size", "32M"]);
      assert.match(d.log, /The volume is encrypted \(AES-256-GCM through OpenSSL libcrypto\)/);
      await runClientOk("qemu-io", ["-f", "raw", uri, "-c", "write -P 0x5a 0 4M", "-c", "flush"]);
      assert.equal((await d.stop()).code, 0);
      for (let i = 0; i < 2; i++) { // from the bucket, then from the disk cache
        d = await serve(["--metrics", "127.0.0.1:0"]);
        await runClientOk("qemu-io", ["-f", "raw", uri, "-c", "read -P 0x5a 0 4M"]);
        const url = (await d.waitForLine(/Serving metrics at/, 1000)).replace(/^.* at (\S+)\.$/, "$1");
        const hits = Number(/^lsvd_disk_cache_hits_total (\S+)$/m.exec(await (await fetch(url)).text())?.[1]);
        assert(i === 0 || hits >= 1, `disk cache hits after a restart: ${hits}`);
        assert.equal((await d.stop()).code, 0);
      }
      const objects = await logObjects(target.store, "encrgw/");
      assert(objects.size >= 2);
      for (const [n, bytes] of objects) assert(!holdsRun(bytes.subarray(HEADER_BYTES), 0x5a), `object ${n}`);
      let cached = 0;
      for await (const e of Deno.readDir(cacheDir)) {
        if (!e.isFile) continue;
        const bytes = await Deno.readFile(join(cacheDir, e.name));
        cached += bytes.length;
        assert(!holdsRun(bytes, 0x5a), `disk cache file ${e.name} holds plaintext`);
      }
      assert(cached >= 4 << 20, `the disk cache holds the data (${cached} bytes)`);
    } finally {
      await target.store.close();
      await t.remove();
      await rgw.stop();
    }
  },
});

Deno.test("lsvd clone of an encrypted volume: its own salt, served with the key, depth 3, flatten, refusals", async () => {
  const t = await scratch();
  const store = new DirectoryStore(t.store);
  try {
    const keyFile = join(t.dir, "volume.key");
    const keyText = await writeKey(keyFile);
    const otherKey = join(t.dir, "other.key");
    await writeKey(otherKey);
    const key = ["--encryption-key-file", keyFile];
    const dir = ["--dir", t.store];
    const uri = unixUri(t.socket);
    const serve = (prefix: string, extra: string[] = []) =>
      Daemon.start({ args: [...dir, "--prefix", prefix, "--socket", t.socket, ...key, ...extra] });
    const io = (...commands: string[]) =>
      runClientOk("qemu-io", ["-f", "raw", uri, ...commands.flatMap((c) => ["-c", c])]);
    const readOnly = (...commands: string[]) =>
      runClientOk("qemu-io", ["-f", "raw", "-r", uri, ...commands.flatMap((c) => ["-c", c])]);
    const record = async (prefix: string) =>
      JSON.parse(await Deno.readTextFile(join(t.store, prefix, "format.json")));

    let d = await serve("src", ["--size", "16M", "--gc-interval", "off"]);
    await io("write -P 0x11 0 2M", "write -P 0x12 2M 1M", "flush");
    assert.equal((await d.stop()).code, 0);

    // Without the key, with another key, and a plain source given a key: one line, nothing written.
    const before = await snapshotOf(t.store);
    const clone = (from: string, to: string, extra: string[]) =>
      runLsvd(["clone", ...dir, "--prefix", from, "--to-prefix", to, ...extra]);
    for (
      const [extra, why] of [
        [[], /^lsvd: Cannot open the volume at "src\/format\.json": it is encrypted; give its key/],
        [
          ["--encryption-key-file", otherKey],
          /^lsvd: Cannot open the volume at "src\/format\.json": the key from .* is not its key/,
        ],
      ] as const
    ) {
      const refused = await clone("src", "c1", [...extra]);
      assert.equal(refused.code, 1, refused.err);
      assert.match(refused.err, why);
      assert.equal(refused.err.trim().split("\n").length, 1, refused.err);
    }
    assert.deepEqual(await snapshotOf(t.store), before, "a refused clone changed the bucket");

    await runLsvdOk(["clone", ...dir, "--prefix", "src", "--to-prefix", "c1", ...key]);
    const [src, c1] = [await record("src"), await record("c1")];
    assert.deepEqual(c1.requires, ["clone", "encrypted"]);
    assert.equal(c1.format, 3);
    assert.notEqual(c1.encryption.salt, src.encryption.salt, "a clone has its own salt");

    // The source goes on with its own writes; the clone reads the source's data and writes its own.
    d = await serve("src", ["--gc-interval", "off"]);
    await io("write -P 0x13 0 512k", "flush");
    assert.equal((await d.stop()).code, 0);
    d = await serve("c1", ["--gc-interval", "off"]);
    await io("read -P 0x11 0 2M", "read -P 0x12 2M 1M", "write -P 0x21 0 1M", "flush", "read -P 0x21 0 1M");
    assert.equal((await d.stop()).code, 0);
    d = await serve("src", ["--read-only"]);
    await readOnly("read -P 0x13 0 512k", "read -P 0x11 512k 1536k", "read -P 0x12 2M 1M");
    assert.equal((await d.stop()).code, 0);

    // The clone's objects and the source's later ones share numbers, never a key: a clone object
    // authenticates under the clone's data key only.
    const [srcObjects, c1Objects] = [await logObjects(store, "src/"), await logObjects(store, "c1/")];
    const shared = [...c1Objects.keys()].filter((n) =>
      srcObjects.has(n) && noncesOf(c1Objects.get(n)!).length > 0
    );
    assert(shared.length > 0, "the source and the clone both wrote an object of the same number");
    for (const n of shared) {
      const object = c1Objects.get(n)!;
      assert(opensWith(object, keyText, c1.encryption.salt), `clone object ${n} opens with its own key`);
      assert(
        !opensWith(object, keyText, src.encryption.salt),
        `clone object ${n} opens with the source's key`,
      );
    }

    // A clone of the clone (depth 3) reads all three members, each with its own key; export too.
    await runLsvdOk(["clone", ...dir, "--prefix", "c1", "--to-prefix", "c2", ...key]);
    const c2 = await record("c2");
    assert(c2.encryption.salt !== c1.encryption.salt && c2.encryption.salt !== src.encryption.salt);
    // Its garbage collection copies only its own objects (under its own key) and reads on right.
    d = await serve("c2", ["--retention", "1s", "--gc-interval", "300ms"]);
    await io(
      "read -P 0x21 0 1M",
      "read -P 0x11 1M 1M",
      "read -P 0x12 2M 1M",
      "write -P 0x31 2M 512k",
      "flush",
      "write -P 0x41 4M 4M",
      "flush",
      "write -P 0x42 4M 3M",
      "flush",
    );
    const copied = (b: Uint8Array) =>
      (decodeTrailer(b.subarray(b.length - claimedTrailerBytes(b))).flags & 1) !== 0;
    const deadline = Date.now() + 30_000;
    while (![...(await logObjects(store, "c2/")).values()].some(copied)) {
      assert(Date.now() < deadline, `garbage collection of the clone made no copy\n${d.log}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    await io("read -P 0x42 4M 3M", "read -P 0x41 7M 1M", "read -P 0x11 1M 1M", "read -P 0x12 2560k 512k");
    assert.equal((await d.stop()).code, 0);
    for (const [n, bytes] of await logObjects(store, "c2/")) {
      assert(!holdsRun(bytes.subarray(HEADER_BYTES), 0x41), `c2/${n} in the clear`);
      if (copied(bytes)) assert(opensWith(bytes, keyText, c2.encryption.salt), `GC copy ${n} under c2's key`);
    }
    const image = join(t.dir, "c2.raw");
    await runLsvdOk(["export", ...dir, "--prefix", "c2", ...key, image]);
    const disk = await Deno.readFile(image);
    const all = (from: number, to: number, v: number) => disk.subarray(from, to).every((b) => b === v);
    assert(all(0, 1 << 20, 0x21) && all(1 << 20, 2 << 20, 0x11) && all(2 << 20, 5 << 19, 0x31), "export");
    assert(all(5 << 19, 3 << 20, 0x12), "export of the source's data through two clones");

    // Each member's key is checked under its own salt: an ancestor whose fingerprint is not the
    // key's is refused in one line naming it, before anything is written (serve and export).
    const srcRecordPath = join(t.store, "src", "format.json");
    const srcRecordText = await Deno.readTextFile(srcRecordPath);
    await Deno.writeTextFile(
      srcRecordPath,
      srcRecordText.replace(src.encryption.fingerprint, "0".repeat(src.encryption.fingerprint.length)),
    );
    const beforeMismatch = await snapshotOf(t.store);
    const mismatch = /^lsvd: Cannot open the volume at "src\/format\.json": the key from .* is not its key/m;
    const spawned = await Daemon.spawn({ args: [...dir, "--prefix", "c2", "--socket", t.socket, ...key] })
      .finished();
    assert.equal(spawned.code, 1, spawned.log);
    assert.match(spawned.log, mismatch);
    assert(!spawned.log.includes("    at "), spawned.log);
    const exported = await runLsvd(["export", ...dir, "--prefix", "c2", ...key, join(t.dir, "refused.raw")]);
    assert.equal(exported.code, 1, exported.err);
    assert.match(exported.err, mismatch);
    assert.deepEqual(await snapshotOf(t.store), beforeMismatch, "a refused open changed the bucket");
    await Deno.writeTextFile(srcRecordPath, srcRecordText);

    // Flatten both clones (each copies with its own key what it read with its ancestors' keys), then
    // the source's data goes, then the first clone's: each clone still reads right.
    await runLsvdOk(["flatten", ...dir, "--prefix", "c2", ...key]);
    await runLsvdOk(["flatten", ...dir, "--prefix", "c1", ...key]);
    await Deno.remove(join(t.store, "src"), { recursive: true });
    d = await serve("c1", ["--read-only"]);
    await readOnly("read -P 0x21 0 1M", "read -P 0x11 1M 1M", "read -P 0x12 2M 1M");
    assert.equal((await d.stop()).code, 0);
    for (const prefix of ["c1/", "c2/"]) {
      for (const [n, bytes] of await logObjects(store, prefix)) {
        assert(
          !holdsRun(bytes.subarray(HEADER_BYTES), 0x11) && !holdsRun(bytes, 0x12),
          `${prefix}${n} in the clear`,
        );
        noncesOf(bytes); // the flattened copies are encrypted too
      }
    }
    await Deno.remove(join(t.store, "c1"), { recursive: true });
    d = await serve("c2", ["--read-only"]);
    await readOnly(
      "read -P 0x21 0 1M",
      "read -P 0x11 1M 1M",
      "read -P 0x31 2M 512k",
      "read -P 0x12 2560k 512k",
      "read -P 0x42 4M 3M",
      "read -P 0x41 7M 1M",
    );
    assert.equal((await d.stop()).code, 0);

    // A plain source given a key: one line, nothing written.
    const plainImage = join(t.dir, "plain.raw");
    await Deno.writeFile(plainImage, new Uint8Array(1 << 20).fill(7));
    await runLsvdOk(["import", ...dir, "--prefix", "plain", plainImage]);
    const plainBefore = await snapshotOf(t.store);
    const refused = await clone("plain", "pc", key);
    assert.equal(refused.code, 1, refused.err);
    assert.match(
      refused.err,
      /^lsvd: Cannot open the volume at "plain\/format\.json" with an encryption key: it is not encrypted/,
    );
    assert.deepEqual(await snapshotOf(t.store), plainBefore);
  } finally {
    await t.remove();
  }
});
