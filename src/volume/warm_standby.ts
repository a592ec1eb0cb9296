/**
 * @module
 * A warm standby (`serve --standby`): while it waits for the holder's lease to lapse, it loads the
 * log once and follows it (src/log/tail.ts: one LIST from its newest object, gap-free objects applied
 * in order), holding a follower pin so the holder's garbage collection keeps what its map reads
 * (docs/design/followers.md). Once it holds the lease and has fenced the old writer, it catches up
 * from where it was (the old writer's last objects and its own fence objects) instead of loading the
 * log again from a checkpoint. Anything unusual on the way falls back to the cold load, which is
 * always right: a gap or a lower epoch after the fence (collected numbers or zombies: only a full
 * listing tells them apart, and repair must not archive on a guess), a position that no longer holds,
 * a pin that may have lapsed, a failed follow step.
 */

import type { LoadedLog } from "../log/load.ts";
import type { LogState } from "../log/log_state.ts";
import { FOLLOWER_PIN_TTL_MS, type FollowerPin, holdFollowerPin } from "../log/snapshots.ts";
import { advanceLoaded, positionOf, tailLog, type TailStep } from "../log/tail.ts";
import { isStoreError } from "../store/store.ts";
import { isLsvdError, messageOf } from "../util/errors.ts";
import type { ResolvedVolumeOptions } from "./volume_options.ts";

/** Objects one follow step reads at most. */
const OBJECTS_PER_STEP_MAX = 1024;

export class WarmLog {
  #o: ResolvedVolumeOptions;
  #state: LogState;
  #loaded: LoadedLog;
  #pin: FollowerPin | undefined;
  /** Why the followed log can no longer be trusted (then the cold load is used). */
  #stale: string | undefined;
  #followed = 0;
  /** A standby's log (followed while it waited), not one loaded after the lease. */
  #warm = false;

  private constructor(
    o: ResolvedVolumeOptions,
    log: { state: LogState; loaded: LoadedLog },
  ) {
    this.#o = o;
    this.#state = log.state;
    this.#loaded = log.loaded;
  }

  /**
   * A log a writer loaded after taking the lease, followed only across its own fence (no pin: the
   * old writer can no longer delete anything). What a cold takeover catches up with.
   */
  static afterLease(
    o: ResolvedVolumeOptions,
    log: { state: LogState; loaded: LoadedLog },
  ) {
    return new WarmLog(o, log);
  }

  /** Wraps a log loaded (read-only) before the lease, and pins its point. */
  static async start(
    o: ResolvedVolumeOptions,
    log: { state: LogState; loaded: LoadedLog },
  ): Promise<WarmLog> {
    const warm = new WarmLog(o, log);
    warm.#warm = true;
    await warm.#writePin().catch((e) => {
      if (!isLsvdError(e) && !isStoreError(e)) throw e;
      warm.#stale = `its follower pin could not be written: ${messageOf(e)}`;
    });
    return warm;
  }

  /** The followed log as it stands (undefined once it cannot be trusted). */
  get current(): { state: LogState; loaded: LoadedLog } | undefined {
    return this.#stale === undefined ? { state: this.#state, loaded: this.#loaded } : undefined;
  }

  /** Why the followed log cannot be used (undefined while it can). */
  get staleReason(): string | undefined {
    return this.#stale;
  }

  /** One follow step while standing by; a failure only makes the takeover cold. */
  async follow(): Promise<void> {
    if (this.#stale !== undefined) return;
    try {
      const step = await this.#step();
      if (step.reload !== undefined) {
        this.#stale = step.reload;
        return;
      }
      if (step.objects.length > 0) {
        advanceLoaded(this.#loaded, step);
        this.#followed += step.objects.length;
      }
      const due = (this.#pin?.writtenMs ?? 0) + FOLLOWER_PIN_TTL_MS / 20;
      if (step.objects.length > 0 || this.#o.clock.wallMs() >= due) await this.#writePin();
    } catch (e) {
      if (!isLsvdError(e) && !isStoreError(e)) throw e;
      this.#stale = `following the log failed: ${messageOf(e)}`;
    }
  }

  /**
   * Right before the fence: applies every gap-free object there is now, so the fence starts where a
   * load now would end (its objects carry the size of the newest one). A gap is normal here.
   */
  async drain(): Promise<void> {
    while (this.#stale === undefined) {
      const step = await this.#step();
      if (step.reload !== undefined) this.#stale = step.reload;
      else if (step.objects.length === 0) return;
      else {
        advanceLoaded(this.#loaded, step);
        this.#followed += step.objects.length;
      }
    }
  }

  /**
   * After the fence: applies what the old writer left and the fence objects, and returns the log as a
   * load now would give it; undefined (with one line why) when the cold load must be used instead.
   */
  async catchUp(): Promise<{ state: LogState; loaded: LoadedLog } | undefined> {
    const pin = this.#pin;
    const lapsed = pin !== undefined && this.#o.clock.wallMs() >= pin.writtenMs + FOLLOWER_PIN_TTL_MS;
    if (lapsed) this.#stale ??= "its follower pin lapsed";
    for (;;) {
      if (this.#stale !== undefined) break;
      const step = await this.#step();
      if (step.reload !== undefined) this.#stale = step.reload;
      else if (step.objects.length > 0) {
        advanceLoaded(this.#loaded, step);
        this.#followed += step.objects.length;
      } else if (step.gapAt !== undefined) {
        this.#stale = `object ${step.gapAt} is missing or older than the one before it`;
      } else break;
    }
    if (this.#stale !== undefined) {
      const whose = this.#warm ? "the standby's followed log" : "the log loaded before the fence";
      this.#o.log(`Loading the log again (${whose} cannot be used: ${this.#stale}).`);
      return undefined;
    }
    if (this.#warm) {
      this.#o.log(
        `Taking over warm: followed ${this.#followed} objects while standing by, up to object ${this.#loaded.lastSequence}.`,
      );
    }
    return { state: this.#state, loaded: this.#loaded };
  }

  /** Deletes the pin (best effort: a stale pin is ignored anyway). */
  async release(): Promise<void> {
    await this.#pin?.release();
    this.#pin = undefined;
  }

  #step(): Promise<TailStep> {
    return tailLog(this.#o.store, this.#o.prefix, positionOf(this.#loaded), {
      concurrency: this.#o.recoveryConcurrency,
      objectsMax: OBJECTS_PER_STEP_MAX,
    });
  }

  /** Pins the followed point (nothing reads an older map: a standby serves nothing). */
  async #writePin(): Promise<void> {
    const at = this.#loaded.lastSequence;
    if (at < 1) return;
    if (this.#pin === undefined) {
      this.#pin = await holdFollowerPin(this.#o.store, this.#o.prefix, at, {
        clock: this.#o.clock,
        id: crypto.randomUUID().replaceAll("-", "").slice(0, 16),
      });
    } else await this.#pin.write(at);
  }
}
