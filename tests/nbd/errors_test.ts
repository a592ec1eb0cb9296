/**
 * @module
 * nbdErrno(): the one mapping from internal errors to NBD errno values, and the rule that a
 * broken invariant is never turned into an errno: in-process it is rethrown, and in a daemon
 * it crashes the process instead of becoming an EIO reply.
 */

import assert from "node:assert/strict";
import { AssertionError } from "node:assert";
import { DeviceError, nbdErrno } from "../../src/nbd/errors.ts";
import * as p from "../../src/nbd/protocol.ts";
import { StoreError } from "../../src/store/store.ts";
import { LsvdError } from "../../src/util/errors.ts";
import { RawClient } from "./raw_client.ts";

Deno.test("nbdErrno() maps store, volume, range, permission and space errors", () => {
  assert.equal(nbdErrno(new StoreError("Transient", "x")), p.EIO);
  assert.equal(nbdErrno(new StoreError("Fatal", "x")), p.EIO);
  assert.equal(nbdErrno(new LsvdError("unavailable", "Cannot write object: x")), p.EIO);
  assert.equal(nbdErrno(new LsvdError("data", "Cannot read object: damaged")), p.EIO);
  assert.equal(nbdErrno(new LsvdError("fenced", "Cannot write: another writer")), p.EIO);
  assert.equal(nbdErrno(new LsvdError("invalid", "bad request")), p.EINVAL);
  assert.equal(nbdErrno(new LsvdError("closed", "closed")), p.ESHUTDOWN);
  assert.equal(nbdErrno(new Error("anything")), p.EIO);
  assert.equal(nbdErrno("a string"), p.EIO);
  assert.equal(nbdErrno(new RangeError("out of range")), p.EINVAL);
  assert.equal(nbdErrno(new DeviceError("EROFS", "read-only")), p.EPERM);
  assert.equal(nbdErrno(new DeviceError("ENOSPC", "full")), p.ENOSPC);
  assert.equal(nbdErrno(new DeviceError("EDQUOT", "quota")), p.ENOSPC);
  assert.equal(nbdErrno(new DeviceError("ESHUTDOWN", "stopping")), p.ESHUTDOWN);
  assert.equal(nbdErrno(new DeviceError("EWHATEVER", "unknown code")), p.EIO);
  assert.equal(nbdErrno(new Deno.errors.PermissionDenied("no")), p.EPERM);
});

Deno.test("nbdErrno() rethrows AssertionError instead of mapping it", () => {
  const broken = new AssertionError({ message: "invariant" });
  assert.throws(() => nbdErrno(broken), (e) => e === broken);
});

Deno.test("serveNbdConnection() lets a device AssertionError crash the daemon", async () => {
  const dir = await Deno.makeTempDir();
  const socketPath = `${dir}/s.sock`;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL("./serve_memory.ts", import.meta.url).pathname,
      socketPath,
      "1048576",
      "--assert-on-read",
    ],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const stderr = child.stderr.pipeThrough(new TextDecoderStream());
  let log = "";
  const collecting = stderr.pipeTo(new WritableStream({ write: (chunk) => void (log += chunk) }));
  try {
    const deadline = Date.now() + 30_000;
    while (!log.includes("operational")) {
      if (Date.now() > deadline) throw new Error(`server did not start:\n${log}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const client = await RawClient.connect(socketPath);
    client.noteRead(1, 4096);
    await client.send(RawClient.encode({ command: p.CMD_READ, handle: 1, lengthBytes: 4096 }));
    assert.ok(await client.closedByServer(10_000), "the daemon answered instead of crashing");
    client.close();
    const status = await child.status;
    await collecting;
    assert.notEqual(status.code, 0);
    assert.match(log, /injected invariant failure/);
  } finally {
    try {
      child.kill("SIGKILL");
    } catch {
      // already exited
    }
    await child.status;
    await Deno.remove(dir, { recursive: true });
  }
});
