/**
 * @module
 * The writer lease and writer epochs: who may write a volume now (docs/design/fencing.md).
 *
 * `lease.json` names the holder (host, pid), its epoch, when it was taken and last renewed, and how
 * long each renewal is good for. It is only ever replaced with a conditional PUT: `If-None-Match: *`
 * when there is none, `If-Match: <the ETag read>` otherwise, so of two daemons racing for it exactly
 * one wins, and a holder's renewal fails (412) from the moment anyone else has written it. A holder
 * counts its lease valid for `durationMs` from the START of its last successful renewal, on its own
 * clock. The lease alone never protects data (clocks and pauses lie); the fence that follows a
 * takeover does (src/log/fence.ts). The lease keeps honest daemons from fighting and bounds how long
 * a deposed one keeps acknowledging.
 *
 * Epochs are claimed with one create-only key each (`epoch/<16 hex>`), one above the highest taken,
 * so an epoch is never reused, even after the log is rolled back past every object that carried it.
 */

import { epochKey, epochPrefix, leaseKey, parseEpochKey } from "../format/keys.ts";
import { isStoreError, listAll, type ObjectStore } from "../store/store.ts";
import type { Clock, Timer } from "../util/clock.ts";
import type { Logger } from "../util/log.ts";
import { LsvdError, messageOf } from "../util/errors.ts";
import { retrying, RetryingStore } from "../store/retry.ts";
import {
  currentHolder,
  goneText,
  holderState,
  type LeaseHolder,
  localProcesses,
  type ProcessTable,
} from "../util/lease_holder.ts";

export { currentHolder, type LeaseHolder } from "../util/lease_holder.ts";

export const LEASE_VERSION = 1;
/** How long one renewal keeps the lease; renewed every third of it. */
export const LEASE_DURATION_MS_DEFAULT = 30_000;
/** Attempts of an explicit lease write (update, release, lapse); renewals retry on their timer. */
const WRITE_ATTEMPTS_MAX = 10;

/**
 * The write-back journal a holder acknowledges FLUSHes from (`serve --journal DIR`): it may hold
 * acknowledged writes that are not in the log yet, so a start without it is refused
 * (docs/design/write-back-journal.md). Recorded when the lease is taken and dropped only by a clean
 * shutdown that emptied the journal.
 */
export interface LeaseJournal {
  host: string;
  /** The directory, as its writer resolved it. */
  dir: string;
  /** The directory's own random id (DIR/id): the same journal wherever it is mounted, or named. */
  id: string;
}

export interface Lease {
  version: number;
  holder: LeaseHolder;
  epoch: number;
  /** Wall-clock milliseconds (UTC) when this holder took the lease, and when it last renewed it. */
  acquiredAtMs: number;
  renewedAtMs: number;
  durationMs: number;
  /**
   * How many log numbers past its durable prefix a writer under this lease may have uploads in
   * flight: what a successor's fence must close. Raised to the predecessor's while a fence is
   * still being written, so a successor of a holder that died mid-fence closes the older window too.
   */
  windowObjects: number;
  /** Set by a clean shutdown: every upload finished, nothing to fence. */
  released: boolean;
  /** The holder's write-back journal, while it may hold acknowledged writes not in the log. */
  journal?: LeaseJournal;
}

export interface StoredLease {
  lease: Lease;
  etag: string;
}

export type LeaseMode = "refuse" | "takeover" | "standby";

export interface AcquireOptions {
  clock: Clock;
  log: Logger;
  /** What to do about a live holder: refuse (default), take over now, or wait for its lease to lapse. */
  mode?: LeaseMode;
  /** Default LEASE_DURATION_MS_DEFAULT. */
  durationMs?: number;
  /** This writer's upload window (its uploads in flight at most). */
  windowObjects: number;
  holder?: LeaseHolder;
  /** Standby: how often to read the lease; default a tenth of its duration. */
  pollMs?: number;
  /** Standby: called before each look at the lease while waiting (a warm standby follows the log). */
  whileWaiting?: () => Promise<void>;
  /**
   * This machine's processes, to prove a holder on it gone (src/util/lease_holder.ts); default
   * /proc. A holder proved gone is replaced without --takeover (and still fenced).
   */
  processes?: ProcessTable;
  /** The write-back journal this writer acknowledges from: recorded in the lease. */
  journal?: { dir: string; id: string };
  /** Take the lease even though it records another journal (its unstored writes are lost). */
  abandonJournal?: boolean;
}

export interface AcquiredLease {
  stored: StoredLease;
  /** The lease replaced: its holder may still have uploads in flight unless it was released. */
  previous: Lease | undefined;
  /** Clock time (nowMs) when the winning PUT started: the lease is valid for durationMs from here. */
  validFromMs: number;
}

const encoder = new TextEncoder();

export function encodeLease(lease: Lease): Uint8Array {
  return encoder.encode(`${JSON.stringify(lease, null, 2)}\n`);
}

export function decodeLease(body: Uint8Array, key: string): Lease {
  let raw: unknown;
  try {
    raw = JSON.parse(new TextDecoder().decode(body));
  } catch (e) {
    throw new LsvdError("data", `Cannot read the lease "${key}": ${messageOf(e)}`);
  }
  const l = raw as Partial<Lease>;
  const ok = typeof l === "object" && l !== null && l.version === LEASE_VERSION &&
    typeof l.holder?.host === "string" && Number.isSafeInteger(l.holder?.pid) &&
    typeof l.holder?.nonce === "string" && Number.isSafeInteger(l.epoch) && Number.isFinite(l.acquiredAtMs) &&
    Number.isFinite(l.renewedAtMs) && Number.isFinite(l.durationMs) &&
    Number.isSafeInteger(l.windowObjects) &&
    typeof l.released === "boolean" && optionalFieldsOk(l);
  if (!ok) {
    throw new LsvdError("data", `Cannot read the lease "${key}": it is not a version ${LEASE_VERSION} lease`);
  }
  return l as Lease;
}

/** The fields later lsvd added: absent in older leases, well formed when present. */
function optionalFieldsOk(l: Partial<Lease>): boolean {
  const h = l.holder!;
  const j = l.journal;
  const optional = (v: unknown, ok: (v: unknown) => boolean) => v === undefined || ok(v);
  const isString = (v: unknown) => typeof v === "string";
  return optional(h.bootId, isString) && optional(h.pidNamespace, isString) &&
    optional(h.startTime, Number.isSafeInteger) &&
    optional(j, () => typeof j?.host === "string" && typeof j.dir === "string" && typeof j.id === "string");
}

/** The volume's lease and its ETag, or undefined when none was ever taken. For `lsvd info` too. */
export async function readLease(store: ObjectStore, prefix: string): Promise<StoredLease | undefined> {
  const key = leaseKey(prefix);
  try {
    const got = await store.get(key);
    if (got.etag === undefined) {
      throw new LsvdError("unavailable", `Cannot read the lease "${key}": the store gave no ETag`);
    }
    return { lease: decodeLease(got.body, key), etag: got.etag };
  } catch (e) {
    if (isStoreError(e, "NotFound")) return undefined;
    throw e;
  }
}

/**
 * One line about a lease for users, as of `wallNowMs` (this machine's clock), in the states
 * `lsvd info` uses: `host h pid 12 (epoch 4) since <time>, renewed <time> (2 s ago), held until
 * <time>`; `..., lapsed at <time>`; `..., broken by 'lsvd lease break'`; `..., released`.
 */
export function describeLease(lease: Lease, wallNowMs: number = Date.now()): string {
  const at = (ms: number) => new Date(ms).toISOString();
  const who = `host ${lease.holder.host} pid ${lease.holder.pid} (epoch ${lease.epoch}) since ${
    at(lease.acquiredAtMs)
  }`;
  if (lease.released) return `${who}, released`;
  if (leaseBroken(lease)) return `${who}, broken by 'lsvd lease break'`;
  const ago = Math.floor((wallNowMs - lease.renewedAtMs) / 1000);
  const renewed = `renewed ${at(lease.renewedAtMs)}${ago >= 0 ? ` (${ago} s ago)` : ""}`;
  const endMs = lease.renewedAtMs + lease.durationMs;
  return leaseLapsed(lease, wallNowMs)
    ? `${who}, ${renewed}, lapsed at ${at(endMs)}`
    : `${who}, ${renewed}, held until ${at(endMs)}`;
}

/** Broken by `lsvd lease break` (which zeroes its renewal time and duration). */
export function leaseBroken(lease: Lease): boolean {
  return !lease.released && lease.renewedAtMs === 0 && lease.durationMs === 0;
}

/** True when the lease's own wall-clock times say it is over (released, or not renewed in time). */
export function leaseLapsed(lease: Lease, wallNowMs: number): boolean {
  return lease.released || wallNowMs >= lease.renewedAtMs + lease.durationMs;
}

/**
 * Claims the next writer epoch: one above the highest `epoch/` key and above `atLeast`, with a
 * create-only PUT; a 412 means another writer took that number, so try the next.
 */
export async function claimEpoch(
  store: ObjectStore,
  prefix: string,
  options: { atLeast?: number | undefined; holder: LeaseHolder },
): Promise<number> {
  let highest = options.atLeast ?? 0;
  for await (const o of listAll(store, { prefix: epochPrefix(prefix) })) {
    highest = Math.max(highest, parseEpochKey(prefix, o.key) ?? 0);
  }
  const body = encoder.encode(`${JSON.stringify(options.holder)}\n`);
  for (let epoch = highest + 1;; epoch++) {
    try {
      await store.put(epochKey(prefix, epoch), body, { ifNoneMatch: true });
      return epoch;
    } catch (e) {
      if (!isStoreError(e, "PreconditionFailed")) throw e;
    }
  }
}

/**
 * Takes the lease for a writer: refuses a live holder in one line (unless told to take over, or
 * to wait for it as a standby), refuses a lease that records another write-back journal (unless
 * told to abandon it), claims a fresh epoch and writes the lease conditionally. A holder this
 * machine proves gone (src/util/lease_holder.ts) is replaced without --takeover. Says in one line
 * whose lease it took and why. Exported for every writing tool (serve, rollback, import).
 */
export async function acquireLease(
  store: ObjectStore,
  prefix: string,
  options: AcquireOptions,
): Promise<AcquiredLease> {
  const mode = options.mode ?? "refuse";
  const processes = options.processes ?? localProcesses();
  const holder = options.holder ?? currentHolder(processes);
  const durationMs = options.durationMs ?? LEASE_DURATION_MS_DEFAULT;
  let claimed: number | undefined;
  for (;;) {
    const read = await readLease(store, prefix);
    const found = read === undefined || read.lease.released
      ? { current: read, taking: undefined }
      : await mayTake(store, prefix, read, { mode, holder, processes, options });
    if (found === undefined) continue; // deleted or changed hands: look again
    /** The line to print once the lease is ours: whose it was and why we could take it. */
    const { current, taking } = found;
    checkJournal(current?.lease, holder, options);
    // An epoch claimed in an earlier round (the lease changed under us) is ours: keep it if still newest.
    if (claimed === undefined || claimed <= (current?.lease.epoch ?? 0)) {
      claimed = await claimEpoch(store, prefix, { holder, atLeast: current?.lease.epoch });
    }
    const epoch = claimed;
    const wallMs = options.clock.wallMs();
    const previousWindow = current === undefined || current.lease.released ? 0 : current.lease.windowObjects;
    const lease: Lease = {
      version: LEASE_VERSION,
      holder,
      epoch,
      acquiredAtMs: wallMs,
      renewedAtMs: wallMs,
      durationMs,
      windowObjects: Math.max(options.windowObjects, previousWindow),
      released: false,
    };
    if (options.journal !== undefined) lease.journal = { host: holder.host, ...options.journal };
    const validFromMs = options.clock.nowMs();
    try {
      const condition = current === undefined ? { ifNoneMatch: true } : { ifMatch: current.etag };
      const { etag } = await store.put(leaseKey(prefix), encodeLease(lease), condition);
      if (taking !== undefined) options.log(taking);
      const abandoned = current?.lease.journal;
      if (abandoned !== undefined && abandoned.id !== options.journal?.id) {
        options.log(
          `Abandoned journal ${abandoned.dir} on host ${abandoned.host} (--abandon-journal): ` +
            "acknowledged writes only it held are lost.",
        );
      }
      return { stored: { lease, etag }, previous: current?.lease, validFromMs };
    } catch (e) {
      if (!isStoreError(e, "PreconditionFailed")) throw e;
      options.log("The lease changed while taking it; reading it again.");
    }
  }
}

/**
 * A lease someone holds: whether we may take it (lapsed, its holder proven gone, --takeover, or
 * --standby once it lapses) and the line saying why; refused in one line otherwise. Undefined when
 * it was deleted or changed hands while we stood by: look again.
 */
async function mayTake(
  store: ObjectStore,
  prefix: string,
  current: StoredLease,
  { mode, holder, processes, options }: {
    mode: LeaseMode;
    holder: LeaseHolder;
    processes: ProcessTable;
    options: AcquireOptions;
  },
): Promise<{ current: StoredLease; taking: string | undefined } | undefined> {
  const lease = current.lease;
  const wallNowMs = options.clock.wallMs();
  const state = holderState(lease.holder, processes);
  if (leaseLapsed(lease, wallNowMs)) {
    return {
      current,
      taking: `Taking the volume over from ${describeLease(lease, wallNowMs)}; fencing its uploads.`,
    };
  } else if (state.gone) {
    return {
      current,
      taking: `Took over the lease of pid ${lease.holder.pid} on this host, ${
        goneText(lease.holder, state)
      }; fencing its uploads.`,
    };
  } else if (mode === "refuse") {
    throw new LsvdError(
      "fenced",
      `Cannot open the volume for writing: it is held by ${describeLease(lease, wallNowMs)}; ` +
        "stop that daemon, or pass --takeover to fence it, or --standby to wait for it",
    );
  } else if (mode === "takeover") {
    checkJournal(current.lease, holder, options);
    return {
      current,
      taking: `Taking the volume over from ${
        describeLease(lease, wallNowMs)
      } (--takeover); fencing its uploads.`,
    };
  } else {
    checkJournal(current.lease, holder, options); // before waiting, not only after
    const lapsed = await waitForLapse(store, prefix, current, options);
    if (lapsed === undefined) return undefined; // deleted or changed hands: look again
    return {
      current: lapsed,
      taking: lapsed.lease.released
        ? undefined
        : `Taking the volume over from ${
          describeLease(lapsed.lease, options.clock.wallMs())
        }, which stopped renewing it (--standby); fencing its uploads.`,
    };
  }
}

/**
 * A lease that records a write-back journal other than ours: its writer may have acknowledged
 * FLUSHes that only that journal holds. Refused in one line naming the journal's host and
 * directory, unless the caller abandons it. (Never advises --journal-discard: that drops the
 * journal given to this start, not the one recorded.)
 */
function checkJournal(lease: Lease | undefined, holder: LeaseHolder, options: AcquireOptions): void {
  const recorded = lease?.journal;
  if (lease === undefined || recorded === undefined || recorded.id === options.journal?.id) return;
  if (options.abandonJournal) return;
  const ours = options.journal === undefined
    ? ""
    : options.journal.dir === recorded.dir && holder.host === recorded.host
    ? ` (--journal ${options.journal.dir} is not that journal any more: it was emptied or made anew)`
    : ` (--journal ${options.journal.dir}${
      holder.host === recorded.host ? "" : ` on host ${holder.host}`
    } is another journal)`;
  throw new LsvdError(
    "invalid",
    `Cannot open the volume for writing: journal ${recorded.dir} on host ${recorded.host} (writer pid ${lease.holder.pid}, ` +
      `epoch ${lease.epoch}) may hold acknowledged writes that are not in the store yet${ours}; start ` +
      `'lsvd serve --journal ${recorded.dir}' on ${recorded.host} to replay them, or pass --abandon-journal ` +
      "to go on without them (they are lost)",
  );
}

/**
 * Standby: polls until the lease lapses: its own times say so, or it stays unchanged for a whole
 * duration on this process's clock (which needs no agreement between clocks). Returns the lapsed
 * lease to take over with If-Match, or undefined when it was deleted.
 */
async function waitForLapse(
  store: ObjectStore,
  prefix: string,
  seen: StoredLease,
  options: AcquireOptions,
): Promise<StoredLease | undefined> {
  options.log(`Standing by: the volume is held by ${describeLease(seen.lease, options.clock.wallMs())}.`);
  const pollMs = options.pollMs ?? Math.max(1, Math.floor(seen.lease.durationMs / 10));
  let unchangedSinceMs = options.clock.nowMs();
  let etag = seen.etag;
  for (;;) {
    await options.clock.sleep(pollMs);
    await options.whileWaiting?.();
    const now = await readLease(store, prefix);
    if (now === undefined) return undefined;
    if (now.etag !== etag) {
      etag = now.etag;
      unchangedSinceMs = options.clock.nowMs();
    }
    const stale = options.clock.nowMs() - unchangedSinceMs > now.lease.durationMs;
    if (stale || leaseLapsed(now.lease, options.clock.wallMs())) return now;
  }
}

export interface LeaseKeeperOptions {
  clock: Clock;
  log: Logger;
  /** Called once when the lease is lost (another writer took it): the writer must stop. */
  onLost: (error: LsvdError) => void;
  /** Called after each successful renewal (flushes held back while the lease was not valid proceed). */
  onRenewed?: () => void;
}

/**
 * Keeps a taken lease: renews it every third of its duration with If-Match, tracks until when it
 * is valid, and reports its loss. A renewal that fails transiently is retried soon; the lease just
 * stops being valid meanwhile, and flushes wait.
 */
export class LeaseKeeper {
  /** Renewals: one attempt each (a failed one retries on its timer). */
  readonly #store: RetryingStore;
  /** Explicit writes (release, lapse): WRITE_ATTEMPTS_MAX attempts, ended early by giveUp(). */
  readonly #writes: RetryingStore;
  readonly #prefix: string;
  readonly #options: LeaseKeeperOptions;
  #lease: Lease;
  #etag: string;
  #validUntilMs: number;
  #timer: Timer | undefined;
  #writing: Promise<void> | undefined;
  /** A write whose outcome is unknown (it failed transiently): retried as is before anything new. */
  #pending: { lease: Lease; body: Uint8Array; startMs: number } | undefined;
  #lost: LsvdError | undefined;
  #stopped = false;
  /** A renewal failed; the next attempt waits for its timer. */
  #retrying = false;
  /** Retries the explicit writes' store made (a retried PUT may have landed long ago). */
  #putsRetried = 0;
  /** Set by giveUp(): explicit writes stop retrying. */
  #gaveUp: LsvdError | undefined;

  constructor(store: ObjectStore, prefix: string, acquired: AcquiredLease, options: LeaseKeeperOptions) {
    this.#store = retrying(store, { clock: options.clock, attemptsMax: 1 });
    this.#writes = retrying(store, {
      clock: options.clock,
      attemptsMax: WRITE_ATTEMPTS_MAX,
      abort: () => this.#gaveUp,
      onRetry: () => this.#putsRetried++,
    });
    this.#prefix = prefix;
    this.#options = options;
    this.#lease = acquired.stored.lease;
    this.#etag = acquired.stored.etag;
    this.#validUntilMs = acquired.validFromMs + this.#lease.durationMs;
    this.#schedule(this.#lease.durationMs / 3);
  }

  get lease(): Lease {
    return this.#lease;
  }

  get epoch(): number {
    return this.#lease.epoch;
  }

  /** The error the writer failed with, once the lease is lost. */
  get lost(): LsvdError | undefined {
    return this.#lost;
  }

  /** True while this holder may acknowledge flushes. */
  isValid(): boolean {
    return this.#lost === undefined && this.#options.clock.nowMs() < this.#validUntilMs;
  }

  /**
   * Renews now and resolves only if the lease is still ours: before a step that cannot be made
   * conditional (deleting objects), so a writer frozen since it last checked learns it lost the
   * volume instead of deleting what its successor wrote. Throws the fenced error otherwise.
   */
  async confirm(): Promise<void> {
    await this.#writeRetried({ ...this.#lease });
  }

  /** Rewrites the lease now with changes (epoch raised, window lowered once the fence is written). */
  async update(changes: Partial<Pick<Lease, "epoch" | "windowObjects">>): Promise<void> {
    await this.#writeRetried({ ...this.#lease, ...changes });
  }

  /**
   * Clean shutdown: marks the lease released so the next writer need not fence. The journal it
   * records is dropped only when `journalEmpty` says the journal was emptied into the store: a
   * start that gives up early must leave the next start the same refusal.
   */
  async release(options: { journalEmpty?: boolean } = {}): Promise<void> {
    this.#stop();
    await this.#writing?.catch(() => {});
    if (this.#lost !== undefined) return;
    const { journal, ...rest } = this.#lease;
    const next: Lease = options.journalEmpty || journal === undefined ? rest : { ...rest, journal };
    await this.#writeRetried({ ...next, released: true });
  }

  /**
   * Gives up a release or lapse still retrying (a shutdown whose store does not answer): its
   * retry loop ends at the next attempt. The lease then lapses by itself; the next writer fences.
   */
  giveUp(): void {
    this.#stop();
    this.#gaveUp ??= new LsvdError("closed", "Gave up writing the lease: the writer stopped");
  }

  /**
   * Gives the lease up at once without claiming our uploads finished (a start that failed after the
   * fence began): the next writer takes it without --takeover and still fences.
   */
  async lapse(): Promise<void> {
    this.#stop();
    await this.#writing?.catch(() => {});
    if (this.#lost !== undefined) return;
    await this.#writeRetried({ ...this.#lease, durationMs: 0 });
  }

  /** Stops renewing without releasing (a crash, or after the lease was lost). */
  stop(): void {
    this.#stop();
  }

  #stop(): void {
    this.#stopped = true;
    this.#timer?.cancel();
    this.#timer = undefined;
  }

  /**
   * A FLUSH is held because the lease is not valid (the process was paused, or the clock jumped past
   * the next renewal): renew now instead of at the next timer, unless a write is already under way
   * or a failed renewal waits for its retry.
   */
  renewSoon(): void {
    if (this.#stopped || this.#lost !== undefined || this.#writing !== undefined || this.#retrying) return;
    this.#timer?.cancel();
    this.#timer = undefined;
    this.#renew();
  }

  #schedule(ms: number): void {
    if (this.#stopped || this.#lost !== undefined) return;
    this.#timer = this.#options.clock.setTimer(ms, () => {
      this.#timer = undefined;
      this.#renew();
    });
  }

  #renew(): void {
    if (this.#stopped || this.#lost !== undefined) return;
    this.#write(undefined).then(
      () => {
        this.#retrying = false;
        // A renewal that started before a pause (or a clock jump) ends already lapsed: renew again.
        if (this.isValid()) this.#schedule(this.#lease.durationMs / 3);
        else this.#renew();
      },
      (e) => {
        if (this.#lost !== undefined) return;
        this.#retrying = true;
        // An outage is reported by the store's health lines; only other failures are news.
        if (!isStoreError(e, "Transient")) {
          this.#options.log(`Cannot renew the lease: ${messageOf(e)}; retrying.`);
        }
        this.#schedule(this.#lease.durationMs / 30);
      },
    );
  }

  /** #write with the store retry loop (transient failures are retried with the same bytes first). */
  #writeRetried(next: Lease): Promise<void> {
    return this.#write(next, this.#writes);
  }

  /**
   * Writes the lease conditionally (serialised): `next`, or a plain renewal when undefined. A write
   * that failed transiently may have landed, so it is retried with the very same bytes before
   * anything new (the store accepts identical bytes as our own landed write); its validity counts
   * from its first attempt. A 412 means the lease was taken from us.
   */
  async #write(next: Lease | undefined, store = this.#store): Promise<void> {
    while (this.#writing !== undefined) await this.#writing.catch(() => {});
    if (this.#lost !== undefined) throw this.#lost;
    const run = async () => {
      let queued = next;
      for (;;) {
        const retriedBefore = this.#putsRetried;
        let retried = this.#pending !== undefined;
        if (this.#pending === undefined) {
          const lease = { ...(queued ?? this.#lease), renewedAtMs: this.#options.clock.wallMs() };
          this.#pending = { lease, body: encodeLease(lease), startMs: this.#options.clock.nowMs() };
          queued = undefined;
        }
        const pending = this.#pending;
        let etag: string;
        try {
          etag = (await store.put(leaseKey(this.#prefix), pending.body, { ifMatch: this.#etag })).etag;
          if (this.#putsRetried !== retriedBefore) retried = true;
        } catch (e) {
          if (!isStoreError(e, "PreconditionFailed")) throw e;
          this.#pending = undefined;
          await this.#loseTo(await readLease(this.#store, this.#prefix).catch(() => undefined));
          throw this.#lost;
        }
        this.#pending = undefined;
        this.#lease = pending.lease;
        this.#etag = etag;
        this.#validUntilMs = pending.startMs + pending.lease.durationMs;
        this.#options.onRenewed?.();
        // A retried write may have landed long ago: renew afresh so validity counts from now.
        if (retried) queued ??= this.#lease;
        else if (queued === undefined) return;
      }
    };
    this.#writing = run().finally(() => (this.#writing = undefined));
    await this.#writing;
  }

  async #loseTo(now: StoredLease | undefined): Promise<void> {
    if (this.#lost !== undefined) return;
    this.#lost = fencedError(
      `Cannot keep writing the volume: ${
        lostReason(now?.lease, this.#lease.holder, this.#options.clock.wallMs())
      }`,
    );
    this.#stop();
    this.#options.onLost(this.#lost);
    await Promise.resolve();
  }
}

/**
 * Why a holder's lease is no longer its own, from the lease found after a 412: another writer took
 * it, or (still naming this holder) it was broken by `lsvd lease break` or rewritten by hand.
 */
export function lostReason(now: Lease | undefined, ours: LeaseHolder, wallNowMs: number): string {
  if (now === undefined) return "the lease was deleted";
  if (now.holder.nonce !== ours.nonce || now.holder.pid !== ours.pid || now.holder.host !== ours.host) {
    return `the volume was taken over by ${describeLease(now, wallNowMs)}`;
  }
  if (leaseBroken(now)) {
    return "its lease was broken ('lsvd lease break'); the next writer takes the volume without --takeover and fences this one";
  }
  if (now.released) return "its lease was marked released by another process";
  return "its lease was changed by another process";
}

/** The error of a writer that lost the volume to another (kind "fenced": EIO to clients, exit 1). */
export function fencedError(message: string): LsvdError {
  return new LsvdError("fenced", message);
}

/**
 * `lsvd lease break`: for an operator who knows the holder is dead. Marks the lease lapsed (never
 * released: the holder's uploads may still be in flight, so the next writer fences them), keeping
 * the journal it records (a start without that journal is still refused). Written with If-Match on
 * the lease the caller looked at: one renewed or taken meanwhile is not broken.
 */
export async function breakLease(
  store: ObjectStore,
  prefix: string,
  seen: StoredLease,
): Promise<void> {
  const broken = { ...seen.lease, renewedAtMs: 0, durationMs: 0 };
  try {
    await store.put(leaseKey(prefix), encodeLease(broken), { ifMatch: seen.etag });
  } catch (e) {
    if (!isStoreError(e, "PreconditionFailed")) throw e;
    throw new LsvdError(
      "invalid",
      "Cannot break the lease: it changed while breaking it (renewed or taken over); see 'lsvd lease show'",
    );
  }
}

/**
 * Why `lsvd lease break` without --force must not break this lease, or undefined when it may: a
 * lease that is not lapsed by its own times looks live unless this machine proves its holder gone.
 */
export function breakRefusal(lease: Lease, wallNowMs: number, processes: ProcessTable): string | undefined {
  if (lease.released || leaseLapsed(lease, wallNowMs) || holderState(lease.holder, processes).gone) {
    return undefined;
  }
  const at = (ms: number) => new Date(ms).toISOString();
  const ago = Math.max(0, Math.round((wallNowMs - lease.renewedAtMs) / 1000));
  return `Cannot break the lease: it looks live: host ${lease.holder.host} pid ${lease.holder.pid} (epoch ${lease.epoch}) ` +
    `renewed it ${ago} s ago (${at(lease.renewedAtMs)}), valid until ${
      at(lease.renewedAtMs + lease.durationMs)
    }; ` +
    "stop that daemon, or start the new one with --takeover (which fences it), or pass --force if you know it is dead";
}
