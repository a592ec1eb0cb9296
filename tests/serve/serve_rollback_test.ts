/**
 * @module
 * The seed's rollback story end to end through NBD, on the directory store and on Ceph RGW:
 * write, stop, note the newest object, write more, stop, delete the newer objects, start:
 * the disk is exactly the state after the first stop.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { Daemon, scratch, unixUri } from "../support/daemon.ts";
import { runClientOk, sha256Hex } from "../support/clients.ts";
import { DirectoryStore } from "../../src/store/directory.ts";
import { S3Store } from "../../src/store/s3.ts";
import { listAll, type ObjectStore } from "../../src/store/store.ts";
import { parseLogKey } from "../../src/format/keys.ts";
import { startRgw } from "../support/rgw.ts";

async function logKeys(store: ObjectStore, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  for await (const o of listAll(store, { prefix })) {
    if (parseLogKey(prefix, o.key) !== undefined) keys.push(o.key);
  }
  return keys;
}

async function rollbackStory(
  args: string[],
  store: ObjectStore,
  prefix: string,
  env?: Record<string, string>,
) {
  const t = await scratch();
  try {
    const uri = unixUri(t.socket);
    const serve = (extra: string[] = []) =>
      Daemon.start({ args: [...args, "--socket", t.socket, ...extra], ...(env ? { env } : {}) });
    const disk = async () => {
      const out = join(t.dir, `disk-${crypto.randomUUID()}.bin`);
      await runClientOk("nbdcopy", [uri, out]);
      return await sha256Hex(await Deno.readFile(out));
    };

    let d = await serve(["--size", "32M"]);
    await runClientOk("qemu-io", ["-f", "raw", uri, "-c", "write -P 0x11 0 4M", "-c", "write -P 0x22 8M 1M"]);
    assert.equal((await d.stop()).code, 0);
    const newest = (await logKeys(store, prefix)).at(-1)!;
    d = await serve();
    const before = await disk();
    await runClientOk("qemu-io", [
      "-f",
      "raw",
      uri,
      "-c",
      "write -P 0x33 2M 4M",
      "-c",
      "write -z 8M 1M",
      "-c",
      "write -P 0x44 20M 1M",
    ]);
    const changed = await disk();
    assert.equal((await d.stop()).code, 0);
    assert.notEqual(changed, before);

    const newer = (await logKeys(store, prefix)).filter((k) => k > newest);
    assert(newer.length >= 1, "the second session wrote objects");
    for (const k of newer) await store.delete(k);

    d = await serve();
    assert.equal(await disk(), before, "the rolled-back disk equals the state after the first stop");
    const stopped = await d.stop();
    assert.equal(stopped.code, 0);
    assert.match(stopped.log, /Recovery complete/);
  } finally {
    await t.remove();
  }
}

Deno.test("rollback through NBD on the directory store", async () => {
  const t = await scratch();
  try {
    await rollbackStory(["--dir", t.store, "--prefix", "vol1"], new DirectoryStore(t.store), "vol1/");
  } finally {
    await t.remove();
  }
});

Deno.test({
  name: "rollback through NBD on Ceph RGW",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const rgw = await startRgw();
    const store = new S3Store({
      bucket: rgw.bucket,
      endpoint: rgw.endpoint,
      forcePathStyle: true,
      region: rgw.region,
      credentials: { accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey },
    });
    try {
      const env = {
        AWS_ACCESS_KEY_ID: rgw.accessKeyId,
        AWS_SECRET_ACCESS_KEY: rgw.secretAccessKey,
        AWS_REGION: rgw.region,
      };
      const args = ["--bucket", rgw.bucket, "--endpoint", rgw.endpoint, "--path-style", "--prefix", "pg"];
      await rollbackStory(args, store, "pg/", { ...Deno.env.toObject(), ...env });

      // A missing bucket and a wrong secret are one clear line each, exit code 1.
      for (
        const [extraEnv, extraArgs, pattern] of [
          [
            env,
            ["--bucket", "no-such-bucket"],
            /^lsvd: Cannot .*no-such-bucket.*(does not exist|NoSuchBucket)/m,
          ],
          [
            { ...env, AWS_SECRET_ACCESS_KEY: "wrong" },
            [],
            /^lsvd: Cannot .*(credentials|signature|denied|rejected)/im,
          ],
        ] as [Record<string, string>, string[], RegExp][]
      ) {
        const d = Daemon.spawn({
          args: [...args, ...extraArgs, "--size", "1G", "--socket", "/tmp/unused-lsvd.sock"],
          env: { ...Deno.env.toObject(), ...extraEnv },
        });
        const r = await d.finished();
        assert.equal(r.code, 1, r.log);
        assert.match(r.log, pattern);
        assert(!r.log.includes("    at "), r.log);
      }
    } finally {
      await store.close();
      await rgw.stop();
    }
  },
});
