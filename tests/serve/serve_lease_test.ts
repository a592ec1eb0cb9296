/**
 * @module
 * The writer lease as an operator meets it, with real daemons on the directory store:
 * - a restart right after `kill -9` takes the dead daemon's lease without --takeover, whether the
 *   dead process is gone or still a zombie its parent has not reaped, and says which case it was;
 * - `lease show` and `info` agree that the lease of a daemon killed a lease duration ago lapsed;
 * - `lease break --force` on a running daemon makes it exit 1 with one line saying its lease was
 *   broken (not "taken over by" itself, renewed in 1970).
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { Daemon, ROOT, scratch } from "../support/daemon.ts";
import { runLsvdOk } from "../support/lsvd_cli.ts";

const SIZE = ["--size", "16M"];

Deno.test("serve after kill -9: the restart takes the dead daemon's lease at once without --takeover, saying so", async () => {
  const t = await scratch();
  try {
    const args = ["--dir", t.store, "--socket", t.socket];
    const a = await Daemon.start({ args: [...args, ...SIZE] });
    a.kill();
    await a.exited;
    const b = await Daemon.start({ args }); // no --takeover, and the lease has not lapsed
    assert.match(
      b.log,
      new RegExp(
        `^lsvd: Took over the lease of pid ${a.child.pid} on this host, which is gone \\(killed or crashed\\); fencing its uploads\\.$`,
        "m",
      ),
    );
    assert.match(b.log, /Fenced the previous writer/);
    assert.equal((await b.stop()).code, 0);
  } finally {
    await t.remove();
  }
});

Deno.test("serve after kill -9 of a daemon whose parent has not reaped it (a zombie): the restart needs no --takeover", async () => {
  const t = await scratch();
  const log = join(t.dir, "a.log"), pidFile = join(t.dir, "a.pid");
  const args = ["--dir", t.store, "--socket", t.socket];
  // A parent that never reaps: the shell starts lsvd, then becomes `sleep`.
  const quoted = [
    Deno.execPath(),
    "run",
    "-A",
    "--no-prompt",
    join(ROOT, "main.ts"),
    "serve",
    ...args,
    ...SIZE,
  ]
    .map((a) => `'${a}'`).join(" ");
  const parent = new Deno.Command("sh", {
    args: ["-c", `${quoted} >'${log}' 2>&1 & echo $! >'${pidFile}'; exec sleep 600`],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    const deadline = Date.now() + 60_000;
    let started = "";
    while (!started.includes("Device is now operational.")) {
      assert(Date.now() < deadline, `the first daemon did not start:\n${started}`);
      await new Promise((r) => setTimeout(r, 50));
      started = await Deno.readTextFile(log).catch(() => "");
    }
    const pid = Number((await Deno.readTextFile(pidFile)).trim());
    Deno.kill(pid, "SIGKILL");
    let stat = "";
    while (!/\) Z /.test(stat)) {
      assert(Date.now() < deadline, `pid ${pid} did not become a zombie: ${stat}`);
      await new Promise((r) => setTimeout(r, 20));
      stat = await Deno.readTextFile(`/proc/${pid}/stat`);
    }
    const b = await Daemon.start({ args });
    assert.match(
      b.log,
      new RegExp(
        `^lsvd: Took over the lease of pid ${pid} on this host, which is gone \\(killed or crashed; a zombie its parent has not reaped yet\\); fencing its uploads\\.$`,
        "m",
      ),
    );
    assert.match(await Deno.readTextFile(`/proc/${pid}/stat`), /\) Z /, "still a zombie while b serves");
    assert.equal((await b.stop()).code, 0);
  } finally {
    parent.kill("SIGKILL");
    await parent.status;
    await t.remove();
  }
});

Deno.test("lease show and info agree that a killed daemon's lease lapsed once its duration passed", async () => {
  const t = await scratch();
  try {
    const store = ["--dir", t.store];
    const a = await Daemon.start({
      args: [...store, "--socket", t.socket, "--lease-duration-ms", "1000", ...SIZE],
    });
    assert.match((await runLsvdOk(["lease", "show", ...store])).out, /, held until \S+\n$/);
    a.kill();
    await a.exited;
    await new Promise((r) => setTimeout(r, 1500));
    const shown = (await runLsvdOk(["lease", "show", ...store])).out;
    assert.match(
      shown,
      new RegExp(
        `^host \\S+ pid ${a.child.pid} \\(epoch 1\\) since \\S+, renewed \\S+ \\(\\d+ s ago\\), lapsed at \\S+\\n$`,
      ),
    );
    assert.doesNotMatch(shown, /valid|held/);
    assert.match((await runLsvdOk(["info", ...store])).out, /^Lease: +lapsed at /m);
    assert.equal(JSON.parse((await runLsvdOk(["info", "--json", ...store])).out).lease.state, "lapsed");
  } finally {
    await t.remove();
  }
});

Deno.test("lease break --force on a running daemon: it exits 1 with one line saying its lease was broken", async () => {
  const t = await scratch();
  try {
    const store = ["--dir", t.store];
    const a = await Daemon.start({
      args: [...store, "--socket", t.socket, "--lease-duration-ms", "1500", ...SIZE],
    });
    const broke = await runLsvdOk(["lease", "break", "--force", ...store]);
    assert.match(broke.out, new RegExp(`^Broke the lease of host \\S+ pid ${a.child.pid} `));
    const done = await a.finished(30_000);
    assert.equal(done.code, 1, done.log);
    const lines = done.log.split("\n").filter((l) => /Cannot keep writing/.test(l));
    assert.equal(lines.length, 1, done.log);
    assert.match(
      lines[0]!,
      /^lsvd: Cannot keep writing the volume: its lease was broken \('lsvd lease break'\); the next writer takes the volume without --takeover and fences this one \(nothing acknowledged was left unstored\)$/,
    );
    assert.equal(done.log.split("\n").filter((l) => l !== "").at(-1), lines[0], "the last line");
    assert.doesNotMatch(done.log, /1970|taken over/);
    const b = await Daemon.start({ args: [...store, "--socket", t.socket] });
    assert.match(b.log, /Taking the volume over from .*broken by 'lsvd lease break'; fencing its uploads\./);
    assert.equal((await b.stop()).code, 0);
  } finally {
    await t.remove();
  }
});
