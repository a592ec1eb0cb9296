/**
 * @module
 * `lsvd serve --cache-dir` through the real daemon on the directory store: data read from the store
 * is served from the disk cache after a restart (the store's copy damaged, so only the cache can
 * answer), a damaged cache slot is dropped and re-fetched, an object number a rollback reused is
 * never answered from the old entry, and a second daemon on the same DIR is refused in one line.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { Daemon, ROOT, scratch, unixUri } from "../support/daemon.ts";
import { runClient, runClientOk } from "../support/clients.ts";
import { DATA_FILE } from "../../src/cache/cache_dir.ts";
import { HEADER_BYTES } from "../../src/format/object.ts";
import { rgwEnv, startRgw } from "../support/rgw.ts";

const S = 4096;

/** Log objects of the volume (16-hex-digit names at the store's root), oldest first. */
function logObjects(store: string): string[] {
  return [...Deno.readDirSync(store)].filter((e) => e.isFile && /^[0-9a-f]{16}$/.test(e.name))
    .map((e) => e.name).sort();
}

async function scrape(url: string): Promise<Record<string, number>> {
  const text = await (await fetch(url)).text();
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^(lsvd_disk_cache_\w+|lsvd_store_requests_total\{op="get"\}) (\S+)$/gm)) {
    out[m[1]!] = Number(m[2]);
  }
  return out;
}

/** XORs one byte of every 4 KiB sector in [fromByte, toByte) of a file. */
function damage(path: string, fromByte: number, toByte: number): void {
  const f = Deno.openSync(path, { read: true, write: true });
  const one = new Uint8Array(1);
  for (let at = fromByte + 100; at < toByte; at += S) {
    f.seekSync(at, Deno.SeekMode.Start);
    f.readSync(one);
    one[0]! ^= 0x5a;
    f.seekSync(at, Deno.SeekMode.Start);
    f.writeSync(one);
  }
  f.close();
}

Deno.test("serve --cache-dir: warm after a restart, a damaged slot re-fetched, a second daemon refused", async () => {
  const t = await scratch();
  const cacheDir = join(t.dir, "cache");
  const uri = unixUri(t.socket);
  const serve = (extra: string[] = []) =>
    Daemon.start({
      args: [
        "--dir",
        t.store,
        "--socket",
        t.socket,
        "--cache-size",
        "1M",
        "--metrics",
        "127.0.0.1:0",
        ...extra,
      ],
    });
  const withCache = ["--cache-dir", cacheDir, "--cache-dir-size", "16M"];
  const metricsUrl = async (d: Daemon) =>
    (await d.waitForLine(/Serving metrics at/, 1000)).replace(/^.* at (\S+)\.$/, "$1");
  try {
    let d = await serve(["--size", "32M"]);
    await runClientOk("qemu-io", ["-f", "raw", uri, "-c", "write -P 0x5a 0 4M", "-c", "flush"]);
    assert.equal((await d.stop()).code, 0);
    const object = join(
      t.store,
      logObjects(t.store).find((n) => Deno.statSync(join(t.store, n)).size > 4 << 20)!,
    );

    // Cold: the store answers and the disk cache keeps what it read.
    d = await serve(withCache);
    await runClientOk("qemu-io", ["-f", "raw", uri, "-c", "read -P 0x5a 0 4M"]);
    let m = await scrape(await metricsUrl(d));
    assert.equal(m.lsvd_disk_cache_bytes, 4 << 20, JSON.stringify(m));
    // The disk's data, like the socket (0600), is for the daemon's user only.
    assert.equal(Deno.statSync(cacheDir).mode! & 0o777, 0o700);
    for (const e of Deno.readDirSync(cacheDir)) {
      assert.equal(Deno.statSync(join(cacheDir, e.name)).mode! & 0o777, 0o600, e.name);
    }
    const second = Daemon.spawn({ args: ["--dir", t.store, "--socket", `${t.socket}2`, ...withCache] });
    const refused = await second.finished();
    assert.equal(refused.code, 1);
    assert.match(
      refused.log,
      /^lsvd: Cannot use cache directory ".*": another lsvd daemon \(host \S+ pid \d+\) uses it$/m,
    );
    assert.equal((await d.stop()).code, 0);

    // Warm: the store's copy of the data is damaged, so only the disk cache can serve it right.
    const original = Deno.readFileSync(object);
    damage(object, HEADER_BYTES, HEADER_BYTES + (4 << 20));
    d = await serve(withCache);
    await runClientOk("qemu-io", ["-f", "raw", uri, "-c", "read -P 0x5a 0 4M"]);
    const url = await metricsUrl(d);
    m = await scrape(url);
    assert(m.lsvd_disk_cache_hits_total! >= 1 && m.lsvd_disk_cache_dropped_total === 0, JSON.stringify(m));
    const status = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "main.ts", "status", "--metrics", new URL(url).host],
      cwd: ROOT,
      stdout: "piped",
    }).output();
    assert.match(new TextDecoder().decode(status.stdout), /Disk cache\s+4\.0 MiB of 1[56]\.\d MiB, \d+ hits/);
    assert.equal((await d.stop()).code, 0);

    // Sequential reads of what the disk cache holds (the object's table loaded by a first read):
    // read-ahead leaves those sectors on disk, where each read finds them at once, instead of
    // copying them into memory early (which cost a disk-cache read per window, and memory).
    d = await serve(withCache);
    const sequential = [0, 1, 2, 3, 4, 5].flatMap((i) => ["-c", `read -P 0x5a ${i * 64}K 64K`]);
    await runClientOk("qemu-io", ["-f", "raw", uri, "-c", "read -P 0x5a 3M 4K", ...sequential]);
    m = await scrape(await metricsUrl(d));
    assert.equal(m.lsvd_disk_cache_hits_total, 1 + 6, JSON.stringify(m));
    assert.equal((await d.stop()).code, 0);

    // A flipped byte in the cache with the store damaged too: EIO, never the damaged cache bytes.
    damage(join(cacheDir, DATA_FILE), 0, 4 << 20);
    d = await serve(withCache);
    const failed = await runClient("qemu-io", ["-f", "raw", uri, "-c", "read -P 0x5a 0 4K"]);
    assert.match(failed.stdout + failed.stderr, /Input\/output error/);
    m = await scrape(await metricsUrl(d));
    assert(m.lsvd_disk_cache_dropped_total! >= 1, JSON.stringify(m));
    await runClient("qemu-io", ["-f", "raw", uri, "-c", "read -P 0x5a 8K 8K"]); // more damage: no second line
    const said = d.log.split("\n").filter((l) => l.includes("did not match the CRC it was kept with"));
    assert.equal(said.length, 1, d.log);
    assert.match(
      said[0]!,
      /^lsvd: Disk cache ".*": a sector did not match the CRC it was kept with \(damaged on disk, or torn by a crash\); dropped and read from the store \(lsvd_disk_cache_dropped_total counts them\)\.$/,
    );
    // The store repaired: the dropped sectors are fetched again and kept again.
    Deno.writeFileSync(object, original);
    assert.equal((await d.stop()).code, 0);
    d = await serve(withCache);
    await runClientOk("qemu-io", ["-f", "raw", uri, "-c", "read -P 0x5a 0 4M"]);
    m = await scrape(await metricsUrl(d));
    // The dropped slot's record was cleared: this start had nothing damaged to load, and refilled it.
    assert(m.lsvd_disk_cache_dropped_total === 0 && m.lsvd_disk_cache_fills_total! >= 1, JSON.stringify(m));
    assert.equal(m.lsvd_disk_cache_bytes, 4 << 20, JSON.stringify(m));
    assert.equal((await d.stop()).code, 0);
  } finally {
    await t.remove();
  }
});

Deno.test("serve --cache-dir: an object number a rollback reused is read from the store, not the old entry", async () => {
  const t = await scratch();
  const cacheDir = join(t.dir, "cache");
  const uri = unixUri(t.socket);
  const serve = (extra: string[] = []) =>
    Daemon.start({
      // No memory cache (nor kept CRC tables): the directory store's at-once path, which the disk cache
      // does not fill (the page cache holds those bytes), then never answers, so every read fills it.
      args: ["--dir", t.store, "--socket", t.socket, "--cache-size", "0", "--cache-dir", cacheDir, ...extra],
    });
  try {
    let d = await serve(["--size", "32M"]);
    await runClientOk("qemu-io", ["-f", "raw", uri, "-c", "write -P 0x11 0 1M", "-c", "flush"]);
    assert.equal((await d.stop()).code, 0);
    const kept = logObjects(t.store);
    d = await serve();
    await runClientOk("qemu-io", ["-f", "raw", uri, "-c", "write -P 0x22 0 1M", "-c", "flush"]);
    assert.equal((await d.stop()).code, 0);
    d = await serve();
    await runClientOk("qemu-io", ["-f", "raw", uri, "-c", "read -P 0x22 0 1M"]); // cached from the newer object
    assert.equal((await d.stop()).code, 0);
    const newer = logObjects(t.store).filter((n) => !kept.includes(n));
    for (const n of newer) Deno.removeSync(join(t.store, n)); // the rollback story's way back
    d = await serve();
    await runClientOk("qemu-io", [
      "-f",
      "raw",
      uri,
      "-c",
      "read -P 0x11 0 1M",
      "-c",
      "write -P 0x33 0 1M",
      "-c",
      "flush",
    ]);
    assert.equal((await d.stop()).code, 0);
    const rewritten = logObjects(t.store).filter((n) => !kept.includes(n));
    assert(rewritten.some((n) => newer.includes(n)), `a number came back: ${newer} / ${rewritten}`);
    d = await serve(["--metrics", "127.0.0.1:0"]);
    const url = (await d.waitForLine(/Serving metrics at/, 1000)).replace(/^.* at (\S+)\.$/, "$1");
    await runClientOk("qemu-io", ["-f", "raw", uri, "-c", "read -P 0x33 0 1M"]);
    const first = await scrape(url);
    assert(first.lsvd_disk_cache_dropped_total! >= 1, JSON.stringify(first));
    // Every stale sector of the range went at that first read and the store's copy replaced it:
    // the second read is a hit (it was a store GET again, dropping one more stale sector a read).
    await runClientOk("qemu-io", ["-f", "raw", uri, "-c", "read -P 0x33 0 1M"]);
    const second = await scrape(url);
    assert.equal(
      second.lsvd_disk_cache_dropped_total,
      first.lsvd_disk_cache_dropped_total,
      JSON.stringify(second),
    );
    assert.equal(
      second.lsvd_disk_cache_hits_total,
      first.lsvd_disk_cache_hits_total! + 1,
      JSON.stringify(second),
    );
    assert.equal((await d.stop()).code, 0);
  } finally {
    await t.remove();
  }
});

Deno.test({
  name:
    "serve --cache-dir on Ceph RGW: a restarted daemon reads cached data, written or read before, with no data GET, and a table GET only once a run",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const rgw = await startRgw();
    const t = await scratch();
    const uri = unixUri(t.socket);
    const serve = (extra: string[] = [], cacheDir = join(t.dir, "cache")) =>
      Daemon.start({
        args: [
          ...["--bucket", rgw.bucket, "--endpoint", rgw.endpoint, "--path-style", "--prefix", "dc"],
          ...["--socket", t.socket, "--metrics", "127.0.0.1:0", "--cache-dir", cacheDir],
          ...extra,
        ],
        env: { ...Deno.env.toObject(), ...rgwEnv(rgw) },
      });
    const downloaded = async (d: Daemon) => {
      const url = (await d.waitForLine(/Serving metrics at/, 1000)).replace(/^.* at (\S+)\.$/, "$1");
      const text = await (await fetch(url)).text();
      return {
        bytes: Number(/^lsvd_store_downloaded_bytes_total (\S+)$/m.exec(text)?.[1] ?? 0),
        hits: Number(/^lsvd_disk_cache_hits_total (\S+)$/m.exec(text)?.[1]),
        gets: Number(/^lsvd_store_requests_total\{op="get"\} (\S+)$/m.exec(text)?.[1] ?? 0),
        misses: Number(/^lsvd_disk_cache_misses_total (\S+)$/m.exec(text)?.[1]),
      };
    };
    try {
      let d = await serve(["--size", "32M"]);
      await runClientOk("qemu-io", ["-f", "raw", uri, "-c", "write -P 0x5a 0 4M", "-c", "flush"]);
      assert.equal((await d.stop()).code, 0);
      // Data just uploaded went to the disk cache: read back after a restart, it needs no data GET.
      d = await serve();
      const fresh = await downloaded(d);
      await runClientOk("qemu-io", ["-f", "raw", uri, "-c", "read -P 0x5a 0 4M"]);
      const uploaded = await downloaded(d);
      assert(uploaded.hits >= 1, JSON.stringify(uploaded));
      assert(uploaded.bytes - fresh.bytes < 64 * 1024, `${uploaded.bytes - fresh.bytes} bytes downloaded`);
      assert.equal((await d.stop()).code, 0);
      d = await serve();
      const before = await downloaded(d);
      await runClientOk("qemu-io", ["-f", "raw", uri, "-c", "read -P 0x5a 0 4M"]);
      const after = await downloaded(d);
      assert(after.hits >= 1, JSON.stringify(after));
      // The object's CRC table (4 KiB a 4 MiB object, fetched by a suffix GET) and nothing more.
      assert(after.bytes - before.bytes < 64 * 1024, `${after.bytes - before.bytes} bytes downloaded`);
      assert.equal((await d.stop()).code, 0);
      // No memory for CRC tables at all (--cache-size 0): the first read of each cached sector in a
      // run checks it against its object's table (a GET); later reads need no table, so no GET.
      d = await serve(["--cache-size", "0"]);
      const reads = [0, 1, 2, 3].flatMap((i) => ["-c", `read -P 0x5a ${i}M 1M`]);
      await runClientOk("qemu-io", ["-f", "raw", uri, ...reads]);
      const checked = await downloaded(d);
      assert(checked.gets >= 1, JSON.stringify(checked));
      await runClientOk("qemu-io", ["-f", "raw", uri, ...reads, ...reads]);
      const again = await downloaded(d);
      assert(again.hits >= checked.hits + 8, JSON.stringify(again));
      assert.equal(again.gets, checked.gets, "a disk-cache hit made a GET for its object's table");
      assert.equal((await d.stop()).code, 0);
      // An empty cache: each read the store answers is one miss, also once the object's table is
      // in memory (the at-once look and the fetch after it counted one each).
      d = await serve([], join(t.dir, "cold"));
      await runClientOk("qemu-io", ["-f", "raw", uri, "-c", "read -P 0x5a 0 4K", "-c", "read -P 0x5a 2M 4K"]);
      const cold = await downloaded(d);
      assert(cold.hits === 0 && cold.misses === 2, JSON.stringify(cold));
      assert.equal((await d.stop()).code, 0);
    } finally {
      await t.remove();
      await rgw.stop();
    }
  },
});

Deno.test("serve --cache-dir: after garbage collection moved cached data, reads follow the map to the copy", async () => {
  const t = await scratch();
  const uri = unixUri(t.socket);
  const serve = (extra: string[]) =>
    Daemon.start({
      args: [
        ...["--dir", t.store, "--socket", t.socket, "--cache-size", "0"],
        ...["--cache-dir", join(t.dir, "cache"), ...extra],
      ],
    });
  try {
    let d = await serve(["--size", "32M", "--gc-interval", "off"]);
    await runClientOk("qemu-io", ["-f", "raw", uri, "-c", "write -P 0x11 0 4M", "-c", "flush"]);
    const first = logObjects(t.store);
    await runClientOk("qemu-io", ["-f", "raw", uri, "-c", "write -P 0x22 0 3M", "-c", "flush"]);
    await runClientOk("qemu-io", ["-f", "raw", uri, "-c", "read -P 0x22 0 3M", "-c", "read -P 0x11 3M 1M"]);
    assert.equal((await d.stop()).code, 0);
    const big = first.filter((n) => Deno.statSync(join(t.store, n)).size > 4 << 20);
    assert.equal(big.length, 1);
    d = await serve(["--retention", "1s", "--gc-interval", "300ms"]);
    const deadline = Date.now() + 30_000;
    while (logObjects(t.store).includes(big[0]!)) {
      assert(Date.now() < deadline, `garbage collection did not delete ${big[0]}\n${d.log}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    await runClientOk("qemu-io", ["-f", "raw", uri, "-c", "read -P 0x22 0 3M", "-c", "read -P 0x11 3M 1M"]);
    assert.equal((await d.stop()).code, 0);
    d = await serve(["--gc-interval", "off"]);
    await runClientOk("qemu-io", ["-f", "raw", uri, "-c", "read -P 0x22 0 3M", "-c", "read -P 0x11 3M 1M"]);
    assert.equal((await d.stop()).code, 0);
  } finally {
    await t.remove();
  }
});

Deno.test("serve --cache-dir --takeover: a daemon still holding DIR is taken over, the new one serving without the disk cache", async () => {
  const t = await scratch();
  const cacheDir = join(t.dir, "cache");
  const serve = (socket: string, extra: string[]) =>
    Daemon.start({
      args: [
        "--dir",
        t.store,
        "--socket",
        socket,
        "--cache-dir",
        cacheDir,
        "--lease-duration-ms",
        "3000",
        ...extra,
      ],
    });
  try {
    const old = await serve(t.socket, ["--size", "32M"]);
    await runClientOk("qemu-io", ["-f", "raw", unixUri(t.socket), "-c", "write -P 0x44 0 1M", "-c", "flush"]);
    const taker = await serve(`${t.socket}2`, ["--takeover"]);
    assert.match(
      taker.log,
      /^lsvd: Cannot use cache directory ".*": another lsvd daemon \(host \S+ pid \d+\) uses it; serving without a disk cache this run \(--takeover\)\.$/m,
    );
    await runClientOk("qemu-io", ["-f", "raw", unixUri(`${t.socket}2`), "-c", "read -P 0x44 0 1M"]);
    assert.equal((await old.finished()).code, 1); // fenced
    assert.equal((await taker.stop()).code, 0);
  } finally {
    await t.remove();
  }
});
