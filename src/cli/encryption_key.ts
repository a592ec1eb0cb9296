/**
 * @module
 * Where an encrypted volume's key comes from (docs/design/encryption.md): a file named by
 * `--encryption-key-file` or LSVD_ENCRYPTION_KEY_FILE (its bytes, all of them), or the key itself
 * in LSVD_ENCRYPTION_KEY (its UTF-8 bytes). Never a command-line argument, so never in
 * /proc/PID/cmdline. The variable holding the key is removed from this process's environment once
 * read, so nothing it starts (nbd-client, mount, qemu) inherits it. Errors name the source, never
 * the key.
 */

import { SECRET_BYTES_MIN, VolumeSecret } from "../crypto/sector_cipher.ts";
import { type Options, textOption, UsageError } from "./options.ts";

/** The variable that holds the key itself (the file option's variable is implied by its name). */
export const KEY_ENV = "LSVD_ENCRYPTION_KEY";

export const ENCRYPTION_OPTIONS = {
  "encryption-key-file": textOption({
    group: "volume",
    help: `The key of an encrypted volume: a file of at least ${SECRET_BYTES_MIN} secret bytes (or the key ` +
      `itself in ${KEY_ENV}). A new volume given a key is created encrypted; an encrypted one needs it`,
    placeholder: "FILE",
  }),
};

/** The key the options or the environment give, or undefined; refuses an unusable one in one line. */
export function loadEncryptionKey(
  options: Options<typeof ENCRYPTION_OPTIONS>,
  env: { get(name: string): string | undefined; delete(name: string): void } = Deno.env,
): VolumeSecret | undefined {
  const file = options.values["encryption-key-file"];
  const inline = env.get(KEY_ENV);
  if (inline !== undefined) env.delete(KEY_ENV);
  if (file !== undefined && inline !== undefined && inline !== "") {
    throw new UsageError(
      `Invalid options: give the key either in a file (${
        options.source("encryption-key-file")
      }) or in ${KEY_ENV}, not both`,
    );
  }
  if (file !== undefined) return fromFile(file, options.source("encryption-key-file"));
  if (inline === undefined || inline === "") return undefined;
  return checked(new TextEncoder().encode(inline), KEY_ENV);
}

function fromFile(path: string, source: string): VolumeSecret {
  let bytes: Uint8Array;
  try {
    bytes = Deno.readFileSync(path);
  } catch (e) {
    const why = e instanceof Deno.errors.NotFound ? "no such file" : (e as Error).name;
    throw new UsageError(`Cannot read the encryption key file "${path}" (${source}): ${why}`);
  }
  const mode = Deno.statSync(path).mode;
  if (mode !== null && (mode & 0o077) !== 0) {
    throw new UsageError(
      `Refusing the encryption key file "${path}": others can read it (mode ${
        (mode & 0o777).toString(8)
      }); chmod 600 it`,
    );
  }
  return checked(bytes, `the file ${path}`);
}

function checked(bytes: Uint8Array, source: string): VolumeSecret {
  if (bytes.length < SECRET_BYTES_MIN) {
    throw new UsageError(
      `Invalid encryption key from ${source}: ${bytes.length} bytes, fewer than ${SECRET_BYTES_MIN} (make one with 'openssl rand -out FILE 32')`,
    );
  }
  return new VolumeSecret(bytes, source);
}
