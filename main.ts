/**
 * @module
 * lsvd: bottomless S3-backed block volumes served over NBD. The composition root: it only
 * dispatches to a subcommand and turns user errors into one line and a non-zero exit.
 */

import { runCli } from "./src/cli/cli.ts";

if (import.meta.main) Deno.exit(await runCli(Deno.args));
