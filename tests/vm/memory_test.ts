/**
 * @module
 * lsvd's defaults on the machine the seed targets: a 512 MiB VM (the guest sees about 457 MiB).
 * `serve --help` must show defaults scaled down for it, and the real daemon with those defaults
 * takes a 256 MiB write burst (nbdcopy --flush from nbdkit's random plugin) and reads it back, with
 * its peak RSS (VmHWM) recorded. The bound asserted is the issue's: 128 MiB. In the same boot a second
 * daemon, on a fresh volume with a disk cache (`--cache-dir` on the VM's own ext4 disk, 384 MiB), takes
 * the same burst and reads it back twice: the first pass fills the disk cache (the 14 MiB memory cache
 * holds a fraction), the second is served from it (its metrics are checked), and the same bound holds.
 * A third daemon serves the defaults from a bucket: Ceph RGW started on the host, reached over QEMU's
 * user-mode network at 10.0.2.2; the same burst, the same bound (bench/RESULTS.md, "Issue 23: memory on
 * a bucket, a real margin": 117.0 MiB measured; 124-129 MiB before the writer let go of a burst's buffers
 * when idle and the NBD input buffers scaled with the machine, the first of which alone was 10-12 MiB of
 * the read-back's peak).
 */

import assert from "node:assert/strict";
import { type Rgw, startRgw } from "../support/rgw.ts";
import { runInVm, shellQuote, VmError, vmUnavailableReason } from "../support/vm.ts";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;
const REPO = new URL("../..", import.meta.url).pathname;
const PEAK_RSS_BYTES_MAX = 128 * 1024 * 1024;
const DISK_CACHE_SIZE = "384M";
/** bin/lsvd's Deno flags (docs/design/memory-on-a-bucket.md, "V8's memory saver mode"). */
const DENO_FLAGS = "--no-code-cache --v8-flags=--memory-saver-mode";
const METRICS = "127.0.0.1:9464";

function guestScript(sharedDir: string, rgw: Rgw): string {
  const q = shellQuote;
  const deno = `${q(Deno.execPath())} run -A --cached-only ${DENO_FLAGS} ${q(MAIN)}`;
  const log = `${sharedDir}/serve.log`;
  return `set -u
result() { echo "RESULT {\\"name\\":\\"$1\\",\\"value\\":$2}"; }
# up LOG PID CODE: waits until that daemon is operational; if it exits first, or takes 3 min, prints its
# log and exits CODE (CODE + 1 for the timeout).
up() {
  i=0
  until grep -q "Device is now operational." "$1"; do
    if ! kill -0 $2 2>/dev/null; then cat "$1"; exit $3; fi
    i=$((i + 1)); [ $i -gt 1800 ] && { cat "$1"; kill -9 $2; exit $(($3 + 1)); }
    sleep 0.1
  done
}
cd ${q(REPO)}
result memTotalKb "$(awk '/MemTotal/ {print $2}' /proc/meminfo)"
${deno} serve --help > /run/help.txt 2>&1
for flag in dirty-limit cache-size uploads; do
  result "$flag" "\\"$(grep -o -- "--$flag [A-Z]* .*(default: [^)]*)" /run/help.txt | sed 's/.*default: //; s/)$//')\\""
done
${deno} serve --dir ${q(sharedDir)}/store --socket /run/lsvd.sock --size 1G >${q(log)} 2>&1 &
pid=$!
up ${q(log)} $pid 90
result idleRssKb "$(awk '/VmRSS/ {print $2}' /proc/$pid/status)"
nbdcopy --flush -- [ nbdkit random 256M seed=7 ] 'nbd+unix:///lsvd?socket=/run/lsvd.sock' || exit 92
nbdcopy -- 'nbd+unix:///lsvd?socket=/run/lsvd.sock' - | head -c 268435456 | sha256sum > /run/back.txt
nbdcopy -- [ nbdkit random 256M seed=7 ] - | sha256sum > /run/want.txt
if cmp -s /run/back.txt /run/want.txt; then result same true; else result same false; fi
result peakRssKb "$(awk '/VmHWM/ {print $2}' /proc/$pid/status)"
kill -TERM $pid
wait $pid
result serveExit $?
cat ${q(log)}
${diskCacheRun(sharedDir, deno)}
${bucketRun(sharedDir, deno, rgw)}
`;
}

/**
 * The third daemon: the defaults on a bucket (Ceph RGW on the host, reached over QEMU's user-mode
 * network at 10.0.2.2), the same burst written and read back. The AWS SDK and the GET bodies make
 * this the heaviest of the three (bench/RESULTS.md, "Issue 23: memory on a bucket").
 */
function bucketRun(sharedDir: string, deno: string, rgw: Rgw): string {
  const q = shellQuote;
  const log = `${sharedDir}/serve-s3.log`;
  const uri = "'nbd+unix:///lsvd?socket=/run/lsvd-s3.sock'";
  const endpoint = rgw.endpoint.replace("127.0.0.1", "10.0.2.2");
  const metric = (name: string) =>
    `"$(curl -s http://${METRICS}/metrics | awk '/^${name} / {v = $2} END {print v + 0}')"`;
  return `AWS_ACCESS_KEY_ID=${q(rgw.accessKeyId)} AWS_SECRET_ACCESS_KEY=${q(rgw.secretAccessKey)} \
AWS_REGION=${q(rgw.region)} ${deno} serve --bucket ${q(rgw.bucket)} --endpoint ${q(endpoint)} --path-style \
  --socket /run/lsvd-s3.sock --size 1G --metrics ${METRICS} >${q(log)} 2>&1 &
pid=$!
up ${q(log)} $pid 97
result s3IdleRssKb "$(awk '/VmRSS/ {print $2}' /proc/$pid/status)"
nbdcopy --flush -- [ nbdkit random 256M seed=7 ] ${uri} || exit 99
result s3WriteRssKb "$(awk '/VmHWM/ {print $2}' /proc/$pid/status)"
nbdcopy -- ${uri} - | head -c 268435456 | sha256sum > /run/back-s3.txt
if cmp -s /run/back-s3.txt /run/want.txt; then result s3Same true; else result s3Same false; fi
result s3PeakRssKb "$(awk '/VmHWM/ {print $2}' /proc/$pid/status)"
result s3HeapTotal ${metric("lsvd_process_heap_total_bytes")}
result s3External ${metric("lsvd_process_external_bytes")}
result s3Collections ${metric("lsvd_process_gc_collections")}
kill -TERM $pid
wait $pid
result s3ServeExit $?
cat ${q(log)}`;
}

/**
 * The second daemon: a fresh volume with --cache-dir, the same burst, two read passes; the disk
 * cache's own counters (metrics endpoint, on the guest's loopback) show it filled and served.
 */
function diskCacheRun(sharedDir: string, deno: string): string {
  const q = shellQuote;
  const log = `${sharedDir}/serve-dc.log`;
  const uri = "'nbd+unix:///lsvd?socket=/run/lsvd-dc.sock'";
  const metric = (name: string) =>
    `"$(curl -s http://${METRICS}/metrics | awk '/^${name} / {v = $2} END {print v + 0}')"`;
  return `ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up
mkfs.ext4 -q -F /dev/vda && mkdir -p /mnt/disk && mount /dev/vda /mnt/disk || exit 96
# A disk cache whose index would not fit this machine's memory is refused in one line, before anything.
${deno} serve --dir ${q(sharedDir)}/store-big --socket /run/lsvd-big.sock --size 1G \
  --cache-dir /mnt/disk/big --cache-dir-size 100G >/run/big.txt 2>&1
result dcTooBigExit $?
result dcTooBigLines "$(grep -c . /run/big.txt)"
result dcTooBigCreated "$(if [ -e /mnt/disk/big ] || [ -e ${
    q(sharedDir)
  }/store-big ]; then echo true; else echo false; fi)"
grep -q -- "--cache-dir-size 100G needs [0-9]* MiB of memory for its index" /run/big.txt && result dcTooBigSaid true
${deno} serve --dir ${q(sharedDir)}/store-dc --socket /run/lsvd-dc.sock --size 1G \
  --cache-dir /mnt/disk/dcache --cache-dir-size ${DISK_CACHE_SIZE} --metrics ${METRICS} >${q(log)} 2>&1 &
pid=$!
up ${q(log)} $pid 93
result dcIdleRssKb "$(awk '/VmRSS/ {print $2}' /proc/$pid/status)"
nbdcopy --flush -- [ nbdkit random 256M seed=7 ] ${uri} || exit 95
result dcWriteRssKb "$(awk '/VmHWM/ {print $2}' /proc/$pid/status)"
for pass in 1 2; do
  nbdcopy -- ${uri} - | head -c 268435456 | sha256sum > /run/back-dc.txt
  if cmp -s /run/back-dc.txt /run/want.txt; then result dcSame$pass true; else result dcSame$pass false; fi
  result dcHits$pass ${metric("lsvd_disk_cache_hits_total")}
  result dcPeakRssKb$pass "$(awk '/VmHWM/ {print $2}' /proc/$pid/status)"
  result dcHeapUsed$pass ${metric("lsvd_process_heap_used_bytes")}
  result dcExternal$pass ${metric("lsvd_process_external_bytes")}
done
result dcBytes ${metric("lsvd_disk_cache_bytes")}
result dcPeakRssKb "$(awk '/VmHWM/ {print $2}' /proc/$pid/status)"
kill -TERM $pid
wait $pid
result dcServeExit $?
cat ${q(log)}`;
}

Deno.test({
  name:
    "On a 512 MiB VM the defaults scale down and a 256 MiB burst peaks under 128 MiB RSS, also with --cache-dir and on a bucket (VM)",
  ignore: vmUnavailableReason() !== undefined,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const sharedDir = await Deno.makeTempDir({ prefix: "lsvd-vm-memory-" });
    const rgw = await startRgw();
    try {
      const vm = await runInVm({
        script: guestScript(sharedDir, rgw),
        sharedDir,
        timeoutMs: 900_000,
        memoryMb: 512,
        diskBytes: 1024 * 1024 * 1024,
        network: true,
      });
      const results: Record<string, any> = {};
      for (const m of vm.console.matchAll(/RESULT (\{.*\})\r?$/gm)) {
        const { name, value } = JSON.parse(m[1]!);
        results[name] = value;
      }
      console.log(JSON.stringify(results));
      const check = (ok: boolean, what: string) => {
        if (!ok) throw new VmError(what, vm.console);
      };
      check(vm.exitCode === 0, `the guest script exited with ${vm.exitCode}`);
      check(results.memTotalKb < 512 * 1024, "the guest has at most 512 MiB");
      check(results["dirty-limit"] === "28M" && results["cache-size"] === "14M", "defaults for ~457 MiB");
      check(results.same === true, "the burst reads back identical");
      check(results.serveExit === 0, "lsvd exits 0 after SIGTERM");
      check(results.dcSame1 === true && results.dcSame2 === true, "with --cache-dir both passes read back");
      check(results.dcBytes >= 240 * 1024 * 1024, "the first pass filled the disk cache with the burst");
      check(results.dcHits2 > results.dcHits1, "the second pass was served from the disk cache");
      check(results.dcServeExit === 0, "lsvd with --cache-dir exits 0 after SIGTERM");
      check(
        results.dcTooBigExit === 1 && results.dcTooBigLines === 1 && results.dcTooBigSaid === true &&
          results.dcTooBigCreated === false,
        "--cache-dir-size 100G on 512 MiB is refused in one line naming the index's memory, creating nothing",
      );
      check(results.s3Same === true, "on a bucket the burst reads back identical");
      check(results.s3ServeExit === 0, "lsvd on a bucket exits 0 after SIGTERM");
      const mib = (kb: number) => Math.round(kb / 1024);
      assert(
        results.peakRssKb * 1024 <= PEAK_RSS_BYTES_MAX,
        `peak RSS ${mib(results.peakRssKb)} MiB > 128 MiB (idle ${mib(results.idleRssKb)} MiB)`,
      );
      assert(
        results.dcPeakRssKb * 1024 <= PEAK_RSS_BYTES_MAX,
        `with --cache-dir: peak RSS ${mib(results.dcPeakRssKb)} MiB > 128 MiB (idle ${
          mib(results.dcIdleRssKb)
        } MiB, ${mib(results.dcWriteRssKb)} MiB after the write)`,
      );
      assert(
        results.s3PeakRssKb * 1024 <= PEAK_RSS_BYTES_MAX,
        `on a bucket: peak RSS ${mib(results.s3PeakRssKb)} MiB > 128 MiB (idle ${
          mib(results.s3IdleRssKb)
        } MiB, ${mib(results.s3WriteRssKb)} MiB after the write)`,
      );
    } finally {
      await rgw.stop();
      await Deno.remove(sharedDir, { recursive: true }).catch(() => {});
    }
  },
});
