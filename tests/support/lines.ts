/**
 * @module
 * Lines of a child process's output as they arrive: every test that watches a client or daemon
 * print acknowledgements line by line reads them the same way.
 */

/**
 * Calls onLine with each complete line of the stream, in order, as soon as its newline arrives.
 * A last line without a newline is passed too when `partialLast` is set (a daemon's final log line);
 * otherwise it is dropped (a client killed mid-line has not acknowledged anything with it).
 */
export async function forEachLine(
  stream: ReadableStream<Uint8Array>,
  onLine: (line: string) => void,
  options: { partialLast?: boolean } = {},
): Promise<void> {
  let partial = "";
  const decoder = new TextDecoder();
  for await (const chunk of stream) {
    const parts = (partial + decoder.decode(chunk, { stream: true })).split("\n");
    partial = parts.pop()!;
    for (const line of parts) onLine(line);
  }
  if (options.partialLast && partial) onLine(partial);
}
