import assert from "node:assert/strict";
import { encrypted, simulate } from "./simulation.ts";

// 1,000 seeds keep CI within minutes now that every seed also runs GC, snapshots and rollbacks;
// LSVD_SIM_SEEDS=N runs more. Every fifth seed's volume is encrypted (LSVD_SIM_ENCRYPTED=all: every one).
const SEEDS = Number(Deno.env.get("LSVD_SIM_SEEDS") ?? 1000);
const FIRST = Number(Deno.env.get("LSVD_SIM_SEED") ?? 1);

Deno.test(`simulate() keeps every flushed write across random crashes and serves no damaged byte (${SEEDS} seeds from ${FIRST})`, async () => {
  let objects = 0,
    crashes = 0,
    seedsWithDense = 0,
    damagedReads = 0,
    gcDeleted = 0,
    gcCopied = 0,
    rollbacks = 0,
    rescues = 0,
    journalReplays = 0,
    clones = 0,
    encryptedSeeds = 0;
  for (let seed = FIRST; seed < FIRST + SEEDS; seed++) {
    try {
      const r = await simulate({ seed });
      objects += r.objects;
      crashes += r.crashes;
      if (r.denseRegions > 0) seedsWithDense++;
      damagedReads += r.damagedReads;
      gcDeleted += r.gcDeleted;
      gcCopied += r.gcCopied;
      rollbacks += r.rollbacks;
      rescues += r.rescues;
      journalReplays += r.journalReplays;
      clones += r.clones;
      if (encrypted(seed)) encryptedSeeds++;
    } catch (e) {
      console.error(
        `simulation failed with seed ${seed}; replay: LSVD_SIM_SEED=${seed} LSVD_SIM_SEEDS=1 deno test -A tests/sim/`,
      );
      throw e;
    }
  }
  console.log(
    `${SEEDS} seeds, ${crashes} crashes, ${objects} objects, ${seedsWithDense} with dense map regions, ${damagedReads} reads failed by damaged GET answers, ${gcDeleted} objects collected, ${gcCopied} copies made, ${rollbacks} rollbacks (${rescues} rescued data GC had moved), ${journalReplays} restarts replayed a journal, ${clones} clones made, written and flattened, ${encryptedSeeds} seeds encrypted`,
  );
  if (SEEDS >= 100) assert(gcDeleted > 0 && gcCopied > 0, "garbage collection never deleted or copied");
  if (SEEDS >= 100) assert(rollbacks > 0, "no seed rolled back");
  // A rollback past copies GC made needs a pass, a later write and a rollback point in between.
  if (SEEDS >= 500) assert(rescues > 0, "no seed rolled back past data GC had moved");
  if (SEEDS >= 30) assert(clones > 0, "no seed made a clone");
  if (SEEDS >= 30) assert(journalReplays > 0, "no crash left a journal to replay");
  if (SEEDS >= 100) assert(damagedReads > 0, "no read met damage it could not retry away");
  if (SEEDS >= 100) assert(seedsWithDense > 0, "no seed exercised dense extent-map regions");
});
