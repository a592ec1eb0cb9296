/**
 * @module
 * Postgres on a clone (issue 21), on the directory store and on Ceph RGW (one gateway): PostgreSQL 15
 * on ext4 on lsvd (nbdfuse → loop device, as postgres_test.ts); pgbench (TPC-B) and a client that
 * counts its acknowledged commits run against it, and while they run `lsvd clone` branches the
 * volume. A second daemon serves the clone and Postgres starts on it, recovering as after a power
 * cut: every commit acknowledged before the clone began is there, each one whole (the counted
 * rows, and TPC-B's balances: accounts, tellers, branches and history sum to the same). Then both
 * change and each sees only its own change; the source collects garbage with a short window, the
 * clone is flattened, the source's data deleted, and Postgres on the clone still has everything.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { Daemon, scratch, unixUri } from "../support/daemon.ts";
import { SYSTEM_PYTHON } from "../support/clients.ts";
import { freePort } from "../support/ports.ts";
import { runLsvdOk } from "../support/lsvd_cli.ts";
import { forEachLine } from "../support/lines.ts";
import { Ext4OnNbd, PG_BIN, PostgresServer } from "../support/postgres.ts";
import { rgwTarget, startRgw } from "../support/rgw.ts";
import { DirectoryStore } from "../../src/store/directory.ts";
import { allKeys, type ToolboxTarget } from "../tools/toolbox.ts";

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

/** TPC-B moves each delta into one account, teller and branch and logs it: the four sums agree. */
const TPCB_SUMS =
  "SELECT (SELECT sum(abalance) FROM pgbench_accounts), (SELECT sum(tbalance) FROM pgbench_tellers), " +
  "(SELECT sum(bbalance) FROM pgbench_branches), (SELECT coalesce(sum(delta), 0) FROM pgbench_history), " +
  "(SELECT count(*) FROM pgbench_history)";

async function assertTpcbWhole(pg: PostgresServer): Promise<number> {
  const [a, t, b, h, n] = (await pg.query(TPCB_SUMS)).split("|").map(Number);
  assert.deepEqual(
    [a, t, b],
    [h, h, h],
    "every pgbench transaction is whole (accounts, tellers, branches, history)",
  );
  return n!;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** pgbench (TPC-B, 2 clients, no vacuum) until killed. */
function startPgbench(port: number): Deno.ChildProcess {
  return new Deno.Command(join(PG_BIN, "pgbench"), {
    args: ["-h", "127.0.0.1", "-p", String(port), "-U", "postgres", "-n", "-c", "2", "-T", "600", "postgres"],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
}

async function runPostgresCloneStory(t: ToolboxTarget): Promise<void> {
  await Deno.chmod(t.dir, 0o755);
  const store = t.storeArgs;
  const env = t.env;
  const [socket, cloneSocket] = [join(t.dir, "nbd.sock"), join(t.dir, "clone.sock")];
  const [port, clonePort] = [freePort(), freePort()];
  const srcDir = join(t.dir, "src"), cloneDir = join(t.dir, "clone");
  await Deno.mkdir(srcDir, { mode: 0o755 });
  await Deno.mkdir(cloneDir, { mode: 0o755 });
  const serve = (prefix: string, sock: string, extra: string[] = []) =>
    Daemon.start({ args: [...store, "--prefix", prefix, "--socket", sock, ...extra], env });
  const cleanup: (() => Promise<unknown>)[] = [];
  try {
    const src = await serve("src", socket, ["--size", "1G"]);
    cleanup.push(async () => (src.kill(), await src.exited));
    const fs = (await Ext4OnNbd.attach(unixUri(socket), srcDir, { mkfs: true })).fs;
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
    const init = await new Deno.Command(join(PG_BIN, "pgbench"), {
      args: ["-h", "127.0.0.1", "-p", String(port), "-U", "postgres", "-i", "-q", "-s", "1", "postgres"],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert(init.success, new TextDecoder().decode(init.stderr));

    // pgbench and the counting client commit; the clone is made while both run.
    const bench = startPgbench(port);
    const client = new Deno.Command(SYSTEM_PYTHON, { args: ["-c", CLIENT, String(port)], stdout: "piped" })
      .spawn();
    const lines: string[] = [];
    const reading = forEachLine(client.stdout, (l) => lines.push(l));
    while (lines.length < 200 || Number(await pg.query("SELECT count(*) FROM pgbench_history")) < 50) {
      await sleep(50);
    }
    const ackedBefore = lines.length;
    await runLsvdOk(["clone", ...store, "--prefix", "src", "--to-prefix", "pgclone"], { env });
    while (lines.length < ackedBefore + 100) await sleep(10);
    for (const p of [client, bench]) p.kill("SIGKILL");
    await Promise.all([client.status, bench.status, reading]);

    const clone = await serve("pgclone", cloneSocket);
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
    const cloneHistory = await assertTpcbWhole(cpg);
    assert(cloneHistory > 0, "pgbench committed before the clone");
    assert(
      cloneHistory < await assertTpcbWhole(pg),
      "the clone does not see the source's later pgbench work",
    );

    await pg.query("INSERT INTO mark VALUES ('source')");
    await cpg.query("INSERT INTO mark VALUES ('clone')");
    assert.equal((await pg.query("SELECT string_agg(who, ',') FROM mark")).trim(), "source");
    assert.equal((await cpg.query("SELECT string_agg(who, ',') FROM mark")).trim(), "clone");
    const cloneRows = await cpg.query("SELECT count(*), sum(id) FROM acked");
    const cloneSums = await cpg.query(TPCB_SUMS);

    // Clean stops; the source collects with a short window, the clone is flattened, the source goes.
    for (const stop of [() => cpg.stop(), () => pg.stop()]) assert.equal(await stop(), 0);
    await cfs.detach();
    await fs.detach();
    assert.equal((await clone.stop()).code, 0);
    assert.equal((await src.stop()).code, 0);
    cleanup.length = 0;
    const gc = await serve("src", socket, ["--retention", "1s", "--gc-interval", "300ms"]);
    cleanup.push(async () => (gc.kill(), await gc.exited));
    await gc.waitForLine(/Garbage collection pass \d+: deleted/, 30_000);
    assert.equal((await gc.stop()).code, 0);
    cleanup.length = 0;
    await runLsvdOk(["flatten", ...store, "--prefix", "pgclone"], { env, timeoutMs: 300_000 });
    const sourceKeys = await allKeys(t.store, "src/");
    assert(sourceKeys.length > 0);
    for (const key of sourceKeys) await t.store.delete(key);
    const again = await serve("pgclone", cloneSocket);
    cleanup.push(async () => (again.kill(), await again.exited));
    const fs2 = (await Ext4OnNbd.attach(unixUri(cloneSocket), cloneDir, { mkfs: false })).fs;
    cleanup.push(() => fs2.detachDead());
    const pg2 = new PostgresServer(join(fs2.mountPoint, "pgdata"), clonePort);
    await pg2.start();
    cleanup.push(() => pg2.crash());
    assert.equal(await pg2.query("SELECT count(*), sum(id) FROM acked"), cloneRows);
    assert.equal(await pg2.query(TPCB_SUMS), cloneSums);
    assert.equal((await pg2.query("SELECT string_agg(who, ',') FROM mark")).trim(), "clone");
    assert.equal(await pg2.stop(), 0);
    await fs2.detach();
    assert.equal((await again.stop()).code, 0);
    cleanup.length = 0;
  } finally {
    for (const c of cleanup.reverse()) await c().catch(() => {});
  }
}

Deno.test({
  name: "Postgres on a clone made while pgbench runs: recovers, diverges, survives flatten (directory store)",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const s = await scratch();
    const t: ToolboxTarget = {
      storeArgs: ["--dir", s.store],
      env: Deno.env.toObject(),
      store: new DirectoryStore(s.store),
      dir: s.dir,
    };
    try {
      await runPostgresCloneStory(t);
    } finally {
      await s.remove();
    }
  },
});

Deno.test({
  name: "Postgres on a clone made while pgbench runs: recovers, diverges, survives flatten (Ceph RGW)",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const rgw = await startRgw();
    const s = await scratch();
    const t = rgwTarget(rgw, s.dir);
    try {
      await runPostgresCloneStory(t);
    } finally {
      await t.store.close();
      await rgw.stop();
      await s.remove();
    }
  },
});
