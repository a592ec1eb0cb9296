/**
 * @module
 * How `lsvd serve` starts, through the real daemon: which store it picks and says it picks, the
 * starts it refuses (S3 settings without a bucket, read-only on an empty prefix, an unasked shrink,
 * a busy socket) each in one line and without writing anything, and the CLI basics (--version,
 * -h on every command, one line naming the variable for a bad environment value).
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { Daemon, ROOT, scratch, unixUri } from "../support/daemon.ts";
import { runClientOk } from "../support/clients.ts";

async function runLsvd(args: string[], env?: Record<string, string>, cwd = ROOT) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--no-prompt", join(ROOT, "main.ts"), ...args],
    cwd,
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
    clearEnv: true,
    env: { PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin", HOME: Deno.env.get("HOME") ?? "/root", ...env },
  }).output();
  const d = new TextDecoder();
  return { code: out.code, stdout: d.decode(out.stdout), stderr: d.decode(out.stderr) };
}

/** Exit 1 with exactly one line on stderr (besides the store line) matching pattern, no stack trace. */
function assertOneLine(r: { code: number; stdout: string; stderr: string }, pattern: RegExp, what: string) {
  assert.equal(r.code, 1, `${what}: ${r.stdout}${r.stderr}`);
  const lines = r.stderr.trim().split("\n").filter((l) => !/^lsvd: Using (local directory|bucket) /.test(l));
  assert.equal(lines.length, 1, `${what}: expected one line:\n${r.stderr}`);
  assert.match(lines[0]!, pattern, what);
  assert(!/\(Unknown\)/.test(lines[0]!), `${what}: ${lines[0]}`);
}

async function listTree(dir: string): Promise<string[]> {
  const out: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) {
      if (e.isDirectory) out.push(...(await listTree(join(dir, e.name))).map((n) => `${e.name}/${n}`));
      else out.push(e.name);
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  return out;
}

Deno.test("lsvd serve refuses S3 settings without a bucket, naming the setting and the missing variable", async () => {
  const t = await scratch();
  try {
    const cases: [Record<string, string>, string[], RegExp][] = [
      [{ AWS_ACCESS_KEY_ID: "AKIA", AWS_SECRET_ACCESS_KEY: "s" }, [], /AWS_ACCESS_KEY_ID is set/],
      [{ AWS_ENDPOINT_URL_S3: "https://fly.storage.tigris.dev" }, [], /AWS_ENDPOINT_URL_S3 is set/],
      [{}, ["--endpoint", "http://127.0.0.1:1"], /--endpoint is set/],
      [{}, ["--region", "auto"], /--region is set/],
    ];
    for (const [env, args, hint] of cases) {
      const r = await runLsvd(["serve", "--size", "16M", "--socket", t.socket, ...args], env, t.dir);
      assertOneLine(
        r,
        /^lsvd: No bucket configured although .* is set: set BUCKET_NAME or --bucket/,
        hint.source,
      );
      assert.match(r.stderr, hint);
    }
    assert.deepEqual(await listTree(t.dir), [], "nothing was created (no ./lsvd-data, no socket)");
  } finally {
    await t.remove();
  }
});

Deno.test("lsvd serve says which store and prefix it uses; the local default only for a bare start", async () => {
  const t = await scratch();
  try {
    const bare = await Daemon.start({ args: ["--size", "16M", "--socket", t.socket], cwd: t.dir });
    assert.equal((await bare.stop()).code, 0);
    assert(
      bare.lines.includes(`lsvd: Using local directory ${join(t.dir, "lsvd-data")} (no bucket configured).`),
      bare.log,
    );
    const named = await Daemon.start({
      args: ["--dir", t.store, "--prefix", "vol1", "--size", "16M", "--socket", t.socket],
    });
    assert.equal((await named.stop()).code, 0);
    assert(named.lines.includes(`lsvd: Using local directory ${t.store}, prefix vol1/.`), named.log);
  } finally {
    await t.remove();
  }
});

Deno.test("lsvd serve --read-only on a prefix without a volume fails, even with --size, and writes nothing", async () => {
  const t = await scratch();
  try {
    const d = Daemon.spawn({
      args: ["--dir", t.store, "--prefix", "typo", "--read-only", "--size", "1G", "--socket", t.socket],
    });
    const r = await d.finished();
    assert.equal(r.code, 1, r.log);
    assert.match(
      r.log,
      /^lsvd: Cannot open the volume: the .* directory holds no volume under prefix "typo\/"$/m,
    );
    assert(!r.log.includes("operational"), r.log);
    assert.deepEqual((await listTree(t.store)).filter((n) => n.startsWith("typo")), []);
  } finally {
    await t.remove();
  }
});

Deno.test("lsvd serve shrinks only with --allow-shrink, names where the size came from, and never below written data", async () => {
  const t = await scratch();
  try {
    let d = await Daemon.start({ args: ["--dir", t.store, "--size", "16M", "--socket", t.socket] });
    await runClientOk("qemu-io", ["-f", "raw", unixUri(t.socket), "-c", "write -P 7 4M 1M"]);
    assert.equal((await d.stop()).code, 0);
    const before = await listTree(t.store);

    const refused = await Daemon.spawn({ args: ["--dir", t.store, "--size", "8M", "--socket", t.socket] })
      .finished();
    assert.equal(refused.code, 1, refused.log);
    assert.match(
      refused.log,
      /^lsvd: Cannot shrink the volume in the .* directory from 16777216 to 8388608 bytes \(--size\) without --allow-shrink: a filesystem on it may still use the space$/m,
    );
    assert.deepEqual(await listTree(t.store), before, "a refused shrink writes nothing");

    // A size pinned in the environment (an env file from lsvd setup, after a grow) is named as such.
    const pinned = await Daemon.spawn({
      args: ["--dir", t.store, "--socket", t.socket],
      env: { FLY_LSVD_DEVICE_SIZE: "8M" },
    }).finished();
    assert.equal(pinned.code, 1, pinned.log);
    assert.match(
      pinned.log,
      /^lsvd: Cannot shrink the volume in the .* directory from 16777216 to 8388608 bytes \(FLY_LSVD_DEVICE_SIZE\) without --allow-shrink: a filesystem on it may still use the space; the size comes from the environment variable FLY_LSVD_DEVICE_SIZE \(an env file, e\.g\. from lsvd setup\): remove it there to serve the recorded size$/m,
    );
    assert.deepEqual(await listTree(t.store), before, "a refused shrink writes nothing");

    const below = await Daemon.spawn({
      args: ["--dir", t.store, "--size", "4M", "--allow-shrink", "--socket", t.socket],
    }).finished();
    assert.equal(below.code, 1, below.log);
    assert.match(
      below.log,
      /Cannot shrink the volume from 16777216 to 4194304 bytes: data is written up to byte/,
    );

    d = await Daemon.start({
      args: ["--dir", t.store, "--size", "8M", "--allow-shrink", "--socket", t.socket],
    });
    assert.equal(
      (await runClientOk("nbdinfo", ["--size", unixUri(t.socket)])).stdout.trim(),
      String(8 << 20),
    );
    assert.equal((await d.stop()).code, 0);
  } finally {
    await t.remove();
  }
});

Deno.test("lsvd serve with its socket or port in use fails in one line and leaves the prefix empty", async () => {
  const t = await scratch();
  const busy = Deno.listen({ transport: "unix", path: t.socket });
  const tcp = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const r = await runLsvd([
      "serve",
      "--dir",
      t.store,
      "--prefix",
      "new",
      "--size",
      "16M",
      "--socket",
      t.socket,
    ]);
    assertOneLine(
      r,
      /^lsvd: Cannot listen on .*nbd\.sock: another server is listening there$/,
      "busy socket",
    );
    const port = (tcp.addr as Deno.NetAddr).port;
    const r2 = await runLsvd(["serve", "--dir", t.store, "--size", "16M", "--listen", `127.0.0.1:${port}`]);
    assertOneLine(
      r2,
      new RegExp(`^lsvd: Cannot listen on 127\\.0\\.0\\.1:${port}: Address already in use$`),
      "busy port",
    );
    const r3 = await runLsvd([
      "serve",
      "--dir",
      t.store,
      "--size",
      "16M",
      "--socket",
      `${t.socket}2`,
      "--metrics",
      `127.0.0.1:${port}`,
    ]);
    assertOneLine(
      r3,
      new RegExp(`^lsvd: Cannot serve metrics on 127\\.0\\.0\\.1:${port}: Address already in use$`),
      "busy metrics",
    );
    assert.deepEqual(await listTree(t.store), [], "no object was written");
    assert.equal(
      await Deno.stat(`${t.socket}2`).then(() => true, () => false),
      false,
      "the NBD socket was released",
    );
  } finally {
    busy.close();
    tcp.close();
    await t.remove();
  }
});

Deno.test("lsvd serve --fuse into a missing directory fails before writing anything", async () => {
  const t = await scratch();
  try {
    const r = await runLsvd([
      "serve",
      "--dir",
      t.store,
      "--size",
      "16M",
      "--socket",
      t.socket,
      "--fuse",
      `${t.dir}/nope/disk`,
    ]);
    assertOneLine(r, /^lsvd: Cannot expose the volume at .*nope\/disk: .*nope is not a directory$/, "fuse");
    assert.deepEqual(await listTree(t.store), []);
  } finally {
    await t.remove();
  }
});

Deno.test("lsvd serve that cannot start leaves the directory store as it found it (absent or empty)", async () => {
  const t = await scratch();
  try {
    const absent = join(t.dir, "never-made");
    const r = await runLsvd(["serve", "--dir", absent, "--socket", t.socket]);
    assertOneLine(
      r,
      /^lsvd: Cannot open the volume: it has no recorded size yet; give --size the first time$/,
      "no size",
    );
    assert.equal(
      await Deno.stat(absent).then(() => true, () => false),
      false,
      "the store directory was not made",
    );

    await Deno.mkdir(t.store);
    for (const extra of [[], ["--prefix", "vol1"]]) {
      const again = await runLsvd(["serve", "--dir", t.store, ...extra, "--socket", t.socket]);
      assertOneLine(again, /no recorded size yet; give --size the first time$/, `no size ${extra.join(" ")}`);
      assert.deepEqual(await listTree(t.store), [], "no lease.json, epoch/ or .lsvd-tmp/");
    }

    // Refused after the store's own check: what the check made goes again.
    const file = join(t.dir, "a-file");
    await Deno.writeTextFile(file, "");
    const journal = await runLsvd([
      "serve",
      "--dir",
      absent,
      "--size",
      "16M",
      "--socket",
      t.socket,
      "--journal",
      file,
    ]);
    assertOneLine(journal, /^lsvd: Cannot use journal directory /, "journal");
    assert.equal(
      await Deno.stat(absent).then(() => true, () => false),
      false,
      "the store directory was removed",
    );
    assert.equal(await Deno.stat(t.socket).then(() => true, () => false), false, "the socket was removed");
  } finally {
    await t.remove();
  }
});

Deno.test("lsvd serve --fuse without nbdfuse installed fails before the store is touched", async () => {
  const t = await scratch();
  const bin = join(t.dir, "bin"); // a PATH without nbdfuse
  try {
    await Deno.mkdir(bin);
    const r = await runLsvd(
      ["serve", "--dir", t.store, "--size", "16M", "--socket", t.socket, "--fuse", join(t.dir, "disk")],
      { PATH: bin },
    );
    assertOneLine(r, /^lsvd: Cannot expose the volume at .*disk: nbdfuse is not installed/, "no nbdfuse");
    assert.deepEqual([...Deno.readDirSync(t.dir)].map((e) => e.name), ["bin"], "no store, no socket");
  } finally {
    await t.remove();
  }
});

Deno.test("lsvd --version, lsvd version and -h/--help on every command", async () => {
  const v = await runLsvd(["--version"]);
  assert.equal(v.code, 0);
  assert.match(v.stdout, /^lsvd \d+\.\d+\.\d+ \(deno /);
  assert.equal((await runLsvd(["version"])).stdout, v.stdout);
  const top = await runLsvd(["-h"]);
  assert.equal(top.code, 0);
  const commands = [...top.stdout.matchAll(/^ {2}([a-z]+) {2,}/gm)].map((m) => m[1]!);
  assert(
    commands.includes("serve") && commands.includes("licenses") && commands.includes("version"),
    top.stdout,
  );
  for (const command of commands) {
    for (const flag of ["-h", "--help"]) {
      const r = await runLsvd([command, flag]);
      assert.equal(r.code, 0, `${command} ${flag}: ${r.stderr}`);
      assert.match(r.stdout, new RegExp(`^Usage: lsvd ${command}`), `${command} ${flag}`);
    }
  }
  const serve = await runLsvd(["serve", "--help"]);
  for (const heading of ["Store", "Volume", "Serving NBD", "Kernel device", "Tuning", "Examples:"]) {
    assert(serve.stdout.includes(heading), `serve --help lacks ${heading}`);
  }
  for (
    const variable of ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "BUCKET_NAME", "AWS_ENDPOINT_URL_S3"]
  ) {
    assert(serve.stdout.includes(variable), `serve --help lacks ${variable}`);
  }
});

Deno.test("lsvd serve names the environment variable a bad value came from, in one line", async () => {
  const t = await scratch();
  try {
    const cases: [Record<string, string>, RegExp][] = [
      [{ FLY_LSVD_DEVICE_SIZE: "lots" }, /^lsvd: Invalid FLY_LSVD_DEVICE_SIZE: "lots" is not a size/],
      [{ LSVD_UPLOADS: "-3" }, /^lsvd: Invalid LSVD_UPLOADS: "-3" must be a whole number/],
      [{ LSVD_READ_ONLY: "perhaps" }, /^lsvd: Invalid LSVD_READ_ONLY: "perhaps" is not a boolean/],
      [{ LSVD_LISTEN: "nowhere" }, /^lsvd: Invalid LSVD_LISTEN: "nowhere" is not HOST:PORT/],
      [{ LSVD_SIZE: "100" }, /^lsvd: Invalid LSVD_SIZE: 100 bytes is not a multiple of 4096$/],
      [{ LSVD_METRICS: ":99999" }, /^lsvd: Invalid LSVD_METRICS port: "99999" must be a whole number/],
      [{ LSVD_SEAL_DELAY_MS: "soon" }, /^lsvd: Invalid LSVD_SEAL_DELAY_MS: "soon" must be a whole number/],
      // Checked although --journal is absent: a bad value in an env file is found before it is used.
      [{ LSVD_JOURNAL_SIZE: "1M" }, /^lsvd: Invalid LSVD_JOURNAL_SIZE: at least 4M$/],
      [{ LSVD_OBJECT_SIZE: "6K" }, /^lsvd: Invalid LSVD_OBJECT_SIZE: 6144 bytes is not a multiple of 4096$/],
    ];
    for (const [env, pattern] of cases) {
      const r = await runLsvd(["serve", "--dir", t.store, "--socket", t.socket], env);
      assertOneLine(r, pattern, JSON.stringify(env));
    }
    const s3Cases: [Record<string, string>, RegExp][] = [
      [{ BUCKET_NAME: "my bucket" }, /^lsvd: Invalid BUCKET_NAME: "my bucket" is not a bucket name/],
      [
        { BUCKET_NAME: "b", AWS_ENDPOINT_URL_S3: "fly.storage.tigris.dev" },
        /^lsvd: Invalid AWS_ENDPOINT_URL_S3: "fly\.storage\.tigris\.dev" is not an http:\/\/ or https:\/\/ URL$/,
      ],
    ];
    for (const [env, pattern] of s3Cases) {
      assertOneLine(
        await runLsvd(["serve", "--size", "16M", "--socket", t.socket], env),
        pattern,
        JSON.stringify(env),
      );
    }
    const flag = await runLsvd(["serve", "--dir", t.store, "--size", "lots"]);
    assertOneLine(flag, /^lsvd: Invalid --size: "lots" is not a size/, "--size");
  } finally {
    await t.remove();
  }
});

Deno.test("deno task bench --help prints its usage without a stack trace", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--no-prompt", join(ROOT, "bench", "run.ts"), "--help"],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, text);
  assert.match(text, /^Usage: deno task bench/);
  assert(!text.includes("    at "), text);
});

Deno.test("lsvd serve --help shows the tuning defaults computed for this machine's memory", async () => {
  const { availableMemoryBytes, tuningDefaults } = await import("../../src/cli/memory_defaults.ts");
  const { formatSize } = await import("../../src/util/sizes.ts");
  const memory = availableMemoryBytes();
  const d = tuningDefaults(memory);
  const r = await runLsvd(["serve", "--help"]);
  assert.equal(r.code, 0);
  const shown = (flag: string) => new RegExp(`--${flag} \\S+ +.*\\(default: ([^)]+)\\)`).exec(r.stdout)?.[1];
  assert.equal(shown("dirty-limit"), formatSize(d.dirtyBytes));
  assert.equal(shown("cache-size"), formatSize(d.cacheBytes));
  assert.equal(shown("uploads"), String(d.uploads));
  assert.match(r.stdout, new RegExp(`computed for ${(memory / 2 ** 30).toFixed(1)} GiB of memory`));
});

Deno.test("lsvd serve store errors are one line without repeated text or '(Unknown)'", async () => {
  const t = await scratch();
  const html = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    () => new Response("<html>not S3</html>", { status: 400, headers: { "content-type": "text/html" } }),
  );
  const refused = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const refusedPort = (refused.addr as Deno.NetAddr).port;
  refused.close();
  try {
    const keys = { AWS_ACCESS_KEY_ID: "a", AWS_SECRET_ACCESS_KEY: "b" };
    const base = [
      "serve",
      "--bucket",
      "b",
      "--path-style",
      "--size",
      "16M",
      "--socket",
      t.socket,
      "--endpoint",
    ];
    const down = `http://127.0.0.1:${refusedPort}`;
    const r1 = await runLsvd([...base, down], keys);
    assertOneLine(
      r1,
      /^lsvd: Cannot open bucket "b" at .*: cannot reach it \(connect ECONNREFUSED [^)]*\)$/,
      "refused",
    );
    const line = r1.stderr.trim().split("\n").at(-1)!;
    assert.equal(line.split(down).length - 1, 1, `the endpoint is named once: ${line}`);
    const r2 = await runLsvd([...base, `http://127.0.0.1:${html.addr.port}`], keys);
    assertOneLine(
      r2,
      /^lsvd: Cannot open bucket "b" at .*: the server answered HTTP 400 without an S3 error code/,
      "html",
    );
    assert(!/Unknown/.test(r2.stderr), r2.stderr);
  } finally {
    await html.shutdown();
    await t.remove();
  }
});
