/**
 * @module
 * startFuseExport() against nbdkit: the file appears with the export's size, bytes written through
 * it reach the server, stop() unmounts and nbdfuse exits; a missing nbdfuse is one clear line;
 * the --fuse path is DIR or DIR/FILE, and anything else is refused before nbdfuse runs.
 */

import assert from "node:assert/strict";
import { nbdUnixUri, splitFusePath, startFuseExport } from "./fuse.ts";

const has = (tool: string) =>
  new Deno.Command("sh", { args: ["-c", `command -v ${tool}`] }).outputSync().success;
const canFuse = has("nbdfuse") && has("nbdkit") && has("fusermount3") &&
  (() => {
    try {
      Deno.statSync("/dev/fuse");
      return true;
    } catch {
      return false;
    }
  })();

Deno.test("splitFusePath() takes DIR or DIR/FILE and refuses a bare name that is no directory", async () => {
  const dir = await Deno.makeTempDir({ prefix: "lsvd-fuse-path-" });
  try {
    assert.deepEqual(await splitFusePath(dir), { mountPoint: dir, filePath: `${dir}/nbd` });
    assert.deepEqual(await splitFusePath(`${dir}/disk`), { mountPoint: dir, filePath: `${dir}/disk` });
    await assert.rejects(splitFusePath(`${dir}/missing/disk`), /is not a directory/);
    await assert.rejects(
      splitFusePath("no-such-dir-here"),
      /^Error: Cannot expose the volume at no-such-dir-here: no such directory \(create it, or give DIR\/FILE\)$/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("nbdUnixUri() encodes the export name and the socket path", () => {
  assert.equal(nbdUnixUri("lsvd", "/tmp/a b.sock"), "nbd+unix:///lsvd?socket=%2Ftmp%2Fa%20b.sock");
});

Deno.test({
  name: "startFuseExport() exposes the export as a file and stop() unmounts it",
  ignore: !canFuse,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "lsvd-fuse-" });
    const socketPath = `${dir}/nbd.sock`;
    const server = new Deno.Command("nbdkit", {
      args: ["--foreground", "--exit-with-parent", "-U", socketPath, "memory", "16M"],
      stderr: "null",
    }).spawn();
    try {
      await Deno.mkdir(`${dir}/mnt`);
      const lines: string[] = [];
      const fuse = await startFuseExport({
        path: `${dir}/mnt/disk`,
        socketPath,
        exportName: "",
        log: (line) => lines.push(line),
      });
      assert.deepEqual(lines, [`Exposing the volume as ${dir}/mnt/disk through nbdfuse.`]);
      assert.equal((await Deno.stat(fuse.filePath)).size, 16 * 2 ** 20);
      const pattern = crypto.getRandomValues(new Uint8Array(4096));
      {
        using file = await Deno.open(fuse.filePath, { read: true, write: true });
        await file.seek(8192, Deno.SeekMode.Start);
        await file.write(pattern);
        await file.syncData();
      }
      const check = await new Deno.Command("nbdcopy", {
        args: [nbdUnixUri("", socketPath), "-"],
        stdout: "piped",
      }).output();
      assert.deepEqual(check.stdout.subarray(8192, 8192 + 4096), pattern);
      await fuse.stop();
      assert.equal((await fuse.exited).success, true);
      assert.equal(await Deno.stat(fuse.filePath).then(() => true, () => false), false);
    } finally {
      server.kill("SIGTERM");
      await server.status;
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("startFuseExport() without nbdfuse on PATH is one clear error", async () => {
  const dir = await Deno.makeTempDir({ prefix: "lsvd-fuse-" });
  const path = Deno.env.get("PATH") ?? "";
  Deno.env.set("PATH", dir);
  try {
    await assert.rejects(
      startFuseExport({ path: dir, socketPath: `${dir}/s`, exportName: "lsvd", log: () => {} }),
      {
        message: `Cannot expose the volume at ${dir}: nbdfuse is not installed (apt-get install libnbd-bin)`,
      },
    );
  } finally {
    Deno.env.set("PATH", path);
    await Deno.remove(dir, { recursive: true });
  }
});
