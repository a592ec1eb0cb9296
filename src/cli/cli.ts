/**
 * @module
 * Subcommand dispatch and the one place where errors a user can cause (bad options, missing
 * bucket, wrong credentials, malformed objects, a busy address) become one `lsvd: ...` line and
 * exit code 1. Anything else -- a broken invariant -- propagates with its stack trace, loudly.
 * A new subcommand is one entry in COMMANDS and one file src/cli/<command>.ts.
 *
 * Each command's module is imported when that command runs, not before: a module's source stays in
 * the V8 heap for the life of the process (twice over: the emitted code and its inline source map), and
 * `serve`, which runs for months on machines of 512 MiB, would otherwise hold the other commands'
 * (import, export, setup, info, the licence texts: 430 KB of source, a third of the program).
 */

import { AssertionError } from "../util/assert.ts";
import { StoreError } from "../store/store.ts";
import { LsvdError } from "../util/errors.ts";
import { ListenError } from "../nbd/server.ts";
import { AttachError } from "../attach/attach.ts";
import { UsageError } from "./options.ts";
import { printError } from "../util/log.ts";
import { versionCommand, versionText } from "./version.ts";

interface Command {
  summary: string;
  run(args: string[]): Promise<number> | number;
}

/** Every subcommand, in the order `lsvd --help` lists them. */
const COMMANDS: Record<string, Command> = {
  serve: {
    summary: "Recover the volume and serve it over NBD (and optionally attach /dev/nbdN)",
    run: async (a) => (await import("./serve.ts")).serveCommand(a),
  },
  setup: {
    summary: "Ask where the volume lives, check the bucket, write an env file (systemd, docker, Fly)",
    run: async (a) => (await import("./setup.ts")).setupCommand(a),
  },
  info: {
    summary: "Describe the volume: size, objects, gaps, epochs, checkpoints, archive",
    run: async (a) => (await import("./info.ts")).infoCommand(a),
  },
  verify: {
    summary: "Fetch every object and check every checksum; exit 1 when anything is wrong",
    run: async (a) => (await import("./verify.ts")).verifyCommand(a),
  },
  export: {
    summary: "Write the disk (now, or at a past point) as a raw image file or to stdout",
    run: async (a) => (await import("./export.ts")).exportCommand(a),
  },
  import: {
    summary: "Import a raw image file (or stdin) into a new volume",
    run: async (a) => (await import("./import.ts")).importCommand(a),
  },
  rollback: {
    summary: "Return the volume to a past point; newer objects move under archive/",
    run: async (a) => (await import("./rollback.ts")).rollbackCommand(a),
  },
  snapshot: {
    summary: "Create, list or delete named snapshots (points kept exact until deleted)",
    run: async (a) => (await import("./snapshot.ts")).snapshotCommand(a),
  },
  clone: {
    summary: "Make a writable copy of the volume at a point under another prefix, copying no data",
    run: async (a) => (await import("./clone.ts")).cloneCommand(a),
  },
  flatten: {
    summary: "Copy what a clone still reads from its source into its own log, then release the source",
    run: async (a) => (await import("./clone.ts")).flattenCommand(a),
  },
  gc: {
    summary: "Say what garbage collection would reclaim now (--dry-run)",
    run: async (a) => (await import("./gc.ts")).gcCommand(a),
  },
  lease: {
    summary: "Show the writer lease, or break it when its holder is known to be dead",
    run: async (a) => (await import("./lease.ts")).leaseCommand(a),
  },
  journal: {
    summary: "Show what a write-back journal (serve --journal DIR) holds",
    run: async (a) => (await import("./journal.ts")).journalCommand(a),
  },
  status: {
    summary: "Show what a running lsvd serve is doing (from its --metrics endpoint)",
    run: async (a) => (await import("./status.ts")).statusCommand(a),
  },
  licenses: {
    summary: "Print the licenses of lsvd and of the components in this binary",
    run: async (a) => (await import("./licenses.ts")).licensesCommand(a),
  },
  version: { summary: "Print the lsvd version", run: versionCommand },
};

function usage(): string {
  const rows = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(10)} ${c.summary}`);
  return `Usage: lsvd <command> [options]

Bottomless block volumes: a virtual disk served over NBD whose bytes live as a log of
objects in an S3-compatible bucket (or a local directory).

Commands:
${rows.join("\n")}

Options:
  -h, --help     Show this help ('lsvd <command> --help' for a command's options)
  -V, --version  Print the version

Run 'lsvd <command> --help' for a command's options.
`;
}

export async function runCli(args: string[]): Promise<number> {
  const [command, ...rest] = args;
  try {
    if (command === undefined || command === "help" || command === "--help" || command === "-h") {
      if (command === "help" && rest[0] !== undefined) return await dispatch(rest[0], ["--help"]);
      console.log(usage());
      return command === undefined ? 2 : 0;
    }
    if (command === "--version" || command === "-V") {
      console.log(versionText());
      return 0;
    }
    return await dispatch(command, rest);
  } catch (e) {
    if (e instanceof AssertionError) throw e;
    if (isUserError(e)) {
      printError((e as Error).message);
      return 1;
    }
    throw e;
  }
}

function dispatch(command: string, args: string[]): Promise<number> | number {
  const entry = Object.hasOwn(COMMANDS, command) ? COMMANDS[command] : undefined;
  if (entry === undefined && /(^|\/)lsvd$/.test(command)) {
    // `docker run IMAGE /.fly/lsvd serve`: the image's entrypoint is lsvd already.
    throw new UsageError(
      `Unknown command "${command}": this is lsvd already (the container image's entrypoint); ` +
        `give the command alone, as in 'docker run ... lsvd ${args[0] ?? "--help"}'`,
    );
  }
  if (entry === undefined) throw new UsageError(`Unknown command "${command}"; run 'lsvd --help'`);
  return entry.run(args);
}

/** Errors a user or the environment causes (not lsvd): one line, exit 1. */
function isUserError(e: unknown): boolean {
  return e instanceof UsageError || e instanceof AttachError || e instanceof LsvdError ||
    e instanceof StoreError || e instanceof ListenError ||
    e instanceof Deno.errors.NotFound || e instanceof Deno.errors.PermissionDenied ||
    e instanceof Deno.errors.AddrInUse || e instanceof Deno.errors.AddrNotAvailable;
}
