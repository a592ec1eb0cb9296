import assert from "node:assert/strict";
import { ObjectBuilder } from "../format/object.ts";
import { logKey } from "../format/keys.ts";
import { MemoryStore } from "../store/memory.ts";
import { isLsvdError } from "../util/errors.ts";
import { listLogState } from "./log_state.ts";
import { parsePoint, resolvePoint } from "./point.ts";

const T0 = Date.parse("2026-12-01T10:00:00Z");

/** A log of `count` objects, object n sealed at T0 + n minutes. */
async function logWithSealTimes(count: number): Promise<MemoryStore> {
  const store = new MemoryStore();
  for (let n = 1; n <= count; n++) {
    const b = new ObjectBuilder({ dataBytes: 4096, zeroRanges: 0 });
    b.addEntry(n * 4096, 4096).fill(n);
    const body = b.finish({
      sequence: n,
      writerEpoch: 1,
      volumeSizeBytes: 1 << 20,
      sealTimeMs: T0 + n * 60_000,
    });
    await store.put(logKey("v/", n), body);
  }
  return store;
}

Deno.test("parsePoint() takes object numbers and RFC 3339 times, and refuses anything else", () => {
  assert.deepEqual(parsePoint("12", "--at"), { kind: "sequence", sequence: 12, text: "12" });
  const t = parsePoint("2026-12-01T10:03:30+01:00", "--at");
  assert.equal(t.kind === "time" && t.timeMs, Date.parse("2026-12-01T09:03:30Z"));
  for (const bad of ["0", "-1", "next week", "-x", "2026-12-01", "12abc", ""]) {
    assert.throws(
      () => parsePoint(bad, "--at"),
      (e) => isLsvdError(e, "invalid") && /Invalid --at/.test(e.message),
    );
  }
});

Deno.test("resolvePoint() finds the newest object sealed at or before a time (binary search over trailers)", async () => {
  const store = await logWithSealTimes(37);
  const state = await listLogState(store, "v/");
  for (
    const [time, sequence] of [["10:01:00", 1], ["10:05:59", 5], ["10:06:00", 6], ["10:37:00", 37], [
      "23:00:00",
      37,
    ]]
  ) {
    const r = await resolvePoint(store, state, parsePoint(`2026-12-01T${time}Z`, "--at"));
    assert.equal(r.sequence, sequence, time as string);
    assert.equal(r.sealTimeMs, T0 + (sequence as number) * 60_000);
  }
  await assert.rejects(
    resolvePoint(store, state, parsePoint("2026-12-01T10:00:30Z", "--at")),
    /the first object was sealed later, at 2026-12-01T10:01:00.000Z/,
  );
  assert.equal((await resolvePoint(store, state, parsePoint("9", "--at"))).sequence, 9);
  await assert.rejects(
    resolvePoint(store, state, parsePoint("38", "--at")),
    /the log ends at object 37/,
  );
});

Deno.test("resolvePoint() stops at a gap and says which object is missing", async () => {
  const store = await logWithSealTimes(6);
  await store.delete(logKey("v/", 4));
  const state = await listLogState(store, "v/");
  await assert.rejects(
    resolvePoint(store, state, parsePoint("5", "--at")),
    /the log ends at object 3 \(object 4 is missing\)/,
  );
  const r = await resolvePoint(store, state, parsePoint("2026-12-01T11:00:00Z", "--at"));
  assert.equal(r.sequence, 3);
});
