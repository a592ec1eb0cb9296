/**
 * @module
 * The filesystem on an attached device: make one when the device is empty, mount it, grow it when
 * the device grew, and on shutdown unmount everything mounted from the device (a busy mount stays
 * until it is idle, or is lazily detached when the stop is forced). Uses the system's mkfs.ext4, mount, umount and resize2fs.
 * Every command runs as a child process and is awaited, so the event loop keeps serving the device.
 */

import type { Logger } from "../util/log.ts";

const EXT_SUPERBLOCK_OFFSET = 1024;
const EXT_MAGIC = 0xef53;
/** Bytes checked for zeros when blkid is missing and the device holds no ext superblock. */
const ZERO_PROBE_BYTES = 1024 * 1024;

/** What is on the device before we touch it. */
export type DeviceContent =
  | { kind: "ext"; sizeBytes: number }
  | { kind: "other"; type: string }
  | { kind: "empty" };

/** A mount whose source is the device. */
export interface MountEntry {
  mountPoint: string;
  fsType: string;
}

export interface MountDeviceOptions {
  devicePath: string;
  mountPoint: string;
  log: Logger;
  /** Extra mount options (-o). */
  mountOptions?: string[];
  /** Mount read-only (ext: `ro,noload`): never format, grow or replay the journal (`serve --read-only`). */
  readOnly?: boolean;
}

/** Prepares and mounts: mkfs.ext4 when empty, mount, then grow when the device is larger. */
export async function mountDevice(options: MountDeviceOptions): Promise<void> {
  const { devicePath, mountPoint, log } = options;
  const content = await probeDevice(devicePath);
  if (content.kind === "empty" && options.readOnly) {
    throw new Error(`Cannot mount ${devicePath} read-only: it holds no filesystem`);
  }
  if (content.kind === "empty") {
    log(`${devicePath} holds no filesystem; creating an ext4 filesystem.`);
    await makeExt4(devicePath);
  }
  log(`Mounting ${devicePath} on ${mountPoint}.`);
  await Deno.mkdir(mountPoint, { recursive: true }).catch((error) => {
    throw new Error(`Cannot mount ${devicePath} on ${mountPoint}: ${(error as Error).message}`);
  });
  const isExt = content.kind !== "other";
  const extraOptions = [
    // noload: a read-only ext3/4 with a dirty journal (a snapshot of a live filesystem) mounts
    // without replaying it; replay would write, and the device refuses writes.
    ...(options.readOnly ? (isExt ? ["ro", "noload"] : ["ro"]) : []),
    ...(isExt && !options.readOnly ? ["noinit_itable"] : []),
    ...(options.mountOptions ?? []),
  ];
  const args = [...(extraOptions.length ? ["-o", extraOptions.join(",")] : []), devicePath, mountPoint];
  await runTool("mount", args, `mount ${devicePath} on ${mountPoint}`);
  if (isExt && !options.readOnly) await growIfSmaller({ devicePath, mountPoint, mountArgs: args, log });
}

/** Reads the device: an ext superblock, another filesystem or partition table (blkid), or nothing. */
export async function probeDevice(devicePath: string): Promise<DeviceContent> {
  const head = await readHead(devicePath, ZERO_PROBE_BYTES);
  const ext = parseExtSuperblock(head);
  if (ext) return { kind: "ext", sizeBytes: ext.sizeBytes };
  const blkidType = await blkidProbe(devicePath);
  if (blkidType) return { kind: "other", type: blkidType };
  if (blkidType === undefined && head.some((byte) => byte !== 0)) {
    throw new Error(
      `Cannot format ${devicePath}: it holds data that is not an ext filesystem (and blkid is missing)`,
    );
  }
  return { kind: "empty" };
}

/** ext2/3/4 superblock -> filesystem size, or undefined when there is no ext magic. */
export function parseExtSuperblock(head: Uint8Array): { sizeBytes: number } | undefined {
  if (head.length < EXT_SUPERBLOCK_OFFSET + 1024) return undefined;
  const sb = new DataView(head.buffer, head.byteOffset + EXT_SUPERBLOCK_OFFSET, 1024);
  if (sb.getUint16(56, true) !== EXT_MAGIC) return undefined;
  const blockSizeBytes = 1024 * 2 ** sb.getUint32(24, true);
  const is64Bit = (sb.getUint32(0x60, true) & 0x80) !== 0;
  const blocks = sb.getUint32(4, true) + (is64Bit ? sb.getUint32(0x150, true) * 2 ** 32 : 0);
  return { sizeBytes: blocks * blockSizeBytes };
}

/**
 * mkfs.ext4 without writing the whole disk: inode tables and the journal are not zeroed (an lsvd
 * volume reads never-written blocks as zeros anyway) and nothing is discarded.
 */
export async function makeExt4(devicePath: string): Promise<void> {
  const extended = "lazy_itable_init=1,lazy_journal_init=1,nodiscard";
  await runTool("mkfs.ext4", ["-q", "-F", "-E", extended, devicePath], `format ${devicePath}`);
}

/**
 * Grows a mounted ext filesystem when the device is larger than it: online, or, where the kernel
 * refuses that (no CAP_SYS_RESOURCE in a container), unmounted after a forced check.
 */
async function growIfSmaller(
  p: { devicePath: string; mountPoint: string; mountArgs: string[]; log: Logger },
) {
  const { devicePath, log } = p;
  const deviceBytes = await deviceSizeBytes(devicePath);
  const ext = parseExtSuperblock(await readHead(devicePath, EXT_SUPERBLOCK_OFFSET + 1024));
  if (!ext || deviceBytes - ext.sizeBytes < 1024 * 1024) return;
  log(`Growing the filesystem on ${devicePath} from ${ext.sizeBytes} to ${deviceBytes} bytes.`);
  const online = await runCommand("resize2fs", [devicePath]);
  if (online.missing) {
    throw new Error(`Cannot grow the filesystem on ${devicePath}: resize2fs is not installed`);
  }
  if (online.success) return;
  log(`Cannot grow the filesystem online (${lastLine(online)}); growing it unmounted.`);
  await runTool("umount", [p.mountPoint], `unmount ${p.mountPoint}`);
  const check = await runCommand("e2fsck", ["-f", "-p", devicePath]);
  if (check.missing || check.code >= 4) {
    throw new Error(`Cannot grow the filesystem on ${devicePath}: e2fsck failed: ${lastLine(check)}`);
  }
  await runTool("resize2fs", [devicePath], `grow the filesystem on ${devicePath}`);
  await runTool("mount", p.mountArgs, `mount ${devicePath} on ${p.mountPoint}`);
}

function lastLine(result: CommandResult): string {
  const lines = result.stderr.split("\n").map((line) => line.trim()).filter((line) => line !== "");
  return lines.pop() ?? `exit code ${result.code}`;
}

/** Mounts whose source is the device (by major:minor or path), innermost first. */
export function findMounts(
  devicePath: string,
  mountinfo = Deno.readTextFileSync("/proc/self/mountinfo"),
): MountEntry[] {
  const rdev = Deno.statSync(devicePath).rdev;
  const wanted = rdev === null ? undefined : majorMinor(rdev);
  const mounts: MountEntry[] = [];
  for (const line of mountinfo.split("\n")) {
    const fields = line.split(" ");
    const separator = fields.indexOf("-");
    if (separator < 0 || fields.length < separator + 3) continue;
    const source = unescapeMountField(fields[separator + 2]!);
    if (fields[2] === wanted || source === devicePath) {
      mounts.push({ mountPoint: unescapeMountField(fields[4]!), fsType: fields[separator + 1]! });
    }
  }
  return mounts.reverse();
}

export interface UnmountOptions {
  log: Logger;
  /** Tries of a plain umount before the lazy one (default 10). */
  attempts?: number;
  delayMs?: number;
}

/** Unmounts every mount of the device: plain umount with bounded retries, then `umount -l`. */
export async function unmountDevice(devicePath: string, options: UnmountOptions): Promise<void> {
  const { log } = options;
  let lazy = false;
  for (const mount of findMounts(devicePath)) {
    log(`${devicePath} is mounted on ${mount.mountPoint}; unmounting.`);
    if (await unmountWithRetries(mount.mountPoint, options)) continue;
    log(`${mount.mountPoint} is still busy; detaching it lazily.`);
    await runTool("umount", ["-l", mount.mountPoint], `unmount ${mount.mountPoint}`);
    lazy = true;
  }
  // A lazily detached filesystem lives on while files are open; sync writes its dirty data now.
  if (lazy) await runTool("sync", [], "sync filesystems");
}

/**
 * One plain umount of every mount of the device, never lazy (a busy filesystem stays mounted and
 * keeps its data path): the mount points that are still mounted.
 */
export async function unmountIdle(devicePath: string, log?: Logger): Promise<string[]> {
  const busy: string[] = [];
  for (const mount of findMounts(devicePath)) {
    log?.(`${devicePath} is mounted on ${mount.mountPoint}; unmounting.`);
    if (!(await runCommand("umount", [mount.mountPoint])).success) busy.push(mount.mountPoint);
  }
  return busy;
}

async function unmountWithRetries(mountPoint: string, options: UnmountOptions): Promise<boolean> {
  const attempts = options.attempts ?? 10;
  for (let attempt = 1; attempt <= attempts; attempt++) {
    const result = await runCommand("umount", [mountPoint]);
    if (result.success) return true;
    if (attempt === attempts) options.log(`Cannot unmount ${mountPoint}: ${result.message}`);
    else await new Promise((resolve) => setTimeout(resolve, options.delayMs ?? 500));
  }
  return false;
}

async function deviceSizeBytes(devicePath: string): Promise<number> {
  using file = await Deno.open(devicePath, { read: true });
  return await file.seek(0, Deno.SeekMode.End);
}

async function readHead(devicePath: string, lengthBytes: number): Promise<Uint8Array> {
  using file = await Deno.open(devicePath, { read: true });
  const buffer = new Uint8Array(lengthBytes);
  let done = 0;
  while (done < lengthBytes) {
    const n = await file.read(buffer.subarray(done));
    if (n === null) break;
    done += n;
  }
  return buffer.subarray(0, done);
}

/** blkid's TYPE or PTTYPE, "" when it finds nothing, undefined when blkid is missing. */
async function blkidProbe(devicePath: string): Promise<string | undefined> {
  const result = await runCommand("blkid", ["-p", "-o", "export", devicePath]);
  if (result.missing) return undefined;
  const found = /^(?:TYPE|PTTYPE)=(.*)$/m.exec(result.stdout);
  return found ? found[1]! : "";
}

/** Runs a tool and turns failure into one line: "Cannot <action>: <first stderr line>". */
async function runTool(command: string, args: string[], action: string): Promise<void> {
  const result = await runCommand(command, args);
  if (result.missing) throw new Error(`Cannot ${action}: ${command} is not installed`);
  if (!result.success) throw new Error(`Cannot ${action}: ${result.message}`);
}

interface CommandResult {
  success: boolean;
  missing: boolean;
  code: number;
  stdout: string;
  stderr: string;
  /** The first non-empty stderr line (tools print their name and version first, then the cause). */
  message: string;
}

async function runCommand(command: string, args: string[]): Promise<CommandResult> {
  let output: Deno.CommandOutput;
  try {
    output = await new Deno.Command(command, { args, stdin: "null", stdout: "piped", stderr: "piped" })
      .output();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      return { success: false, missing: true, code: 127, stdout: "", stderr: "", message: "" };
    }
    throw error;
  }
  const stderr = new TextDecoder().decode(output.stderr).trim();
  const lines = stderr.split("\n").map((line) => line.trim()).filter((line) =>
    line !== "" && !/^\S+ [\d.]+ \(/.test(line)
  );
  const message = lines[0] ?? `exit code ${output.code}`;
  const stdout = new TextDecoder().decode(output.stdout);
  return { success: output.success, missing: false, code: output.code, stdout, stderr, message };
}

/** A device number as mountinfo and sysfs write it ("major:minor"), from stat's rdev. */
export function majorMinor(rdev: number): string {
  const dev = BigInt(rdev);
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn);
  const minor = (dev & 0xffn) | ((dev >> 12n) & ~0xffn);
  return `${major}:${minor}`;
}

/** mountinfo escapes space, tab, newline and backslash as octal. */
export function unescapeMountField(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}
