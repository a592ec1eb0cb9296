/**
 * @module
 * Sequential-read detection. Object stores answer one large ranged GET about as fast as one small
 * one, so once a client reads sequentially lsvd fetches ahead of it in growing windows (the seed
 * relied on aggressive kernel read-ahead for the same reason). A few streams are tracked at once so
 * interleaved sequential readers each get their own window.
 *
 * What is fetched ahead waits in the read cache, so the bytes ahead across all streams are bounded by
 * one budget the caller passes in (ReadPath: half the cache): eight streams at a full window each (a
 * quarter of the cache) would otherwise keep twice the cache in flight, and sectors fetched beyond
 * what the cache holds evict each other before any reader reaches them. A stream that finds the
 * budget spent is not advanced: the next read that finds room fetches what it skipped.
 */

const STREAMS_MAX = 8;

interface Stream {
  /** Where the stream's first read started, and the sectors its reads asked for since. */
  firstSector: number;
  readSectors: number;
  nextSector: number;
  /** Prefetched up to here (exclusive). */
  aheadSector: number;
  windowSectors: number;
  hits: number;
  lastUse: number;
}

export class ReadAhead {
  #streams: Stream[] = [];
  #windowMinSectors: number;
  #windowMaxSectors: number;
  #tick = 0;

  constructor(options: { windowMinSectors: number; windowMaxSectors: number }) {
    this.#windowMinSectors = options.windowMinSectors;
    this.#windowMaxSectors = options.windowMaxSectors;
  }

  /**
   * Records a read; returns the range to prefetch now, if any, at most budgetSectors long (what the
   * caller may still fetch ahead across all streams).
   */
  observe(
    startSector: number,
    lengthSectors: number,
    budgetSectors = Infinity,
  ): { startSector: number; lengthSectors: number } | undefined {
    if (this.#windowMaxSectors === 0) return undefined;
    const end = startSector + lengthSectors;
    this.#tick++;
    // A read belongs to a stream when it starts near where the stream is heading; reads of one
    // sequential client arrive slightly out of order when it keeps several in flight.
    const slack = (s: Stream) => Math.max(s.windowSectors, 4 * lengthSectors);
    const stream = this.#streams.find((s) =>
      startSector >= s.nextSector - slack(s) && startSector <= s.nextSector + slack(s)
    );
    if (stream === undefined) {
      // A new stream takes the least recently used one's place: random reads make one per read,
      // so this allocates nothing once STREAMS_MAX exist.
      const fresh = this.#streams.length < STREAMS_MAX ? {} as Stream : this.#leastRecent();
      fresh.firstSector = startSector;
      fresh.readSectors = lengthSectors;
      fresh.nextSector = end;
      fresh.aheadSector = end;
      fresh.windowSectors = this.#windowMinSectors;
      fresh.hits = 0;
      fresh.lastUse = this.#tick;
      if (this.#streams.length < STREAMS_MAX) this.#streams.push(fresh);
      return undefined;
    }
    stream.lastUse = this.#tick;
    stream.hits++;
    stream.readSectors += lengthSectors;
    stream.firstSector = Math.min(stream.firstSector, startSector);
    stream.nextSector = Math.max(stream.nextSector, end);
    if (stream.hits < 2) return undefined;
    // A sequential reader reads most of the span it moves through, even out of order; random reads
    // that happen to land within a stream's slack do not (at QD128 over a small disk they did 1 in
    // 4 times, and each fetched a window of 1 MiB or more nobody asked for).
    if (stream.readSectors * 2 < stream.nextSector - stream.firstSector) return undefined;
    // Keep a full window ahead of the reader; fetch the missing part, growing the window.
    const from = Math.max(stream.aheadSector, stream.nextSector);
    const target = Math.min(stream.nextSector + stream.windowSectors, from + budgetSectors);
    if (target - from < stream.windowSectors / 2) return undefined;
    stream.aheadSector = target;
    stream.windowSectors = Math.min(this.#windowMaxSectors, stream.windowSectors * 2);
    return { startSector: from, lengthSectors: target - from };
  }

  #leastRecent(): Stream {
    let oldest = this.#streams[0]!;
    for (const s of this.#streams) if (s.lastUse < oldest.lastUse) oldest = s;
    return oldest;
  }
}
