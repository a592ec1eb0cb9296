/**
 * @module
 * `lsvd licenses`: lsvd's own license, the license text of every npm component shipped in the
 * binary (generated into licenses_data.ts), and the notices of what the Deno runtime itself
 * embeds (V8, ICU, Rust crates), with where their full texts live.
 */

import { LICENSES } from "./licenses_data.ts";
import { wantsHelp } from "./options.ts";

/** The largest components the Deno runtime (deno / denort) links in, and where their notices are. */
const RUNTIME_NOTICES: readonly [string, string, string][] = [
  ["V8 (JavaScript engine)", "BSD-3-Clause", "https://chromium.googlesource.com/v8/v8/+/main/LICENSE"],
  ["ICU (Unicode data in V8)", "Unicode-3.0", "https://github.com/unicode-org/icu/blob/main/LICENSE"],
  ["rusty_v8 (V8 bindings)", "MIT", "https://github.com/denoland/rusty_v8/blob/main/LICENSE"],
  ["Tokio (async runtime)", "MIT", "https://github.com/tokio-rs/tokio/blob/master/LICENSE"],
  ["hyper (HTTP)", "MIT", "https://github.com/hyperium/hyper/blob/master/LICENSE"],
  ["rustls (TLS)", "Apache-2.0 OR ISC OR MIT", "https://github.com/rustls/rustls/blob/main/LICENSE"],
  ["ring / aws-lc-rs (cryptography)", "ISC AND OpenSSL / Apache-2.0", "https://github.com/briansmith/ring"],
  ["serde, url, reqwest and other Rust crates", "MIT OR Apache-2.0", "deno's Cargo.lock (below)"],
  ["swc (TypeScript parsing)", "Apache-2.0", "https://github.com/swc-project/swc/blob/main/LICENSE"],
];

export function licensesCommand(args: string[]): number {
  if (wantsHelp(args)) {
    console.log(
      "Usage: lsvd licenses\n\nPrints lsvd's license, the license of every third-party component in this binary,\n" +
        "and where the notices of the Deno runtime's own components are.",
    );
    return 0;
  }
  const rule = "=".repeat(78);
  const deno = LICENSES.find((l) => l.name === "deno");
  const parts = [
    "lsvd is released under the Apache License, Version 2.0 (the LICENSE file in its source).\n" +
    "It ships these third-party components:\n",
    ...LICENSES.map((l) => `${rule}\n${l.name} ${l.version} (${l.license})\n${rule}\n${l.text}\n`),
    `${rule}\nComponents of the Deno ${deno?.version ?? Deno.version.deno} runtime\n${rule}`,
    "The Deno runtime inside this binary (MIT, above) embeds the components below; each is under the\n" +
    "license named, with its full text at the address given. The complete list of Rust crates and their\n" +
    `licenses is deno's Cargo.lock: https://github.com/denoland/deno/blob/v${
      deno?.version ?? Deno.version.deno
    }/Cargo.lock\n` +
    "(`cargo about generate` or `cargo license` on a checkout of that tag prints every notice).\n",
    ...RUNTIME_NOTICES.map(([name, license, where]) => `  ${name.padEnd(42)} ${license.padEnd(28)} ${where}`),
  ];
  console.log(parts.join("\n"));
  return 0;
}
