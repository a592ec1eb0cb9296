/**
 * @module
 * Generic netlink codec round trips, and a live family lookup against this machine's kernel.
 */

import assert from "node:assert/strict";
import { Libc } from "./libc.ts";
import {
  attributeString,
  attributeU32,
  attributeU64,
  decodeAttributes,
  decodeMessages,
  encodeAttributes,
  encodeGenlRequest,
  GenericNetlink,
  listAttributes,
} from "./netlink.ts";

Deno.test("encodeAttributes() pads to 4 bytes and decodeAttributes() reads nested attributes back", () => {
  const bytes = encodeAttributes([
    attributeU32(1, 7),
    attributeString(2, "nbd"),
    { type: 7, value: [{ type: 1, value: [attributeU32(1, 5)] }, { type: 1, value: [attributeU32(1, 6)] }] },
    attributeU64(3, 2n ** 40n),
  ]);
  assert.equal(bytes.length % 4, 0);
  const top = decodeAttributes(bytes);
  assert.equal(new DataView(top.get(1)!.buffer, top.get(1)!.byteOffset).getUint32(0, true), 7);
  assert.deepEqual([...top.get(2)!], [110, 98, 100, 0]);
  assert.equal(new DataView(top.get(3)!.buffer, top.get(3)!.byteOffset).getBigUint64(0, true), 2n ** 40n);
  const sockets = listAttributes(top.get(7)!);
  assert.equal(sockets.length, 2);
  const fds = sockets.map(([, item]) => decodeAttributes(item).get(1)![0]);
  assert.deepEqual(fds, [5, 6]);
  // The nested flag is set on the wire and masked off when decoding.
  const view = new DataView(bytes.buffer);
  assert.equal(view.getUint16(8 + 8 + 2, true), 0x8007);
});

Deno.test("encodeGenlRequest() writes the netlink and genl headers that decodeMessages() reads", () => {
  const bytes = encodeGenlRequest({ family: 0x10, command: 3, version: 1, seq: 9, flags: 5, attributes: [] });
  assert.equal(bytes.length, 20);
  const [message] = decodeMessages(bytes);
  assert.deepEqual({ type: message!.type, flags: message!.flags, seq: message!.seq }, {
    type: 0x10,
    flags: 5,
    seq: 9,
  });
  assert.deepEqual([...message!.payload], [3, 1, 0, 0]);
  assert.throws(() => decodeMessages(new Uint8Array([200, 0, 0, 0, ...new Uint8Array(12)])), /bad length/);
});

Deno.test("GenericNetlink.resolveFamily() finds nlctrl and reports a missing family as undefined", async () => {
  const libc = new Libc();
  const netlink = new GenericNetlink(libc);
  try {
    assert.equal(await netlink.resolveFamily("nlctrl"), 0x10);
    assert.equal(await netlink.resolveFamily("lsvd-nofamily"), undefined);
  } finally {
    netlink.close();
    libc.closeLibrary();
  }
});
