/**
 * @module
 * Issue 4's story with the real daemon and the real kernel NBD client, in a VM (this machine's
 * kernel has no nbd module). The directory store lives in a host directory shared into the guest,
 * so it survives across boots:
 *   boot 1: `lsvd serve --size 256M --device /dev/nbd0 --mount /mnt/data` on an empty store; write
 *           files; SIGTERM → unmount, disconnect, flush, exit 0, with the log lines in order.
 *   boot 2: `lsvd serve --device /dev/nbd0` (no mount): recovery; `e2fsck -fn` clean; mount by hand,
 *           files intact; SIGTERM → the daemon finds and unmounts that mount too.
 *   boot 3: `lsvd serve --size 384M --device /dev/nbd0 --mount /mnt/data`: the filesystem grows.
 */

import assert from "node:assert/strict";
import { runInVm, shellQuote, VmError, type VmResult, vmUnavailableReason } from "../support/vm.ts";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;
const REPO = new URL("../..", import.meta.url).pathname;
const BOOT_TIMEOUT_MS = 300_000;
const OPERATIONAL_TIMEOUT_S = 180;

/** `lsvd serve --help` mentions --device once the lead has wired kernel attach into serve. */
function serveSupportsDevice(): boolean {
  const help = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, "serve", "--help"],
    cwd: REPO,
    stdout: "piped",
    stderr: "null",
  }).outputSync();
  return help.success && new TextDecoder().decode(help.stdout).includes("--device");
}

const unavailable = vmUnavailableReason() ?? (serveSupportsDevice() ? undefined : "serve has no --device");

/**
 * Shell for the guest: start the daemon with its log in the shared directory, wait (bounded) for
 * "Device is now operational.", run body, SIGTERM, wait, print the exit code and the log.
 */
function serveScript(p: { sharedDir: string; boot: number; serveArgs: string[]; body: string }): string {
  const q = shellQuote;
  const log = `${p.sharedDir}/serve-${p.boot}.log`;
  const args = [
    ...[
      "run",
      "-A",
      "--cached-only",
      MAIN,
      "serve",
      "--dir",
      `${p.sharedDir}/store`,
      "--socket",
      "/run/lsvd.sock",
    ],
    ...p.serveArgs,
  ].map(q).join(" ");
  return `set -u
result() { echo "RESULT {\\"name\\":\\"$1\\",\\"value\\":$2}"; }
cd ${q(REPO)}
${q(Deno.execPath())} ${args} >${q(log)} 2>&1 &
pid=$!
i=0
until grep -q "Device is now operational." ${q(log)}; do
  if ! kill -0 $pid 2>/dev/null; then echo "lsvd serve exited before it was operational:"; cat ${
    q(log)
  }; exit 90; fi
  i=$((i + 1))
  if [ $i -gt ${OPERATIONAL_TIMEOUT_S * 10} ]; then
    echo "lsvd serve not operational in ${OPERATIONAL_TIMEOUT_S} s:"; cat ${q(log)}; kill -9 $pid; exit 91
  fi
  sleep 0.1
done
${p.body}
kill -TERM $pid
wait $pid
code=$?
result serveExit $code
result stillMounted "$(grep -c ' /mnt/data ' /proc/mounts)"
if [ -e /sys/block/nbd0/pid ]; then result stillConnected true; else result stillConnected false; fi
echo "----- lsvd log -----"
cat ${q(log)}
echo "----- end of lsvd log -----"
`;
}

/** The body of boot 1: write files on the mounted filesystem. */
const WRITE_FILES = `
head -c 4194304 /dev/urandom > /mnt/data/random.bin
mkdir -p /mnt/data/dir && echo "hello from lsvd" > /mnt/data/dir/hello.txt
result written "{\\"sha256\\":\\"$(sha256sum /mnt/data/random.bin | cut -d' ' -f1)\\",\\"fsBytes\\":$(df -B1 --output=size /mnt/data | tail -1)}"
`;

/** The body of boot 2: e2fsck on the unmounted device, then mount by hand and read. */
const CHECK_FILES = `
e2fsck -fn /dev/nbd0 > /run/fsck.txt 2>&1; fsck=$?
cat /run/fsck.txt
mkdir -p /mnt/data && mount /dev/nbd0 /mnt/data
result read "{\\"fsck\\":$fsck,\\"sha256\\":\\"$(sha256sum /mnt/data/random.bin | cut -d' ' -f1)\\",\\"hello\\":\\"$(cat /mnt/data/dir/hello.txt)\\"}"
`;

/** The body of boot 3: read back and measure the grown filesystem. */
const CHECK_GROWN = `
result grown "{\\"sha256\\":\\"$(sha256sum /mnt/data/random.bin | cut -d' ' -f1)\\",\\"fsBytes\\":$(df -B1 --output=size /mnt/data | tail -1)}"
`;

type Results = Record<string, any>;

async function boot(sharedDir: string, boot: number, serveArgs: string[], body: string) {
  const script = serveScript({ sharedDir, boot, serveArgs, body });
  const vm = await runInVm({ script, sharedDir, timeoutMs: BOOT_TIMEOUT_MS });
  if (vm.exitCode !== 0) {
    throw new VmError(`boot ${boot}: the guest script exited with ${vm.exitCode}`, vm.console);
  }
  const results: Results = {};
  for (const match of vm.console.matchAll(/RESULT (\{.*\})\r?$/gm)) {
    const { name, value } = JSON.parse(match[1]!);
    results[name] = value;
  }
  const check = (ok: boolean, what: string) => {
    if (!ok) throw new VmError(`boot ${boot}: ${what}`, vm.console);
  };
  check(results.serveExit === 0, `lsvd serve exited with ${results.serveExit}, not 0`);
  check(results.stillMounted === 0, "/mnt/data is still mounted after shutdown");
  check(results.stillConnected === false, "/dev/nbd0 is still connected after shutdown");
  return { results, vm, check };
}

function inOrder(vm: VmResult, lines: string[]): boolean {
  let from = 0;
  for (const line of lines) {
    const at = vm.console.indexOf(line, from);
    if (at < 0) return false;
    from = at + line.length;
  }
  return true;
}

Deno.test({
  name: "lsvd serve --device --mount: format, write, SIGTERM, recover intact and e2fsck clean, grow (VM)",
  ignore: unavailable !== undefined,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const sharedDir = await Deno.makeTempDir({ prefix: "lsvd-vm-serve-" });
    try {
      const first = await boot(sharedDir, 1, [
        "--size",
        "256M",
        "--device",
        "/dev/nbd0",
        "--mount",
        "/mnt/data",
      ], WRITE_FILES);
      first.check(
        inOrder(first.vm, [
          "lsvd: Connecting the kernel to the device.",
          "lsvd: Mounting /dev/nbd0 on /mnt/data.",
          "lsvd: Device is now operational.",
          "lsvd: /dev/nbd0 is mounted on /mnt/data; unmounting.",
          "lsvd: Flushing remaining writes to object storage.",
          "lsvd: Device has shut down.",
        ]),
        "log lines missing or out of order",
      );
      const written = first.results.written;
      first.check(typeof written?.sha256 === "string", "no checksum of the written file");

      const second = await boot(sharedDir, 2, ["--device", "/dev/nbd0"], CHECK_FILES);
      second.check(inOrder(second.vm, ["lsvd: Recovery complete"]), "no recovery line");
      second.check(second.results.read?.fsck === 0, "e2fsck -fn found problems");
      second.check(second.results.read?.sha256 === written.sha256, "random.bin differs after restart");
      second.check(second.results.read?.hello === "hello from lsvd", "hello.txt differs after restart");
      second.check(
        inOrder(second.vm, [
          "lsvd: /dev/nbd0 is mounted on /mnt/data; unmounting.",
          "lsvd: Device has shut down.",
        ]),
        "the daemon did not unmount a mount it did not make",
      );

      const third = await boot(sharedDir, 3, [
        "--size",
        "384M",
        "--device",
        "/dev/nbd0",
        "--mount",
        "/mnt/data",
      ], CHECK_GROWN);
      third.check(inOrder(third.vm, ["lsvd: Growing the filesystem on /dev/nbd0"]), "no grow line");
      third.check(third.results.grown?.sha256 === written.sha256, "random.bin differs after growing");
      const grownBytes = third.results.grown?.fsBytes as number;
      third.check(
        grownBytes > written.fsBytes + 100 * 2 ** 20,
        `filesystem did not grow (${written.fsBytes} → ${grownBytes})`,
      );
      assert.ok(true);
    } finally {
      await Deno.remove(sharedDir, { recursive: true });
    }
  },
});
