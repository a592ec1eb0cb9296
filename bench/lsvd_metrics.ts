/**
 * @module
 * Reads a running lsvd's own counters from its `--metrics` endpoint (Prometheus text), so the
 * benchmark reports what the daemon did (PUTs, GETs, bytes, extent-map size) instead of guessing
 * it from outside.
 */

/** The metrics page as "name{labels}" → value. */
export async function scrapeLsvdMetrics(port: number): Promise<Map<string, number>> {
  const response = await fetch(`http://127.0.0.1:${port}/metrics`);
  if (!response.ok) throw new Error(`Cannot read lsvd's metrics: HTTP ${response.status}`);
  const out = new Map<string, number>();
  for (const line of (await response.text()).split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const at = line.lastIndexOf(" ");
    out.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return out;
}
