/**
 * @module
 * NBD over TLS (NBD_OPT_STARTTLS): the server's certificate material, checked once at start so a
 * bad file is one line before anything is served, and the per-connection upgrade of a plaintext
 * socket to TLS in the middle of option negotiation.
 *
 * Deno.startTls is client-only, so the server side of the upgrade is node:tls's TLSSocket with
 * isServer over a Duplex that reads and writes the Deno.Conn (docs: environment.md "TLS in Deno").
 * The Duplex and the TLSSocket are built only when a client sends STARTTLS: connections of a
 * server without TLS, and plaintext clients of one with `--tls on`, read the Deno.Conn as before.
 * Deno's node:tls (rustls) does not refuse an unverified client certificate by itself; like
 * node's tls.Server it reports the outcome in ssl.verifyError(), which upgrade() checks.
 */

import * as tls from "node:tls";
import { Duplex } from "node:stream";
import { createPrivateKey, X509Certificate } from "node:crypto";
import { closeQuietly, type NbdTransport, writeAll } from "./transport.ts";
import { concatBytes } from "../util/bytes.ts";

/** nbdkit's meanings: off (no TLS), on (offered, plaintext allowed), require (every client must upgrade). */
export type TlsMode = "off" | "on" | "require";

export const TLS_MODES: readonly TlsMode[] = ["off", "on", "require"];

/** Certificate material, read and checked by loadTlsCredentials. */
export interface TlsCredentials {
  certPem: string;
  keyPem: string;
  /** CA bundle that client certificates must chain to; set exactly when verifyPeer is. */
  caPem: string | undefined;
  verifyPeer: boolean;
  /** The certificate's subject, for the start-up line. */
  subject: string;
}

/** What a listener does about TLS: the mode and, unless off, the credentials. */
export type TlsPolicy =
  | { mode: "off" }
  | { mode: "on" | "require"; credentials: TlsCredentials };

/** A certificate, key or CA file that cannot be used; the message names the file and the cause. */
export class TlsConfigError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "TlsConfigError";
  }
}

/** The client did not complete the TLS handshake, or its certificate was not accepted. */
export class TlsHandshakeError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "TlsHandshakeError";
  }
}

export interface TlsFiles {
  certFile: string;
  keyFile: string;
  caFile?: string | undefined;
  verifyPeer: boolean;
}

/** Reads and checks the files (parse, key matches certificate, not expired); throws TlsConfigError. */
export function loadTlsCredentials(files: TlsFiles, now = new Date()): TlsCredentials {
  if (files.verifyPeer && files.caFile === undefined) {
    throw new TlsConfigError("Cannot check client certificates: give the CA that signs them (--tls-ca)");
  }
  const certPem = readPem(files.certFile, "certificate");
  const keyPem = readPem(files.keyFile, "key");
  const cert = parseCertificate(certPem, files.certFile);
  let key;
  try {
    key = createPrivateKey(keyPem);
  } catch (e) {
    throw new TlsConfigError(`Cannot use TLS key ${files.keyFile}: not a PEM private key`, { cause: e });
  }
  if (!cert.checkPrivateKey(key)) {
    throw new TlsConfigError(
      `Cannot use TLS key ${files.keyFile}: it does not belong to certificate ${files.certFile}`,
    );
  }
  if (new Date(cert.validTo) < now) {
    throw new TlsConfigError(`Cannot use TLS certificate ${files.certFile}: it expired on ${cert.validTo}`);
  }
  let caPem: string | undefined;
  if (files.caFile !== undefined) {
    caPem = readPem(files.caFile, "CA");
    const blocks = caPem.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) ?? [];
    if (blocks.length === 0) {
      throw new TlsConfigError(`Cannot use TLS CA ${files.caFile}: no PEM certificate in it`);
    }
    for (const block of blocks) parseCertificate(block, files.caFile);
  }
  return { certPem, keyPem, caPem, verifyPeer: files.verifyPeer, subject: cert.subject.replace(/\n/g, ", ") };
}

function readPem(path: string, what: string): string {
  try {
    return Deno.readTextFileSync(path);
  } catch (e) {
    const reason = (e instanceof Error ? e.message : String(e)).split(" (os error")[0];
    throw new TlsConfigError(`Cannot read TLS ${what} ${path}: ${reason}`, { cause: e });
  }
}

function parseCertificate(pem: string, path: string): X509Certificate {
  try {
    return new X509Certificate(pem);
  } catch (e) {
    throw new TlsConfigError(`Cannot use TLS certificate ${path}: not a PEM certificate`, { cause: e });
  }
}

/**
 * One connection's socket, plaintext until upgrade(). The handshake asks it what the mode is and
 * whether TLS is active; the session reads and writes it throughout, as any NbdTransport.
 */
export class StartTlsTransport implements NbdTransport {
  readonly mode: "on" | "require";
  #conn: Deno.Conn;
  #credentials: TlsCredentials;
  #current: NbdTransport;
  #active = false;

  constructor(conn: Deno.Conn, policy: { mode: "on" | "require"; credentials: TlsCredentials }) {
    this.#conn = conn;
    this.#current = conn;
    this.mode = policy.mode;
    this.#credentials = policy.credentials;
  }

  /** TLS was negotiated: everything from now on is encrypted, and there is no way back. */
  get active(): boolean {
    return this.#active;
  }

  read(p: Uint8Array): Promise<number | null> {
    return this.#current.read(p);
  }

  write(p: Uint8Array): Promise<number> {
    return this.#current.write(p);
  }

  close(): void {
    closeQuietly(this.#current);
    closeQuietly(this.#conn);
  }

  /**
   * Runs the server side of the TLS handshake (after the ACK to STARTTLS was sent). Throws
   * TlsHandshakeError when it fails, the client certificate is refused, or `interrupted` resolves.
   */
  async upgrade(interrupted?: Promise<null>): Promise<void> {
    if (this.#active) throw new TlsHandshakeError("TLS is already active");
    const socket = new tls.TLSSocket(connDuplex(this.#conn), {
      isServer: true,
      secureContext: tls.createSecureContext({
        key: this.#credentials.keyPem,
        cert: this.#credentials.certPem,
        ...(this.#credentials.caPem === undefined ? {} : { ca: this.#credentials.caPem }),
      }),
      requestCert: this.#credentials.verifyPeer,
      rejectUnauthorized: this.#credentials.verifyPeer,
      minVersion: "TLSv1.2",
    } as tls.TLSSocketOptions);
    const secured = new Promise<void>((resolve, reject) => {
      socket.once("secure", () => resolve());
      socket.once("error", (e: Error) => reject(new TlsHandshakeError(e.message, { cause: e })));
      socket.once("close", () => reject(new TlsHandshakeError("the client closed during the TLS handshake")));
    });
    const stop = interrupted?.then(() => {
      throw new TlsHandshakeError("stopped during the TLS handshake");
    });
    try {
      await (stop === undefined ? secured : Promise.race([secured, stop]));
      this.#checkPeer(socket);
    } catch (e) {
      secured.catch(() => {});
      socket.destroy();
      throw e;
    }
    this.#current = new TlsSocketTransport(socket);
    this.#active = true;
  }

  #checkPeer(socket: tls.TLSSocket): void {
    if (!this.#credentials.verifyPeer) return;
    const ssl = (socket as unknown as { ssl?: { verifyError?: () => unknown } }).ssl;
    const error = ssl?.verifyError?.();
    if (ssl?.verifyError === undefined) throw new TlsHandshakeError("cannot check the client certificate");
    if (error) throw new TlsHandshakeError(`client certificate refused: ${String(error)}`);
  }
}

/** The plaintext socket as a node Duplex, for the TLSSocket to read ciphertext from and write it to. */
function connDuplex(conn: Deno.Conn): Duplex {
  let reading = false;
  return new Duplex({
    read() {
      if (reading) return;
      reading = true;
      const buffer = new Uint8Array(64 * 1024);
      conn.read(buffer).then((n) => {
        reading = false;
        this.push(n === null ? null : buffer.subarray(0, n));
      }, (e) => this.destroy(e));
    },
    // Records the TLS layer produced while a write was in flight leave together, in one write.
    writev(chunks: { chunk: Uint8Array }[], callback) {
      const bytes = chunks.length === 1 ? chunks[0]!.chunk : concatBytes(chunks.map((c) => c.chunk));
      writeAll(conn, bytes).then(() => callback(), callback);
    },
    final(callback) {
      try {
        conn.closeWrite();
      } catch {
        // already closed: nothing left to end
      }
      callback();
    },
    destroy(error, callback) {
      closeQuietly(conn);
      callback(error);
    },
  });
}

/** Keeps at most this much decrypted input queued before pausing the TLS socket. */
const QUEUED_BYTES_MAX = 4 * 1024 * 1024;

/** A TLSSocket as an NbdTransport: a bounded queue of decrypted chunks for read(), callbacks for write(). */
class TlsSocketTransport implements NbdTransport {
  #socket: tls.TLSSocket;
  #chunks: Uint8Array[] = [];
  #queuedBytes = 0;
  #ended = false;
  #error: Error | undefined;
  #wake: (() => void) | undefined;
  #drained: (() => void) | undefined;

  constructor(socket: tls.TLSSocket) {
    this.#socket = socket;
    socket.on("data", (chunk: Uint8Array) => {
      this.#chunks.push(chunk);
      this.#queuedBytes += chunk.length;
      if (this.#queuedBytes >= QUEUED_BYTES_MAX) socket.pause();
      this.#notify();
    });
    socket.on("end", () => this.#finish(undefined));
    socket.on("close", () => this.#finish(undefined));
    socket.on("error", (e: Error) => this.#finish(e));
  }

  #finish(error: Error | undefined): void {
    this.#ended = true;
    this.#error ??= error;
    this.#notify();
    this.#wakeWriter();
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  async read(p: Uint8Array): Promise<number | null> {
    while (this.#chunks.length === 0) {
      if (this.#error !== undefined) throw new Deno.errors.ConnectionReset(this.#error.message);
      if (this.#ended) return null;
      await new Promise<void>((resolve) => this.#wake = resolve);
    }
    let n = 0;
    while (n < p.length && this.#chunks.length > 0) {
      const chunk = this.#chunks[0]!;
      const take = Math.min(chunk.length, p.length - n);
      p.set(chunk.subarray(0, take), n);
      n += take;
      if (take === chunk.length) this.#chunks.shift();
      else this.#chunks[0] = chunk.subarray(take);
    }
    this.#queuedBytes -= n;
    if (this.#socket.isPaused() && this.#queuedBytes < QUEUED_BYTES_MAX / 2) this.#socket.resume();
    return n;
  }

  /**
   * Hands a copy of p to the TLS socket and returns at once while the socket's buffer is below its
   * high-water mark, so the next reply is encrypted while this one is sent; past it, waits for
   * 'drain'. A failed send ends the stream: the next write or read reports it.
   */
  async write(p: Uint8Array): Promise<number> {
    if (this.#ended || this.#socket.destroyed) {
      throw new Deno.errors.BrokenPipe("the TLS connection is closed");
    }
    if (this.#socket.write(p.slice())) return p.length;
    await new Promise<void>((resolve) => {
      this.#drained = resolve;
      this.#socket.once("drain", () => this.#wakeWriter());
    });
    if (this.#ended) throw new Deno.errors.BrokenPipe(this.#error?.message ?? "the TLS connection is closed");
    return p.length;
  }

  #wakeWriter(): void {
    const drained = this.#drained;
    this.#drained = undefined;
    drained?.();
  }

  close(): void {
    this.#socket.destroy();
    this.#finish(undefined);
  }
}
