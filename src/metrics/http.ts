/**
 * @module
 * Serves a registry at `GET /metrics` over HTTP (what Prometheus scrapes and `lsvd status` reads).
 * Bound synchronously, so a busy address fails the start before the volume is touched.
 */

import type { MetricsRegistry } from "./registry.ts";

export const METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

export interface MetricsServer {
  /** e.g. `http://127.0.0.1:9100/metrics` */
  readonly url: string;
  close(): Promise<void>;
}

/** Listens on hostname:port (port 0 picks one); throws Deno.errors.AddrInUse and friends as they come. */
export function serveMetrics(
  registry: MetricsRegistry,
  address: { hostname: string; port: number },
): MetricsServer {
  const server = Deno.serve({ ...address, onListen: () => {} }, (request) => {
    const path = new URL(request.url).pathname;
    if (path !== "/metrics") return new Response("Not found: lsvd serves /metrics\n", { status: 404 });
    if (request.method !== "GET" && request.method !== "HEAD") {
      return new Response("Method not allowed\n", { status: 405, headers: { allow: "GET, HEAD" } });
    }
    return new Response(registry.render(), { headers: { "content-type": METRICS_CONTENT_TYPE } });
  });
  const host = server.addr.hostname.includes(":") ? `[${server.addr.hostname}]` : server.addr.hostname;
  return { url: `http://${host}:${server.addr.port}/metrics`, close: () => server.shutdown() };
}
