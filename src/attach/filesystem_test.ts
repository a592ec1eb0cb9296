/**
 * @module
 * The filesystem steps on a loop device (this machine has loop but no nbd): mkfs on an empty
 * device, mount, remount without formatting, online grow, busy unmount falling back to lazy,
 * and the superblock and mountinfo parsers.
 */

import assert from "node:assert/strict";
import { canUseLoopDevices, run } from "../../tests/support/loop_devices.ts";
import { findMounts, mountDevice, parseExtSuperblock, probeDevice, unmountDevice } from "./filesystem.ts";

const canLoop = canUseLoopDevices(["losetup", "mkfs.ext4", "mount", "resize2fs"]);

async function withLoopDevice(
  sizeBytes: number,
  body: (device: string, image: string, dir: string) => Promise<void>,
) {
  const dir = await Deno.makeTempDir({ prefix: "lsvd-fs-" });
  const image = `${dir}/disk.img`;
  await Deno.writeFile(image, new Uint8Array(0));
  await Deno.truncate(image, sizeBytes);
  const device = await run("losetup", ["-f", "--show", image]);
  try {
    await body(device, image, dir);
  } finally {
    await new Deno.Command("umount", { args: ["-l", `${dir}/mnt`], stderr: "null" }).output();
    await run("losetup", ["-d", device]);
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test({
  name: "mountDevice() formats an empty device, mounts it, and mounts it again without formatting",
  ignore: !canLoop,
  async fn() {
    await withLoopDevice(64 * 2 ** 20, async (device, _image, dir) => {
      const lines: string[] = [];
      const log = (line: string) => lines.push(line);
      const mountPoint = `${dir}/mnt`;
      assert.deepEqual(await probeDevice(device), { kind: "empty" });
      await mountDevice({ devicePath: device, mountPoint, log });
      assert.deepEqual(lines, [
        `${device} holds no filesystem; creating an ext4 filesystem.`,
        `Mounting ${device} on ${mountPoint}.`,
      ]);
      assert.deepEqual(findMounts(device), [{ mountPoint, fsType: "ext4" }]);
      await Deno.writeTextFile(`${mountPoint}/hello.txt`, "hello");
      lines.length = 0;
      await unmountDevice(device, { log });
      assert.deepEqual(lines, [`${device} is mounted on ${mountPoint}; unmounting.`]);
      assert.deepEqual(findMounts(device), []);
      assert.equal((await probeDevice(device)).kind, "ext");
      lines.length = 0;
      await mountDevice({ devicePath: device, mountPoint, log });
      assert.deepEqual(lines, [`Mounting ${device} on ${mountPoint}.`]);
      assert.equal(await Deno.readTextFile(`${mountPoint}/hello.txt`), "hello");
      await unmountDevice(device, { log });
    });
  },
});

Deno.test({
  name: "mountDevice() grows the filesystem when the device grew",
  ignore: !canLoop,
  async fn() {
    await withLoopDevice(64 * 2 ** 20, async (device, image, dir) => {
      const lines: string[] = [];
      const mountPoint = `${dir}/mnt`;
      await mountDevice({ devicePath: device, mountPoint, log: () => {} });
      await unmountDevice(device, { log: () => {} });
      const before = await probeDevice(device);
      assert.equal(before.kind, "ext");
      await Deno.truncate(image, 128 * 2 ** 20);
      await run("losetup", ["-c", device]);
      await mountDevice({ devicePath: device, mountPoint, log: (line) => lines.push(line) });
      assert.ok(
        lines.some((line) => line.startsWith(`Growing the filesystem on ${device}`)),
        lines.join("\n"),
      );
      const df = await run("df", ["-B1", "--output=size", mountPoint]);
      const sizeBytes = Number(df.split("\n").pop());
      assert.ok(sizeBytes > 100 * 2 ** 20, `filesystem is ${sizeBytes} bytes after growing`);
      await unmountDevice(device, { log: () => {} });
      const after = await probeDevice(device);
      assert.ok(after.kind === "ext" && before.kind === "ext" && after.sizeBytes > before.sizeBytes);
    });
  },
});

Deno.test({
  name: "unmountDevice() retries a busy mount, then detaches it lazily",
  ignore: !canLoop,
  async fn() {
    await withLoopDevice(64 * 2 ** 20, async (device, _image, dir) => {
      const mountPoint = `${dir}/mnt`;
      await mountDevice({ devicePath: device, mountPoint, log: () => {} });
      const holder = new Deno.Command("sleep", { args: ["30"], cwd: mountPoint }).spawn();
      try {
        const lines: string[] = [];
        await unmountDevice(device, { log: (line) => lines.push(line), attempts: 2, delayMs: 10 });
        assert.equal(lines[0], `${device} is mounted on ${mountPoint}; unmounting.`);
        assert.match(lines[1]!, /^Cannot unmount .*busy/);
        assert.equal(lines[2], `${mountPoint} is still busy; detaching it lazily.`);
        assert.deepEqual(findMounts(device), []);
      } finally {
        holder.kill("SIGKILL");
        await holder.status;
      }
    });
  },
});

Deno.test("mountDevice() failing mount is one clear line", {
  ignore: !canLoop,
}, async () => {
  await withLoopDevice(64 * 2 ** 20, async (device, _image, dir) => {
    await Deno.writeTextFile(`${dir}/mnt`, "a file, not a directory");
    await assert.rejects(
      mountDevice({ devicePath: device, mountPoint: `${dir}/mnt`, log: () => {} }),
      (error: Error) =>
        error.message.startsWith(`Cannot mount ${device} on ${dir}/mnt: `) && !error.message.includes("\n"),
    );
    await Deno.remove(`${dir}/mnt`);
  });
});

Deno.test("parseExtSuperblock() reads the 32- and 64-bit block counts", () => {
  const head = new Uint8Array(2048);
  const sb = new DataView(head.buffer, 1024);
  assert.equal(parseExtSuperblock(head), undefined);
  sb.setUint16(56, 0xef53, true);
  sb.setUint32(4, 1000, true);
  sb.setUint32(24, 2, true); // 4 KiB blocks
  assert.deepEqual(parseExtSuperblock(head), { sizeBytes: 1000 * 4096 });
  sb.setUint32(0x60, 0x80, true);
  sb.setUint32(0x150, 1, true);
  assert.deepEqual(parseExtSuperblock(head), { sizeBytes: (2 ** 32 + 1000) * 4096 });
});

Deno.test("findMounts() matches by path, decodes escapes, lists innermost first", () => {
  const mountinfo = [
    "22 1 0:21 / /proc rw - proc proc rw",
    "40 1 43:0 / /data rw,relatime - ext4 /dev/nbd0 rw",
    "41 40 43:0 /sub /my\\040dir rw - ext4 /dev/nbd0 rw",
  ].join("\n");
  assert.deepEqual(findMounts("/dev/null", mountinfo), []);
  const byPath = findMounts("/dev/null", mountinfo.replaceAll("/dev/nbd0", "/dev/null"));
  assert.deepEqual(byPath, [{ mountPoint: "/my dir", fsType: "ext4" }, {
    mountPoint: "/data",
    fsType: "ext4",
  }]);
});

Deno.test({
  name: "mountDevice() without mkfs.ext4 on PATH is one clear error",
  ignore: !canLoop,
  async fn() {
    await withLoopDevice(16 * 2 ** 20, async (device, _image, dir) => {
      const path = Deno.env.get("PATH") ?? "";
      Deno.env.set("PATH", dir);
      try {
        await assert.rejects(mountDevice({ devicePath: device, mountPoint: `${dir}/mnt`, log: () => {} }), {
          message: `Cannot format ${device}: mkfs.ext4 is not installed`,
        });
      } finally {
        Deno.env.set("PATH", path);
      }
    });
  },
});

Deno.test({
  name: "mountDevice() read-only mounts ro and refuses to format an empty device",
  ignore: !canLoop,
  async fn() {
    await withLoopDevice(32 * 2 ** 20, async (device, _image, dir) => {
      const mountPoint = `${dir}/mnt`;
      await assert.rejects(mountDevice({ devicePath: device, mountPoint, log: () => {}, readOnly: true }), {
        message: `Cannot mount ${device} read-only: it holds no filesystem`,
      });
      await mountDevice({ devicePath: device, mountPoint, log: () => {} });
      await unmountDevice(device, { log: () => {} });
      await mountDevice({ devicePath: device, mountPoint, log: () => {}, readOnly: true });
      await assert.rejects(Deno.writeTextFile(`${mountPoint}/x`, "x"), /Read-only file system/);
      await unmountDevice(device, { log: () => {} });
    });
  },
});

Deno.test({
  name:
    "mountDevice() read-only mounts an ext4 whose journal needs recovery (ro,noload) on a read-only device",
  ignore: !canLoop,
  async fn() {
    await withLoopDevice(64 * 2 ** 20, async (device, image, dir) => {
      const mountPoint = `${dir}/mnt`;
      await mountDevice({ devicePath: device, mountPoint, log: () => {} });
      await Deno.writeTextFile(`${mountPoint}/kept.txt`, "synced before the copy\n");
      await run("sync", []);
      // A copy of a live filesystem, like a snapshot of a mounted volume: its journal needs recovery.
      const copy = `${dir}/snapshot.img`;
      await Deno.copyFile(image, copy);
      await unmountDevice(device, { log: () => {} });
      const dumpe2fs = await run("dumpe2fs", ["-h", copy]);
      assert.match(dumpe2fs, /needs_recovery/, "the copy should carry a journal that needs recovery");
      const readOnlyDevice = await run("losetup", ["-f", "--show", "-r", copy]);
      const snapshotMount = `${dir}/snapshot`;
      try {
        await mountDevice({
          devicePath: readOnlyDevice,
          mountPoint: snapshotMount,
          log: () => {},
          readOnly: true,
        });
        assert.equal(await Deno.readTextFile(`${snapshotMount}/kept.txt`), "synced before the copy\n");
        const options = findMounts(readOnlyDevice)[0];
        assert.ok(options, "the snapshot is mounted");
      } finally {
        await unmountDevice(readOnlyDevice, { log: () => {} });
        await run("losetup", ["-d", readOnlyDevice]);
      }
    });
  },
});
