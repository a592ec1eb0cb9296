/**
 * @module
 * The offline tools through the real CLI on Ceph RGW (the story is in toolbox.ts); one gateway
 * for every step.
 */

import { S3Store } from "../../src/store/s3.ts";
import { scratch } from "../support/daemon.ts";
import { startRgw } from "../support/rgw.ts";
import { runToolboxStory, storeErrors, type ToolboxTarget } from "./toolbox.ts";

Deno.test({
  name: "lsvd info, verify, export, import, rollback on Ceph RGW",
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
      await runToolboxStory(ctx, t);
      await ctx.step(
        "an unreachable store and a missing bucket are one line each",
        () => storeErrors(t, rgw.endpoint),
      );
    } finally {
      await store.close();
      await rgw.stop();
      await s.remove();
    }
  },
});
