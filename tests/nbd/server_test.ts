/**
 * @module
 * The listener and connection loop at byte level: socket permissions and stale sockets, option
 * replies libnbd cannot provoke, protocol violations that close one connection, the bounds on
 * in-flight work, and graceful stop with requests in flight.
 */

import assert from "node:assert/strict";
import * as p from "../../src/nbd/protocol.ts";
import { startNbdServer } from "../../src/nbd/server.ts";
import { MemoryDevice } from "../support/memory_device.ts";
import { runClientOk, SYSTEM_PYTHON } from "../support/clients.ts";
import { withServer } from "./fixture.ts";
import { RawClient } from "./raw_client.ts";
import { concatBytes } from "../../src/util/bytes.ts";
import { LsvdError } from "../../src/util/errors.ts";

const MiB = 1024 * 1024;

async function waitFor(condition: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** Connects and reads the greeting, then sends client flags: ready for raw options. */
async function rawOptions(socketPath: string): Promise<RawClient> {
  const client = new RawClient(await Deno.connect({ transport: "unix", path: socketPath }));
  await client.readExact(18);
  await client.send(new Uint8Array([0, 0, 0, p.FLAG_C_FIXED_NEWSTYLE | p.FLAG_C_NO_ZEROES]));
  return client;
}

Deno.test("startNbdServer() creates the unix socket with mode 0600 and removes it on stop", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const socketPath = `${dir}/s.sock`;
    const server = await startNbdServer({ device: new MemoryDevice({ sizeBytes: MiB }), socketPath });
    assert.equal((await Deno.stat(socketPath)).mode! & 0o777, 0o600);
    await server.stop();
    await assert.rejects(Deno.stat(socketPath), Deno.errors.NotFound);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("startNbdServer() replaces a stale socket but refuses a live one or a regular file", async () => {
  const dir = await Deno.makeTempDir();
  const device = new MemoryDevice({ sizeBytes: MiB });
  try {
    const socketPath = `${dir}/s.sock`;
    // A socket file whose server is gone (python binds and exits without unlinking).
    const bind = `import socket; socket.socket(socket.AF_UNIX).bind(${JSON.stringify(socketPath)})`;
    await runClientOk(SYSTEM_PYTHON, ["-c", bind]);
    assert.ok((await Deno.lstat(socketPath)).isSocket);
    const server = await startNbdServer({ device, socketPath });
    await assert.rejects(startNbdServer({ device, socketPath }), /another server is listening/);
    await server.stop();
    await Deno.writeTextFile(`${dir}/file`, "x");
    await assert.rejects(startNbdServer({ device, socketPath: `${dir}/file` }), /not a socket/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("negotiate() answers unknown options with ERR_UNSUP and STARTTLS with ERR_POLICY, then goes on", async () => {
  await withServer({}, async (f) => {
    const client = await rawOptions(f.socketPath);
    try {
      await client.send(p.encodeOptionHeader(77, new Uint8Array(10)));
      assert.equal((await client.readOptionReply()).replyType, p.REP_ERR_UNSUP);
      await client.send(p.encodeOptionHeader(p.OPT_STARTTLS, new Uint8Array(0)));
      assert.equal((await client.readOptionReply()).replyType, p.REP_ERR_POLICY);
      await client.send(p.encodeOptionHeader(p.OPT_LIST, new Uint8Array(3)));
      assert.equal((await client.readOptionReply()).replyType, p.REP_ERR_INVALID);
      const query = p.encodeMetaContextRequest({ exportName: "lsvd", queries: [p.META_BASE_ALLOCATION] });
      await client.send(p.encodeOptionHeader(p.OPT_SET_META_CONTEXT, query));
      assert.equal(
        (await client.readOptionReply()).replyType,
        p.REP_ERR_INVALID,
        "meta context before structured",
      );
      await client.send(p.encodeOptionHeader(p.OPT_GO, new Uint8Array([0, 0, 0, 9, 1])));
      assert.equal((await client.readOptionReply()).replyType, p.REP_ERR_INVALID);
      await client.send(p.encodeOptionHeader(p.OPT_EXPORT_NAME, new TextEncoder().encode("lsvd")));
      const reply = await client.readExact(10); // NO_ZEROES: size and flags only
      assert.equal(p.getU64(new DataView(reply.buffer), 0), f.device.sizeBytes);
      const flags = new DataView(reply.buffer).getUint16(8);
      assert.equal(flags & p.FLAG_SEND_DF, 0, "DF without structured replies");
      assert.ok(flags & p.FLAG_CAN_MULTI_CONN);
    } finally {
      client.close();
    }
  });
});

Deno.test("negotiate() closes the connection on an unknown EXPORT_NAME, bad magic or unknown client flags", async () => {
  await withServer({}, async (f) => {
    const unknown = await rawOptions(f.socketPath);
    await unknown.send(p.encodeOptionHeader(p.OPT_EXPORT_NAME, new TextEncoder().encode("other")));
    assert.ok(await unknown.closedByServer(2000));
    unknown.close();
    const badMagic = await rawOptions(f.socketPath);
    await badMagic.send(new Uint8Array(16).fill(0x41));
    assert.ok(await badMagic.closedByServer(2000));
    badMagic.close();
    const badFlags = new RawClient(await Deno.connect({ transport: "unix", path: f.socketPath }));
    await badFlags.readExact(18);
    await badFlags.send(new Uint8Array([0, 0, 1, 0]));
    assert.ok(await badFlags.closedByServer(2000));
    badFlags.close();
    assert.ok(f.logLines.some((l) => l.includes("unknown client flags")), f.logLines.join("\n"));
  });
});

Deno.test("negotiate() drops a client that stays silent past the handshake timeout", async () => {
  await withServer({ server: { handshakeTimeoutMs: 100 } }, async (f) => {
    const client = await rawOptions(f.socketPath);
    assert.ok(await client.closedByServer(3000));
    client.close();
  });
});

Deno.test("Connection answers an unknown command with EINVAL and closes on an absurd WRITE length", async () => {
  await withServer({}, async (f) => {
    const client = await RawClient.connect(f.socketPath, { structured: true });
    try {
      const unknown = await client.request({ command: 42, handle: 1 });
      assert.deepEqual([unknown.handle, unknown.error], [1, p.EINVAL]);
      const cache = await client.request({ command: p.CMD_CACHE, handle: 2, lengthBytes: 4096 });
      assert.equal(cache.error, p.EINVAL);
      const flush = await client.request({ command: p.CMD_FLUSH, handle: 3, offsetBytes: 4096 });
      assert.equal(flush.error, p.EINVAL);
      const bigRead = await client.request({ command: p.CMD_READ, handle: 4, lengthBytes: 64 * MiB });
      assert.equal(bigRead.error, p.EINVAL);
      await client.send(RawClient.encode({ command: p.CMD_WRITE, handle: 5, lengthBytes: 0xfffff000 }));
      assert.ok(await client.closedByServer(2000));
    } finally {
      client.close();
    }
    const next = await RawClient.connect(f.socketPath);
    try {
      const reply = await next.request({ command: p.CMD_READ, handle: 9, lengthBytes: 4096 });
      assert.equal(reply.error, 0);
      assert.equal(reply.data?.length, 4096);
    } finally {
      next.close();
    }
  });
});

Deno.test("Connection stops reading when too many requests are in flight", async () => {
  await withServer({ latencyMs: 200 }, async (f) => {
    const client = await RawClient.connect(f.socketPath);
    try {
      const batch: Uint8Array[] = [];
      for (let i = 0; i < 300; i++) {
        client.noteRead(i, 4096);
        batch.push(
          RawClient.encode({ command: p.CMD_READ, handle: i, offsetBytes: 4096 * i, lengthBytes: 4096 }),
        );
      }
      await client.send(concatBytes(batch));
      await waitFor(() => f.device.operationCount >= 128, "128 reads in flight");
      await new Promise((resolve) => setTimeout(resolve, 50));
      assert.equal(f.device.operationCount, 128, "more than 128 requests were started at once");
      const handles = new Set<number>();
      for (let i = 0; i < 300; i++) {
        const reply = await client.readReply();
        assert.equal(reply.error, 0);
        handles.add(reply.handle);
      }
      assert.equal(handles.size, 300);
    } finally {
      client.close();
    }
  });
});

Deno.test("Connection stops reading while a client does not read its replies (bounded buffering)", async () => {
  await withServer({ sizeBytes: 256 * MiB }, async (f) => {
    const client = await RawClient.connect(f.socketPath, { structured: true });
    try {
      const count = 200;
      const batch: Uint8Array[] = [];
      for (let i = 0; i < count; i++) {
        batch.push(
          RawClient.encode({
            command: p.CMD_READ,
            handle: i,
            offsetBytes: MiB * (i % 256),
            lengthBytes: MiB,
          }),
        );
      }
      const sending = client.send(concatBytes(batch));
      await waitFor(() => f.device.operationCount >= 64, "64 MiB of reads");
      await new Promise((resolve) => setTimeout(resolve, 300));
      const started = f.device.operationCount;
      assert.ok(started < 100, `${started} MiB of reads were started while the client read nothing`);
      for (let i = 0; i < count; i++) {
        const reply = await client.readReply();
        assert.equal(reply.error, 0);
        assert.equal(reply.data?.length, MiB);
      }
      await sending;
      assert.equal(f.device.operationCount, count);
    } finally {
      client.close();
    }
  });
});

Deno.test("NbdServer.stop() finishes in-flight requests, replies, then closes", async () => {
  await withServer({ latencyMs: 300 }, async (f) => {
    const client = await RawClient.connect(f.socketPath);
    try {
      const batch: Uint8Array[] = [];
      for (let i = 0; i < 10; i++) {
        batch.push(
          RawClient.encode({ command: p.CMD_WRITE, handle: i, offsetBytes: 4096 * i }, new Uint8Array(4096)),
        );
      }
      await client.send(concatBytes(batch));
      await waitFor(() => f.device.operationCount === 10, "10 writes in flight");
      const stopped = f.server.stop();
      for (let i = 0; i < 10; i++) assert.equal((await client.readReply()).error, 0);
      await stopped;
      assert.ok(await client.closedByServer(2000));
      await assert.rejects(Deno.connect({ transport: "unix", path: f.socketPath }));
    } finally {
      client.close();
    }
  });
});

Deno.test("Connection answers nothing once the device is fenced and closes, so a kernel client re-sends elsewhere", async () => {
  await withServer({ latencyMs: 50 }, async (f) => {
    const client = await RawClient.connect(f.socketPath);
    try {
      const ok = await client.request(
        { command: p.CMD_WRITE, handle: 1, lengthBytes: 4096 },
        new Uint8Array(4096),
      );
      assert.equal(ok.error, 0);
      f.device.failNext("flush", new LsvdError("fenced", "Cannot flush: another writer took the volume"));
      await client.send(RawClient.encode({ command: p.CMD_FLUSH, handle: 2 }));
      // No reply at all (not even EIO): the first read is the end of the stream.
      let timer: ReturnType<typeof setTimeout> | undefined;
      const got = await Promise.race([
        client.conn.read(new Uint8Array(64)),
        new Promise<"timeout">((resolve) => timer = setTimeout(() => resolve("timeout"), 2000)),
      ]);
      clearTimeout(timer);
      assert.equal(got, null, "the server closes the connection without answering");
    } finally {
      client.close();
    }
  });
});

Deno.test("startNbdServer() onClientLeft: a client that sent requests and closed without NBD_CMD_DISC", async () => {
  let left = 0;
  await withServer({ server: { onClientLeft: () => left++ } }, async (f) => {
    const idle = await RawClient.connect(f.socketPath);
    idle.close(); // no request: not reported (a socket the kernel declined)
    const polite = await RawClient.connect(f.socketPath);
    assert.equal((await polite.request({ command: p.CMD_FLUSH, handle: 1 })).error, 0);
    await polite.send(RawClient.encode({ command: p.CMD_DISC, handle: 2 }));
    assert.ok(await polite.closedByServer(2000));
    polite.close();
    const dropped = await RawClient.connect(f.socketPath);
    assert.equal((await dropped.request({ command: p.CMD_FLUSH, handle: 1 })).error, 0);
    dropped.close(); // what the kernel does to a socket whose request timed out
    await waitFor(() => left === 1, "onClientLeft for the dropped client");
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(left, 1, "only the client that sent requests and left without DISC");
  });
});

Deno.test("Connection ends on NBD_CMD_DISC after answering what came before", async () => {
  await withServer({ latencyMs: 50 }, async (f) => {
    const client = await RawClient.connect(f.socketPath);
    try {
      client.noteRead(1, 4096);
      await client.send(concatBytes([
        RawClient.encode({ command: p.CMD_READ, handle: 1, lengthBytes: 4096 }),
        RawClient.encode({ command: p.CMD_DISC, handle: 2 }),
      ]));
      const reply = await client.readReply();
      assert.deepEqual([reply.handle, reply.error], [1, 0]);
      assert.ok(await client.closedByServer(2000));
    } finally {
      client.close();
    }
  });
});

Deno.test("startNbdServer() closes connections beyond connectionsMax and serves the rest", async () => {
  await withServer({ server: { connectionsMax: 2 } }, async (f) => {
    const a = await RawClient.connect(f.socketPath);
    const b = await RawClient.connect(f.socketPath);
    try {
      const c = new RawClient(await Deno.connect({ transport: "unix", path: f.socketPath }));
      assert.ok(await c.closedByServer(2000));
      c.close();
      assert.ok(f.logLines.some((l) => l.includes("Refusing an NBD connection")));
      const reply = await b.request({ command: p.CMD_FLUSH, handle: 1 });
      assert.equal(reply.error, 0);
    } finally {
      a.close();
      b.close();
    }
  });
});
