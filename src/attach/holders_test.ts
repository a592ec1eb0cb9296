/**
 * @module
 * findHolders() on this machine's loop devices standing in for nbdfuse's file and /dev/nbdN: an
 * attached loop device, its mount (here and in another mount namespace), a process with the device
 * or the file open, and lsvd's own busy mount; and the mountinfo parser.
 */

import assert from "node:assert/strict";
import { canUseLoopDevices, run } from "../../tests/support/loop_devices.ts";
import { findHolders, parseMountinfo } from "./holders.ts";

const canLoop = canUseLoopDevices(["losetup", "mkfs.ext4", "mount", "unshare"]);

/** Ends a holding() script: say so, then keep what the shell opened until killed. */
const HOLD = "echo ready; exec sleep 60";

/** A shell running script (which ends with HOLD), as one process whose pid is returned. */
async function holding(script: string): Promise<{ pid: number; stop(): Promise<void> }> {
  const child = new Deno.Command("sh", {
    args: ["-c", script],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.getReader();
  const { value } = await reader.read();
  assert.match(new TextDecoder().decode(value), /ready/);
  reader.releaseLock();
  return {
    pid: child.pid,
    async stop() {
      child.kill("SIGKILL");
      await child.status;
      await child.stdout.cancel().catch(() => {});
    },
  };
}

Deno.test({
  name: "findHolders() names a loop device backed by the file, its mounts and the processes using it",
  ignore: !canLoop,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "lsvd-holders-" });
    const file = `${dir}/nbd`, mnt = `${dir}/mnt`, other = `${dir}/other`;
    await Deno.mkdir(mnt);
    await Deno.mkdir(other);
    await Deno.writeFile(file, new Uint8Array(0));
    await Deno.truncate(file, 32 * 2 ** 20);
    assert.deepEqual(await findHolders(file), []);
    const loop = await run("losetup", ["-f", "--show", file]);
    try {
      assert.deepEqual(await findHolders(file), [
        { description: `${loop} (attached to ${file})`, release: [`losetup -d ${loop}`], syncPaths: [] },
      ]);
      await run("mkfs.ext4", ["-q", loop]);
      await run("mount", [loop, mnt]);
      assert.deepEqual(await findHolders(file), [
        {
          description: `${loop} (mounted on ${mnt})`,
          release: [`umount ${mnt}`, `losetup -d ${loop}`],
          syncPaths: [mnt],
        },
      ]);
      // The device itself as the target (as /dev/nbdN is with --device), with lsvd's own mount.
      assert.deepEqual(await findHolders(loop, { ownMounts: [mnt] }), [
        {
          description: `${loop} (mounted on ${mnt}, busy)`,
          release: [`stop what uses ${mnt} ('fuser -vm ${mnt}' lists it)`],
          syncPaths: [mnt],
        },
      ]);
      await run("umount", [mnt]);

      const opener = await holding(`exec 3<>${loop}; ${HOLD}`);
      try {
        const [holder] = await findHolders(file);
        assert.equal(holder?.description, `${loop} (open in pid ${opener.pid} (sleep))`);
        assert.deepEqual(holder?.release, [`stop pid ${opener.pid}`, `losetup -d ${loop}`]);
        assert.deepEqual(await findHolders(loop, { ignorePids: [Deno.pid, opener.pid] }), []);
      } finally {
        await opener.stop();
      }

      // A mount only another mount namespace sees (a container's) holds the volume too.
      const namespaced = await holding(
        `exec unshare -m --propagation private sh -c 'mount ${loop} ${other}; ${HOLD}'`,
      );
      try {
        assert.deepEqual(await findHolders(file), [{
          description:
            `${loop} (mounted on ${other} in the mount namespace of pid ${namespaced.pid} (sleep))`,
          release: [
            `umount ${other} in the mount namespace of pid ${namespaced.pid} (sleep)`,
            `losetup -d ${loop}`,
          ],
          syncPaths: [`/proc/${namespaced.pid}/root${other}`],
        }]);
      } finally {
        await namespaced.stop();
      }
    } finally {
      await new Deno.Command("umount", { args: ["-l", mnt], stderr: "null" }).output();
      await run("losetup", ["-d", loop]);
    }
    // umount -l with a file still open, then losetup -d: the loop device lives on, unseen.
    const lazy = `${dir}/lazy.img`;
    await Deno.writeFile(lazy, new Uint8Array(0));
    await Deno.truncate(lazy, 32 * 2 ** 20);
    const lazyLoop = await run("losetup", ["-f", "--show", lazy]);
    await run("mkfs.ext4", ["-q", lazyLoop]);
    await run("mount", [lazyLoop, mnt]);
    const user = await holding(`exec 3>${mnt}/open.txt; ${HOLD}`);
    try {
      await run("umount", ["-l", mnt]);
      await run("losetup", ["-d", lazyLoop]);
      assert.deepEqual(await findHolders(lazy), [{
        description: `${lazyLoop} (attached to ${lazy}, detached but still in use: a lazily unmounted ` +
          "filesystem with open files?)",
        release: ["close what still uses it"],
        syncPaths: [],
      }]);
    } finally {
      await user.stop();
    }
    for (let i = 0; i < 50 && (await findHolders(lazy)).length > 0; i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    assert.deepEqual(await findHolders(lazy), [], "the loop device goes once the file is closed");

    const reader = await holding(`exec 3<${file}; ${HOLD}`);
    try {
      assert.deepEqual(await findHolders(file), [
        {
          description: `pid ${reader.pid} (sleep) has ${file} open`,
          release: [`stop pid ${reader.pid}`],
          syncPaths: [],
        },
      ]);
    } finally {
      await reader.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("parseMountinfo() reads the device numbers and unescapes mount points", () => {
  const text = "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw\n" +
    "37 35 7:3 / / rw - ext4 /dev/loop3 rw\n";
  assert.deepEqual(parseMountinfo(text), [
    { numbers: "98:0", mountPoint: "/mnt/with space" },
    { numbers: "7:3", mountPoint: "/" },
  ]);
});
