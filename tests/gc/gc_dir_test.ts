/**
 * @module
 * Garbage collection through the real daemon on the directory store (the story is in gc_story.ts).
 */

import { DirectoryStore } from "../../src/store/directory.ts";
import { scratch } from "../support/daemon.ts";
import { runGcStory } from "./gc_story.ts";

Deno.test("serve collects garbage on the directory store: bucket follows live data, snapshot, window, seed-only replay", async () => {
  const s = await scratch();
  try {
    await runGcStory({
      storeArgs: ["--dir", s.store],
      env: Deno.env.toObject(),
      store: new DirectoryStore(s.store),
      dir: s.dir,
    });
  } finally {
    await s.remove();
  }
});
