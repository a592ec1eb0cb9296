/**
 * @module
 * The offline tools through the real CLI on the directory store (the story is in toolbox.ts).
 */

import { DirectoryStore } from "../../src/store/directory.ts";
import { scratch } from "../support/daemon.ts";
import { infoAndVerify, type ToolboxTarget, verifyDamage, writeVolume } from "./toolbox.ts";

Deno.test("lsvd info, verify, export, import, rollback on the directory store", async (ctx) => {
  const s = await scratch();
  const t: ToolboxTarget = {
    storeArgs: ["--dir", s.store],
    env: Deno.env.toObject(),
    store: new DirectoryStore(s.store),
    dir: s.dir,
  };
  try {
    const v = await writeVolume(t, "vol");
    await ctx.step("info and verify describe and pass a good volume", () => infoAndVerify(t, v));
    await ctx.step("verify names a damaged and a truncated object", () => verifyDamage(t, v));
  } finally {
    await s.remove();
  }
});
