/**
 * @module
 * The layering of src/ (ARCHITECTURE.md): every import between two rooms runs down this ranking,
 * and no file reaches itself through imports (type-only imports count: a cycle of types is still two
 * modules that cannot be read apart). Each failure names the import or the cycle.
 */

import assert from "node:assert/strict";
import { dirname, join, normalize, relative } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

/** Rooms from the top floor down: a room imports only rooms of a lower rank. */
const RANK: Record<string, number> = {
  cli: 9,
  attach: 8,
  nbd: 7,
  volume: 6,
  cache: 5,
  log: 4,
  journal: 3,
  crypto: 3,
  store: 3,
  metrics: 2,
  format: 2,
  map: 2,
  util: 1,
  "version.ts": 1,
};

/** src/ files (tests excepted) and the src/ files each imports, relative to the repository root. */
async function importGraph(dir = "src", graph = new Map<string, string[]>()): Promise<Map<string, string[]>> {
  for await (const e of Deno.readDir(join(ROOT, dir))) {
    const path = `${dir}/${e.name}`;
    if (e.isDirectory) await importGraph(path, graph);
    else if (e.name.endsWith(".ts") && !e.name.endsWith("_test.ts")) {
      const text = await Deno.readTextFile(join(ROOT, path));
      const targets = [...text.matchAll(/^\s*(?:import|export)\b[^;]*?\bfrom\s+"(\.{1,2}\/[^"]+)"/gms)]
        .map((m) => relative(ROOT, normalize(join(ROOT, dir, m[1]!))))
        // A file naming itself is generated text (licenses_generate.ts prints an import of itself).
        .filter((target) => target !== path);
      graph.set(path, targets);
    }
  }
  return graph;
}

function roomOf(path: string): string {
  return path.split("/")[1]!;
}

Deno.test("src/: every import between rooms runs down the layers (no arrow runs up)", async () => {
  const upward: string[] = [];
  for (const [from, targets] of await importGraph()) {
    for (const to of targets) {
      const a = roomOf(from), b = roomOf(to);
      assert(RANK[a] !== undefined, `${from}: room "${a}" has no rank in tests/tidy/imports_test.ts`);
      assert(RANK[b] !== undefined, `${to}: room "${b}" has no rank in tests/tidy/imports_test.ts`);
      if (a !== b && RANK[b]! >= RANK[a]!) upward.push(`${from} imports ${to}`);
    }
  }
  assert.deepEqual(upward, [], `imports that run up or sideways:\n${upward.join("\n")}`);
});

Deno.test("src/: no import cycle", async () => {
  const graph = await importGraph();
  const state = new Map<string, "open" | "done">();
  const cycles: string[] = [];
  const visit = (file: string, path: string[]) => {
    if (state.get(file) === "done") return;
    if (state.get(file) === "open") {
      cycles.push([...path.slice(path.indexOf(file)), file].join(" -> "));
      return;
    }
    state.set(file, "open");
    for (const next of graph.get(file) ?? []) visit(next, [...path, file]);
    state.set(file, "done");
  };
  for (const file of graph.keys()) visit(file, []);
  assert.deepEqual(cycles, [], `import cycles:\n${cycles.join("\n")}`);
});
