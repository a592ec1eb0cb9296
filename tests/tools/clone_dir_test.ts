/**
 * @module
 * Clones through the real CLI and daemon on the directory store (the story is in clone_story.ts).
 */

import { DirectoryStore } from "../../src/store/directory.ts";
import { scratch } from "../support/daemon.ts";
import type { ToolboxTarget } from "./toolbox.ts";
import { runCloneStory } from "./clone_story.ts";

Deno.test("lsvd clone, flatten: clones read right through the source's GC and after it is gone (directory store)", async () => {
  const s = await scratch();
  const t: ToolboxTarget = {
    storeArgs: ["--dir", s.store],
    env: Deno.env.toObject(),
    store: new DirectoryStore(s.store),
    dir: s.dir,
  };
  try {
    await runCloneStory(t);
  } finally {
    await s.remove();
  }
});
