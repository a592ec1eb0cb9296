import assert from "node:assert/strict";
import {
  decodeHeader,
  decodeTrailer,
  FormatError,
  HEADER_BYTES,
  ObjectBuilder,
  TRAILER_FIXED_BYTES,
  trailerBytesOf,
} from "./object.ts";
import { crc32, crc32After4K } from "./crc32.ts";
import { archiveKey, logKey, normalizePrefix, parseLogKey } from "./keys.ts";

Deno.test("crc32() matches the standard check value", () => {
  assert.equal(crc32(new TextEncoder().encode("123456789")), 0xcbf43926);
  const big = new Uint8Array(1000).map((_, i) => i * 7);
  assert.equal(crc32(big.subarray(300), crc32(big.subarray(0, 300))), crc32(big));
});

Deno.test("crc32After4K() extends a CRC by a 4 KiB sector as crc32() over both does", () => {
  const bytes = new Uint8Array(3 * 4096 + 100).map((_, i) => (i * 131 + (i >> 7)) & 0xff);
  let chained = crc32(bytes.subarray(0, 100));
  for (let k = 0; k < 3; k++) {
    chained = crc32After4K(chained, crc32(bytes.subarray(100 + k * 4096, 100 + (k + 1) * 4096)));
  }
  assert.equal(chained, crc32(bytes));
  assert.equal(crc32After4K(0, crc32(bytes.subarray(0, 4096))), crc32(bytes.subarray(0, 4096)));
});

Deno.test("ObjectBuilder.finish() with the sector CRCs given writes the same bytes as without", () => {
  const build = (given: boolean) => {
    const b = new ObjectBuilder({ dataBytes: 3 * 4096, zeroRanges: 0 });
    const data = b.addEntry(0, 3 * 4096).map((_, i) => (i * 7) & 0xff);
    b.bytes.set(data, HEADER_BYTES);
    const crcs = Uint32Array.from([0, 1, 2], (k) => crc32(data.subarray(k * 4096, (k + 1) * 4096)));
    return b.finish(
      { sequence: 1, writerEpoch: 1, volumeSizeBytes: 2 ** 20, sealTimeMs: 5 },
      given ? crcs : undefined,
    );
  };
  const object = build(true);
  assert.deepEqual(object, build(false));
  const trailer = object.subarray(HEADER_BYTES + 3 * 4096);
  assert.equal(decodeTrailer(trailer, object.subarray(0, HEADER_BYTES + 3 * 4096)).sequence, 1);
  assert.throws(
    () =>
      new ObjectBuilder({ dataBytes: 4096, zeroRanges: 0 }).finish(
        { sequence: 1, writerEpoch: 1, volumeSizeBytes: 4096, sealTimeMs: 0 },
        new Uint32Array(2),
      ),
  );
});

Deno.test("logKey() and parseLogKey() use 16 lower-case hex digits under the prefix", () => {
  assert.equal(logKey("", 1), "0000000000000001");
  assert.equal(logKey("vol/", 0x2a), "vol/000000000000002a");
  assert.equal(parseLogKey("vol/", "vol/000000000000002a"), 42);
  assert.equal(parseLogKey("vol/", "vol/000000000000002A"), undefined);
  assert.equal(parseLogKey("vol/", "vol/archive/x/0000000000000001"), undefined);
  assert.equal(parseLogKey("", "0000000000000000"), undefined);
  assert.equal(normalizePrefix("/a/b//"), "a/b/");
  assert.equal(normalizePrefix(""), "");
  assert.equal(archiveKey("v/", "r1", 3), "v/archive/r1/0000000000000003");
});

function sample(): Uint8Array {
  const b = new ObjectBuilder({ dataBytes: 3 * 4096, zeroRanges: 1 });
  b.addEntry(8192, 4096).fill(1);
  b.addEntry(2 ** 40, 8192).fill(2);
  b.addZeroRange(1 << 30, 1 << 30);
  return b.finish({ sequence: 7, writerEpoch: 3, volumeSizeBytes: 2 ** 41, sealTimeMs: 1_800_000_000_000 });
}

Deno.test("ObjectBuilder writes the seed layout a header-only reader understands", () => {
  const bytes = sample();
  const v = new DataView(bytes.buffer);
  // entry 0: u64 BE address, u32 BE length; entry 2 is the terminator
  assert.equal(v.getUint32(0) * 2 ** 32 + v.getUint32(4), 8192);
  assert.equal(v.getUint32(8), 4096);
  assert.equal(v.getUint32(12) * 2 ** 32 + v.getUint32(16), 2 ** 40);
  assert.equal(v.getUint32(20), 8192);
  assert.equal(v.getUint32(32), 0);
  assert.equal(bytes[HEADER_BYTES], 1);
  assert.equal(bytes[HEADER_BYTES + 4096], 2);
  assert.equal(bytes.length, HEADER_BYTES + 3 * 4096 + TRAILER_FIXED_BYTES + 16 + 3 * 4);
});

Deno.test("decodeHeader() and decodeTrailer() read back what was built", () => {
  const bytes = sample();
  const entries = decodeHeader(bytes.subarray(0, HEADER_BYTES));
  assert.deepEqual(entries, [{ addressBytes: 8192, lengthBytes: 4096 }, {
    addressBytes: 2 ** 40,
    lengthBytes: 8192,
  }]);
  const t = trailerBytesOf(entries, bytes.length);
  const dataEnd = bytes.length - t;
  const trailer = decodeTrailer(bytes.subarray(dataEnd), bytes.subarray(0, dataEnd));
  assert.deepEqual(trailer.zeroRanges, [{ addressBytes: 1 << 30, lengthBytes: 1 << 30 }]);
  assert.equal(trailer.sequence, 7);
  assert.equal(trailer.writerEpoch, 3);
  assert.equal(trailer.volumeSizeBytes, 2 ** 41);
});

Deno.test("decodeTrailer() rejects a flipped data bit and a truncated object", () => {
  const bytes = sample();
  const entries = decodeHeader(bytes);
  const dataEnd = bytes.length - trailerBytesOf(entries, bytes.length);
  bytes[HEADER_BYTES + 5]! ^= 1;
  assert.throws(() => decodeTrailer(bytes.subarray(dataEnd), bytes.subarray(0, dataEnd)), /checksum/);
  assert.throws(() => trailerBytesOf(entries, HEADER_BYTES + 4096), /truncated/);
  assert.throws(() => decodeTrailer(bytes.subarray(dataEnd + 1)), FormatError);
});

Deno.test("decodeHeader() rejects unaligned entries", () => {
  const h = new Uint8Array(HEADER_BYTES);
  new DataView(h.buffer).setUint32(4, 100);
  new DataView(h.buffer).setUint32(8, 4096);
  assert.throws(() => decodeHeader(h), /not 4 KiB aligned/);
});
