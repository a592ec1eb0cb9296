/**
 * @module
 * A minimal writer for the "newc" cpio format, the format the Linux kernel unpacks an initramfs
 * from. Written here so building a test VM's initramfs needs no cpio binary on the host.
 */

import assert from "node:assert";

/** One member of the archive: a directory, a regular file or a symbolic link. */
export type CpioEntry =
  | { kind: "dir"; path: string; mode?: number }
  | { kind: "file"; path: string; data: Uint8Array; mode?: number }
  | { kind: "symlink"; path: string; target: string };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const encoder = new TextEncoder();

/** Encodes entries (parents before children) followed by the trailer, as one archive. */
export function buildCpio(entries: readonly CpioEntry[]): Uint8Array {
  const parts: Uint8Array[] = [];
  let inode = 1;
  for (const entry of entries) parts.push(...encodeEntry(entry, inode++));
  parts.push(...encodeMember({ path: "TRAILER!!!", mode: 0, data: new Uint8Array(0), inode: 0 }));
  const totalBytes = parts.reduce((sum, part) => sum + part.length, 0);
  const archive = new Uint8Array(totalBytes);
  let offset = 0;
  for (const part of parts) {
    archive.set(part, offset);
    offset += part.length;
  }
  return archive;
}

function encodeEntry(entry: CpioEntry, inode: number): Uint8Array[] {
  switch (entry.kind) {
    case "dir":
      return encodeMember({
        path: entry.path,
        mode: S_IFDIR | (entry.mode ?? 0o755),
        data: new Uint8Array(0),
        inode,
      });
    case "file":
      return encodeMember({
        path: entry.path,
        mode: S_IFREG | (entry.mode ?? 0o644),
        data: entry.data,
        inode,
      });
    case "symlink":
      return encodeMember({
        path: entry.path,
        mode: S_IFLNK | 0o777,
        data: encoder.encode(entry.target),
        inode,
      });
  }
}

interface Member {
  path: string;
  mode: number;
  data: Uint8Array;
  inode: number;
}

function encodeMember(member: Member): Uint8Array[] {
  assert(!member.path.startsWith("/"), `cpio paths are relative: ${member.path}`);
  const name = encoder.encode(`${member.path}\0`);
  const fields = [
    member.inode,
    member.mode,
    0, // uid
    0, // gid
    1, // nlink
    0, // mtime
    member.data.length,
    0, // dev major
    0, // dev minor
    0, // rdev major
    0, // rdev minor
    name.length,
    0, // checksum (unused by "070701")
  ];
  const header = encoder.encode("070701" + fields.map((f) => f.toString(16).padStart(8, "0")).join(""));
  const headerAndName = padTo4(concat(header, name));
  return [headerAndName, padTo4(member.data)];
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

function padTo4(bytes: Uint8Array): Uint8Array {
  const padded = (bytes.length + 3) & ~3;
  if (padded === bytes.length) return bytes;
  const out = new Uint8Array(padded);
  out.set(bytes, 0);
  return out;
}
