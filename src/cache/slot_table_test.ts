/**
 * @module
 * SlotTable against a Map: seeded runs of inserts, deletes and lookups on tables small enough that
 * probe runs wrap around the end and fill to the table's 2/3 bound, so backward-shift deletion meets
 * every case of an entry's home before, inside and after the hole.
 */

import assert from "node:assert/strict";
import { SlotTable } from "./slot_table.ts";
import { seededRandom } from "../util/random.ts";

const EMPTY = -1;

function run(seed: number, slots: number, steps: number): void {
  const random = seededRandom(seed);
  const slotKeys = new Float64Array(slots).fill(EMPTY);
  const table = new SlotTable(slotKeys);
  const model = new Map<number, number>();
  // Keys as the disk cache makes them (sequence × 2^22 + offset), from a small range so they collide.
  const keyAt = () =>
    Math.floor(random() * 40) * 2 ** 22 + Math.floor(random() * 8) + (random() < 0.1 ? 2 ** 52 : 0);
  for (let step = 0; step < steps; step++) {
    const key = keyAt();
    const held = model.get(key);
    if (held !== undefined && random() < 0.5) {
      assert.equal(table.delete(key), true);
      slotKeys[held] = EMPTY;
      model.delete(key);
    } else if (held === undefined && model.size < slots) {
      const slot = slotKeys.indexOf(EMPTY);
      slotKeys[slot] = key;
      table.insert(key, slot);
      model.set(key, slot);
    } else {
      const absent = key + 2 ** 51; // never made by keyAt
      assert.equal(table.get(absent), -1);
      assert.equal(table.delete(absent), false);
    }
    assert.equal(table.size, model.size);
    if (step % 7 === 0) {
      for (const [k, slot] of model) assert.equal(table.get(k), slot, `seed ${seed} step ${step}`);
    }
  }
  for (const [k, slot] of model) assert.equal(table.get(k), slot);
  for (const k of [...model.keys()]) {
    assert.equal(table.delete(k), true);
    slotKeys[model.get(k)!] = EMPTY;
    model.delete(k);
    for (const [k2, slot] of model) assert.equal(table.get(k2), slot);
  }
  assert.equal(table.size, 0);
}

Deno.test("SlotTable agrees with a Map over seeded inserts, deletes and lookups, through wrap-around and full load", () => {
  for (let seed = 1; seed <= 60; seed++) run(seed, 1 + (seed % 23), 2_000);
  run(99, 200, 20_000);
});

Deno.test("SlotTable refuses a key held twice and a slot whose key was not set first", () => {
  const slotKeys = new Float64Array(4).fill(EMPTY);
  const table = new SlotTable(slotKeys);
  slotKeys[0] = 7;
  table.insert(7, 0);
  slotKeys[1] = 7;
  assert.throws(() => table.insert(7, 1), /key held twice/);
  assert.throws(() => table.insert(9, 2), /slotKeys\[slot\] is set before insert/);
  assert.equal(table.delete(9), false);
  assert.equal(table.get(7), 0);
});

Deno.test("SlotTable costs 6 bytes a slot", () => {
  const table = new SlotTable(new Float64Array(262_144));
  assert(table.memoryBytes <= 6 * 262_144 + 4, `${table.memoryBytes}`);
});
