/**
 * A PostgreSQL array literal of integers, strings and nulls, for an array parameter whose type
 * the statement names (`$1::uuid[]`, `$2::int[]`, `$3::text::text[]`): strings are quoted (so
 * "NULL" stays a string), nulls are NULL, integers as they are; only a string holding a quote or
 * a backslash needs escaping, which validated input never has. postgres.js would serialize a JS
 * array with two regex replacements per element and copy it several times: for an upload's
 * hundred ~4 KB base64 blobs that cost more server CPU than parsing the request, for the claim
 * statement's 17 columns about 5 % of the server's CPU per claim (bench/README.md, issue 21).
 */
export function arrayLiteral(values: readonly (string | number | null)[]): string {
  let out = "{";
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    if (i > 0) out += ",";
    if (v === null) out += "NULL";
    else if (typeof v === "number") {
      if (!Number.isSafeInteger(v)) throw new TypeError(`not an integer: ${v}`);
      out += v;
    } else out += v.indexOf('"') < 0 && v.indexOf("\\") < 0 ? `"${v}"` : `"${v.replace(/[\\"]/g, "\\$&")}"`;
  }
  return out + "}";
}

/** The type of a parameter built by byteaArray (pass it as `sql.typed(byteaArray(…), BYTEA_ARRAY)`). */
export const BYTEA_ARRAY = 1001;

/**
 * The size standard base64 with padding decodes to, or -1 for a string without its shape. A
 * string of that shape is base64 exactly when Buffer's decoder, which skips what is not base64
 * (a padding character too early ends it), yields that many bytes; "-" and "_" (the URL-safe
 * alphabet, which it reads as well) are refused here.
 */
const decodedSize = (s: string) => (s.length === 0 || (s.length & 3) !== 0 || s.includes("-") || s.includes("_")) ? -1
  : (s.length >> 2) * 3 - (s.endsWith("==") ? 2 : s.endsWith("=") ? 1 : 0);

/** Standard base64 with padding, decoded; undefined for anything else. */
export function base64Bytes(s: string): Buffer | undefined {
  const size = decodedSize(s);
  if (size < 0) return undefined;
  const bytes = Buffer.from(s, "base64");
  return bytes.length === size ? bytes : undefined;
}

/**
 * A bytea[] parameter in PostgreSQL's binary array format, from base64 strings, each decoded
 * straight into one buffer; `invalid(index)` is thrown for one that is not standard base64 with
 * padding (what PostgreSQL's decode() accepted, but for its line breaks). The patched postgres.js
 * sends a Uint8Array parameter in binary format, so PostgreSQL only copies the bytes: a text[] of
 * base64 cost it a parse of every character and a decode, more of its CPU than storing the coins
 * (bench/README.md, issue 21). Pass it as `sql.typed(byteaArray(…), BYTEA_ARRAY)`.
 */
export function byteaArray(base64s: readonly string[], invalid: (index: number) => Error): Buffer {
  if (base64s.length === 0) return Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 17]); // no dimensions, no nulls, bytea
  let size = 20;
  for (const s of base64s) size += 4 + (s.length >> 2) * 3;
  const out = Buffer.allocUnsafe(size);
  out.writeInt32BE(1, 0); // dimensions
  out.writeInt32BE(0, 4); // no nulls
  out.writeInt32BE(17, 8); // element type: bytea
  out.writeInt32BE(base64s.length, 12);
  out.writeInt32BE(1, 16); // lower bound
  let at = 20;
  base64s.forEach((s, i) => {
    const expected = decodedSize(s);
    if (expected < 0) throw invalid(i);
    const n = out.write(s, at + 4, "base64");
    if (n !== expected) throw invalid(i);
    out.writeInt32BE(n, at);
    at += 4 + n;
  });
  return out.subarray(0, at);
}
