/**
 * @module
 * Command-line and environment options, checked at the edge: every option can come from the
 * command line, from `LSVD_<NAME>`, or from the names Fly's lsvd used. A bad value becomes one
 * UsageError line naming where it came from (`--size` or `FLY_LSVD_DEVICE_SIZE`), never a stack
 * trace. Help text is generated here for every subcommand, grouped the same way everywhere.
 */

import { parseArgs } from "node:util";

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

export interface OptionSpec {
  type: "string" | "boolean";
  help: string;
  group?: OptionGroup;
  /** Environment variables read when the flag is absent, first found wins (LSVD_<NAME> is implied). */
  env?: string[];
  /**
   * Read from the command line only, never from the environment: a flag that accepts losing data
   * (or overwriting something) must be typed for the run that means it, not left in an env file that
   * every later start reads.
   */
  commandLineOnly?: boolean;
  default?: string;
  placeholder?: string;
}

export type OptionSpecs = Record<string, OptionSpec>;
export type OptionValues = Record<string, string | boolean | undefined>;

export function envNameOf(option: string): string {
  return `LSVD_${option.toUpperCase().replaceAll("-", "_")}`;
}

/** True when args ask for help (`-h` or `--help`), checked before anything else is parsed. */
export function wantsHelp(args: string[]): boolean {
  return args.includes("-h") || args.includes("--help");
}

/** Parsed options that remember where each value came from, so errors can name it. */
export class Options {
  readonly positionals: string[];
  #values: Record<string, string | boolean | undefined>;
  #sources: Record<string, string>;

  constructor(
    values: Record<string, string | boolean | undefined>,
    sources: Record<string, string>,
    positionals: string[],
  ) {
    this.#values = values;
    this.#sources = sources;
    this.positionals = positionals;
  }

  /** Every value by option name (defaults filled in). */
  get values(): OptionValues {
    return this.#values;
  }

  /** `--name`, or the environment variable the value came from. */
  source(name: string): string {
    return this.#sources[name] ?? `--${name}`;
  }

  /** Given on the command line or in the environment (not a default). */
  isSet(name: string): boolean {
    return this.#sources[name] !== undefined;
  }

  string(name: string): string | undefined {
    const v = this.#values[name];
    return typeof v === "string" ? v : undefined;
  }

  flag(name: string): boolean {
    return this.#values[name] === true;
  }

  size(name: string): number | undefined {
    const raw = this.string(name);
    return raw === undefined ? undefined : parseSize(raw, this.source(name));
  }

  integer(name: string, min: number, max: number): number | undefined {
    const raw = this.string(name);
    return raw === undefined ? undefined : parseInteger(raw, this.source(name), min, max);
  }

  /** Fails when positional arguments were given to a command that takes none. */
  noPositionals(): this {
    if (this.positionals.length > 0) throw new UsageError(`Unexpected argument "${this.positionals[0]}"`);
    return this;
  }
}

/** Parses args against specs, filling gaps from the environment, then defaults. */
export function parseOptions(
  args: string[],
  specs: OptionSpecs,
  env: (name: string) => string | undefined = (n) => Deno.env.get(n),
): Options {
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
  const values: Record<string, string | boolean | undefined> = {};
  const sources: Record<string, string> = {};
  for (const [name, spec] of Object.entries(specs)) {
    let v: string | boolean | undefined = (parsed.values as Record<string, string | boolean>)[name];
    if (v !== undefined) sources[name] = `--${name}`;
    else if (!spec.commandLineOnly) {
      for (const envName of [envNameOf(name), ...(spec.env ?? [])]) {
        const raw = env(envName);
        if (raw === undefined || raw === "") continue;
        v = spec.type === "boolean" ? parseBoolean(raw, envName) : raw;
        sources[name] = envName;
        break;
      }
    }
    values[name] = v ?? spec.default;
  }
  return new Options(values, sources, parsed.positionals);
}

function parseBoolean(raw: string, name: string): boolean {
  if (/^(1|true|yes|on)$/i.test(raw)) return true;
  if (/^(0|false|no|off)$/i.test(raw)) return false;
  throw new UsageError(`Invalid ${name}: "${raw}" is not a boolean (use true or false)`);
}

const UNITS: Record<string, number> = { "": 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40, P: 2 ** 50 };

/** "10G", "512MiB", "4096" → bytes; `what` names the flag or variable in the error. */
export function parseSize(raw: string, what: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(?:i?B)?\s*$/i.exec(raw);
  if (!m) throw new UsageError(`Invalid ${what}: "${raw}" is not a size (bytes, or with K, M, G or T)`);
  const bytes = Number(m[1]) * UNITS[m[2]!.toUpperCase()]!;
  if (!Number.isSafeInteger(bytes) || bytes <= 0) {
    throw new UsageError(`Invalid ${what}: "${raw}" is out of range`);
  }
  return bytes;
}

/** Bytes as the largest whole unit: 268435456 → "256M". */
export function formatSize(bytes: number): string {
  for (const unit of ["T", "G", "M", "K"]) {
    const factor = UNITS[unit]!;
    if (bytes >= factor && bytes % factor === 0) return `${bytes / factor}${unit}`;
  }
  return String(bytes);
}

export function parseInteger(raw: string, what: string, min: number, max: number): number {
  const n = Number(raw);
  if (!/^\d+$/.test(raw.trim()) || n < min || n > max) {
    throw new UsageError(`Invalid ${what}: "${raw}" must be a whole number from ${min} to ${max}`);
  }
  return n;
}

/** "HOST:PORT", ":PORT" or "PORT" → address (host defaults to 127.0.0.1); `what` names the source. */
export function parseListen(raw: string, what = "--listen"): { hostname: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$|^(\d+)$/.exec(raw.trim());
  if (!m) throw new UsageError(`Invalid ${what}: "${raw}" is not HOST:PORT`);
  const port = parseInteger(m[3] ?? m[4]!, `${what} port`, 0, 65535);
  return { hostname: m[1] ?? (m[2] || "127.0.0.1"), port };
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
    for (const [name, s] of rows) {
      const flag = s.type === "boolean" ? `--${name}` : `--${name} ${s.placeholder ?? "VALUE"}`;
      const dflt = s.default === undefined ? "" : ` (default: ${s.default})`;
      out.push(`  ${flag.padEnd(26)} ${s.help}${dflt}`);
      const env = s.commandLineOnly
        ? "none (command line only)"
        : [envNameOf(name), ...(s.env ?? [])].join(", ");
      out.push(`  ${"".padEnd(26)} env: ${env}`);
    }
  }
  out.push("", `  ${"-h, --help".padEnd(26)} Show this help`);
  if (help.examples !== undefined && help.examples.length > 0) {
    out.push("", "Examples:", ...help.examples.map((e) => `  ${e}`));
  }
  for (const note of help.notes ?? []) out.push("", note);
  return out.join("\n") + "\n";
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
