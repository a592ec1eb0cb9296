/**
 * @module
 * Questions on a terminal for `lsvd setup`: one line per answer read from standard input, with a
 * default shown in brackets, and secrets read without echo (raw mode) when stdin is a terminal.
 * Input is read through one buffered reader, so answers typed ahead (or piped) are never lost.
 */

import { UsageError } from "./options.ts";

const encoder = new TextEncoder();

export class Prompter {
  #reader: ReadableStreamDefaultReader<Uint8Array>;
  #buffered: number[] = [];
  #write: (text: string) => void;
  #terminal: boolean;

  constructor(
    input: ReadableStream<Uint8Array> = Deno.stdin.readable,
    write: (text: string) => void = (t) => Deno.stderr.writeSync(encoder.encode(t)),
    terminal = Deno.stdin.isTerminal(),
  ) {
    this.#reader = input.getReader();
    this.#write = write;
    this.#terminal = terminal;
  }

  /** Asks until the answer is non-empty (or the default is taken) and check() accepts it. */
  async ask(
    question: string,
    options: {
      default?: string;
      secret?: boolean;
      /** An empty answer is accepted (returned as ""). */
      allowEmpty?: boolean;
      check?: (answer: string) => string | undefined;
    } = {},
  ): Promise<string> {
    for (;;) {
      const shown = options.default === undefined || options.secret ? "" : ` [${options.default}]`;
      const prompt = `${question}${shown}: `;
      // Echo goes off before the prompt shows, so an answer typed at once is never echoed.
      const raw = options.secret && this.#terminal
        ? await this.#secretLine(prompt)
        : await this.#line(prompt);
      const answer = raw.trim() === "" ? options.default ?? "" : raw.trim();
      if (answer === "" && options.allowEmpty) return "";
      if (answer === "") {
        this.#write("  An answer is needed.\n");
        continue;
      }
      const problem = options.check?.(answer);
      if (problem === undefined) return answer;
      this.#write(`  ${problem}\n`);
    }
  }

  /** A numbered choice; returns the chosen key. */
  async choose(
    question: string,
    choices: [key: string, label: string][],
    defaultKey: string,
  ): Promise<string> {
    this.#write(`${question}\n${choices.map(([, label], i) => `  ${i + 1}) ${label}\n`).join("")}`);
    const defaultIndex = String(choices.findIndex(([k]) => k === defaultKey) + 1);
    const answer = await this.ask("Choose", {
      default: defaultIndex,
      check: (a) =>
        /^\d+$/.test(a) && Number(a) >= 1 && Number(a) <= choices.length
          ? undefined
          : `Give a number from 1 to ${choices.length}.`,
    });
    return choices[Number(answer) - 1]![0];
  }

  async confirm(question: string, defaultYes: boolean): Promise<boolean> {
    const answer = await this.ask(question, {
      default: defaultYes ? "y" : "n",
      check: (a) => /^(y|yes|n|no)$/i.test(a) ? undefined : "Answer y or n.",
    });
    return /^y/i.test(answer);
  }

  close(): void {
    this.#reader.releaseLock();
  }

  async #byte(): Promise<number | undefined> {
    while (this.#buffered.length === 0) {
      const { value, done } = await this.#reader.read();
      if (done) return undefined;
      this.#buffered.push(...value);
    }
    return this.#buffered.shift();
  }

  async #line(prompt: string): Promise<string> {
    this.#write(prompt);
    const bytes: number[] = [];
    for (;;) {
      const b = await this.#byte();
      if (b === undefined) {
        if (bytes.length === 0) throw new UsageError("Setup cancelled: standard input ended");
        break;
      }
      if (b === 0x0a) break;
      if (b !== 0x0d) bytes.push(b);
    }
    return new TextDecoder().decode(new Uint8Array(bytes));
  }

  /** A line read in raw mode, not echoed; Ctrl-C and Ctrl-D cancel. */
  async #secretLine(prompt: string): Promise<string> {
    Deno.stdin.setRaw(true);
    this.#write(prompt);
    const bytes: number[] = [];
    try {
      for (;;) {
        const b = await this.#byte();
        if (b === undefined || b === 0x03 || (b === 0x04 && bytes.length === 0)) {
          throw new UsageError("Setup cancelled");
        }
        if (b === 0x0d || b === 0x0a) break;
        if (b === 0x7f || b === 0x08) bytes.pop();
        else bytes.push(b);
      }
    } finally {
      Deno.stdin.setRaw(false);
      this.#write("\n");
    }
    return new TextDecoder().decode(new Uint8Array(bytes));
  }
}
