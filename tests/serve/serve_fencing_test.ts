/**
 * @module
 * One writer per volume with real daemons, on the directory store and on Ceph RGW:
 *   - a second start is refused in one line naming the holder;
 *   - `--takeover` of a daemon serving a client that FLUSHes all the time makes the old daemon exit
 *     non-zero naming the new holder, and its client gets errors;
 *   - a daemon frozen with SIGSTOP while its client FLUSHes (uploads in flight) is taken over by a
 *     `--standby` once its lease lapses; resumed with SIGCONT, it is fenced: exit 1, one line.
 * In every case each FLUSH the client saw acknowledged (from either daemon's time) is in the volume
 * the new daemon serves afterwards.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { Daemon, scratch, unixUri } from "../support/daemon.ts";
import { runClientOk, SYSTEM_PYTHON } from "../support/clients.ts";
import { startRgw } from "../support/rgw.ts";
import { runLsvd, runLsvdOk } from "../support/lsvd_cli.ts";
import { startUnconditionalS3 } from "../support/unconditional_s3.ts";

const BLOCKS = 256;
const BLOCK = 4096;
const LEASE_MS = 1500;
const FROZEN_LEASE_MS = 5000;

/** Round r writes 8 blocks tagged (r, block), FLUSHes, and prints the round once acknowledged. */
const WRITER = `
import nbd, struct, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
r = 0
try:
    while True:
        r += 1
        for k in range(8):
            b = (r * 37 + k * 13) % ${BLOCKS}
            h.pwrite(struct.pack(">II", r, b) * (${BLOCK} // 8), b * ${BLOCK})
        h.flush()
        print("flushed", r, flush=True)
except Exception as e:
    print("error", e, flush=True)
`;
import { forEachLine } from "../support/lines.ts";

function writtenBy(round: number): number[] {
  return Array.from({ length: 8 }, (_, k) => (round * 37 + k * 13) % BLOCKS);
}

/** A client FLUSHing in a loop; `lines` grows as acknowledgements arrive. */
function startClient(socket: string) {
  const child = new Deno.Command(SYSTEM_PYTHON, {
    args: ["-c", WRITER, unixUri(socket)],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const lines: string[] = [];
  const reading = forEachLine(child.stdout, (l) => lines.push(l));
  return {
    lines,
    async waitForRounds(n: number) {
      const deadline = Date.now() + 30_000;
      while (lines.filter((l) => l.startsWith("flushed")).length < n && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 20));
      }
      assert(lines.length >= n, `the client acknowledged only ${lines.length} rounds`);
    },
    async finished() {
      const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
      await child.status;
      clearTimeout(timer);
      await reading;
      return lines;
    },
  };
}

/** Every block holds a round at least as new as the newest acknowledged round that wrote it. */
async function checkAcknowledged(lines: string[], socket: string, dir: string): Promise<number> {
  const flushed = lines.filter((l) => l.startsWith("flushed")).map((l) => Number(l.split(" ")[1]));
  const floor = new Array(BLOCKS).fill(0);
  for (const r of flushed) for (const blk of writtenBy(r)) floor[blk] = Math.max(floor[blk], r);
  const out = join(dir, "disk.bin");
  await Deno.remove(out).catch(() => {});
  await runClientOk("nbdcopy", [unixUri(socket), out]);
  const v = new DataView((await Deno.readFile(out)).buffer);
  for (let blk = 0; blk < BLOCKS; blk++) {
    const round = v.getUint32(blk * BLOCK);
    assert(
      round >= floor[blk],
      `block ${blk} holds round ${round}, older than acknowledged round ${floor[blk]}`,
    );
  }
  return flushed.length;
}

/** The one error line of a fenced daemon, naming the holder that took over, printed once. */
function assertFencedLine(log: string): void {
  const lines = log.split("\n").filter((l) => l !== "");
  assert.match(
    lines.at(-1)!,
    /^lsvd: Cannot keep writing the volume: the volume was taken over by host \S+ pid \d+ \(epoch \d+\) since /,
    log,
  );
  assert.equal(lines.filter((l) => /Cannot keep writing/.test(l)).length, 1, log);
  assert(!log.includes("    at "), log);
}

interface Setup {
  /** Store arguments (--dir or --bucket ...). */
  store: string[];
  env?: Record<string, string>;
  dir: string;
}

function daemonArgs(
  s: Setup,
  socket: string,
  extra: string[],
  leaseMs = LEASE_MS,
): { args: string[]; env?: Record<string, string> } {
  return {
    args: [
      ...s.store,
      "--seal-delay-ms",
      "20",
      "--object-size",
      "64K",
      "--lease-duration-ms",
      String(leaseMs),
      "--socket",
      socket,
      ...extra,
    ],
    ...(s.env === undefined ? {} : { env: s.env }),
  };
}

/** Second start refused; --takeover under a FLUSHing client loses no acknowledged flush. */
async function refuseThenTakeOver(s: Setup): Promise<void> {
  const socketA = join(s.dir, "a.sock"), socketB = join(s.dir, "b.sock");
  const a = await Daemon.start(daemonArgs(s, socketA, ["--size", `${BLOCKS * BLOCK}`]));
  const refused = await Daemon.spawn(daemonArgs(s, socketB, [])).finished();
  assert.equal(refused.code, 1, refused.log);
  const line = refused.log.split("\n").filter((l) => l.startsWith("lsvd: Cannot"));
  assert.equal(line.length, 1, refused.log);
  assert.match(line[0]!, new RegExp(`it is held by host \\S+ pid ${a.child.pid} \\(epoch \\d+\\) since `));
  // lsvd info and lsvd lease show name the holder, its epoch and when the lease expires.
  const env = s.env === undefined ? {} : { env: s.env };
  const info = JSON.parse((await runLsvdOk(["info", "--json", ...s.store], env)).out);
  assert.equal(info.lease.state, "held");
  assert.equal(info.lease.pid, a.child.pid);
  assert(Date.parse(info.lease.expiresAt) > Date.parse(info.lease.renewedAt));
  assert.match(
    (await runLsvdOk(["info", ...s.store], env)).out,
    new RegExp(
      `^Lease: +held by host \\S+ pid ${a.child.pid}, epoch ${info.lease.epoch}, since .*expires `,
      "m",
    ),
  );
  assert.match((await runLsvdOk(["lease", "show", ...s.store], env)).out, new RegExp(`pid ${a.child.pid} `));

  const client = startClient(socketA);
  await client.waitForRounds(20);
  const b = await Daemon.start(daemonArgs(s, socketB, ["--takeover"]));
  const old = await a.finished(30_000);
  const lines = await client.finished();
  assert.notEqual(old.code, 0, old.log);
  assertFencedLine(old.log);
  assert.match(lines.at(-1) ?? "", /^error/, "the old daemon's client gets an error");
  assert((await checkAcknowledged(lines, socketB, s.dir)) >= 20);
  assert.equal((await b.stop()).code, 0);
}

/**
 * A daemon frozen (SIGSTOP) under a FLUSHing client is taken over by a standby once its lease
 * lapses; resumed (SIGCONT) with its uploads and renewals pending, it is fenced.
 */
async function freezeThenStandby(s: Setup): Promise<void> {
  const socketA = join(s.dir, "fa.sock"), socketB = join(s.dir, "fb.sock");
  // A lease long enough that the standby is usually up before it lapses, and stands by.
  const a = await Daemon.start(daemonArgs(s, socketA, ["--size", `${BLOCKS * BLOCK}`], FROZEN_LEASE_MS));
  const client = startClient(socketA);
  await client.waitForRounds(20);
  a.child.kill("SIGSTOP");
  const b = Daemon.spawn(daemonArgs(s, socketB, ["--standby"], FROZEN_LEASE_MS));
  try {
    // A standby that starts slowly may find the lease already lapsed and take it at once.
    await b.waitForLine(new RegExp(`Taking the volume over from host \\S+ pid ${a.child.pid} `), 60_000);
    await b.waitForLine(/Device is now operational\./, 60_000);
  } catch (e) {
    b.kill();
    throw new Error(`${(e as Error).message}\n--- standby log\n${b.log}`, { cause: e });
  } finally {
    a.child.kill("SIGCONT");
  }
  const old = await a.finished(30_000);
  const lines = await client.finished();
  assert.notEqual(old.code, 0, old.log);
  assertFencedLine(old.log);
  assert.match(lines.at(-1) ?? "", /^error/, "the frozen daemon's client gets an error once it resumes");
  assert((await checkAcknowledged(lines, socketB, s.dir)) >= 20);
  assert.equal((await b.stop()).code, 0, b.log);
}

Deno.test("serve on the directory store: a second daemon is refused; --takeover fences the first without losing an acknowledged flush", async () => {
  const t = await scratch();
  try {
    await refuseThenTakeOver({ store: ["--dir", t.store], dir: t.dir });
  } finally {
    await t.remove();
  }
});

Deno.test("serve on the directory store: a SIGSTOPped writer is taken over by --standby and fenced when resumed, losing no acknowledged flush", async () => {
  const t = await scratch();
  try {
    await freezeThenStandby({ store: ["--dir", t.store], dir: t.dir });
  } finally {
    await t.remove();
  }
});

Deno.test({
  name:
    "serve on Ceph RGW: refusal, --takeover, and a SIGSTOPped writer fenced by --standby, losing no acknowledged flush",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const t = await scratch();
    const rgw = await startRgw();
    try {
      const s: Setup = {
        store: ["--bucket", rgw.bucket, "--endpoint", rgw.endpoint, "--path-style", "--prefix", "fence"],
        env: {
          ...Deno.env.toObject(),
          AWS_ACCESS_KEY_ID: rgw.accessKeyId,
          AWS_SECRET_ACCESS_KEY: rgw.secretAccessKey,
          AWS_REGION: rgw.region,
        },
        dir: t.dir,
      };
      await refuseThenTakeOver(s);
      await freezeThenStandby(s);
    } finally {
      await rgw.stop();
      await t.remove();
    }
  },
});

Deno.test({
  name:
    "serve on an S3 server that ignores If-Match refuses to start in one line; --no-fencing serves it, saying what is lost",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const t = await scratch();
    const s3 = startUnconditionalS3();
    try {
      const store = [
        "--bucket",
        s3.bucket,
        "--endpoint",
        s3.endpoint,
        "--path-style",
        "--region",
        "us-east-1",
      ];
      const env = { ...Deno.env.toObject(), AWS_ACCESS_KEY_ID: "any", AWS_SECRET_ACCESS_KEY: "any" };
      const args = [...store, "--size", `${BLOCKS * BLOCK}`, "--socket", t.socket];
      const refused = await Daemon.spawn({ args, env }).finished();
      assert.equal(refused.code, 1, refused.log);
      const last = refused.log.split("\n").filter((l) => l !== "").at(-1)!;
      assert.match(
        last,
        /^lsvd: Cannot guarantee a single writer on .*: it ignores If-None-Match/,
        refused.log,
      );
      assert.match(last, /--no-fencing/);
      assert(!refused.log.includes("    at "), refused.log);
      assert(s3.ignoredConditions > 0, "the probe sent conditional headers");

      const d = await Daemon.start({ args: [...args, "--no-fencing"], env });
      assert.match(
        d.log,
        /Writing without fencing \(--no-fencing\): a second daemon .* can lose acknowledged writes/,
      );
      const client = startClient(t.socket);
      await client.waitForRounds(5);
      const { code } = await d.stop();
      assert.equal(code, 0);
      const lines = await client.finished();
      const again = await Daemon.start({ args: [...args, "--no-fencing"], env });
      assert((await checkAcknowledged(lines, t.socket, t.dir)) >= 5);
      assert.equal((await again.stop()).code, 0);
    } finally {
      await s3.close();
      await t.remove();
    }
  },
});

Deno.test("lsvd lease break: a frozen holder's lease is broken; a plain start then takes the volume, fencing it, and the holder is fenced once resumed", async () => {
  const t = await scratch();
  try {
    const s: Setup = { store: ["--dir", t.store], dir: t.dir };
    const socketA = join(t.dir, "la.sock"), socketB = join(t.dir, "lb.sock");
    const a = await Daemon.start(daemonArgs(s, socketA, ["--size", `${BLOCKS * BLOCK}`], FROZEN_LEASE_MS));
    const client = startClient(socketA);
    await client.waitForRounds(10);
    a.child.kill("SIGSTOP");
    let b: Daemon | undefined;
    try {
      // Renewed moments ago by a process that exists: it looks live, so --force is needed.
      const refused = await runLsvd(["lease", "break", ...s.store]);
      assert.equal(refused.code, 1, refused.err);
      assert.equal(refused.out, "");
      assert.match(
        refused.err,
        new RegExp(
          `^lsvd: Cannot break the lease: it looks live: host \\S+ pid ${a.child.pid} \\(epoch \\d+\\) renewed it \\d+ s ago .*--force if you know it is dead\n$`,
        ),
      );
      const broke = await runLsvdOk(["lease", "break", "--force", ...s.store]);
      assert.match(broke.out, new RegExp(`^Broke the lease of host \\S+ pid ${a.child.pid} `));
      assert.match(
        (await runLsvdOk(["info", ...s.store])).out,
        /^Lease: +lapsed \(broken by 'lsvd lease break'\)/m,
      );
      assert.match((await runLsvdOk(["lease", "show", ...s.store])).out, /, broken by 'lsvd lease break'$/m);
      b = await Daemon.start(daemonArgs(s, socketB, []));
      assert.match(b.log, /Fenced the previous writer/);
    } finally {
      a.child.kill("SIGCONT");
    }
    const old = await a.finished(30_000);
    const lines = await client.finished();
    assert.notEqual(old.code, 0, old.log);
    assertFencedLine(old.log);
    assert((await checkAcknowledged(lines, socketB, t.dir)) >= 10);
    assert.equal((await b.stop()).code, 0);
  } finally {
    await t.remove();
  }
});
