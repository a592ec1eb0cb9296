/**
 * @module
 * The NBD listeners: a unix socket (mode 0600; a stale socket file is replaced) and/or a TCP
 * host:port, each accepting any number of connections that all serve the same BlockDevice.
 * stop() is graceful: stop accepting, let every session answer or finish what it holds, close.
 * With TLS (tls.ts) the TCP listener works in the given mode; the unix socket, reachable only by
 * its owner, offers TLS but never requires it (the kernel client and nbdfuse attach through it).
 */

import type { BlockDevice } from "../volume/block_device.ts";
import { type Logger, silentLogger } from "../util/log.ts";
import type { Counter, MetricsRegistry } from "../metrics/registry.ts";
import type { ConnectionLimits } from "./connection.ts";
import { isInvariantFailure } from "./errors.ts";
import { type NbdSession, serveNbdConnection } from "./session.ts";
import { SubSectorDevice } from "./sub_sector.ts";
import { NbdCounters } from "./nbd_metrics.ts";
import { StartTlsTransport, type TlsPolicy } from "./tls.ts";

export { serveNbdConnection } from "./session.ts";
export type { NbdSession, SessionOptions } from "./session.ts";

export interface NbdServerOptions {
  device: BlockDevice;
  /** Default "lsvd"; the empty name (NBD's default export) selects it too. */
  exportName?: string;
  description?: string;
  /** Unix socket path. */
  socketPath?: string;
  /** TCP listener; hostname defaults to 127.0.0.1, port 0 picks a free port. */
  listen?: { hostname?: string; port: number };
  log?: Logger;
  limits?: Partial<ConnectionLimits>;
  handshakeTimeoutMs?: number;
  /** Connections served at once; more are closed on accept (default 256). */
  connectionsMax?: number;
  /** Where to count connections (open now, accepted, refused). */
  metrics?: MetricsRegistry;
  /** Listeners bound earlier with bindNbdListeners (so a busy address fails before any work); else bound here. */
  listeners?: NbdListeners;
  /** TLS on the TCP listener (default off); the unix socket offers it when this is not off. */
  tls?: TlsPolicy;
  /** See SessionOptions.onClientLeft. */
  onClientLeft?: () => void;
}

/** A listener could not be set up: the address is busy, not permitted, or the path is not a socket. */
export class ListenError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "ListenError";
  }
}

/** Bound listeners not yet accepting; close() releases them (and the socket file). */
export interface NbdListeners {
  readonly socketPath: string | undefined;
  readonly listeners: readonly Deno.Listener[];
  close(): Promise<void>;
}

export interface NbdServer {
  readonly socketPath: string | undefined;
  readonly tcp: { hostname: string; port: number } | undefined;
  /** `nbd+unix:///EXPORT?socket=PATH` or `nbd://HOST:PORT/EXPORT`, for clients and log lines. */
  readonly uris: string[];
  readonly connectionCount: number;
  /** Connections accepted since start. */
  readonly connectionsAccepted: number;
  /**
   * Graceful: stop accepting, finish in-flight requests, close every connection. Quiet: requests
   * read but not started get no answer (a hand-over: the kernel re-sends them to the next daemon).
   */
  stop(options?: { quiet?: boolean }): Promise<void>;
}

/**
 * Binds the unix socket and/or TCP address without accepting yet; throws ListenError
 * ("Cannot listen on ...") when one cannot be set up, having released the others.
 */
export async function bindNbdListeners(
  options: { socketPath?: string | undefined; listen?: { hostname?: string; port: number } | undefined },
): Promise<NbdListeners> {
  if (options.socketPath === undefined && options.listen === undefined) {
    throw new ListenError("Cannot start the NBD server: give a socket path or a TCP address");
  }
  const listeners: Deno.Listener[] = [];
  const socketPath = options.socketPath;
  const close = async () => {
    for (const listener of listeners) listener.close();
    if (socketPath !== undefined && listeners.length > 0) await Deno.remove(socketPath).catch(() => {});
  };
  try {
    if (socketPath !== undefined) listeners.push(await listenUnix(socketPath));
    if (options.listen !== undefined) listeners.push(listenTcp(options.listen));
  } catch (e) {
    await close();
    throw e;
  }
  return { socketPath, listeners, close };
}

/** Starts accepting (binding first unless options.listeners is given); throws ListenError like bindNbdListeners. */
export async function startNbdServer(options: NbdServerOptions): Promise<NbdServer> {
  const bound = options.listeners ?? await bindNbdListeners(options);
  return new Server(bound, options);
}

async function listenUnix(path: string): Promise<Deno.Listener> {
  await removeStaleSocket(path);
  // The umask makes the socket 0600 from birth; JS is single-threaded, so nothing else sees it.
  const umask = Deno.umask(0o177);
  try {
    return Deno.listen({ transport: "unix", path });
  } catch (e) {
    throw new ListenError(`Cannot listen on ${path}: ${reason(e)}`, { cause: e });
  } finally {
    Deno.umask(umask);
  }
}

/** Removes a socket file nobody listens on; refuses to touch a live socket or another kind of file. */
async function removeStaleSocket(path: string): Promise<void> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.lstat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return;
    throw e;
  }
  if (!info.isSocket) throw new ListenError(`Cannot listen on ${path}: the path exists and is not a socket`);
  try {
    const probe = await Deno.connect({ transport: "unix", path });
    probe.close();
    throw new ListenError(`Cannot listen on ${path}: another server is listening there`);
  } catch (e) {
    if (!(e instanceof Deno.errors.ConnectionRefused) && !(e instanceof Deno.errors.NotFound)) throw e;
  }
  await Deno.remove(path).catch((e) => {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  });
}

function listenTcp(address: { hostname?: string; port: number }): Deno.Listener {
  const hostname = address.hostname ?? "127.0.0.1";
  try {
    return Deno.listen({ transport: "tcp", hostname, port: address.port });
  } catch (e) {
    throw new ListenError(`Cannot listen on ${hostname}:${address.port}: ${reason(e)}`, { cause: e });
  }
}

/** An OS error without Rust's " (os error 98)" suffix: "Address already in use". */
function reason(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).replace(/ \(os error \d+\)$/, "");
}

class Server implements NbdServer {
  readonly socketPath: string | undefined;
  readonly tcp: { hostname: string; port: number } | undefined;
  #listeners: Deno.Listener[];
  #options: NbdServerOptions & { counters?: NbdCounters };
  #log: Logger;
  #sessions = new Set<NbdSession>();
  #accepted = 0;
  #acceptedCounter: Counter | undefined;
  #accepting: Promise<void>[];
  #stopping: Promise<void> | undefined;

  constructor(bound: NbdListeners, options: NbdServerOptions) {
    const listeners = bound.listeners;
    this.#listeners = [...listeners];
    // One adapter for every connection, so read-modify-writes from different clients are ordered too.
    this.#options = {
      ...options,
      device: SubSectorDevice.of(options.device),
      ...(options.metrics === undefined ? {} : { counters: new NbdCounters(options.metrics) }),
    };
    this.#log = options.log ?? silentLogger;
    this.socketPath = bound.socketPath;
    const tcp = listeners.map((l) => l.addr).find((a): a is Deno.NetAddr => a.transport === "tcp");
    this.tcp = tcp === undefined ? undefined : { hostname: tcp.hostname, port: tcp.port };
    this.#accepting = listeners.map((l) => this.#acceptLoop(l));
    options.metrics?.gauge("lsvd_nbd_connections", "NBD connections open now", () => this.#sessions.size);
    this.#acceptedCounter = options.metrics?.counter(
      "lsvd_nbd_connections_accepted_total",
      "NBD connections accepted since start",
    );
  }

  get uris(): string[] {
    const name = encodeURIComponent(this.#options.exportName ?? "lsvd");
    const uris: string[] = [];
    if (this.socketPath !== undefined) uris.push(`nbd+unix:///${name}?socket=${this.socketPath}`);
    const scheme = (this.#options.tls?.mode ?? "off") === "off" ? "nbd" : "nbds";
    if (this.tcp !== undefined) uris.push(`${scheme}://${this.tcp.hostname}:${this.tcp.port}/${name}`);
    return uris;
  }

  get connectionCount(): number {
    return this.#sessions.size;
  }

  get connectionsAccepted(): number {
    return this.#accepted;
  }

  stop(options: { quiet?: boolean } = {}): Promise<void> {
    this.#stopping ??= this.#stop(options);
    return this.#stopping;
  }

  async #stop(options: { quiet?: boolean }): Promise<void> {
    for (const listener of this.#listeners) listener.close();
    await Promise.all(this.#accepting);
    const sessions = [...this.#sessions];
    for (const session of sessions) session.stop(options);
    await Promise.all(sessions.map((s) => s.done.catch(() => {})));
    if (this.socketPath !== undefined) await Deno.remove(this.socketPath).catch(() => {});
  }

  async #acceptLoop(listener: Deno.Listener): Promise<void> {
    for (;;) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch (e) {
        if (this.#stopping !== undefined || e instanceof Deno.errors.BadResource) return;
        this.#log(`Cannot accept an NBD connection: ${e instanceof Error ? e.message : String(e)}`);
        continue;
      }
      if (this.#stopping !== undefined) {
        conn.close();
        return;
      }
      if (this.#sessions.size >= (this.#options.connectionsMax ?? 256)) {
        this.#log(`Refusing an NBD connection: ${this.#sessions.size} connections are open already`);
        conn.close();
        continue;
      }
      this.#serve(conn);
    }
  }

  #serve(conn: Deno.Conn): void {
    const tcp = conn.remoteAddr.transport === "tcp";
    if (tcp) (conn as Deno.TcpConn).setNoDelay(true);
    const tls = this.#options.tls;
    // Without TLS the session reads the Deno.Conn itself: the plaintext path has no extra layer.
    const startTls = tls === undefined || tls.mode === "off"
      ? undefined
      : new StartTlsTransport(conn, { mode: tcp ? tls.mode : "on", credentials: tls.credentials });
    const session = serveNbdConnection(startTls ?? conn, {
      ...this.#options,
      log: this.#log,
      peer: describePeer(conn.remoteAddr),
      startTls,
    });
    this.#sessions.add(session);
    this.#accepted++;
    this.#acceptedCounter?.inc();
    session.done.then(
      () => this.#sessions.delete(session),
      (e) => {
        this.#sessions.delete(session);
        if (isInvariantFailure(e)) throw e; // unhandled on purpose: a broken invariant crashes the daemon
        this.#log(`NBD session failed: ${e instanceof Error ? e.message : String(e)}`);
      },
    );
  }
}

function describePeer(addr: Deno.Addr): string {
  return addr.transport === "tcp" || addr.transport === "udp"
    ? `${addr.hostname}:${addr.port}`
    : "a unix-socket client";
}
