/**
 * @module
 * Every file under src/, and main.ts, is Latin-1 (no character above U+00FF). V8 keeps a module's
 * source, and Deno's emitted code with its inline source map, as a one-byte string only when every
 * character fits in a byte; one arrow or dash in a comment makes the whole module two bytes a
 * character, for the life of the process. Keeping them Latin-1 saved ~1 MiB of a serving daemon's
 * heap (bench/RESULTS.md, "Issue 23: memory on a bucket, a real margin"). Write "->", "--", "<=", ">=".
 */

import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

async function sources(dir: string, out: string[] = []): Promise<string[]> {
  for await (const e of Deno.readDir(join(ROOT, dir))) {
    const path = `${dir}/${e.name}`;
    if (e.isDirectory) await sources(path, out);
    else if (e.name.endsWith(".ts")) out.push(path);
  }
  return out;
}

Deno.test("src/ and main.ts are Latin-1, so V8 keeps their sources one byte a character", async () => {
  const found: string[] = [];
  for (const path of ["main.ts", ...await sources("src")]) {
    const lines = (await Deno.readTextFile(join(ROOT, path))).split("\n");
    lines.forEach((line, i) => {
      const wide = [...line].find((c) => c.codePointAt(0)! > 0xff);
      if (wide !== undefined) {
        found.push(`${path}:${i + 1}: "${wide}" (U+${wide.codePointAt(0)!.toString(16)})`);
      }
    });
  }
  assert.deepEqual(found, [], "characters above U+00FF make V8 store the whole module two bytes a character");
});
