import assert from "node:assert/strict";
import { FifoBudget } from "./fifo_budget.ts";

Deno.test("FifoBudget grants waiters in arrival order, never lets a later one overtake, and drains", async () => {
  let used = 0;
  const budget = FifoBudget.bytes(10, () => used);
  used = 8;
  assert.equal(budget.hasRoom(2), true);
  assert.equal(budget.hasRoom(3), false);
  const order: string[] = [];
  const big = budget.reserve(5).then(() => {
    budget.granted(5);
    used += 5;
    order.push("big");
  });
  // Room for 1 byte exists, but a writer queued first: a small one waits behind it.
  assert.equal(budget.hasRoom(1), false);
  const small = budget.reserve(1).then(() => {
    budget.granted(1);
    used += 1;
    order.push("small");
  });
  let drained = false;
  const drain = budget.drained().then(() => drained = true);
  used = 0;
  budget.wake(false);
  await Promise.all([big, small, drain]);
  assert.deepEqual(order, ["big", "small"]);
  assert.equal(drained, true);
  assert.equal(budget.reservedBytes, 0);
  assert.equal(budget.writersWaiting, 0);
});

Deno.test("FifoBudget.wake(true) releases every waiter without granting bytes", async () => {
  const budget = FifoBudget.bytes(1, () => 1);
  const waiting = [budget.reserve(1), budget.reserve(1)];
  budget.wake(true);
  await Promise.all(waiting);
  budget.granted(1, false);
  budget.granted(1, false);
  assert.equal(budget.reservedBytes, 0);
  assert.equal(budget.writersWaiting, 0);
});
