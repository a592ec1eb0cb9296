/**
 * @module
 * `lsvd serve` with TLS through the real daemon: --tls-cert/--tls-key serve nbds:// (TLS required by
 * default), nbdinfo reads it and a plaintext client is refused; a bad certificate file, and a
 * non-loopback --listen without TLS, are one line before the store is touched; the option
 * contradictions are refused the same way.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { buildServeConfig, serveOptions } from "../../src/cli/serve.ts";
import { parseOptions, UsageError } from "../../src/cli/options.ts";
import { tuningDefaults } from "../../src/cli/memory_defaults.ts";
import { Daemon, ROOT, scratch, unixUri } from "../support/daemon.ts";
import { runLsvd } from "../support/lsvd_cli.ts";
import { runClient, runClientOk } from "../support/clients.ts";
import { makeTlsCerts } from "../support/tls_certs.ts";
import { freePort } from "../support/ports.ts";

function assertOneLine(r: { code: number; err: string }, pattern: RegExp): void {
  assert.equal(r.code, 1, r.err);
  const lines = r.err.trim().split("\n").filter((l) => !/^lsvd: Using (local directory|bucket) /.test(l));
  assert.equal(lines.length, 1, `expected one line:\n${r.err}`);
  assert.match(lines[0]!, pattern);
}

async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}

Deno.test("lsvd serve --tls-cert/--tls-key serves nbds:// to nbdinfo and refuses a plaintext client", async () => {
  const t = await scratch();
  const c = await makeTlsCerts();
  let d: Daemon | undefined;
  try {
    d = await Daemon.start({
      args: ["--dir", t.store, "--size", "16M", "--socket", t.socket, "--listen", "127.0.0.1:0"],
      env: { LSVD_TLS_CERT: c.serverCert, LSVD_TLS_KEY: c.serverKey },
    });
    const served = await d.waitForLine(/Serving NBD at .*nbds:\/\/127\.0\.0\.1:\d+\/lsvd\./, 1000);
    const port = served.replace(/^.*nbds:\/\/127\.0\.0\.1:(\d+)\/lsvd\.$/, "$1");
    await d.waitForLine(/TLS required on TCP, offered on the unix socket; certificate .*CN=localhost/, 1000);
    const uri = `nbds://127.0.0.1:${port}/lsvd?tls-certificates=${c.clientNoCertDir}`;
    assert.equal((await runClientOk("nbdinfo", ["--size", uri])).stdout.trim(), String(16 * 2 ** 20));
    const plain = await runClient("nbdinfo", ["--size", `nbd://127.0.0.1:${port}/lsvd`], {
      timeoutMs: 20_000,
    });
    assert.notEqual(plain.code, 0);
    assert.match(plain.stderr, /requires TLS/);
    assert.equal(
      (await runClientOk("nbdinfo", ["--size", unixUri(t.socket)])).stdout.trim(),
      String(16 * 2 ** 20),
    );
    assert.equal((await d.stop()).code, 0);
    d = undefined;
  } finally {
    d?.kill();
    await d?.exited;
    await c.remove();
    await t.remove();
  }
});

Deno.test("lsvd serve refuses a bad TLS file and plaintext on a non-loopback address in one line, before the store", async () => {
  const t = await scratch();
  const c = await makeTlsCerts();
  try {
    const bad = await runLsvd([
      "serve",
      "--dir",
      t.store,
      "--size",
      "16M",
      "--socket",
      t.socket,
      "--listen",
      "127.0.0.1:0",
      "--tls-cert",
      c.serverCert,
      "--tls-key",
      join(c.dir, "client-key.pem"),
    ]);
    assertOneLine(bad, /^lsvd: Cannot use TLS key .*client-key\.pem: it does not belong to certificate /);
    const open = await runLsvd(["serve", "--dir", t.store, "--size", "16M", "--listen", "0.0.0.0:0"]);
    assertOneLine(open, /^lsvd: Refusing to serve NBD without TLS on 0\.0\.0\.0:0: .*--allow-plaintext/);
    assert.equal(await exists(t.store), false, "the store was touched");
    const help = (await runLsvd(["serve", "--help"])).out;
    for (
      const flag of ["--tls off|on|require", "--tls-cert FILE", "--tls-verify-peer", "--allow-plaintext"]
    ) {
      assert(help.includes(flag), `serve --help lacks ${flag}`);
    }
    assert.match(help, /nbds:\/\/HOST:10809\/lsvd\?tls-certificates=DIR/);
    assert.equal(await exists(t.socket), false, "a socket was left behind");
  } finally {
    await c.remove();
    await t.remove();
  }
});

Deno.test("buildServeConfig() resolves --tls as nbdkit does and refuses contradictions in one line", async () => {
  const c = await makeTlsCerts();
  const specs = serveOptions(tuningDefaults(2 ** 30));
  const config = (args: string[]) => buildServeConfig(parseOptions(["--dir", c.dir, ...args], specs));
  const refused = (args: string[]) => {
    try {
      config(args);
    } catch (e) {
      assert(e instanceof UsageError, String(e));
      return e.message;
    }
    return "accepted";
  };
  const pair = ["--tls-cert", c.serverCert, "--tls-key", c.serverKey];
  try {
    assert.equal(config([]).tls.mode, "off");
    assert.equal(config(pair).tls.mode, "require");
    assert.equal(config([...pair, "--tls", "on"]).tls.mode, "on");
    assert.equal(config(["--listen", "0.0.0.0:10809", "--allow-plaintext"]).tls.mode, "off");
    assert.equal(config(["--listen", "[::1]:10809"]).tls.mode, "off");
    assert.equal(config(["--listen", "0.0.0.0:10809", ...pair]).tls.mode, "require");
    const verified = config([...pair, "--tls-ca", c.caCert, "--tls-verify-peer"]).tls;
    assert(verified.mode === "require" && verified.credentials.verifyPeer);
    assert.match(refused(["--listen", "[::]:10809"]), /without TLS on ::/);
    assert.match(refused(["--listen", "10.0.0.1:10809"]), /without TLS on 10\.0\.0\.1/);
    assert.match(refused(["--tls", "require"]), /--tls require needs --tls-cert and --tls-key/);
    assert.match(refused(["--tls", "maybe", ...pair]), /"maybe" must be off, on or require/);
    assert.match(refused(["--tls", "off", ...pair]), /--tls-cert needs --tls on or require/);
    assert.match(refused(["--tls-cert", c.serverCert]), /needs --tls-cert and --tls-key/);
    assert.match(refused([...pair, "--tls-ca", c.caCert]), /add --tls-verify-peer/);
    assert.match(refused([...pair, "--tls-verify-peer"]), /give the CA/);
    assert.match(
      refused(["--tls-cert", join(c.dir, "nope.pem"), "--tls-key", c.serverKey]),
      /Cannot read TLS/,
    );
  } finally {
    await c.remove();
  }
});

/** The shell block after `<!-- recipe: NAME ` in README.md. */
async function readmeRecipe(name: string): Promise<string> {
  const readme = await Deno.readTextFile(join(ROOT, "README.md"));
  const at = readme.indexOf(`<!-- recipe: ${name} `);
  assert(at >= 0, `README has no ${name} recipe`);
  const block = /```sh\n([\s\S]*?)```/.exec(readme.slice(at));
  assert(block !== null);
  return block[1]!;
}

Deno.test("The README's TLS recipes work as printed: openssl CA, serve, nbdinfo and qemu-img over TLS, verify-peer", async () => {
  const t = await scratch();
  const port = freePort();
  const bin = join(t.dir, "bin");
  await Deno.mkdir(bin);
  await Deno.writeTextFile(
    join(bin, "lsvd"),
    `#!/bin/sh\nexec "${Deno.execPath()}" run -A "${join(ROOT, "main.ts")}" "$@"\n`,
    { mode: 0o755 },
  );
  try {
    for (const name of ["tls", "tls-verify-peer"]) {
      const script = (await readmeRecipe(name)).replaceAll("10809", String(port));
      // A failing line leaves no daemon behind: the trap stops the one the recipe started.
      const r = await runClient("bash", [
        "-e",
        "-c",
        `trap '[ -n "$LSVD_PID" ] && kill $LSVD_PID 2>/dev/null; true' ERR\n${script}`,
      ], { cwd: t.dir, timeoutMs: 120_000, env: { PATH: `${bin}:${Deno.env.get("PATH")}` } });
      assert.equal(r.code, 0, `${name}: ${r.stdout}\n${r.stderr}`);
      assert.match(r.stdout, /^10737418240$/m, name);
      if (name === "tls") {
        assert.match(r.stdout, /virtual size: 10 GiB/);
        assert.match(r.stderr, /server requires TLS encryption first/);
      }
      assert.match(r.stderr, /lsvd: Device has shut down\./, name);
    }
  } finally {
    await t.remove();
  }
});
