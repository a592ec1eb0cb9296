/**
 * @module
 * Issue 19 with the real kernel NBD client, in one VM boot: a mount that outlives its daemon.
 *   plain:   `lsvd serve --device /dev/nbd0 --mount` under a writer that fsyncs checksummed files;
 *            lsvd is killed with SIGKILL at seeded random moments and started again (it resumes the
 *            device: no disconnect, unmount or mkfs), then upgraded once by a second lsvd started with
 *            --takeover (the old one hands over and exits 0). Then: 0 write errors, no kernel I/O
 *            error, e2fsck clean, every fsync'd file intact read back from the device. A restart with
 *            a larger --size grows the resumed device, and resize2fs grows the mounted filesystem. A daemon
 *            paused (SIGSTOP) past --io-timeout reconnects the sockets the kernel gave up on. A snapshot
 *            taken while the filesystem is mounted is served --read-only --mount (ro,noload).
 *   journal: the same with --journal on /dev/nbd1.
 *   eio:     a device whose daemon never comes back fails a read with EIO within --dead-timeout.
 * LSVD_VM_LONG=1 kills five times per run (the count) instead of twice; LSVD_VM_SEED=N
 * repeats the kill moments of an earlier run (the seed is printed).
 */

import assert from "node:assert/strict";
import { guestLsvdPrelude, runInVm, shellQuote, VmError, vmUnavailableReason } from "../support/vm.ts";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;
const REPO = new URL("../..", import.meta.url).pathname;
const LONG = Deno.env.get("LSVD_VM_LONG") === "1";
const KILLS = LONG ? 5 : 2;
const JOURNAL_KILLS = LONG ? 5 : 1;
const SEED = Number(Deno.env.get("LSVD_VM_SEED") ?? Math.floor(Math.random() * 2 ** 31));
/** Small enough that requests in flight when lsvd died are re-sent soon; ample for TCG answers. */
const IO_TIMEOUT_S = 20;
const EIO_DEAD_TIMEOUT_S = 10;

/** Seconds to let the writer run before each kill: 3..12, from a seeded generator (mulberry32). */
function killDelays(seed: number, count: number): number[] {
  let state = seed >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
  return Array.from({ length: count }, () => 3 + Math.floor(next() * 10));
}

function guestScript(sharedDir: string): string {
  const q = shellQuote;
  const lsvd = `${q(Deno.execPath())} run -A --cached-only ${q(MAIN)}`;
  const S = q(sharedDir);
  return `set -u
cd ${q(REPO)}
S=${S}
${
    guestLsvdPrelude(MAIN)
  }# writer DIR RUN: 64 KiB random files, each fsync'd, then its checksum recorded (off the device).
writer() {
  n=0
  while [ ! -e /run/stop-$2 ]; do
    n=$((n + 1))
    f="$1/f$n"
    if head -c 65536 /dev/urandom > "$f" 2>>/run/errors-$2 && sync "$f" 2>>/run/errors-$2; then
      echo "$(sha256sum "$f" | cut -c1-64)  $f" >> /run/manifest-$2
    else
      echo "ERROR writing $f" >> /run/errors-$2
    fi
  done
}
# run NAME DEVICE KILLS ARGS...: writer, KILLS SIGKILL+restart cycles, one --takeover upgrade, checks.
run() {
  r=$1; dev=$2; kills=$3; shift 3
  mnt=/mnt/$r
  set -- --dir $S/store-$r --socket /run/$r.sock --device $dev --mount $mnt --dead-timeout 600 --io-timeout ${IO_TIMEOUT_S} "$@"
  start $r-0 "$@" --size 256M
  mkdir -p $mnt/w
  : > /run/errors-$r; : > /run/manifest-$r
  writer $mnt/w $r &
  wpid=$!
  k=0
  for delay in $DELAYS; do
    [ $k -ge $kills ] && break
    k=$((k + 1))
    sleep $delay
    kill -9 $pid; wait $pid 2>/dev/null
    t0=$(date +%s)
    start $r-$k "$@"
    result "$r-restart-$k" "{\\"seconds\\":$(($(date +%s) - t0)),\\"files\\":$(wc -l < /run/manifest-$r)}"
  done
  direct_check "$@"
  if [ $r = plain ]; then grow_check "$@"; fi
  sleep 3
  old=$pid
  start $r-upgrade "$@" --takeover
  wait $old; result "$r-old-exit" $?
  sleep 5
  touch /run/stop-$r; wait $wpid
  if [ $r = plain ]; then stall_check; snapshot_check; fi
  files=$(wc -l < /run/manifest-$r); errors=$(grep -c ERROR /run/errors-$r)
  cat /run/errors-$r
  umount $mnt || echo "cannot unmount $mnt"
  blockdev --flushbufs $dev; echo 3 > /proc/sys/vm/drop_caches
  e2fsck -fn $dev > /run/fsck-$r.txt 2>&1; fsck=$?
  cat /run/fsck-$r.txt
  mount $dev $mnt
  sha256sum -c --quiet /run/manifest-$r > /run/bad-$r.txt 2>&1
  bad=$(grep -c FAILED /run/bad-$r.txt)
  head -5 /run/bad-$r.txt
  result "$r" "{\\"files\\":$files,\\"errors\\":$errors,\\"fsck\\":$fsck,\\"bad\\":$bad}"
  kill -TERM $pid; wait $pid; result "$r-exit" $?
}
# Writes the kernel saw acknowledged but no FLUSH covered must survive a kill too: the filesystem
# stays mounted and never writes them again. 16 MiB written with O_DIRECT (each write done when lsvd
# acknowledged it, no fsync), lsvd killed at once and started again, the file read back from it.
direct_check() {
  head -c 16777216 /dev/urandom > /run/direct-$r
  dd if=/run/direct-$r of=$mnt/direct bs=1M oflag=direct status=none 2>>/run/errors-$r || echo "ERROR direct dd" >> /run/errors-$r
  kill -9 $pid; wait $pid 2>/dev/null
  k=$((k + 1))
  start $r-$k "$@"
  dd if=$mnt/direct of=/run/direct-back-$r bs=1M iflag=direct status=none
  if cmp -s /run/direct-$r /run/direct-back-$r; then lost=0; else lost=1; fi
  result "$r-direct" "{\\"lost\\":$lost}"
}
# The volume grown at a restart (--size larger) under the mounted filesystem and the writer: the
# resumed device grows with it, and the filesystem grows online.
grow_check() {
  kill -9 $pid; wait $pid 2>/dev/null
  k=$((k + 1))
  start $r-$k "$@" --size 384M
  before=$(df -k --output=size $mnt | tail -1)
  resize2fs $dev > /run/resize-$r.txt 2>&1; rs=$?
  cat /run/resize-$r.txt
  after=$(df -k --output=size $mnt | tail -1)
  result "$r-grow" "{\\"resize2fs\\":$rs,\\"deviceBytes\\":$(blockdev --getsize64 $dev),\\"beforeKb\\":$before,\\"afterKb\\":$after}"
}
# A serving daemon paused past --io-timeout: the kernel shuts down the sockets whose requests timed
# out; once it runs again it gives the kernel new ones (without that, I/O would wait for the
# dead-connection timeout and then fail).
stall_check() {
  kill -STOP $pid; sleep $((${IO_TIMEOUT_S} + 10)); kill -CONT $pid; sleep 15
  result stall "{\\"reconnected\\":$(grep -c 'The kernel dropped' $S/plain-upgrade.log)}"
}
# A snapshot of the live (mounted, journal dirty) filesystem, served read-only and mounted.
snapshot_check() {
  ${lsvd} snapshot create live --dir $S/store-plain > $S/snapshot.log 2>&1 || cat $S/snapshot.log
  pidw=$pid
  start snapshot --dir $S/store-plain --socket /run/ro.sock --read-only --snapshot live --device /dev/nbd3 --mount /mnt/ro
  # noload shows the filesystem without what only its journal holds: lost+found, not always w/.
  if [ -d /mnt/ro/lost+found ]; then ro=true; else ro=false; fi
  opts=$(awk '$2 == "/mnt/ro" {print $4}' /proc/mounts)
  result snapshot "{\\"mounted\\":$ro,\\"options\\":\\"$opts\\"}"
  kill -TERM $pid; wait $pid; result snapshot-exit $?
  pid=$pidw
}
DELAYS="${killDelays(SEED, Math.max(KILLS, JOURNAL_KILLS)).join(" ")}"
run plain /dev/nbd0 ${KILLS}
mkdir -p /run/journal
run journal /dev/nbd1 ${JOURNAL_KILLS} --journal /run/journal
# No daemon comes back: a read fails with EIO within the dead-connection timeout.
start eio --dir $S/store-eio --socket /run/eio.sock --device /dev/nbd2 --mount /mnt/eio --size 64M --dead-timeout ${EIO_DEAD_TIMEOUT_S} --io-timeout 5
kill -9 $pid; wait $pid 2>/dev/null
t0=$(date +%s)
dd if=/dev/nbd2 of=/dev/null bs=4096 count=1 skip=1000 iflag=direct 2>/run/eio.txt; code=$?
cat /run/eio.txt
result eio "{\\"code\\":$code,\\"seconds\\":$(($(date +%s) - t0)),\\"eio\\":$(grep -c 'Input/output error' /run/eio.txt)}"
result kernelErrors "$(dmesg | grep -E 'I/O error.*nbd[01]|EXT4-fs error \\(device nbd[01]\\)|EXT4-fs \\(nbd[01]\\).*read-only' | wc -l)"
dmesg | grep -E 'nbd|EXT4' | tail -40
for f in $S/*.log; do echo "----- $f"; cat $f; done
`;
}

// deno-lint-ignore no-explicit-any
type Results = Record<string, any>;

Deno.test({
  name: "A mount outlives its daemon: SIGKILL restarts and a --takeover upgrade without an I/O error, " +
    "with and without --journal; no daemon → EIO within --dead-timeout (VM)",
  ignore: vmUnavailableReason() !== undefined,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    console.log(`seed ${SEED} (LSVD_VM_SEED=${SEED} repeats the kill moments), ${KILLS} kills`);
    const sharedDir = await Deno.makeTempDir({ prefix: "lsvd-vm-restart-" });
    try {
      const vm = await runInVm({
        script: guestScript(sharedDir),
        sharedDir,
        timeoutMs: LONG ? 2_400_000 : 1_200_000,
      });
      const results: Results = {};
      for (const m of vm.console.matchAll(/RESULT (\{.*\})\r?$/gm)) {
        const { name, value } = JSON.parse(m[1]!);
        results[name] = value;
      }
      console.log(JSON.stringify(results));
      const check = (ok: boolean, what: string) => {
        if (!ok) throw new VmError(`${what} (seed ${SEED})`, vm.console);
      };
      check(vm.exitCode === 0, `the guest script exited with ${vm.exitCode}`);
      for (const run of ["plain", "journal"]) {
        const r = results[run];
        check(r !== undefined, `no result for the ${run} run`);
        check(r.files >= 5, `${run}: the writer finished only ${r.files} files`);
        check(r.errors === 0, `${run}: ${r.errors} write or fsync errors`);
        check(r.fsck === 0, `${run}: e2fsck -fn exited ${r.fsck}`);
        check(r.bad === 0, `${run}: ${r.bad} fsync'd files differ on the device`);
        check(
          results[`${run}-direct`]?.lost === 0,
          `${run}: O_DIRECT writes acknowledged before a kill were lost`,
        );
        check(results[`${run}-old-exit`] === 0, `${run}: the daemon that handed over exited non-zero`);
        check(results[`${run}-exit`] === 0, `${run}: the last daemon did not stop cleanly`);
        check(
          vm.console.includes(`was left connected for this volume; resumed it`),
          `${run}: no restart resumed the device`,
        );
      }
      check(vm.console.includes("keeping that mount."), "a restart did not keep the mount");
      const grow = results["plain-grow"];
      check(
        grow?.deviceBytes === 384 * 2 ** 20,
        `the resumed device did not grow to 384 MiB: ${JSON.stringify(grow)}`,
      );
      check(
        grow.resize2fs === 0 && grow.afterKb > grow.beforeKb + 100_000,
        `resize2fs: ${JSON.stringify(grow)}`,
      );
      const formats = vm.console.match(/creating an ext4 filesystem/g)?.length ?? 0;
      check(formats === 3, `mkfs ran ${formats} times, not once per new volume (3)`);
      check(vm.console.includes("handed the volume over."), "the takeover did not get a hand-over");
      check(
        results.stall?.reconnected >= 1,
        "the daemon paused past --io-timeout did not reconnect the kernel",
      );
      check(results.snapshot?.mounted === true, "the snapshot of the live filesystem did not mount");
      check(/(^|,)ro(,|$)/.test(results.snapshot?.options ?? ""), "the snapshot mount is not read-only");
      check(
        results.kernelErrors === 0,
        `${results.kernelErrors} kernel I/O or ext4 errors on the served devices`,
      );
      check(
        results.eio?.code !== 0 && results.eio?.eio === 1,
        "the read without a daemon did not fail with EIO",
      );
      check(
        results.eio?.seconds <= EIO_DEAD_TIMEOUT_S + 20,
        `the read without a daemon took ${results.eio?.seconds} s to fail (dead timeout ${EIO_DEAD_TIMEOUT_S} s)`,
      );
      assert.ok(true);
    } finally {
      await Deno.remove(sharedDir, { recursive: true }).catch(() => {});
    }
  },
});
