/**
 * @module
 * Postgres on a clone (issue 21): PostgreSQL 15 on ext4 on lsvd (nbdfuse → loop device, as
 * postgres_test.ts), a client committing; while it commits, `lsvd clone` branches the volume. A
 * second daemon serves the clone and Postgres starts on it, recovering as after a power cut: every
 * commit acknowledged before the clone began is there, each one whole. Then both change and each
 * sees only its own change; the source collects garbage with a short window, the clone is
 * flattened, the source's data deleted, and Postgres on the clone still has everything.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { Daemon, scratch, unixUri } from "../support/daemon.ts";
import { SYSTEM_PYTHON } from "../support/clients.ts";
import { freePort } from "../support/ports.ts";
import { runLsvdOk } from "../support/lsvd_cli.ts";
import { forEachLine } from "../support/lines.ts";
import { Ext4OnNbd, PostgresServer } from "../support/postgres.ts";

const CLIENT = `
import psycopg2, sys
conn = psycopg2.connect(host="127.0.0.1", port=int(sys.argv[1]), user="postgres", dbname="postgres")
cur = conn.cursor()
n = 0
while True:
    n += 1
    cur.execute("INSERT INTO acked (id, payload) VALUES (%s, repeat(md5(%s::text), 32))", (n, n))
    cur.execute("UPDATE counters SET total = total + 1")
    conn.commit()
    print(n, flush=True)
`;

Deno.test({
  name: "Postgres on a clone made while pgbench-like commits run: recovers, diverges, survives flatten",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const t = await scratch();
    await Deno.chmod(t.dir, 0o755);
    const store = ["--dir", t.store];
    const cloneSocket = join(t.dir, "clone.sock");
    const [port, clonePort] = [freePort(), freePort()];
    const srcDir = join(t.dir, "src"), cloneDir = join(t.dir, "clone");
    await Deno.mkdir(srcDir, { mode: 0o755 });
    await Deno.mkdir(cloneDir, { mode: 0o755 });
    const cleanup: (() => Promise<unknown>)[] = [];
    try {
      const src = await Daemon.start({
        args: [...store, "--prefix", "src", "--socket", t.socket, "--size", "1G"],
      });
      cleanup.push(async () => (src.kill(), await src.exited));
      const fs = (await Ext4OnNbd.attach(unixUri(t.socket), srcDir, { mkfs: true })).fs;
      cleanup.push(() => fs.detachDead());
      const pg = new PostgresServer(join(fs.mountPoint, "pgdata"), port);
      await pg.init();
      await pg.start();
      cleanup.push(() => pg.crash());
      await pg.query(
        "CREATE TABLE acked (id bigint PRIMARY KEY, payload text NOT NULL); " +
          "CREATE TABLE counters (total bigint NOT NULL); INSERT INTO counters VALUES (0); " +
          "CREATE TABLE mark (who text)",
      );
      const client = new Deno.Command(SYSTEM_PYTHON, { args: ["-c", CLIENT, String(port)], stdout: "piped" })
        .spawn();
      const lines: string[] = [];
      const reading = forEachLine(client.stdout, (l) => lines.push(l));
      while (lines.length < 200) await new Promise((r) => setTimeout(r, 10));
      const ackedBefore = lines.length;
      await runLsvdOk(["clone", ...store, "--prefix", "src", "--to-prefix", "pgclone"]);
      while (lines.length < ackedBefore + 100) await new Promise((r) => setTimeout(r, 10));
      client.kill("SIGKILL");
      await client.status;
      await reading;

      const clone = await Daemon.start({ args: [...store, "--prefix", "pgclone", "--socket", cloneSocket] });
      cleanup.push(async () => (clone.kill(), await clone.exited));
      const attached = await Ext4OnNbd.attach(unixUri(cloneSocket), cloneDir, { mkfs: false });
      const cfs = attached.fs;
      cleanup.push(() => cfs.detachDead());
      assert(attached.fsckCode! <= 1, `e2fsck -fy exited ${attached.fsckCode}:\n${attached.fsckOutput}`);
      // The clone is a crash image of a server still running on this host: its postmaster.pid names
      // a live process (the source's postmaster), which Postgres would take for another server on
      // this data directory. On another machine, or once the source stopped, it would be stale.
      await Deno.remove(join(cfs.mountPoint, "pgdata", "postmaster.pid"));
      const cpg = new PostgresServer(join(cfs.mountPoint, "pgdata"), clonePort);
      await cpg.start();
      cleanup.push(() => cpg.crash());
      assert.match(cpg.log, /database system was (not properly shut down|interrupted)/, cpg.log);
      const [rows, total, max] = (await cpg.query(
        "SELECT (SELECT count(*) FROM acked), (SELECT total FROM counters), (SELECT max(id) FROM acked)",
      )).split("|").map(Number);
      assert.equal(rows, total, "every transaction on the clone is whole");
      assert(max! >= ackedBefore, `the clone has ${max} commits, ${ackedBefore} were acknowledged before it`);
      assert(max! < lines.length, "the clone does not see the source's later commits");

      await pg.query("INSERT INTO mark VALUES ('source')");
      await cpg.query("INSERT INTO mark VALUES ('clone')");
      assert.equal((await pg.query("SELECT string_agg(who, ',') FROM mark")).trim(), "source");
      assert.equal((await cpg.query("SELECT string_agg(who, ',') FROM mark")).trim(), "clone");
      const cloneRows = await cpg.query("SELECT count(*), sum(id) FROM acked");

      // Clean stops; the source collects with a short window, the clone is flattened, the source goes.
      for (const stop of [() => cpg.stop(), () => pg.stop()]) assert.equal(await stop(), 0);
      await cfs.detach();
      await fs.detach();
      assert.equal((await clone.stop()).code, 0);
      assert.equal((await src.stop()).code, 0);
      cleanup.length = 0;
      const gc = await Daemon.start({
        args: [
          ...store,
          "--prefix",
          "src",
          "--socket",
          t.socket,
          "--retention",
          "1s",
          "--gc-interval",
          "300ms",
        ],
      });
      await gc.waitForLine(/Garbage collection pass \d+: deleted/, 20_000);
      assert.equal((await gc.stop()).code, 0);
      await runLsvdOk(["flatten", ...store, "--prefix", "pgclone"]);
      await Deno.remove(join(t.store, "src"), { recursive: true });
      const again = await Daemon.start({ args: [...store, "--prefix", "pgclone", "--socket", cloneSocket] });
      cleanup.push(async () => (again.kill(), await again.exited));
      const fs2 = (await Ext4OnNbd.attach(unixUri(cloneSocket), cloneDir, { mkfs: false })).fs;
      cleanup.push(() => fs2.detachDead());
      const pg2 = new PostgresServer(join(fs2.mountPoint, "pgdata"), clonePort);
      await pg2.start();
      cleanup.push(() => pg2.crash());
      assert.equal(await pg2.query("SELECT count(*), sum(id) FROM acked"), cloneRows);
      assert.equal((await pg2.query("SELECT string_agg(who, ',') FROM mark")).trim(), "clone");
      assert.equal(await pg2.stop(), 0);
      await fs2.detach();
      assert.equal((await again.stop()).code, 0);
      cleanup.length = 0;
    } finally {
      for (const c of cleanup.reverse()) await c().catch(() => {});
      await t.remove();
    }
  },
});
