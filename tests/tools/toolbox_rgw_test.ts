/**
 * @module
 * The offline tools through the real CLI on Ceph RGW (the stories are in toolbox.ts and
 * clone_story.ts); one gateway for every step.
 */

import { scratch } from "../support/daemon.ts";
import { rgwTarget, startRgw } from "../support/rgw.ts";
import { runToolboxStory, storeErrors, type ToolboxTarget } from "./toolbox.ts";
import { runCloneStory, runCrossBucketStory } from "./clone_story.ts";

Deno.test({
  name: "lsvd info, verify, export, import, rollback on Ceph RGW",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(ctx) {
    const rgw = await startRgw();
    const s = await scratch();
    const t: ToolboxTarget = rgwTarget(rgw, s.dir);
    try {
      await runToolboxStory(ctx, t);
      await ctx.step("clones: clone, write both, GC the source, flatten, delete it", () => runCloneStory(t));
      await ctx.step("a clone in another bucket (--to-bucket) reads its source there", async () => {
        await rgw.createBucket("lsvd-test-2");
        const t2 = rgwTarget({ ...rgw, bucket: "lsvd-test-2" }, s.dir);
        try {
          await runCrossBucketStory(t, t2, "lsvd-test-2");
        } finally {
          await t2.store.close();
        }
      });
      await ctx.step(
        "an unreachable store and a missing bucket are one line each",
        () => storeErrors(t, rgw.endpoint),
      );
    } finally {
      await t.store.close();
      await rgw.stop();
      await s.remove();
    }
  },
});
