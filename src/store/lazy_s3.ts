/**
 * @module
 * An S3 store that loads the AWS SDK (src/store/s3.ts) on its first request. Importing the SDK costs
 * about 25 MiB of resident memory (measured: a Deno process importing s3.ts idles at 64 MiB, one
 * without at 38 MiB), which a daemon on a local directory store never needs and a 512 MiB machine
 * feels. The options are checked at once (s3_options.ts), so a bad setting is still a start-up error.
 */

import { checkS3StoreOptions, type S3StoreOptions } from "./s3_options.ts";
import type {
  ByteRange,
  GetResult,
  HeadResult,
  ListOptions,
  ListPage,
  ObjectStore,
  PutOptions,
  PutResult,
} from "./store.ts";

export class LazyS3Store implements ObjectStore {
  readonly description: string;
  readonly bucket: string;
  readonly #options: S3StoreOptions;
  #store: Promise<ObjectStore> | undefined;
  #siblings = new Map<string, LazyS3Store>();

  constructor(options: S3StoreOptions) {
    checkS3StoreOptions(options);
    this.#options = options;
    this.bucket = options.bucket;
    this.description = `the ${options.bucket} bucket`;
  }

  /** The same endpoint, credentials and settings on another bucket (its SDK loaded on first use too). */
  inBucket(bucket: string): ObjectStore {
    if (bucket === this.bucket) return this;
    let sibling = this.#siblings.get(bucket);
    if (sibling === undefined) {
      sibling = new LazyS3Store({ ...this.#options, bucket });
      this.#siblings.set(bucket, sibling);
    }
    return sibling;
  }

  #loaded(): Promise<ObjectStore> {
    return this.#store ??= import("./s3.ts").then(({ S3Store }) => new S3Store(this.#options));
  }

  async check(): Promise<void> {
    await (await this.#loaded()).check?.();
  }

  async put(key: string, body: Uint8Array, options?: PutOptions): Promise<PutResult> {
    return await (await this.#loaded()).put(key, body, options);
  }

  async get(key: string, range?: ByteRange): Promise<GetResult> {
    return await (await this.#loaded()).get(key, range);
  }

  async head(key: string): Promise<HeadResult> {
    return await (await this.#loaded()).head(key);
  }

  async list(options: ListOptions): Promise<ListPage> {
    return await (await this.#loaded()).list(options);
  }

  async delete(key: string): Promise<void> {
    await (await this.#loaded()).delete(key);
  }

  async copy(sourceKey: string, destinationKey: string, options?: PutOptions): Promise<void> {
    await (await this.#loaded()).copy(sourceKey, destinationKey, options);
  }

  async close(): Promise<void> {
    for (const sibling of this.#siblings.values()) await sibling.close();
    // Never loads the SDK only to close it.
    if (this.#store !== undefined) await (await this.#store).close();
  }
}
