/**
 * @module
 * Repairing a loaded log before writing to it: objects found after the recovery point (after a
 * gap: a crash with uploads in flight) are moved under `archive/<id>/` (copied, then deleted,
 * newest first) so new writes can take their numbers, and checkpoints beyond the point are
 * dropped because they describe objects that are gone. Only a writer calls this; loading alone
 * never changes the bucket.
 */

import { archiveKey } from "../format/keys.ts";
import type { ObjectStore } from "../store/store.ts";
import type { Logger } from "../util/log.ts";
import type { LoadedLog } from "./load.ts";
import type { LoggedObject } from "./log_state.ts";

export interface RepairOptions {
  /** Names the archive folder: repeated archivals never collide. */
  recoveryId: string;
  log: Logger;
}

export async function repairLog(
  store: ObjectStore,
  loaded: LoadedLog,
  options: RepairOptions,
): Promise<void> {
  if (loaded.beyond.length > 0) await archiveObjects(store, loaded.state.prefix, loaded.beyond, options);
  for (const c of loaded.state.checkpoints) {
    if (c.sequence > loaded.lastSequence) await store.delete(c.key);
  }
}

/** Copies each object under archive/<id>/, then deletes the originals newest first. */
export async function archiveObjects(
  store: ObjectStore,
  prefix: string,
  objects: readonly LoggedObject[],
  options: RepairOptions,
): Promise<void> {
  for (const o of objects) {
    await store.copy(o.key, archiveKey(prefix, options.recoveryId, o.sequence));
  }
  // Newest first: a crash halfway leaves a shorter tail after the same gap, never a new prefix.
  for (const o of [...objects].reverse()) await store.delete(o.key);
  options.log(
    `Archived ${objects.length} objects after object ${
      objects[0]!.sequence - 1
    } under archive/${options.recoveryId}/.`,
  );
}
