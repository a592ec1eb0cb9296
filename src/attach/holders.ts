/**
 * @module
 * Who still uses a volume lsvd was asked to stop serving: a loop device backed by the `--fuse`
 * file (or by /dev/nbdN), a mount of that loop device or of /dev/nbdN or one of their partitions
 * (in any mount namespace), a device-mapper or other kernel holder, a process with the file or
 * device open. Taking the volume away under any of them loses what its filesystem or program has
 * not written back yet, so `serve` keeps serving until none is left (see serve_release.ts).
 * Only /proc and /sys are read; nothing here changes anything.
 */

import { majorMinor, unescapeMountField } from "./filesystem.ts";

/** One user of the volume, said so that an operator knows what to do about it. */
export interface Holder {
  /** "/dev/loop3 (mounted on /mnt/x)", "pid 42 (qemu-system-x86) has /srv/fuse/nbd open". */
  description: string;
  /** What releases it, in order: "umount /mnt/x", "losetup -d /dev/loop3". */
  release: string[];
  /** Mounted filesystems on the volume, as paths this process can open: synced before a forced stop. */
  syncPaths: string[];
}

export interface HolderScan {
  /** Roots of procfs and sysfs (default /proc and /sys). */
  proc?: string;
  sys?: string;
  /** Processes that are not holders (default: this one; lsvd may keep /dev/nbdN open itself). */
  ignorePids?: number[];
  /** Mount points lsvd made itself: said to be busy (lsvd unmounts them as soon as it can). */
  ownMounts?: string[];
}

/** Everything that still uses target: a regular file (the --fuse file) or a block device. */
export async function findHolders(target: string, scan: HolderScan = {}): Promise<Holder[]> {
  const proc = scan.proc ?? "/proc";
  const sys = scan.sys ?? "/sys";
  const info = await Deno.stat(target).catch(() => undefined);
  if (info === undefined) return [];
  const realTarget = await Deno.realPath(target).catch(() => target);
  const view = new SystemView(proc, sys, scan.ignorePids ?? [Deno.pid]);
  const holders: Holder[] = [];
  if (info.isBlockDevice && info.rdev !== null) {
    const device = await view.blockDevice(majorMinor(info.rdev), target);
    const users = await view.usersOf(device);
    if (!users.idle) holders.push(describeDevice(device.path, users, scan.ownMounts ?? []));
  } else {
    for (const open of await view.processesWith((link) => link === realTarget)) {
      holders.push({
        description: `pid ${open.pid} (${open.comm}) has ${target} open`,
        release: [`stop pid ${open.pid}`],
        syncPaths: [],
      });
    }
  }
  for (const loop of await view.loopDevicesBackedBy(realTarget)) {
    const users = await view.usersOf(loop.device);
    const described = describeDevice(loop.device.path, users, []);
    if (!loop.autoclear) {
      if (users.idle) described.description = `${loop.device.path} (attached to ${target})`;
      described.release.push(`losetup -d ${loop.device.path}`);
    } else if (users.idle) {
      // Autoclear (mount -o loop, or losetup -d while in use) and nothing visible: a filesystem
      // detached with umount -l whose files are still open keeps it.
      described.description = `${loop.device.path} (attached to ${target}, detached but still in use: ` +
        "a lazily unmounted filesystem with open files?)";
      described.release.push("close what still uses it");
    }
    // Otherwise it goes away by itself with its last mount.
    holders.push(described);
  }
  return holders;
}

/** The one line serve logs while it keeps serving: what holds the volume and what releases it. */
export function describeHolders(holders: Holder[]): { what: string; release: string } {
  const what = holders.map((h) => h.description).join(", ");
  const release = holders.flatMap((h) => h.release).join("; ");
  return { what, release };
}

interface BlockDevice {
  /** /dev/NAME (or the path lsvd was given). */
  path: string;
  name: string;
  /** "major:minor" of the device and of each of its partitions. */
  numbers: string[];
}

interface MountSeen {
  numbers: string;
  mountPoint: string;
  /** Where this process can reach it (through /proc/PID/root in another mount namespace). */
  reachable: string;
  /** "" in lsvd's own mount namespace, else " in the mount namespace of pid N (comm)". */
  namespace: string;
}

interface OpenSeen {
  pid: number;
  comm: string;
}

interface DeviceUsers {
  idle: boolean;
  mounts: MountSeen[];
  opens: OpenSeen[];
  /** Kernel holders from sysfs (dm-0, md1): name and, for device-mapper, the mapping's name. */
  kernel: { name: string; dmName: string | undefined }[];
}

/** What /proc and /sys say, read once per scan (mounts and open files are shared by every device). */
class SystemView {
  #proc: string;
  #sys: string;
  #ignore: Set<number>;
  #mounts: Promise<MountSeen[]> | undefined;
  #fds: Promise<{ pid: number; link: string; fdPath: string }[]> | undefined;

  constructor(proc: string, sys: string, ignorePids: number[]) {
    this.#proc = proc;
    this.#sys = sys;
    this.#ignore = new Set(ignorePids);
  }

  /** The device and its partitions, by the numbers sysfs gives them. */
  async blockDevice(numbers: string, path: string): Promise<BlockDevice> {
    const dir = await Deno.realPath(`${this.#sys}/dev/block/${numbers}`).catch(() => undefined);
    const name = dir?.slice(dir.lastIndexOf("/") + 1) ?? path.slice(path.lastIndexOf("/") + 1);
    const all = [numbers];
    if (dir !== undefined) {
      for await (const entry of readDirSafe(dir)) {
        if (!entry.name.startsWith(name)) continue;
        const partition = await readText(`${dir}/${entry.name}/dev`);
        if (partition !== undefined) all.push(partition.trim());
      }
    }
    return { path, name, numbers: all };
  }

  async usersOf(device: BlockDevice): Promise<DeviceUsers> {
    const mounts = (await this.mounts()).filter((m) => device.numbers.includes(m.numbers));
    const opens: OpenSeen[] = [];
    for (const fd of await this.fds()) {
      if (!fd.link.startsWith("/dev/")) continue;
      const info = await Deno.stat(fd.fdPath).catch(() => undefined);
      if (!info?.isBlockDevice || info.rdev === null) continue;
      if (!device.numbers.includes(majorMinor(info.rdev))) continue;
      if (opens.some((o) => o.pid === fd.pid)) continue;
      opens.push({ pid: fd.pid, comm: await this.comm(fd.pid) });
    }
    const kernel: DeviceUsers["kernel"] = [];
    for (const numbers of device.numbers) {
      for await (const entry of readDirSafe(`${this.#sys}/dev/block/${numbers}/holders`)) {
        const dmName = (await readText(`${this.#sys}/class/block/${entry.name}/dm/name`))?.trim();
        kernel.push({ name: entry.name, dmName });
      }
    }
    const idle = mounts.length === 0 && opens.length === 0 && kernel.length === 0;
    return { idle, mounts, opens, kernel };
  }

  async loopDevicesBackedBy(
    realTarget: string,
  ): Promise<{ device: BlockDevice; autoclear: boolean }[]> {
    const found = [];
    for await (const entry of readDirSafe(`${this.#sys}/block`)) {
      if (!/^loop\d+$/.test(entry.name)) continue;
      const backing = await readText(`${this.#sys}/block/${entry.name}/loop/backing_file`);
      if (backing === undefined || backing.replace(/\n$/, "") !== realTarget) continue;
      const numbers = (await readText(`${this.#sys}/block/${entry.name}/dev`))?.trim();
      if (numbers === undefined) continue;
      const autoclear = (await readText(`${this.#sys}/block/${entry.name}/loop/autoclear`))?.trim() === "1";
      found.push({ device: await this.blockDevice(numbers, `/dev/${entry.name}`), autoclear });
    }
    return found;
  }

  async processesWith(matches: (link: string) => boolean): Promise<OpenSeen[]> {
    const pids = new Set((await this.fds()).filter((fd) => matches(fd.link)).map((fd) => fd.pid));
    return await Promise.all([...pids].map(async (pid) => ({ pid, comm: await this.comm(pid) })));
  }

  /**
   * Mounts in every mount namespace: a container or a service with its own namespace can keep a
   * filesystem alive after it is unmounted here. Each (device, mount point) once, ours first.
   */
  mounts(): Promise<MountSeen[]> {
    return this.#mounts ??= (async () => {
      const own = await Deno.readLink(`${this.#proc}/self/ns/mnt`).catch(() => undefined);
      const seen: MountSeen[] = [];
      const add = (text: string | undefined, namespace: string, root: string) => {
        for (const m of parseMountinfo(text ?? "")) {
          if (seen.some((s) => s.numbers === m.numbers && s.mountPoint === m.mountPoint)) continue;
          seen.push({ ...m, namespace, reachable: `${root}${m.mountPoint === "/" ? "" : m.mountPoint}` });
        }
      };
      add(await readText(`${this.#proc}/self/mountinfo`), "", "");
      const namespaces = new Set(own === undefined ? [] : [own]);
      for (const pid of await this.pids()) {
        const ns = await Deno.readLink(`${this.#proc}/${pid}/ns/mnt`).catch(() => undefined);
        if (ns === undefined || namespaces.has(ns)) continue;
        namespaces.add(ns);
        const where = ` in the mount namespace of pid ${pid} (${await this.comm(pid)})`;
        add(await readText(`${this.#proc}/${pid}/mountinfo`), where, `${this.#proc}/${pid}/root`);
      }
      return seen;
    })();
  }

  /** Every open file of every other process, as /proc/PID/fd/N and where it points. */
  fds(): Promise<{ pid: number; link: string; fdPath: string }[]> {
    return this.#fds ??= (async () => {
      const fds = [];
      for (const pid of await this.pids()) {
        if (this.#ignore.has(pid)) continue;
        for await (const entry of readDirSafe(`${this.#proc}/${pid}/fd`)) {
          const fdPath = `${this.#proc}/${pid}/fd/${entry.name}`;
          const link = await Deno.readLink(fdPath).catch(() => undefined);
          if (link !== undefined) fds.push({ pid, link, fdPath });
        }
      }
      return fds;
    })();
  }

  async pids(): Promise<number[]> {
    const pids = [];
    for await (const entry of readDirSafe(this.#proc)) {
      if (/^\d+$/.test(entry.name)) pids.push(Number(entry.name));
    }
    return pids.sort((a, b) => a - b);
  }

  async comm(pid: number): Promise<string> {
    return (await readText(`${this.#proc}/${pid}/comm`))?.trim() ?? "?";
  }
}

/** The device's users in one holder: "/dev/nbd0 (mounted on /data; open in pid 42 (dd))". */
function describeDevice(path: string, users: DeviceUsers, ownMounts: string[]): Holder {
  const parts: string[] = [];
  const release: string[] = [];
  const syncPaths: string[] = [];
  for (const m of users.mounts) {
    syncPaths.push(m.reachable);
    if (m.namespace === "" && ownMounts.includes(m.mountPoint)) {
      parts.push(`mounted on ${m.mountPoint}, busy`);
      release.push(`stop what uses ${m.mountPoint} ('fuser -vm ${m.mountPoint}' lists it)`);
    } else {
      parts.push(`mounted on ${m.mountPoint}${m.namespace}`);
      release.push(`umount ${m.mountPoint}${m.namespace}`);
    }
  }
  for (const o of users.opens) {
    parts.push(`open in pid ${o.pid} (${o.comm})`);
    release.push(`stop pid ${o.pid}`);
  }
  for (const k of users.kernel) {
    parts.push(`held by ${k.name}${k.dmName === undefined ? "" : ` (${k.dmName})`}`);
    release.push(k.dmName === undefined ? `release /dev/${k.name}` : `dmsetup remove ${k.dmName}`);
  }
  return { description: `${path} (${parts.join("; ")})`, release, syncPaths };
}

/** (major:minor, mount point) of every line of a mountinfo file. */
export function parseMountinfo(text: string): { numbers: string; mountPoint: string }[] {
  const mounts = [];
  for (const line of text.split("\n")) {
    const fields = line.split(" ");
    if (fields.length < 5 || !/^\d+:\d+$/.test(fields[2]!)) continue;
    mounts.push({ numbers: fields[2]!, mountPoint: unescapeMountField(fields[4]!) });
  }
  return mounts;
}

async function readText(path: string): Promise<string | undefined> {
  return await Deno.readTextFile(path).catch(() => undefined);
}

/** Directory entries, or none when the directory is gone or unreadable (a process that exited). */
async function* readDirSafe(path: string): AsyncGenerator<Deno.DirEntry> {
  try {
    for await (const entry of Deno.readDir(path)) yield entry;
  } catch {
    // gone or not readable: nothing to report from it
  }
}
