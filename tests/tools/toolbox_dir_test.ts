/**
 * @module
 * The offline tools through the real CLI on the directory store (the story is in toolbox.ts).
 */

import { DirectoryStore } from "../../src/store/directory.ts";
import { scratch } from "../support/daemon.ts";
import { runToolboxStory, type ToolboxTarget } from "./toolbox.ts";

Deno.test("lsvd info, verify, export, import, rollback on the directory store", async (ctx) => {
  const s = await scratch();
  const t: ToolboxTarget = {
    storeArgs: ["--dir", s.store],
    env: Deno.env.toObject(),
    store: new DirectoryStore(s.store),
    dir: s.dir,
  };
  try {
    await runToolboxStory(ctx, t);
  } finally {
    await s.remove();
  }
});
