import assert from "node:assert/strict";
import { DirectoryStore } from "../store/directory.ts";
import { isStoreError } from "../store/store.ts";
import { ManualClock } from "../util/clock.ts";
import { silentLogger } from "../util/log.ts";
import { logKey } from "../format/keys.ts";
import { Volume } from "../volume/volume.ts";
import { rollbackCommand } from "./rollback.ts";

const SECTOR = 4096;

Deno.test("rollbackCommand() after an unclean writer fences its window: its late uploads cannot land after the point", async () => {
  const dir = await Deno.makeTempDir({ prefix: "lsvd-rollback-fence-" });
  try {
    const store = new DirectoryStore(dir);
    const clock = new ManualClock(); // its wall clock is in the past: the lease reads as lapsed
    const open = () =>
      Volume.open({
        store,
        clock,
        log: silentLogger,
        sizeBytes: 64 * SECTOR,
        objectBytesMax: SECTOR,
        uploadsMax: 4,
      });
    const v = await open();
    for (let i = 0; i < 12; i++) {
      await v.write(i * SECTOR, new Uint8Array(SECTOR).fill(i + 1));
      await v.flush();
    }
    const point = 6;
    const late = new Map<number, Uint8Array>();
    for (let s = point + 1; s <= point + 4; s++) late.set(s, (await store.get(logKey("", s))).body.slice());
    const end = v.stats.lastSequence;
    v.abandon(); // a crash: the lease is never released

    assert.equal(await rollbackCommand(["--dir", dir, "--to", String(point)], silentLogger), 0);
    // The crashed writer's uploads, landing late, are refused: those it had made of the numbers
    // the rollback freed, and new numbers up to its window past the end of its log.
    const body7 = late.get(point + 1)!;
    for (let s = end + 1; s <= end + 4; s++) late.set(s, body7);
    for (const [s, body] of late) {
      await assert.rejects(
        store.put(logKey("", s), body, { ifNoneMatch: true }),
        (e) => isStoreError(e, "PreconditionFailed"),
        `object ${s}`,
      );
    }
    const after = await open();
    const dest = new Uint8Array(64 * SECTOR);
    await after.read(0, dest);
    assert.equal(dest[0], 1, "the first write (before the point) is there");
    assert.equal(dest[11 * SECTOR], 0, "the last write (after the point) is gone");
    await after.close();
    await store.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
