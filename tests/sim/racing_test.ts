import { simulateRacing } from "./racing.ts";

const SEEDS = Number(Deno.env.get("LSVD_RACE_SEEDS") ?? 2000);
const FIRST = Number(Deno.env.get("LSVD_RACE_SEED") ?? 1);

Deno.test(`simulateRacing() loses no acknowledged flush, forks no log, and its follower serves only surviving points, with racing writers (${SEEDS} seeds from ${FIRST})`, async () => {
  const totals = {
    writers: 0,
    takeovers: 0,
    standbys: 0,
    pauses: 0,
    crashes: 0,
    fencedWriters: 0,
    acknowledgedFlushes: 0,
    followedPoints: 0,
  };
  for (let seed = FIRST; seed < FIRST + SEEDS; seed++) {
    try {
      const r = await simulateRacing({ seed });
      for (const k of Object.keys(totals) as (keyof typeof totals)[]) totals[k] += r[k];
    } catch (e) {
      console.error(
        `racing simulation failed with seed ${seed}; replay: LSVD_RACE_SEED=${seed} LSVD_RACE_SEEDS=1 deno test -A tests/sim/racing_test.ts`,
      );
      throw e;
    }
  }
  console.log(`${SEEDS} seeds: ${JSON.stringify(totals)}`);
});
