/**
 * @module
 * Checks of the tree's layout that no compiler makes: ARCHITECTURE.md's file table names every
 * source file of src/ and nothing that is gone, and util/assert.ts is src's one assertion seam.
 */

import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

/** Every .ts file under src/ (tests excepted), relative to the repository root. */
async function sourceFiles(dir = "src"): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(join(ROOT, dir))) {
    const path = `${dir}/${e.name}`;
    if (e.isDirectory) out.push(...await sourceFiles(path));
    else if (e.name.endsWith(".ts") && !e.name.endsWith("_test.ts")) out.push(path);
  }
  return out.sort();
}

/**
 * The paths the "## Files" table names. A name with a slash sets the folder the bare names after
 * it are in (`src/cli/serve.ts`, `options.ts` names src/cli/options.ts); a name ending in "/"
 * names a whole folder.
 */
function tablePaths(markdown: string): { files: Set<string>; folders: Set<string> } {
  const section = markdown.split(/^## Files$/m)[1]?.split(/^## /m)[0];
  assert(section !== undefined, "ARCHITECTURE.md has no '## Files' section");
  const files = new Set<string>(), folders = new Set<string>();
  let folder = "";
  for (const line of section.split("\n").filter((l) => l.startsWith("|"))) {
    for (const [, name] of line.matchAll(/`([^`\s<>]+)`/g)) {
      if (name!.endsWith("/")) {
        folders.add(name!.slice(0, -1));
        folder = name!.slice(0, -1);
      } else if (name!.endsWith(".ts")) {
        if (name!.includes("/")) folder = dirname(name!);
        files.add(name!.includes("/") ? name! : `${folder}/${name}`);
      }
    }
  }
  return { files, folders };
}

Deno.test("ARCHITECTURE.md's file table names every file of src/ and only files that exist", async () => {
  const { files, folders } = tablePaths(await Deno.readTextFile(join(ROOT, "ARCHITECTURE.md")));
  const tree = await sourceFiles();
  const missing = tree.filter((f) => !files.has(f) && ![...folders].some((d) => f.startsWith(`${d}/`)));
  const gone: string[] = [];
  for (const f of [...files, ...folders]) {
    if (!(await Deno.stat(join(ROOT, f)).then(() => true, () => false))) gone.push(f);
  }
  assert.deepEqual(
    { missing, gone },
    { missing: [], gone: [] },
    "files the table misses, names that are gone",
  );
});

Deno.test("src/ asserts through util/assert.ts only (no node:assert elsewhere)", async () => {
  const offenders: string[] = [];
  for (const f of await sourceFiles()) {
    if (f === "src/util/assert.ts") continue;
    const text = await Deno.readTextFile(join(ROOT, f));
    if (/from "node:assert(\/strict)?"/.test(text)) offenders.push(f);
  }
  assert.deepEqual(offenders, [], `node:assert imported by ${offenders.join(", ")}`);
});
