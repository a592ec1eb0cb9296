/**
 * @module
 * The NBD listeners: a unix socket (mode 0600; a stale socket file is replaced) and/or a TCP
 * host:port, each accepting any number of connections that all serve the same BlockDevice.
 * stop() is graceful: stop accepting, let every session answer or finish what it holds, close.
 */

import type { BlockDevice } from "../volume/block_device.ts";
import { type Logger, silentLogger } from "../util/log.ts";
import type { ConnectionLimits } from "./connection.ts";
import { isInvariantFailure } from "./errors.ts";
import { type NbdSession, serveNbdConnection } from "./session.ts";

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
}

export interface NbdServer {
  readonly socketPath: string | undefined;
  readonly tcp: { hostname: string; port: number } | undefined;
  /** `nbd+unix:///EXPORT?socket=PATH` or `nbd://HOST:PORT/EXPORT`, for clients and log lines. */
  readonly uris: string[];
  readonly connectionCount: number;
  /** Connections accepted since start. */
  readonly connectionsAccepted: number;
  /** Graceful: stop accepting, finish in-flight requests, close every connection. */
  stop(): Promise<void>;
}

/** Starts listening; throws "Cannot listen on ..." when a listener cannot be set up. */
export async function startNbdServer(options: NbdServerOptions): Promise<NbdServer> {
  if (options.socketPath === undefined && options.listen === undefined) {
    throw new Error("Cannot start the NBD server: give a socket path or a TCP address");
  }
  const listeners: Deno.Listener[] = [];
  try {
    if (options.socketPath !== undefined) listeners.push(await listenUnix(options.socketPath));
    if (options.listen !== undefined) listeners.push(listenTcp(options.listen));
  } catch (e) {
    for (const listener of listeners) listener.close();
    throw e;
  }
  return new Server(listeners, options);
}

async function listenUnix(path: string): Promise<Deno.Listener> {
  await removeStaleSocket(path);
  // The umask makes the socket 0600 from birth; JS is single-threaded, so nothing else sees it.
  const umask = Deno.umask(0o177);
  try {
    return Deno.listen({ transport: "unix", path });
  } catch (e) {
    throw new Error(`Cannot listen on ${path}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
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
  if (!info.isSocket) throw new Error(`Cannot listen on ${path}: the path exists and is not a socket`);
  try {
    const probe = await Deno.connect({ transport: "unix", path });
    probe.close();
    throw new Error(`Cannot listen on ${path}: another server is listening there`);
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
    throw new Error(
      `Cannot listen on ${hostname}:${address.port}: ${e instanceof Error ? e.message : String(e)}`,
      {
        cause: e,
      },
    );
  }
}

class Server implements NbdServer {
  readonly socketPath: string | undefined;
  readonly tcp: { hostname: string; port: number } | undefined;
  #listeners: Deno.Listener[];
  #options: NbdServerOptions;
  #log: Logger;
  #sessions = new Set<NbdSession>();
  #accepted = 0;
  #accepting: Promise<void>[];
  #stopping: Promise<void> | undefined;

  constructor(listeners: Deno.Listener[], options: NbdServerOptions) {
    this.#listeners = listeners;
    this.#options = options;
    this.#log = options.log ?? silentLogger;
    this.socketPath = options.socketPath;
    const tcp = listeners.map((l) => l.addr).find((a): a is Deno.NetAddr => a.transport === "tcp");
    this.tcp = tcp === undefined ? undefined : { hostname: tcp.hostname, port: tcp.port };
    this.#accepting = listeners.map((l) => this.#acceptLoop(l));
  }

  get uris(): string[] {
    const name = encodeURIComponent(this.#options.exportName ?? "lsvd");
    const uris: string[] = [];
    if (this.socketPath !== undefined) uris.push(`nbd+unix:///${name}?socket=${this.socketPath}`);
    if (this.tcp !== undefined) uris.push(`nbd://${this.tcp.hostname}:${this.tcp.port}/${name}`);
    return uris;
  }

  get connectionCount(): number {
    return this.#sessions.size;
  }

  get connectionsAccepted(): number {
    return this.#accepted;
  }

  stop(): Promise<void> {
    this.#stopping ??= this.#stop();
    return this.#stopping;
  }

  async #stop(): Promise<void> {
    for (const listener of this.#listeners) listener.close();
    await Promise.all(this.#accepting);
    const sessions = [...this.#sessions];
    for (const session of sessions) session.stop();
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
    if (conn.remoteAddr.transport === "tcp") (conn as Deno.TcpConn).setNoDelay(true);
    const session = serveNbdConnection(conn, {
      ...this.#options,
      log: this.#log,
      peer: describePeer(conn.remoteAddr),
    });
    this.#sessions.add(session);
    this.#accepted++;
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
