/**
 * @module
 * NBD over TLS against plaintext, side by side in one run (issue 24): 1 MiB sequential reads (QD8)
 * and 4 KiB random reads (QD32) over TCP on loopback, fio's nbd engine, from three clients:
 *   - `plain, no TLS`: a daemon without TLS (the plaintext path as it has always been);
 *   - `plain, --tls on`: plaintext clients of a daemon that offers TLS (what offering it costs them);
 *   - `TLS, --tls on`: the same daemon over nbds:// (TLS 1.3 from gnutls in libnbd).
 * Both daemons serve the directory store with a volume written once before the rounds and a read
 * cache twice its size, so after the first pass the reads come from lsvd's cache: the figures are
 * the NBD path's (plaintext or TLS), not the store's. fio cannot pass libnbd a CA directory (`tls-certificates` is local file access, which
 * libnbd refuses in URIs from programs that do not allow it), so the TLS client runs with
 * `tls-verify-peer=false`: the same encryption, without checking who the server is. Rounds
 * rotate the client order so machine noise hits all three.
 *
 *   deno run -A bench/tls.ts                  # small: 128 MiB volume, 5 s per run, 3 rounds (~2 min)
 *   deno run -A bench/tls.ts --full           # 1 GiB volume, 20 s per run, 3 rounds
 *   deno run -A bench/tls.ts --write-results  # also prepend the table to bench/RESULTS.md
 */

import { prependToResults } from "./report.ts";
import { median } from "./stats.ts";
import { parseArgs } from "node:util";
import { join } from "node:path";
import { Daemon } from "../tests/support/daemon.ts";
import { makeTlsCerts } from "../tests/support/tls_certs.ts";
import { type FioJob, runFio } from "./fio.ts";

const MiB = 2 ** 20;

interface Workload {
  name: string;
  job: Omit<FioJob, "sizeBytes" | "runtimeS" | "ioSizeBytes">;
  unit: "MiB/s" | "IOPS";
}

const WORKLOADS: Workload[] = [
  {
    name: "seqread-1m",
    job: { name: "seqread-1m", rw: "read", blockSizeBytes: MiB, iodepth: 8 },
    unit: "MiB/s",
  },
  {
    name: "randread-4k",
    job: { name: "randread-4k", rw: "randread", blockSizeBytes: 4096, iodepth: 32 },
    unit: "IOPS",
  },
];

const CLIENTS = ["plain, no TLS", "plain, --tls on", "TLS, --tls on"] as const;
type Client = typeof CLIENTS[number];

async function startDaemon(
  dir: string,
  volumeBytes: number,
  tlsArgs: string[],
): Promise<{ d: Daemon; port: string }> {
  const d = await Daemon.start({
    args: [
      "--dir",
      dir,
      "--size",
      String(volumeBytes),
      "--cache-size",
      String(2 * volumeBytes),
      "--listen",
      "127.0.0.1:0",
      ...tlsArgs,
    ],
  });
  const line = await d.waitForLine(/Serving NBD at nbds?:\/\/127\.0\.0\.1:\d+\/lsvd\./, 1000);
  return { d, port: line.replace(/^.*:(\d+)\/lsvd\.$/, "$1") };
}

/** Fills the volume with 1 MiB writes so every read returns data. */
async function fill(uri: string, volumeBytes: number): Promise<void> {
  const job: FioJob = { name: "fill", rw: "write", blockSizeBytes: MiB, iodepth: 8, sizeBytes: volumeBytes };
  await runFio({ ...job, endFsync: true }, { kind: "uri", uri });
}

function measure(workload: Workload, uri: string, volumeBytes: number, seconds: number) {
  return runFio(
    { ...workload.job, sizeBytes: volumeBytes, ioSizeBytes: 1000 * volumeBytes, runtimeS: seconds },
    { kind: "uri", uri },
  );
}

/** Runs the comparison; prints (and with --write-results records) the table. */
export async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      full: { type: "boolean" },
      rounds: { type: "string" },
      seconds: { type: "string" },
      "volume-mib": { type: "string" },
      "write-results": { type: "boolean" },
    },
  });
  const volumeBytes = Number(values["volume-mib"] ?? (values.full ? 1024 : 128)) * MiB;
  const seconds = Number(values.seconds ?? (values.full ? 20 : 5));
  const rounds = Number(values.rounds ?? 3);
  const certs = await makeTlsCerts();
  const dirs = [join(certs.dir, "store-plain"), join(certs.dir, "store-tls")];
  const daemons: Daemon[] = [];
  const results = new Map<string, number[]>();
  try {
    const plain = await startDaemon(dirs[0]!, volumeBytes, []);
    daemons.push(plain.d);
    const tls = await startDaemon(dirs[1]!, volumeBytes, [
      "--tls",
      "on",
      "--tls-cert",
      certs.serverCert,
      "--tls-key",
      certs.serverKey,
    ]);
    daemons.push(tls.d);
    const uris: Record<Client, string> = {
      "plain, no TLS": `nbd://127.0.0.1:${plain.port}/lsvd`,
      "plain, --tls on": `nbd://127.0.0.1:${tls.port}/lsvd`,
      "TLS, --tls on": `nbds://127.0.0.1:${tls.port}/lsvd?tls-verify-peer=false`,
    };
    await fill(uris["plain, no TLS"], volumeBytes);
    await fill(uris["plain, --tls on"], volumeBytes);
    for (let round = 0; round < rounds; round++) {
      const order = CLIENTS.map((_, i) => CLIENTS[(i + round) % CLIENTS.length]!);
      for (const workload of WORKLOADS) {
        for (const client of order) {
          const r = await measure(workload, uris[client], volumeBytes, seconds);
          const figure = workload.unit === "IOPS" ? r.iops : r.bytesPerS / MiB;
          const key = `${workload.name}|${client}`;
          results.set(key, [...(results.get(key) ?? []), figure]);
          console.error(
            `round ${round + 1} ${workload.name} ${client}: ${figure.toFixed(0)} ${workload.unit}`,
          );
        }
      }
    }
  } finally {
    for (const d of daemons) await d.stop();
    await certs.remove();
  }
  const table = report(args, { volumeBytes, seconds, rounds }, results);
  console.log(table);
  if (values["write-results"]) await prependToResults(table);
  return 0;
}

function report(
  args: string[],
  run: { volumeBytes: number; seconds: number; rounds: number },
  results: Map<string, number[]>,
): string {
  const command = `deno run -A bench/tls.ts ${args.join(" ")}`.trim();
  const rows = WORKLOADS.flatMap((w) => {
    const base = median(results.get(`${w.name}|plain, no TLS`)!);
    return CLIENTS.map((c) => {
      const m = median(results.get(`${w.name}|${c}`)!);
      return `| ${w.name} | ${c} | ${m.toFixed(0)} ${w.unit} | ${(m / base).toFixed(2)} × |`;
    });
  });
  return [
    `## NBD over TLS vs plaintext (${new Date().toISOString()}, ${run.rounds} rounds of ${run.seconds} s, ` +
    `${run.volumeBytes / MiB} MiB volume, directory store, TCP on loopback, fio nbd engine)`,
    "",
    `\`${command}\``,
    "",
    "| workload | client | median | × plain, no TLS |",
    "| -------- | ------ | -----: | --------------: |",
    ...rows,
    "",
  ].join("\n");
}

if (import.meta.main) Deno.exit(await main(Deno.args));
