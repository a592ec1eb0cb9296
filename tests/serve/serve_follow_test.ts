/**
 * @module
 * `lsvd serve --read-only --follow` through real daemons on the directory store: a writer serves a
 * client that writes and FLUSHes in rounds, its garbage collection running every second with no
 * retention; a follower daemon reads the same directory and is read with nbdcopy again and again.
 * Every image it serves is a state the writer's log had (a prefix of the client's writes, never a
 * mix), it includes every round acknowledged a poll earlier (it advances by itself, within a
 * second here), no read fails while the writer's GC deletes objects, and once the client stops the
 * follower serves exactly the writer's disk. The follower's pin is listed while it runs and gone
 * after it stops; its metrics say how far behind it is.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { Daemon, scratch, unixUri } from "../support/daemon.ts";
import { runClientOk, SYSTEM_PYTHON } from "../support/clients.ts";
import { forEachLine } from "../support/lines.ts";
import { runLsvdOk } from "../support/lsvd_cli.ts";
import { freePort } from "../support/ports.ts";
import { rgwEnv, startRgw } from "../support/rgw.ts";

const BLOCKS = 256;
const BLOCK = 4096;
const WRITES_PER_ROUND = 8;

/** Round r writes 8 blocks tagged (r, k), FLUSHes, and prints the round once acknowledged. */
const WRITER = `
import nbd, struct, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
r = 0
try:
    while True:
        r += 1
        for k in range(${WRITES_PER_ROUND}):
            b = (r * 37 + k * 13) % ${BLOCKS}
            h.pwrite(struct.pack(">II", r, k) * (${BLOCK} // 8), b * ${BLOCK})
        h.flush()
        print("flushed", r, flush=True)
except Exception as e:
    print("error", e, flush=True)
`;

function blockOf(round: number, k: number): number {
  return (round * 37 + k * 13) % BLOCKS;
}

/**
 * The number of the client's writes the image holds, when it is exactly the disk after some prefix
 * of them (each write replaces one whole block; writes are issued one after the other); throws
 * naming the first block that no prefix explains.
 */
function prefixLength(image: Uint8Array): number {
  const v = new DataView(image.buffer, image.byteOffset, image.length);
  const seen = Array.from({ length: BLOCKS }, (_, b) => [v.getUint32(b * BLOCK), v.getUint32(b * BLOCK + 4)]);
  const newest = Math.max(...seen.map(([r]) => r!));
  // Replay writes in order; count blocks whose model differs from the image; a zero count is a match.
  const model = Array.from({ length: BLOCKS }, () => "0,0");
  const want = seen.map(([r, k]) => `${r},${k}`);
  let differing = want.filter((w, b) => w !== model[b]).length;
  let best = differing === 0 ? 0 : -1;
  for (let r = 1; r <= newest; r++) {
    for (let k = 0; k < WRITES_PER_ROUND; k++) {
      const b = blockOf(r, k);
      const before = model[b] === want[b];
      model[b] = `${r},${k}`;
      const after = model[b] === want[b];
      differing += (before ? 1 : 0) - (after ? 1 : 0);
      if (differing === 0) best = (r - 1) * WRITES_PER_ROUND + k + 1;
    }
  }
  assert(best >= 0, `the follower's image is no state of the writer's log (newest round on it: ${newest})`);
  return best;
}

function startClient(socket: string) {
  const child = new Deno.Command(SYSTEM_PYTHON, {
    args: ["-c", WRITER, unixUri(socket)],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const lines: string[] = [];
  const reading = forEachLine(child.stdout, (l) => lines.push(l));
  const acknowledged = () => lines.filter((l) => l.startsWith("flushed")).length;
  return {
    acknowledged,
    async waitForRounds(n: number) {
      const deadline = Date.now() + 30_000;
      while (acknowledged() < n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      assert(acknowledged() >= n, `the client acknowledged only ${acknowledged()} rounds`);
    },
    async stop() {
      try {
        child.kill("SIGTERM");
      } catch {
        // it ended by itself (its server went away)
      }
      await child.status;
      await reading;
    },
  };
}

/**
 * The whole disk in ONE read request: a follower answers each request from one state of the log,
 * but it may advance between requests, so an image read in pieces can mix two states (no prefix).
 */
async function image(socket: string, file: string): Promise<Uint8Array> {
  await Deno.remove(file).catch(() => {});
  const whole = `--request-size=${BLOCKS * BLOCK}`;
  await runClientOk("nbdcopy", ["--connections=1", "--requests=1", whole, unixUri(socket), file]);
  return await Deno.readFile(file);
}

async function metric(port: number, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name} `));
  assert(line !== undefined, `no ${name} in /metrics`);
  return Number(line.split(" ")[1]);
}

/** Where a test's daemons keep the volume: store arguments, their environment, a scratch directory. */
interface Setup {
  store: string[];
  env?: Record<string, string>;
  dir: string;
}

/**
 * A writer under a FLUSHing client with GC every second and no retention, a follower polling every
 * `intervalMs`: every image read from the follower is a prefix of the client's writes holding every
 * round acknowledged `lagMs` earlier; at the end it serves exactly the writer's disk.
 */
async function followUnderLoad(
  s: Setup,
  { intervalMs, lagMs, gcDeletes }: { intervalMs: number; lagMs: number; gcDeletes: boolean },
) {
  const env = s.env === undefined ? {} : { env: s.env };
  const writerSocket = join(s.dir, "w.sock"), followerSocket = join(s.dir, "f.sock");
  const common = [...s.store, "--seal-delay-ms", "20", "--object-size", "64K"];
  const writer = await Daemon.start({
    ...env,
    args: [
      ...common,
      "--size",
      `${BLOCKS * BLOCK}`,
      "--socket",
      writerSocket,
      "--retention",
      "0s",
      "--gc-interval",
      "1s",
    ],
  });
  const client = startClient(writerSocket);
  let follower: Daemon | undefined;
  try {
    await client.waitForRounds(20);
    const metricsPort = freePort();
    follower = await Daemon.start({
      ...env,
      args: [
        ...common,
        "--read-only",
        "--follow",
        "--follow-interval",
        `${intervalMs}ms`,
        "--socket",
        followerSocket,
        "--metrics",
        `127.0.0.1:${metricsPort}`,
      ],
    });
    assert.match(
      follower.log,
      new RegExp(
        `Following the log from object \\d+, every ${intervalMs} ms \\(pin "follow-[0-9a-f]+"\\)\\.`,
      ),
    );
    const listed = (await runLsvdOk(["snapshot", "list", ...s.store], env)).out;
    assert.match(listed, /follow-[0-9a-f]+/, "the follower's pin is listed");
    let before = 0;
    for (let i = 0; i < 6; i++) {
      const acknowledged = client.acknowledged();
      await new Promise((r) => setTimeout(r, lagMs));
      const held = prefixLength(await image(followerSocket, join(s.dir, "f.bin")));
      assert(
        held >= acknowledged * WRITES_PER_ROUND,
        `the follower holds ${held} writes, fewer than the ${acknowledged} rounds acknowledged ${lagMs} ms earlier`,
      );
      assert(held >= before, "the follower went back");
      before = held;
    }
    assert(await metric(metricsPort, "lsvd_follow_behind_seconds") < 2);
    assert(await metric(metricsPort, "lsvd_follow_applied_sequence") > 0);
    await client.stop();
    await new Promise((r) => setTimeout(r, lagMs));
    const written = await image(writerSocket, join(s.dir, "w.bin"));
    const followed = await image(followerSocket, join(s.dir, "f.bin"));
    assert(written.every((b, i) => b === followed[i]), "the follower does not serve the writer's final disk");
    // GC runs throughout; it deletes once the follower's pin moved on (a rewrite every ten polls).
    if (gcDeletes) {
      assert.match(writer.log, /Garbage collection pass \d+: deleted [1-9]\d* objects/, writer.log);
    }
    assert.equal((await follower.stop()).code, 0, follower.log);
    assert(!/follow-/.test((await runLsvdOk(["snapshot", "list", ...s.store], env)).out), "the pin stayed");
  } finally {
    await client.stop().catch(() => {});
    await follower?.stop(); // a second stop of a stopped daemon just returns its status
    await writer.stop();
  }
}

Deno.test("lsvd serve --read-only --follow serves prefixes of a writer's log under load and GC on the directory store, catching up within a poll", async () => {
  const s = await scratch();
  try {
    await followUnderLoad({ store: ["--dir", s.store], dir: s.dir }, {
      intervalMs: 100,
      lagMs: 1000,
      gcDeletes: true,
    });
  } finally {
    await s.remove();
  }
});

Deno.test({
  name:
    "lsvd serve --read-only --follow on Ceph RGW at the default 1 s poll: prefixes only, every round acknowledged 2 s earlier",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const t = await scratch();
    const rgw = await startRgw();
    try {
      await followUnderLoad({
        store: ["--bucket", rgw.bucket, "--endpoint", rgw.endpoint, "--path-style", "--prefix", "follow"],
        env: rgwEnv(rgw),
        dir: t.dir,
      }, { intervalMs: 1000, lagMs: 2000, gcDeletes: false });
    } finally {
      await rgw.stop();
      await t.remove();
    }
  },
});

Deno.test("lsvd serve --follow is refused without --read-only, with --at, and with --mount, in one line", async () => {
  const s = await scratch();
  try {
    const alone = await Daemon.spawn({ args: ["--dir", s.store, "--follow", "--socket", s.socket] })
      .finished();
    assert.equal(alone.code, 1, alone.log);
    assert.match(
      alone.log,
      /^lsvd: Invalid options: --follow serves another daemon's writes and needs --read-only/m,
    );
    const at = await Daemon.spawn({
      args: ["--dir", s.store, "--read-only", "--follow", "--at", "3", "--socket", s.socket],
    }).finished();
    assert.equal(at.code, 1, at.log);
    assert.match(
      at.log,
      /^lsvd: Invalid options: --follow serves the newest state; not with --at or --snapshot/m,
    );
    const mount = await Daemon.spawn({
      args: [
        "--dir",
        s.store,
        "--read-only",
        "--follow",
        "--mount",
        join(s.dir, "mnt"),
        "--socket",
        s.socket,
      ],
    }).finished();
    assert.equal(mount.code, 1, mount.log);
    assert.match(
      mount.log,
      /^lsvd: Invalid options: a mounted filesystem cannot follow a disk that changes under it/m,
    );
  } finally {
    await s.remove();
  }
});

/** Every block holds a round at least as new as the newest acknowledged round that wrote it. */
function checkAcknowledged(disk: Uint8Array, acknowledged: number): void {
  const v = new DataView(disk.buffer, disk.byteOffset, disk.length);
  const floor = new Array<number>(BLOCKS).fill(0);
  for (let r = 1; r <= acknowledged; r++) {
    for (let k = 0; k < WRITES_PER_ROUND; k++) floor[blockOf(r, k)] = r;
  }
  for (let b = 0; b < BLOCKS; b++) {
    const round = v.getUint32(b * BLOCK);
    assert(round >= floor[b]!, `block ${b} holds round ${round}, older than acknowledged round ${floor[b]}`);
  }
}

/**
 * A writer under a FLUSHing client and a `--standby`; the writer is killed (kill -9) or frozen
 * (SIGSTOP, resumed once the standby serves: it must then exit fenced). The standby takes over warm
 * and answers a write within the lease + 2 s; every round the client saw acknowledged is on its disk.
 */
async function standbyFailover(s: Setup, how: "kill" | "stop"): Promise<void> {
  const env = s.env === undefined ? {} : { env: s.env };
  const leaseMs = 2000;
  const writerSocket = join(s.dir, `w-${how}.sock`), standbySocket = join(s.dir, `s-${how}.sock`);
  const common = [
    ...s.store,
    "--seal-delay-ms",
    "20",
    "--object-size",
    "64K",
    "--lease-duration-ms",
    `${leaseMs}`,
  ];
  const writer = await Daemon.start({
    ...env,
    args: [...common, "--size", `${BLOCKS * BLOCK}`, "--socket", writerSocket],
  });
  const client = startClient(writerSocket);
  const standby = Daemon.spawn({ ...env, args: [...common, "--standby", "--socket", standbySocket] });
  try {
    await standby.waitForLine(/Standing by: the volume is held by/, 60_000);
    await client.waitForRounds(client.acknowledged() + 100); // the standby follows meanwhile
    writer.child.kill(how === "kill" ? "SIGKILL" : "SIGSTOP");
    const stoppedMs = Date.now();
    await standby.waitForLine(/Device is now operational\./, 30_000);
    await runClientOk(SYSTEM_PYTHON, [
      "-c",
      `import nbd; h = nbd.NBD(); h.connect_uri("${unixUri(standbySocket)}"); h.pwrite(b"x" * 4096, ${
        (BLOCKS - 1) * BLOCK
      }); h.flush()`,
    ]);
    const failoverMs = Date.now() - stoppedMs;
    if (how === "stop") writer.child.kill("SIGCONT");
    const old = await writer.finished(30_000);
    if (how === "stop") {
      assert.equal(old.code, 1, `the frozen writer was not fenced once resumed\n${old.log}`);
    }
    await client.stop();
    const acknowledged = client.acknowledged();
    assert.match(standby.log, /Taking over warm: followed [1-9]\d* objects while standing by/, standby.log);
    assert(!/Loading the log again/.test(standby.log), standby.log);
    assert(
      failoverMs <= leaseMs + 2000,
      `failover took ${failoverMs} ms (lease ${leaseMs} ms)\n${standby.log}`,
    );
    checkAcknowledged(await image(standbySocket, join(s.dir, `s-${how}.bin`)), acknowledged);
    const pins = (await runLsvdOk(["snapshot", "list", ...s.store], env)).out;
    assert(!/follow-/.test(pins), "the standby's pin stayed");
    console.log(
      `warm failover after ${how === "kill" ? "kill -9" : "SIGSTOP"}: ${failoverMs} ms (lease ${leaseMs} ms)`,
    );
  } finally {
    try {
      writer.child.kill("SIGCONT"); // never leave a frozen daemon behind
    } catch {
      // it exited
    }
    await client.stop().catch(() => {});
    writer.kill();
    await standby.stop();
  }
}

Deno.test("lsvd serve --standby follows the log while it waits: after kill -9 or SIGSTOP of the writer it takes over warm within the lease + 2 s on the directory store, losing no acknowledged FLUSH", async () => {
  const s = await scratch();
  try {
    await standbyFailover({ store: ["--dir", s.store], dir: s.dir }, "kill");
    await standbyFailover({ store: ["--dir", join(s.dir, "store2")], dir: s.dir }, "stop");
  } finally {
    await s.remove();
  }
});

Deno.test({
  name:
    "lsvd serve --standby on Ceph RGW: after kill -9 or SIGSTOP of the writer it takes over warm within the lease + 2 s, losing no acknowledged FLUSH",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const t = await scratch();
    const rgw = await startRgw();
    try {
      const on = (prefix: string) => ({
        store: ["--bucket", rgw.bucket, "--endpoint", rgw.endpoint, "--path-style", "--prefix", prefix],
        env: rgwEnv(rgw),
        dir: t.dir,
      });
      await standbyFailover(on("standby-kill"), "kill");
      await standbyFailover(on("standby-stop"), "stop");
    } finally {
      await rgw.stop();
      await t.remove();
    }
  },
});
