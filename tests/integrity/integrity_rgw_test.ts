/**
 * @module
 * Damaged objects through the real daemon on Ceph RGW (the story is in integrity.ts): the damage is
 * a PUT of modified bytes through the S3 client, as a faulty gateway or a bad migration would leave it.
 */

import { S3Store } from "../../src/store/s3.ts";
import { scratch } from "../support/daemon.ts";
import { startRgw } from "../support/rgw.ts";
import type { ToolboxTarget } from "../tools/toolbox.ts";
import {
  flippedDataByte,
  flippedHeaderBit,
  truncatedObject,
  verifiableBytes,
  writeRandomVolume,
} from "./integrity.ts";

Deno.test({
  name: "Damaged objects on Ceph RGW: EIO on exactly the bad sector, start refused naming the object",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(ctx) {
    const rgw = await startRgw();
    const s = await scratch();
    const store = new S3Store({
      bucket: rgw.bucket,
      endpoint: rgw.endpoint,
      forcePathStyle: true,
      region: rgw.region,
      credentials: { accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey },
    });
    const t: ToolboxTarget = {
      storeArgs: ["--bucket", rgw.bucket, "--endpoint", rgw.endpoint, "--path-style"],
      env: {
        ...Deno.env.toObject(),
        AWS_ACCESS_KEY_ID: rgw.accessKeyId,
        AWS_SECRET_ACCESS_KEY: rgw.secretAccessKey,
        AWS_REGION: rgw.region,
      },
      store,
      dir: s.dir,
    };
    try {
      const data = await writeRandomVolume(t, "vol");
      await ctx.step(
        "info counts verifiable bytes; objects without CRCs are served unchecked",
        () => verifiableBytes(t, "vol", data),
      );
      await ctx.step("a flipped data byte fails exactly its reads", () => flippedDataByte(t, "vol", data));
      await ctx.step(
        "a flipped header bit refuses start (no checkpoints)",
        () => flippedHeaderBit(t, "vol", false),
      );
      await ctx.step(
        "a flipped header bit refuses start (after a checkpoint)",
        () => flippedHeaderBit(t, "vol", true),
      );
      await ctx.step("a truncated object is named", () => truncatedObject(t, "vol"));
    } finally {
      await store.close();
      await rgw.stop();
      await s.remove();
    }
  },
});
