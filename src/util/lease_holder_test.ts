import assert from "node:assert/strict";
import {
  currentHolder,
  holderState,
  type LeaseHolder,
  localProcesses,
  lockHolderGone,
  parseLockHolder,
  parseProcStat,
  type ProcessStat,
  type ProcessTable,
} from "./lease_holder.ts";

/** A made-up machine: its host, boot, pid namespace and processes. */
function machine(
  processes: Record<number, ProcessStat | "hidden">,
  extra: Partial<ProcessTable> = {},
): ProcessTable {
  return {
    host: "web-1",
    bootId: "boot-a",
    pidNamespace: "pid:[4026531836]",
    stat(pid) {
      const p = processes[pid];
      if (p === "hidden") throw new Error("permission denied");
      return p;
    },
    ...extra,
  };
}

const holder: LeaseHolder = {
  host: "web-1",
  pid: 4242,
  nonce: "n",
  bootId: "boot-a",
  pidNamespace: "pid:[4026531836]",
  startTime: 9000,
};

Deno.test("parseProcStat reads the state and the start time after a command name with spaces and parentheses", () => {
  const fields = Array.from({ length: 50 }, (_, i) => String(i + 4)); // fields 4.. (ppid on)
  fields[22 - 4] = "123456";
  assert.deepEqual(parseProcStat(`77 (a (b) c) Z ${fields.join(" ")}\n`), { state: "Z", startTime: 123456 });
  assert.equal(parseProcStat("garbage"), undefined);
  const own = localProcesses().stat(Deno.pid);
  assert(own !== undefined && own.startTime > 0 && own.state !== "Z", JSON.stringify(own));
  assert.equal(localProcesses().stat(2 ** 22 + 1), undefined, "no such pid (above pid_max)");
});

Deno.test("currentHolder records the boot id, pid namespace and this process's start time", () => {
  const me = currentHolder();
  assert.equal(me.pid, Deno.pid);
  assert.equal(me.host, Deno.hostname());
  assert.equal(me.bootId, Deno.readTextFileSync("/proc/sys/kernel/random/boot_id").trim());
  assert.equal(me.startTime, localProcesses().stat(Deno.pid)!.startTime);
  assert.match(me.pidNamespace ?? "", /^pid:\[\d+\]$/);
  assert.deepEqual(holderState(me, localProcesses()), { gone: false }, "this very process is alive");
});

Deno.test("holderState proves a holder gone only on its own host, boot and pid namespace", () => {
  const running = { state: "S", startTime: 9000 };
  // Its process runs: it may be serving.
  assert.deepEqual(holderState(holder, machine({ 4242: running })), { gone: false });
  assert.deepEqual(holderState(holder, machine({ 4242: { state: "T", startTime: 9000 } })), { gone: false });
  // No such pid, a zombie (killed, not reaped yet), or the pid now names another process.
  assert.deepEqual(holderState(holder, machine({})), { gone: true, why: "exited" });
  assert.deepEqual(holderState(holder, machine({ 4242: { state: "Z", startTime: 9000 } })), {
    gone: true,
    why: "zombie",
  });
  assert.deepEqual(holderState(holder, machine({ 4242: { state: "X", startTime: 9000 } })), {
    gone: true,
    why: "zombie",
  });
  assert.deepEqual(holderState(holder, machine({ 4242: { state: "S", startTime: 9100 } })), {
    gone: true,
    why: "reused",
  });
  // Nothing can be proved about another host, another boot of a machine with that name, another
  // pid namespace (a container with the same host name), or a pid /proc will not show.
  assert.deepEqual(holderState(holder, machine({}, { host: "web-2" })), { gone: false });
  assert.deepEqual(holderState(holder, machine({}, { bootId: "boot-b" })), { gone: false });
  assert.deepEqual(holderState(holder, machine({}, { bootId: undefined })), { gone: false });
  assert.deepEqual(holderState(holder, machine({}, { pidNamespace: "pid:[4026532000]" })), { gone: false });
  assert.deepEqual(holderState(holder, machine({ 4242: "hidden" })), { gone: false });
});

Deno.test("holderState treats a holder of an older lsvd (no boot id, start time or namespace) as before, zombies aside", () => {
  const old: LeaseHolder = { host: "web-1", pid: 4242, nonce: "n" };
  assert.deepEqual(holderState(old, machine({})), { gone: true, why: "exited" });
  assert.deepEqual(holderState(old, machine({ 4242: { state: "Z", startTime: 1 } })), {
    gone: true,
    why: "zombie",
  });
  // A live pid: without a start time a reuse cannot be told apart, so it may be the holder.
  assert.deepEqual(holderState(old, machine({ 4242: { state: "S", startTime: 1 } })), { gone: false });
  assert.deepEqual(holderState(old, machine({}, { host: "web-2" })), { gone: false });
});

Deno.test("lockHolderGone: a local lock of an earlier boot of this host is gone, whatever runs under its pid now", () => {
  const running = { state: "S", startTime: 9000 };
  const olderLsvd: LeaseHolder = { host: holder.host, pid: holder.pid, nonce: "" }; // no boot id recorded
  // After a reboot its pid may be alive again (pid 1 in a container), even with the same start time.
  assert.equal(lockHolderGone(holder, machine({ 4242: running }, { bootId: "boot-b" })), true);
  assert.equal(lockHolderGone(holder, machine({}, { bootId: "boot-b" })), true);
  // The same boot: holderState's rule (alive -> held; exited, zombie, reused -> gone).
  assert.equal(lockHolderGone(holder, machine({ 4242: running })), false);
  assert.equal(lockHolderGone(holder, machine({})), true);
  // Another host, or a boot that cannot be compared (an older lsvd's lock, no /proc boot id): held.
  assert.equal(
    lockHolderGone(holder, machine({ 4242: running }, { host: "web-2", bootId: "boot-b" })),
    false,
  );
  assert.equal(
    lockHolderGone(olderLsvd, machine({ 4242: running }, { bootId: "boot-b" })),
    false,
  );
  assert.equal(lockHolderGone(holder, machine({ 4242: running }, { bootId: undefined })), false);
});

Deno.test("parseLockHolder reads this lsvd's lock, an older lsvd's, a bare pid, and nothing from a torn one", () => {
  assert.deepEqual(parseLockHolder(JSON.stringify(holder), "web-1"), holder);
  assert.deepEqual(parseLockHolder('{"pid":7,"host":"web-1"}', "x"), { nonce: "", pid: 7, host: "web-1" });
  assert.deepEqual(parseLockHolder("7\n", "web-1"), { nonce: "", pid: 7, host: "web-1" });
  assert.equal(parseLockHolder('{"pid":7,"ho', "web-1"), undefined);
  assert.equal(parseLockHolder('{"pid":"7","host":"web-1"}', "web-1"), undefined);
});
