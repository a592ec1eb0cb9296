/**
 * @module
 * Starts a real single-node Ceph RADOS Gateway (one mon, one memstore OSD, radosgw) in a
 * temporary directory on free loopback ports, so the S3 store is tested against the server
 * whose semantics (SigV4, conditional PUT, ranged GET, ListObjectsV2) lsvd relies on.
 * Used by tests and benchmarks through `startRgw()`, and runnable by hand:
 * `deno run -A tests/support/rgw.ts` prints the endpoint and keys and serves until Ctrl-C.
 * The recipe and its pitfalls are in /work/shared/notes/s3-servers.md.
 */

import { CreateBucketCommand, S3Client } from "@aws-sdk/client-s3";
import { freePorts } from "./ports.ts";
import { S3Store } from "../../src/store/s3.ts";

export interface RgwOptions {
  /** RAM the memstore OSD may hold; default 3 GiB. */
  memstoreDeviceBytes?: number;
  /** Bound on the whole boot; default 60 s. */
  bootTimeoutMs?: number;
  accessKeyId?: string;
  secretAccessKey?: string;
  /** Created at boot; default `lsvd-test`. */
  bucket?: string;
  /** Keep the temporary directory (logs) after stop(), for debugging. */
  keepDirectory?: boolean;
  /** The mon's and the gateway's ports (hand runs in an assigned range); default two free ones. */
  ports?: [number, number];
}

export interface Rgw {
  /** e.g. `http://127.0.0.1:41234` */
  endpoint: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  bucket: string;
  /** The temporary directory with ceph.conf and the daemons' logs. */
  directory: string;
  createBucket(name: string): Promise<void>;
  /** Stops every daemon (SIGTERM, then SIGKILL) and removes the directory. Safe to call twice. */
  stop(): Promise<void>;
}

const STOP_GRACE_MS = 5_000;
const COMMAND_TIMEOUT_MS = 30_000;

interface Daemon {
  name: string;
  child: Deno.ChildProcess;
  /** Last bytes the daemon wrote to stderr (errors before its log file opens). */
  stderrTail: () => string;
  exited: Promise<Deno.CommandStatus>;
}

/** Boots the gateway, creates the user and bucket; throws with log tails when any step fails. */
export async function startRgw(options: RgwOptions = {}): Promise<Rgw> {
  const directory = await Deno.makeTempDir({ prefix: "lsvd-rgw-" });
  const [monPort, rgwPort] = options.ports ?? freePorts(2) as [number, number];
  const daemons: Daemon[] = [];
  // If the test process exits without stop() (uncaught error, Deno.exit), take the daemons along.
  const killOnExit = () => {
    daemons.forEach((d) => tryKill(d.child, "SIGKILL"));
    if (!options.keepDirectory) tryRemoveSync(directory);
  };
  globalThis.addEventListener("unload", killOnExit);
  const stop = once(async () => {
    globalThis.removeEventListener("unload", killOnExit);
    await stopDaemons(daemons);
    if (!options.keepDirectory) await Deno.remove(directory, { recursive: true }).catch(() => {});
  });
  const deadline = Date.now() + (options.bootTimeoutMs ?? 60_000);
  try {
    const rgw = await boot({ directory, monPort, rgwPort, daemons, deadline, options, stop });
    return rgw;
  } catch (error) {
    const tails = await logTails(directory, daemons);
    await stop();
    throw new Error(`Cannot start the Ceph RADOS Gateway: ${errorMessage(error)}\n${tails}`, {
      cause: error,
    });
  }
}

interface BootContext {
  directory: string;
  monPort: number;
  rgwPort: number;
  daemons: Daemon[];
  deadline: number;
  options: RgwOptions;
  stop: () => Promise<void>;
}

async function boot(c: BootContext): Promise<Rgw> {
  const conf = `${c.directory}/ceph.conf`;
  const fsid = crypto.randomUUID();
  await writeConfig(c, fsid);
  await createKeyring(c.directory);
  await run(c, "monmaptool", [
    "--create",
    "--addv",
    "a",
    `[v1:127.0.0.1:${c.monPort}]`,
    "--fsid",
    fsid,
    `${c.directory}/monmap`,
  ]);
  await run(c, "ceph-mon", [
    "-c",
    conf,
    "--mkfs",
    "-i",
    "a",
    "--monmap",
    `${c.directory}/monmap`,
    "--keyring",
    `${c.directory}/keyring`,
  ]);
  c.daemons.push(spawnDaemon("ceph-mon", ["-c", conf, "-i", "a", "-f"]));
  const osdUuid = crypto.randomUUID();
  await run(c, "ceph", ["-c", conf, "--connect-timeout", "20", "osd", "new", osdUuid, "0"]);
  await run(c, "ceph-osd", ["-c", conf, "-i", "0", "--mkfs", "--osd-uuid", osdUuid]);
  c.daemons.push(spawnDaemon("ceph-osd", ["-c", conf, "-i", "0", "-f"]));
  c.daemons.push(spawnDaemon("radosgw", ["-c", conf, "-n", "client.rgw.a", "-f"]));
  const endpoint = `http://127.0.0.1:${c.rgwPort}`;
  await waitForHttp(c, endpoint);
  const accessKeyId = c.options.accessKeyId ?? "LSVDTESTACCESSKEY";
  const secretAccessKey = c.options.secretAccessKey ?? "lsvd-test-secret-key";
  await run(c, "radosgw-admin", [
    "-c",
    conf,
    "user",
    "create",
    "--uid=lsvd",
    "--display-name=lsvd",
    `--access-key=${accessKeyId}`,
    `--secret=${secretAccessKey}`,
  ]);
  const region = "us-east-1";
  const createBucket = (name: string) =>
    createBucketOn({ endpoint, region, accessKeyId, secretAccessKey }, name);
  const bucket = c.options.bucket ?? "lsvd-test";
  await createBucket(bucket);
  return {
    endpoint,
    region,
    accessKeyId,
    secretAccessKey,
    bucket,
    directory: c.directory,
    createBucket,
    stop: c.stop,
  };
}

async function writeConfig(c: BootContext, fsid: string): Promise<void> {
  const d = c.directory;
  for (const sub of ["mon", "osd", "run", "log", "rgw"]) await Deno.mkdir(`${d}/${sub}`);
  const deviceBytes = c.options.memstoreDeviceBytes ?? 3 * 1024 ** 3;
  const conf = `[global]
fsid = ${fsid}
mon host = v1:127.0.0.1:${c.monPort}
ms bind msgr2 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon warn on pool no redundancy = false
osd crush chooseleaf type = 0
run dir = ${d}/run
log file = ${d}/log/$name.log
admin socket = ${d}/run/$name.asok
keyring = ${d}/keyring
[mon]
mon data = ${d}/mon
paxos propose interval = 0.01
paxos min wait = 0.001
[osd]
osd data = ${d}/osd
osd objectstore = memstore
memstore device bytes = ${deviceBytes}
[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:${c.rgwPort} tcp_nodelay=1
rgw data = ${d}/rgw
`;
  await Deno.writeTextFile(`${d}/ceph.conf`, conf);
}

async function createKeyring(directory: string): Promise<void> {
  const keyring = `${directory}/keyring`;
  const entities: [string, string[]][] = [
    ["mon.", ["--cap", "mon", "allow *"]],
    ["client.admin", ["--cap", "mon", "allow *", "--cap", "osd", "allow *", "--cap", "mgr", "allow *"]],
    ["osd.0", ["--cap", "mon", "allow profile osd", "--cap", "osd", "allow *"]],
    ["client.rgw.a", ["--cap", "mon", "allow rw", "--cap", "osd", "allow rwx"]],
  ];
  let create = true;
  for (const [name, caps] of entities) {
    const args = [keyring, ...(create ? ["--create-keyring"] : []), "--gen-key", "-n", name, ...caps];
    create = false;
    await runUnbounded("ceph-authtool", args);
  }
}

/** Runs a helper command to completion within the boot deadline; throws with its output on failure. */
async function run(c: BootContext, command: string, args: string[]): Promise<void> {
  const timeoutMs = Math.max(1, Math.min(COMMAND_TIMEOUT_MS, c.deadline - Date.now()));
  await runUnbounded(command, args, AbortSignal.timeout(timeoutMs));
}

async function runUnbounded(command: string, args: string[], signal?: AbortSignal): Promise<void> {
  const output = await new Deno.Command(command, {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    ...(signal === undefined ? {} : { signal }),
  }).output();
  if (output.success) return;
  const text = new TextDecoder().decode(output.stderr).trim() ||
    new TextDecoder().decode(output.stdout).trim();
  const why = output.signal === null ? `exit code ${output.code}` : `killed by ${output.signal} (timeout?)`;
  throw new Error(`${command} ${args.slice(0, 6).join(" ")} failed (${why}): ${text.slice(-2000)}`);
}

function spawnDaemon(name: string, args: string[]): Daemon {
  const child = new Deno.Command(name, { args, stdin: "null", stdout: "null", stderr: "piped" }).spawn();
  let tail = "";
  const drained = (async () => {
    const decoder = new TextDecoder();
    for await (const chunk of child.stderr) tail = (tail + decoder.decode(chunk)).slice(-4000);
  })().catch(() => {});
  const exited = child.status.then(async (status) => {
    await drained;
    return status;
  });
  return { name, child, stderrTail: () => tail, exited };
}

/** Waits until the gateway answers HTTP, failing early if a daemon dies. */
async function waitForHttp(c: BootContext, endpoint: string): Promise<void> {
  const died = Promise.race(
    c.daemons.map((d) => d.exited.then((s) => `${d.name} exited (code ${s.code}, signal ${s.signal})`)),
  );
  let dead: string | undefined;
  died.then((why) => dead = why);
  while (Date.now() < c.deadline) {
    if (dead !== undefined) throw new Error(dead);
    try {
      const response = await fetch(endpoint, { signal: AbortSignal.timeout(2_000) });
      await response.body?.cancel();
      if (response.ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`radosgw did not answer on ${endpoint} in time`);
}

interface Credentials {
  endpoint: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
}

async function createBucketOn(credentials: Credentials, name: string): Promise<void> {
  const client = new S3Client({
    endpoint: credentials.endpoint,
    region: credentials.region,
    forcePathStyle: true,
    credentials: { accessKeyId: credentials.accessKeyId, secretAccessKey: credentials.secretAccessKey },
  });
  try {
    await client.send(new CreateBucketCommand({ Bucket: name }));
  } finally {
    client.destroy();
  }
}

async function stopDaemons(daemons: Daemon[]): Promise<void> {
  // Reverse start order: the gateway first, the monitor last.
  for (const daemon of [...daemons].reverse()) {
    tryKill(daemon.child, "SIGTERM");
    const timer = setTimeout(() => tryKill(daemon.child, "SIGKILL"), STOP_GRACE_MS);
    await daemon.exited;
    clearTimeout(timer);
  }
}

async function logTails(directory: string, daemons: Daemon[]): Promise<string> {
  const parts: string[] = [];
  for (const d of daemons) {
    if (d.stderrTail().trim() !== "") parts.push(`--- ${d.name} stderr:\n${d.stderrTail().trim()}`);
  }
  try {
    for await (const entry of Deno.readDir(`${directory}/log`)) {
      const text = await Deno.readTextFile(`${directory}/log/${entry.name}`);
      const lines = text.split("\n").filter((l) => !l.includes("heartbeat_map")).slice(-15);
      parts.push(`--- ${entry.name} (last lines):\n${lines.join("\n")}`);
    }
  } catch {
    // no logs yet
  }
  return parts.join("\n");
}

function tryKill(child: Deno.ChildProcess, signal: Deno.Signal): void {
  try {
    child.kill(signal);
  } catch {
    // already exited
  }
}

function tryRemoveSync(path: string): void {
  try {
    Deno.removeSync(path, { recursive: true });
  } catch {
    // best effort while the process exits
  }
}

function once(fn: () => Promise<void>): () => Promise<void> {
  let result: Promise<void> | undefined;
  return () => result ??= fn();
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

async function main(): Promise<void> {
  const started = performance.now();
  const rgw = await startRgw();
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  console.log(`Ceph RADOS Gateway ready in ${seconds} s (logs in ${rgw.directory}/log)`);
  console.log(`AWS_ENDPOINT_URL=${rgw.endpoint}`);
  console.log(`AWS_ACCESS_KEY_ID=${rgw.accessKeyId}`);
  console.log(`AWS_SECRET_ACCESS_KEY=${rgw.secretAccessKey}`);
  console.log(`AWS_REGION=${rgw.region}`);
  console.log(`bucket: ${rgw.bucket}`);
  console.log("Press Ctrl-C to stop.");
  await new Promise<void>((resolve) => {
    Deno.addSignalListener("SIGINT", resolve);
    Deno.addSignalListener("SIGTERM", resolve);
  });
  await rgw.stop();
  Deno.exit(0);
}

/** The environment a daemon or an lsvd command needs to reach this gateway (credentials, region). */
export function rgwEnv(rgw: Rgw): Record<string, string> {
  return {
    ...Deno.env.toObject(),
    AWS_ACCESS_KEY_ID: rgw.accessKeyId,
    AWS_SECRET_ACCESS_KEY: rgw.secretAccessKey,
    AWS_REGION: rgw.region,
  };
}

/**
 * The gateway's bucket as the command-line stories see it: store options, environment, and the
 * same store as an S3Store for checks and deliberate damage (close it when done).
 */
export function rgwTarget(
  rgw: Rgw,
  dir: string,
): { storeArgs: string[]; env: Record<string, string>; store: S3Store; dir: string } {
  const store = new S3Store({
    bucket: rgw.bucket,
    endpoint: rgw.endpoint,
    forcePathStyle: true,
    region: rgw.region,
    credentials: { accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey },
  });
  return {
    storeArgs: ["--bucket", rgw.bucket, "--endpoint", rgw.endpoint, "--path-style"],
    env: rgwEnv(rgw),
    store,
    dir,
  };
}

if (import.meta.main) await main();
