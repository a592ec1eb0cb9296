/**
 * @module
 * Unit tests of the pure NBD codec: every encoder against its decoder, and byte layouts
 * checked against the spec's field order.
 */

import assert from "node:assert/strict";
import * as p from "../../src/nbd/protocol.ts";

Deno.test("encodeGreeting() writes NBDMAGIC, IHAVEOPT and the handshake flags", () => {
  const bytes = p.encodeGreeting(p.FLAG_FIXED_NEWSTYLE | p.FLAG_NO_ZEROES);
  assert.equal(new TextDecoder().decode(bytes.subarray(0, 16)), "NBDMAGICIHAVEOPT");
  assert.deepEqual([...bytes.subarray(16)], [0, 3]);
});

Deno.test("encodeOptionHeader() round-trips through decodeOptionHeader()", () => {
  const data = new Uint8Array([1, 2, 3]);
  const bytes = p.encodeOptionHeader(p.OPT_GO, data);
  assert.deepEqual(p.decodeOptionHeader(bytes), { magicOk: true, option: p.OPT_GO, lengthBytes: 3 });
  assert.deepEqual([...bytes.subarray(16)], [1, 2, 3]);
  bytes[0] = 0;
  assert.equal(p.decodeOptionHeader(bytes).magicOk, false);
});

Deno.test("encodeOptionReply() round-trips through decodeOptionReply()", () => {
  const bytes = p.encodeOptionReply(p.OPT_LIST, p.REP_SERVER, p.encodeRepServer("lsvd", "disk"));
  const reply = p.decodeOptionReply(bytes);
  assert.ok(reply !== null);
  assert.equal(reply.option, p.OPT_LIST);
  assert.equal(reply.replyType, p.REP_SERVER);
  const view = new DataView(reply.data.buffer, reply.data.byteOffset);
  assert.equal(view.getUint32(0), 4);
  assert.equal(new TextDecoder().decode(reply.data.subarray(4)), "lsvddisk");
  assert.equal(p.decodeOptionReply(new Uint8Array(20)), null);
});

Deno.test("encodeInfoRequest() round-trips through decodeInfoRequest() and malformed data is null", () => {
  const request = { exportName: "vol é", infoTypes: [p.INFO_NAME, p.INFO_BLOCK_SIZE] };
  const bytes = p.encodeInfoRequest(request);
  assert.deepEqual(p.decodeInfoRequest(bytes), request);
  assert.equal(p.decodeInfoRequest(bytes.subarray(0, bytes.length - 1)), null);
  assert.equal(p.decodeInfoRequest(new Uint8Array([0, 0, 0, 9, 0, 0])), null);
  const extra = new Uint8Array(bytes.length + 1);
  extra.set(bytes);
  assert.equal(p.decodeInfoRequest(extra), null);
});

Deno.test("encodeMetaContextRequest() round-trips through decodeMetaContextRequest()", () => {
  for (const queries of [[], ["base:allocation"], ["base:", "x-foo:bar"]]) {
    const request = { exportName: "lsvd", queries };
    const bytes = p.encodeMetaContextRequest(request);
    assert.deepEqual(p.decodeMetaContextRequest(bytes), request);
    assert.equal(p.decodeMetaContextRequest(bytes.subarray(0, bytes.length - 1)), null);
  }
  const invalidUtf8 = p.encodeMetaContextRequest({ exportName: "ab", queries: [] });
  invalidUtf8[4] = 0xff;
  assert.equal(p.decodeMetaContextRequest(invalidUtf8), null);
});

Deno.test("encodeRequest() round-trips through decodeRequest() including 64-bit offsets", () => {
  const view = new DataView(new ArrayBuffer(40));
  const request = {
    flags: p.CMD_FLAG_FUA,
    command: p.CMD_WRITE,
    handleHigh: 0xdeadbeef,
    handleLow: 0x01020304,
    offsetBytes: 2 ** 44 + 4096,
    lengthBytes: 0xfffff000,
  };
  p.encodeRequest(view, 12, request);
  assert.deepEqual(p.decodeRequest(view, 12), { magicOk: true, ...request });
  assert.equal(view.getUint32(12), p.REQUEST_MAGIC);
  view.setUint32(12, 0);
  assert.equal(p.decodeRequest(view, 12).magicOk, false);
});

Deno.test("encodeSimpleReply() and decodeReplyHeader() agree", () => {
  const view = new DataView(new ArrayBuffer(16));
  p.encodeSimpleReply(view, 0, 7, 9, p.EINVAL);
  const reply = p.decodeReplyHeader(view, 0);
  assert.ok(reply !== null && !reply.structured);
  assert.equal(reply.error, p.EINVAL);
  assert.equal(reply.handleHigh, 7);
  assert.equal(reply.handleLow, 9);
});

Deno.test("encodeOffsetDataHeader() describes one final chunk of data at an offset", () => {
  const view = new DataView(new ArrayBuffer(p.OFFSET_DATA_HEADER_BYTES));
  p.encodeOffsetDataHeader(view, 0, { handleHigh: 1, handleLow: 2, offsetBytes: 2 ** 40, lengthBytes: 4096 });
  const reply = p.decodeReplyHeader(view, 0);
  assert.ok(reply !== null && reply.structured);
  assert.equal(reply.flags, p.REPLY_FLAG_DONE);
  assert.equal(reply.replyType, p.REPLY_TYPE_OFFSET_DATA);
  assert.equal(reply.lengthBytes, 4096 + 8);
  assert.equal(p.getU64(view, p.STRUCTURED_REPLY_HEADER_BYTES), 2 ** 40);
});

Deno.test("encodeErrorChunk() carries errno and message, cut to the protocol's string limit", () => {
  const message = new Uint8Array(5000).fill(0x61);
  const bytes = new Uint8Array(p.errorChunkBytes(message));
  const view = new DataView(bytes.buffer);
  p.encodeErrorChunk(bytes, view, 0, { handleHigh: 0, handleLow: 5, error: p.EIO, message });
  const reply = p.decodeReplyHeader(view, 0);
  assert.ok(reply !== null);
  assert.equal(reply.replyType, p.REPLY_TYPE_ERROR);
  assert.equal(reply.lengthBytes, 6 + p.STRING_BYTES_MAX);
  assert.equal(view.getUint32(20), p.EIO);
  assert.equal(view.getUint16(24), p.STRING_BYTES_MAX);
  assert.equal(bytes.length, 20 + 6 + p.STRING_BYTES_MAX);
});

Deno.test("encodeBlockStatusHeader() and encodeDescriptor() lay out context id and descriptors", () => {
  const bytes = new Uint8Array(p.blockStatusChunkBytes(2));
  const view = new DataView(bytes.buffer);
  p.encodeBlockStatusHeader(view, 0, { handleHigh: 0, handleLow: 1, contextId: 1, descriptors: 2 });
  p.encodeDescriptor(view, 0, 0, { lengthBytes: 8192, status: 0 });
  p.encodeDescriptor(view, 0, 1, { lengthBytes: 4096, status: p.STATE_HOLE | p.STATE_ZERO });
  const reply = p.decodeReplyHeader(view, 0);
  assert.ok(reply !== null);
  assert.equal(reply.lengthBytes, 4 + 16);
  assert.deepEqual([20, 24, 28, 32, 36].map((o) => view.getUint32(o)), [1, 8192, 0, 4096, 3]);
});

Deno.test("encodeExportNameReply() omits the 124 zero bytes only with NO_ZEROES", () => {
  assert.equal(p.encodeExportNameReply(4096, 1, true).length, 10);
  const full = p.encodeExportNameReply(2 ** 40, p.FLAG_HAS_FLAGS | p.FLAG_READ_ONLY, false);
  assert.equal(full.length, 134);
  const view = new DataView(full.buffer);
  assert.equal(p.getU64(view, 0), 2 ** 40);
  assert.equal(view.getUint16(8), 3);
});

Deno.test("encodeInfoExport() and encodeInfoBlockSize() follow the INFO layouts", () => {
  const exp = new DataView(p.encodeInfoExport(1 << 30, 0x1ff).buffer);
  assert.deepEqual([exp.getUint16(0), p.getU64(exp, 2), exp.getUint16(10)], [p.INFO_EXPORT, 1 << 30, 0x1ff]);
  const bs = new DataView(p.encodeInfoBlockSize(4096, 4096, 1 << 25).buffer);
  assert.deepEqual([bs.getUint16(0), bs.getUint32(2), bs.getUint32(6), bs.getUint32(10)], [
    3,
    4096,
    4096,
    1 << 25,
  ]);
});
