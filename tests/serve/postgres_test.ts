/**
 * @module
 * The flagship workload end to end: PostgreSQL 15 on ext4 on lsvd (nbdfuse → loop device with
 * 4 KiB sectors), a client that prints every commit Postgres acknowledged, then a power cut —
 * `kill -9` of lsvd, then of Postgres. After a fresh lsvd start, `e2fsck -fy` and a mount, Postgres
 * must run crash recovery and come up with every acknowledged transaction (and each one whole),
 * and `pg_amcheck` must find no damaged page (the cluster has data checksums). Run twice: FLUSH
 * acknowledged by the store, and by the write-back journal (`--journal`, with a delay of an hour so
 * every commit since the last full object is only in the journal when the power goes).
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { Daemon, scratch, unixUri } from "../support/daemon.ts";
import { runClient, SYSTEM_PYTHON } from "../support/clients.ts";
import { freePort } from "../support/ports.ts";
import { Ext4OnNbd, PG_BIN, PostgresServer } from "../support/postgres.ts";

const CLIENTS = 4;
const ACKED_BEFORE_CRASH = 400;
const ACCOUNTS = 16;

/**
 * CLIENTS threads; each transaction inserts a 1 KiB row and bumps one counter, and its id is
 * printed only after COMMIT returned. Runs until killed.
 */
const CLIENT = `
import psycopg2, sys, threading
port, clients = int(sys.argv[1]), int(sys.argv[2])
lock = threading.Lock()
def run(c):
    conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
    cur = conn.cursor()
    n = 0
    while True:
        n += 1
        tid = n * clients + c
        cur.execute("INSERT INTO acked (id, payload) VALUES (%s, repeat(md5(%s::text), 32))", (tid, tid))
        cur.execute("UPDATE counters SET total = total + 1 WHERE k = %s", (tid % ${ACCOUNTS},))
        conn.commit()
        with lock:
            print(tid, flush=True)
for c in range(clients):
    threading.Thread(target=run, args=(c,), daemon=True).start()
threading.Event().wait()
`;
import { forEachLine } from "../support/lines.ts";

/** Runs the client until `count` commits were acknowledged; the client is then killed too. */
async function commitUntil(port: number, count: number, crash: () => Promise<void>): Promise<Set<number>> {
  const client = new Deno.Command(SYSTEM_PYTHON, {
    args: ["-c", CLIENT, String(port), String(CLIENTS)],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const lines: string[] = [];
  const errors: string[] = [];
  const reading = Promise.all([
    forEachLine(client.stdout, (l) => lines.push(l)),
    forEachLine(client.stderr, (l) => errors.push(l)),
  ]);
  const deadline = Date.now() + 60_000;
  let exited = false;
  client.status.then(() => (exited = true));
  while (lines.length < count && Date.now() < deadline && !exited) {
    await new Promise((r) => setTimeout(r, 10));
  }
  await crash();
  try {
    client.kill("SIGKILL");
  } catch {
    // already gone
  }
  await client.status;
  await reading;
  // A line is printed only after COMMIT returned, so every line (even one printed after the power
  // cut, for a commit whose FLUSH completed just before it) is an acknowledged transaction.
  const acked = new Set(lines.filter((l) => l !== "").map(Number));
  assert(acked.size >= count, `only ${acked.size} commits were acknowledged:\n${errors.join("\n")}`);
  return acked;
}

Deno.test({
  name: "Postgres on ext4 on lsvd recovers every acknowledged commit after kill -9 of lsvd and Postgres",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () => powerCut(() => []),
});

Deno.test({
  name: "Postgres on lsvd --journal recovers every acknowledged commit from the journal after kill -9",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () => powerCut((dir) => ["--journal", join(dir, "journal"), "--journal-delay", "1h"]),
});

async function powerCut(extraArgs: (dir: string) => string[]): Promise<void> {
  const t = await scratch();
  await Deno.chmod(t.dir, 0o755); // the postgres user walks down to its data directory
  const lsvdArgs = ["--dir", t.store, "--socket", t.socket, ...extraArgs(t.dir)];
  const port = freePort();
  let lsvd: Daemon | undefined;
  let fs: Ext4OnNbd | undefined;
  let pg: PostgresServer | undefined;
  try {
    lsvd = await Daemon.start({ args: [...lsvdArgs, "--size", "1G"] });
    fs = (await Ext4OnNbd.attach(unixUri(t.socket), t.dir, { mkfs: true })).fs;
    pg = new PostgresServer(join(fs.mountPoint, "pgdata"), port);
    await pg.init();
    await pg.start();
    await pg.query(
      "CREATE TABLE acked (id bigint PRIMARY KEY, payload text NOT NULL); " +
        "CREATE TABLE counters (k int PRIMARY KEY, total bigint NOT NULL); " +
        `INSERT INTO counters SELECT k, 0 FROM generate_series(0, ${ACCOUNTS - 1}) k`,
    );

    const server = pg, daemon = lsvd;
    const acked = await commitUntil(port, ACKED_BEFORE_CRASH, async () => {
      daemon.kill(); // the power cut, seen from the disk
      await daemon.exited;
      await server.crash();
    });
    lsvd = undefined;
    pg = undefined;
    await fs.detachDead();
    fs = undefined;

    lsvd = await Daemon.start({ args: lsvdArgs });
    if (lsvdArgs.includes("--journal")) {
      assert.match(
        lsvd.log,
        /Replaying \d+ records \(\d+ bytes\) from journal/,
        "the commits came from the journal",
      );
    }
    const attached = await Ext4OnNbd.attach(unixUri(t.socket), t.dir, { mkfs: false });
    fs = attached.fs;
    assert(attached.fsckCode! <= 1, `e2fsck -fy exited ${attached.fsckCode}:\n${attached.fsckOutput}`);
    pg = new PostgresServer(join(fs.mountPoint, "pgdata"), port);
    await pg.start();
    assert.match(pg.log, /database system was (not properly shut down|interrupted)/, pg.log);
    assert.match(pg.log, /redo done|database system is ready/, pg.log);

    const present = new Set((await pg.query("SELECT id FROM acked")).split("\n").map(Number));
    const lost = [...acked].filter((id) => !present.has(id));
    assert.deepEqual(lost, [], `${lost.length} of ${acked.size} acknowledged commits are missing`);
    const [rows, total] =
      (await pg.query("SELECT (SELECT count(*) FROM acked), (SELECT sum(total) FROM counters)"))
        .split("|").map(Number);
    assert.equal(rows, total, "every recovered transaction is whole: one row and one counter bump each");
    for (const id of present) assert(id >= CLIENTS, `row ${id} was never inserted`);

    const amcheck = await runClient(join(PG_BIN, "pg_amcheck"), [
      "-h",
      "127.0.0.1",
      "-p",
      String(port),
      "-U",
      "postgres",
      "--all",
      "--install-missing",
      "--heapallindexed",
    ], { timeoutMs: 120_000 });
    assert.equal(amcheck.code, 0, `pg_amcheck:\n${amcheck.stdout}\n${amcheck.stderr}`);

    assert.equal(await pg.stop(), 0, pg.log);
    pg = undefined;
    await fs.detach();
    fs = undefined;
    const stopped = await lsvd.stop();
    lsvd = undefined;
    assert.equal(stopped.code, 0, stopped.log);
  } finally {
    await pg?.crash();
    await fs?.detachDead();
    if (lsvd !== undefined) {
      lsvd.kill();
      await lsvd.exited;
    }
    await t.remove();
  }
}
