/**
 * @module
 * What `lsvd export` and `lsvd import` do with the local paths a user gives them, through the real
 * CLI on the directory store: block devices (loop devices, set up and always detached here) are
 * sized by what they hold, written in place with holes as zeros, refused while mounted, read-only or
 * too small; a character device or a pipe takes the image as a stream and is never truncated or
 * removed; a reader closing the pipe early ends export quietly; directories, missing directories and
 * links to nothing are refused in one line; and a failed or interrupted import leaves nothing behind.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { Daemon, scratch } from "../support/daemon.ts";
import { runClient, runClientOk, seededBytes, sha256Hex } from "../support/clients.ts";
import { ROOT } from "../support/daemon.ts";
import { DirectoryStore } from "../../src/store/directory.ts";
import { allKeys, assertOneLine, lsvd, lsvdOk, type ToolboxTarget } from "./toolbox.ts";

const MIB = 2 ** 20;
const IMAGE_BYTES = 8 * MIB;
const isRoot = Deno.uid() === 0;

/** An image with data, a zero MiB in the middle (a hole in the volume) and data after it. */
function image(): Uint8Array {
  const bytes = seededBytes(IMAGE_BYTES, 11);
  bytes.fill(0, 3 * MIB, 4 * MIB);
  return bytes;
}

async function withVolume(fn: (t: ToolboxTarget, image: Uint8Array) => Promise<void>): Promise<void> {
  const s = await scratch();
  const t: ToolboxTarget = {
    storeArgs: ["--dir", s.store, "--prefix", "vol"],
    env: Deno.env.toObject(),
    store: new DirectoryStore(s.store),
    dir: s.dir,
  };
  try {
    const bytes = image();
    const file = join(s.dir, "source.img");
    await Deno.writeFile(file, bytes);
    await lsvdOk(t, ["import", ...t.storeArgs, file]);
    await Deno.remove(file);
    await fn(t, bytes);
  } finally {
    await s.remove();
  }
}

/** A loop device over a file of `bytes` filled with `fill`; detached by the returned function. */
async function loopDevice(
  t: ToolboxTarget,
  bytes: number,
  options: { fill?: number; readOnly?: boolean } = {},
): Promise<{ path: string; file: string; detach(): Promise<void> }> {
  const file = join(t.dir, `loop-${crypto.randomUUID().slice(0, 8)}.img`);
  await Deno.writeFile(file, new Uint8Array(bytes).fill(options.fill ?? 0x5a));
  const r = await runClientOk("losetup", [...(options.readOnly ? ["-r"] : []), "-f", "--show", file]);
  const path = r.stdout.trim();
  return {
    path,
    file,
    detach: async () => void await runClient("losetup", ["-d", path]),
  };
}

async function deviceBytes(path: string, length: number): Promise<Uint8Array> {
  const f = await Deno.open(path, { read: true });
  try {
    const out = new Uint8Array(length);
    for (let done = 0; done < length;) {
      const n = await f.read(out.subarray(done));
      if (n === null) break;
      done += n;
    }
    return out;
  } finally {
    f.close();
  }
}

Deno.test({
  name: "lsvd export --force onto a block device writes the image in place and never removes it",
  ignore: !isRoot,
  fn: () =>
    withVolume(async (t, bytes) => {
      const exact = await loopDevice(t, IMAGE_BYTES);
      const larger = await loopDevice(t, IMAGE_BYTES + 2 * MIB);
      const smaller = await loopDevice(t, IMAGE_BYTES - MIB);
      const readOnly = await loopDevice(t, IMAGE_BYTES, { readOnly: true });
      try {
        assertOneLine(
          await lsvd(t, ["export", ...t.storeArgs, exact.path]),
          /it is a block device; give --force to write the image onto it/,
        );
        assert.equal((await deviceBytes(exact.path, 1))[0], 0x5a, "without --force nothing is written");

        // The hole in the volume reads as zeros on the device too, though the device held 0x5a there.
        const done = await lsvdOk(t, ["export", "--force", ...t.storeArgs, exact.path]);
        assert.match(done.err, new RegExp(`Exported ${IMAGE_BYTES} bytes .* to ${exact.path}\\.`));
        assert.equal(await sha256Hex(await deviceBytes(exact.path, IMAGE_BYTES)), await sha256Hex(bytes));
        assert((await Deno.stat(exact.path)).isBlockDevice, "the device node is still there");

        const more = await lsvdOk(t, ["export", "--force", ...t.storeArgs, larger.path]);
        assert.match(more.err, /the 2097152 bytes after the image are left as they are/);
        const whole = await deviceBytes(larger.path, IMAGE_BYTES + 2 * MIB);
        assert.equal(await sha256Hex(whole.subarray(0, IMAGE_BYTES)), await sha256Hex(bytes));
        assert(whole.subarray(IMAGE_BYTES).every((b) => b === 0x5a));

        assertOneLine(
          await lsvd(t, ["export", "--force", ...t.storeArgs, smaller.path]),
          new RegExp(`the device holds ${IMAGE_BYTES - MIB} bytes, fewer than the volume's ${IMAGE_BYTES}`),
        );
        assert((await deviceBytes(smaller.path, IMAGE_BYTES - MIB)).every((b) => b === 0x5a));
        assert((await Deno.stat(smaller.path)).isBlockDevice);

        assertOneLine(
          await lsvd(t, ["export", "--force", ...t.storeArgs, readOnly.path]),
          /the device is read-only/,
        );
      } finally {
        for (const d of [exact, larger, smaller, readOnly]) await d.detach();
      }
    }),
});

Deno.test({
  name: "lsvd export --force refuses a mounted block device in one line",
  ignore: !isRoot,
  fn: () =>
    withVolume(async (t) => {
      const device = await loopDevice(t, 16 * MIB, { fill: 0 });
      const mountPoint = join(t.dir, "mnt");
      await Deno.mkdir(mountPoint);
      let mounted = false;
      try {
        await runClientOk("mkfs.ext4", ["-q", device.path]);
        await runClientOk("mount", [device.path, mountPoint]);
        mounted = true;
        await Deno.writeTextFile(join(mountPoint, "kept.txt"), "still here");
        assertOneLine(
          await lsvd(t, ["export", "--force", ...t.storeArgs, device.path]),
          /the device is in use \(mounted, or held by another program\); unmount it first/,
        );
        assert.equal(await Deno.readTextFile(join(mountPoint, "kept.txt")), "still here");
      } finally {
        if (mounted) await runClient("umount", [mountPoint]);
        await device.detach();
      }
    }),
});

Deno.test({
  name: "lsvd import of a block device reads what the device holds, sized by the device",
  ignore: !isRoot,
  fn: () =>
    withVolume(async (t, bytes) => {
      const device = await loopDevice(t, IMAGE_BYTES);
      try {
        await Deno.writeFile(device.file, bytes); // the loop device shows the file's bytes
        const done = await lsvdOk(t, [
          "import",
          "--dir",
          t.storeArgs[1]!,
          "--prefix",
          "fromdev",
          device.path,
        ]);
        assert.match(done.err, new RegExp(`Importing ${device.path} \\(${IMAGE_BYTES} bytes\\)`));
        assert.match(
          done.err,
          new RegExp(`Imported ${IMAGE_BYTES} bytes \\(${IMAGE_BYTES - MIB} bytes of data`),
        );
        const back = await lsvdOk(t, ["export", "--dir", t.storeArgs[1]!, "--prefix", "fromdev", "-"]);
        assert.equal(await sha256Hex(back.stdout), await sha256Hex(bytes));

        assertOneLine(
          await lsvd(t, [
            "import",
            "--size",
            "4M",
            "--dir",
            t.storeArgs[1]!,
            "--prefix",
            "small",
            device.path,
          ]),
          new RegExp(`Invalid --size: the image is ${IMAGE_BYTES} bytes, larger than ${4 * MIB}`),
        );
        assert.deepEqual(await allKeys(t.store, "small/"), []);
      } finally {
        await device.detach();
      }
    }),
});

Deno.test({
  name: "lsvd export --force onto a character device or a pipe streams the image and leaves the node",
  ignore: !isRoot,
  fn: () =>
    withVolume(async (t, bytes) => {
      const sink = join(t.dir, "null");
      await runClientOk("mknod", [sink, "c", "1", "3"]); // a private /dev/null
      assertOneLine(
        await lsvd(t, ["export", ...t.storeArgs, sink]),
        /it is a character device; give --force to write the image into it/,
      );
      const done = await lsvdOk(t, ["export", "--force", ...t.storeArgs, sink]);
      assert.match(done.err, new RegExp(`Exported ${IMAGE_BYTES} bytes`));
      assert((await Deno.stat(sink)).isCharDevice, "the device node is still there");

      const fifo = join(t.dir, "fifo");
      await runClientOk("mkfifo", [fifo]);
      const reading = runClientOk("bash", ["-c", 'sha256sum < "$0"', fifo]);
      await lsvdOk(t, ["export", "--force", ...t.storeArgs, fifo]);
      assert.equal((await reading).stdout.split(" ")[0], await sha256Hex(bytes));
      assert((await Deno.stat(fifo)).isFifo);
    }),
});

Deno.test("lsvd export - into a pipe closed early ends quietly with status 141", () =>
  withVolume(async (t) => {
    const main = join(ROOT, "main.ts");
    const other = join(t.dir, "other.img");
    await Deno.writeFile(other, seededBytes(IMAGE_BYTES, 99));
    for (const reader of ["head -c 100 >/dev/null", `cmp -s - ${other}`]) {
      const r = await runClient("bash", [
        "-c",
        `"$@" | ${reader}; exit \${PIPESTATUS[0]}`,
        "bash",
        Deno.execPath(),
        "run",
        "-A",
        "--no-prompt",
        main,
        "export",
        ...t.storeArgs,
        "-",
      ], { cwd: ROOT });
      assert.equal(r.code, 141, `${reader}: ${r.stderr}`);
      assert(!/error| {4}at /i.test(r.stderr), `${reader}: no error and no stack trace:\n${r.stderr}`);
    }
  }));

Deno.test("lsvd export refuses a directory, a missing directory and a link to nothing, creating nothing", () =>
  withVolume(async (t) => {
    const before = [...Deno.readDirSync(t.dir)].map((e) => e.name).sort();
    assertOneLine(
      await lsvd(t, ["export", "--force", ...t.storeArgs, t.dir]),
      /it is a directory; give a file name/,
    );
    assertOneLine(
      await lsvd(t, ["export", ...t.storeArgs, join(t.dir, "no", "such", "disk.img")]),
      /the directory .*no\/such does not exist/,
    );
    await Deno.symlink(join(t.dir, "nowhere"), join(t.dir, "dangling"));
    assertOneLine(
      await lsvd(t, ["export", "--force", ...t.storeArgs, join(t.dir, "dangling")]),
      /it is a symbolic link to nothing/,
    );
    await Deno.remove(join(t.dir, "dangling"));
    assert.deepEqual([...Deno.readDirSync(t.dir)].map((e) => e.name).sort(), before);
  }));

Deno.test("lsvd import refuses a directory and an empty file, and an interrupted import leaves nothing", () =>
  withVolume(async (t) => {
    const store = t.storeArgs[1]!;
    assertOneLine(
      await lsvd(t, ["import", "--dir", store, "--prefix", "d", t.dir]),
      /it is a directory; give a raw disk image or a block device/,
    );
    const empty = join(t.dir, "empty.img");
    await Deno.writeFile(empty, new Uint8Array(0));
    assertOneLine(
      await lsvd(t, ["import", "--dir", store, "--prefix", "e", empty]),
      /it is empty; give --size/,
    );
    assert.deepEqual(await allKeys(t.store, "d/"), []);
    assert.deepEqual(await allKeys(t.store, "e/"), []);

    // SIGINT while standard input stays open: the objects already stored are removed again.
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--no-prompt",
        join(ROOT, "main.ts"),
        "import",
        "--dir",
        store,
        "--prefix",
        "i",
        "-",
      ],
      stdin: "piped",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const stderr = new Response(child.stderr).text();
    const writer = child.stdin.getWriter();
    await writer.write(seededBytes(12 * MIB, 4));
    const deadline = Date.now() + 30_000;
    while ((await allKeys(t.store, "i/")).filter((k) => /^i\/0{15}/.test(k)).length < 2) {
      assert(Date.now() < deadline, "the import stored no objects");
      await new Promise((r) => setTimeout(r, 50));
    }
    child.kill("SIGINT");
    const status = await child.status;
    await writer.close().catch(() => {});
    const err = await stderr;
    const out = { code: status.code };
    assert.equal(out.code, 130, err);
    assert.match(err, /Import stopped by SIGINT; removed what it had written under prefix "i\/"/);
    assert.deepEqual(await allKeys(t.store, "i/"), []);
  }));

Deno.test("lsvd export - refuses a terminal, and import - refuses one, in one line", () =>
  withVolume(async (t) => {
    const main = join(ROOT, "main.ts");
    const quoted = (args: string[]) => args.map((a) => `'${a}'`).join(" ");
    const deno = [Deno.execPath(), "run", "-A", "--no-prompt", main];
    // script(1) runs the command on a pseudo-terminal: standard input and output are terminals.
    const out = await runClient("script", [
      "-qec",
      quoted([...deno, "export", ...t.storeArgs, "-"]),
      "/dev/null",
    ]);
    assert.equal(out.code, 1, out.stdout);
    assert.match(out.stdout, /lsvd: Cannot export to standard output: it is a terminal/);
    const into = await runClient("script", [
      "-qec",
      quoted([...deno, "import", "--dir", t.storeArgs[1]!, "--prefix", "tty", "-"]),
      "/dev/null",
    ]);
    assert.equal(into.code, 1, into.stdout);
    assert.match(into.stdout, /lsvd: Cannot import standard input: it is a terminal/);
    assert.deepEqual(await allKeys(t.store, "tty/"), []);
  }));

Deno.test("lsvd import of a qcow2 or gzip file warns that it stores the bytes as they are", () =>
  withVolume(async (t) => {
    const qcow2 = join(t.dir, "disk.qcow2");
    await runClientOk("qemu-img", ["create", "-q", "-f", "qcow2", qcow2, "16M"]);
    const r = await lsvdOk(t, ["import", "--dir", t.storeArgs[1]!, "--prefix", "q", qcow2]);
    assert.match(
      r.err,
      new RegExp(
        `${qcow2} starts like a qcow2 image; .* \\(for that: qemu-img convert -O raw ${qcow2} disk\\.img\\)`,
      ),
    );
    const gz = await lsvd(
      t,
      ["import", "--dir", t.storeArgs[1]!, "--prefix", "g", "-"],
      new Uint8Array([0x1f, 0x8b, 8, 0]),
    );
    assert.equal(gz.code, 0, gz.err);
    assert.match(
      gz.err,
      /standard input starts like gzip-compressed data; .*\(for that: zcat IMAGE \| lsvd import -\)/,
    );
  }));

Deno.test("lsvd import fenced by serve --takeover leaves what it wrote to the new writer", () =>
  withVolume(async (t) => {
    const store = t.storeArgs[1]!;
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--no-prompt",
        join(ROOT, "main.ts"),
        "import",
        "--dir",
        store,
        "--prefix",
        "f",
        "-",
      ],
      stdin: "piped",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const stderr = new Response(child.stderr).text();
    const writer = child.stdin.getWriter();
    await writer.write(seededBytes(8 * MIB, 6));
    const deadline = Date.now() + 30_000;
    while ((await allKeys(t.store, "f/")).filter((k) => /^f\/0{15}/.test(k)).length < 2) {
      assert(Date.now() < deadline, "the import stored no objects");
      await new Promise((r) => setTimeout(r, 50));
    }
    const socket = join(t.dir, "f.sock");
    const d = await Daemon.start({
      args: ["--dir", store, "--prefix", "f", "--takeover", "--size", "16M", "--socket", socket],
    });
    try {
      await writer.write(seededBytes(8 * MIB, 7)).catch(() => {});
      await writer.close().catch(() => {});
      const status = await child.status;
      const err = await stderr;
      assert.equal(status.code, 1, err);
      assert.match(err, /left what it had written under prefix "f\/" .* in place \(.*taken over by/);
      assert(!/could not remove|delete them/.test(err), err);
    } finally {
      assert.equal((await d.stop()).code, 0);
    }
    const keys = await allKeys(t.store, "f/");
    assert(keys.includes("f/0000000000000001"), "the new writer's volume keeps the imported objects");
  }));
