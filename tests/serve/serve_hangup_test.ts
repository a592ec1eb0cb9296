/**
 * @module
 * A closed terminal (or a dropped SSH session) stops lsvd as cleanly as SIGTERM does: the real
 * daemon runs on a pseudo-terminal (python3 pty), gets a write it has not flushed (the seal delay
 * is an hour), and then the terminal goes away: the kernel sends SIGHUP, lsvd flushes with
 * nowhere to print, releases its lease and exits 0; a restart reads the write back.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { Daemon, ROOT, scratch, unixUri } from "../support/daemon.ts";
import { runClient, runClientOk, SYSTEM_PYTHON } from "../support/clients.ts";

/** argv: NBD URI, store dir, then the daemon's command line. Prints what it saw, then "exit N". */
const HANG_UP = `
import nbd, os, pty, select, sys, time
uri, store, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
pid, fd = pty.fork()
if pid == 0:
    os.execvp(argv[0], argv)
out = b""
deadline = time.time() + 120
while b"Device is now operational." not in out:
    if time.time() > deadline:
        sys.exit("not operational: " + out.decode(errors="replace"))
    r, _, _ = select.select([fd], [], [], 0.2)
    if r:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            chunk = b""
        if not chunk:
            sys.exit("ended early: " + out.decode(errors="replace"))
        out += chunk
h = nbd.NBD()
h.connect_uri(uri)
h.pwrite(b"\\xab" * (2 << 20), 0)
h.shutdown()
print("objects before hangup", len([n for n in os.listdir(store) if len(n) == 16]))
os.close(fd)  # the terminal goes away: SIGHUP to its session leader, lsvd
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors="replace"))
print("exit", os.waitstatus_to_exitcode(status))
`;

const READ_BACK = `
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
b = h.pread(2 << 20, 0)
print(b[0], b[-1])
h.shutdown()
`;

Deno.test({
  name: "lsvd serve: a closed terminal (SIGHUP) flushes every write, releases the lease and exits 0",
  sanitizeResources: false,
  async fn() {
    const t = await scratch();
    try {
      const args = ["--dir", t.store, "--socket", t.socket];
      const first = await Daemon.start({ args: [...args, "--size", "16M"] });
      assert.equal((await first.stop()).code, 0); // the volume exists; its objects are counted below
      const objects = [...Deno.readDirSync(t.store)].filter((e) => e.name.length === 16).length;
      const r = await runClient(SYSTEM_PYTHON, [
        "-c",
        HANG_UP,
        unixUri(t.socket),
        t.store,
        Deno.execPath(),
        "run",
        "-A",
        "--no-prompt",
        join(ROOT, "main.ts"),
        "serve",
        ...args,
        "--seal-delay-ms",
        "3600000",
      ], { timeoutMs: 180_000 });
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.match(
        r.stdout,
        new RegExp(`^objects before hangup ${objects}$`, "m"),
        "the write was flushed early",
      );
      assert.match(r.stdout, /^exit 0$/m, r.stdout);
      const lease = JSON.parse(await Deno.readTextFile(join(t.store, "lease.json")));
      assert.equal(lease.released, true, JSON.stringify(lease));

      const again = await Daemon.start({ args });
      const read = await runClientOk(SYSTEM_PYTHON, ["-c", READ_BACK, unixUri(t.socket)]);
      assert.equal(read.stdout.trim(), "171 171");
      assert.equal((await again.stop()).code, 0);
    } finally {
      await t.remove();
    }
  },
});
