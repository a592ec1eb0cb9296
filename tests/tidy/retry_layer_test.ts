/**
 * @module
 * The tidy check for one retry layer (docs/design/retries.md): withRetries() is called only in
 * src/store/, where RetryingStore makes each store call one retry loop. Code above it takes a
 * retried store, so a loop around a function that itself calls a retried store (a retry inside a
 * retry) cannot come back unnoticed: a call elsewhere in src/ fails this test, naming the file.
 */

import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

/** Lines of `text` that call withRetries (comments aside), as `line: text`. */
export function retryCalls(text: string): string[] {
  const out: string[] = [];
  text.split("\n").forEach((line, i) => {
    const code = line.trimStart();
    if (code.startsWith("*") || code.startsWith("//") || code.startsWith("/*")) return;
    if (/\bwithRetries\s*(<[^>]*>)?\s*\(/.test(code.replace(/\/\/.*$/, ""))) out.push(`${i + 1}: ${code}`);
  });
  return out;
}

async function sourceFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(join(ROOT, dir))) {
    const path = `${dir}/${e.name}`;
    if (e.isDirectory) out.push(...await sourceFiles(path));
    else if (e.name.endsWith(".ts")) out.push(path);
  }
  return out.sort();
}

Deno.test("withRetries() is called only in src/store/ (one retry layer: RetryingStore)", async () => {
  const found: string[] = [];
  for (const file of await sourceFiles("src")) {
    if (file.startsWith("src/store/")) continue;
    for (const call of retryCalls(await Deno.readTextFile(join(ROOT, file)))) found.push(`${file}:${call}`);
  }
  assert.deepEqual(found, [], "retry through a RetryingStore (src/store/retry.ts), not withRetries()");
});

Deno.test("retryCalls() finds calls and skips comments and other names", () => {
  const text = [
    "/** Retried by withRetries (retry.ts). */",
    "  // await withRetries(policy, f)",
    "  await withRetries(retry, () => store.get(k));",
    "  return withRetries<number>(p, f);",
    "  notwithRetries(x); withRetriesLike(y);",
  ].join("\n");
  assert.deepEqual(retryCalls(text), [
    "3: await withRetries(retry, () => store.get(k));",
    "4: return withRetries<number>(p, f);",
  ]);
});
