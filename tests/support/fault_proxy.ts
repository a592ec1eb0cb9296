/**
 * @module
 * A TCP proxy in front of a real server (Ceph RGW) that a test switches between three states, so
 * store outages are real network failures seen through the real SDK, not simulated errors:
 *
 *   pass       bytes flow both ways
 *   refuse     the port is closed (connect fails with ECONNREFUSED) and open connections are reset
 *   blackhole  connections are accepted and kept open, but nothing flows either way: requests
 *              already on the wire and new ones wait for an answer that never comes
 *
 * Every connection a black hole touches is lost for good, as when a NAT or load balancer drops
 * its state: it stays open and silent, even after the proxy passes again, until the client gives
 * up and closes it. Only a client that enforces its own deadlines gets past one.
 */

export type FaultMode = "pass" | "refuse" | "blackhole";

interface Link {
  client: Deno.Conn;
  server: Deno.Conn | undefined;
  /** Touched by a black hole: bytes are read and discarded, never forwarded again. */
  lost: boolean;
}

export class FaultProxy {
  readonly hostname = "127.0.0.1";
  readonly port: number;
  #target: Deno.ConnectOptions;
  #listener: Deno.Listener | undefined;
  #mode: FaultMode = "pass";
  #links = new Set<Link>();
  #accepting: Promise<void> = Promise.resolve();
  /** Connections accepted so far, for tests that check requests reached the proxy. */
  connections = 0;

  private constructor(target: Deno.ConnectOptions, listener: Deno.Listener) {
    this.#target = target;
    this.#listener = listener;
    this.port = (listener.addr as Deno.NetAddr).port;
    this.#accepting = this.#accept(listener);
  }

  /** Starts passing traffic to target (e.g. the RGW endpoint's host and port) on a free port. */
  static start(target: { hostname: string; port: number }): FaultProxy {
    return new FaultProxy(target, Deno.listen({ hostname: "127.0.0.1", port: 0 }));
  }

  /** The proxy for an `http://host:port` endpoint. */
  static forEndpoint(endpoint: string): FaultProxy {
    const url = new URL(endpoint);
    return FaultProxy.start({ hostname: url.hostname, port: Number(url.port) });
  }

  get endpoint(): string {
    return `http://${this.hostname}:${this.port}`;
  }

  get mode(): FaultMode {
    return this.#mode;
  }

  async setMode(mode: FaultMode): Promise<void> {
    if (mode === this.#mode) return;
    const previous = this.#mode;
    this.#mode = mode;
    if (mode === "refuse") {
      this.#listener?.close();
      this.#listener = undefined;
      await this.#accepting;
      for (const link of this.#links) this.#drop(link);
    } else if (previous === "refuse") {
      const listener = Deno.listen({ hostname: this.hostname, port: this.port });
      this.#listener = listener;
      this.#accepting = this.#accept(listener);
    }
    if (mode === "blackhole") { for (const link of this.#links) link.lost = true; }
  }

  async close(): Promise<void> {
    this.#listener?.close();
    this.#listener = undefined;
    await this.#accepting;
    for (const link of this.#links) this.#drop(link);
  }

  async #accept(listener: Deno.Listener): Promise<void> {
    try {
      for await (const client of listener) {
        this.connections++;
        const link: Link = { client, server: undefined, lost: this.#mode === "blackhole" };
        this.#links.add(link);
        void this.#connect(link);
      }
    } catch {
      // the listener was closed
    }
  }

  async #connect(link: Link): Promise<void> {
    if (link.lost) {
      // Hold the connection open and unanswered; read and discard what the client sends.
      await this.#pump(link, link.client, undefined);
      return;
    }
    try {
      link.server = await Deno.connect(this.#target);
    } catch {
      this.#drop(link);
      return;
    }
    if (!this.#links.has(link)) return void tryClose(link.server);
    await Promise.all([
      this.#pump(link, link.client, link.server),
      this.#pump(link, link.server, link.client),
    ]);
    this.#drop(link);
  }

  /** Copies from → to until either side closes; bytes of a lost link are read and discarded. */
  async #pump(link: Link, from: Deno.Conn, to: Deno.Conn | undefined): Promise<void> {
    const buffer = new Uint8Array(64 * 1024);
    try {
      for (;;) {
        const n = await from.read(buffer);
        if (n === null) break;
        if (link.lost || to === undefined) continue;
        if (!this.#links.has(link)) break;
        let written = 0;
        while (written < n) written += await to.write(buffer.subarray(written, n));
      }
    } catch {
      // reset or closed by the other pump or by refuse/close
    }
    if (link.lost && from === link.server && this.#links.has(link)) {
      tryClose(from); // the server's close is lost in the black hole too: the client hears nothing
      return;
    }
    this.#drop(link);
  }

  #drop(link: Link): void {
    if (!this.#links.delete(link)) return;
    tryClose(link.client);
    if (link.server !== undefined) tryClose(link.server);
  }
}

function tryClose(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // already closed
  }
}
