/**
 * @module
 * `serve --journal DIR` with a real NBD client (libnbd's Python binding, nbdcopy): FLUSHes are
 * acknowledged from the local journal, so a daemon killed with -9 before any upload (a long
 * --journal-delay) still has every flushed write after a restart, and the store received fewer
 * objects than there were FLUSHes. A journal whose log moved on under another writer is refused in
 * one line; --journal-discard drops it.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { Daemon, scratch, unixUri } from "../support/daemon.ts";
import { runClientOk, SYSTEM_PYTHON } from "../support/clients.ts";
import { runLsvd, runLsvdOk } from "../support/lsvd_cli.ts";

const BLOCKS = 256;
const BLOCK = 4096;
const ROUNDS = 30;

/** Round r writes 4 blocks filled with (r, block) and flushes; prints once the FLUSH is acknowledged. */
const WRITER = `
import nbd, struct, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
first, rounds = int(sys.argv[2]), int(sys.argv[3])
for r in range(first, first + rounds):
    for k in range(4):
        b = (r * 37 + k * 13) % ${BLOCKS}
        h.pwrite(struct.pack(">II", r, b) * (${BLOCK} // 8), b * ${BLOCK})
    h.flush()
    print("flushed", r, flush=True)
h.shutdown()
`;

function writtenBy(round: number): number[] {
  return Array.from({ length: 4 }, (_, k) => (round * 37 + k * 13) % BLOCKS);
}

async function writeRounds(socket: string, first: number, rounds: number): Promise<number> {
  const out = await runClientOk(SYSTEM_PYTHON, [
    "-c",
    WRITER,
    unixUri(socket),
    String(first),
    String(rounds),
  ]);
  return out.stdout.split("\n").filter((l) => l.startsWith("flushed")).length;
}

/** Log objects in a directory store (16 hex digits, no prefix). */
async function logObjects(store: string): Promise<number> {
  let n = 0;
  for await (const e of Deno.readDir(store)) if (/^[0-9a-f]{16}$/.test(e.name)) n++;
  return n;
}

async function readDisk(socket: string, dir: string): Promise<DataView> {
  const out = join(dir, "disk.bin");
  await Deno.remove(out).catch(() => {});
  await runClientOk("nbdcopy", [unixUri(socket), out]);
  const disk = await Deno.readFile(out);
  return new DataView(disk.buffer);
}

Deno.test("serve --journal: kill -9 before any upload keeps every flushed write; fewer objects than FLUSHes", async () => {
  const t = await scratch();
  try {
    const journal = join(t.dir, "journal");
    const args = ["--dir", t.store, "--socket", t.socket, "--journal", journal, "--journal-delay", "1h"];
    const d = await Daemon.start({
      args: [...args, "--size", `${BLOCKS * BLOCK}`, "--metrics", "127.0.0.1:0"],
    });
    const objectsAtStart = await logObjects(t.store);
    assert.equal(await writeRounds(t.socket, 1, ROUNDS), ROUNDS);
    // The journal's backlog is in --metrics and lsvd status.
    const metricsAt = (await d.waitForLine(/Serving metrics at /, 1000)).replace(
      /^.* at http:\/\/(\S+)\/metrics\.$/,
      "$1",
    );
    const text = await (await fetch(`http://${metricsAt}/metrics`)).text();
    const pending = Number(/^lsvd_journal_pending_bytes (\d+)$/m.exec(text)?.[1]);
    assert.equal(pending, ROUNDS * 4 * (BLOCK + 32), "every record is pending upload");
    const status = await runLsvdOk(["status", "--metrics", metricsAt]);
    assert.match(status.out, /Journal \(not yet stored\)\s+\d+\.\d KiB pending upload/);
    const objectsBeforeKill = await logObjects(t.store);
    assert(
      objectsBeforeKill - objectsAtStart < ROUNDS,
      `${objectsBeforeKill - objectsAtStart} objects stored for ${ROUNDS} FLUSHes`,
    );
    assert.equal(objectsBeforeKill, objectsAtStart, "no upload before the journal delay passed");
    d.kill();
    await d.exited;
    // Acknowledged writes are for the daemon's user only, as the NBD socket is.
    assert.equal(Deno.statSync(journal).mode! & 0o777, 0o700);
    for (const e of Deno.readDirSync(journal)) {
      const mode = Deno.statSync(join(journal, e.name)).mode! & 0o077;
      assert.equal(mode, 0, `${e.name} is open to other users`);
    }

    const again = await Daemon.start({ args });
    assert.match(again.log, /Replaying \d+ records \(\d+ bytes\) from journal/);
    const v = await readDisk(t.socket, t.dir);
    const expected = new Array(BLOCKS).fill(0);
    for (let r = 1; r <= ROUNDS; r++) for (const b of writtenBy(r)) expected[b] = r;
    for (let b = 0; b < BLOCKS; b++) {
      assert.equal(v.getUint32(b * BLOCK), expected[b], `block ${b} after replay`);
      if (expected[b] !== 0) assert.equal(v.getUint32(b * BLOCK + 4), b, `block ${b} misplaced`);
    }
    const stopped = await again.stop();
    assert.equal(stopped.code, 0, stopped.log);
    const left = [...Deno.readDirSync(journal)].filter((e) => e.name.startsWith("segment-"));
    assert.deepEqual(left, [], "a clean shutdown leaves no segment");
  } finally {
    await t.remove();
  }
});

/** The lines of a start that was refused: exit 1, exactly one `lsvd: Cannot` line, no stack. */
function refusedLine(run: { code: number; log: string }): string {
  assert.equal(run.code, 1, run.log);
  const lines = run.log.split("\n").filter((l) => l.startsWith("lsvd: Cannot"));
  assert.equal(lines.length, 1, run.log);
  assert(!run.log.includes("    at "), run.log);
  assert.doesNotMatch(run.log, /operational/);
  return lines[0]!;
}

Deno.test("serve --journal: after kill -9, a start without that journal is refused naming its host and directory; --journal replays, --abandon-journal drops it", async () => {
  const t = await scratch();
  try {
    const journal = join(t.dir, "journal");
    const store = ["--dir", t.store, "--socket", t.socket];
    const withJournal = [...store, "--journal", journal, "--journal-delay", "1h"];
    const a = await Daemon.start({ args: [...withJournal, "--size", `${BLOCKS * BLOCK}`] });
    const objectsBefore = await logObjects(t.store);
    assert.equal(await writeRounds(t.socket, 1, 5), 5);
    assert.equal(await logObjects(t.store), objectsBefore, "the acknowledged writes are only in the journal");
    a.kill();
    await a.exited;

    const host = Deno.hostname();
    const names = new RegExp(
      `^lsvd: Cannot open the volume for writing: journal ${journal} on host ${host} \\(writer pid ${a.child.pid}, ` +
        `epoch \\d+\\) may hold acknowledged writes that are not in the store yet.*; start 'lsvd serve --journal ` +
        `${journal}' on ${host} to replay them, or pass --abandon-journal to go on without them \\(they are lost\\)$`,
    );
    // A forgotten --journal, another directory, a --takeover: each refused in one line.
    for (const extra of [[], ["--journal", join(t.dir, "other")], ["--takeover"]]) {
      const line = refusedLine(await Daemon.spawn({ args: [...store, ...extra] }).finished());
      assert.match(line, names);
      assert.doesNotMatch(line, /journal-discard/);
    }
    assert.match(
      refusedLine(await Daemon.spawn({ args: [...store, "--journal", join(t.dir, "other")] }).finished()),
      /\(--journal \S+other is another journal\)/,
    );
    // The offline tools say so too, and a rollback is refused the same way.
    const journalId = (await Deno.readTextFile(join(journal, "id"))).trim();
    assert.match(
      (await runLsvdOk(["journal", "show", journal])).out,
      new RegExp(`^  id: ${journalId} `, "m"),
    );
    const shown = await runLsvdOk(["lease", "show", "--dir", t.store]);
    assert.match(
      shown.out,
      new RegExp(
        `^Journal ${journal} on host ${host} \\(id ${journalId}\\) may hold acknowledged writes`,
        "m",
      ),
    );
    assert.match(
      (await runLsvdOk(["info", "--dir", t.store])).out,
      new RegExp(`^Lease: .*; journal ${journal} on host ${host} may hold acknowledged writes`, "m"),
    );
    const rollback = await runLsvd(["rollback", "--to", "1", "--dir", t.store]);
    assert.equal(rollback.code, 1, rollback.err);
    assert.match(rollback.err, /^lsvd: Cannot open the volume for writing: journal .* --abandon-journal/m);
    assert.equal(await logObjects(t.store), objectsBefore, "nothing refused changed the log");

    // With the journal: replayed, every flushed round is there.
    const b = await Daemon.start({ args: withJournal });
    assert.match(b.log, /Replaying \d+ records \(\d+ bytes\) from journal/);
    const v = await readDisk(t.socket, t.dir);
    for (let r = 1; r <= 5; r++) {
      for (const blk of writtenBy(r)) assert.equal(v.getUint32(blk * BLOCK), r, `block ${blk} of round ${r}`);
    }
    assert.equal((await b.stop()).code, 0);
    // A clean shutdown emptied the journal and cleared the record: a plain start is fine.
    assert.doesNotMatch((await runLsvdOk(["lease", "show", "--dir", t.store])).out, /Journal/);
    const c = await Daemon.start({ args: store });
    assert.equal((await c.stop()).code, 0);

    // --abandon-journal: proceeds without the journal's writes, and says so.
    const d = await Daemon.start({ args: withJournal });
    assert.equal(await writeRounds(t.socket, 6, 3), 3);
    d.kill();
    await d.exited;
    const e = await Daemon.start({ args: [...store, "--abandon-journal"] });
    assert.match(
      e.log,
      new RegExp(
        `Abandoned journal ${journal} on host ${host} \\(--abandon-journal\\): acknowledged writes only it held are lost\\.`,
      ),
    );
    const w = await readDisk(t.socket, t.dir);
    for (const blk of writtenBy(6)) {
      assert.notEqual(w.getUint32(blk * BLOCK), 6, "round 6 was only in the journal");
    }
    assert.equal((await e.stop()).code, 0);
  } finally {
    await t.remove();
  }
});

Deno.test("serve --journal: refused in one line after another writer took over and wrote; --journal-discard drops it", async () => {
  const t = await scratch();
  try {
    const journal = join(t.dir, "journal");
    const args = ["--dir", t.store, "--socket", t.socket, "--journal", journal, "--journal-delay", "1h"];
    const a = await Daemon.start({ args: [...args, "--size", `${BLOCKS * BLOCK}`] });
    assert.equal(await writeRounds(t.socket, 1, 5), 5);
    a.kill();
    await a.exited;

    // Another machine (no journal) takes the volume over, accepting the journal's loss, and writes.
    const b = await Daemon.start({
      args: ["--dir", t.store, "--socket", t.socket, "--takeover", "--abandon-journal"],
    });
    assert.match(b.log, new RegExp(`Abandoned journal ${journal} on host \\S+ \\(--abandon-journal\\)`));
    assert.equal(await writeRounds(t.socket, 100, 3), 3);
    assert.equal((await b.stop()).code, 0);

    const refused = await Daemon.spawn({ args }).finished();
    assert.equal(refused.code, 1, refused.log);
    const lines = refused.log.split("\n").filter((l) => l.startsWith("lsvd: Cannot"));
    assert.equal(lines.length, 1, refused.log);
    assert.match(
      lines[0]!,
      new RegExp(
        `^lsvd: Cannot replay journal ${journal}: it holds \\d+ bytes in 20 records .*moved on under another writer.*--journal-discard`,
      ),
    );
    assert(!refused.log.includes("    at "), "no stack trace");

    const shown = await runLsvdOk(["journal", "show", journal]);
    assert.match(shown.out, /writer: epoch 1, started after object 0 \(epoch 0\)/);
    assert.match(shown.out, /holds: 20 records, \d+ bytes in 1 segments/);

    const discarded = await Daemon.start({ args: [...args, "--journal-discard"] });
    assert.match(discarded.log, /Discarded journal .*: \d+ bytes in 20 records/);
    const v = await readDisk(t.socket, t.dir);
    for (let r = 100; r < 103; r++) {
      for (const blk of writtenBy(r)) {
        assert.equal(v.getUint32(blk * BLOCK), r, `the other writer's block ${blk}`);
      }
    }
    assert.equal((await discarded.stop()).code, 0);
  } finally {
    await t.remove();
  }
});

Deno.test("serve --journal: a daemon fenced with writes only in its journal exits 1 naming them and keeps the journal", async () => {
  const t = await scratch();
  try {
    const journal = join(t.dir, "journal");
    const a = await Daemon.start({
      args: [
        ...["--dir", t.store, "--socket", t.socket, "--journal", journal, "--journal-delay", "1h"],
        ...["--lease-duration-ms", "1500", "--size", `${BLOCKS * BLOCK}`],
      ],
    });
    assert.equal(await writeRounds(t.socket, 1, 3), 3);
    const socketB = join(t.dir, "b.sock");
    const b = await Daemon.start({
      args: ["--dir", t.store, "--socket", socketB, "--takeover", "--abandon-journal"],
    });
    const fenced = await a.finished(30_000);
    assert.equal(fenced.code, 1, fenced.log);
    // The last line (the exit's) says what only the journal holds.
    const last = fenced.log.split("\n").filter((l) => l !== "").at(-1)!;
    assert.match(
      last,
      new RegExp(
        `taken over by .*; ${
          3 * 4 * (BLOCK + 32)
        } bytes of acknowledged writes exist only in journal ${journal}, left in place`,
      ),
    );
    const left = [...Deno.readDirSync(journal)].filter((e) => e.name.startsWith("segment-"));
    assert.equal(left.length, 1, "the journal stays");
    assert.equal((await b.stop()).code, 0);
  } finally {
    await t.remove();
  }
});

Deno.test("serve --journal: a second daemon on the same journal directory is refused", async () => {
  const t = await scratch();
  try {
    const journal = join(t.dir, "journal");
    const a = await Daemon.start({
      args: ["--dir", t.store, "--socket", t.socket, "--journal", journal, "--size", `${BLOCKS * BLOCK}`],
    });
    const other = join(t.dir, "other-store");
    const refused = await Daemon.spawn({
      args: ["--dir", other, "--socket", join(t.dir, "b.sock"), "--journal", journal, "--size", "1M"],
    }).finished();
    assert.equal(refused.code, 1, refused.log);
    assert.match(
      refused.log,
      new RegExp(`Cannot use journal directory ${journal}: pid ${a.child.pid} on \\S+ is using it`),
    );
    assert.equal((await a.stop()).code, 0);
  } finally {
    await t.remove();
  }
});

Deno.test("serve --journal: after kill -9, a lock naming a pid now used by another process, or one of an earlier boot (a reboot, a restarted container), is taken and replayed", async () => {
  const t = await scratch();
  const journal = join(t.dir, "journal");
  const args = ["--dir", t.store, "--socket", t.socket, "--journal", journal, "--journal-delay", "1h"];
  let sleeper: Deno.ChildProcess | undefined;
  try {
    // The killed daemon's pid now belongs to an unrelated process that lives on (started after the
    // daemon, so another start time); then the same with the lock written in an earlier boot.
    const lies = [
      (h: Record<string, unknown>, pid: number) => ({ ...h, pid }),
      (h: Record<string, unknown>, pid: number) => ({
        ...h,
        pid,
        bootId: "00000000-0000-0000-0000-000000000000",
      }),
    ];
    for (const [i, lie] of lies.entries()) {
      const round = i + 1;
      const a = await Daemon.start({ args: round === 1 ? [...args, "--size", `${BLOCKS * BLOCK}`] : args });
      assert.equal(await writeRounds(t.socket, round, 1), 1);
      a.kill();
      await a.exited;
      sleeper ??= new Deno.Command("sleep", { args: ["60"] }).spawn();
      const lock = join(journal, "lock");
      Deno.writeTextFileSync(lock, JSON.stringify(lie(JSON.parse(Deno.readTextFileSync(lock)), sleeper.pid)));
      const again = await Daemon.start({ args });
      assert.match(again.log, /Replaying 4 records/);
      const v = await readDisk(t.socket, t.dir);
      for (const b of writtenBy(round)) {
        assert.equal(v.getUint32(b * BLOCK), round, `block ${b} after replay`);
      }
      assert.equal((await again.stop()).code, 0);
    }
  } finally {
    sleeper?.kill();
    await sleeper?.status;
    await t.remove();
  }
});

Deno.test("serve --journal: another volume's journal is refused, with --journal-discard too; that volume still replays it", async () => {
  const t = await scratch();
  try {
    const journal = join(t.dir, "journal");
    const a = ["--dir", t.store, "--socket", t.socket, "--journal", journal, "--journal-delay", "1h"];
    const d = await Daemon.start({ args: [...a, "--size", `${BLOCKS * BLOCK}`] });
    assert.equal(await writeRounds(t.socket, 1, 1), 1);
    d.kill();
    await d.exited;
    const b = [
      "--dir",
      join(t.dir, "b"),
      "--socket",
      join(t.dir, "b.sock"),
      "--journal",
      journal,
      "--size",
      "1M",
    ];
    for (const extra of [[], ["--journal-discard"]]) {
      assert.match(
        refusedLine(await Daemon.spawn({ args: [...b, ...extra] }).finished()),
        new RegExp(
          `of the volume at prefix "" of the ${t.store} directory, not this one; start that volume with`,
        ),
      );
    }
    const again = await Daemon.start({ args: a });
    assert.match(again.log, /Replaying 4 records/);
    assert.equal((await again.stop()).code, 0);
  } finally {
    await t.remove();
  }
});
