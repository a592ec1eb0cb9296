import assert from "node:assert/strict";
import { MetricsRegistry } from "./registry.ts";
import { parseMetricsText, quantileUpper, total } from "./text_format.ts";

Deno.test("MetricsRegistry.render() writes counters, gauges and cumulative histograms that parse back", () => {
  const r = new MetricsRegistry();
  r.counter("x_total", "X", { op: "put" }).inc(3);
  r.counter("x_total", "X", { op: "get" }).inc();
  r.gauge("g", "a gauge", () => 7);
  r.counterFrom("kept_total", "kept elsewhere", () => 5);
  r.gauge("absent", "left out while undefined", () => undefined);
  const h = r.histogram("lat_seconds", "latency", {}, [0.01, 0.1]);
  for (const v of [0.005, 0.05, 0.05, 5]) h.observe(v);
  const text = r.render();
  assert.match(text, /^# TYPE x_total counter$/m);
  assert.match(text, /^x_total\{op="put"\} 3$/m);
  assert.match(text, /^# TYPE kept_total counter\nkept_total 5$/m);
  assert.match(text, /^lat_seconds_bucket\{le="0\.1"\} 3$/m);
  assert.match(text, /^lat_seconds_bucket\{le="\+Inf"\} 4$/m);
  assert(!/^absent /m.test(text));
  const samples = parseMetricsText(text);
  assert.equal(total(samples, "x_total"), 4);
  assert.equal(quantileUpper(samples, "lat_seconds", 0.5), 0.1);
  assert.equal(quantileUpper(samples, "lat_seconds", 0.99), Infinity);
  assert.throws(() => r.counter("x_total", "X").inc(-1), /only goes up/);
});
