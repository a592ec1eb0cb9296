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
