import assert from "node:assert/strict";
import {
  choiceOption,
  durationOption,
  flagOption,
  helpText,
  integerOption,
  listenOption,
  parseOptions,
  sizeOption,
  textOption,
  UsageError,
  type ValuesOf,
} from "./options.ts";
import { serveOptions } from "./serve.ts";
import { tuningDefaults } from "./memory_defaults.ts";
import { formatSize } from "../util/sizes.ts";
import { DEFAULT_RETENTION_MS } from "../volume/volume_options.ts";

const SPECS = {
  size: sizeOption({ help: "Size", env: ["FLY_SIZE"], sectorsUpTo: 2 ** 40, placeholder: "SIZE" }),
  cache: sizeOption({ help: "Cache", default: 64 * 2 ** 20, zero: true, placeholder: "SIZE" }),
  retention: durationOption({ help: "Keep", default: DEFAULT_RETENTION_MS, placeholder: "DURATION" }),
  every: durationOption({ help: "Every", default: 60_000, off: true, placeholder: "DURATION|off" }),
  delay: durationOption({
    help: "Delay",
    default: 2000,
    minMs: 1,
    maxMs: 3_600_000,
    placeholder: "DURATION",
  }),
  interval: durationOption({ help: "Interval", default: 1000, minMs: 10, placeholder: "DURATION" }),
  uploads: integerOption({ help: "Uploads", default: 32, min: 1, max: 1024, placeholder: "N" }),
  listen: listenOption({ help: "Listen", placeholder: "HOST:PORT" }),
  policy: choiceOption(["group", "each"], { help: "Policy", default: "group", placeholder: "group|each" }),
  name: textOption({ help: "Name", default: "lsvd" }),
  quiet: flagOption({ help: "Quiet" }),
  danger: flagOption({ help: "Danger", commandLineOnly: true }),
};

function parse(args: string[], env: Record<string, string> = {}) {
  return parseOptions(args, SPECS, (n) => env[n]);
}

function refusal(args: string[], env: Record<string, string> = {}): string {
  try {
    parse(args, env);
  } catch (e) {
    assert(e instanceof UsageError, String(e));
    return e.message;
  }
  return "accepted";
}

Deno.test("parseOptions() gives each declared option a typed value: defaults, flags, environment", () => {
  const options = parse(["--size", "10G", "--every", "off", "--listen", ":9000"], {
    LSVD_UPLOADS: "8",
    LSVD_QUIET: "yes",
    LSVD_DANGER: "true", // command line only: never read from the environment
  });
  // The type is derived from the declarations: no casts, and these assignments type-check.
  const v: ValuesOf<typeof SPECS> = options.values;
  const size: number | undefined = v.size;
  const cache: number = v.cache;
  const policy: "group" | "each" = v.policy;
  // @ts-expect-error declared without a default, so possibly undefined
  const sizeRequired: number = v.size;
  assert.equal(sizeRequired, size);
  assert.equal(size, 10 * 2 ** 30);
  assert.equal(cache, 64 * 2 ** 20);
  assert.equal(policy, "group");
  assert.equal(v.retention, 24 * 3600 * 1000);
  assert.equal(v.every, 0);
  assert.equal(v.uploads, 8);
  assert.deepEqual(v.listen, { hostname: "127.0.0.1", port: 9000 });
  assert.equal(v.name, "lsvd");
  assert.equal(v.quiet, true);
  assert.equal(v.danger, false);
  assert.equal(options.source("uploads"), "LSVD_UPLOADS");
  assert.equal(options.source("size"), "--size");
  assert(options.isSet("quiet") && !options.isSet("cache") && !options.isSet("danger"));
  assert.equal(parse(["--cache", "0"]).values.cache, 0);
  // The first variable found wins; the flag wins over every variable.
  assert.equal(parse([], { FLY_SIZE: "8K" }).values.size, 8192);
  assert.equal(parse([], { FLY_SIZE: "8K" }).source("size"), "FLY_SIZE");
  assert.equal(parse(["--size", "4K"], { FLY_SIZE: "8K" }).values.size, 4096);
});

Deno.test("parseOptions() refuses a bad value in one line naming its flag or variable", () => {
  assert.equal(
    refusal([], { FLY_SIZE: "lots" }),
    'Invalid FLY_SIZE: "lots" is not a size (bytes, or with K, M, G or T)',
  );
  assert.equal(refusal([], { LSVD_SIZE: "100" }), "Invalid LSVD_SIZE: 100 bytes is not a multiple of 4096");
  assert.equal(refusal(["--size", "2T"]), "Invalid --size: 2199023255552 bytes is more than the maximum, 1T");
  assert.equal(refusal(["--uploads", "0"]), 'Invalid --uploads: "0" must be a whole number from 1 to 1024');
  assert.equal(
    refusal([], { LSVD_POLICY: "sometimes" }),
    'Invalid LSVD_POLICY: "sometimes" must be group or each',
  );
  assert.equal(
    refusal([], { LSVD_QUIET: "perhaps" }),
    'Invalid LSVD_QUIET: "perhaps" is not a boolean (use true or false)',
  );
  assert.match(refusal(["--retention", "soon"]), /^Invalid --retention: "soon" is not a duration/);
  // A duration's range is part of its declaration, so a variable is refused as its flag is.
  assert.equal(refusal(["--delay", "2h"]), 'Invalid --delay: "2h" must be from 1ms to 1h');
  assert.equal(refusal([], { LSVD_DELAY: "0" }), 'Invalid LSVD_DELAY: "0" must be from 1ms to 1h');
  assert.equal(refusal(["--interval", "5ms"]), 'Invalid --interval: "5ms" must be at least 10ms');
  assert.equal(parse(["--delay", "1h", "--interval", "10ms"]).values.delay, 3_600_000);
  assert.equal(parse(["--every", "off"]).values.every, 0);
  assert.match(refusal(["--listen", "nowhere"]), /^Invalid --listen: "nowhere" is not HOST:PORT/);
  assert.equal(refusal(["--frobnicate"]), "Unknown option '--frobnicate'");
});

Deno.test("helpText() prints each default from the declared typed value", () => {
  const help = helpText({ command: "x", summary: "X.", specs: SPECS });
  assert.match(help, /--cache SIZE +Cache \(default: 64M\)\n +env: LSVD_CACHE\n/);
  assert.match(help, /--retention DURATION +Keep \(default: 24h\)\n/);
  assert.match(help, /--every DURATION\|off +Every \(default: 60s\)\n/);
  assert.match(help, /--uploads N +Uploads \(default: 32\)\n/);
  assert.match(help, /--policy group\|each +Policy \(default: group\)\n/);
  assert.match(help, /--size SIZE +Size\n +env: LSVD_SIZE, FLY_SIZE\n/);
  assert.match(help, /--quiet +Quiet\n/);
  assert.match(help, /--danger +Danger\n +env: none \(command line only\)\n/);
});

Deno.test("serveOptions() hands a typed tuning default to the help and to the parsed values alike", () => {
  const tuning = tuningDefaults(512 * 2 ** 20);
  const specs = serveOptions(tuning);
  const options = parseOptions(["--size", "1G"], specs, () => undefined);
  assert.equal(options.values["dirty-limit"], tuning.dirtyBytes);
  assert.equal(options.values["cache-size"], tuning.cacheBytes);
  assert.equal(options.values.uploads, tuning.uploads);
  assert.equal(options.values.retention, DEFAULT_RETENTION_MS);
  const help = helpText({ command: "serve", summary: "", specs });
  assert(
    help.includes(
      `Unflushed bytes held in memory before writers wait (default: ${formatSize(tuning.dirtyBytes)})`,
    ),
  );
});
