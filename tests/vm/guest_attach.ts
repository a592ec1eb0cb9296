/**
 * @module
 * Runs inside the test VM (a kernel with nbd.ko): serves a disk image from the shared directory
 * with the in-process NBD server, attaches /dev/nbd0 with attachKernelDevice() in the same Deno
 * process, and does one step of the story, printing `RESULT {json}` lines the host test checks.
 *   create: empty image → mkfs + mount, write files, unmount, detach.
 *   verify: e2fsck -fn clean, mount, files intact, report the filesystem size.
 *   ioctl:  the same attach through the ioctl interface, reading the superblock back.
 * Usage: deno run -A guest_attach.ts STEP IMAGE_PATH
 */

import assert from "node:assert/strict";
import { attachKernelDevice } from "../../src/attach/kernel_device.ts";
import { mountDevice, probeDevice, unmountDevice } from "../../src/attach/filesystem.ts";
import { readSysfs } from "../../src/attach/nbd_sysfs.ts";
import { startFileNbdServer } from "./file_nbd_server.ts";

const DEVICE = "/dev/nbd0";
const MOUNT_POINT = "/mnt/data";
const FILE_BYTES = 3 * 1024 * 1024;

function result(name: string, value: unknown): void {
  console.log(`RESULT ${JSON.stringify({ name, value })}`);
}

function log(line: string): void {
  console.log(`lsvd: ${line}`);
}

async function sha256(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

async function run(command: string, args: string[]): Promise<{ code: number; output: string }> {
  const out = await new Deno.Command(command, { args, stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  return { code: out.code, output: text.trim() };
}

async function filesystemBytes(): Promise<number> {
  const df = await run("df", ["-B1", "--output=size", MOUNT_POINT]);
  return Number(df.output.split("\n").pop());
}

async function create(): Promise<void> {
  await mountDevice({ devicePath: DEVICE, mountPoint: MOUNT_POINT, log });
  const data = new Uint8Array(FILE_BYTES);
  for (let i = 0; i < FILE_BYTES; i += 65536) crypto.getRandomValues(data.subarray(i, i + 65536));
  await Deno.writeFile(`${MOUNT_POINT}/random.bin`, data);
  await Deno.mkdir(`${MOUNT_POINT}/dir`);
  await Deno.writeTextFile(`${MOUNT_POINT}/dir/hello.txt`, "hello from the kernel nbd client\n");
  result("written", { sha256: await sha256(data), filesystemBytes: await filesystemBytes() });
}

async function verify(): Promise<void> {
  const fsck = await run("e2fsck", ["-fn", DEVICE]);
  result("e2fsck", { code: fsck.code, output: fsck.output });
  await mountDevice({ devicePath: DEVICE, mountPoint: MOUNT_POINT, log });
  result("read", {
    sha256: await sha256(await Deno.readFile(`${MOUNT_POINT}/random.bin`)),
    hello: await Deno.readTextFile(`${MOUNT_POINT}/dir/hello.txt`),
    filesystemBytes: await filesystemBytes(),
  });
}

async function main(step: string, imagePath: string): Promise<void> {
  const socketPath = "/run/lsvd-vm-test.sock";
  const server = await startFileNbdServer(imagePath, socketPath);
  const attachment = await attachKernelDevice({
    devicePath: DEVICE,
    socketPath,
    exportName: "lsvd",
    connections: 2,
    log,
    controlInterface: step === "ioctl" ? "ioctl" : "auto",
  });
  result("attached", {
    controlInterface: attachment.controlInterface,
    connections: attachment.connections,
    sizeBytes: attachment.sizeBytes,
    connected: await attachment.isConnected(),
    readAheadKb: Number(readSysfs("/sys/block/nbd0/queue/read_ahead_kb")),
    deviceBytes: Number(readSysfs("/sys/block/nbd0/size")) * 512,
  });
  try {
    if (step === "create") await create();
    else if (step === "verify") await verify();
    else if (step === "ioctl") result("probe", await probeDevice(DEVICE));
    else throw new Error(`unknown step ${step}`);
  } finally {
    await unmountDevice(DEVICE, { log });
    await attachment.detach();
  }
  result("detached", {
    pidFileGone: readSysfs("/sys/block/nbd0/pid") === undefined,
    requests: server.requests,
  });
  await server.close();
}

if (import.meta.main) {
  const [step, imagePath] = Deno.args;
  assert(step && imagePath, "usage: guest_attach.ts STEP IMAGE_PATH");
  await main(step, imagePath);
}
