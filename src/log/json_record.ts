/**
 * @module
 * Small JSON records beside the log (collected records, snapshots) with a CRC-32 line after the
 * JSON: a damaged answer could otherwise still parse (a flipped digit turns snapshot 23 into 27)
 * and silently change which points are kept. A read whose CRC does not match is read again (the
 * damage may be in transit); a stored record that stays damaged is a data error naming its key.
 *
 *   record = json "\n" crc "\n"      ; crc: 8 lower-case hex digits, CRC-32 of the json bytes
 */

import { crc32 } from "../format/crc32.ts";
import type { ObjectStore } from "../store/store.ts";
import { LsvdError } from "../util/errors.ts";

const READS_MAX = 3;

export function encodeJsonRecord(value: unknown): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(value));
  const crc = crc32(json).toString(16).padStart(8, "0");
  const out = new Uint8Array(json.length + 10);
  out.set(json);
  out.set(new TextEncoder().encode(`\n${crc}\n`), json.length);
  return out;
}

/** The parsed JSON, or undefined when the CRC line is missing or does not match. */
export function decodeJsonRecord(body: Uint8Array): unknown {
  if (body.length < 10 || body[body.length - 1] !== 0x0a || body[body.length - 10] !== 0x0a) return undefined;
  const json = body.subarray(0, body.length - 10);
  const crc = new TextDecoder().decode(body.subarray(body.length - 9, body.length - 1));
  if (!/^[0-9a-f]{8}$/.test(crc) || parseInt(crc, 16) !== crc32(json)) return undefined;
  try {
    return JSON.parse(new TextDecoder().decode(json));
  } catch {
    return undefined;
  }
}

/** Reads and checks a record (store errors propagate, NotFound included); LsvdError("data") if it stays damaged. */
export async function readJsonRecord(store: ObjectStore, key: string): Promise<unknown> {
  let why = "";
  for (let attempt = 0; attempt < READS_MAX; attempt++) {
    const { body } = await store.get(key);
    const value = decodeJsonRecord(body);
    if (value !== undefined) return value;
    why = `its CRC line does not match (${body.length} bytes)`;
  }
  throw new LsvdError("data", `Cannot read "${key}": ${why}`);
}
