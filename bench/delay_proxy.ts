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
 * which prints `delay_proxy: listening on 127.0.0.1:PORT`, and on SIGUSR1 the requests it has
 * forwarded so far by HTTP method: `delay_proxy: requests {"GET":12,"PUT":3}` (what a run cost in
 * S3 requests, counted on the wire).
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
  /** Exchanges so far by the HTTP method that starts them ("GET", "PUT", ...). */
  readonly requestsByMethod: Readonly<Record<string, number>>;
  close(): Promise<void>;
}

const CHUNK_BYTES = 256 * 1024;

export function startDelayProxy(options: DelayProxyOptions): DelayProxy {
  const listener = Deno.listen({
    hostname: options.listenHostname ?? "127.0.0.1",
    port: options.listenPort ?? 0,
  });
  const connections = new Set<Deno.TcpConn>();
  const state: ProxyState = { delayedExchanges: 0, requestsByMethod: {} };
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
    get requestsByMethod() {
      return state.requestsByMethod;
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

interface ProxyState {
  delayedExchanges: number;
  requestsByMethod: Record<string, number>;
}

/** The method of an HTTP request from its first bytes ("PUT /bucket/key HTTP/1.1" → "PUT"). */
function methodOf(chunk: Uint8Array): string {
  let end = 0;
  while (end < chunk.length && end < 16 && chunk[end] !== 0x20) end++;
  const method = new TextDecoder().decode(chunk.subarray(0, end));
  return /^[A-Z]+$/.test(method) ? method : "other";
}

async function proxyConnection(
  client: Deno.TcpConn,
  options: DelayProxyOptions,
  state: ProxyState,
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
  const turn = { clientStarts: true, expectingBody: false };
  const upstream = pump(client, server, async (chunk) => {
    if (!turn.clientStarts) return;
    turn.clientStarts = false;
    state.delayedExchanges++;
    // A 100-continue body after the server's interim answer starts no request: not counted.
    if (!turn.expectingBody) {
      const method = methodOf(chunk);
      state.requestsByMethod[method] = (state.requestsByMethod[method] ?? 0) + 1;
      turn.expectingBody = hasExpectContinue(chunk);
    } else {
      turn.expectingBody = false;
    }
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

function hasExpectContinue(chunk: Uint8Array): boolean {
  return /\r\nexpect:\s*100-continue/i.test(new TextDecoder().decode(chunk.subarray(0, 8192)));
}

/** Copies from one side to the other, calling beforeWrite (which may delay) before each chunk. */
async function pump(
  from: Deno.Conn,
  to: Deno.Conn,
  beforeWrite: (chunk: Uint8Array) => Promise<void>,
): Promise<void> {
  const buffer = new Uint8Array(CHUNK_BYTES);
  try {
    for (;;) {
      const n = await from.read(buffer);
      if (n === null) break;
      await beforeWrite(buffer.subarray(0, n));
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
  Deno.addSignalListener("SIGUSR1", () => {
    console.log(`delay_proxy: requests ${JSON.stringify(proxy.requestsByMethod)}`);
  });
  const stop = () => {
    void proxy.close().then(() => Deno.exit(0));
  };
  Deno.addSignalListener("SIGTERM", stop);
  Deno.addSignalListener("SIGINT", stop);
}
