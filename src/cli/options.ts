/**
 * @module
 * Command-line and environment options, checked at the edge: every option can come from the
 * command line, from `LSVD_<NAME>`, or from the names Fly's lsvd used. Bad values become one
 * clear UsageError line, never a stack trace.
 */

import { parseArgs } from "node:util";

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

export interface OptionSpec {
  type: "string" | "boolean";
  help: string;
  /** Environment variables read when the flag is absent, first found wins (LSVD_<NAME> is implied). */
  env?: string[];
  default?: string;
  placeholder?: string;
}

export type OptionValues = Record<string, string | boolean | undefined>;

export function envNameOf(option: string): string {
  return `LSVD_${option.toUpperCase().replaceAll("-", "_")}`;
}

/** Parses args against specs, filling gaps from the environment, then defaults. */
export function parseOptions(
  args: string[],
  specs: Record<string, OptionSpec>,
  env: (name: string) => string | undefined = (n) => Deno.env.get(n),
): { values: OptionValues; positionals: string[] } {
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
  const values: OptionValues = {};
  for (const [name, spec] of Object.entries(specs)) {
    let v: string | boolean | undefined = (parsed.values as OptionValues)[name];
    if (v === undefined) {
      for (const envName of [envNameOf(name), ...(spec.env ?? [])]) {
        const raw = env(envName);
        if (raw === undefined || raw === "") continue;
        v = spec.type === "boolean" ? parseBoolean(raw, envName) : raw;
        break;
      }
    }
    values[name] = v ?? spec.default;
  }
  return { values, positionals: parsed.positionals };
}

function parseBoolean(raw: string, name: string): boolean {
  if (/^(1|true|yes|on)$/i.test(raw)) return true;
  if (/^(0|false|no|off)$/i.test(raw)) return false;
  throw new UsageError(`Invalid ${name}: "${raw}" is not a boolean (use true or false)`);
}

const UNITS: Record<string, number> = { "": 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40, P: 2 ** 50 };

/** "10G", "512MiB", "4096" → bytes. */
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

/** "HOST:PORT", ":PORT" or "PORT" → listen address (host defaults to 127.0.0.1). */
export function parseListen(raw: string): { hostname: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$|^(\d+)$/.exec(raw.trim());
  if (!m) throw new UsageError(`Invalid --listen: "${raw}" is not HOST:PORT`);
  const port = parseInteger(m[3] ?? m[4]!, "--listen port", 0, 65535);
  return { hostname: m[1] ?? (m[2] || "127.0.0.1"), port };
}

export function helpText(command: string, summary: string, specs: Record<string, OptionSpec>): string {
  const rows = Object.entries(specs).map(([name, s]) => {
    const flag = s.type === "boolean" ? `--${name}` : `--${name} ${s.placeholder ?? "VALUE"}`;
    const envs = [envNameOf(name), ...(s.env ?? [])].join(", ");
    const dflt = s.default === undefined ? "" : ` (default: ${s.default})`;
    return `  ${flag.padEnd(26)} ${s.help}${dflt}\n  ${"".padEnd(26)} env: ${envs}`;
  });
  return `Usage: lsvd ${command} [options]\n\n${summary}\n\nOptions:\n${
    rows.join("\n")
  }\n  --help                     Show this help\n`;
}
