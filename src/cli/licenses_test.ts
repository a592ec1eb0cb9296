import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { collectDenoLicense, collectNpmLicenses } from "./licenses_generate.ts";
import { LICENSES } from "./licenses_data.ts";

const root = join(dirname(new URL(import.meta.url).pathname), "..", "..");

Deno.test("licenses_data.ts matches the installed dependency tree (run deno task licenses:generate)", () => {
  assert.deepEqual(LICENSES, [collectDenoLicense(), ...collectNpmLicenses(root)]);
});

Deno.test("LICENSES includes Deno and the AWS SDK with their texts", () => {
  const names = LICENSES.map((l) => l.name);
  assert(names.includes("deno"));
  assert(names.includes("@aws-sdk/client-s3"));
  for (const l of LICENSES) assert(l.text.length > 20, `${l.name} has no text`);
});
