/**
 * @module
 * A read-only volume that follows the log another daemon writes (`serve --read-only --follow`):
 * every poll lists the log from its newest applied object on and applies what extends that prefix
 * without a gap (src/log/tail.ts), with the rule recovery uses, so a read always sees a state the
 * writer's durable log had. It holds a follower pin (src/log/snapshots.ts) renewed at the point it
 * reached one renewal before, so the writer's garbage collection keeps every point it may still
 * read; it loads the log anew when that can no longer be trusted (a rollback, its newest object
 * gone, its pin lapsed, a gap that garbage collection made, a read that found its object deleted)
 * and says why. Invariants and why they hold: docs/design/followers.md.
 */

import type { ObjectStore } from "../store/store.ts";
import type { Clock, Timer } from "../util/clock.ts";
import { isLsvdError, messageOf } from "../util/errors.ts";
import { isStoreError } from "../store/store.ts";
import type { Logger } from "../util/log.ts";
import { listLogState } from "../log/log_state.ts";
import { FOLLOWER_PIN_TTL_MS, type FollowerPin, holdFollowerPin } from "../log/snapshots.ts";
import { tailLog } from "../log/tail.ts";
import type { Volume } from "./volume.ts";

/** Objects one poll reads at most; a poll that reached it polls again at once. */
const OBJECTS_PER_POLL_MAX = 256;

export interface FollowerOptions {
  /** The volume's store, retried (a RetryingStore: src/store/retry.ts). */
  store: ObjectStore;
  prefix: string;
  clock: Clock;
  log: Logger;
  /** Time between polls. */
  intervalMs: number;
  /** Header reads in flight at once. */
  concurrency?: number;
  /** Hold a follower pin (false only for tests of what happens without one). */
  pin?: boolean;
  pinTtlMs?: number;
  /** The pin is rewritten this often (default: ten polls, within [1 s, a twentieth of its lifetime]). */
  pinEveryMs?: number;
  /** A gap that stays this long makes the follower list the whole log (was it collected?). */
  gapCheckMs?: number;
  /** Random by default; names the pin key. */
  id?: string;
}

export interface FollowerStats {
  /** The newest object applied. */
  appliedSequence: number;
  /** Objects listed beyond it at the last poll (after a gap, or not read yet). */
  behindObjects: number;
  /** Every object the writer had stored without a gap this long ago is applied. */
  behindSeconds: number;
  polls: number;
  reloads: number;
  /** Failed polls (store unreachable); the follower keeps serving its last state meanwhile. */
  failedPolls: number;
}

export class Follower {
  #v: Volume;
  #o: FollowerOptions & { pinTtlMs: number; pinEveryMs: number; gapCheckMs: number; id: string };
  #pin: FollowerPin | undefined;
  #pinFailed = false;
  /** The point at the last pin write: the next write pins it (reads of older maps are long done). */
  #pointAtLastPin = 0;
  #timer: Timer | undefined;
  #polling: Promise<void> | undefined;
  #reloading: Promise<void> | undefined;
  /** Bumped by every reload: a poll that started before one throws its step away. */
  #generation = 0;
  #stopped = false;
  #failing = false;
  #gap: { at: number; sinceMs: number } | undefined;
  #caughtUpWallMs: number;
  #stats = { behindObjects: 0, polls: 0, reloads: 0, failedPolls: 0 };

  constructor(volume: Volume, options: FollowerOptions) {
    const pinTtlMs = options.pinTtlMs ?? FOLLOWER_PIN_TTL_MS;
    this.#v = volume;
    this.#o = {
      ...options,
      pinTtlMs,
      // Often enough that the pin holds GC back by little more than the follower lags, rarely
      // enough to cost little: ten polls, at least a second, at most a twentieth of its lifetime.
      pinEveryMs: options.pinEveryMs ?? Math.min(pinTtlMs / 20, Math.max(1000, 10 * options.intervalMs)),
      gapCheckMs: options.gapCheckMs ?? Math.max(10_000, 10 * options.intervalMs),
      id: options.id ?? crypto.randomUUID().replaceAll("-", "").slice(0, 16),
    };
    this.#caughtUpWallMs = options.clock.wallMs();
  }

  get stats(): FollowerStats {
    return {
      appliedSequence: this.#v.followPosition.sequence,
      behindObjects: this.#stats.behindObjects,
      behindSeconds: Math.max(0, (this.#o.clock.wallMs() - this.#caughtUpWallMs) / 1000),
      polls: this.#stats.polls,
      reloads: this.#stats.reloads,
      failedPolls: this.#stats.failedPolls,
    };
  }

  /** The pin's name (undefined without one). */
  get pinName(): string | undefined {
    return this.#pin?.name;
  }

  /** Takes the pin, then polls every intervalMs until stop(). */
  async start(): Promise<void> {
    this.#v.onObjectGone = (why) => this.reload(`a read found its object deleted (${why})`);
    await this.#writePin();
    this.#schedule(this.#o.intervalMs);
  }

  /** Stops polling, waits for a poll in progress and deletes the pin. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#timer?.cancel();
    await this.#polling?.catch(() => {});
    await this.#reloading?.catch(() => {});
    this.#v.onObjectGone = undefined;
    await this.#pin?.release();
  }

  #schedule(delayMs: number): void {
    if (this.#stopped) return;
    this.#timer = this.#o.clock.setTimer(delayMs, () => {
      this.#timer = undefined;
      this.#polling = this.poll()
        .then((more) => {
          if (this.#failing) {
            this.#o.log(`Following the log again from object ${this.#v.followPosition.sequence}.`);
          }
          this.#failing = false;
          this.#schedule(more ? 0 : this.#o.intervalMs);
        })
        .catch((e) => {
          if (!isLsvdError(e) && !isStoreError(e)) throw e;
          this.#stats.failedPolls++;
          // One line when following stops working (a store outage), one when it works again.
          if (!this.#failing) {
            this.#o.log(
              `Following the log failed: ${
                messageOf(e)
              }; serving object ${this.#v.followPosition.sequence} meanwhile, retrying every poll.`,
            );
          }
          this.#failing = true;
          this.#schedule(this.#o.intervalMs);
        });
    });
  }

  /** One poll (tests call it directly); true when more objects are waiting to be read. */
  async poll(): Promise<boolean> {
    await this.#reloading;
    if (this.#pinLapsed()) {
      await this.reload("its pin lapsed (garbage collection may have deleted what it reads)");
    }
    const generation = this.#generation;
    const listedAtMs = this.#o.clock.wallMs();
    const step = await tailLog(this.#o.store, this.#o.prefix, this.#v.followPosition, {
      concurrency: this.#o.concurrency ?? 16,
      objectsMax: OBJECTS_PER_POLL_MAX,
    });
    this.#stats.polls++;
    if (generation !== this.#generation) return true; // a reload ran meanwhile: poll again from it
    if (step.reload !== undefined) {
      await this.reload(step.reload);
      return true;
    }
    this.#v.applyFollowed(step.objects);
    const at = this.#v.followPosition.sequence;
    this.#stats.behindObjects = Math.max(0, step.listedThrough - at);
    const more = step.objects.length >= OBJECTS_PER_POLL_MAX;
    if (!more) this.#caughtUpWallMs = listedAtMs;
    await this.#checkGap(step.gapAt);
    if (this.#o.clock.wallMs() - (this.#pin?.writtenMs ?? 0) >= this.#o.pinEveryMs) await this.#writePin();
    return more;
  }

  /** Loads the log anew (coalesced: concurrent callers share one load) and says why. */
  reload(why: string): Promise<void> {
    this.#reloading ??= (async () => {
      const before = this.#v.followPosition.sequence;
      this.#o.log(`Loading the log anew at object ${before}: ${why}.`);
      this.#generation++;
      await this.#v.reloadFollowed();
      this.#stats.reloads++;
      this.#gap = undefined;
      this.#o.log(`Following from object ${this.#v.followPosition.sequence} after loading the log anew.`);
      this.#pointAtLastPin = this.#v.followPosition.sequence;
      await this.#writePin();
    })().finally(() => (this.#reloading = undefined));
    return this.#reloading;
  }

  /** True when the pin may be stale for the writer's GC (by our clock: a lapse is only later for it). */
  #pinLapsed(): boolean {
    if (this.#pin === undefined) return false;
    return this.#o.clock.wallMs() >= this.#pin.writtenMs + this.#o.pinTtlMs;
  }

  /** Writes the pin at the point reached by the previous write (creates it the first time). */
  async #writePin(): Promise<void> {
    if (this.#o.pin === false) return;
    const now = this.#v.followPosition.sequence;
    const at = this.#pin === undefined ? now : Math.min(this.#pointAtLastPin, now);
    if (at < 1) return; // nothing to pin yet: an empty log
    try {
      if (this.#pin === undefined) {
        this.#pin = await holdFollowerPin(this.#o.store, this.#o.prefix, at, {
          clock: this.#o.clock,
          id: this.#o.id,
          ttlMs: this.#o.pinTtlMs,
        });
      } else await this.#pin.write(at);
      this.#pointAtLastPin = now;
      if (this.#pinFailed) this.#o.log(`Follower pin "${this.#pin.name}" renewed at object ${at}.`);
      this.#pinFailed = false;
    } catch (e) {
      if (!isLsvdError(e) && !isStoreError(e)) throw e;
      if (!this.#pinFailed) {
        this.#o.log(`Cannot write the follower pin: ${messageOf(e)}; retrying at the next poll.`);
      }
      this.#pinFailed = true;
    }
  }

  /**
   * A gap that lasts: usually an upload in flight, or a fenced writer's number the fence is about
   * to fill; but garbage collection deletes numbers too (when this follower's pin lapsed). Every
   * gapCheckMs the whole log is listed: if its gap-free end (collected numbers count as present)
   * is past ours, load anew.
   */
  async #checkGap(gapAt: number | undefined): Promise<void> {
    const now = this.#o.clock.wallMs();
    if (gapAt === undefined) {
      this.#gap = undefined;
      return;
    }
    if (this.#gap?.at !== gapAt) this.#gap = { at: gapAt, sinceMs: now };
    if (now - this.#gap.sinceMs < this.#o.gapCheckMs) return;
    this.#gap.sinceMs = now;
    const state = await listLogState(this.#o.store, this.#o.prefix);
    if (state.endSequence >= gapAt) {
      await this.reload(`object ${gapAt} was deleted by garbage collection`);
      return;
    }
    this.#o.log(
      `Waiting at object ${gapAt - 1}: object ${gapAt} is still missing while later ones are stored ` +
        "(an upload in flight, or a writer that stopped: the next writer's fence fills it).",
    );
  }
}
