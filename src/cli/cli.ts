/**
 * @module
 * Subcommand dispatch and the one place where errors a user can cause (bad options, missing
 * bucket, wrong credentials, malformed objects) become one `lsvd: ...` line and exit code 1.
 * Anything else — a broken invariant — propagates with its stack trace, loudly.
 */

import { AssertionError } from "node:assert";
import { StoreError } from "../store/store.ts";
import { LsvdError } from "../util/errors.ts";
import { UsageError } from "./options.ts";
import { AttachError } from "../attach/attach.ts";
import { licensesCommand } from "./licenses.ts";
import { serveCommand } from "./serve.ts";
import { infoCommand } from "./info.ts";
import { verifyCommand } from "./verify.ts";
import { exportCommand } from "./export.ts";
import { importCommand } from "./import.ts";
import { rollbackCommand } from "./rollback.ts";

const USAGE = `Usage: lsvd <command> [options]

Bottomless block volumes: a virtual disk served over NBD whose bytes live as a log of
objects in an S3-compatible bucket (or a local directory).

Commands:
  serve      Recover the volume and serve it over NBD (and optionally attach /dev/nbdN)
  info       Describe the volume: size, objects, gaps, epochs, checkpoints, archive
  verify     Fetch every object and check every checksum; exit 1 when anything is wrong
  export     Write the disk (now, or at a past point) as a raw image file or to stdout
  import     Import a raw image file (or stdin) into a new volume
  rollback   Return the volume to a past point; newer objects move under archive/
  licenses   Print the licenses of the third-party components in this binary

Run 'lsvd <command> --help' for a command's options.
`;

export async function runCli(args: string[]): Promise<number> {
  const [command, ...rest] = args;
  try {
    switch (command) {
      case "serve":
        return await serveCommand(rest);
      case "info":
        return await infoCommand(rest);
      case "verify":
        return await verifyCommand(rest);
      case "export":
        return await exportCommand(rest);
      case "import":
        return await importCommand(rest);
      case "rollback":
        return await rollbackCommand(rest);
      case "licenses":
        return licensesCommand(rest);
      case undefined:
      case "help":
      case "--help":
      case "-h":
        console.log(USAGE);
        return command === undefined ? 2 : 0;
      default:
        throw new UsageError(`Unknown command "${command}"; run 'lsvd --help'`);
    }
  } catch (e) {
    if (e instanceof AssertionError) throw e;
    if (
      e instanceof UsageError || e instanceof AttachError || e instanceof LsvdError ||
      e instanceof StoreError || isUserError(e)
    ) {
      console.error(`lsvd: ${(e as Error).message}`);
      return 1;
    }
    throw e;
  }
}

/** Errors from the environment rather than from lsvd: missing files, refused permissions, busy ports. */
function isUserError(e: unknown): boolean {
  return e instanceof Deno.errors.NotFound || e instanceof Deno.errors.PermissionDenied ||
    e instanceof Deno.errors.AddrInUse || e instanceof Deno.errors.AddrNotAvailable;
}
