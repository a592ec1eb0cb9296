/**
 * @module
 * The operator docs hold: docs/lsvd.service passes `systemd-analyze verify`, its stop timeout
 * outlasts lsvd's own --shutdown-timeout, and its ExecStart command line starts the real daemon;
 * .dockerignore keeps local state and secrets out of the build but not what the Dockerfile copies.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { Daemon, ROOT, scratch } from "../support/daemon.ts";
import { runClient } from "../support/clients.ts";

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
