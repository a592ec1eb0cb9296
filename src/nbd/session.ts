/**
 * @module
 * One NBD session over an already-open byte stream: negotiation (unless the peer is already past
 * it, as the kernel is after NBD_SET_SOCK), then the transmission loop, then close. The listener
 * in server.ts runs one per accepted socket; the kernel attach can run one over its own socket.
 */

import type { BlockDevice } from "../volume/block_device.ts";
import { type Logger, silentLogger } from "../util/log.ts";
import { Connection, type ConnectionLimits, type EndReason } from "./connection.ts";
import { isInvariantFailure } from "./errors.ts";
import { negotiate, type Negotiated } from "./handshake.ts";
import { InputBuffer } from "./input_buffer.ts";
import { REQUEST_HEADER_BYTES } from "./protocol.ts";
import { closeQuietly, type NbdTransport } from "./transport.ts";
import { SubSectorDevice } from "./sub_sector.ts";
import type { NbdCounters } from "./nbd_metrics.ts";
import type { StartTlsTransport } from "./tls.ts";

export const DEFAULT_EXPORT_NAME = "lsvd";
export const DEFAULT_LIMITS: Readonly<ConnectionLimits> = {
  requestsInFlightMax: 128,
  inFlightBytesMax: 64 * 1024 * 1024,
  payloadBytesMax: 32 * 1024 * 1024,
  inputBufferBytes: 4 * 1024 * 1024,
};

export interface SessionOptions {
  device: BlockDevice;
  /** Default "lsvd"; the empty name selects the export too. */
  exportName?: string;
  description?: string;
  log?: Logger;
  limits?: Partial<ConnectionLimits>;
  /** A client still negotiating after this long is dropped (default 30 s). */
  handshakeTimeoutMs?: number;
  /** Skip negotiation: the peer is already in transmission with these settings (kernel attach). */
  negotiated?: Negotiated;
  /** Where requests are counted (shared by a server's connections). */
  counters?: NbdCounters;
  /** Names the peer in log lines, e.g. a socket address. */
  peer?: string;
  /** The transport itself when the server offers TLS on it (handshake.ts answers STARTTLS then). */
  startTls?: StartTlsTransport | undefined;
  /**
   * Called when a client that sent requests closes the connection without NBD_CMD_DISC: the kernel
   * does so to a socket whose request outlived its timeout (kernel_device.ts reconnects it).
   */
  onClientLeft?: () => void;
}

export interface NbdSession {
  /** Resolves once the session ended and the transport is closed; rejects only on a broken invariant. */
  readonly done: Promise<void>;
  /**
   * Graceful: stop reading, answer buffered requests with ESHUTDOWN (quiet: leave them unanswered,
   * for a kernel client to re-send to the next daemon), finish in-flight ones, close.
   */
  stop(options?: { quiet?: boolean }): void;
}

/** Serves one NBD client over transport until it leaves, breaks the protocol, or stop() is called. */
export function serveNbdConnection(transport: NbdTransport, options: SessionOptions): NbdSession {
  // Requests may be 512-byte aligned; the server passes its shared adapter, a lone session gets its own.
  options = { ...options, device: SubSectorDevice.of(options.device) };
  let resolveStop: (value: null) => void = () => {};
  const stopped = new Promise<null>((resolve) => resolveStop = resolve);
  let connection: Connection | undefined;
  let stopping = false;
  const done = runSession(transport, options, {
    stopped,
    isStopping: () => stopping,
    setConnection: (c) => connection = c,
  });
  return {
    done,
    stop(stopOptions = {}) {
      stopping = true;
      resolveStop(null);
      connection?.stop(stopOptions);
    },
  };
}

interface SessionControl {
  stopped: Promise<null>;
  isStopping: () => boolean;
  setConnection: (connection: Connection) => void;
}

async function runSession(
  transport: NbdTransport,
  options: SessionOptions,
  control: SessionControl,
): Promise<void> {
  const log = options.log ?? silentLogger;
  const peer = options.peer ?? "an NBD client";
  const limits = { ...DEFAULT_LIMITS, ...options.limits };
  const input = new InputBuffer(transport, {
    initialBytes: Math.min(limits.inputBufferBytes, limits.payloadBytesMax + REQUEST_HEADER_BYTES),
    capacityMaxBytes: limits.payloadBytesMax + REQUEST_HEADER_BYTES,
  });
  let connection: Connection | undefined;
  const clientLeft = () => {
    if ((connection?.requestsStarted ?? 0) > 0 && !control.isStopping()) options.onClientLeft?.();
  };
  try {
    const negotiated = options.negotiated ?? await handshake(transport, input, options, control);
    if (negotiated === undefined || control.isStopping()) return;
    input.interruptOn(control.stopped);
    connection = new Connection(transport, input, {
      device: options.device,
      negotiated,
      limits,
      ...(options.counters === undefined ? {} : { counters: options.counters }),
    });
    control.setConnection(connection);
    if (control.isStopping()) connection.stop();
    const reason = await connection.run();
    logEnd(log, peer, reason);
    if (reason === "eof") clientLeft();
  } catch (e) {
    if (isInvariantFailure(e)) throw e;
    if (e instanceof Deno.errors.BrokenPipe || e instanceof Deno.errors.ConnectionReset) return clientLeft();
    log(`Closing the connection to ${peer}: ${e instanceof Error ? e.message : String(e)}`);
  } finally {
    closeQuietly(transport);
  }
}

async function handshake(
  transport: NbdTransport,
  input: InputBuffer,
  options: SessionOptions,
  control: SessionControl,
): Promise<Negotiated | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timedOut = new Promise<null>((resolve) => {
    timer = setTimeout(() => resolve(null), options.handshakeTimeoutMs ?? 30_000);
  });
  input.interruptOn(Promise.race([control.stopped, timedOut]));
  try {
    const result = await negotiate(transport, input, {
      device: options.device,
      exportName: options.exportName ?? DEFAULT_EXPORT_NAME,
      description: options.description,
      payloadBytesMax: { ...DEFAULT_LIMITS, ...options.limits }.payloadBytesMax,
      startTls: options.startTls,
    });
    if (result.kind === "transmission") return result.negotiated;
    if (result.violation) {
      options.log?.(`Closing the connection to ${options.peer ?? "an NBD client"}: ${result.reason}`);
    }
    return undefined;
  } finally {
    clearTimeout(timer);
  }
}

function logEnd(log: Logger, peer: string, reason: EndReason): void {
  if (typeof reason === "object") log(`Closing the connection to ${peer}: ${reason.violation}`);
}
