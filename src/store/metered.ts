/**
 * @module
 * An ObjectStore decorator that counts every call into a metrics registry: requests and errors by
 * operation and kind, PUT and GET latency histograms, bytes and objects uploaded and downloaded.
 * Wrapping the store (rather than instrumenting S3, the directory and memory stores one by one)
 * measures exactly what the volume asked for and got, whichever store is underneath.
 */

import { type Counter, type Histogram, type MetricsRegistry } from "../metrics/registry.ts";
import { parseLogKey } from "../format/keys.ts";
import {
  type ByteRange,
  type GetResult,
  type HeadResult,
  isStoreError,
  type ListOptions,
  type ListPage,
  type ObjectStore,
  type PutOptions,
  type PutResult,
} from "./store.ts";

type Operation = "put" | "get" | "head" | "list" | "delete" | "copy";
const OPERATIONS: readonly Operation[] = ["put", "get", "head", "list", "delete", "copy"];

export class MeteredStore implements ObjectStore {
  readonly description: string;
  readonly check?: () => Promise<void>;
  readonly bucket?: string;
  readonly inBucket?: (bucket: string) => ObjectStore;
  #inner: ObjectStore;
  #metrics: MetricsRegistry;
  #prefix: string;
  #requests: Record<Operation, Counter>;
  #latency: Record<"put" | "get", Histogram>;
  #uploadedBytes: Counter;
  #uploadedObjects: Counter;
  #downloadedBytes: Counter;

  /** prefix (normalised) tells log objects from other keys for the objects-uploaded count. */
  constructor(inner: ObjectStore, metrics: MetricsRegistry, prefix = "") {
    this.#inner = inner;
    this.#metrics = metrics;
    this.#prefix = prefix;
    this.description = inner.description;
    if (inner.check !== undefined) this.check = () => inner.check!();
    if (inner.bucket !== undefined) this.bucket = inner.bucket;
    if (inner.inBucket !== undefined) {
      // A parent in another bucket: its requests count in the same series.
      this.inBucket = (bucket) => new MeteredStore(inner.inBucket!(bucket), metrics, prefix);
    }
    const requests = (op: Operation) =>
      metrics.counter("lsvd_store_requests_total", "Object store calls made by lsvd, by operation", { op });
    this.#requests = Object.fromEntries(OPERATIONS.map((op) => [op, requests(op)])) as Record<
      Operation,
      Counter
    >;
    const latency = (op: "put" | "get") =>
      metrics.histogram(
        "lsvd_store_request_duration_seconds",
        "Time from an object store call to its answer, retries inside the store included",
        { op },
      );
    this.#latency = { put: latency("put"), get: latency("get") };
    this.#uploadedBytes = metrics.counter(
      "lsvd_store_uploaded_bytes_total",
      "Bytes stored by successful PUTs",
    );
    this.#uploadedObjects = metrics.counter(
      "lsvd_log_objects_uploaded_total",
      "Log objects (numbered data objects) stored",
    );
    this.#downloadedBytes = metrics.counter(
      "lsvd_store_downloaded_bytes_total",
      "Bytes read by successful GETs",
    );
  }

  async put(key: string, body: Uint8Array, options?: PutOptions): Promise<PutResult> {
    const result = await this.#measure("put", () => this.#inner.put(key, body, options));
    this.#uploadedBytes.inc(body.length);
    if (parseLogKey(this.#prefix, key) !== undefined) this.#uploadedObjects.inc();
    return result;
  }

  head(key: string): Promise<HeadResult> {
    return this.#measure("head", () => this.#inner.head(key));
  }

  async get(key: string, range?: ByteRange): Promise<GetResult> {
    const result = await this.#measure("get", () => this.#inner.get(key, range));
    this.#downloadedBytes.inc(result.body.length);
    return result;
  }

  /** Counted as a GET when it answers; a false answer made no request (get() follows). */
  readNow(key: string, offsetBytes: number, dest: Uint8Array): boolean {
    if (this.#inner.readNow === undefined) return false;
    const started = performance.now();
    if (!this.#inner.readNow(key, offsetBytes, dest)) return false;
    this.#requests.get.inc();
    this.#latency.get.observe((performance.now() - started) / 1000);
    this.#downloadedBytes.inc(dest.length);
    return true;
  }

  list(options: ListOptions): Promise<ListPage> {
    return this.#measure("list", () => this.#inner.list(options));
  }

  delete(key: string): Promise<void> {
    return this.#measure("delete", () => this.#inner.delete(key));
  }

  copy(sourceKey: string, destinationKey: string, options?: PutOptions): Promise<void> {
    return this.#measure("copy", () => this.#inner.copy(sourceKey, destinationKey, options));
  }

  close(): Promise<void> {
    return this.#inner.close();
  }

  async #measure<T>(op: Operation, call: () => Promise<T>): Promise<T> {
    this.#requests[op].inc();
    const started = performance.now();
    try {
      return await call();
    } catch (e) {
      // A missing key (format record, probes, GC) and a failed condition (create-only records that
      // exist, epoch claims, lease renewals) are answers, not failures: counted on their own.
      if (isStoreError(e, "PreconditionFailed")) {
        this.#metrics.counter(
          "lsvd_store_precondition_failed_total",
          "Conditional writes the store refused (the key existed or changed): normal for records, a fence for log objects",
          { op },
        ).inc();
      } else if (!isStoreError(e, "NotFound")) {
        const kind = isStoreError(e) ? e.code : "Other";
        this.#metrics.counter(
          "lsvd_store_errors_total",
          "Failed object store calls by operation and kind (NotFound and PreconditionFailed answers are not counted)",
          { op, kind },
        ).inc();
      }
      if (isStoreError(e, "Transient")) {
        this.#metrics.counter(
          "lsvd_store_retries_total",
          "Calls that failed with a transient error, which lsvd retries",
          { op },
        ).inc();
      }
      throw e;
    } finally {
      if (op === "put" || op === "get") this.#latency[op].observe((performance.now() - started) / 1000);
    }
  }
}
