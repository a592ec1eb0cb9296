/**
 * @module
 * Issue 19's stronger proof, with the real kernel NBD client: PostgreSQL on ext4 on `/dev/nbd0`
 * served by `lsvd serve --device --mount`, pgbench running, lsvd killed with SIGKILL twice and
 * started again each time, then replaced by a `--takeover` upgrade. pgbench must finish without a
 * client error (the database never sees an I/O error: its I/O pauses while no daemon serves), the
 * database must pass amcheck and a consistency check of pgbench's balances, and after a clean stop
 * e2fsck must find nothing. Postgres comes from the host's Debian packages (the guest runs in the
 * host's root): the test is skipped when they are missing.
 */

import { guestLsvdPrelude, runInVm, shellQuote, VmError, vmUnavailableReason } from "../support/vm.ts";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;
const REPO = new URL("../..", import.meta.url).pathname;
const PG_BIN = "/usr/lib/postgresql/15/bin";
const IO_TIMEOUT_S = 20;

function postgresMissing(): string | undefined {
  try {
    Deno.statSync(`${PG_BIN}/pgbench`);
    return undefined;
  } catch {
    return `no PostgreSQL 15 in ${PG_BIN}`;
  }
}

function guestScript(sharedDir: string): string {
  const q = shellQuote;
  return `set -u
cd ${q(REPO)}
S=${q(sharedDir)}
PG=${PG_BIN}
${guestLsvdPrelude(MAIN)}pgsql() { runuser -u postgres -- $PG/psql -h /run/pg -d postgres -Atc "$1"; }
set -- --dir $S/store --socket /run/pg.sock --device /dev/nbd0 --mount /mnt/pg --dead-timeout 600 --io-timeout ${IO_TIMEOUT_S}
start s0 "$@" --size 512M
mkdir -p /mnt/pg/data /run/pg; chown postgres /mnt/pg/data /run/pg
runuser -u postgres -- $PG/initdb -D /mnt/pg/data --data-checksums -A trust >/dev/null || exit 92
runuser -u postgres -- $PG/pg_ctl -D /mnt/pg/data -l /run/pg/pg.log -w -t 300 \\
  -o "-k /run/pg -c listen_addresses='' -c shared_buffers=32MB -c fsync=on" start >/dev/null || { cat /run/pg/pg.log; exit 93; }
runuser -u postgres -- $PG/pgbench -h /run/pg -i -s 2 -q postgres >/dev/null 2>&1 || exit 94
before=$(pgsql "select count(*) from pgbench_history")
runuser -u postgres -- $PG/pgbench -h /run/pg -c 4 -T 75 -n postgres > $S/pgbench.txt 2>&1 &
bench=$!
sleep 12; kill -9 $pid; wait $pid 2>/dev/null; start s1 "$@"
sleep 12; kill -9 $pid; wait $pid 2>/dev/null; start s2 "$@"
sleep 10; old=$pid; start s3 "$@" --takeover; wait $old; result old-exit $?
wait $bench; result pgbench $?
cat $S/pgbench.txt | grep -E "processed|failed|error|tps" | head -8
tx=$(grep -E "^number of transactions actually processed" $S/pgbench.txt | sed -E 's/.*: ([0-9]+).*/\\1/')
after=$(pgsql "select count(*) from pgbench_history")
# pgbench -n skips the vacuum: every processed transaction left one history row.
result history "{\\"processed\\":\${tx:-0},\\"rows\\":$((after - before))}"
result balances "\\"$(pgsql "select (select sum(abalance) from pgbench_accounts) = (select sum(delta) from pgbench_history) and (select sum(bbalance) from pgbench_branches) = (select sum(delta) from pgbench_history)")\\""
runuser -u postgres -- $PG/pg_amcheck -h /run/pg -d postgres --install-missing --heapallindexed >$S/amcheck.txt 2>&1; result amcheck $?
head -5 $S/amcheck.txt
runuser -u postgres -- $PG/pg_ctl -D /mnt/pg/data -m fast -w stop >/dev/null; result pgstop $?
umount /mnt/pg; blockdev --flushbufs /dev/nbd0
e2fsck -fn /dev/nbd0 > $S/fsck.txt 2>&1; result fsck $?
mount /dev/nbd0 /mnt/pg
kill -TERM $pid; wait $pid; result exit $?
result kernelErrors "$(dmesg | grep -E 'I/O error.*nbd0|EXT4-fs error \\(device nbd0\\)|EXT4-fs \\(nbd0\\).*read-only' | wc -l)"
dmesg | grep -E 'nbd0|EXT4' | tail -20
for f in $S/s*.log /run/pg/pg.log; do echo "----- $f"; tail -20 $f; done
`;
}

// deno-lint-ignore no-explicit-any
type Results = Record<string, any>;

Deno.test({
  name:
    "Postgres on a mounted /dev/nbd0 runs pgbench through two SIGKILL restarts and a --takeover upgrade " +
    "of lsvd without a client error; amcheck, balances and e2fsck clean (VM)",
  ignore: vmUnavailableReason() !== undefined || postgresMissing() !== undefined,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const sharedDir = await Deno.makeTempDir({ prefix: "lsvd-vm-pg-" });
    try {
      const vm = await runInVm({ script: guestScript(sharedDir), sharedDir, timeoutMs: 1_200_000 });
      const results: Results = {};
      for (const m of vm.console.matchAll(/RESULT (\{.*\})\r?$/gm)) {
        const { name, value } = JSON.parse(m[1]!);
        results[name] = value;
      }
      console.log(JSON.stringify(results));
      const check = (ok: boolean, what: string) => {
        if (!ok) throw new VmError(what, vm.console);
      };
      check(vm.exitCode === 0, `the guest script exited with ${vm.exitCode}`);
      check(results.pgbench === 0, `pgbench exited ${results.pgbench} (a client error)`);
      check(results.history?.processed > 0, "pgbench processed no transaction");
      check(
        results.history?.rows === results.history?.processed,
        `pgbench processed ${results.history?.processed} transactions but ${results.history?.rows} are stored`,
      );
      check(results.balances === "t", "pgbench's balances do not add up");
      check(results.amcheck === 0, `pg_amcheck exited ${results.amcheck}`);
      check(results.pgstop === 0, "Postgres did not stop cleanly");
      check(results.fsck === 0, `e2fsck -fn exited ${results.fsck}`);
      check(results["old-exit"] === 0, "the daemon that handed over exited non-zero");
      check(results.exit === 0, "the last daemon did not stop cleanly");
      check(results.kernelErrors === 0, `${results.kernelErrors} kernel I/O or ext4 errors on /dev/nbd0`);
      const resumed = vm.console.match(/was left connected for this volume; resumed it/g)?.length ?? 0;
      check(resumed === 3, `${resumed} restarts resumed the device, not 3`);
    } finally {
      await Deno.remove(sharedDir, { recursive: true }).catch(() => {});
    }
  },
});
