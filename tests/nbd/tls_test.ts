/**
 * @module
 * NBD over TLS against the in-process server: the protocol corners of doc/proto.md "TLS support"
 * with the raw client (ERR_TLS_REQD before the upgrade, EXPORT_NAME hanging up, no second
 * STARTTLS, option state forgotten), and the clients users have — nbdinfo and nbdcopy over
 * nbds://, qemu-io with a tls-creds-x509 object, an OpenSSL client with a stranger's certificate —
 * each refused where it must be while the server goes on serving the others.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import * as p from "../../src/nbd/protocol.ts";
import { loadTlsCredentials, type TlsConfigError, type TlsMode } from "../../src/nbd/tls.ts";
import { runClient, runClientOk, SYSTEM_PYTHON } from "../support/clients.ts";
import { makeTlsCerts, type TlsCerts } from "../support/tls_certs.ts";
import { type Fixture, withServer } from "./fixture.ts";
import { RawClient } from "./raw_client.ts";
import { ROOT } from "../support/daemon.ts";
import { concatBytes } from "../../src/util/bytes.ts";

const MiB = 1024 * 1024;
const STARTTLS_CLIENT = join(ROOT, "tests", "support", "starttls_client.py");

const certs: Promise<TlsCerts> = makeTlsCerts();

async function withTlsServer(
  options: { mode: Exclude<TlsMode, "off">; verifyPeer?: boolean },
  body: (f: Fixture, c: TlsCerts, port: number) => Promise<void>,
): Promise<void> {
  const c = await certs;
  const credentials = loadTlsCredentials({
    certFile: c.serverCert,
    keyFile: c.serverKey,
    caFile: options.verifyPeer ? c.caCert : undefined,
    verifyPeer: options.verifyPeer ?? false,
  });
  await withServer(
    { sizeBytes: 16 * MiB, server: { listen: { port: 0 }, tls: { mode: options.mode, credentials } } },
    (f) => body(f, c, f.server.tcp!.port),
  );
}

function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let at = 0; at < n; at += 65536) crypto.getRandomValues(out.subarray(at, Math.min(n, at + 65536)));
  return out;
}

function nbds(port: number, certDir: string): string {
  return `nbds://127.0.0.1:${port}/lsvd?tls-certificates=${certDir}`;
}

/** Connects over TCP and sends the client flags; options are next. */
async function rawTcp(port: number): Promise<RawClient> {
  const client = new RawClient(await Deno.connect({ hostname: "127.0.0.1", port }));
  await client.readExact(18);
  await client.send(new Uint8Array([0, 0, 0, p.FLAG_C_FIXED_NEWSTYLE | p.FLAG_C_NO_ZEROES]));
  return client;
}

async function option(client: RawClient, opt: number, data: Uint8Array = new Uint8Array(0)): Promise<number> {
  await client.send(p.encodeOptionHeader(opt, data));
  return (await client.readOptionReply()).replyType;
}

/** STARTTLS, then the client side of the handshake: a RawClient over the TLS connection. */
async function upgrade(client: RawClient, c: TlsCerts): Promise<RawClient> {
  assert.equal(await option(client, p.OPT_STARTTLS), p.REP_ACK);
  const secure = await Deno.startTls(client.conn as Deno.TcpConn, {
    hostname: "localhost",
    caCerts: [await Deno.readTextFile(c.caCert)],
  });
  return new RawClient(secure);
}

/** GO on the default export; returns the transmission flags. */
async function go(client: RawClient): Promise<number> {
  await client.send(p.encodeOptionHeader(p.OPT_GO, p.encodeInfoRequest({ exportName: "", infoTypes: [] })));
  let flags = -1;
  for (;;) {
    const reply = await client.readOptionReply();
    if (reply.replyType === p.REP_ACK) return flags;
    assert.equal(reply.replyType, p.REP_INFO, `GO answered 0x${reply.replyType.toString(16)}`);
    const view = new DataView(reply.data.buffer, reply.data.byteOffset, reply.data.byteLength);
    if (view.getUint16(0) === p.INFO_EXPORT) flags = view.getUint16(10);
  }
}

Deno.test("TLS require: every option but STARTTLS and ABORT is ERR_TLS_REQD before the upgrade", async () => {
  await withTlsServer({ mode: "require" }, async (_f, _c, port) => {
    const client = await rawTcp(port);
    try {
      const info = p.encodeInfoRequest({ exportName: "", infoTypes: [] });
      assert.equal(await option(client, p.OPT_LIST), p.REP_ERR_TLS_REQD);
      assert.equal(await option(client, p.OPT_INFO, info), p.REP_ERR_TLS_REQD);
      assert.equal(await option(client, p.OPT_GO, info), p.REP_ERR_TLS_REQD);
      assert.equal(await option(client, p.OPT_STRUCTURED_REPLY), p.REP_ERR_TLS_REQD);
      assert.equal(await option(client, 99), p.REP_ERR_TLS_REQD);
      assert.equal(await option(client, p.OPT_STARTTLS, new Uint8Array(1)), p.REP_ERR_INVALID);
      assert.equal(await option(client, p.OPT_ABORT), p.REP_ACK);
      assert.ok(await client.closedByServer(5000));
    } finally {
      client.close();
    }
  });
});

Deno.test("TLS require: NBD_OPT_EXPORT_NAME, or data right behind STARTTLS, before the upgrade ends the connection", async () => {
  await withTlsServer({ mode: "require" }, async (f, _c, port) => {
    const client = await rawTcp(port);
    try {
      await client.send(p.encodeOptionHeader(p.OPT_EXPORT_NAME, new TextEncoder().encode("lsvd")));
      assert.ok(await client.closedByServer(5000), "the server still talks after a plaintext EXPORT_NAME");
      assert.match(f.logLines.join("\n"), /chose the export before starting TLS/);
    } finally {
      client.close();
    }
    // Bytes after STARTTLS, before the TLS handshake, would be plaintext read as if encrypted.
    const eager = await rawTcp(port);
    try {
      await eager.send(
        concatBytes([p.encodeOptionHeader(p.OPT_STARTTLS, new Uint8Array(0)), new Uint8Array(4)]),
      );
      assert.ok(await eager.closedByServer(5000), "the server upgraded with plaintext bytes queued");
      assert.match(f.logLines.join("\n"), /sent data after STARTTLS before the TLS handshake/);
    } finally {
      eager.close();
    }
  });
});

Deno.test("TLS require: after STARTTLS a second STARTTLS is ERR_INVALID, and data moves over TLS", async () => {
  await withTlsServer({ mode: "require" }, async (f, c, port) => {
    const secure = await upgrade(await rawTcp(port), c);
    try {
      assert.equal(await option(secure, p.OPT_STARTTLS), p.REP_ERR_INVALID);
      assert.equal(await option(secure, p.OPT_LIST), p.REP_SERVER); // no ERR_TLS_REQD once upgraded
      await secure.readOptionReply(); // the LIST's ACK
      await go(secure);
      const payload = randomBytes(256 * 1024);
      const written = await secure.request({ command: p.CMD_WRITE, handle: 1, offsetBytes: MiB }, payload);
      assert.equal(written.error, 0);
      const read = await secure.request({
        command: p.CMD_READ,
        handle: 2,
        offsetBytes: MiB,
        lengthBytes: 256 * 1024,
      });
      assert.deepEqual(read.data, payload);
      const direct = new Uint8Array(4096);
      await f.device.read(MiB, direct);
      assert.deepEqual(direct, payload.subarray(0, 4096));
    } finally {
      secure.close();
    }
  });
});

Deno.test("TLS require: a client silent after STARTTLS's ACK holds up neither stop() nor the handshake timeout", async () => {
  const c = await certs;
  const credentials = loadTlsCredentials({ certFile: c.serverCert, keyFile: c.serverKey, verifyPeer: false });
  await withServer({
    server: { listen: { port: 0 }, tls: { mode: "require", credentials }, handshakeTimeoutMs: 300 },
  }, async (f) => {
    const timedOut = await rawTcp(f.server.tcp!.port);
    assert.equal(await option(timedOut, p.OPT_STARTTLS), p.REP_ACK);
    assert.ok(await timedOut.closedByServer(5000), "the handshake timeout did not end the TLS handshake");
    timedOut.close();
    assert.match(f.logLines.join("\n"), /TLS handshake failed: stopped during the TLS handshake/);
  });
  await withServer({ server: { listen: { port: 0 }, tls: { mode: "require", credentials } } }, async (f) => {
    const silent = await rawTcp(f.server.tcp!.port);
    assert.equal(await option(silent, p.OPT_STARTTLS), p.REP_ACK);
    const started = Date.now();
    await f.server.stop();
    assert.ok(Date.now() - started < 5000, `stop() took ${Date.now() - started} ms`);
    silent.close();
  });
});

Deno.test("TLS require: stop() with a client in transmission over TLS answers it and closes cleanly", async () => {
  await withTlsServer({ mode: "require" }, async (f, c, port) => {
    const secure = await upgrade(await rawTcp(port), c);
    try {
      await go(secure);
      const read = await secure.request({
        command: p.CMD_READ,
        handle: 1,
        offsetBytes: 0,
        lengthBytes: 4096,
      });
      assert.equal(read.error, 0);
      await f.server.stop();
      assert.ok(await secure.closedByServer(5000));
      await new Promise((resolve) => setTimeout(resolve, 50)); // an unhandled rejection would surface here
    } finally {
      secure.close();
    }
  });
});

Deno.test("TLS on: plaintext clients are served, and STARTTLS forgets options negotiated before it", async () => {
  await withTlsServer({ mode: "on" }, async (_f, c, port) => {
    const plain = await rawTcp(port);
    try {
      assert.equal(await option(plain, p.OPT_STRUCTURED_REPLY), p.REP_ACK);
      assert.ok((await go(plain) & p.FLAG_SEND_DF) !== 0, "structured replies were negotiated");
    } finally {
      plain.close();
    }
    const client = await rawTcp(port);
    assert.equal(await option(client, p.OPT_STRUCTURED_REPLY), p.REP_ACK);
    const secure = await upgrade(client, c);
    try {
      assert.equal(await go(secure) & p.FLAG_SEND_DF, 0, "STRUCTURED_REPLY from before STARTTLS was kept");
    } finally {
      secure.close();
    }
  });
});

Deno.test("TLS require: nbdinfo over nbds:// is served; the wrong CA and plaintext are refused, others still served", async () => {
  await withTlsServer({ mode: "require" }, async (f, c, port) => {
    const { stdout } = await runClientOk("nbdinfo", ["--size", nbds(port, c.clientNoCertDir)]);
    assert.equal(stdout.trim(), String(16 * MiB));
    const wrongCa = await runClient("nbdinfo", ["--size", nbds(port, c.wrongCaDir)], { timeoutMs: 20_000 });
    assert.notEqual(wrongCa.code, 0);
    assert.match(wrongCa.stderr, /certificate verification/i);
    const plain = await runClient("nbdinfo", ["--size", `nbd://127.0.0.1:${port}/lsvd`], {
      timeoutMs: 20_000,
    });
    assert.notEqual(plain.code, 0);
    assert.match(plain.stderr, /requires TLS/);
    assert.equal(
      (await runClientOk("nbdinfo", ["--size", nbds(port, c.clientNoCertDir)])).stdout.trim(),
      String(16 * MiB),
    );
    // The unix socket (0600) offers TLS but does not require it: the kernel client and nbdfuse use it.
    assert.equal((await runClientOk("nbdinfo", ["--size", f.uri])).stdout.trim(), String(16 * MiB));
  });
});

Deno.test("TLS require: nbdcopy round-trips random data over nbds:// with 4 connections", async () => {
  await withTlsServer({ mode: "require" }, async (f, c, port) => {
    const data = randomBytes(8 * MiB);
    await Deno.writeFile(`${f.dir}/in.img`, data);
    const uri = nbds(port, c.clientNoCertDir);
    const args = ["--connections=4", "--requests=16"];
    await runClientOk("nbdcopy", [...args, `${f.dir}/in.img`, uri], { timeoutMs: 120_000 });
    await runClientOk("nbdcopy", [...args, uri, `${f.dir}/out.img`], { timeoutMs: 120_000 });
    const out = await Deno.readFile(`${f.dir}/out.img`);
    assert.equal(out.length, 16 * MiB);
    assert.deepEqual(out.subarray(0, 8 * MiB), data);
  });
});

function qemuTls(certDir: string, port: number): string[] {
  return [
    "--object",
    `tls-creds-x509,id=tls0,dir=${certDir},endpoint=client`,
    "--image-opts",
    `driver=nbd,host=127.0.0.1,port=${port},export=lsvd,tls-creds=tls0,tls-hostname=localhost`,
  ];
}

Deno.test("TLS require: qemu-io with a tls-creds-x509 object writes and reads back; the wrong CA is refused", async () => {
  await withTlsServer({ mode: "require" }, async (_f, c, port) => {
    const qemuIo = (dir: string, commands: string[]) =>
      runClient("qemu-io", [...qemuTls(dir, port), ...commands.flatMap((x) => ["-c", x])], {
        timeoutMs: 60_000,
      });
    const write = await qemuIo(c.clientNoCertDir, ["write -P 0xab 0 1M", "flush"]);
    assert.equal(write.code, 0, write.stderr);
    const read = await qemuIo(c.clientNoCertDir, ["read -P 0xab 0 1M"]);
    assert.equal(read.code, 0, read.stderr);
    assert.doesNotMatch(read.stdout, /Pattern verification failed/);
    const wrong = await qemuIo(c.wrongCaDir, ["read 0 4k"]);
    assert.notEqual(wrong.code, 0);
    const info = await runClientOk("qemu-img", ["info", ...qemuTls(c.clientNoCertDir, port)]);
    assert.match(info.stdout, /virtual size: 16 MiB/);
  });
});

Deno.test("TLS --tls-verify-peer: a client certificate from the CA is served; none, or a stranger's, is refused", async () => {
  await withTlsServer({ mode: "require", verifyPeer: true }, async (f, c, port) => {
    assert.equal(
      (await runClientOk("nbdinfo", ["--size", nbds(port, c.clientDir)])).stdout.trim(),
      String(16 * MiB),
    );
    const none = await runClient("nbdinfo", ["--size", nbds(port, c.clientNoCertDir)], { timeoutMs: 20_000 });
    assert.notEqual(none.code, 0);
    const pem = (name: string) => join(c.dir, `${name}.pem`);
    const stranger = await runClient(SYSTEM_PYTHON, [
      STARTTLS_CLIENT,
      "127.0.0.1",
      String(port),
      c.caCert,
      pem("stranger-cert"),
      pem("stranger-key"),
    ]);
    assert.equal(stranger.code, 3, stranger.stdout + stranger.stderr);
    const member = await runClient(SYSTEM_PYTHON, [
      STARTTLS_CLIENT,
      "127.0.0.1",
      String(port),
      c.caCert,
      pem("client-cert"),
      pem("client-key"),
    ]);
    assert.equal(member.code, 0, member.stdout + member.stderr);
    assert.match(member.stdout, /second starttls reply 0x80000003/);
    assert.match(member.stdout, /^tls TLSv1\.3$/m, "TLS 1.3 is preferred");
    assert.match(f.logLines.join("\n"), /client certificate refused/);
    assert.equal(
      (await runClientOk("nbdinfo", ["--size", nbds(port, c.clientDir)])).stdout.trim(),
      String(16 * MiB),
    );
  });
});

Deno.test("loadTlsCredentials() refuses missing, malformed and mismatched files in one line", async () => {
  const c = await certs;
  const load = (files: Partial<Parameters<typeof loadTlsCredentials>[0]>) => {
    try {
      loadTlsCredentials({ certFile: c.serverCert, keyFile: c.serverKey, verifyPeer: false, ...files });
    } catch (e) {
      assert.equal((e as TlsConfigError).name, "TlsConfigError");
      assert.doesNotMatch((e as Error).message, /\n/);
      return (e as Error).message;
    }
    return "accepted";
  };
  assert.equal(load({}), "accepted");
  assert.match(
    load({ certFile: join(c.dir, "missing.pem") }),
    /Cannot read TLS certificate .*missing\.pem: No such file/,
  );
  assert.match(load({ certFile: c.serverKey }), /server-key\.pem: not a PEM certificate/);
  assert.match(load({ keyFile: c.serverCert }), /server-cert\.pem: not a PEM private key/);
  assert.match(load({ keyFile: join(c.dir, "client-key.pem") }), /does not belong to certificate/);
  assert.match(load({ verifyPeer: true }), /give the CA/);
  assert.match(load({ verifyPeer: true, caFile: c.serverKey }), /no PEM certificate/);
});

Deno.test("TLS test certificates are removed", async () => {
  await (await certs).remove();
});
