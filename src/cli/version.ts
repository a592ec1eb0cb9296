/**
 * @module
 * `lsvd --version` / `lsvd version`: which lsvd this is and the runtime it runs on, the first
 * thing a bug report needs. The version is bumped here, and only here, on a release.
 */

export const LSVD_VERSION = "0.3.0";

export function versionText(): string {
  return `lsvd ${LSVD_VERSION} (deno ${Deno.version.deno}, v8 ${Deno.version.v8}, ${Deno.build.target})`;
}

export function versionCommand(args: string[]): number {
  if (args.includes("-h") || args.includes("--help")) {
    console.log("Usage: lsvd version\n\nPrints the lsvd version and the Deno runtime it runs on.");
    return 0;
  }
  console.log(versionText());
  return 0;
}
