/**
 * @module
 * The parts of resuming a device that run without the kernel's nbd module: reading which unix
 * sockets exist from /proc/net/unix (how lsvd learns which sockets NBD_CMD_RECONFIGURE kept). The
 * reconfigure itself runs in tests/vm/restart_test.ts.
 */

import assert from "node:assert/strict";
import { openUnixSocketInodes } from "./nbd_resume.ts";

Deno.test("openUnixSocketInodes() reads the inode column of /proc/net/unix, with or without a path", () => {
  const table = [
    "Num       RefCount Protocol Flags    Type St Inode Path",
    "0000000000000000: 00000002 00000000 00010000 0001 01 21613 /run/lsvd.sock",
    "0000000000000000: 00000003 00000000 00000000 0001 03 48213",
    "",
  ].join("\n");
  assert.deepEqual([...openUnixSocketInodes(table)], ["21613", "48213"]);
});
