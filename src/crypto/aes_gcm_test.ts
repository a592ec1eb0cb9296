import assert from "node:assert/strict";
import { aesGcm } from "./aes_gcm.ts";
import { nonceBytes, VolumeSecret } from "./sector_cipher.ts";
import { encryptObject } from "./object_cipher.ts";
import { decodeTrailer, FormatError, HEADER_BYTES, ObjectBuilder } from "../format/object.ts";

Deno.test("aesGcm(): libcrypto and node:crypto give the same ciphertext and tags, and both refuse a changed byte", () => {
  const key = crypto.getRandomValues(new Uint8Array(32));
  const fast = aesGcm(key, "openssl"), slow = aesGcm(key, "node");
  assert.equal(fast.engine, "OpenSSL libcrypto", "libcrypto.so.3 loads on this machine");
  assert.equal(slow.engine, "node:crypto");
  for (const [length, withAad] of [[4096, false], [4096, true], [100, true], [0, true]] as const) {
    const nonce = crypto.getRandomValues(new Uint8Array(12));
    const plain = crypto.getRandomValues(new Uint8Array(length));
    const aad = withAad ? crypto.getRandomValues(new Uint8Array(21)) : undefined;
    const [a, b] = [new Uint8Array(length), new Uint8Array(length)];
    const [ta, tb] = [new Uint8Array(16), new Uint8Array(16)];
    fast.seal(nonce, plain, a, ta, aad);
    slow.seal(nonce, plain, b, tb, aad);
    assert.deepEqual([a, ta], [b, tb], `length ${length}, aad ${withAad}`);
    for (const g of [fast, slow]) {
      const back = new Uint8Array(length);
      assert(g.open(nonce, a, back, ta, aad), g.engine);
      assert.deepEqual(back, plain);
      const bad = ta.slice();
      bad[0]! ^= 1;
      assert(!g.open(nonce, a, back, bad, aad), `${g.engine} refuses a changed tag`);
      if (length > 0) {
        const changed = a.slice();
        changed[length - 1]! ^= 0x80;
        assert(!g.open(nonce, changed, back, ta, aad), `${g.engine} refuses a changed byte`);
      }
    }
  }
});

Deno.test("SectorCipher: a sector opens only with its own epoch, sequence and index", () => {
  const secret = new VolumeSecret(crypto.getRandomValues(new Uint8Array(32)), "a test");
  const salt = crypto.getRandomValues(new Uint8Array(16));
  const { cipher } = secret.derive(salt);
  const plain = crypto.getRandomValues(new Uint8Array(3 * 4096));
  const at = { writerEpoch: 7, sequence: 2 ** 33 + 5, firstIndex: 0 };
  const [out, tags] = [new Uint8Array(plain.length), new Uint8Array(48)];
  cipher.seal(at, plain, out, tags);
  const back = new Uint8Array(plain.length);
  assert.equal(cipher.open(at, out, tags, back), -1);
  assert.deepEqual(back, plain);
  assert.equal(cipher.open({ ...at, writerEpoch: 8 }, out, tags, back), 0, "another epoch");
  assert.equal(cipher.open({ ...at, sequence: 5 }, out, tags, back), 0, "another sequence");
  assert.equal(cipher.open({ ...at, firstIndex: 1 }, out.subarray(4096), tags, back.subarray(4096)), -1);
  assert.equal(cipher.open(at, out.subarray(4096, 8192), tags, back.subarray(0, 4096)), 0, "another index");
  assert.equal(JSON.stringify({ secret }), '{"secret":"[secret]"}');
  assert.equal(Deno.inspect(secret), "VolumeSecret(a test)");
});

Deno.test("nonceBytes(): epoch:u32 || sequence:u40 || index:u24, big-endian", () => {
  const nonce = nonceBytes(new Uint8Array(12), 0x01020304, 0x05_0607_0809, 0x0a0b0c);
  assert.deepEqual(Array.from(nonce), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
  assert.deepEqual(
    Array.from(nonceBytes(new Uint8Array(12), 2 ** 32 - 1, 2 ** 40 - 1, 2 ** 24 - 1)),
    Array(12).fill(255),
  );
});

Deno.test("decodeTrailer() refuses an encrypted trailer whose writer epoch no nonce can hold (a flipped bit): data, not an assertion", () => {
  const b = new ObjectBuilder({ dataBytes: 2 * 4096, zeroRanges: 0 });
  b.addEntry(0, 8192).fill(7);
  const plain = b.finish({
    sequence: 9,
    writerEpoch: 3,
    volumeSizeBytes: 2 ** 30,
    sealTimeMs: 1_800_000_000_000,
  });
  const { cipher } = new VolumeSecret(new Uint8Array(32).fill(1), "test").derive(new Uint8Array(16));
  const stored = encryptObject(cipher, plain);
  const trailerAt = HEADER_BYTES + 8192;
  assert.equal(decodeTrailer(stored.subarray(trailerAt)).sectorCrcs?.seal?.writerEpoch, 3);
  stored[trailerAt + 43]! ^= 0x01; // the epoch's u64 (offset 40) gains 2^32
  assert.throws(() => decodeTrailer(stored.subarray(trailerAt)), FormatError);
});
