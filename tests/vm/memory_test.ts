/**
 * @module
 * lsvd's defaults on the machine the seed targets: a 512 MiB VM (the guest sees about 457 MiB).
 * `serve --help` must show defaults scaled down for it, and the real daemon with those defaults
 * takes a 256 MiB write burst (nbdcopy --flush from nbdkit's random plugin) and reads it back, with
 * its peak RSS (VmHWM) recorded. The bound asserted is the issue's: 128 MiB.
 */

import assert from "node:assert/strict";
import { runInVm, shellQuote, VmError, vmUnavailableReason } from "../support/vm.ts";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;
const REPO = new URL("../..", import.meta.url).pathname;
const PEAK_RSS_BYTES_MAX = 128 * 1024 * 1024;

function guestScript(sharedDir: string): string {
  const q = shellQuote;
  const deno = `${q(Deno.execPath())} run -A --cached-only ${q(MAIN)}`;
  const log = `${sharedDir}/serve.log`;
  return `set -u
result() { echo "RESULT {\\"name\\":\\"$1\\",\\"value\\":$2}"; }
cd ${q(REPO)}
result memTotalKb "$(awk '/MemTotal/ {print $2}' /proc/meminfo)"
${deno} serve --help > /run/help.txt 2>&1
for flag in dirty-limit cache-size uploads; do
  result "$flag" "\\"$(grep -o -- "--$flag [A-Z]* .*(default: [^)]*)" /run/help.txt | sed 's/.*default: //; s/)$//')\\""
done
${deno} serve --dir ${q(sharedDir)}/store --socket /run/lsvd.sock --size 1G >${q(log)} 2>&1 &
pid=$!
i=0
until grep -q "Device is now operational." ${q(log)}; do
  if ! kill -0 $pid 2>/dev/null; then cat ${q(log)}; exit 90; fi
  i=$((i + 1)); [ $i -gt 1800 ] && { cat ${q(log)}; kill -9 $pid; exit 91; }
  sleep 0.1
done
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
`;
}

Deno.test({
  name: "On a 512 MiB VM the defaults scale down and a 256 MiB burst peaks under 128 MiB RSS (VM)",
  ignore: vmUnavailableReason() !== undefined,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const sharedDir = await Deno.makeTempDir({ prefix: "lsvd-vm-memory-" });
    try {
      const vm = await runInVm({
        script: guestScript(sharedDir),
        sharedDir,
        timeoutMs: 600_000,
        memoryMb: 512,
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
      assert(
        results.peakRssKb * 1024 <= PEAK_RSS_BYTES_MAX,
        `peak RSS ${Math.round(results.peakRssKb / 1024)} MiB > 128 MiB (idle ${
          Math.round(results.idleRssKb / 1024)
        } MiB)`,
      );
    } finally {
      await Deno.remove(sharedDir, { recursive: true }).catch(() => {});
    }
  },
});
