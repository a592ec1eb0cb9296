/**
 * @module
 * A throwaway X.509 setup for TLS tests, made with openssl the way README's recipe makes it: a CA,
 * a server certificate for localhost/127.0.0.1 and a client certificate it signed, plus a second,
 * unrelated CA and a client certificate of its own (what a stranger would hold). Client
 * directories are laid out as libnbd (`tls-certificates=DIR`) and qemu (`tls-creds-x509,dir=DIR`)
 * expect them: ca-cert.pem, and client-cert.pem / client-key.pem where the client has one.
 */

import { join } from "node:path";
import { runClientOk } from "./clients.ts";

export interface TlsCerts {
  dir: string;
  /** The server's files, for --tls-cert / --tls-key / --tls-ca. */
  serverCert: string;
  serverKey: string;
  caCert: string;
  /** ca-cert.pem only: verifies the server, presents no certificate. */
  clientNoCertDir: string;
  /** ca-cert.pem plus a client certificate the CA signed. */
  clientDir: string;
  /** The right CA, but a client certificate signed by the other CA. */
  strangerDir: string;
  /** Another CA's ca-cert.pem: the server's certificate does not verify. */
  wrongCaDir: string;
  remove(): Promise<void>;
}

async function openssl(cwd: string, args: string[]): Promise<void> {
  await runClientOk("openssl", args, { cwd, timeoutMs: 30_000 });
}

async function makeCa(cwd: string, name: string): Promise<void> {
  await openssl(cwd, [
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-days",
    "2",
    "-subj",
    `/CN=${name}`,
    "-keyout",
    `${name}-key.pem`,
    "-out",
    `${name}-cert.pem`,
  ]);
}

async function makeLeaf(
  cwd: string,
  leaf: { name: string; ca: string; subject: string; extensions: string },
): Promise<void> {
  const ext = `${leaf.name}.ext`;
  await Deno.writeTextFile(join(cwd, ext), leaf.extensions);
  await openssl(cwd, [
    "req",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-subj",
    `/CN=${leaf.subject}`,
    "-keyout",
    `${leaf.name}-key.pem`,
    "-out",
    `${leaf.name}.csr`,
  ]);
  await openssl(cwd, [
    "x509",
    "-req",
    "-in",
    `${leaf.name}.csr`,
    "-CA",
    `${leaf.ca}-cert.pem`,
    "-CAkey",
    `${leaf.ca}-key.pem`,
    "-CAcreateserial",
    "-days",
    "2",
    "-extfile",
    ext,
    "-out",
    `${leaf.name}-cert.pem`,
  ]);
}

async function clientDir(root: string, name: string, files: Record<string, string>): Promise<string> {
  const dir = join(root, name);
  await Deno.mkdir(dir);
  for (const [to, from] of Object.entries(files)) await Deno.copyFile(join(root, from), join(dir, to));
  return dir;
}

/** Makes the CAs and certificates in a new temp dir (a second or so of openssl). */
export async function makeTlsCerts(): Promise<TlsCerts> {
  const dir = await Deno.makeTempDir({ prefix: "lsvd-tls-" });
  await makeCa(dir, "ca");
  await makeCa(dir, "other-ca");
  await makeLeaf(dir, {
    name: "server",
    ca: "ca",
    subject: "localhost",
    extensions: "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
  });
  const clientExt = "extendedKeyUsage=clientAuth\n";
  await makeLeaf(dir, { name: "client", ca: "ca", subject: "client", extensions: clientExt });
  await makeLeaf(dir, { name: "stranger", ca: "other-ca", subject: "stranger", extensions: clientExt });
  return {
    dir,
    serverCert: join(dir, "server-cert.pem"),
    serverKey: join(dir, "server-key.pem"),
    caCert: join(dir, "ca-cert.pem"),
    clientNoCertDir: await clientDir(dir, "client-nocert", { "ca-cert.pem": "ca-cert.pem" }),
    clientDir: await clientDir(dir, "client", {
      "ca-cert.pem": "ca-cert.pem",
      "client-cert.pem": "client-cert.pem",
      "client-key.pem": "client-key.pem",
    }),
    strangerDir: await clientDir(dir, "stranger", {
      "ca-cert.pem": "ca-cert.pem",
      "client-cert.pem": "stranger-cert.pem",
      "client-key.pem": "stranger-key.pem",
    }),
    wrongCaDir: await clientDir(dir, "wrong-ca", { "ca-cert.pem": "other-ca-cert.pem" }),
    remove: () => Deno.remove(dir, { recursive: true }).catch(() => {}),
  };
}
