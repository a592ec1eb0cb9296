/**
 * @module
 * Boots a throwaway VM for tests that need a kernel feature this machine lacks (the nbd module):
 * Debian's kernel under `qemu-system-x86_64 -accel tcg` (KVM hangs here), a busybox initramfs
 * built at test time, the host's root shared read-only over 9p as the guest's root, and one host
 * directory shared read-write at the same path so state survives across boots, and optionally a
 * blank virtio disk (/dev/vda: a local disk, as a Fly machine's NVMe, for a --cache-dir). The guest runs one
 * shell script chrooted into the host root, prints a unique marker with the exit code and powers off.
 */

import assert from "node:assert";
import { buildCpio, type CpioEntry } from "./cpio.ts";

/** Modules loaded in the guest, in dependency order (insmod does not resolve dependencies). */
const GUEST_MODULES = [
  "drivers/virtio/virtio_ring.ko",
  "drivers/virtio/virtio.ko",
  "drivers/virtio/virtio_pci_modern_dev.ko",
  "drivers/virtio/virtio_pci_legacy_dev.ko",
  "drivers/virtio/virtio_pci.ko",
  "fs/netfs/netfs.ko",
  "fs/fscache/fscache.ko",
  "net/9p/9pnet.ko",
  "net/9p/9pnet_virtio.ko",
  "fs/9p/9p.ko",
  "drivers/block/nbd.ko",
  "drivers/block/virtio_blk.ko",
  "lib/crc16.ko",
  "fs/mbcache.ko",
  "fs/jbd2/jbd2.ko",
  "crypto/crc32c_generic.ko",
  "fs/ext4/ext4.ko",
  "net/core/failover.ko",
  "drivers/net/net_failover.ko",
  "drivers/net/virtio_net.ko",
];
const BUSYBOX_PATHS = ["/usr/bin/busybox", "/bin/busybox"];
const QEMU = "qemu-system-x86_64";

/** A kernel image and the module tree that belongs to it. */
export interface VmKernel {
  kernelPath: string;
  modulesDir: string;
}

export interface VmRunOptions {
  /** Shell script run as root in the guest, chrooted into the host root, cwd = sharedDir. */
  script: string;
  /** Host directory shared read-write; mounted in the guest at the same path. */
  sharedDir: string;
  /** Upper bound for the whole boot-run-poweroff cycle. */
  timeoutMs: number;
  memoryMb?: number;
  cpus?: number;
  /** Extra environment for the script. */
  env?: Record<string, string>;
  /** Size of a blank (sparse) virtio disk the guest sees as /dev/vda; none when unset. */
  diskBytes?: number;
  /**
   * QEMU user-mode networking: the guest is 10.0.2.15 on eth0 and reaches the host's loopback
   * services (an RGW a test started) at 10.0.2.2. Without it the guest has no network but lo.
   */
  network?: boolean;
}

export interface VmResult {
  /** Exit code of the script in the guest. */
  exitCode: number;
  /** Everything the guest printed on its console (kernel messages and the script's output). */
  console: string;
}

/** Finds a kernel whose module tree has every module the guest needs. */
export function findVmKernel(): VmKernel | undefined {
  let names: string[];
  try {
    names = [...Deno.readDirSync("/boot")].map((e) => e.name).filter((n) => n.startsWith("vmlinuz-"));
  } catch {
    return undefined;
  }
  for (const name of names.sort().reverse()) {
    const version = name.slice("vmlinuz-".length);
    const modulesDir = `/lib/modules/${version}/kernel`;
    if (GUEST_MODULES.every((m) => exists(`${modulesDir}/${m}`))) {
      return { kernelPath: `/boot/${name}`, modulesDir };
    }
  }
  return undefined;
}

/** Why a VM cannot be booted here, or undefined when it can. */
export function vmUnavailableReason(): string | undefined {
  if (Deno.build.os !== "linux" || Deno.build.arch !== "x86_64") return "not an x86-64 Linux host";
  if (!findVmKernel()) {
    return "no /boot/vmlinuz-* with nbd and 9p modules (apt-get install linux-image-amd64)";
  }
  if (!findBusybox()) return "no static busybox (apt-get install busybox-static)";
  if (!onPath(QEMU)) return `no ${QEMU} (apt-get install qemu-system-x86)`;
  return undefined;
}

/** Boots the VM, runs the script and returns its exit code and the console; throws on timeout. */
export async function runInVm(options: VmRunOptions): Promise<VmResult> {
  const kernel = findVmKernel();
  assert(kernel, "no VM kernel found: check vmUnavailableReason() first");
  const marker = `LSVD_VM_DONE_${crypto.randomUUID().replaceAll("-", "")}`;
  const workDir = await Deno.makeTempDir({ prefix: "lsvd-vm-boot-" });
  try {
    const scriptPath = `${options.sharedDir}/.vm-script-${marker}.sh`;
    await Deno.writeTextFile(scriptPath, options.script);
    const initrdPath = `${workDir}/initrd.cpio`;
    const init = initScript({
      network: options.network ?? false,
      sharedDir: options.sharedDir,
      scriptPath,
      marker,
      env: options.env ?? {},
    });
    await Deno.writeFile(initrdPath, buildInitramfs(kernel, init));
    let diskPath: string | undefined;
    if (options.diskBytes !== undefined) {
      diskPath = `${workDir}/disk.img`;
      await Deno.writeFile(diskPath, new Uint8Array());
      await Deno.truncate(diskPath, options.diskBytes);
    }
    const consoleText = await runQemu({ kernel, initrdPath, options, marker, diskPath });
    await Deno.remove(scriptPath).catch(() => {});
    const match = consoleText.match(new RegExp(`${marker} exit=(\\d+)`));
    if (!match) {
      throw new VmError("Cannot run the VM script: the guest ended without an exit marker", consoleText);
    }
    return { exitCode: Number(match[1]), console: consoleText };
  } finally {
    await Deno.remove(workDir, { recursive: true }).catch(() => {});
  }
}

/** An error that carries the guest console, printed by tests on failure. */
export class VmError extends Error {
  readonly console: string;
  constructor(message: string, consoleText: string) {
    super(`${message}\n----- guest console -----\n${consoleText}\n----- end of guest console -----`);
    this.console = consoleText;
  }
}

interface QemuRun {
  kernel: VmKernel;
  initrdPath: string;
  options: VmRunOptions;
  marker: string;
  diskPath: string | undefined;
}

async function runQemu(run: QemuRun): Promise<string> {
  const { options } = run;
  const child = new Deno.Command(QEMU, {
    args: qemuArgs(run),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let consoleText = "";
  const decoder = new TextDecoder();
  const collect = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream) consoleText += decoder.decode(chunk, { stream: true });
  };
  const collecting = Promise.all([collect(child.stdout), collect(child.stderr)]);
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
  }, options.timeoutMs);
  try {
    await child.status;
    await collecting;
  } finally {
    clearTimeout(timer);
  }
  if (timedOut) {
    throw new VmError(`Cannot run the VM script: no poweroff within ${options.timeoutMs} ms`, consoleText);
  }
  return consoleText;
}

function qemuArgs(run: QemuRun): string[] {
  const { options } = run;
  return [
    ...["-accel", "tcg", "-m", String(options.memoryMb ?? 2048), "-smp", String(options.cpus ?? 2)],
    ...["-nographic", "-no-reboot", "-nic", options.network ? "user,model=virtio-net-pci" : "none"],
    ...["-kernel", run.kernel.kernelPath, "-initrd", run.initrdPath],
    ...(run.diskPath === undefined
      ? []
      : ["-drive", `file=${run.diskPath},format=raw,if=virtio,cache=unsafe`]),
    ...["-append", "console=ttyS0 panic=-1 loglevel=4"],
    "-virtfs",
    "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
    "-virtfs",
    `local,path=${options.sharedDir},mount_tag=shared,security_model=none,multidevs=remap`,
    ...hiddenHostDirs().flatMap((dir, i) => [
      "-virtfs",
      `local,path=${dir},mount_tag=hidden${i},security_model=none,readonly=on,multidevs=remap`,
    ]),
  ];
}

const GUEST_TMPFS_DIRS = ["/tmp", "/run", "/mnt", "/var/tmp"];

/**
 * Host folders the guest's tmpfs mounts would hide but the guest needs: the checkout (a CI clone
 * may live under /tmp) and the Deno executable's folder. Each is shared again read-only.
 */
function hiddenHostDirs(): string[] {
  const checkout = Deno.realPathSync(new URL("../..", import.meta.url));
  const deno = Deno.realPathSync(Deno.execPath()).replace(/\/[^/]*$/, "");
  const hidden = (dir: string) => GUEST_TMPFS_DIRS.some((t) => dir === t || dir.startsWith(`${t}/`));
  const dirs = [checkout];
  if (!deno.startsWith(`${checkout}/`)) dirs.push(deno);
  return dirs.filter(hidden);
}

interface InitParams {
  network: boolean;
  sharedDir: string;
  scriptPath: string;
  marker: string;
  env: Record<string, string>;
}

/** The guest's /init: mounts, chroot, marker, poweroff. Every path is single-quoted. */
function initScript(p: InitParams): string {
  const q = shellQuote;
  const env = Object.entries({
    PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    HOME: "/tmp",
    DENO_DIR: "/tmp/deno-dir",
    NO_COLOR: "1",
    ...p.env,
  }).map(([k, v]) => `${k}=${q(v)}`).join(" ");
  const modules = GUEST_MODULES.map((m) => `insmod /modules/${m.split("/").pop()}`).join("\n");
  return `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /host
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
${modules}
ip link set lo up
${
    p.network
      ? 'ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2 || echo "cannot configure eth0"'
      : ""
  }
msize=512000
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=$msize hostroot /host || echo "cannot mount hostroot"
mount -t proc proc /host/proc
mount -t sysfs sys /host/sys
mount -t devtmpfs dev /host/dev
mkdir -p /host/dev/shm /host/dev/pts
mount -t tmpfs shm /host/dev/shm
mount -t devpts devpts /host/dev/pts
for d in /tmp /run /mnt /var/tmp; do mount -t tmpfs tmpfs /host$d; done
mkdir -p /host${q(p.sharedDir)}
mount -t 9p -o trans=virtio,version=9p2000.L,msize=$msize shared /host${
    q(p.sharedDir)
  } || echo "cannot mount shared"
${
    hiddenHostDirs().map((dir, i) =>
      `mkdir -p /host${
        q(dir)
      }\nmount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=$msize hidden${i} /host${
        q(dir)
      } || echo "cannot mount ${dir}"`
    ).join("\n")
  }
chroot /host /usr/bin/env -i ${env} /bin/sh -c ${q(`cd ${q(p.sharedDir)} && exec /bin/sh ${q(p.scriptPath)}`)}
code=$?
sync
echo "${p.marker} exit=$code"
reboot -f
`;
}

function buildInitramfs(kernel: VmKernel, init: string): Uint8Array {
  const busybox = findBusybox();
  assert(busybox, "no static busybox: check vmUnavailableReason() first");
  const entries: CpioEntry[] = [
    { kind: "dir", path: "bin" },
    { kind: "dir", path: "modules" },
    { kind: "file", path: "bin/busybox", data: Deno.readFileSync(busybox), mode: 0o755 },
    { kind: "symlink", path: "bin/sh", target: "busybox" },
    { kind: "file", path: "init", data: new TextEncoder().encode(init), mode: 0o755 },
  ];
  for (const m of GUEST_MODULES) {
    const data = Deno.readFileSync(`${kernel.modulesDir}/${m}`);
    entries.push({ kind: "file", path: `modules/${m.split("/").pop()}`, data });
  }
  return buildCpio(entries);
}

function findBusybox(): string | undefined {
  return BUSYBOX_PATHS.find(exists);
}

function onPath(command: string): boolean {
  const dirs = (Deno.env.get("PATH") ?? "").split(":");
  return dirs.some((d) => d !== "" && exists(`${d}/${command}`));
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** Quotes a string for POSIX sh. */
export function shellQuote(s: string): string {
  return `'${s.replaceAll("'", `'"'"'`)}'`;
}

/**
 * The guest shell prelude the lsvd VM tests share: `result NAME JSON` prints a RESULT line the host
 * parses; `start NAME ARGS...` runs `lsvd serve ARGS` in the background (log $S/NAME.log, pid in
 * $pid) and returns once it is operational, or exits 90/91. Needs $S set to the shared directory.
 */
export function guestLsvdPrelude(mainPath: string): string {
  const lsvd = `${shellQuote(Deno.execPath())} run -A --cached-only ${shellQuote(mainPath)}`;
  return `result() { echo "RESULT {\\"name\\":\\"$1\\",\\"value\\":$2}"; }
start() {
  name=$1; shift
  ${lsvd} serve "$@" >"$S/$name.log" 2>&1 &
  pid=$!
  i=0
  until grep -q "Device is now operational." "$S/$name.log"; do
    if ! kill -0 $pid 2>/dev/null; then echo "lsvd ($name) exited before it was operational:"; cat "$S/$name.log"; exit 90; fi
    i=$((i + 1))
    if [ $i -gt 3000 ]; then echo "lsvd ($name) not operational in 300 s:"; cat "$S/$name.log"; kill -9 $pid; exit 91; fi
    sleep 0.1
  done
}
`;
}
