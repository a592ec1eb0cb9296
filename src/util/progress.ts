/**
 * @module
 * Progress of long work (recovery, export, import, verify, the shutdown flush) in the seed's
 * `lsvd:` style: on a terminal one line that updates in place; otherwise (logs, systemd, pipes) a
 * line every few seconds. Done/total, rate and time left; quiet for work that finishes quickly.
 */

import type { Clock } from "./clock.ts";
import type { Logger } from "./log.ts";

export interface ProgressOptions {
  /** What is being done, e.g. "Replaying the log". */
  what: string;
  /** "objects" or "bytes": bytes are printed in MiB. */
  unit: "objects" | "bytes";
  total: number;
  clock: Clock;
  log: Logger;
  /** Write an updating line to this terminal instead of log lines. */
  terminal?: { write(text: string): void } | undefined;
  /** Between lines when not on a terminal (default 5 s); nothing is printed before the first. */
  everyMs?: number;
}

export class Progress {
  #o: ProgressOptions;
  #startMs: number;
  #lastMs: number;
  #done = 0;
  #printedOnTerminal = false;

  constructor(options: ProgressOptions) {
    this.#o = options;
    this.#startMs = this.#lastMs = options.clock.nowMs();
  }

  /** For work whose size is learnt after it starts. */
  setTotal(total: number): void {
    this.#o.total = total;
  }

  /** Sets how much is done (monotonic). */
  update(done: number): void {
    this.#done = done;
    const now = this.#o.clock.nowMs();
    const every = this.#o.terminal === undefined ? (this.#o.everyMs ?? 5000) : 250;
    if (now - this.#lastMs < every) return;
    this.#lastMs = now;
    this.#print(false);
  }

  add(delta: number): void {
    this.update(this.#done + delta);
  }

  /** Ends the line (terminal) after the work; prints nothing if nothing was printed before. */
  finish(): void {
    if (this.#printedOnTerminal) this.#print(true);
  }

  line(): string {
    const { what, unit, total } = this.#o;
    const elapsedS = Math.max(1e-3, (this.#o.clock.nowMs() - this.#startMs) / 1000);
    const rate = this.#done / elapsedS;
    const left = rate > 0 && total > this.#done ? (total - this.#done) / rate : 0;
    const fmt = (n: number) => unit === "bytes" ? `${(n / 2 ** 20).toFixed(1)} MiB` : `${Math.round(n)}`;
    const pct = total > 0 ? ` (${Math.floor((this.#done / total) * 100)}%)` : "";
    const rateText = unit === "bytes"
      ? `${(rate / 2 ** 20).toFixed(1)} MiB/s`
      : `${rate.toFixed(0)} objects/s`;
    // An unknown total (standard input) is 0: then only what is done and the rate.
    if (total <= 0) return `${what}: ${fmt(this.#done)}${unit === "objects" ? " objects" : ""}, ${rateText}`;
    return `${what}: ${fmt(this.#done)} of ${fmt(total)}${
      unit === "objects" ? " objects" : ""
    }${pct}, ${rateText}, ${formatSeconds(left)} left`;
  }

  #print(final: boolean): void {
    const t = this.#o.terminal;
    if (t === undefined) {
      this.#o.log(`${this.line()}.`);
      return;
    }
    this.#printedOnTerminal = true;
    t.write(`\r\x1b[Klsvd: ${this.line()}${final ? "\n" : ""}`);
  }
}

export function formatSeconds(s: number): string {
  if (s < 60) return `${Math.ceil(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.ceil(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

/** Standard error when it is a terminal, for updating progress lines. */
export function stderrTerminal(): { write(text: string): void } | undefined {
  if (!Deno.stderr.isTerminal()) return undefined;
  const encoder = new TextEncoder();
  return { write: (text) => void Deno.stderr.writeSync(encoder.encode(text)) };
}
