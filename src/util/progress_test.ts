/**
 * @module
 * Progress lines say "X of Y (N%)" when the total is known, and only what is done when it is not
 * (an import from standard input), never "of 0.0 MiB".
 */

import assert from "node:assert/strict";
import { ManualClock } from "./clock.ts";
import { Progress } from "./progress.ts";

Deno.test("Progress.line() gives done of total, or only done and the rate when the total is unknown", () => {
  const clock = new ManualClock();
  const known = new Progress({ what: "Exporting", unit: "bytes", total: 4 * 2 ** 20, clock, log: () => {} });
  const unknown = new Progress({ what: "Importing", unit: "bytes", total: 0, clock, log: () => {} });
  clock.advance(1000);
  known.update(2 ** 20);
  unknown.update(12 * 2 ** 20);
  assert.equal(known.line(), "Exporting: 1.0 MiB of 4.0 MiB (25%), 1.0 MiB/s, 3 s left");
  assert.equal(unknown.line(), "Importing: 12.0 MiB, 12.0 MiB/s");
});
