/**
 * @module
 * One writer per volume with real daemons on the directory store: a second start is refused in one
 * line naming the holder; `--takeover` of a daemon serving a client that FLUSHes all the time makes
 * the old daemon exit non-zero naming the new holder, its client gets errors, and every FLUSH the
 * client saw acknowledged (from either daemon's time) is in the volume afterwards.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { Daemon, scratch, unixUri } from "../support/daemon.ts";
import { runClientOk, SYSTEM_PYTHON } from "../support/clients.ts";

const BLOCKS = 256;
const BLOCK = 4096;

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

function writtenBy(round: number): number[] {
  return Array.from({ length: 8 }, (_, k) => (round * 37 + k * 13) % BLOCKS);
}

Deno.test("serve: a second daemon is refused; --takeover fences the first without losing an acknowledged flush", async () => {
  const t = await scratch();
  const socketB = join(t.dir, "b.sock");
  try {
    const common = [
      "--dir",
      t.store,
      "--seal-delay-ms",
      "20",
      "--object-size",
      "64K",
      "--lease-duration-ms",
      "1500",
    ];
    const a = await Daemon.start({ args: [...common, "--socket", t.socket, "--size", `${BLOCKS * BLOCK}`] });
    const refused = await Daemon.spawn({ args: [...common, "--socket", socketB] }).finished();
    assert.equal(refused.code, 1);
    const line = refused.log.split("\n").filter((l) => l.startsWith("lsvd: Cannot"));
    assert.equal(line.length, 1, refused.log);
    assert.match(line[0]!, new RegExp(`it is held by host \\S+ pid ${a.child.pid} \\(epoch 1\\) since `));

    const writer = new Deno.Command(SYSTEM_PYTHON, {
      args: ["-c", WRITER, unixUri(t.socket)],
      stdout: "piped",
      stderr: "null",
    }).spawn();
    const lines: string[] = [];
    const reading = (async () => {
      const dec = new TextDecoder();
      let partial = "";
      for await (const chunk of writer.stdout) {
        const parts = (partial + dec.decode(chunk, { stream: true })).split("\n");
        partial = parts.pop()!;
        lines.push(...parts);
      }
    })();
    const deadline = Date.now() + 30_000;
    while (lines.length < 20 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    const b = await Daemon.start({ args: [...common, "--socket", socketB, "--takeover"] });
    const old = await a.finished(30_000);
    await writer.status;
    await reading;
    assert.notEqual(old.code, 0, old.log);
    assert.match(
      old.log,
      /lsvd: Cannot keep writing the volume: the volume was taken over by host \S+ pid \d+ \(epoch 2\)/,
    );
    assert.match(lines.at(-1) ?? "", /^error/, "the old daemon's client gets an error");
    const flushed = lines.filter((l) => l.startsWith("flushed")).map((l) => Number(l.split(" ")[1]));
    assert(flushed.length >= 20, `only ${flushed.length} rounds flushed`);

    const floor = new Array(BLOCKS).fill(0);
    for (const r of flushed) for (const blk of writtenBy(r)) floor[blk] = Math.max(floor[blk], r);
    const out = join(t.dir, "disk.bin");
    await runClientOk("nbdcopy", [unixUri(socketB), out]);
    assert.equal((await b.stop()).code, 0);
    const v = new DataView((await Deno.readFile(out)).buffer);
    for (let blk = 0; blk < BLOCKS; blk++) {
      const round = v.getUint32(blk * BLOCK);
      assert(
        round >= floor[blk],
        `block ${blk} holds round ${round}, older than acknowledged round ${floor[blk]}`,
      );
    }
  } finally {
    await t.remove();
  }
});
