/**
 * @module
 * A tiny in-memory S3 server (path-style, one bucket, no authentication) that ignores `If-Match`
 * and `If-None-Match`, as some cheap S3-compatible providers and s3rver do: what `lsvd serve` must
 * refuse at start unless told `--no-fencing` (src/store/conditional_probe.ts). It answers the calls
 * lsvd's S3Store makes (HeadBucket, Put/Get/Head/Delete/CopyObject, ListObjectsV2) well enough for
 * the daemon to serve a volume on it with --no-fencing; nothing else.
 */

import { contentEtag } from "../../src/store/store.ts";

export interface UnconditionalS3 {
  endpoint: string;
  bucket: string;
  /** Conditional headers it received and ignored, for the test to show they were sent. */
  ignoredConditions: number;
  close(): Promise<void>;
}

function xmlEscape(s: string): string {
  return s.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;");
}

function errorAnswer(status: number, code: string): Response {
  return new Response(
    `<?xml version="1.0" encoding="UTF-8"?><Error><Code>${code}</Code><Message>${code}</Message></Error>`,
    {
      status,
      headers: { "content-type": "application/xml" },
    },
  );
}

export function startUnconditionalS3(bucket = "plain"): UnconditionalS3 {
  const objects = new Map<string, { body: Uint8Array<ArrayBuffer>; etag: string }>();
  const state = { ignoredConditions: 0 };
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (request) => {
    const url = new URL(request.url);
    const [, name, ...rest] = url.pathname.split("/");
    if (name !== bucket) return errorAnswer(404, "NoSuchBucket");
    const key = decodeURIComponent(rest.join("/"));
    if (request.headers.has("if-match") || request.headers.has("if-none-match")) state.ignoredConditions++;
    if (key === "") {
      if (request.method === "HEAD") return new Response(null, { status: 200 });
      if (request.method === "GET" && url.searchParams.get("list-type") === "2") return list(url);
      return errorAnswer(400, "InvalidRequest");
    }
    switch (request.method) {
      case "PUT": {
        const source = request.headers.get("x-amz-copy-source");
        let body: Uint8Array<ArrayBuffer>;
        if (source !== null) {
          const from = objects.get(decodeURIComponent(source.replace(/^\/?[^/]+\//, "")));
          if (from === undefined) return errorAnswer(404, "NoSuchKey");
          body = from.body;
        } else {
          body = new Uint8Array(await request.arrayBuffer());
        }
        const etag = `"${contentEtag(body)}"`;
        objects.set(key, { body, etag });
        if (source !== null) {
          return new Response(
            `<?xml version="1.0" encoding="UTF-8"?><CopyObjectResult><ETag>${
              xmlEscape(etag)
            }</ETag><LastModified>${new Date().toISOString()}</LastModified></CopyObjectResult>`,
            { headers: { "content-type": "application/xml" } },
          );
        }
        return new Response(null, { status: 200, headers: { etag } });
      }
      case "GET":
      case "HEAD": {
        const o = objects.get(key);
        if (o === undefined) {
          return request.method === "HEAD"
            ? new Response(null, { status: 404 })
            : errorAnswer(404, "NoSuchKey");
        }
        const range = request.headers.get("range")?.match(/^bytes=(\d+)-(\d+)$/);
        if (range && request.method === "GET") {
          const first = Number(range[1]);
          if (first >= o.body.length) return errorAnswer(416, "InvalidRange");
          const last = Math.min(Number(range[2]), o.body.length - 1);
          return new Response(o.body.slice(first, last + 1), {
            status: 206,
            headers: {
              etag: o.etag,
              "content-length": String(last - first + 1),
              "content-range": `bytes ${first}-${last}/${o.body.length}`,
            },
          });
        }
        return new Response(request.method === "HEAD" ? null : o.body.slice(), {
          headers: { etag: o.etag, "content-length": String(o.body.length) },
        });
      }
      case "DELETE":
        objects.delete(key);
        return new Response(null, { status: 204 });
    }
    return errorAnswer(405, "MethodNotAllowed");
  });

  function list(url: URL): Response {
    const prefix = url.searchParams.get("prefix") ?? "";
    const startAfter = url.searchParams.get("start-after") ?? "";
    const maxKeys = Number(url.searchParams.get("max-keys") ?? 1000);
    const keys = [...objects.keys()].filter((k) => k.startsWith(prefix) && k > startAfter).sort();
    const page = keys.slice(0, maxKeys);
    const contents = page.map((k) =>
      `<Contents><Key>${xmlEscape(k)}</Key><Size>${objects.get(k)!.body.length}</Size><ETag>${
        xmlEscape(objects.get(k)!.etag)
      }</ETag><LastModified>${new Date().toISOString()}</LastModified></Contents>`
    ).join("");
    return new Response(
      `<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>${bucket}</Name><Prefix>${
        xmlEscape(prefix)
      }</Prefix><KeyCount>${page.length}</KeyCount><MaxKeys>${maxKeys}</MaxKeys><IsTruncated>${
        keys.length > page.length
      }</IsTruncated>${contents}</ListBucketResult>`,
      { headers: { "content-type": "application/xml" } },
    );
  }

  return {
    endpoint: `http://127.0.0.1:${server.addr.port}`,
    bucket,
    get ignoredConditions() {
      return state.ignoredConditions;
    },
    close: () => server.shutdown(),
  };
}
