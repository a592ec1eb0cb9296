/**
 * @module
 * The tidy check for short functions (TigerBeetle's tidy.zig is the model): no function in src/ or in
 * the seeded simulation (tests/sim/) is over 70 lines, test files (`*_test.ts`, whose Deno.test bodies
 * are scripts) and the generated src/cli/licenses_data.ts excepted. The functions that were over the
 * limit when the check came are listed with their length and may only shrink off the list: a listed
 * function that grows or a new long one fails the test by name, and so does a listed one that is now
 * short (take it off the list).
 */

import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { functionSpans } from "./function_lengths.ts";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const LIMIT = 70;

/** Over the limit when the check came: `file name` → its length then. Split them; never add to this. */
const NOT_YET_SPLIT = new Map<string, number>([]);

/** The files the check covers, relative to the repository root. */
async function checkedFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(join(ROOT, dir))) {
    const path = `${dir}/${e.name}`;
    if (e.isDirectory) out.push(...await checkedFiles(path));
    else if (e.name.endsWith(".ts") && !e.name.endsWith("_test.ts") && path !== "src/cli/licenses_data.ts") {
      out.push(path);
    }
  }
  return out.sort();
}

Deno.test(`no function in src/ or tests/sim/ is over ${LIMIT} lines (or longer than when listed)`, async () => {
  const tooLong: string[] = [];
  const stillListed = new Set(NOT_YET_SPLIT.keys());
  for (const file of [...await checkedFiles("src"), ...await checkedFiles("tests/sim")]) {
    for (const span of functionSpans(await Deno.readTextFile(join(ROOT, file)))) {
      if (span.lines <= LIMIT) continue;
      const key = `${file} ${span.name}`;
      const allowed = NOT_YET_SPLIT.get(key);
      if (allowed !== undefined) stillListed.delete(key);
      if (allowed === undefined || span.lines > allowed) {
        tooLong.push(`${file}:${span.line} ${span.name} is ${span.lines} lines`);
      }
    }
  }
  assert.deepEqual(tooLong, [], `functions over ${LIMIT} lines: split them into named steps`);
  assert.deepEqual([...stillListed], [], "now short: take these off NOT_YET_SPLIT");
});

Deno.test("the scanner measures functions, methods and arrows, and not blocks, strings or regexes", () => {
  const body = (n: number) => Array.from({ length: n }, (_, i) => `  x += ${i};`).join("\n");
  const text = [
    `const s = "{ not code"; const r = /[{]/g; const t = \`\${"}"} {\`;`,
    `export function long(a: { b: number }): Promise<{ c: number }> {`,
    body(3),
    `  if (a.b > 1) {`,
    body(2),
    `  }`,
    `}`,
    `class K {`,
    `  method(x: number): void {`,
    body(1),
    `  }`,
    `}`,
    `const arrow = async (y: number) => {`,
    `  return y;`,
    `};`,
    `// a comment with a { brace`,
  ].join("\n");
  assert.deepEqual(
    functionSpans(text).map((s) => [s.name, s.line, s.lines]),
    [["long", 2, 9], ["K.method", 12, 3], ["arrow", 16, 3]],
  );
});
