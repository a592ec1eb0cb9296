/**
 * @module
 * What `lsvd serve` does when asked to stop at awkward moments, with Ceph RGW behind a fault
 * proxy the test controls:
 * - SIGTERM while the store does not answer during start-up/recovery: the daemon stops, exit 0,
 *   without ever printing "Device is now operational.", and the volume is unchanged;
 * - SIGTERM with unflushed writes while the store is black-holed and `--shutdown-timeout 7`:
 *   "Still flushing" progress lines name what is left, then exit 1 with one line saying how many
 *   bytes in how many objects were not stored; a second SIGTERM gets a line that fits;
 * - SIGTERM with every write stored while the store is black-holed (long enough for the lease to
 *   lapse): the shutdown checkpoint and lease release are given up after 10 s in one line, exit 0;
 *   with a shorter `--shutdown-timeout`, its line claims no loss and the exit is 0;
 * - the same with `--journal`: the line says the writes stay in the journal, and the next start
 *   (store back) replays them.
 */

import assert from "node:assert/strict";
import { Daemon, scratch, unixUri } from "../support/daemon.ts";
import { join } from "node:path";
import { runClientOk, SYSTEM_PYTHON } from "../support/clients.ts";
import { FaultProxy } from "../support/fault_proxy.ts";
import { rgwEnv, startRgw } from "../support/rgw.ts";

/** Writes 2 MiB of 0xab at offset 0 and disconnects without FLUSH. */
const WRITE_NO_FLUSH = `
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
h.pwrite(b"\\xab" * (2 << 20), 0)
h.shutdown()
`;

/** Writes 2 MiB of 0xcd at offset 0, FLUSHes (acknowledged from the journal) and disconnects. */
const WRITE_FLUSH = `
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
h.pwrite(b"\\xcd" * (2 << 20), 0)
h.flush()
h.shutdown()
`;

/** Reads the first byte and the last byte of the first 2 MiB. */
const READ_BACK = `
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
b = h.pread(2 << 20, 0)
print(b[0], b[-1])
h.shutdown()
`;

Deno.test({
  name:
    "lsvd serve: SIGTERM during start-up or recovery stops without serving; a shutdown deadline names what was lost",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    const rgw = await startRgw();
    const proxy = FaultProxy.forEndpoint(rgw.endpoint);
    const env = rgwEnv(rgw);
    const s = await scratch();
    const base = ["--bucket", rgw.bucket, "--path-style", "--endpoint", proxy.endpoint, "--socket", s.socket];
    try {
      await t.step("signal while the store is away at start", async () => {
        const first = await Daemon.start({ args: [...base, "--prefix", "stop", "--size", "64M"], env });
        assert.equal((await first.stop()).code, 0);
        await proxy.setMode("blackhole");
        const d = Daemon.spawn({ args: [...base, "--prefix", "stop"], env });
        await new Promise((r) => setTimeout(r, 3000)); // inside the store's 30 s answer deadline
        let done;
        try {
          d.child.kill("SIGTERM");
          done = await d.finished(30_000);
        } finally {
          await proxy.setMode("pass");
        }
        assert.equal(done.code, 0, done.log);
        assert.match(done.log, /Stopped during (start-up|recovery); the device was never served\./);
        assert.doesNotMatch(done.log, /Device is now operational/);
        const again = await Daemon.start({ args: [...base, "--prefix", "stop"], env });
        assert.equal((await again.stop()).code, 0);
      });

      await t.step("shutdown deadline while the store is black-holed", async () => {
        const d = await Daemon.start({
          args: [
            ...base,
            "--prefix",
            "deadline",
            "--size",
            "64M",
            "--seal-delay-ms",
            "600000",
            "--shutdown-timeout",
            "7",
          ],
          env,
        });
        await runClientOk(SYSTEM_PYTHON, ["-c", WRITE_NO_FLUSH, unixUri(s.socket)]);
        await proxy.setMode("blackhole");
        let done;
        try {
          d.child.kill("SIGTERM");
          await d.waitForLine(/Flushing remaining writes/, 10_000);
          d.child.kill("SIGTERM");
          done = await d.finished(60_000);
        } finally {
          await proxy.setMode("pass");
        }
        assert.equal(done.code, 1, done.log);
        assert.match(
          done.log,
          /Received SIGTERM again; still flushing writes to object storage, please wait\./,
        );
        assert.match(done.log, /Still flushing: 2\.0 MiB in 1 objects left to store/);
        assert.match(
          done.log,
          /Shutdown deadline of 7 s passed: \d+ bytes in 1 objects from object \d+ on were not stored and are lost\./,
        );
        assert.doesNotMatch(done.log, /Device has shut down/);
      });

      await t.step(
        "nothing left to store while the store is away: stops in bounded time, exit 0",
        async () => {
          const args = [...base, "--prefix", "idle", "--lease-duration-ms", "3000"];
          const d = await Daemon.start({ args: [...args, "--size", "64M"], env });
          await runClientOk(SYSTEM_PYTHON, ["-c", WRITE_FLUSH, unixUri(s.socket)]); // stored by its FLUSH
          await proxy.setMode("blackhole");
          let done;
          const startMs = Date.now();
          try {
            await new Promise((r) => setTimeout(r, 4000)); // the lease lapses: renewals get no answer
            d.child.kill("SIGTERM");
            done = await d.finished(90_000);
          } finally {
            await proxy.setMode("pass");
          }
          const tookS = (Date.now() - startMs) / 1000;
          assert.equal(done.code, 0, done.log);
          assert(tookS < 30, `stopped after ${tookS} s`);
          const said = done.log.split("\n").filter((l) => /Stopped without/.test(l));
          assert.equal(said.length, 1, done.log);
          assert.match(
            said[0]!,
            /^lsvd: Stopped without the shutdown checkpoint and without releasing the lease: object storage did not answer within 10 s\. Every write is stored; /,
          );
          assert.doesNotMatch(done.log, /Still flushing|lost|Cannot write checkpoint/);
          assert.match(done.log, /Device has shut down\./);
          const again = await Daemon.start({ args, env });
          const read = await runClientOk(SYSTEM_PYTHON, ["-c", READ_BACK, unixUri(s.socket)]);
          assert.equal(read.stdout.trim(), "205 205");
          assert.equal((await again.stop()).code, 0);
        },
      );

      await t.step("a shutdown deadline with nothing left to store claims no loss and exits 0", async () => {
        const args = [...base, "--prefix", "idle-deadline"];
        const d = await Daemon.start({ args: [...args, "--size", "64M", "--shutdown-timeout", "3"], env });
        await runClientOk(SYSTEM_PYTHON, ["-c", WRITE_FLUSH, unixUri(s.socket)]);
        await proxy.setMode("blackhole");
        let done;
        try {
          d.child.kill("SIGTERM");
          done = await d.finished(60_000);
        } finally {
          await proxy.setMode("pass");
        }
        assert.equal(done.code, 0, done.log);
        assert.match(
          done.log,
          /Shutdown deadline of 3 s passed after every write was stored: stopped before the shutdown checkpoint and the lease release finished/,
        );
        assert.doesNotMatch(done.log, /lost|0 bytes/);
        const again = await Daemon.start({ args, env });
        assert.equal((await again.stop()).code, 0);
      });

      await t.step(
        "shutdown deadline with --journal: the writes stay in the journal and are replayed",
        async () => {
          const journal = ["--journal", join(s.dir, "journal"), "--journal-delay", "10m"];
          const args = [...base, "--prefix", "journal", ...journal];
          const d = await Daemon.start({ args: [...args, "--size", "64M", "--shutdown-timeout", "5"], env });
          await runClientOk(SYSTEM_PYTHON, ["-c", WRITE_FLUSH, unixUri(s.socket)]);
          await proxy.setMode("blackhole");
          let done;
          try {
            d.child.kill("SIGTERM");
            done = await d.finished(60_000);
          } finally {
            await proxy.setMode("pass");
          }
          assert.equal(done.code, 1, done.log);
          assert.match(
            done.log,
            /Shutdown deadline of 5 s passed: \d+ bytes in 1 objects from object \d+ on were not stored and stay in journal \S+ \(\d+ acknowledged bytes\), replayed at the next start\./,
          );
          const again = await Daemon.start({ args, env });
          assert.match(again.log, /Replaying \d+ records \(\d+ bytes\) from journal/);
          const read = await runClientOk(SYSTEM_PYTHON, ["-c", READ_BACK, unixUri(s.socket)]);
          assert.equal(read.stdout.trim(), "205 205");
          assert.equal((await again.stop()).code, 0);
        },
      );
    } finally {
      await proxy.close();
      await rgw.stop();
      await s.remove();
    }
  },
});
