/**
 * @module
 * Garbage collection through the real daemon on Ceph RGW (the story is in gc_story.ts).
 */

import { S3Store } from "../../src/store/s3.ts";
import { scratch } from "../support/daemon.ts";
import { startRgw } from "../support/rgw.ts";
import { runGcStory } from "./gc_story.ts";

Deno.test({
  name: "serve collects garbage on Ceph RGW: bucket follows live data, snapshot, window, seed-only replay",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const rgw = await startRgw();
    const s = await scratch();
    const store = new S3Store({
      bucket: rgw.bucket,
      endpoint: rgw.endpoint,
      forcePathStyle: true,
      region: rgw.region,
      credentials: { accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey },
    });
    try {
      await runGcStory({
        storeArgs: ["--bucket", rgw.bucket, "--endpoint", rgw.endpoint, "--path-style"],
        env: {
          ...Deno.env.toObject(),
          AWS_ACCESS_KEY_ID: rgw.accessKeyId,
          AWS_SECRET_ACCESS_KEY: rgw.secretAccessKey,
          AWS_REGION: rgw.region,
        },
        store,
        dir: s.dir,
      });
    } finally {
      await store.close();
      await rgw.stop();
      await s.remove();
    }
  },
});
