/**
 * @module
 * `kill -9` the daemon in the middle of writes: after a restart every write acknowledged before the
 * last completed FLUSH reads back (or a later write to the same block), nothing else.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { Daemon, scratch, unixUri } from "../support/daemon.ts";
import { runClientOk, SYSTEM_PYTHON } from "../support/clients.ts";

const BLOCKS = 512;
const BLOCK = 4096;

/** Round r writes 16 blocks, each filled with (r, block) as two u32s, then flushes and says so. */
const WRITER = `
import nbd, struct, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
r = 0
while True:
    r += 1
    for k in range(16):
        b = (r * 37 + k * 13) % ${BLOCKS}
        h.pwrite(struct.pack(">II", r, b) * (${BLOCK} // 8), b * ${BLOCK})
    h.flush()
    print("flushed", r, flush=True)
`;
import { forEachLine } from "../support/lines.ts";

function writtenBy(round: number): number[] {
  return Array.from({ length: 16 }, (_, k) => (round * 37 + k * 13) % BLOCKS);
}

Deno.test("after kill -9 during writes, every write flushed before the crash reads back", async () => {
  const t = await scratch();
  try {
    const args = ["--dir", t.store, "--socket", t.socket, "--seal-delay-ms", "20", "--object-size", "256K"];
    const d = await Daemon.start({ args: [...args, "--size", `${BLOCKS * BLOCK}`] });
    const writer = new Deno.Command(SYSTEM_PYTHON, {
      args: ["-c", WRITER, unixUri(t.socket)],
      stdout: "piped",
      stderr: "null",
    }).spawn();
    const lines: string[] = [];
    const reading = forEachLine(writer.stdout, (l) => lines.push(l));
    const deadline = Date.now() + 30_000;
    while (lines.length < 40 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    d.kill();
    await d.exited;
    await writer.status;
    await reading;
    const flushed = Number(lines.at(-1)?.split(" ")[1] ?? 0);
    assert(flushed >= 40, `only ${flushed} rounds flushed before the crash`);

    // Per block: the newest flushed round that wrote it; later rounds may also have landed.
    const floor = new Array(BLOCKS).fill(0);
    for (let r = 1; r <= flushed; r++) for (const b of writtenBy(r)) floor[b] = r;

    const again = await Daemon.start({ args });
    const out = join(t.dir, "disk.bin");
    await runClientOk("nbdcopy", [unixUri(t.socket), out]);
    assert.equal((await again.stop()).code, 0);
    const disk = await Deno.readFile(out);
    const v = new DataView(disk.buffer);
    for (let b = 0; b < BLOCKS; b++) {
      const round = v.getUint32(b * BLOCK), at = v.getUint32(b * BLOCK + 4);
      for (let i = 0; i < BLOCK; i += 8) {
        assert(
          v.getUint32(b * BLOCK + i) === round && v.getUint32(b * BLOCK + i + 4) === at,
          `block ${b} is torn`,
        );
      }
      if (round === 0) {
        assert.equal(floor[b], 0, `block ${b} lost round ${floor[b]}`);
        continue;
      }
      assert.equal(at, b, `block ${b} holds data of block ${at}`);
      assert(round >= floor[b], `block ${b} holds round ${round}, older than flushed round ${floor[b]}`);
      assert(writtenBy(round).includes(b), `block ${b} holds round ${round}, which never wrote it`);
    }
  } finally {
    await t.remove();
  }
});
