/**
 * @module
 * "WAN" mode without netem: a TCP proxy on loopback that delays each HTTP request by a fixed
 * time. A client→server chunk that starts a new exchange (the first on a connection, or the first
 * after the server has sent anything back) waits `delayMs` before it is forwarded; the chunks that
 * follow it in the same direction queue behind it, so byte order is kept and keep-alive works.
 * Each request/response exchange (including an `Expect: 100-continue` round trip) costs one
 * delay, like one round trip to a distant region.
 *
 * Runs in-process (`startDelayProxy`) or as its own process, so its CPU is not the harness's:
 *   deno run --allow-net bench/delay_proxy.ts --target 127.0.0.1:PORT [--listen 127.0.0.1:0] [--delay-ms 20]
 * which prints `delay_proxy: listening on 127.0.0.1:PORT`.
 */

import { parseArgs } from "node:util";

export interface DelayProxyOptions {
  targetHostname: string;
  targetPort: number;
  delayMs: number;
  listenHostname?: string;
  listenPort?: number;
}

export interface DelayProxy {
  port: number;
  /** Exchanges delayed so far (one per request on every connection). */
  readonly delayedExchanges: number;
  close(): Promise<void>;
}

const CHUNK_BYTES = 256 * 1024;

export function startDelayProxy(options: DelayProxyOptions): DelayProxy {
  const listener = Deno.listen({
    hostname: options.listenHostname ?? "127.0.0.1",
    port: options.listenPort ?? 0,
  });
  const connections = new Set<Deno.TcpConn>();
  const state = { delayedExchanges: 0 };
  const accepting = (async () => {
    try {
      for await (const client of listener) {
        connections.add(client);
        void proxyConnection(client, options, state).finally(() => connections.delete(client));
      }
    } catch {
      // The listener was closed.
    }
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    get delayedExchanges() {
      return state.delayedExchanges;
    },
    async close() {
      listener.close();
      for (const c of connections) closeQuietly(c);
      await accepting;
    },
  };
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // Already closed.
  }
}

async function proxyConnection(
  client: Deno.TcpConn,
  options: DelayProxyOptions,
  state: { delayedExchanges: number },
): Promise<void> {
  let server: Deno.TcpConn;
  try {
    server = await Deno.connect({ hostname: options.targetHostname, port: options.targetPort });
  } catch {
    closeQuietly(client);
    return;
  }
  client.setNoDelay(true);
  server.setNoDelay(true);
  // True when the next client chunk starts a new exchange.
  const turn = { clientStarts: true };
  const upstream = pump(client, server, async () => {
    if (!turn.clientStarts) return;
    turn.clientStarts = false;
    state.delayedExchanges++;
    if (options.delayMs > 0) await new Promise((r) => setTimeout(r, options.delayMs));
  });
  const downstream = pump(server, client, () => {
    turn.clientStarts = true;
    return Promise.resolve();
  });
  await Promise.race([upstream, downstream]);
  closeQuietly(client);
  closeQuietly(server);
  await Promise.allSettled([upstream, downstream]);
}

/** Copies from one side to the other, calling beforeWrite (which may delay) before each chunk. */
async function pump(from: Deno.Conn, to: Deno.Conn, beforeWrite: () => Promise<void>): Promise<void> {
  const buffer = new Uint8Array(CHUNK_BYTES);
  try {
    for (;;) {
      const n = await from.read(buffer);
      if (n === null) break;
      await beforeWrite();
      let written = 0;
      while (written < n) written += await to.write(buffer.subarray(written, n));
    }
  } catch {
    // A reset on either side ends the connection.
  }
}

function parseHostPort(text: string): { hostname: string; port: number } {
  const at = text.lastIndexOf(":");
  const port = Number(text.slice(at + 1));
  if (at < 0 || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`Invalid address "${text}": expected HOST:PORT`);
  }
  return { hostname: text.slice(0, at) || "127.0.0.1", port };
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      target: { type: "string" },
      listen: { type: "string", default: "127.0.0.1:0" },
      "delay-ms": { type: "string", default: "20" },
    },
  });
  if (values.target === undefined) {
    console.error("delay_proxy: Cannot start: --target HOST:PORT is required");
    Deno.exit(2);
  }
  const target = parseHostPort(values.target);
  const listen = parseHostPort(values.listen);
  const proxy = startDelayProxy({
    targetHostname: target.hostname,
    targetPort: target.port,
    delayMs: Number(values["delay-ms"]),
    listenHostname: listen.hostname,
    listenPort: listen.port,
  });
  console.log(`delay_proxy: listening on ${listen.hostname}:${proxy.port}`);
  const stop = () => {
    void proxy.close().then(() => Deno.exit(0));
  };
  Deno.addSignalListener("SIGTERM", stop);
  Deno.addSignalListener("SIGINT", stop);
}
