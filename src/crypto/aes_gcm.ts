/**
 * @module
 * AES-256-GCM with one key, as the sector and journal ciphers use it: seal/open of one message with
 * a 12-byte nonce, optional associated data and a 16-byte tag, synchronously, into caller buffers.
 *
 * Two implementations that give the same bytes (aes_gcm_test.ts checks them against each other):
 * OpenSSL's libcrypto through Deno's FFI, and `node:crypto`. In Deno 2.9.6 `node:crypto`'s
 * AES-256-GCM runs at ~80-100 MB/s on this project's machine while `openssl speed` reaches
 * ~3.7 GB/s for 4 KiB messages on the same cores (bench/RESULTS.md): per-sector encryption through
 * `node:crypto` would cut reads to a fraction. So libcrypto.so.3 is used when it can be loaded
 * (Debian and the container image ship it: ca-certificates needs openssl), through one reused
 * EVP_CIPHER_CTX per direction whose key schedule is kept and whose nonce is reset per message;
 * `node:crypto` otherwise (correct, slower; `lsvd serve` says which in its log).
 */

import { createCipheriv, createDecipheriv } from "node:crypto";
import { assert } from "../util/assert.ts";

export const NONCE_BYTES = 12;
export const TAG_BYTES = 16;

export interface AesGcm {
  /** "OpenSSL libcrypto" or "node:crypto". */
  readonly engine: string;
  /** Encrypts `plain` into `out` (same length) and writes the tag into `tag`. */
  seal(nonce: Uint8Array, plain: Uint8Array, out: Uint8Array, tag: Uint8Array, aad?: Uint8Array): void;
  /** Decrypts `sealed` into `out`; false (out then holds anything) when the tag does not verify. */
  open(nonce: Uint8Array, sealed: Uint8Array, out: Uint8Array, tag: Uint8Array, aad?: Uint8Array): boolean;
}

/** The fast implementation when libcrypto loads, else node:crypto. */
export function aesGcm(key: Uint8Array, prefer: "openssl" | "node" = "openssl"): AesGcm {
  assert(key.length === 32, "AES-256 takes a 32-byte key");
  if (prefer === "openssl") {
    const fast = openSslGcm(key);
    if (fast !== undefined) return fast;
  }
  return nodeGcm(key);
}

function nodeGcm(key: Uint8Array): AesGcm {
  return {
    engine: "node:crypto",
    seal(nonce, plain, out, tag, aad) {
      const c = createCipheriv("aes-256-gcm", key, nonce);
      if (aad !== undefined) c.setAAD(aad);
      out.set(c.update(plain));
      c.final();
      tag.set(c.getAuthTag());
    },
    open(nonce, sealed, out, tag, aad) {
      const d = createDecipheriv("aes-256-gcm", key, nonce);
      if (aad !== undefined) d.setAAD(aad);
      d.setAuthTag(tag);
      const plain = d.update(sealed);
      try {
        d.final();
      } catch {
        return false;
      }
      out.set(plain);
      return true;
    },
  };
}

const SYMBOLS = {
  EVP_CIPHER_CTX_new: { parameters: [], result: "pointer" },
  EVP_aes_256_gcm: { parameters: [], result: "pointer" },
  EVP_EncryptInit_ex: { parameters: ["pointer", "pointer", "pointer", "buffer", "buffer"], result: "i32" },
  EVP_DecryptInit_ex: { parameters: ["pointer", "pointer", "pointer", "buffer", "buffer"], result: "i32" },
  EVP_EncryptUpdate: { parameters: ["pointer", "buffer", "buffer", "buffer", "i32"], result: "i32" },
  EVP_DecryptUpdate: { parameters: ["pointer", "buffer", "buffer", "buffer", "i32"], result: "i32" },
  EVP_EncryptFinal_ex: { parameters: ["pointer", "buffer", "buffer"], result: "i32" },
  EVP_DecryptFinal_ex: { parameters: ["pointer", "buffer", "buffer"], result: "i32" },
  EVP_CIPHER_CTX_ctrl: { parameters: ["pointer", "i32", "i32", "buffer"], result: "i32" },
} as const;
const EVP_CTRL_GCM_GET_TAG = 0x10;
const EVP_CTRL_GCM_SET_TAG = 0x11;

/** libcrypto's AES-256-GCM, or undefined when it cannot be loaded (no library, no FFI permission). */
function openSslGcm(key: Uint8Array): AesGcm | undefined {
  let lib;
  try {
    lib = Deno.dlopen("libcrypto.so.3", SYMBOLS);
  } catch {
    return undefined;
  }
  const s = lib.symbols;
  const enc = s.EVP_CIPHER_CTX_new(), dec = s.EVP_CIPHER_CTX_new();
  assert(enc !== null && dec !== null, "EVP_CIPHER_CTX_new failed");
  const cipher = s.EVP_aes_256_gcm();
  const zeroNonce = new Uint8Array(NONCE_BYTES);
  assert(s.EVP_EncryptInit_ex(enc, cipher, null, key, zeroNonce) === 1, "EVP_EncryptInit_ex failed");
  assert(s.EVP_DecryptInit_ex(dec, cipher, null, key, zeroNonce) === 1, "EVP_DecryptInit_ex failed");
  const outLength = new Int32Array(1);
  const none = new Uint8Array(0);
  return {
    engine: "OpenSSL libcrypto",
    seal(nonce, plain, out, tag, aad) {
      assert(nonce.length === NONCE_BYTES && out.length >= plain.length && tag.length >= TAG_BYTES);
      let ok = s.EVP_EncryptInit_ex(enc, null, null, null, nonce);
      if (aad !== undefined) ok &= s.EVP_EncryptUpdate(enc, null, outLength, aad, aad.length);
      ok &= s.EVP_EncryptUpdate(enc, out, outLength, plain, plain.length);
      ok &= s.EVP_EncryptFinal_ex(enc, none, outLength);
      ok &= s.EVP_CIPHER_CTX_ctrl(enc, EVP_CTRL_GCM_GET_TAG, TAG_BYTES, tag);
      assert(ok === 1, "AES-GCM encryption failed in libcrypto");
    },
    open(nonce, sealed, out, tag, aad) {
      assert(nonce.length === NONCE_BYTES && out.length >= sealed.length && tag.length >= TAG_BYTES);
      let ok = s.EVP_DecryptInit_ex(dec, null, null, null, nonce);
      if (aad !== undefined) ok &= s.EVP_DecryptUpdate(dec, null, outLength, aad, aad.length);
      ok &= s.EVP_DecryptUpdate(dec, out, outLength, sealed, sealed.length);
      ok &= s.EVP_CIPHER_CTX_ctrl(dec, EVP_CTRL_GCM_SET_TAG, TAG_BYTES, tag);
      assert(ok === 1, "AES-GCM decryption failed in libcrypto");
      return s.EVP_DecryptFinal_ex(dec, none, outLength) === 1;
    },
  };
}
