/**
 * @module
 * What sysfs says about /dev/nbdN and the queue knobs we turn: the device index from its path,
 * whether it is connected (/sys/block/nbdN/pid exists only then), read-ahead and request size.
 */

import type { Logger } from "../util/log.ts";

/** Bound on waiting for the kernel to show a connect or disconnect in sysfs. */
const DEVICE_STATE_TIMEOUT_MS = 15_000;
const POLL_INTERVAL_MS = 50;

/** "/dev/nbd3" -> 3; anything else is a clear error. */
export function nbdIndexOf(devicePath: string): number {
  const match = /^\/dev\/nbd(\d+)$/.exec(devicePath);
  if (!match) throw new Error(`Cannot connect ${devicePath}: not an NBD device path (expected /dev/nbdN)`);
  return Number(match[1]);
}

/** The trimmed content of a sysfs file, or undefined when it does not exist. */
export function readSysfs(path: string): string | undefined {
  try {
    return Deno.readTextFileSync(path).trim();
  } catch {
    return undefined;
  }
}

/** Waits (bounded) until /sys/block/nbdN/pid appears (connected) or disappears. */
export async function waitForDevice(index: number, connected: boolean): Promise<void> {
  const deadline = Date.now() + DEVICE_STATE_TIMEOUT_MS;
  while ((readSysfs(`/sys/block/nbd${index}/pid`) !== undefined) !== connected) {
    if (Date.now() > deadline) {
      const state = connected ? "connected" : "disconnected";
      throw new Error(
        `Cannot confirm /dev/nbd${index} is ${state}: no change in ${DEVICE_STATE_TIMEOUT_MS} ms`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_INTERVAL_MS));
  }
}

/** Raises read-ahead and the largest request size; a refusal is logged, not fatal. */
export function tuneQueue(
  index: number,
  p: { readAheadKb: number; maxSectorsKb: number; log: Logger },
): void {
  const queue = `/sys/block/nbd${index}/queue`;
  const hardwareKb = Number(readSysfs(`${queue}/max_hw_sectors_kb`) ?? p.maxSectorsKb);
  writeKnob(`${queue}/max_sectors_kb`, Math.min(p.maxSectorsKb, hardwareKb), p.log);
  writeKnob(`${queue}/read_ahead_kb`, p.readAheadKb, p.log);
}

function writeKnob(path: string, value: number, log: Logger): void {
  try {
    Deno.writeTextFileSync(path, `${value}\n`);
  } catch (error) {
    log(`Cannot set ${path} to ${value}: ${(error as Error).message}`);
  }
}
