/**
 * @module
 * Damaged objects through the real daemon on the directory store (the story is in integrity.ts).
 */

import { DirectoryStore } from "../../src/store/directory.ts";
import { scratch } from "../support/daemon.ts";
import type { ToolboxTarget } from "../tools/toolbox.ts";
import {
  flippedDataByte,
  flippedHeaderBit,
  truncatedObject,
  verifiableBytes,
  writeRandomVolume,
} from "./integrity.ts";

Deno.test("Damaged objects on the directory store: EIO on exactly the bad sector, start refused naming the object", async (ctx) => {
  const s = await scratch();
  const t: ToolboxTarget = {
    storeArgs: ["--dir", s.store],
    env: Deno.env.toObject(),
    store: new DirectoryStore(s.store),
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
    await t.store.close();
    await s.remove();
  }
});
