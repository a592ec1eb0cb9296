/**
 * @module
 * What every offline tool (info, verify, export, import, rollback) does before its own work, in
 * one place: `-h/--help`, options with the same store settings and environment as `serve`, the
 * store reached with one clear line when it cannot be, and the volume listed once. Offline tools
 * never modify the bucket, except import and rollback, which say so in their help.
 */

import { listLogState, type LogState, volumeExists } from "../log/log_state.ts";
import { systemClock } from "../util/clock.ts";
import { LsvdError, messageOf } from "../util/errors.ts";
import type { Logger } from "../util/log.ts";
import type { RetryPolicy } from "../volume/retry.ts";
import { helpText, type OptionSpec, type OptionValues, parseOptions } from "./options.ts";
import { buildStore, STORE_OPTIONS, type StoreSelection } from "./store_options.ts";

/** Store calls are retried this often before a tool gives up with the store's own error line. */
const TOOL_ATTEMPTS_MAX = 6;

export interface ToolSpec {
  command: string;
  /** Shown after `lsvd <command>` in the usage line, e.g. "[options] FILE|-". */
  usage: string;
  summary: string;
  options: Record<string, OptionSpec>;
}

export type ParsedTool =
  | { help: true }
  | { help: false; values: OptionValues; positionals: string[]; selection: StoreSelection };

/** Parses a tool's arguments; prints help and returns {help: true} for -h/--help. */
export function parseTool(args: string[], spec: ToolSpec): ParsedTool {
  const specs = { ...spec.options, ...STORE_OPTIONS };
  if (args.includes("-h") || args.includes("--help")) {
    const text = helpText(spec.command, spec.summary, specs)
      .replace(`lsvd ${spec.command} [options]`, `lsvd ${spec.command} ${spec.usage}`);
    console.log(text);
    return { help: true };
  }
  const { values, positionals } = parseOptions(args, specs);
  return { help: false, values, positionals, selection: buildStore(values) };
}

export function toolRetry(log: Logger): RetryPolicy {
  return {
    clock: systemClock,
    attemptsMax: TOOL_ATTEMPTS_MAX,
    onRetry: (n, e) => log(`Retrying a store request (attempt ${n}: ${messageOf(e)}).`),
  };
}

/**
 * Lists the volume under the selected prefix. A bucket is checked first (a missing bucket or bad
 * credentials are one line); a directory is not (its check creates it, and a tool must not).
 */
export async function listVolume(
  selection: StoreSelection,
  retry: RetryPolicy,
  options: { mustExist: boolean },
): Promise<LogState> {
  if (selection.remote) await selection.store.check?.();
  const state = await listLogState(selection.store, selection.prefix, retry);
  if (options.mustExist && !volumeExists(state)) {
    throw new LsvdError("invalid", `There is no volume ${where(selection)}`);
  }
  return state;
}

/** `under prefix "vol1/" in the /data directory` or `in the b bucket`. */
export function where(selection: StoreSelection): string {
  const p = selection.prefix === "" ? "" : `under prefix "${selection.prefix}" `;
  return `${p}in ${selection.store.description}`;
}
