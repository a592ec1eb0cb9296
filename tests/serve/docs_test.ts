/**
 * @module
 * The operator docs hold: docs/lsvd.service passes `systemd-analyze verify`, its stop timeout
 * outlasts lsvd's own --shutdown-timeout, and its ExecStart command line starts the real daemon;
 * .dockerignore keeps local state and secrets out of the build but not what the Dockerfile copies;
 * every `docker run` line (README, Dockerfile, `lsvd setup` and its help) is a valid lsvd command
 * line behind the image's entrypoint; and the image installs the Debian packages that ship the
 * tools `serve --mount` and `--fuse` run (Docker itself cannot run here: no engine).
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { Daemon, ROOT, scratch } from "../support/daemon.ts";
import { runClient } from "../support/clients.ts";
import { runLsvd } from "../support/lsvd_cli.ts";
import { usageText } from "../../src/cli/setup.ts";

const UNIT = join(ROOT, "docs", "lsvd.service");

function execStartArgs(unit: string): string[] {
  const line = /^ExecStart=(.*)$/m.exec(unit)?.[1];
  assert(line !== undefined, "the unit has an ExecStart line");
  const [binary, command, ...args] = line.split(/\s+/);
  assert.equal(binary, "/usr/local/bin/lsvd");
  assert.equal(command, "serve");
  return args;
}

Deno.test("docs/lsvd.service passes systemd-analyze verify and waits longer than lsvd's own shutdown deadline", async () => {
  const unit = await Deno.readTextFile(UNIT);
  const t = await scratch();
  try {
    // verify checks that ExecStart is executable: point it at a stand-in, change nothing else.
    const binary = join(t.dir, "lsvd");
    await Deno.writeTextFile(binary, "#!/bin/sh\nexit 0\n", { mode: 0o755 });
    const copy = join(t.dir, "lsvd.service");
    await Deno.writeTextFile(copy, unit.replace("ExecStart=/usr/local/bin/lsvd ", `ExecStart=${binary} `));
    const r = await runClient("systemd-analyze", ["verify", copy]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal((r.stdout + r.stderr).trim(), "", "no warnings");
    const args = execStartArgs(unit);
    const shutdownSeconds = Number(args[args.indexOf("--shutdown-timeout") + 1]);
    const stopSeconds = Number(/^TimeoutStopSec=(\d+)$/m.exec(unit)?.[1]);
    assert(shutdownSeconds > 0 && stopSeconds > shutdownSeconds, `${stopSeconds} s > ${shutdownSeconds} s`);
    assert.match(unit, /^KillMode=mixed$/m);
    assert.match(unit, /^EnvironmentFile=\/etc\/lsvd\.env$/m);
  } finally {
    await t.remove();
  }
});

Deno.test("docs/lsvd.service's ExecStart options start the real daemon", async () => {
  const args = execStartArgs(await Deno.readTextFile(UNIT));
  const t = await scratch();
  try {
    const local = args.map((a) =>
      a === "/run/lsvd/lsvd.sock" ? t.socket : a.replace(/^127\.0\.0\.1:\d+$/, "127.0.0.1:0")
    );
    assert(local.includes(t.socket), "the unit serves on /run/lsvd/lsvd.sock (RuntimeDirectory=lsvd)");
    const d = await Daemon.start({ args: ["--dir", t.store, "--size", "16M", ...local] });
    await d.waitForLine(/^lsvd: Serving metrics at http:\/\/127\.0\.0\.1:\d+\/metrics\.$/, 1000);
    assert.equal((await d.stop()).code, 0);
  } finally {
    await t.remove();
  }
});

Deno.test(".dockerignore keeps state and secrets out of the build context, not what the Dockerfile copies", async () => {
  const ignored = (await Deno.readTextFile(join(ROOT, ".dockerignore"))).split("\n")
    .map((l) => l.trim()).filter((l) => l !== "" && !l.startsWith("#")).map((l) => l.replace(/\/$/, ""));
  for (const needed of ["lsvd-data", "*.env", ".git", "node_modules", "*.sock"]) {
    assert(ignored.includes(needed), `.dockerignore lacks ${needed}`);
  }
  const dockerfile = await Deno.readTextFile(join(ROOT, "Dockerfile"));
  const copied = [...dockerfile.matchAll(/^COPY (?!--from)(.+) \S+$/gm)].flatMap((m) => m[1]!.split(/\s+/))
    .map((p) => p.replace(/\/$/, ""));
  assert(copied.includes("main.ts") && copied.includes("src"), copied.join(" "));
  for (const path of copied) {
    assert(!ignored.includes(path), `.dockerignore hides ${path}, which the Dockerfile copies`);
  }
});

Deno.test("lsvd licenses states lsvd's license and names the Deno runtime's notices", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", join(ROOT, "main.ts"), "licenses"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0);
  const text = new TextDecoder().decode(out.stdout);
  assert.match(text, /^lsvd is released under the Apache License, Version 2\.0/);
  for (const name of ["@aws-sdk/client-s3", "V8", "ICU", "Tokio", "rustls", "Cargo.lock"]) {
    assert(text.includes(name), `lsvd licenses does not name ${name}`);
  }
  assert.match(
    await Deno.readTextFile(join(ROOT, "LICENSE")),
    /^ +Apache License\n +Version 2\.0, January 2004/,
  );
});

/** docker run options that take a value (the rest are flags such as --rm or --privileged). */
const DOCKER_VALUE_OPTIONS = new Set([
  "--env-file",
  "--stop-timeout",
  "--device",
  "--cap-add",
  "-v",
  "--volume",
  "-e",
  "--env",
  "--name",
  "-p",
  "--mount",
]);

/** The image and what follows it (the container's command) in a `docker run ...` line. */
function dockerRunCommand(line: string): { image: string; args: string[] } {
  const tokens = line.replace(/#.*$/, "").trim().split(/\s+/).slice(2); // after "docker run"
  let at = 0;
  while (at < tokens.length && (tokens[at] === "..." || tokens[at]!.startsWith("-"))) {
    at += DOCKER_VALUE_OPTIONS.has(tokens[at]!) ? 2 : 1;
  }
  return { image: tokens[at] ?? "", args: tokens.slice(at + 1) };
}

/** Every `docker run` command a user is shown: README (code and inline), Dockerfile, setup's output and help. */
async function dockerRunLines(): Promise<{ where: string; line: string }[]> {
  const found: { where: string; line: string }[] = [];
  const readme = await Deno.readTextFile(join(ROOT, "README.md"));
  for (const m of readme.matchAll(/`(docker run [^`]+)`/g)) found.push({ where: "README", line: m[1]! });
  for (const m of readme.matchAll(/^(docker run .*)$/gm)) found.push({ where: "README", line: m[1]! });
  const dockerfile = await Deno.readTextFile(join(ROOT, "Dockerfile"));
  for (const m of dockerfile.matchAll(/^#\s+(docker run .*)$/gm)) {
    found.push({ where: "Dockerfile", line: m[1]! });
  }
  const help = await runLsvd(["setup", "--help"]);
  for (const m of help.out.matchAll(/(docker run .*)$/gm)) found.push({ where: "setup --help", line: m[1]! });
  for (const m of usageText("/etc/lsvd.env").matchAll(/(docker run .*)$/gm)) {
    found.push({ where: "setup", line: m[1]! });
  }
  return found;
}

Deno.test("every docker run line shown to a user is an lsvd command line behind the image's entrypoint", async () => {
  const dockerfile = await Deno.readTextFile(join(ROOT, "Dockerfile"));
  assert.match(dockerfile, /^COPY --from=build \/src\/lsvd \/\.fly\/lsvd$/m);
  assert.match(dockerfile, /^ENTRYPOINT \["\/\.fly\/lsvd"\]$/m, "the entrypoint is the binary itself");
  const readme = await Deno.readTextFile(join(ROOT, "README.md"));
  const tag = /docker build -t (\S+) \./.exec(readme)?.[1];
  assert.equal(tag, "lsvd");
  const commands = [...(await runLsvd(["--help"])).out.matchAll(/^ {2}([a-z]+) {2,}/gm)].map((m) => m[1]!);
  assert(commands.includes("serve"), commands.join(" "));

  const lines = await dockerRunLines();
  for (const where of ["README", "Dockerfile", "setup", "setup --help"]) {
    assert(lines.some((l) => l.where === where), `no docker run line found in ${where}`);
  }
  const checked = new Set<string>();
  for (const { where, line } of lines) {
    const { image, args } = dockerRunCommand(line);
    assert.equal(image, tag, `${where}: "${line}" runs image "${image}", not the one README builds`);
    const first = args[0] ?? "";
    assert(
      first === "--help" || commands.includes(first),
      `${where}: "${line}" gives the entrypoint /.fly/lsvd "${args.join(" ")}", not an lsvd command`,
    );
    if (checked.has(first)) continue;
    checked.add(first);
    const r = await runLsvd(first === "--help" ? ["--help"] : [first, "--help"]);
    assert.equal(r.code, 0, `lsvd ${first} --help: ${r.err}`);
  }
  const cmd = JSON.parse(/^CMD (\[.*\])$/m.exec(dockerfile)?.[1] ?? "[]") as string[];
  assert.equal((await runLsvd(cmd)).code, 0, `the image's default command lsvd ${cmd.join(" ")}`);
});

/** The base image's Debian release, when this host runs the same one (dpkg answers for it). */
const dockerBase = /^FROM debian:(\w+)-slim$/m.exec(Deno.readTextFileSync(join(ROOT, "Dockerfile")))?.[1];
const hostRelease = /^VERSION_CODENAME=(\w+)$/m.exec(
  (() => {
    try {
      return Deno.readTextFileSync("/etc/os-release");
    } catch {
      return "";
    }
  })(),
)?.[1];

Deno.test({
  name: "the image installs the Debian packages that ship nbdfuse, fusermount3, losetup and the ext4 tools",
  ignore: dockerBase === undefined || dockerBase !== hostRelease,
  async fn() {
    const dockerfile = await Deno.readTextFile(join(ROOT, "Dockerfile"));
    const install = /apt-get install -y --no-install-recommends ([^\\&\n]+)/.exec(dockerfile)?.[1]?.trim()
      .split(/\s+/) ?? [];
    for (const tool of ["nbdfuse", "fusermount3", "losetup", "mkfs.ext4", "resize2fs", "e2fsck", "mount"]) {
      const path = (await runClient("sh", ["-c", `command -v ${tool}`])).stdout.trim();
      assert(path !== "", `${tool} is not installed here, so dpkg cannot say which package ships it`);
      // usrmerge: dpkg knows /bin/x or /sbin/x where the file is /usr/bin/x.
      const owner = (await runClient("dpkg", ["-S", path])).stdout ||
        (await runClient("dpkg", ["-S", path.replace(/^\/usr/, "")])).stdout;
      const pkg = /^([^:\s]+):/.exec(owner)?.[1];
      assert(pkg !== undefined, `dpkg does not know ${path}`);
      const priority = (await runClient("dpkg-query", ["-W", "-f=${Priority}", pkg])).stdout.trim();
      assert(
        install.includes(pkg) || priority === "required",
        `${tool} comes from ${pkg} (priority ${priority}), which the image does not install: ${
          install.join(" ")
        }`,
      );
    }
  },
});
