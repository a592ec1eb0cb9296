/**
 * @module
 * PostgreSQL on ext4 on an NBD export, the way a user runs it on a machine without the nbd module
 * (../shared/notes/postgres.md): nbdfuse exposes the export as a file, `losetup --sector-size 4096`
 * makes it a block device (lsvd's minimum block size is 4 KiB), ext4 on that, and Debian's
 * PostgreSQL 15 with a data directory on the mount. Shared by the crash test
 * (tests/serve/postgres_test.ts) and the benchmark (bench/postgres.ts), so both build the stack the
 * same way. Every process is started here, in the foreground, and ended by its own id.
 */

import { join } from "node:path";
import { runClient, runClientOk } from "./clients.ts";
import { forEachLine } from "./lines.ts";

export const PG_BIN = "/usr/lib/postgresql/15/bin";
/** Postgres refuses to run as root; its Debian package makes this user. */
const PG_USER = "postgres";
const TEARDOWN_TIMEOUT_MS = 30_000;

/** Runs a Postgres program as the postgres user (setpriv execs: no extra process in between). */
export function asPostgres(program: string, args: string[]): { program: string; args: string[] } {
  return {
    program: "setpriv",
    args: ["--reuid", PG_USER, "--regid", PG_USER, "--init-groups", "--", join(PG_BIN, program), ...args],
  };
}

/** ext4 on an NBD export through nbdfuse and a loop device. */
export class Ext4OnNbd {
  readonly mountPoint: string;
  readonly loopDevice: string;
  #fuseDir: string;
  #nbdfuse: Deno.ChildProcess;

  private constructor(fuseDir: string, mountPoint: string, loopDevice: string, nbdfuse: Deno.ChildProcess) {
    this.#fuseDir = fuseDir;
    this.mountPoint = mountPoint;
    this.loopDevice = loopDevice;
    this.#nbdfuse = nbdfuse;
  }

  /**
   * Attaches the export at `uri`. mkfs makes a fresh file system; otherwise `e2fsck -fy` runs first
   * unless fsck is false (after a crash it repairs free-block and inode counters), and its exit code
   * is returned.
   */
  static async attach(
    uri: string,
    workDir: string,
    options: { mkfs: boolean; fsck?: boolean },
  ): Promise<{ fs: Ext4OnNbd; fsckCode: number | undefined; fsckOutput: string }> {
    const fuseDir = join(workDir, "fuse");
    const mountPoint = join(workDir, "fs");
    await Deno.mkdir(fuseDir, { recursive: true });
    const file = join(fuseDir, "disk");
    const nbdfuse = new Deno.Command("nbdfuse", {
      args: [file, uri],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    try {
      await waitForFile(file, nbdfuse);
      const m = await loopMount(file, mountPoint, options);
      return {
        fs: new Ext4OnNbd(fuseDir, mountPoint, m.loopDevice, nbdfuse),
        fsckCode: m.fsckCode,
        fsckOutput: m.fsckOutput,
      };
    } catch (e) {
      await unmountFuse(fuseDir, nbdfuse);
      throw e;
    }
  }

  /** Clean teardown: umount (writes everything back), loop detach, FUSE unmount, nbdfuse exit. */
  async detach(): Promise<void> {
    await loopUnmount(this.mountPoint, this.loopDevice);
    await unmountFuse(this.#fuseDir, this.#nbdfuse);
  }

  /**
   * Teardown after the NBD server died: nbdfuse aborts, the FUSE mount is dead, so everything is
   * detached lazily and nothing is written back.
   */
  async detachDead(): Promise<void> {
    await runClient("umount", ["-l", this.mountPoint]);
    await runClient("losetup", ["-d", this.loopDevice]);
    await runClient("fusermount3", ["-u", "-z", this.#fuseDir]);
    await bounded(this.#nbdfuse.status, "nbdfuse to exit", () => this.#nbdfuse.kill("SIGKILL"));
  }
}

/**
 * `losetup --direct-io=on --sector-size 4096` + mkfs or e2fsck + mount: the same block-device path
 * for a volume file on nbdfuse and for a plain local file (the benchmark's floor).
 */
export async function loopMount(
  file: string,
  mountPoint: string,
  options: { mkfs: boolean; fsck?: boolean },
): Promise<{ loopDevice: string; fsckCode: number | undefined; fsckOutput: string }> {
  await Deno.mkdir(mountPoint, { recursive: true, mode: 0o755 });
  const loop =
    (await runClientOk("losetup", ["-f", "--show", "--direct-io=on", "--sector-size", "4096", file]))
      .stdout.trim();
  try {
    let fsckCode: number | undefined;
    let fsckOutput = "";
    if (options.mkfs) {
      await runClientOk("mkfs.ext4", [
        "-q",
        "-F",
        "-E",
        "lazy_itable_init=1,lazy_journal_init=1,nodiscard",
        loop,
      ]);
    } else if (options.fsck !== false) {
      const fsck = await runClient("e2fsck", ["-fy", loop], { timeoutMs: 120_000 });
      fsckCode = fsck.code;
      fsckOutput = fsck.stdout + fsck.stderr;
    }
    await runClientOk("mount", [loop, mountPoint]);
    await Deno.chmod(mountPoint, 0o755);
    return { loopDevice: loop, fsckCode, fsckOutput };
  } catch (e) {
    await runClient("losetup", ["-d", loop]);
    throw e;
  }
}

/** umount + losetup -d of what loopMount attached. */
export async function loopUnmount(mountPoint: string, loopDevice: string): Promise<void> {
  await runClientOk("umount", [mountPoint], { timeoutMs: 120_000 });
  await runClientOk("losetup", ["-d", loopDevice]);
}

async function unmountFuse(fuseDir: string, nbdfuse: Deno.ChildProcess): Promise<void> {
  await runClient("fusermount3", ["-u", fuseDir]);
  await bounded(nbdfuse.status, "nbdfuse to exit", () => {
    try {
      nbdfuse.kill("SIGKILL");
    } catch {
      // already gone
    }
  });
}

async function bounded<T>(p: Promise<T>, what: string, onTimeout: () => void): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      onTimeout();
      reject(new Error(`Timed out waiting for ${what}`));
    }, TEARDOWN_TIMEOUT_MS);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

async function waitForFile(path: string, child: Deno.ChildProcess): Promise<void> {
  let exited = false;
  child.status.then(() => (exited = true));
  const deadline = Date.now() + TEARDOWN_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (exited) throw new Error(`nbdfuse exited before ${path} appeared`);
    try {
      await Deno.stat(path);
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 25));
    }
  }
  throw new Error(`${path} did not appear within ${TEARDOWN_TIMEOUT_MS} ms`);
}

/**
 * A Postgres server with its data directory on a given file system, run in the foreground, so
 * `crash()` can kill the postmaster and every backend at once.
 * Settings go on the command line, not into postgresql.conf: a config line written just before a
 * crash may come back as zeros (ext4 without a sync), which would be the test's fault, not lsvd's.
 */
export class PostgresServer {
  readonly dataDir: string;
  readonly port: number;
  readonly lines: string[] = [];
  #child: Deno.ChildProcess | undefined;
  #output: Promise<void> = Promise.resolve();

  constructor(dataDir: string, port: number) {
    this.dataDir = dataDir;
    this.port = port;
  }

  /** `initdb --data-checksums` into dataDir (made and handed to the postgres user here). */
  async init(): Promise<void> {
    await Deno.mkdir(this.dataDir, { recursive: true });
    await runClientOk("chown", [PG_USER, this.dataDir]);
    const { program, args } = asPostgres("initdb", [
      "-D",
      this.dataDir,
      "--data-checksums",
      "-A",
      "trust",
      "-U",
      PG_USER,
      "--no-instructions",
    ]);
    await runClientOk(program, args, { timeoutMs: 180_000 });
  }

  get log(): string {
    return this.lines.join("\n");
  }

  /** Starts the postmaster and waits until it accepts connections (crash recovery included). */
  async start(settings: Record<string, string> = {}): Promise<void> {
    const options = {
      port: String(this.port),
      listen_addresses: "127.0.0.1",
      unix_socket_directories: "",
      ...settings,
    };
    const { program, args } = asPostgres("postgres", [
      "-D",
      this.dataDir,
      ...Object.entries(options).flatMap(([k, v]) => ["-c", `${k}=${v}`]),
    ]);
    this.#child = new Deno.Command(program, {
      args,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#output = Promise.all([
      forEachLine(this.#child.stdout, (l) => this.lines.push(l), { partialLast: true }),
      forEachLine(this.#child.stderr, (l) => this.lines.push(l), { partialLast: true }),
    ])
      .then(() => {});
    const deadline = Date.now() + 120_000;
    let exited = false;
    this.#child.status.then(() => (exited = true));
    while (Date.now() < deadline) {
      if (exited) {
        await this.#output;
        throw new Error(`postgres exited during start-up\n${this.log}`);
      }
      const ready = await runClient(join(PG_BIN, "pg_isready"), ["-h", "127.0.0.1", "-p", String(this.port)]);
      if (ready.code === 0) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`postgres did not accept connections within 120 s\n${this.log}`);
  }

  /**
   * A power cut for Postgres: every backend calls setsid() itself, so there is no group to signal.
   * The postmaster is stopped (it can start no new child), then it and all its descendants get
   * SIGKILL within the same moment.
   */
  async crash(): Promise<void> {
    const child = this.#child;
    if (child === undefined) return;
    try {
      Deno.kill(child.pid, "SIGSTOP");
      for (const pid of [...descendants(child.pid), child.pid]) {
        try {
          Deno.kill(pid, "SIGKILL");
        } catch {
          // exited meanwhile
        }
      }
    } catch {
      // already gone
    }
    await child.status;
    await this.#output;
    this.#child = undefined;
  }

  /** Fast shutdown (SIGINT): a checkpoint, then exit. Returns the exit code. */
  async stop(): Promise<number> {
    const child = this.#child;
    if (child === undefined) return 0;
    try {
      child.kill("SIGINT");
    } catch {
      // already gone
    }
    const status = await bounded(child.status, "postgres to shut down", () => void this.crash());
    await this.#output;
    this.#child = undefined;
    return status.code;
  }

  /** psql -At: one query, rows as text. */
  async query(sql: string, database = "postgres"): Promise<string> {
    const r = await runClientOk(join(PG_BIN, "psql"), [
      "-h",
      "127.0.0.1",
      "-p",
      String(this.port),
      "-U",
      PG_USER,
      "-d",
      database,
      "-v",
      "ON_ERROR_STOP=1",
      "-At",
      "-c",
      sql,
    ], { timeoutMs: 120_000 });
    return r.stdout.trim();
  }
}

/** Every process below pid, from /proc (children first found, then theirs). */
function descendants(pid: number): number[] {
  const parentOf = new Map<number, number>();
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const stat = Deno.readTextFileSync(`/proc/${entry.name}/stat`);
      // Fields after the parenthesised command: state, ppid, ...
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      parentOf.set(Number(entry.name), ppid);
    } catch {
      // exited while listed
    }
  }
  const found: number[] = [];
  const queue = [pid];
  while (queue.length > 0) {
    const parent = queue.shift()!;
    for (const [p, pp] of parentOf) {
      if (pp === parent) {
        found.push(p);
        queue.push(p);
      }
    }
  }
  return found;
}
