import assert from "node:assert/strict";
import { hasExited, parseProcCpuTicks, parseProcStat, processRunning } from "./proc_stat.ts";

Deno.test("processRunning() is true for this process and false for a pid that exited and was reaped", async () => {
  assert.equal(processRunning(Deno.pid), true);
  const child = new Deno.Command("true", { stdout: "null", stderr: "null" }).spawn();
  const pid = child.pid;
  await child.status;
  assert.equal(processRunning(pid), false);
});

Deno.test("hasExited() counts a zombie and a dead process as exited, a sleeping one not", () => {
  const rest = Array.from({ length: 20 }, (_, i) => String(i + 4)).join(" ");
  assert.equal(hasExited(parseProcStat(`9 (x) Z ${rest}`)!), true);
  assert.equal(hasExited(parseProcStat(`9 (x) X ${rest}`)!), true);
  assert.equal(hasExited(parseProcStat(`9 (x) S ${rest}`)!), false);
});

Deno.test("parseProcCpuTicks() adds utime and stime (fields 14 and 15) after a command name with spaces", () => {
  const fields = Array.from({ length: 50 }, (_, i) => String(i + 4)); // fields 4..
  fields[14 - 4] = "250";
  fields[15 - 4] = "70";
  assert.equal(parseProcCpuTicks(`77 (a (b) c) S ${fields.join(" ")}\n`), 320);
  assert.equal(parseProcCpuTicks("garbage"), undefined);
  assert.ok(parseProcCpuTicks(Deno.readTextFileSync("/proc/self/stat"))! >= 0);
});
