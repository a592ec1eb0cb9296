/**
 * @module
 * Damaged objects through the real daemon on Ceph RGW (the story is in integrity.ts): the damage is
 * a PUT of modified bytes through the S3 client, as a faulty gateway or a bad migration would leave it.
 */

import { scratch } from "../support/daemon.ts";
import { rgwTarget, startRgw } from "../support/rgw.ts";
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
    const t: ToolboxTarget = rgwTarget(rgw, s.dir);
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
      await t.store.close();
      await rgw.stop();
      await s.remove();
    }
  },
});
