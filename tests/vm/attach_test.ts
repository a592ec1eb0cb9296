/**
 * @module
 * The kernel NBD client, for real, in a VM (this machine's kernel has no nbd module): a Deno
 * process serves a disk image from the shared directory and attaches /dev/nbd0 to itself with
 * attachKernelDevice(), over generic netlink and over ioctls; the filesystem is created, written,
 * unmounted, checked clean with e2fsck on the next boot, then grown when the image grew.
 */

import assert from "node:assert/strict";
import { runInVm, shellQuote, VmError, type VmResult, vmUnavailableReason } from "../support/vm.ts";

const unavailable = vmUnavailableReason();
const GUEST_SCRIPT = new URL("./guest_attach.ts", import.meta.url).pathname;
const BOOT_TIMEOUT_MS = 240_000;

interface Results {
  [name: string]: Record<string, unknown>;
}

/** Boots the VM for one step; fails with the guest console unless the step exited 0. */
async function step(sharedDir: string, name: string): Promise<{ results: Results; vm: VmResult }> {
  const image = `${sharedDir}/disk.img`;
  const script = `exec ${shellQuote(Deno.execPath())} run -A --cached-only ${
    shellQuote(GUEST_SCRIPT)
  } ${name} ${shellQuote(image)}\n`;
  const vm = await runInVm({ script, sharedDir, timeoutMs: BOOT_TIMEOUT_MS });
  if (vm.exitCode !== 0) throw new VmError(`guest step "${name}" exited with ${vm.exitCode}`, vm.console);
  const results: Results = {};
  for (const match of vm.console.matchAll(/RESULT (\{.*\})\r?$/gm)) {
    const { name, value } = JSON.parse(match[1]!);
    results[name] = value;
  }
  return { results, vm };
}

function expectLines(vm: VmResult, lines: string[]): void {
  let from = 0;
  for (const line of lines) {
    const at = vm.console.indexOf(line, from);
    if (at < 0) throw new VmError(`missing log line (in order): ${line}`, vm.console);
    from = at + line.length;
  }
}

Deno.test({
  name: "attachKernelDevice() drives the kernel NBD client: mkfs, mount, restart intact, e2fsck clean, grow",
  ignore: unavailable !== undefined,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const sharedDir = await Deno.makeTempDir({ prefix: "lsvd-vm-attach-" });
    try {
      const image = `${sharedDir}/disk.img`;
      await Deno.writeFile(image, new Uint8Array(0));
      await Deno.truncate(image, 256 * 2 ** 20);

      const create = await step(sharedDir, "create");
      assert.deepEqual(create.results.attached, {
        controlInterface: "netlink",
        connections: 2,
        sizeBytes: 256 * 2 ** 20,
        connected: true,
        readAheadKb: 8192,
        deviceBytes: 256 * 2 ** 20,
      });
      expectLines(create.vm, [
        "lsvd: Connecting the kernel to the device.",
        "lsvd: /dev/nbd0 holds no filesystem; creating an ext4 filesystem.",
        "lsvd: Mounting /dev/nbd0 on /mnt/data.",
        "lsvd: /dev/nbd0 is mounted on /mnt/data; unmounting.",
      ]);
      const written = create.results.written!;
      assert.equal((create.results.detached as { pidFileGone: boolean }).pidFileGone, true);

      const ioctl = await step(sharedDir, "ioctl");
      assert.equal(ioctl.results.attached!.controlInterface, "ioctl");
      assert.equal(ioctl.results.probe!.kind, "ext");
      assert.equal(ioctl.results.detached!.pidFileGone, true);

      const verify = await step(sharedDir, "verify");
      assert.equal(verify.results.e2fsck!.code, 0, String(verify.results.e2fsck!.output));
      assert.equal(verify.results.read!.sha256, written.sha256);
      assert.equal(verify.results.read!.hello, "hello from the kernel nbd client\n");
      assert.doesNotMatch(verify.vm.console, /holds no filesystem/);

      await Deno.truncate(image, 384 * 2 ** 20);
      const grown = await step(sharedDir, "verify");
      expectLines(grown.vm, [
        "lsvd: Mounting /dev/nbd0 on /mnt/data.",
        "lsvd: Growing the filesystem on /dev/nbd0",
      ]);
      assert.equal(grown.results.read!.sha256, written.sha256);
      const before = written.filesystemBytes as number;
      const after = grown.results.read!.filesystemBytes as number;
      assert.ok(after > before + 100 * 2 ** 20, `filesystem grew from ${before} to ${after} bytes`);
    } finally {
      await Deno.remove(sharedDir, { recursive: true });
    }
  },
});
