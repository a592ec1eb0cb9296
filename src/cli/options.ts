/**
 * @module
 * Command-line and environment options, declared once and checked at the edge. Each option is one
 * declaration (textOption, flagOption, sizeOption, durationOption, integerOption, listenOption,
 * choiceOption): its kind, typed default, environment names, help and group. parseOptions() turns
 * the command line, then `LSVD_<NAME>` or the names Fly's lsvd used, then the default, into
 * `values` whose type is derived from the declarations (ValuesOf), so commands read typed values
 * with no casts. A bad value becomes one UsageError line naming where it came from (`--size` or
 * `FLY_LSVD_DEVICE_SIZE`), never a stack trace. Help is generated here for every subcommand,
 * grouped the same way everywhere, and prints each default from the same typed value.
 */

import { parseArgs } from "node:util";
import { formatSize, sectorSizeProblem } from "../util/sizes.ts";

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** Help sections, in the order they are printed. */
export const GROUPS = {
  store: "Store (where the volume lives)",
  volume: "Volume",
  serving: "Serving NBD",
  kernel: "Kernel device and filesystem",
  durability: "Write-back journal (a FLUSH durable on local disk, not yet in the store)",
  tuning: "Tuning (defaults scale with this machine's memory)",
  other: "Options",
} as const;
export type OptionGroup = keyof typeof GROUPS;

/** What every declaration says, whatever its kind. */
export interface OptionDeclaration {
  help: string;
  group?: OptionGroup;
  /** Environment variables read when the flag is absent, first found wins (LSVD_<NAME> is implied). */
  env?: readonly string[];
  /**
   * Read from the command line only, never from the environment: a flag that accepts losing data
   * (or overwriting something) must be typed for the run that means it, not left in an env file that
   * every later start reads.
   */
  commandLineOnly?: boolean;
  placeholder?: string;
}

/** One option: its declaration, how its text becomes a value of type T, and how a value is shown. */
export interface OptionSpec<T = unknown> extends Readonly<OptionDeclaration> {
  /** How the command line carries it: a flag alone, or a flag with a value. */
  readonly type: "string" | "boolean";
  /** Text (from the command line or the environment) -> value; throws a UsageError naming `source`. */
  parse(raw: string, source: string): T;
  /** A value as help prints it (the default). */
  show(value: T): string;
  /** The value when neither the command line nor the environment gives one. */
  readonly default?: T;
}

export type OptionSpecs = Readonly<Record<string, OptionSpec>>;

/** The value an option yields: a flag is false when absent, an option without a default may be undefined. */
export type ValueOf<S> = S extends { readonly type: "boolean" } ? boolean
  : S extends { readonly default: infer T } ? T
  : S extends OptionSpec<infer T> ? T | undefined
  : never;

/** The typed values a set of declarations yields, by option name. */
export type ValuesOf<S extends OptionSpecs> = { -readonly [K in keyof S]: ValueOf<S[K]> };

/** A declaration's spec; its default becomes required in the type when the declaration has one. */
type Declared<T, D> = OptionSpec<T> & (D extends { default: unknown } ? { readonly default: T } : unknown);

function declared<T, D extends OptionDeclaration & { default?: T }>(
  declaration: D,
  parse: (raw: string, source: string) => T,
  show: (value: T) => string,
): Declared<T, D> {
  return { ...declaration, type: "string", parse, show } as OptionSpec<T> as Declared<T, D>;
}

/** Free text (a path, a name, a point). */
export function textOption<D extends OptionDeclaration & { default?: string }>(d: D): Declared<string, D> {
  return declared<string, D>(d, (raw) => raw, (v) => v);
}

/** A flag: true when given (or when its variable says true, yes, on or 1), else false. */
export function flagOption(d: OptionDeclaration): OptionSpec<boolean> & { readonly type: "boolean" } {
  return { ...d, type: "boolean", parse: parseBoolean, show: String };
}

/** A whole number from min to max. */
export function integerOption<D extends OptionDeclaration & { default?: number; min: number; max: number }>(
  d: D,
): Declared<number, D> {
  const { min, max, ...declaration } = d;
  return declared<number, D>(declaration as D, (raw, source) => parseInteger(raw, source, min, max), String);
}

/** Limits a size option may add to "a positive size". */
export interface SizeLimits {
  /** "0" is accepted too (e.g. a cache that can be off). */
  zero?: boolean;
  minBytes?: number;
  /** Whole sectors up to this many bytes (sectorSizeProblem: a volume's or an object's size). */
  sectorsUpTo?: number;
}

/** Bytes, given as "10G", "512MiB" or "4096"; printed back as the largest whole unit. */
export function sizeOption<D extends OptionDeclaration & SizeLimits & { default?: number }>(
  d: D,
): Declared<number, D> {
  const { zero, minBytes, sectorsUpTo, ...declaration } = d;
  const parse = (raw: string, source: string): number => {
    if (zero === true && raw.trim() === "0") return 0;
    const bytes = parseSize(raw, source);
    if (minBytes !== undefined && bytes < minBytes) {
      throw new UsageError(`Invalid ${source}: at least ${formatSize(minBytes)}`);
    }
    const problem = sectorsUpTo === undefined ? undefined : sectorSizeProblem(bytes, sectorsUpTo);
    if (problem !== undefined) throw new UsageError(`Invalid ${source}: ${problem}`);
    return bytes;
  };
  return declared<number, D>(declaration as D, parse, formatSize);
}

/**
 * Milliseconds, given as 500ms, 90s, 30m, 24h or 7d (a bare number is seconds); with `off`, "off" is 0;
 * with `minMs`/`maxMs`, any other value outside that range is refused.
 */
export function durationOption<
  D extends OptionDeclaration & { default?: number; off?: boolean; minMs?: number; maxMs?: number },
>(
  d: D,
): Declared<number, D> {
  const { off, minMs, maxMs, ...declaration } = d;
  const parse = (raw: string, source: string) => {
    if (off === true && raw === "off") return 0;
    const ms = parseDurationMs(raw, source);
    if ((minMs !== undefined && ms < minMs) || (maxMs !== undefined && ms > maxMs)) {
      const range = maxMs === undefined
        ? `at least ${formatDuration(minMs!)}`
        : `from ${formatDuration(minMs ?? 0)} to ${formatDuration(maxMs)}`;
      throw new UsageError(`Invalid ${source}: "${raw}" must be ${range}`);
    }
    return ms;
  };
  return declared<number, D>(declaration as D, parse, formatDuration);
}

/** A TCP address, "HOST:PORT", ":PORT" or "PORT" (host 127.0.0.1). */
export function listenOption(d: OptionDeclaration): Declared<ListenAddress, OptionDeclaration> {
  return declared<ListenAddress, OptionDeclaration>(d, parseListen, (a) => `${a.hostname}:${a.port}`);
}

/** One of a fixed set of words. */
export function choiceOption<const C extends string, D extends OptionDeclaration & { default?: NoInfer<C> }>(
  choices: readonly C[],
  d: D,
): Declared<C, D> {
  const said = choices.length === 1
    ? choices[0]!
    : `${choices.slice(0, -1).join(", ")} or ${choices.at(-1)!}`;
  const parse = (raw: string, source: string): C => {
    if ((choices as readonly string[]).includes(raw)) return raw as C;
    throw new UsageError(`Invalid ${source}: "${raw}" must be ${said}`);
  };
  return declared<C, D>(d, parse, (v) => v);
}

export function envNameOf(option: string): string {
  return `LSVD_${option.toUpperCase().replaceAll("-", "_")}`;
}

/** True when args ask for help (`-h` or `--help`), checked before anything else is parsed. */
export function wantsHelp(args: string[]): boolean {
  return args.includes("-h") || args.includes("--help");
}

/** Parsed options: typed values, and where each came from, so later checks can name it. */
export class Options<S extends OptionSpecs = OptionSpecs> {
  readonly positionals: string[];
  /** Every value by option name (defaults filled in). */
  readonly values: ValuesOf<S>;
  #sources: Record<string, string>;

  constructor(values: ValuesOf<S>, sources: Record<string, string>, positionals: string[]) {
    this.values = values;
    this.#sources = sources;
    this.positionals = positionals;
  }

  /** `--name`, or the environment variable the value came from. */
  source(name: keyof S & string): string {
    return this.#sources[name] ?? `--${name}`;
  }

  /** Given on the command line or in the environment (not a default). */
  isSet(name: keyof S & string): boolean {
    return this.#sources[name] !== undefined;
  }

  /** Given on the command line (an environment variable may come from a file many starts share). */
  isGiven(name: keyof S & string): boolean {
    return this.#sources[name]?.startsWith("--") === true;
  }

  /** Fails when positional arguments were given to a command that takes none. */
  noPositionals(): this {
    if (this.positionals.length > 0) throw new UsageError(`Unexpected argument "${this.positionals[0]}"`);
    return this;
  }
}

/** Parses args against specs, filling gaps from the environment, then defaults; every value is checked. */
export function parseOptions<S extends OptionSpecs>(
  args: string[],
  specs: S,
  env: (name: string) => string | undefined = (n) => Deno.env.get(n),
): Options<S> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options: Object.fromEntries(Object.entries(specs).map(([k, s]) => [k, { type: s.type }])),
      allowPositionals: true,
      strict: true,
    });
  } catch (e) {
    throw new UsageError((e as Error).message.replace(/\. To specify.*$/s, ""));
  }
  const given = parsed.values as Record<string, string | boolean | undefined>;
  const values: Record<string, unknown> = {};
  const sources: Record<string, string> = {};
  for (const [name, spec] of Object.entries(specs)) {
    const found = valueFrom(name, spec, given[name], env);
    if (found !== undefined) sources[name] = found.source;
    values[name] = found !== undefined ? found.value : spec.type === "boolean" ? false : spec.default;
  }
  return new Options<S>(values as ValuesOf<S>, sources, parsed.positionals);
}

/** The option's value from the command line, else its first non-empty variable; undefined when neither. */
function valueFrom(
  name: string,
  spec: OptionSpec,
  given: string | boolean | undefined,
  env: (name: string) => string | undefined,
): { value: unknown; source: string } | undefined {
  const flag = `--${name}`;
  if (given === true) return { value: true, source: flag };
  if (typeof given === "string") return { value: spec.parse(given, flag), source: flag };
  if (spec.commandLineOnly) return undefined;
  for (const envName of [envNameOf(name), ...(spec.env ?? [])]) {
    const raw = env(envName);
    if (raw === undefined || raw === "") continue;
    return { value: spec.parse(raw, envName), source: envName };
  }
  return undefined;
}

function parseBoolean(raw: string, name: string): boolean {
  if (/^(1|true|yes|on)$/i.test(raw)) return true;
  if (/^(0|false|no|off)$/i.test(raw)) return false;
  throw new UsageError(`Invalid ${name}: "${raw}" is not a boolean (use true or false)`);
}

const UNITS: Record<string, number> = { "": 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40, P: 2 ** 50 };

/** "10G", "512MiB", "4096" -> bytes; `what` names the flag or variable in the error. */
export function parseSize(raw: string, what: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(?:i?B)?\s*$/i.exec(raw);
  if (!m) throw new UsageError(`Invalid ${what}: "${raw}" is not a size (bytes, or with K, M, G or T)`);
  const bytes = Number(m[1]) * UNITS[m[2]!.toUpperCase()]!;
  if (!Number.isSafeInteger(bytes) || bytes <= 0) {
    throw new UsageError(`Invalid ${what}: "${raw}" is out of range`);
  }
  return bytes;
}

export function parseInteger(raw: string, what: string, min: number, max: number): number {
  const n = Number(raw);
  if (!/^\d+$/.test(raw.trim()) || n < min || n > max) {
    throw new UsageError(`Invalid ${what}: "${raw}" must be a whole number from ${min} to ${max}`);
  }
  return n;
}

export interface ListenAddress {
  hostname: string;
  port: number;
}

/** "HOST:PORT", ":PORT" or "PORT" -> address (host defaults to 127.0.0.1); `what` names the source. */
export function parseListen(raw: string, what = "--listen"): ListenAddress {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$|^(\d+)$/.exec(raw.trim());
  if (!m) throw new UsageError(`Invalid ${what}: "${raw}" is not HOST:PORT`);
  const port = parseInteger(m[3] ?? m[4]!, `${what} port`, 0, 65535);
  return { hostname: m[1] ?? (m[2] || "127.0.0.1"), port };
}

const DURATION_UNITS_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Parses a duration such as 500ms, 90s, 30m, 24h or 7d (a bare number is seconds). */
export function parseDurationMs(raw: string, what: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/.exec(raw.trim());
  if (m === null) {
    throw new UsageError(`Invalid ${what}: "${raw}" is not a duration such as 500ms, 90s, 30m, 24h or 7d`);
  }
  return Math.round(Number(m[1]) * DURATION_UNITS_MS[m[2] ?? "s"]!);
}

/** Milliseconds as parseDurationMs reads them back: whole hours in h, else whole seconds in s, else ms. */
export function formatDuration(ms: number): string {
  if (ms > 0 && ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}

export interface HelpText {
  command: string;
  summary: string;
  specs: OptionSpecs;
  /** Shell lines printed under "Examples:". */
  examples?: string[];
  /** Extra paragraphs (e.g. the credential variables) printed at the end. */
  notes?: string[];
  /** What follows `lsvd <command>` in the usage line; default "[options]". */
  usage?: string;
}

/** Help for one subcommand: usage, summary, options grouped by GROUPS, examples, notes. */
export function helpText(help: HelpText): string {
  const out = [`Usage: lsvd ${help.command} ${help.usage ?? "[options]"}`, "", help.summary];
  for (const [group, title] of Object.entries(GROUPS) as [OptionGroup, string][]) {
    const rows = Object.entries(help.specs).filter(([, s]) => (s.group ?? "other") === group);
    if (rows.length === 0) continue;
    out.push("", `${title}:`);
    for (const [name, s] of rows) out.push(...helpRows(name, s));
  }
  out.push("", `  ${"-h, --help".padEnd(26)} Show this help`);
  if (help.examples !== undefined && help.examples.length > 0) {
    out.push("", "Examples:", ...help.examples.map((e) => `  ${e}`));
  }
  for (const note of help.notes ?? []) out.push("", note);
  return out.join("\n") + "\n";
}

/** An option's two help lines: the flag, its help and default; where else it can come from. */
function helpRows(name: string, s: OptionSpec): string[] {
  const flag = s.type === "boolean" ? `--${name}` : `--${name} ${s.placeholder ?? "VALUE"}`;
  const dflt = s.default === undefined || s.type === "boolean" ? "" : ` (default: ${s.show(s.default)})`;
  const env = s.commandLineOnly ? "none (command line only)" : [envNameOf(name), ...(s.env ?? [])].join(", ");
  return [`  ${flag.padEnd(26)} ${s.help}${dflt}`, `  ${"".padEnd(26)} env: ${env}`];
}
