/**
 * @module
 * `lsvd licenses`: the license text of every third-party component shipped in the binary.
 */

import { LICENSES } from "./licenses_data.ts";

export function licensesCommand(args: string[]): number {
  if (args.includes("--help")) {
    console.log("Usage: lsvd licenses\n\nPrints the license of every third-party component in this binary.");
    return 0;
  }
  const parts = [
    "lsvd itself is released under the MIT license. It ships these third-party components:\n",
    ...LICENSES.map((l) =>
      `${"=".repeat(78)}\n${l.name} ${l.version} (${l.license})\n${"=".repeat(78)}\n${l.text}\n`
    ),
    "Deno embeds V8, Tokio, rustls and other Rust crates; their notices are part of Deno's own\n" +
    "distribution (https://github.com/denoland/deno, third_party licenses) and are not reproduced here.",
  ];
  console.log(parts.join("\n"));
  return 0;
}
