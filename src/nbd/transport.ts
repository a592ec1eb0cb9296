/**
 * @module
 * The byte stream an NBD session runs over: a Deno.Conn (unix or TCP socket) or anything with the
 * same three methods, such as the socket the kernel attach hands over.
 */

export interface NbdTransport {
  /** Reads into p; null at end of stream. */
  read(p: Uint8Array): Promise<number | null>;
  /** Writes some prefix of p; returns how many bytes were written. */
  write(p: Uint8Array): Promise<number>;
  close(): void;
}

/** Writes all of bytes, looping over partial writes. */
export async function writeAll(transport: NbdTransport, bytes: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes.length) done += await transport.write(bytes.subarray(done));
}

/** Closes, ignoring "already closed": every path that ends a session may try. */
export function closeQuietly(transport: NbdTransport): void {
  try {
    transport.close();
  } catch (e) {
    if (!(e instanceof Deno.errors.BadResource)) throw e;
  }
}
