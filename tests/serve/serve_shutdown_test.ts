/**
 * @module
 * What `lsvd serve` does when asked to stop at awkward moments, with Ceph RGW behind a fault
 * proxy the test controls:
 * - SIGTERM while the store does not answer during start-up/recovery: the daemon stops, exit 0,
 *   without ever printing "Device is now operational.", and the volume is unchanged;
 * - SIGTERM with unflushed writes while the store is black-holed and `--shutdown-timeout 7`:
 *   "Still flushing" progress lines name what is left, then exit 1 with one line saying how many
 *   bytes in how many objects were not stored; a second SIGTERM gets a line that fits;
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
