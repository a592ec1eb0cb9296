/**
 * @module
 * `lsvd serve --metrics` through the real daemon: /metrics parses as Prometheus text (checked by a
 * parser written here, independent of lsvd's own), its counters move with I/O from a real NBD
 * client, and `lsvd status` prints the same figures for a person.
 */

import assert from "node:assert/strict";
import { Daemon, ROOT, scratch, unixUri } from "../support/daemon.ts";
import { runClientOk } from "../support/clients.ts";

interface Family {
  type: string;
  samples: { name: string; labels: Record<string, string>; value: number }[];
}

/** A strict reader of the text exposition format 0.0.4: HELP/TYPE before samples, valid names and labels. */
function parsePrometheus(text: string): Map<string, Family> {
  const families = new Map<string, Family>();
  assert(text.endsWith("\n"), "exposition ends with a newline");
  for (const line of text.slice(0, -1).split("\n")) {
    const meta = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line);
    if (meta !== null) {
      if (meta[1] === "TYPE") {
        assert(["counter", "gauge", "histogram", "summary", "untyped"].includes(meta[3]!), line);
        assert(!families.has(meta[2]!), `TYPE repeated for ${meta[2]}`);
        families.set(meta[2]!, { type: meta[3]!, samples: [] });
      }
      continue;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*)\})? (\S+)$/
      .exec(line);
    assert(m !== null, `not a sample line: ${line}`);
    const value = m[3] === "+Inf" ? Infinity : Number(m[3]);
    assert(!Number.isNaN(value), `bad value in ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[l[1]!] = l[2]!;
    }
    const base = m[1]!.replace(/_(bucket|sum|count)$/, "");
    const family = families.get(m[1]!) ?? families.get(base);
    assert(family !== undefined, `sample ${m[1]} before its TYPE line`);
    family.samples.push({ name: m[1]!, labels, value });
  }
  return families;
}

function value(families: Map<string, Family>, name: string, labels: Record<string, string> = {}): number {
  const family = families.get(name.replace(/_(bucket|sum|count)$/, "")) ?? families.get(name);
  const found = family?.samples.filter((s) =>
    s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)
  );
  assert(found !== undefined && found.length === 1, `one sample of ${name} ${JSON.stringify(labels)}`);
  return found[0]!.value;
}

async function scrape(url: string): Promise<Map<string, Family>> {
  const response = await fetch(url);
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
  return parsePrometheus(await response.text());
}

/** `lsvd serve --dir` with --metrics on a free port and the given --cache-size; its metrics URL. */
async function serveWithMetrics(
  t: Awaited<ReturnType<typeof scratch>>,
  cacheSize: string,
): Promise<{ d: Daemon; url: string }> {
  const d = await Daemon.start({
    args: [
      "--dir",
      t.store,
      "--size",
      "64M",
      "--socket",
      t.socket,
      "--metrics",
      "127.0.0.1:0",
      "--cache-size",
      cacheSize,
    ],
  });
  const line = await d.waitForLine(/^lsvd: Serving metrics at http:\/\/127\.0\.0\.1:\d+\/metrics\.$/, 1000);
  return { d, url: line.replace(/^.* at (\S+)\.$/, "$1") };
}

Deno.test("lsvd serve --metrics serves Prometheus text whose counters move with I/O; lsvd status shows them", async () => {
  const t = await scratch();
  try {
    const { d, url } = await serveWithMetrics(t, "0");

    const before = await scrape(url);
    for (
      const name of [
        "lsvd_dirty_bytes",
        "lsvd_map_bytes",
        "lsvd_cache_bytes",
        "lsvd_crc_table_bytes",
        "lsvd_damaged_reads",
        "lsvd_nbd_connections",
        "lsvd_process_heap_used_bytes",
        "lsvd_process_heap_total_bytes",
        "lsvd_process_external_bytes",
      ]
    ) {
      assert.equal(before.get(name)?.type, "gauge", name);
    }
    // Where the resident memory is (issue 23): the V8 heap in use is part of what is reserved.
    assert(value(before, "lsvd_process_heap_used_bytes") > 0);
    assert(value(before, "lsvd_process_heap_total_bytes") >= value(before, "lsvd_process_heap_used_bytes"));
    assert(value(before, "lsvd_process_external_bytes") > 0);
    assert.equal(before.get("lsvd_store_request_duration_seconds")?.type, "histogram");
    assert.equal(value(before, "lsvd_volume_size_bytes"), 64 << 20);
    const putsBefore = value(before, "lsvd_store_requests_total", { op: "put" });
    const getsBefore = value(before, "lsvd_store_requests_total", { op: "get" });

    await runClientOk("qemu-io", ["-f", "raw", unixUri(t.socket), "-c", "write -P 0x3c 0 6M", "-c", "flush"]);
    const written = await scrape(url);
    assert(value(written, "lsvd_log_objects_uploaded_total") >= 2, "6 MiB at 4 MiB objects is two or more");
    assert(value(written, "lsvd_store_uploaded_bytes_total") >= 6 << 20);
    assert(value(written, "lsvd_store_requests_total", { op: "put" }) >= putsBefore + 2);
    const puts = value(written, "lsvd_store_request_duration_seconds_count", { op: "put" });
    assert.equal(
      value(written, "lsvd_store_request_duration_seconds_bucket", { op: "put", le: "+Inf" }),
      puts,
    );
    assert(value(written, "lsvd_nbd_connections_accepted_total") >= 1);
    assert.equal(value(written, "lsvd_nbd_written_bytes_total"), 6 << 20, "qemu-io wrote 6 MiB");
    assert(value(written, "lsvd_nbd_requests_total", { command: "flush" }) >= 1);
    assert.equal(value(written, "lsvd_dirty_bytes"), 0, "everything flushed");
    assert(value(written, "lsvd_map_bytes") > 0);

    await runClientOk("qemu-io", ["-f", "raw", unixUri(t.socket), "-c", "read -P 0x3c 0 6M"]);
    const read = await scrape(url);
    assert(value(read, "lsvd_store_requests_total", { op: "get" }) > getsBefore, "reads without a cache GET");
    assert(value(read, "lsvd_store_downloaded_bytes_total") >= 6 << 20);
    assert.equal(value(read, "lsvd_nbd_read_bytes_total"), 6 << 20);
    assert(value(read, "lsvd_nbd_requests_total", { command: "read" }) >= 1);

    const status = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "main.ts", "status", "--metrics", new URL(url).host],
      cwd: ROOT,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(status.stdout);
    assert.equal(status.code, 0, new TextDecoder().decode(status.stderr));
    assert.match(text, /^lsvd at http:\/\/127\.0\.0\.1:\d+\/metrics$/m);
    assert.match(text, /Volume\s+64\.0 MiB/);
    assert.match(
      text,
      new RegExp(`Uploaded\\s+${value(read, "lsvd_log_objects_uploaded_total")} log objects`),
    );
    assert.match(text, /Errors\s+none/);

    // Dead buffers are collected once they pass the slack (8 MiB without a cache), not V8's tens of MiB.
    assert.equal(before.get("lsvd_process_gc_collections")?.type, "gauge");
    await runClientOk("qemu-io", [
      "-f",
      "raw",
      unixUri(t.socket),
      "-c",
      "write -P 0x3d 8M 48M",
      "-c",
      "flush",
    ]);
    const burst = await scrape(url);
    assert(value(burst, "lsvd_process_gc_collections") >= 1, "48 MiB of payloads past an 8 MiB slack");
    assert.equal((await d.stop()).code, 0);

    const gone = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "main.ts", "status", "--metrics", new URL(url).host],
      cwd: ROOT,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(gone.code, 1);
    assert.match(
      new TextDecoder().decode(gone.stderr),
      /^lsvd: Cannot read http:\/\/.*\/metrics: .*is lsvd serve running/,
    );
  } finally {
    await t.remove();
  }
});

Deno.test("lsvd serve paces collections only while its read cache is below the full default (a small machine)", async () => {
  const t = await scratch();
  try {
    const { d, url } = await serveWithMetrics(t, "64M");
    await runClientOk("qemu-io", [
      "-f",
      "raw",
      unixUri(t.socket),
      "-c",
      "write -P 0x3e 0 48M",
      "-c",
      "flush",
    ]);
    const m = await scrape(url);
    assert.equal(m.get("lsvd_process_gc_collections"), undefined, "no pacer at the full 64 MiB cache");
    assert(value(m, "lsvd_process_external_bytes") >= 0);
    assert.equal((await d.stop()).code, 0);
  } finally {
    await t.remove();
  }
});
