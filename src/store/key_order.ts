/**
 * @module
 * S3 lists keys in ascending order of their UTF-8 bytes. JavaScript compares strings by UTF-16
 * code units, which disagrees for characters above U+FFFF against U+E000..U+FFFF, so every local
 * store sorts with this comparison instead (code point order equals UTF-8 byte order).
 */

/** Negative, zero or positive as a sorts before, with or after b in UTF-8 byte order. */
export function compareKeys(a: string, b: string): number {
  const length = Math.min(a.length, b.length);
  for (let i = 0; i < length; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x === y) continue;
    if (isSurrogate(x) === isSurrogate(y)) return x - y;
    // A surrogate (code point >= U+10000) sorts after every other BMP character.
    return isSurrogate(x) ? 1 : -1;
  }
  return a.length - b.length;
}

function isSurrogate(codeUnit: number): boolean {
  return codeUnit >= 0xd800 && codeUnit <= 0xdfff;
}
