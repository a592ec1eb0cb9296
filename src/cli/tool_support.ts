/**
 * @module
 * What every offline tool (info, verify, export, import, rollback) does before its own work, in
 * one place: `-h/--help`, options with the same store settings and environment as `serve`, the
 * store reached with one clear line when it cannot be, and the volume listed once. Offline tools
 * never modify the bucket, except import and rollback, which say so in their help.
 */

import { type AcquiredLease, acquireLease, describeLease, LeaseKeeper, readLease } from "../log/lease.ts";
import { listLogState, type LogState, volumeExists } from "../log/log_state.ts";
import { systemClock } from "../util/clock.ts";
import { isLsvdError, LsvdError, messageOf } from "../util/errors.ts";
import type { Logger } from "../util/log.ts";
import { retrying, type RetryPolicy } from "../store/retry.ts";
import {
  helpText,
  integerOption,
  type Options,
  type OptionSpecs,
  parseOptions,
  type ValuesOf,
  wantsHelp,
} from "./options.ts";
import { buildStore, CREDENTIALS_NOTE, STORE_OPTIONS, type StoreSelection } from "./store_options.ts";

/** Header reads in flight while a tool loads the log (each is a small ranged GET). */
export const TOOL_LOAD_CONCURRENCY = 64;

/** Store calls are retried this often before a tool gives up with the store's own error line. */
const TOOL_ATTEMPTS_MAX = 6;

/** GETs or PUTs in flight at once in export, import and verify (`--parallel`). */
export const TOOL_PARALLEL_DEFAULT = 32;

/** `--parallel N`: requests in flight at once, 1 to 1024; `help` says what runs in parallel. */
export function parallelOption(help: string) {
  return integerOption({ help, default: TOOL_PARALLEL_DEFAULT, min: 1, max: 1024, placeholder: "N" });
}

export interface ToolSpec<S extends OptionSpecs> {
  command: string;
  /** Shown after `lsvd <command>` in the usage line, e.g. "[options] FILE|-". */
  usage: string;
  summary: string;
  options: S;
}

/** A tool's own options and the store options every tool takes. */
export type ToolOptions<S extends OptionSpecs> = S & typeof STORE_OPTIONS;

export type ParsedTool<S extends OptionSpecs> =
  | { help: true }
  | {
    help: false;
    /** Typed by the tool's declarations (and the store options). */
    values: ValuesOf<ToolOptions<S>>;
    options: Options<ToolOptions<S>>;
    positionals: string[];
    selection: StoreSelection;
  };

/** Parses a tool's arguments; prints help and returns {help: true} for -h/--help. */
export function parseTool<S extends OptionSpecs>(args: string[], spec: ToolSpec<S>): ParsedTool<S> {
  const specs: ToolOptions<S> = { ...spec.options, ...STORE_OPTIONS };
  if (wantsHelp(args)) {
    console.log(helpText({
      command: spec.command,
      usage: spec.usage,
      summary: spec.summary,
      specs,
      notes: [CREDENTIALS_NOTE],
    }));
    return { help: true };
  }
  const options = parseOptions(args, specs);
  return {
    help: false,
    values: options.values,
    options,
    positionals: options.positionals,
    selection: buildStore(options),
  };
}

/** The tools' retry policy: TOOL_ATTEMPTS_MAX attempts of each store call, a line before each retry. */
export function toolRetry(log: Logger): RetryPolicy {
  return {
    clock: systemClock,
    attemptsMax: TOOL_ATTEMPTS_MAX,
    onRetry: (n, e) => log(`Retrying a store request (attempt ${n}: ${messageOf(e)}).`),
  };
}

/**
 * The selection with its store retried by toolRetry(log): a tool makes this once and hands the
 * store down, so every store call it makes is retried in that one layer (src/store/retry.ts).
 */
export function retriedSelection(selection: StoreSelection, log: Logger): StoreSelection {
  return { ...selection, store: retrying(selection.store, toolRetry(log)) };
}

/**
 * Lists the volume under the selected prefix. A bucket is checked first (a missing bucket or bad
 * credentials are one line); a directory is not (its check creates it, and a tool must not).
 */
export async function listVolume(
  selection: StoreSelection,
  options: { mustExist: boolean },
): Promise<LogState> {
  if (selection.remote) await selection.store.check?.();
  const state = await listLogState(selection.store, selection.prefix);
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

/** A writing tool's hold on the volume: the lease it took and the epoch it writes under. */
export interface ToolLease {
  epoch: number;
  /**
   * The upload window of the writer whose lease this tool took, when that writer did not shut down
   * cleanly (its uploads may still land); 0 when it released the lease or there was none.
   */
  previousWindowObjects: number;
  /** Throws the fenced error once another writer took the lease; call before every write. */
  check(): void;
  /** Renews now; resolves only while the lease is still ours (before deleting anything). */
  confirm(): Promise<void>;
  /** Marks the lease released (the tool finished cleanly). */
  release(): Promise<void>;
  /** Stops renewing without releasing (the tool failed half way). */
  abandon(): void;
}

/**
 * Takes the volume's writer lease for a writing tool (import, rollback): refused in one line
 * while a daemon holds it, or while the lease names a write-back journal that may hold
 * acknowledged writes (unless `abandonJournal`: changing the log makes that journal unreplayable);
 * renewed while the tool runs.
 */
export async function takeToolLease(
  selection: StoreSelection,
  log: Logger,
  windowObjects: number,
  options: { abandonJournal?: boolean } = {},
): Promise<ToolLease> {
  const { store, prefix } = selection;
  let acquired: AcquiredLease;
  try {
    acquired = await acquireLease(store, prefix, {
      clock: systemClock,
      log,
      windowObjects,
      abandonJournal: options.abandonJournal ?? false,
    });
  } catch (e) {
    if (!isLsvdError(e, "fenced")) throw e;
    const held = await readLease(store, prefix);
    const holder = held === undefined ? "another writer" : describeLease(held.lease);
    const lapse = held === undefined
      ? ""
      : ` (a lease nobody renews lapses ${held.lease.durationMs / 1000} s after its last renewal)`;
    throw new LsvdError(
      "fenced",
      `Cannot change the volume ${
        where(selection)
      }: its writer lease is held by ${holder}; stop that daemon first${lapse}`,
      { cause: e },
    );
  }
  let lost: LsvdError | undefined;
  const keeper = new LeaseKeeper(store, prefix, acquired, {
    clock: systemClock,
    log,
    onLost: (e) => (lost = e),
  });
  const previous = acquired.previous;
  return {
    epoch: acquired.stored.lease.epoch,
    previousWindowObjects: previous === undefined || previous.released ? 0 : previous.windowObjects,
    check: () => {
      if (lost !== undefined) throw lost;
    },
    confirm: () => keeper.confirm(),
    release: () => keeper.release(),
    abandon: () => keeper.stop(),
  };
}

/** How long a writing tool watches the log for a writer that holds no lease (lsvd 0.1, or an older serve). */
const WRITER_WATCH_MS = 2_000;

/**
 * Best effort for writers that take no lease: lists the log twice, WRITER_WATCH_MS apart, and
 * refuses when it changed (a daemon is writing). An idle daemon cannot be seen this way.
 */
export async function refuseActiveWriter(
  selection: StoreSelection,
  state: LogState,
): Promise<void> {
  await new Promise((r) => setTimeout(r, WRITER_WATCH_MS));
  const again = await listLogState(selection.store, selection.prefix);
  const before = state.objects.at(-1)?.sequence ?? 0;
  const after = again.objects.at(-1)?.sequence ?? 0;
  if (after !== before || again.objects.length !== state.objects.length) {
    throw new LsvdError(
      "fenced",
      `Cannot change the volume ${where(selection)}: it is being written (object ${after} appeared while ` +
        `watching for ${WRITER_WATCH_MS / 1000} s); stop the daemon that serves it first`,
    );
  }
}

/** A writing tool stopped by SIGINT or SIGTERM: it undid what it could and exits 128 + the signal's number. */
export class Interrupted extends Error {
  readonly signal: "SIGINT" | "SIGTERM";
  constructor(signal: "SIGINT" | "SIGTERM") {
    super(`stopped by ${signal}`);
    this.name = "Interrupted";
    this.signal = signal;
  }

  get exitCode(): number {
    return this.signal === "SIGINT" ? 130 : 143;
  }
}

/**
 * Runs work until it settles or SIGINT/SIGTERM arrives; then rejects with Interrupted at once (the
 * work is left behind, its failure ignored) so the tool can remove what it made before it exits. A
 * signal during that cleanup is logged and otherwise ignored, until run() settles.
 */
export async function interruptible<T>(
  log: Logger,
  run: (stopped: Promise<never>) => Promise<T>,
): Promise<T> {
  let received: "SIGINT" | "SIGTERM" | undefined;
  let reject!: (e: Error) => void;
  const stopped = new Promise<never>((_, r) => (reject = r));
  stopped.catch(() => {});
  const listeners = (["SIGINT", "SIGTERM"] as const).map((signal) => {
    const listener = () => {
      if (received !== undefined) {
        log(`Received ${signal} again; still removing what was written, please wait.`);
        return;
      }
      received = signal;
      reject(new Interrupted(signal));
    };
    Deno.addSignalListener(signal, listener);
    return [signal, listener] as const;
  });
  try {
    return await run(stopped);
  } finally {
    for (const [signal, listener] of listeners) Deno.removeSignalListener(signal, listener);
  }
}

/** Awaits work unless `stopped` rejects first (the work's later failure is then ignored). */
export function unlessStopped<T>(work: Promise<T>, stopped: Promise<never>): Promise<T> {
  work.catch(() => {});
  return Promise.race([work, stopped]);
}
