/**
 * @module
 * Handing the volume from one daemon to the next (an upgrade, issue 19), with real daemons on the
 * directory store: a new daemon's askHolderToHandOver() (what `serve --takeover --device` runs
 * first) signals the live holder on this host; the holder stores every write it acknowledged, even
 * those never flushed, releases the lease and exits 0 with one line; the next daemon starts without
 * --takeover (nothing to fence) and serves those writes. The kernel side (the device and its mount
 * kept) is in tests/vm/restart_test.ts.
 */

import assert from "node:assert/strict";
import { Daemon, scratch, unixUri } from "../support/daemon.ts";
import { runClientOk, runNbdsh } from "../support/clients.ts";
import { askHolderToHandOver } from "../../src/cli/hand_over.ts";
import { DirectoryStore } from "../../src/store/directory.ts";

const BLOCK = 4096;

Deno.test("askHolderToHandOver(): the holder stores its unflushed writes, releases the lease and exits 0", async () => {
  const t = await scratch();
  try {
    const args = ["--dir", t.store, "--socket", t.socket, "--seal-delay-ms", "3600000"];
    const a = await Daemon.start({ args: [...args, "--size", "1M"] });
    // Acknowledged, never flushed (libnbd sends no FLUSH on close), and no seal timer: only a
    // hand-over stores it.
    const wrote = await runNbdsh(
      `h = nbd.NBD()\nh.connect_uri("${unixUri(t.socket)}")\nh.pwrite(b"\\x5a" * ${BLOCK}, 0)\nh.shutdown()`,
    );
    assert.equal(wrote.code, 0, wrote.stderr);
    const said: string[] = [];
    await askHolderToHandOver(new DirectoryStore(t.store), "", { waitMs: 30_000, log: (l) => said.push(l) });
    const old = await a.finished(30_000);
    assert.equal(old.code, 0, old.log);
    assert.match(
      old.log.split("\n").at(-1)!,
      /^lsvd: Handed the volume over: every acknowledged write is stored\.$/,
    );
    assert.deepEqual(said, [
      `Asking lsvd pid ${a.child.pid} on this host to hand the volume over (SIGUSR2).`,
      `lsvd pid ${a.child.pid} handed the volume over.`,
    ]);
    const b = await Daemon.start({ args });
    try {
      assert(!b.log.includes("Taking the volume over"), b.log);
      await runClientOk("qemu-io", ["-f", "raw", unixUri(t.socket), "-c", `read -P 0x5a 0 ${BLOCK}`]);
    } finally {
      assert.equal((await b.stop()).code, 0);
    }
  } finally {
    await t.remove();
  }
});
