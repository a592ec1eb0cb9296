import assert from "node:assert/strict";
import { exposedGc, GarbagePacer } from "./gc_pacer.ts";

const MiB = 1024 * 1024;

Deno.test("GarbagePacer.check() collects only once external memory grew past the slack since the floor", () => {
  let external = 50 * MiB;
  let collected = 0;
  const pacer = new GarbagePacer({
    slackBytes: 10 * MiB,
    externalBytes: () => external,
    collect: () => {
      collected++;
      external = 52 * MiB; // what is still alive
    },
  });
  external = 60 * MiB; // exactly the slack: not yet
  pacer.check();
  assert.equal(collected, 0);
  external = 61 * MiB;
  pacer.check();
  assert.equal(collected, 1, "past the slack");
  assert.equal(pacer.collections, 1);
  pacer.check(); // idle: the floor is what survived, nothing grew
  assert.equal(collected, 1);
  external = 40 * MiB; // buffers swept later lower the floor
  pacer.check();
  external = 51 * MiB;
  pacer.check();
  assert.equal(collected, 2, "measured from the lower floor");
});

Deno.test("exposedGc() returns V8's collector, which frees dead ArrayBuffers at once", () => {
  const gc = exposedGc();
  assert(gc !== undefined);
  let junk: Uint8Array[] | undefined = Array.from({ length: 32 }, () => new Uint8Array(MiB).fill(1));
  const holding = Deno.memoryUsage().external;
  assert.equal(junk.length, 32);
  junk = undefined;
  gc();
  assert(
    Deno.memoryUsage().external < holding - 24 * MiB,
    `external ${Deno.memoryUsage().external} not below ${holding - 24 * MiB}`,
  );
});

Deno.test("GarbagePacer.start() samples on an unref'd timer until stop()", async () => {
  let samples = 0;
  const pacer = new GarbagePacer({
    slackBytes: MiB,
    intervalMs: 5,
    externalBytes: () => (samples++, 0),
    collect: () => {},
  });
  pacer.start();
  pacer.start(); // a second start() adds no second timer
  await new Promise((r) => setTimeout(r, 60));
  pacer.stop();
  const seen = samples;
  assert(seen >= 3 && seen <= 14, `samples ${seen}`);
  await new Promise((r) => setTimeout(r, 30));
  assert.equal(samples, seen, "no samples after stop()");
});
