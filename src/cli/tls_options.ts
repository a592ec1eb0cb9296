/**
 * @module
 * `lsvd serve`'s TLS options (--tls, --tls-cert, --tls-key, --tls-ca, --tls-verify-peer) and the
 * rule that a TCP listener off the loopback interface is not served in plaintext unless
 * --allow-plaintext says so: whoever reaches an NBD port reads and writes every byte of the disk.
 * Everything here is checked, and the certificate files read, before the store is touched.
 */

import { isIP } from "node:net";
import { loadTlsCredentials, TLS_MODES, TlsConfigError, type TlsMode, type TlsPolicy } from "../nbd/tls.ts";
import {
  choiceOption,
  flagOption,
  type ListenAddress,
  type Options,
  textOption,
  UsageError,
} from "./options.ts";

export const TLS_OPTIONS = {
  tls: choiceOption(TLS_MODES, {
    group: "serving",
    help: "TLS on the --listen port, as nbdkit: off, on (offered, plaintext clients too) or require " +
      "(default: require with --tls-cert, else off); the unix socket offers TLS but never requires it",
    placeholder: "off|on|require",
  }),
  "tls-cert": textOption({
    group: "serving",
    help: "The server's X.509 certificate (PEM)",
    placeholder: "FILE",
  }),
  "tls-key": textOption({
    group: "serving",
    help: "The private key of --tls-cert (PEM, unencrypted)",
    placeholder: "FILE",
  }),
  "tls-ca": textOption({
    group: "serving",
    help: "With --tls-verify-peer: the CA certificate(s) client certificates must be signed by (PEM)",
    placeholder: "FILE",
  }),
  "tls-verify-peer": flagOption({
    group: "serving",
    help: "Serve only clients presenting a certificate signed by --tls-ca",
  }),
  "allow-plaintext": flagOption({
    group: "serving",
    help: "Serve --listen on a non-loopback address without TLS (anyone reaching the port reads and " +
      "writes the disk)",
  }),
};

type TlsOptions = Options<typeof TLS_OPTIONS>;

/** The TLS policy the options ask for; throws UsageError (one line) for contradictions and bad files. */
export function tlsPolicy(options: TlsOptions, listen: ListenAddress | undefined): TlsPolicy {
  const { "tls-cert": certFile, "tls-key": keyFile, "tls-ca": caFile } = options.values;
  const verifyPeer = options.values["tls-verify-peer"];
  // Without --tls: require TLS when a certificate is given, else off.
  const mode: TlsMode = options.values.tls ?? (certFile !== undefined ? "require" : "off");
  if (mode === "off") {
    const stray = (["tls-cert", "tls-key", "tls-ca", "tls-verify-peer"] as const).find((k) =>
      options.isSet(k)
    );
    if (stray !== undefined) {
      throw new UsageError(`Invalid options: ${options.source(stray)} needs --tls on or require`);
    }
    refusePlaintext(options, listen);
    return { mode };
  }
  if (certFile === undefined || keyFile === undefined) {
    throw new UsageError(`Invalid options: --tls ${mode} needs --tls-cert and --tls-key`);
  }
  if (caFile !== undefined && !verifyPeer) {
    throw new UsageError(
      `Invalid options: ${options.source("tls-ca")} checks client certificates; add --tls-verify-peer`,
    );
  }
  try {
    return { mode, credentials: loadTlsCredentials({ certFile, keyFile, caFile, verifyPeer }) };
  } catch (e) {
    if (e instanceof TlsConfigError) throw new UsageError(e.message);
    throw e;
  }
}

function refusePlaintext(options: TlsOptions, listen: ListenAddress | undefined): void {
  if (listen === undefined || isLoopback(listen.hostname) || options.values["allow-plaintext"]) return;
  throw new UsageError(
    `Refusing to serve NBD without TLS on ${listen.hostname}:${listen.port}: anyone who reaches it reads ` +
      "and writes the disk; give --tls-cert and --tls-key, or --allow-plaintext if plaintext is intended",
  );
}

/** 127.0.0.0/8, ::1 and localhost; anything else (0.0.0.0, ::, a name) may be reachable from outside. */
export function isLoopback(hostname: string): boolean {
  const host = hostname.replace(/^\[|\]$/g, "").toLowerCase();
  if (host === "localhost") return true;
  if (isIP(host) === 4) return host.startsWith("127.");
  if (isIP(host) === 6) return host === "::1" || /^::ffff:127\./.test(host);
  return false;
}
