/**
 * @module
 * waitForRelease() with a scripted release(): what it logs while the volume is held, when it ends
 * by itself, by a second signal, by the shutdown deadline, or because the daemon was fenced.
 */

import assert from "node:assert/strict";
import type { Holder } from "../attach/holders.ts";
import { type ShutdownSignals, waitForRelease } from "./serve_lifecycle.ts";

const LOOP: Holder = {
  description: "/dev/loop3 (mounted on /x)",
  release: ["umount /x", "losetup -d /dev/loop3"],
  syncPaths: ["/x"],
};
const ATTACHED: Holder = {
  description: "/dev/loop3 (attached to /f/nbd)",
  release: ["losetup -d /dev/loop3"],
  syncPaths: [],
};

/** The part of ShutdownSignals waitForRelease uses; force() is the second signal. */
function fakeSignals(): { signals: ShutdownSignals; force(): void } {
  let force!: () => void;
  const forced = new Promise<string>((resolve) => force = () => resolve("SIGTERM"));
  return { signals: { phase: "serving", forced } as unknown as ShutdownSignals, force };
}

/** release() answering from a script, one answer per call, the last one repeated. */
function scripted(answers: Holder[][]): () => Promise<Holder[]> {
  let call = 0;
  return () => Promise.resolve(answers[Math.min(call++, answers.length - 1)]!);
}

const never = new Promise<Error>(() => {});

Deno.test("waitForRelease() says what holds the volume, again when that changes, and ends once it is released", async () => {
  const lines: string[] = [];
  const { signals } = fakeSignals();
  const outcome = await waitForRelease({
    release: scripted([[LOOP], [LOOP], [LOOP], [ATTACHED], [ATTACHED], []]),
    signals,
    failed: never,
    log: (l) => lines.push(l),
    pollMs: 5,
  });
  assert.deepEqual(outcome, { kind: "released" });
  assert.equal(signals.phase, "releasing");
  assert.deepEqual(lines, [
    "Cannot stop yet: /dev/loop3 (mounted on /x) still uses the volume; release it (umount /x; " +
    "losetup -d /dev/loop3) and lsvd stops by itself, or send the signal again to stop anyway (writes " +
    "the filesystem has not synced will be lost).",
    "Still waiting: /dev/loop3 (attached to /f/nbd) still uses the volume; release it (losetup -d /dev/loop3).",
    "The volume is no longer in use; stopping.",
  ]);
});

Deno.test("waitForRelease() says nothing when nothing holds the volume, or lets go at once", async () => {
  for (const answers of [[[]], [[LOOP], []]]) {
    const lines: string[] = [];
    const outcome = await waitForRelease({
      release: scripted(answers),
      signals: fakeSignals().signals,
      failed: never,
      log: (l) => lines.push(l),
      pollMs: 5,
    });
    assert.deepEqual(outcome, { kind: "released" });
    assert.deepEqual(lines, []);
  }
});

Deno.test("waitForRelease() ends forced at a second signal or at its deadline, and failed when fenced", async () => {
  const s = fakeSignals();
  const bySignal = waitForRelease({
    release: scripted([[LOOP]]),
    signals: s.signals,
    failed: never,
    log: () => {},
    pollMs: 5,
  });
  setTimeout(s.force, 30);
  assert.deepEqual(await bySignal, { kind: "forced", holders: [LOOP], by: "signal" });

  const lines: string[] = [];
  const byDeadline = await waitForRelease({
    release: scripted([[LOOP]]),
    signals: fakeSignals().signals,
    failed: never,
    log: (l) => lines.push(l),
    deadlineMs: 2000,
    pollMs: 100,
  });
  assert.deepEqual(byDeadline, { kind: "forced", holders: [LOOP], by: "deadline" });
  assert.match(lines[0]!, /\(--shutdown-timeout stops anyway in 2 s\)\.$/);
  assert.equal(
    lines.at(-1),
    "Shutdown deadline: /dev/loop3 (mounted on /x) still uses the volume after 2 s; stopping anyway.",
  );

  const fenced = new Error("taken over");
  const failed = await waitForRelease({
    release: scripted([[LOOP]]),
    signals: fakeSignals().signals,
    failed: new Promise((resolve) => setTimeout(() => resolve(fenced), 30)),
    log: () => {},
    pollMs: 5,
  });
  assert.deepEqual(failed, { kind: "failed", error: fenced });
});
