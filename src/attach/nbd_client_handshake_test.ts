/**
 * @module
 * negotiateExport() against nbdkit (a reference server) over a raw libc socket fd, the exact path
 * the kernel attach uses, plus the codec on malformed replies.
 */

import assert from "node:assert/strict";
import { Libc } from "./libc.ts";
import {
  encodeOption,
  type HandshakeChannel,
  NBD_FLAG_CAN_MULTI_CONN,
  NBD_FLAG_HAS_FLAGS,
  NBD_FLAG_READ_ONLY,
  NBD_FLAG_SEND_FLUSH,
  negotiateExport,
  parseInfo,
} from "./nbd_client_handshake.ts";

const hasNbdkit = new Deno.Command("sh", { args: ["-c", "command -v nbdkit"] }).outputSync().success;

/** Runs nbdkit on a temp unix socket and waits (bounded) for the socket to appear. */
async function withNbdkit(args: string[], body: (socketPath: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "lsvd-handshake-" });
  const socketPath = `${dir}/nbd.sock`;
  // nbdkit writes its pid file only once the socket listens; the socket file exists from bind() on,
  // and a connect() between bind and listen is refused (seen on a loaded machine).
  const pidPath = `${dir}/nbdkit.pid`;
  const child = new Deno.Command("nbdkit", {
    args: ["--foreground", "--exit-with-parent", "-P", pidPath, "-U", socketPath, ...args],
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    const deadline = Date.now() + 10_000;
    while (!(await Deno.stat(pidPath).then(() => true, () => false))) {
      assert.ok(Date.now() < deadline, "nbdkit did not listen on its socket in 10 s");
      await new Promise((r) => setTimeout(r, 20));
    }
    await body(socketPath);
  } finally {
    child.kill("SIGTERM");
    await child.status;
    await Deno.remove(dir, { recursive: true });
  }
}

function fdChannel(libc: Libc, fd: number): HandshakeChannel {
  return {
    read: (length, what) => libc.readExact(fd, length, what),
    write: (bytes, what) => libc.writeAll(fd, bytes, what),
  };
}

Deno.test({
  name: "negotiateExport() gets size and transmission flags from nbdkit over a libc fd",
  ignore: !hasNbdkit,
  async fn() {
    await withNbdkit(["memory", "64M"], async (socketPath) => {
      const libc = new Libc();
      const fd = libc.connectUnix(socketPath);
      try {
        libc.setSocketTimeouts(fd, 10_000);
        const result = await negotiateExport(fdChannel(libc, fd), "");
        assert.equal(result.sizeBytes, 64 * 1024 * 1024);
        assert.ok(result.transmissionFlags & NBD_FLAG_HAS_FLAGS);
        assert.ok(result.transmissionFlags & NBD_FLAG_SEND_FLUSH);
        assert.ok(result.transmissionFlags & NBD_FLAG_CAN_MULTI_CONN);
        assert.equal(result.transmissionFlags & NBD_FLAG_READ_ONLY, 0);
      } finally {
        libc.close(fd);
        libc.closeLibrary();
      }
    });
  },
});

Deno.test({
  name: "negotiateExport() reports a read-only export, opens a named export, rejects an unknown one",
  ignore: !hasNbdkit,
  async fn() {
    await withNbdkit(["-r", "memory", "1M"], async (socketPath) => {
      const libc = new Libc();
      const fd = libc.connectUnix(socketPath);
      try {
        const result = await negotiateExport(fdChannel(libc, fd), "");
        assert.ok(result.transmissionFlags & NBD_FLAG_READ_ONLY);
      } finally {
        libc.close(fd);
        libc.closeLibrary();
      }
    });
    await withNbdkit(["info", "mode=exportname"], async (socketPath) => {
      // The info plugin's size is the length of the export name it was asked for.
      const libc = new Libc();
      const fd = libc.connectUnix(socketPath);
      try {
        const result = await negotiateExport(fdChannel(libc, fd), "volume-one");
        assert.equal(result.sizeBytes, "volume-one".length);
      } finally {
        libc.close(fd);
        libc.closeLibrary();
      }
    });
    const strict = ["--filter=exportname", "memory", "1M", "exportname=lsvd", "exportname-strict=true"];
    await withNbdkit(strict, async (socketPath) => {
      const libc = new Libc();
      const fd = libc.connectUnix(socketPath);
      try {
        await assert.rejects(negotiateExport(fdChannel(libc, fd), "other"), /Cannot open export "other"/);
      } finally {
        libc.close(fd);
        libc.closeLibrary();
      }
    });
  },
});

Deno.test("negotiateExport() rejects a server that is not NBD", async () => {
  const garbage = new TextEncoder().encode("HTTP/1.1 400 Bad Request\r\n\r\n");
  let offset = 0;
  const channel: HandshakeChannel = {
    read: (length) => {
      const out = garbage.slice(offset, offset + length);
      offset += length;
      return Promise.resolve(out);
    },
    write: () => Promise.resolve(),
  };
  await assert.rejects(negotiateExport(channel, ""), /does not speak the newstyle protocol/);
});

Deno.test("Libc.connectUnix() names the socket and the cause when nothing listens", () => {
  const libc = new Libc();
  try {
    assert.throws(
      () => libc.connectUnix("/nonexistent/lsvd.sock"),
      /Cannot connect to \/nonexistent\/lsvd.sock: No such file/,
    );
  } finally {
    libc.closeLibrary();
  }
});

Deno.test("encodeOption() and parseInfo() follow the wire layout", () => {
  const option = encodeOption(7, new Uint8Array([1, 2]));
  assert.equal(new TextDecoder().decode(option.subarray(0, 8)), "IHAVEOPT");
  assert.deepEqual([...option.subarray(8)], [0, 0, 0, 7, 0, 0, 0, 2, 1, 2]);
  const info = new Uint8Array(12);
  new DataView(info.buffer).setBigUint64(2, 1n << 40n);
  new DataView(info.buffer).setUint16(10, 0x10d);
  assert.deepEqual(parseInfo(info), { sizeBytes: 2 ** 40, transmissionFlags: 0x10d });
  assert.equal(parseInfo(new Uint8Array([0, 3, 0, 0])), undefined); // NBD_INFO_BLOCK_SIZE is skipped
  assert.throws(() => parseInfo(new Uint8Array(5)), /malformed NBD_INFO_EXPORT/);
});
