/**
 * @module
 * Garbage collection through the real daemon on Ceph RGW (the story is in gc_story.ts).
 */

import { scratch } from "../support/daemon.ts";
import { rgwTarget, startRgw } from "../support/rgw.ts";
import { runGcStory } from "./gc_story.ts";

Deno.test({
  name: "serve collects garbage on Ceph RGW: bucket follows live data, snapshot, window, seed-only replay",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const rgw = await startRgw();
    const s = await scratch();
    const t = rgwTarget(rgw, s.dir);
    try {
      await runGcStory(t);
    } finally {
      await t.store.close();
      await rgw.stop();
      await s.remove();
    }
  },
});
