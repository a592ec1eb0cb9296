/**
 * @module
 * Stopping lsvd while its volume is still in use, through the real daemon on the README's --fuse
 * path (nbdfuse, `losetup -f --show --direct-io=on`, mkfs.ext4, mount):
 * - Ctrl-C (SIGINT to the daemon's whole process group, as a terminal sends it) while the loop
 *   device is mounted: lsvd keeps serving and says in one line what holds the volume and what
 *   releases it; nbdfuse keeps running, so files written after the signal are kept; after umount
 *   it names the loop device, and after `losetup -d` it stops by itself with exit 0; a restart
 *   finds a clean filesystem (e2fsck -fn) holding every file;
 * - a second SIGTERM forces the stop: the filesystem is synced first, the exit status is 1 and
 *   the last line names what still used the volume; what was synced is there after a restart.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { Daemon, scratch } from "../support/daemon.ts";
import { runClient, runClientOk, seededBytes } from "../support/clients.ts";

interface FuseVolume {
  daemon: Daemon;
  loop: string;
  fs: string;
}

/** Serves the volume through nbdfuse and puts it on a loop device as the README does, mounted at fs. */
async function startMounted(
  t: { dir: string; store: string; socket: string },
  p: { extra: string[]; format: boolean },
): Promise<FuseVolume> {
  const fuse = join(t.dir, "fuse"), fs = join(t.dir, "fs");
  await Deno.mkdir(fuse, { recursive: true });
  await Deno.mkdir(fs, { recursive: true });
  const daemon = await Daemon.start({
    args: ["--dir", t.store, "--socket", t.socket, "--fuse", fuse, ...p.extra],
    ownProcessGroup: true,
  });
  const loop = (await runClientOk("losetup", ["-f", "--show", "--direct-io=on", join(fuse, "nbd")])).stdout
    .trim();
  if (p.format) await runClientOk("mkfs.ext4", ["-q", loop]);
  await runClientOk("mount", [loop, fs]);
  return { daemon, loop, fs };
}

/** Leaves nothing behind whatever happened: unmount, detach the loop device, stop lsvd. */
async function tearDown(v: FuseVolume | undefined): Promise<void> {
  if (v === undefined) return;
  await runClient("umount", [v.fs]);
  await runClient("losetup", ["-d", v.loop]);
  const stopped = await v.daemon.stop();
  assert.equal(stopped.code, 0, stopped.log);
}

function exitedWithin(d: Daemon, ms: number): Promise<boolean> {
  return Promise.race([
    d.exited.then(() => true),
    new Promise<boolean>((r) => setTimeout(() => r(false), ms)),
  ]);
}

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");

Deno.test({
  name:
    "lsvd serve --fuse: a stop while the loop device is mounted waits for umount and losetup -d, then exits 0",
  sanitizeResources: false,
  async fn() {
    const t = await scratch();
    let v: FuseVolume | undefined;
    try {
      v = await startMounted(t, { extra: ["--size", "256M"], format: true });
      const before = seededBytes(3_000_000, 1), after = seededBytes(2_000_000, 2);
      await Deno.writeFile(join(v.fs, "before.bin"), before); // not synced: only the page cache has it

      v.daemon.signalGroup("SIGINT"); // Ctrl-C: lsvd and nbdfuse alike would get it from a terminal
      const loop = escape(v.loop), fs = escape(v.fs);
      await v.daemon.waitForLine(
        new RegExp(
          `^lsvd: Cannot stop yet: ${loop} \\(mounted on ${fs}\\) still uses the volume; ` +
            `release it \\(umount ${fs}; losetup -d ${loop}\\) and lsvd stops by itself, or send the ` +
            "signal again to stop anyway \\(writes the filesystem has not synced will be lost\\)\\.$",
        ),
        10_000,
      );
      assert.equal(await exitedWithin(v.daemon, 2000), false, "lsvd stopped under a mounted filesystem");
      await Deno.writeFile(join(v.fs, "after.bin"), after); // the volume still works after the signal
      await runClientOk("sync", ["-f", join(v.fs, "after.bin")]);

      await runClientOk("umount", [v.fs]);
      await v.daemon.waitForLine(
        new RegExp(
          `^lsvd: Still waiting: ${loop} \\(attached to .*/fuse/nbd\\) still uses the volume; ` +
            `release it \\(losetup -d ${loop}\\)\\.$`,
        ),
        10_000,
      );
      assert.equal(await exitedWithin(v.daemon, 1500), false, "lsvd stopped under an attached loop device");
      await runClientOk("losetup", ["-d", v.loop]);
      const done = await v.daemon.finished(60_000);
      assert.equal(done.code, 0, done.log);
      assert.match(done.log, /^lsvd: The volume is no longer in use; stopping\.$/m);
      assert.match(done.log, /^lsvd: Device has shut down\.$/m);
      assert.doesNotMatch(done.log, /Received SIGINT again/);
      v = undefined;

      // Everything is there after a restart, on a clean filesystem.
      v = await startMounted(t, { extra: [], format: false });
      await runClientOk("umount", [v.fs]);
      const fsck = await runClient("e2fsck", ["-fn", v.loop]);
      assert.equal(fsck.code, 0, fsck.stdout + fsck.stderr);
      await runClientOk("mount", [v.loop, v.fs]);
      assert.deepEqual(await Deno.readFile(join(v.fs, "before.bin")), before);
      assert.deepEqual(await Deno.readFile(join(v.fs, "after.bin")), after);
    } finally {
      await tearDown(v);
      await t.remove();
    }
  },
});

Deno.test({
  name: "lsvd serve --fuse: a second SIGTERM while mounted syncs the filesystem, stops and exits 1",
  sanitizeResources: false,
  async fn() {
    const t = await scratch();
    let v: FuseVolume | undefined;
    try {
      v = await startMounted(t, { extra: ["--size", "256M"], format: true });
      const data = seededBytes(4_000_000, 3);
      await Deno.writeFile(join(v.fs, "data.bin"), data); // not synced: the forced stop syncs it
      v.daemon.child.kill("SIGTERM");
      await v.daemon.waitForLine(/^lsvd: Cannot stop yet: /, 10_000);
      v.daemon.child.kill("SIGTERM");
      const done = await v.daemon.finished(60_000);
      assert.equal(done.code, 1, done.log);
      assert.match(done.log, /^lsvd: Received SIGTERM again; stopping anyway\.$/m);
      assert.match(done.log, new RegExp(`^lsvd: Syncing ${escape(v.fs)} before stopping\\.$`, "m"));
      assert.match(
        done.log,
        new RegExp(
          `^lsvd: Device has shut down while ${escape(v.loop)} \\(mounted on ${escape(v.fs)}\\) still used ` +
            "it \\(a second signal forced the stop\\): writes made there since its last sync are lost\\.$",
          "m",
        ),
      );
      // The loop device now has no volume behind it; take it down as an operator would.
      await runClient("umount", [v.fs]);
      await runClient("losetup", ["-d", v.loop]);
      v = undefined;

      v = await startMounted(t, { extra: [], format: false });
      assert.deepEqual(await Deno.readFile(join(v.fs, "data.bin")), data);
    } finally {
      await tearDown(v);
      await t.remove();
    }
  },
});

Deno.test({
  name:
    "lsvd serve --fuse --shutdown-timeout: half the deadline waits for the volume, then the stop is forced",
  sanitizeResources: false,
  async fn() {
    const t = await scratch();
    let v: FuseVolume | undefined;
    try {
      v = await startMounted(t, { extra: ["--size", "64M", "--shutdown-timeout", "6"], format: true });
      const startedMs = Date.now();
      v.daemon.child.kill("SIGTERM");
      await v.daemon.waitForLine(
        /^lsvd: Cannot stop yet: .*\(--shutdown-timeout stops anyway in 3 s\)\.$/,
        10_000,
      );
      const done = await v.daemon.finished(60_000);
      assert.equal(done.code, 1, done.log);
      assert(Date.now() - startedMs >= 3000, "forced before half the deadline");
      assert.match(
        done.log,
        new RegExp(
          `^lsvd: Shutdown deadline: ${
            escape(v.loop)
          } \\(mounted on .*\\) still uses the volume after 3 s; stopping anyway\\.$`,
          "m",
        ),
      );
      assert.match(done.log, /\(the shutdown deadline forced the stop\)/);
      await runClient("umount", [v.fs]);
      await runClient("losetup", ["-d", v.loop]);
      v = undefined;
    } finally {
      await tearDown(v);
      await t.remove();
    }
  },
});
