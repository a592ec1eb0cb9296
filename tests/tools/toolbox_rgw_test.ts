/**
 * @module
 * The offline tools through the real CLI on Ceph RGW (the story is in toolbox.ts); one gateway
 * for every step.
 */

import { scratch } from "../support/daemon.ts";
import { rgwTarget, startRgw } from "../support/rgw.ts";
import { runToolboxStory, storeErrors, type ToolboxTarget } from "./toolbox.ts";

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
