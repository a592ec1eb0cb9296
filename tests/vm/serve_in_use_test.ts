/**
 * @module
 * Stopping `lsvd serve --device` while something still uses /dev/nbd0, with the real kernel NBD
 * client in a VM (this machine's kernel has no nbd module). One boot, four daemons in turn, the
 * directory store in the shared directory:
 *   1. `--mount /mnt/data` with a shell's cwd in it: SIGTERM keeps serving with one line naming the
 *      busy mount; when the holder exits, lsvd unmounts, disconnects and exits 0;
 *   2. no `--mount`, a process with /dev/nbd0 open: the same, naming the process;
 *   3. `--mount` busy again and a second SIGTERM: the filesystem is synced, lazily detached, and
 *      lsvd exits 1;
 *   4. a restart finds the file written before the forced stop intact.
 */

import assert from "node:assert/strict";
import { runInVm, shellQuote, VmError, vmUnavailableReason } from "../support/vm.ts";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;
const REPO = new URL("../..", import.meta.url).pathname;
const unavailable = vmUnavailableReason();

function guestScript(sharedDir: string): string {
  const q = shellQuote;
  const serve = `${q(Deno.execPath())} run -A --cached-only ${q(MAIN)} serve --dir ${
    q(`${sharedDir}/store`)
  } --socket /run/lsvd.sock`;
  return `set -u
result() { echo "RESULT {\\"name\\":\\"$1\\",\\"value\\":$2}"; }
cd ${q(REPO)}
logs=${q(sharedDir)}
serve() { # LOG ARGS...: start lsvd, wait until it serves (bounded); sets pid
  log=$logs/$1.log; shift
  ${serve} "$@" >$log 2>&1 &
  pid=$!
  i=0
  until grep -q "Device is now operational." $log; do
    if ! kill -0 $pid 2>/dev/null; then echo "lsvd serve exited early:"; cat $log; exit 90; fi
    i=$((i + 1)); if [ $i -gt 1800 ]; then echo "not operational:"; cat $log; kill -9 $pid; exit 91; fi
    sleep 0.1
  done
}
saw() { # LOG TEXT: true once the log has TEXT (up to 60 s)
  i=0
  until grep -qF "$2" $logs/$1.log; do i=$((i + 1)); if [ $i -gt 600 ]; then echo false; return; fi; sleep 0.1; done
  echo true
}
alive() { if kill -0 $pid 2>/dev/null; then echo true; else echo false; fi; }
connected() { if [ -e /sys/block/nbd0/pid ]; then echo true; else echo false; fi; }

serve busy --size 256M --device /dev/nbd0 --mount /mnt/data
echo hello > /mnt/data/hello.txt
(cd /mnt/data && exec sleep 600) & holder=$!
sleep 0.5
kill -TERM $pid
result busyLine "$(saw busy "Cannot stop yet:")"
sleep 2
result busyAlive "$(alive)"
kill $holder; wait $holder
wait $pid; result busyExit $?
result busyMounted "$(grep -c ' /mnt/data ' /proc/mounts)"
result busyConnected "$(connected)"

serve open --device /dev/nbd0
(exec 3<>/dev/nbd0; exec sleep 600) & holder=$!
sleep 0.5
kill -TERM $pid
result openLine "$(saw open "Cannot stop yet:")"
result openHolder $holder
sleep 2
result openAlive "$(alive)"
kill $holder; wait $holder
wait $pid; result openExit $?
result openConnected "$(connected)"

serve forced --device /dev/nbd0 --mount /mnt/data
head -c 4194304 /dev/urandom > /mnt/data/forced.bin
sum=$(sha256sum < /mnt/data/forced.bin)
(cd /mnt/data && exec sleep 600) & holder=$!
sleep 0.5
kill -TERM $pid
result forcedLine "$(saw forced "Cannot stop yet:")"
kill -TERM $pid
wait $pid; result forcedExit $?
kill $holder; wait $holder

serve check --device /dev/nbd0 --mount /mnt/data
if [ "$(sha256sum < /mnt/data/forced.bin)" = "$sum" ]; then result forcedKept true; else result forcedKept false; fi
kill -TERM $pid
wait $pid; result checkExit $?
for f in busy open forced check; do echo "----- $f.log"; cat $logs/$f.log; done
`;
}

Deno.test({
  name: "lsvd serve --device: a stop waits while /dev/nbd0 is busy or open; a second signal forces it (VM)",
  ignore: unavailable !== undefined,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const sharedDir = await Deno.makeTempDir({ prefix: "lsvd-vm-in-use-" });
    try {
      const vm = await runInVm({ script: guestScript(sharedDir), sharedDir, timeoutMs: 600_000 });
      const results: Record<string, unknown> = {};
      for (const match of vm.console.matchAll(/RESULT (\{.*\})\r?$/gm)) {
        const { name, value } = JSON.parse(match[1]!);
        results[name] = value;
      }
      const check = (ok: boolean, what: string) => {
        if (!ok) throw new VmError(`${what}: ${JSON.stringify(results)}`, vm.console);
      };
      check(vm.exitCode === 0, `the guest script exited with ${vm.exitCode}`);
      const log = (name: string) => vm.console.split(`----- ${name}.log`)[1]?.split("----- ")[0] ?? "";

      check(results.busyLine === true && results.busyAlive === true, "lsvd stopped under a busy mount");
      check(
        log("busy").includes(
          "lsvd: Cannot stop yet: /dev/nbd0 (mounted on /mnt/data, busy) still uses the volume; release it " +
            "(stop what uses /mnt/data ('fuser -vm /mnt/data' lists it)) and lsvd stops by itself",
        ),
        "the busy line names the mount",
      );
      check(results.busyExit === 0, "exit status after the holder went away");
      check(results.busyMounted === 0 && results.busyConnected === false, "left mounted or connected");
      check(log("busy").includes("lsvd: The volume is no longer in use; stopping."), "no release line");

      const holder = results.openHolder;
      check(results.openLine === true && results.openAlive === true, "lsvd stopped under an open device");
      check(
        log("open").includes(`lsvd: Cannot stop yet: /dev/nbd0 (open in pid ${holder} (sleep)) still uses`),
        "the open line names the process",
      );
      check(results.openExit === 0 && results.openConnected === false, "exit or disconnect after release");

      check(results.forcedLine === true, "no line before the forced stop");
      check(results.forcedExit === 1, "a forced stop exits 1");
      check(
        log("forced").includes("lsvd: Syncing /mnt/data before stopping."),
        "no sync before the forced stop",
      );
      check(results.forcedKept === true && results.checkExit === 0, "the synced file after a restart");
      assert.ok(true);
    } finally {
      await Deno.remove(sharedDir, { recursive: true });
    }
  },
});
