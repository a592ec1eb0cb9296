/**
 * @module
 * Bounded, ordered concurrency: start up to N reads at once, consume their results strictly in
 * input order. Used wherever a log is read (replay, verify, export) so many GETs are in flight
 * while results are still applied one object after the other.
 */

/** Runs read() with at most `concurrency` in flight and hands results to use() in input order. */
export async function readInOrder<T, R>(
  items: readonly T[],
  concurrency: number,
  read: (item: T, index: number) => Promise<R>,
  use: (item: T, result: R, index: number) => void | Promise<void>,
): Promise<void> {
  const pending: Promise<R>[] = [];
  let next = 0;
  const launch = () => {
    while (next < items.length && pending.length < concurrency) {
      const p = read(items[next]!, next);
      p.catch(() => {}); // observed when awaited below, in order
      pending.push(p);
      next++;
    }
  };
  launch();
  for (let done = 0; done < items.length; done++) {
    const result = await pending.shift()!;
    await use(items[done]!, result, done);
    launch();
  }
}

/** Runs work(item) for every item with at most `concurrency` in flight, in any order of completion. */
export async function forEachBounded<T>(
  items: readonly T[],
  concurrency: number,
  work: (item: T, index: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  let failed = false;
  const worker = async () => {
    while (!failed && next < items.length) {
      const i = next++;
      try {
        await work(items[i]!, i);
      } catch (e) {
        failed = true; // the other workers stop taking items; the first error is reported
        throw e;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, items.length)) }, worker));
}
