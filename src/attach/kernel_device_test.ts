/**
 * @module
 * The checks attachKernelDevice() makes before touching the kernel. The attach itself needs a
 * kernel with nbd: it is proven in a VM by tests/vm/attach_test.ts.
 */

import assert from "node:assert/strict";
import { attachKernelDevice } from "./kernel_device.ts";
import { nbdIndexOf } from "./nbd_sysfs.ts";

const kernelHasNbd = (() => {
  try {
    Deno.statSync("/sys/module/nbd");
    return true;
  } catch {
    return false;
  }
})();

Deno.test("nbdIndexOf() parses /dev/nbdN and rejects other paths", () => {
  assert.equal(nbdIndexOf("/dev/nbd0"), 0);
  assert.equal(nbdIndexOf("/dev/nbd15"), 15);
  assert.throws(() => nbdIndexOf("/dev/sda"), /Cannot connect \/dev\/sda: not an NBD device path/);
  assert.throws(() => nbdIndexOf("/dev/nbd0p1"), /not an NBD device path/);
});

Deno.test({
  name: "attachKernelDevice() says the kernel has no nbd module and suggests --fuse",
  ignore: kernelHasNbd,
  async fn() {
    const lines: string[] = [];
    await assert.rejects(
      attachKernelDevice({
        devicePath: "/dev/nbd0",
        socketPath: "/nonexistent.sock",
        exportName: "lsvd",
        log: (line) => lines.push(line),
      }),
      {
        message:
          "Cannot connect /dev/nbd0: the kernel has no nbd module (no /sys/module/nbd); use --fuse PATH instead",
      },
    );
    assert.deepEqual(lines, []);
  },
});
