/**
 * @module
 * 512-byte sectors through the real daemon: the README's `--fuse` recipe run exactly as printed
 * (nbdfuse, a DEFAULT losetup with 512-byte sectors, mkfs.ext4, mount), files written and checked
 * by e2fsck after a restart; and qemu-io writing single 512-byte sectors, concurrently into one
 * 4 KiB sector, read back after a restart.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { Daemon, ROOT, scratch, unixUri } from "../support/daemon.ts";
import { runClient, runClientOk } from "../support/clients.ts";

/** The shell block after `<!-- recipe: NAME` in README.md. */
async function readmeRecipe(name: string): Promise<string[]> {
  const readme = await Deno.readTextFile(join(ROOT, "README.md"));
  const at = readme.indexOf(`<!-- recipe: ${name}`);
  assert(at >= 0, `README has no ${name} recipe`);
  const block = /```sh\n([\s\S]*?)```/.exec(readme.slice(at));
  assert(block !== null);
  return block[1]!.trimEnd().split("\n");
}

/**
 * Runs lines with bash -e in dir, `lsvd` on PATH as this checkout's main.ts. An EXIT trap (and
 * cleanUp() for a bash killed on timeout) takes down what a failing recipe left behind.
 */
async function runRecipe(dir: string, lines: string[]) {
  const serve = lines.findIndex((l) => l.startsWith("lsvd serve"));
  assert(serve >= 0);
  lines = [
    'trap \'umount lsvd-mnt 2>/dev/null; [ -n "$LOOP" ] && losetup -d $LOOP; [ -n "$LSVD_PID" ] && kill $LSVD_PID 2>/dev/null; true\' ERR',
    ...lines.slice(0, serve + 1),
    "echo $LSVD_PID > lsvd.pid",
    ...lines.slice(serve + 1),
  ];
  const bin = join(dir, "bin");
  await Deno.mkdir(bin, { recursive: true });
  await Deno.writeTextFile(
    join(bin, "lsvd"),
    `#!/bin/sh\nexec "${Deno.execPath()}" run -A "${join(ROOT, "main.ts")}" "$@"\n`,
  );
  await Deno.chmod(join(bin, "lsvd"), 0o755);
  return await runClient("bash", ["-e", "-c", lines.join("\n")], {
    cwd: dir,
    timeoutMs: 180_000,
    env: { PATH: `${bin}:${Deno.env.get("PATH")}` },
  });
}

async function cleanUp(dir: string): Promise<void> {
  await runClient("umount", ["-l", join(dir, "lsvd-mnt")]);
  const loops = await runClient("losetup", ["-j", join(dir, "lsvd-fuse", "nbd")]);
  for (const loop of loops.stdout.matchAll(/^(\/dev\/loop\d+):/gm)) {
    await runClient("losetup", ["-d", loop[1]!]);
  }
  const pid = await Deno.readTextFile(join(dir, "lsvd.pid")).catch(() => "");
  if (/^\d+$/.test(pid.trim())) await runClient("kill", ["-TERM", pid.trim()]);
  await runClient("fusermount3", ["-u", "-z", join(dir, "lsvd-fuse")]);
}

Deno.test({
  name:
    "The README's --fuse recipe works as printed: default losetup (512-byte sectors), mkfs.ext4, mount, e2fsck",
  sanitizeResources: false,
  async fn() {
    const t = await scratch();
    try {
      const recipe = await readmeRecipe("fuse");
      const use = recipe.findIndex((l) => l.startsWith("# ... use the filesystem"));
      assert(use > 0, "the recipe has a place to use the filesystem");
      assert(!recipe.some((l) => l.includes("--sector-size")), "the recipe uses a default loop device");
      const first = [...recipe];
      first.splice(
        use,
        1,
        'test "$(blockdev --getss $LOOP)" = 512',
        "head -c 3000000 /dev/urandom > lsvd-mnt/random.bin && cp lsvd-mnt/random.bin expected.bin",
        "mkdir lsvd-mnt/dir && for i in $(seq 40); do echo file $i > lsvd-mnt/dir/f$i; done && sync",
      );
      const r1 = await runRecipe(t.dir, first);
      assert.equal(r1.code, 0, `${r1.stdout}\n${r1.stderr}`);
      assert.match(r1.stderr, /lsvd: Device has shut down\./);

      // Again without mkfs: the filesystem must come back clean with every file.
      const second = recipe.filter((l) => !l.startsWith("mkfs.ext4"));
      second.splice(
        second.findIndex((l) => l.startsWith("# ... use the filesystem")),
        1,
        "umount lsvd-mnt && e2fsck -fn $LOOP && mount $LOOP lsvd-mnt",
        "cmp lsvd-mnt/random.bin expected.bin",
        'for i in $(seq 40); do test "$(cat lsvd-mnt/dir/f$i)" = "file $i"; done',
      );
      const r2 = await runRecipe(t.dir, second);
      assert.equal(r2.code, 0, `${r2.stdout}\n${r2.stderr}`);
      assert.match(r2.stdout + r2.stderr, /Pass 5: Checking group summary information/, "e2fsck ran");
    } finally {
      await cleanUp(t.dir);
      await t.remove();
    }
  },
});

Deno.test("qemu-io 512-byte writes, concurrent ones into one 4 KiB sector included, survive a restart", async () => {
  const t = await scratch();
  try {
    const args = ["--dir", t.store, "--socket", t.socket];
    let d = await Daemon.start({ args: [...args, "--size", "16M"] });
    const uri = unixUri(t.socket);
    const info = await runClientOk("nbdinfo", ["--json", uri]);
    const exp = JSON.parse(info.stdout).exports[0];
    assert.equal(exp.block_size_minimum, 512);
    assert.equal(exp.block_size_preferred, 4096);
    const writes = [
      "write -P 0x11 512 512",
      "write -P 0x22 1536 1024",
      "write -P 0x33 4096 512",
      ...Array.from({ length: 8 }, (_, i) => `aio_write -P ${0x40 + i} ${8192 + i * 512} 512`),
      "aio_flush",
      "write -P 0x55 12800 8192", // straddles three 4 KiB sectors
      "flush",
    ];
    const w = await runClientOk("qemu-io", ["-f", "raw", uri, ...writes.flatMap((c) => ["-c", c])]);
    assert(!/error|fail/i.test(w.stdout + w.stderr), w.stdout + w.stderr);
    assert.equal((await d.stop()).code, 0);

    d = await Daemon.start({ args });
    const reads = [
      "read -P 0 0 512",
      "read -P 0x11 512 512",
      "read -P 0 1024 512",
      "read -P 0x22 1536 1024",
      "read -P 0 2560 1536",
      "read -P 0x33 4096 512",
      "read -P 0 4608 3584",
      ...Array.from({ length: 8 }, (_, i) => `read -P ${0x40 + i} ${8192 + i * 512} 512`),
      "read -P 0 12288 512",
      "read -P 0x55 12800 8192",
      "read -P 0 20992 512",
    ];
    const r = await runClientOk("qemu-io", ["-f", "raw", uri, ...reads.flatMap((c) => ["-c", c])]);
    assert(!/pattern verification failed|error/i.test(r.stdout + r.stderr), r.stdout + r.stderr);
    assert.equal((await d.stop()).code, 0);
  } finally {
    await t.remove();
  }
});
