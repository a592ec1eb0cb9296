/**
 * @module
 * `lsvd serve` as a user meets it: options and environment, one-line errors, the seed's log lines,
 * SIGTERM flushing, size remembered / grown / shrink refused, read-only, TCP and socket mode.
 */

import assert from "node:assert/strict";
import { buildServeConfig, serveOptions } from "../../src/cli/serve.ts";
import { parseOptions, UsageError } from "../../src/cli/options.ts";
import { tuningDefaults } from "../../src/cli/memory_defaults.ts";
import { Daemon, ROOT, scratch, unixUri } from "../support/daemon.ts";
import { runClient, runClientOk, runNbdsh } from "../support/clients.ts";

function qemuIo(uri: string, ...commands: string[]) {
  return runClient("qemu-io", ["-f", "raw", uri, ...commands.flatMap((c) => ["-c", c])], {
    timeoutMs: 60_000,
  });
}

async function runLsvd(args: string[], env?: Record<string, string>) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "main.ts", ...args],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
    ...(env === undefined ? {} : { env }),
  }).output();
  const d = new TextDecoder();
  return { code: out.code, stdout: d.decode(out.stdout), stderr: d.decode(out.stderr) };
}

Deno.test("lsvd serve --help lists the options with their environment names", async () => {
  const r = await runLsvd(["serve", "--help"]);
  assert.equal(r.code, 0);
  for (
    const s of [
      "--bucket",
      "--dir",
      "--size",
      "FLY_LSVD_DEVICE_SIZE",
      "BUCKET_NAME",
      "AWS_ENDPOINT_URL_S3",
      "--socket",
      "--flush-policy",
      "--puts-per-second",
    ]
  ) {
    assert(r.stdout.includes(s), `help lacks ${s}`);
  }
  const top = await runLsvd(["--help"]);
  assert.equal(top.code, 0);
  assert.match(top.stdout, /serve/);
});

Deno.test("lsvd serve reports user errors in one line with exit code 1", async () => {
  const t = await scratch();
  const aFile = `${t.dir}/a-file`;
  Deno.writeTextFileSync(aFile, "");
  // A filesystem with less free than the cache asks for (a size the memory check lets through).
  const small = `${t.dir}/small`;
  Deno.mkdirSync(small);
  await runClientOk("mount", ["-t", "tmpfs", "-o", "size=64m", "tmpfs", small]);
  const readOnly = `${t.dir}/read-only`;
  Deno.mkdirSync(readOnly);
  await runClientOk("mount", ["-t", "tmpfs", "-o", "size=16m,ro", "tmpfs", readOnly]);
  try {
    const withJournal = (
      dir: string,
      size: string,
    ) => [
      "serve",
      "--dir",
      t.store,
      "--size",
      "1G",
      "--socket",
      t.socket,
      "--journal",
      dir,
      "--journal-size",
      size,
    ];
    const cases: [string[], RegExp][] = [
      [
        ["serve", "--dir", t.store, "--socket", t.socket],
        /^lsvd: Cannot open the volume: it has no recorded size yet; give --size the first time$/,
      ],
      [
        ["serve", "--dir", t.store, "--size", "12 parsecs"],
        /^lsvd: Invalid --size: "12 parsecs" is not a size/,
      ],
      [["serve", "--dir", t.store, "--size", "1G", "--frobnicate"], /^lsvd: Unknown option '--frobnicate'/],
      [
        ["serve", "--dir", t.store, "--bucket", "b"],
        /^lsvd: Invalid options: give either a bucket \(--bucket\) or --dir/,
      ],
      [["launch"], /^lsvd: Unknown command "launch"/],
      [
        ["serve", "--dir", t.store, "--size", "1G", "--flush-policy", "sometimes"],
        /^lsvd: Invalid --flush-policy: "sometimes" must be group or each$/,
      ],
      [
        ["serve", "--dir", t.store, "--size", "1G", "--puts-per-second", "0"],
        /^lsvd: Invalid --puts-per-second: "0" must be a whole number from 1 to 1000000$/,
      ],
      [
        ["serve", "--dir", t.store, "--size", "1G", "--cache-dir-size", "64M"],
        /^lsvd: Invalid options: --cache-dir-size needs --cache-dir$/,
      ],
      [["serve", "--dir", t.store, "--size", "1G", "--cache-dir", ""], /^lsvd: Invalid --cache-dir: empty$/],
      [
        ["serve", "--dir", t.store, "--size", "1G", "--journal-size", "64M"],
        /^lsvd: Invalid options: --journal-size needs --journal$/,
      ],
      [
        ["serve", "--dir", t.store, "--size", "1G", "--journal-delay", "5"],
        /^lsvd: Invalid options: --journal-delay needs --journal$/,
      ],
      [
        ["serve", "--dir", t.store, "--size", "1G", "--cache-dir", aFile],
        /^lsvd: Cannot use cache directory ".*": it is a file, not a directory$/,
      ],
      [
        [
          "serve",
          "--dir",
          t.store,
          "--size",
          "1G",
          "--cache-dir",
          `${small}/cache`,
          "--cache-dir-size",
          "1G",
        ],
        /^lsvd: Cannot use cache directory ".*": --cache-dir-size \S+ is more than its filesystem has free \(\d+\.\d [MG]iB\); give a smaller --cache-dir-size$/,
      ],
      [
        withJournal(`${small}/journal`, "1G"),
        /^lsvd: Cannot use journal directory \S+: --journal-size 1G and 2 preallocated segments of 64M need more than its filesystem has free \(\d+\.\d MiB\); give a smaller --journal-size$/,
      ],
      [
        withJournal(readOnly, "4M"),
        /^lsvd: Cannot use journal directory \S+: Read-only file system/,
      ],
    ];
    for (const [args, pattern] of cases) {
      const r = await runLsvd(args);
      assert.equal(r.code, 1, `${args.join(" ")}: ${r.stderr}`);
      const lines = r.stderr.trim().split("\n").filter((l) => l.startsWith("lsvd:") || l.includes(" at "));
      assert.match(lines.at(-1)!, pattern);
      assert(!r.stderr.includes("    at "), `stack trace for ${args.join(" ")}: ${r.stderr}`);
    }
    // A journal from an env file, not typed: the line names where it came from.
    const readOnlyServe = await runLsvd(["serve", "--dir", t.store, "--read-only"], { LSVD_JOURNAL: small });
    assert.match(
      readOnlyServe.stderr,
      /^lsvd: Invalid options: LSVD_JOURNAL writes; it cannot go with --read-only$/m,
    );
  } finally {
    await runClientOk("umount", [small]);
    await runClientOk("umount", [readOnly]);
    await t.remove();
  }
});

Deno.test("lsvd serve logs the seed's lines, flushes on SIGTERM, exits 0 and keeps data across restarts", async () => {
  const t = await scratch();
  try {
    const first = await Daemon.start({ args: ["--dir", t.store, "--size", "64M", "--socket", t.socket] });
    assert.equal((await Deno.stat(t.socket)).mode! & 0o777, 0o600, "socket mode is 0600");
    // no flush: SIGTERM must push the open object to the store
    await runClientOk("qemu-io", ["-f", "raw", unixUri(t.socket), "-c", "write -P 0x5a 4M 1M"]);
    const stopped = await first.stop();
    assert.equal(stopped.code, 0, stopped.log);
    const expected = [
      /^lsvd: Starting recovery from the .* directory\.$/,
      /^lsvd: Recovery complete \(processed 0 objects\)\.$/,
      /^lsvd: Device is now operational\.$/,
      /^lsvd: Flushing remaining writes to object storage\.$/,
      /^lsvd: Device has shut down\.$/,
    ];
    let at = 0;
    for (const line of first.lines) if (at < expected.length && expected[at]!.test(line)) at++;
    assert.equal(at, expected.length, `log lines out of order:\n${stopped.log}`);

    const second = await Daemon.start({ args: ["--dir", t.store, "--socket", t.socket] });
    const r = await qemuIo(unixUri(t.socket), "read -P 0x5a 4M 1M", "read -P 0 0 4M");
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert(!/verification failed/i.test(r.stdout), r.stdout);
    assert.equal((await second.stop()).code, 0);
  } finally {
    await t.remove();
  }
});

Deno.test("Flags that accept losing data are read from the command line only, never from LSVD_* variables", async () => {
  const t = await scratch();
  try {
    const target = `${t.dir}/image`;
    await Deno.writeTextFile(target, "keep");
    // LSVD_FORCE left in an env file must not let export replace a file nobody asked it to replace.
    const r = await runLsvd(["export", "--dir", t.store, target], { LSVD_FORCE: "1" });
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /the file exists; give --force/);
    assert.equal(await Deno.readTextFile(target), "keep");
    const help = await runLsvd(["serve", "--help"]);
    for (const flag of ["abandon-journal", "journal-discard"]) {
      const line = help.stdout.split("\n").findIndex((l) => l.trimStart().startsWith(`--${flag}`));
      assert.ok(line >= 0, `help lacks --${flag}`);
      assert.match(help.stdout.split("\n")[line + 1]!, /env: none \(command line only\)/);
    }
  } finally {
    await t.remove();
  }
});

Deno.test("lsvd serve takes options from the environment, Fly's names included", async () => {
  const t = await scratch();
  try {
    const env = {
      FLY_LSVD_DEVICE_SIZE: "32M",
      LSVD_DIR: t.store,
      LSVD_SOCKET: t.socket,
      LSVD_EXPORT: "disk",
      // A shared environment file may set a journal's or a disk cache's size for the starts that use
      // one: a start without LSVD_JOURNAL / LSVD_CACHE_DIR goes on (typed, they are refused: above).
      LSVD_JOURNAL_SIZE: "256M",
      LSVD_CACHE_DIR_SIZE: "64M",
    };
    const d = await Daemon.start({ args: [], env });
    const info = await runClientOk("nbdinfo", ["--size", unixUri(t.socket, "disk")]);
    assert.equal(info.stdout.trim(), String(32 * 1024 * 1024));
    assert.equal((await d.stop()).code, 0);
  } finally {
    await t.remove();
  }
});

Deno.test("lsvd serve grows the volume, refuses to shrink below written data, serves read-only and TCP", async () => {
  const t = await scratch();
  try {
    let d = await Daemon.start({ args: ["--dir", t.store, "--size", "16M", "--socket", t.socket] });
    await runClientOk("qemu-io", ["-f", "raw", unixUri(t.socket), "-c", "write -P 7 12M 1M"]);
    assert.equal((await d.stop()).code, 0);

    const shrink = Daemon.spawn({
      args: ["--dir", t.store, "--size", "8M", "--allow-shrink", "--socket", t.socket],
    });
    const failed = await shrink.finished();
    assert.equal(failed.code, 1);
    assert.match(
      failed.log,
      /lsvd: Cannot shrink the volume from 16777216 to 8388608 bytes: data is written up to byte 13631488/,
    );

    d = await Daemon.start({ args: ["--dir", t.store, "--size", "1G", "--socket", t.socket] });
    assert.equal(
      (await runClientOk("nbdinfo", ["--size", unixUri(t.socket)])).stdout.trim(),
      String(2 ** 30),
    );
    assert.equal((await d.stop()).code, 0);

    // Port 0: the kernel picks a free port and the daemon says which, so nothing can race for it.
    d = await Daemon.start({ args: ["--dir", t.store, "--read-only", "--listen", "127.0.0.1:0"] });
    const served = await d.waitForLine(/Serving NBD at nbd:\/\/127\.0\.0\.1:\d+\/lsvd\./, 1000);
    const uri = served.replace(/^.*Serving NBD at (\S+)\.$/, "$1");
    const ro = await runClientOk("nbdinfo", [uri]);
    assert.match(ro.stdout, /is_read_only: true/);
    assert.match(ro.stdout, /export-size: 1073741824/);
    const read = await qemuIo(uri, "read -P 7 12M 1M");
    assert(!/fail/i.test(read.stdout + read.stderr), read.stdout + read.stderr);
    const write = await runNbdsh(`h = nbd.NBD()\nh.connect_uri("${uri}")\nh.pwrite(b"x" * 4096, 0)`);
    assert.notEqual(write.code, 0);
    assert.match(write.stderr, /EPERM|Operation not permitted|read-only/i);
    assert.equal((await d.stop()).code, 0);
  } finally {
    await t.remove();
  }
});

Deno.test("lsvd serve with only FLY_LSVD_MOUNT_POINT attaches /dev/nbd0, as the seed did", async () => {
  const t = await scratch();
  try {
    const d = Daemon.spawn({
      args: ["--dir", t.store, "--size", "16M", "--socket", t.socket],
      env: { ...Deno.env.toObject(), FLY_LSVD_MOUNT_POINT: `${t.dir}/data` },
    });
    const r = await d.finished();
    if (hasKernelNbd()) return; // a machine with nbd would really attach; the VM test covers that path
    assert.equal(r.code, 1, r.log);
    assert.match(
      r.log,
      /^lsvd: Cannot connect \/dev\/nbd0: the kernel has no nbd module .*use --fuse PATH instead$/m,
    );
  } finally {
    await t.remove();
  }
});

function hasKernelNbd(): boolean {
  try {
    Deno.statSync("/sys/module/nbd");
    return true;
  } catch {
    return false;
  }
}

Deno.test("serve refuses a --cache-dir-size whose index would take more than an eighth of the memory, naming the most that fits", () => {
  const memory = 512 * 2 ** 20;
  const config = (size: string) =>
    buildServeConfig(
      parseOptions(
        ["--dir", "/nonexistent/st", "--cache-dir", "/nonexistent/dc", "--cache-dir-size", size],
        serveOptions(tuningDefaults(memory)),
      ),
      memory,
    );
  assert.equal(config("9398M").cacheDir?.sizeBytes, 9398 * 2 ** 20);
  assert.throws(
    () => config("9399M"),
    (e) =>
      e instanceof UsageError &&
      e.message ===
        "Invalid options: --cache-dir-size 9399M needs 64 MiB of memory for its index (7.0 MiB per GiB), more than an eighth of the 512 MiB lsvd may use here; at most --cache-dir-size 9398M",
  );
  assert.throws(() => config("100G"), /--cache-dir-size 100G needs 697 MiB of memory for its index/);
});
