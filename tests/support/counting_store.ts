/**
 * @module
 * A store that counts calls by method name and otherwise passes everything through: what tests and
 * benches use to show how many requests an operation makes (a clone's do not grow with the source).
 */

import type { ObjectStore } from "../../src/store/store.ts";

export function countingStore(inner: ObjectStore): { store: ObjectStore; counts: Map<string, number> } {
  const counts = new Map<string, number>();
  const store = new Proxy(inner, {
    get(target, prop) {
      const value = Reflect.get(target, prop, target);
      if (typeof value !== "function") return value;
      return (...args: unknown[]) => {
        counts.set(String(prop), (counts.get(String(prop)) ?? 0) + 1);
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  return { store, counts };
}
