/**
 * @module
 * The few libc calls kernel attach needs, through Deno FFI, so no nbd-client binary is required.
 * Calls that can wait on the daemon itself (reads and writes of an NBD socket, netlink requests
 * that make the kernel talk to the device, NBD_DO_IT) are declared `nonblocking`: they run on a
 * worker thread and the event loop keeps serving the NBD socket. Such calls lose errno (it is
 * thread-local), so their failures are reported without it; synchronous calls report errno.
 */

const SYMBOLS = {
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  open: { parameters: ["buffer", "i32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  ioctl: { parameters: ["i32", "u64", "u64"], result: "i32" },
  ioctl_async: { name: "ioctl", parameters: ["i32", "u64", "u64"], result: "i32", nonblocking: true },
  read_async: { name: "read", parameters: ["i32", "buffer", "usize"], result: "isize", nonblocking: true },
  write_async: { name: "write", parameters: ["i32", "buffer", "usize"], result: "isize", nonblocking: true },
  __errno_location: { parameters: [], result: "pointer" },
  strerror: { parameters: ["i32"], result: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;

export const AF_UNIX = 1;
export const AF_NETLINK = 16;
export const SOCK_STREAM = 1;
export const SOCK_RAW = 3;
export const SOCK_CLOEXEC = 0o2000000;
export const NETLINK_GENERIC = 16;
export const O_RDONLY = 0;
export const O_WRONLY = 1;
export const O_RDWR = 2;
/** On a block device without O_CREAT: fails with EBUSY while it is mounted or otherwise held. */
export const O_EXCL = 0o200;
export const EBUSY = 16;
export const O_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SO_RCVTIMEO = 20;
const SO_SNDTIMEO = 21;

/** A loaded libc with small helpers over the raw calls. Close it when done. */
export class Libc {
  readonly #lib: Deno.DynamicLibrary<typeof SYMBOLS>;

  constructor() {
    this.#lib = Deno.dlopen("libc.so.6", SYMBOLS);
  }

  get raw(): Deno.DynamicLibrary<typeof SYMBOLS>["symbols"] {
    return this.#lib.symbols;
  }

  /** The calling thread's errno: meaningful right after a failed synchronous call. */
  lastErrno(): number {
    const location = this.#lib.symbols.__errno_location();
    return location ? new Deno.UnsafePointerView(location).getInt32() : 0;
  }

  /** The calling thread's errno as text: meaningful right after a failed synchronous call. */
  lastError(): string {
    const errno = this.lastErrno();
    const message = this.#lib.symbols.strerror(errno);
    return message ? Deno.UnsafePointerView.getCString(message) : `errno ${errno}`;
  }

  /** Opens a connected AF_UNIX stream socket to path and returns its fd. */
  connectUnix(path: string): number {
    const address = unixAddress(path);
    const fd = this.#lib.symbols.socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw new Error(`Cannot create a unix socket: ${this.lastError()}`);
    if (this.#lib.symbols.connect(fd, address, address.length) !== 0) {
      const cause = this.lastError();
      this.close(fd);
      throw new Error(`Cannot connect to ${path}: ${cause}`);
    }
    return fd;
  }

  /** Sets SO_RCVTIMEO and SO_SNDTIMEO (0 = wait forever). */
  setSocketTimeouts(fd: number, timeoutMs: number): void {
    const timeval = new BigInt64Array([
      BigInt(Math.floor(timeoutMs / 1000)),
      BigInt((timeoutMs % 1000) * 1000),
    ]);
    const bytes = new Uint8Array(timeval.buffer);
    for (const option of [SO_RCVTIMEO, SO_SNDTIMEO]) {
      if (this.#lib.symbols.setsockopt(fd, SOL_SOCKET, option, bytes, bytes.length) !== 0) {
        throw new Error(`Cannot set a socket timeout: ${this.lastError()}`);
      }
    }
  }

  /** Opens a file (a device node) and returns its fd. */
  open(path: string, flags: number): number {
    const fd = this.#lib.symbols.open(cString(path), flags | O_CLOEXEC);
    if (fd < 0) throw new Error(`Cannot open ${path}: ${this.lastError()}`);
    return fd;
  }

  close(fd: number): void {
    this.#lib.symbols.close(fd);
  }

  /** Reads exactly length bytes off the event loop; throws on end of stream or error. */
  async readExact(fd: number, length: number, what: string): Promise<Uint8Array> {
    const buffer = new Uint8Array(length);
    let done = 0;
    while (done < length) {
      const n = Number(await this.#lib.symbols.read_async(fd, buffer.subarray(done), BigInt(length - done)));
      if (n === 0) throw new Error(`Cannot read ${what}: the server closed the connection`);
      if (n < 0) throw new Error(`Cannot read ${what}: read failed or timed out`);
      done += n;
    }
    return buffer;
  }

  /** Writes all bytes off the event loop. */
  async writeAll(fd: number, bytes: Uint8Array, what: string): Promise<void> {
    let done = 0;
    while (done < bytes.length) {
      const n = Number(
        await this.#lib.symbols.write_async(fd, bytes.subarray(done), BigInt(bytes.length - done)),
      );
      if (n <= 0) throw new Error(`Cannot send ${what}: write failed or timed out`);
      done += n;
    }
  }

  closeLibrary(): void {
    this.#lib.close();
  }
}

/** struct sockaddr_un for path (at most 107 bytes). */
function unixAddress(path: string): Uint8Array {
  const pathBytes = new TextEncoder().encode(path);
  if (pathBytes.length > 107) {
    throw new Error(`Cannot connect to ${path}: the socket path is longer than 107 bytes`);
  }
  const address = new Uint8Array(2 + 108);
  new DataView(address.buffer).setUint16(0, AF_UNIX, true);
  address.set(pathBytes, 2);
  return address;
}

/** A NUL-terminated copy of s. */
export function cString(s: string): Uint8Array {
  const bytes = new TextEncoder().encode(s);
  const out = new Uint8Array(bytes.length + 1);
  out.set(bytes, 0);
  return out;
}
