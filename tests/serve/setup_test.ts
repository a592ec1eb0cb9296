/**
 * @module
 * `lsvd setup` against Ceph RGW: driven by flags (--non-interactive) and through a pseudo-terminal
 * answering its prompts (python3 pty, the secret typed without echo). The env file it writes must
 * start the real daemon with nothing else but a socket, and a bad key must write nothing. The
 * secret key never appears on standard output or error (only in the env file), and an env file
 * written for a volume that exists pins no size, so the daemon still starts after a grow.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { Daemon, ROOT, scratch, unixUri } from "../support/daemon.ts";
import { runClient, runClientOk, SYSTEM_PYTHON } from "../support/clients.ts";
import { runLsvd } from "../support/lsvd_cli.ts";
import { type Rgw, startRgw } from "../support/rgw.ts";

const CLEAN_ENV = { PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin", HOME: Deno.env.get("HOME") ?? "/root" };

function parseEnvFile(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const m = /^([A-Z_][A-Z0-9_]*)=(\S+)$/.exec(line);
    assert(m !== null, `not NAME=value: ${line}`);
    env[m[1]!] = m[2]!;
  }
  return env;
}

/** What setup printed, with the secret nowhere in it. */
function assertNoSecret(secret: string, ...outputs: string[]): void {
  for (const output of outputs) assert(!output.includes(secret), `the secret key was printed:\n${output}`);
}

/** Serves with only the env file's variables (and a socket, and any extra args), writes, reads back, stops. */
async function serveFromEnvFile(
  file: string,
  socket: string,
  expectLine: RegExp,
  extra: string[] = [],
): Promise<void> {
  const env = { ...CLEAN_ENV, ...parseEnvFile(await Deno.readTextFile(file)) };
  const d = await Daemon.start({ args: ["--socket", socket, ...extra], env });
  assert(d.lines.some((l) => expectLine.test(l)), d.log);
  await runClientOk("qemu-io", [
    "-f",
    "raw",
    unixUri(socket),
    "-c",
    "write -P 0x61 0 1M",
    "-c",
    "read -P 0x61 0 1M",
  ]);
  assert.equal((await d.stop()).code, 0);
}

const PTY_DRIVER = `
import json, os, pty, re, select, sys, time
steps = json.loads(sys.argv[1])
pid, fd = pty.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
out = b""
def read_until(pattern, timeout=60):
    global out
    deadline = time.time() + timeout
    while not re.search(pattern.encode(), out):
        if time.time() > deadline:
            sys.stdout.write(out.decode(errors="replace")); sys.exit("timed out waiting for " + pattern)
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                chunk = b""
            if not chunk:
                sys.stdout.write(out.decode(errors="replace")); sys.exit("ended before " + pattern)
            out += chunk
for pattern, answer in steps:
    read_until(pattern)
    out += b"\\n<<" + answer.encode() + b">>\\n"
    os.write(fd, answer.encode() + b"\\r")
while True:
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        break
    if not chunk:
        break
    out += chunk
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors="replace"))
sys.exit(os.waitstatus_to_exitcode(status))
`;

let rgw: Rgw | undefined;

Deno.test({
  name:
    "lsvd setup --non-interactive checks the bucket, writes an env file serve starts from, and refuses bad keys",
  sanitizeResources: false,
  async fn() {
    rgw ??= await startRgw();
    const t = await scratch();
    try {
      const file = join(t.dir, "lsvd.env");
      const flags = [
        "--non-interactive",
        "--service",
        "other",
        "--endpoint",
        rgw.endpoint,
        "--region",
        rgw.region,
        "--path-style",
        "--bucket",
        rgw.bucket,
        "--prefix",
        "setup1",
        "--size",
        "64M",
      ];
      const keys = ["--access-key-id", rgw.accessKeyId, "--secret-access-key", rgw.secretAccessKey];
      const r = await runLsvd(["setup", ...flags, ...keys, "--env-file", file], { env: CLEAN_ENV });
      assert.equal(r.code, 0, r.out + r.err);
      assert.equal((await Deno.stat(file)).mode! & 0o777, 0o600);
      const env = parseEnvFile(await Deno.readTextFile(file));
      assert.deepEqual(env, {
        AWS_ACCESS_KEY_ID: rgw.accessKeyId,
        AWS_SECRET_ACCESS_KEY: rgw.secretAccessKey,
        AWS_ENDPOINT_URL_S3: rgw.endpoint,
        AWS_REGION: rgw.region,
        BUCKET_NAME: rgw.bucket,
        LSVD_PREFIX: "setup1/",
        LSVD_PATH_STYLE: "true",
        FLY_LSVD_DEVICE_SIZE: "64M",
      });
      assert.match(r.err, /^lsvd: The bucket works\. It holds no volume here yet\.$/m);
      assert.match(r.err, /^lsvd: The first start creates a volume of 64M here\.$/m);
      assert.match(r.out, new RegExp(`^  Fly: +fly secrets import < ${file.replaceAll(".", "\\.")}$`, "m"));
      assert.match(
        r.out,
        new RegExp(`^  docker: +docker run --env-file ${file.replaceAll(".", "\\.")} .* lsvd serve$`, "m"),
      );
      assertNoSecret(rgw.secretAccessKey, r.out, r.err);
      await serveFromEnvFile(
        file,
        t.socket,
        new RegExp(
          `^lsvd: Using bucket ${rgw.bucket}, prefix setup1/ at ${rgw.endpoint.replaceAll(".", "\\.")}\\.$`,
        ),
      );

      // An encrypted volume: the env file names the key file and never holds the key.
      const keyFile = join(t.dir, "volume.key");
      const keyText = "b".repeat(20) + crypto.randomUUID().replaceAll("-", "");
      await Deno.writeTextFile(keyFile, keyText, { mode: 0o600 });
      const encFile = join(t.dir, "enc.env");
      const encFlags = flags.map((f) => f === "setup1" ? "setup-enc" : f);
      const enc = await runLsvd([
        "setup",
        ...encFlags,
        ...keys,
        "--encryption-key-file",
        keyFile,
        "--env-file",
        encFile,
      ], {
        env: CLEAN_ENV,
      });
      assert.equal(enc.code, 0, enc.out + enc.err);
      const encText = await Deno.readTextFile(encFile);
      assert.equal(parseEnvFile(encText).LSVD_ENCRYPTION_KEY_FILE, keyFile);
      assertNoSecret(keyText, encText, enc.out, enc.err);
      await serveFromEnvFile(encFile, t.socket, /^lsvd: The volume is encrypted \(AES-256-GCM/);
      const plainWithKey = await runLsvd(
        ["setup", ...flags, ...keys, "--encryption-key-file", keyFile, "--env-file", join(t.dir, "x.env")],
        { env: CLEAN_ENV },
      );
      assert.equal(plainWithKey.code, 1, plainWithKey.err);
      assert.match(
        plainWithKey.err,
        /^lsvd: Cannot open the volume at "setup1\/format\.json" with an encryption key: it is not encrypted/m,
      );

      const again = await runLsvd(["setup", ...flags, ...keys, "--env-file", file], { env: CLEAN_ENV });
      assert.equal(again.code, 1);
      assert.match(again.err, /^lsvd: Cannot write .*lsvd\.env: it exists \(give --force to replace it\)$/m);
      const forced = await runLsvd(["setup", ...flags, ...keys, "--env-file", file, "--force"], {
        env: CLEAN_ENV,
      });
      assert.equal(forced.code, 0, forced.err);
      assert.match(forced.err, /It already holds a volume here of 67108864 bytes; serve will open it\./);
      assert.match(
        forced.err,
        /^lsvd: The env file sets no size: serve opens the volume at the size its bucket records, and grows it when started once with a larger --size \(--size=64M is not written\)\.$/m,
      );
      assertNoSecret(rgw.secretAccessKey, forced.out, forced.err);
      const rewritten = parseEnvFile(await Deno.readTextFile(file));
      assert.equal(rewritten.FLY_LSVD_DEVICE_SIZE, undefined, "a size pinned for an existing volume");
      assert.equal(rewritten.AWS_SECRET_ACCESS_KEY, rgw.secretAccessKey);
      // Grown once by hand, the volume still starts from the env file (nothing pins the old size).
      const using = new RegExp(`^lsvd: Using bucket ${rgw.bucket}, prefix setup1/ `);
      await serveFromEnvFile(file, t.socket, using, ["--size", "128M"]);
      await serveFromEnvFile(file, t.socket, using);

      const bad = join(t.dir, "bad.env");
      const wrong = await runLsvd(
        [
          "setup",
          ...flags,
          "--access-key-id",
          rgw.accessKeyId,
          "--secret-access-key",
          "wrong-secret-5f1c",
          "--env-file",
          bad,
        ],
        { env: CLEAN_ENV },
      );
      assert.equal(wrong.code, 1, wrong.err);
      assertNoSecret("wrong-secret-5f1c", wrong.out, wrong.err);
      const lines = wrong.err.trim().split("\n").filter((l) => !l.startsWith("lsvd: Checking bucket"));
      assert.equal(lines.length, 1, wrong.err);
      assert.match(lines[0]!, /^lsvd: .*credentials/i);
      assert.equal(
        await Deno.stat(bad).then(() => true, () => false),
        false,
        "no env file after a failed check",
      );

      const missing = await runLsvd(
        ["setup", "--non-interactive", "--service", "tigris", "--env-file", bad],
        {
          env: CLEAN_ENV,
        },
      );
      assert.equal(missing.code, 1);
      assert.match(missing.err, /^lsvd: Missing --access-key-id/m);
    } finally {
      await t.remove();
    }
  },
});

Deno.test({
  name: "lsvd setup asks on a terminal (secret not echoed), checks the bucket and writes the env file",
  sanitizeResources: false,
  async fn() {
    rgw ??= await startRgw();
    const t = await scratch();
    try {
      const file = join(t.dir, "asked.env");
      const steps: [string, string][] = [
        ["Choose \\[1\\]: ", "3"],
        ["Access key ID: ", rgw.accessKeyId],
        ["Secret access key: ", rgw.secretAccessKey],
        ["Endpoint URL: ", "not a url"],
        ["is not an http.*\\n.*Endpoint URL: ", rgw.endpoint],
        ["Region .*: ", rgw.region],
        ["Path-style URLs.*\\[y\\]: ", ""],
        ["Bucket: ", rgw.bucket],
        ["Prefix inside the bucket.*: ", "asked"],
        ["Volume size \\[10G\\]: ", "32M"],
        ["Mount point.*: ", ""],
      ];
      const r = await runClient(
        SYSTEM_PYTHON,
        [
          "-c",
          PTY_DRIVER,
          JSON.stringify(steps),
          Deno.execPath(),
          "run",
          "-A",
          "--no-prompt",
          join(ROOT, "main.ts"),
          "setup",
          "--env-file",
          file,
        ],
        { env: CLEAN_ENV, timeoutMs: 120_000 },
      );
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.match(r.stdout, /Which object storage service\?/);
      assert.match(r.stdout, /Wrote .*asked\.env \(mode 0600; it holds the secret key\)/);
      // Between typing the secret and the next question the terminal shows nothing of it.
      const echoed = r.stdout.split(`<<${rgw.secretAccessKey}>>`)[1]?.split("Endpoint URL")[0];
      assert(
        echoed !== undefined && !echoed.includes(rgw.secretAccessKey),
        `the secret was echoed: ${echoed}`,
      );
      // Nowhere else either: the only copies are the driver's own note of what it typed.
      assertNoSecret(rgw.secretAccessKey, r.stdout.replaceAll(`<<${rgw.secretAccessKey}>>`, ""), r.stderr);
      assert.match(r.stdout, /fly secrets import < .*asked\.env/);
      const keyEchoed = r.stdout.split(`<<${rgw.accessKeyId}>>`)[1]?.split("Secret access key")[0];
      assert(
        keyEchoed?.includes(rgw.accessKeyId),
        "the access key (not secret) is echoed: the check can see echo",
      );
      const env = parseEnvFile(await Deno.readTextFile(file));
      assert.equal(env.AWS_SECRET_ACCESS_KEY, rgw.secretAccessKey);
      assert.equal(env.LSVD_PREFIX, "asked/");
      assert.equal(env.LSVD_PATH_STYLE, "true");
      assert.equal(env.FLY_LSVD_DEVICE_SIZE, "32M");
      assert.equal(env.FLY_LSVD_MOUNT_POINT, undefined);
      await serveFromEnvFile(file, t.socket, /^lsvd: Using bucket .*, prefix asked\/ at /);
    } finally {
      await t.remove();
    }
  },
});

Deno.test({
  name: "setup tests: stop RGW",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await rgw?.stop();
  },
});
