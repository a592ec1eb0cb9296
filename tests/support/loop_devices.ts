/**
 * @module
 * What tests of loop devices need on this machine: whether they can run (root, /dev/loop-control and
 * the named tools) and a command runner that fails the test with the command's stderr.
 */

import assert from "node:assert/strict";

/** True when this process may make loop devices and every tool is on PATH. */
export function canUseLoopDevices(tools: string[]): boolean {
  if (Deno.uid() !== 0) return false;
  const found = tools.every((tool) =>
    new Deno.Command("sh", { args: ["-c", `command -v ${tool}`] }).outputSync().success
  );
  if (!found) return false;
  try {
    Deno.statSync("/dev/loop-control");
    return true;
  } catch {
    return false;
  }
}

/** Runs a command to success and returns its trimmed standard output. */
export async function run(command: string, args: string[]): Promise<string> {
  const output = await new Deno.Command(command, { args, stdout: "piped", stderr: "piped" }).output();
  assert.ok(output.success, `${command} ${args.join(" ")}: ${new TextDecoder().decode(output.stderr)}`);
  return new TextDecoder().decode(output.stdout).trim();
}
