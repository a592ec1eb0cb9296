/**
 * @module
 * A real kernel filesystem on an lsvd volume, on a machine without the nbd module:
 * `lsvd serve --fuse` (nbdfuse) → loop device → mkfs.ext4 → mount → files → umount → SIGTERM →
 * restart → e2fsck -fn clean → mount → files intact.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { Daemon, scratch } from "../support/daemon.ts";
import { runClient, runClientOk, seededBytes, sha256Hex } from "../support/clients.ts";

async function loopAttach(file: string): Promise<string> {
  const r = await runClientOk("losetup", ["-f", "--show", "--direct-io=on", "--sector-size", "4096", file]);
  return r.stdout.trim();
}

async function withFuseDaemon<T>(
  store: string,
  mnt: string,
  extra: string[],
  fn: (file: string) => Promise<T>,
) {
  const d = await Daemon.start({
    args: ["--dir", store, "--socket", `${mnt}.sock`, "--fuse", mnt, ...extra],
  });
  let result: T;
  try {
    const line = await d.waitForLine(/The volume is the file /, 1000);
    result = await fn(line.replace(/^.*The volume is the file (.*)\.$/, "$1"));
  } finally {
    const stopped = await d.stop();
    assert.equal(stopped.code, 0, stopped.log);
  }
  return result;
}

Deno.test({
  name: "ext4 on lsvd through nbdfuse and a loop device survives a restart and passes e2fsck",
  sanitizeResources: false,
  async fn() {
    const t = await scratch();
    const mnt = join(t.dir, "fuse"), fsdir = join(t.dir, "fs");
    await Deno.mkdir(mnt);
    await Deno.mkdir(fsdir);
    const big = seededBytes(8 * 1024 * 1024, 9);
    try {
      await withFuseDaemon(t.store, mnt, ["--size", "256M"], async (file) => {
        const loop = await loopAttach(file);
        try {
          await runClientOk("mkfs.ext4", [
            "-q",
            "-F",
            "-E",
            "lazy_itable_init=1,lazy_journal_init=1,nodiscard",
            loop,
          ]);
          await runClientOk("mount", [loop, fsdir]);
          await Deno.writeFile(join(fsdir, "big.bin"), big);
          await Deno.mkdir(join(fsdir, "dir"));
          for (let i = 0; i < 50; i++) {
            await Deno.writeTextFile(join(fsdir, "dir", `f${i}.txt`), `file ${i}\n`.repeat(i + 1));
          }
          await runClientOk("umount", [fsdir]);
        } finally {
          await runClient("umount", [fsdir]);
          await runClient("losetup", ["-d", loop]);
        }
      });
      await withFuseDaemon(t.store, mnt, [], async (file) => {
        const loop = await loopAttach(file);
        try {
          const fsck = await runClient("e2fsck", ["-fn", loop]);
          assert.equal(fsck.code, 0, fsck.stdout + fsck.stderr);
          await runClientOk("mount", [loop, fsdir]);
          assert.equal(await sha256Hex(await Deno.readFile(join(fsdir, "big.bin"))), await sha256Hex(big));
          for (let i = 0; i < 50; i++) {
            assert.equal(
              await Deno.readTextFile(join(fsdir, "dir", `f${i}.txt`)),
              `file ${i}\n`.repeat(i + 1),
            );
          }
          await runClientOk("umount", [fsdir]);
        } finally {
          await runClient("umount", [fsdir]);
          await runClient("losetup", ["-d", loop]);
        }
      });
    } finally {
      await t.remove();
    }
  },
});
