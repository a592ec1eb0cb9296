import assert from "node:assert/strict";
import { hasExited, parseProcStat, processRunning } from "./proc_stat.ts";

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
