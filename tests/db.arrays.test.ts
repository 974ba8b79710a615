import { expect, test } from "bun:test";
import postgres from "postgres";
import { arrayLiteral, base64Bytes, BYTEA_ARRAY, byteaArray } from "../src/db/arrays.ts";
import { base64Pattern } from "../src/coins/model.ts";
import { useTestDatabase } from "./helpers/db.ts";

// Uploads send their blobs as bytea[] in PostgreSQL's binary format (the patched postgres.js
// sends a Uint8Array parameter as it is): what arrives must be the bytes of the base64 sent,
// and nothing but standard base64 may be decoded, since Buffer's decoder skips what it cannot read.

const db = useTestDatabase();
const pattern = new RegExp(base64Pattern);
const refuse = (i: number) => new Error(`element ${i}`);

/** Random strings: base64 of random bytes or of the alphabet, with a few hostile characters put in or swapped for one. */
function* candidates(n: number): Generator<string> {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const hostile = ["=", "==", "-", "_", " ", "\n", "\r", "\t", "!", ".", "é", "€", "\u0000", "\u00ff", "A=", "%3D"];
  for (let i = 0; i < n; i++) {
    const len = 1 + (i % 17);
    let s = i % 3 === 0
      ? Buffer.from(crypto.getRandomValues(new Uint8Array(len))).toString("base64")
      : Array.from({ length: i % 2 ? len : 4 * (1 + (i % 5)) }, () => alphabet[Math.floor(Math.random() * 64)]).join("");
    for (let m = i % 4; m > 0; m--) {
      const at = Math.floor(Math.random() * (s.length + 1));
      const piece = hostile[Math.floor(Math.random() * hostile.length)]!;
      s = Math.random() < 0.5 ? s.slice(0, at) + piece + s.slice(at) : s.slice(0, at) + piece + s.slice(at + 1);
    }
    yield s;
  }
}

test("base64 is decoded exactly when the request schema's pattern accepts it, to the bytes the string encodes (20,000 random strings, hostile characters among them)", () => {
  let valid = 0;
  for (const s of candidates(20_000)) {
    const accepted = s.length > 0 && pattern.test(s);
    const bytes = base64Bytes(s);
    expect({ s, decoded: bytes !== undefined }).toEqual({ s, decoded: accepted });
    let inArray = true;
    try {
      byteaArray([s], refuse);
    } catch {
      inArray = false;
    }
    expect({ s, inArray }).toEqual({ s, inArray: accepted });
    if (accepted) {
      valid++;
      expect(bytes!.toString("base64")).toBe(Buffer.from(s, "base64").toString("base64"));
    }
  }
  expect(valid).toBeGreaterThan(4_000); // both sides of the line were tried
});

test("byteaArray refuses by index: the first element that is not standard base64", () => {
  expect(() => byteaArray(["AAAA", "AA==", "AAA", "AAAA"], refuse)).toThrow("element 2");
  expect(() => byteaArray(["AAAA", "AA-_"], refuse)).toThrow("element 1");
  expect(() => byteaArray(["AA==AAAA"], refuse)).toThrow("element 0");
});

test("patched (patches/postgres@3.4.10.patch): a bytea[] built by byteaArray arrives byte for byte, every byte value, empty and large elements, beside text parameters of the same statement", async () => {
  const sql = postgres(db.directUrl, { max: 1, onnotice: () => {} });
  try {
    const blobs = [
      Buffer.from(Array.from({ length: 256 }, (_, i) => i)), Buffer.alloc(1), Buffer.from([0xff]),
      Buffer.from(crypto.getRandomValues(new Uint8Array(4627))), Buffer.from(crypto.getRandomValues(new Uint8Array(2))),
    ];
    const sent = blobs.map((b) => b.toString("base64"));
    for (const prepare of [true, false]) {
      const rows = await sql.unsafe<{ n: number; hex: string; label: string }[]>(
        `SELECT n::int, encode(b, 'hex') AS hex, $1::text AS label FROM unnest($2::bytea[]) WITH ORDINALITY AS u(b, n) ORDER BY n`,
        ["kept as text", sql.typed(byteaArray(sent, refuse), BYTEA_ARRAY)] as never[], { prepare });
      expect(rows.map((r) => r.hex)).toEqual(blobs.map((b) => b.toString("hex")));
      expect(rows.every((r) => r.label === "kept as text")).toBe(true);
    }
    const [empty] = await sql.unsafe<{ n: number }[]>("SELECT cardinality($1::bytea[]) AS n", [sql.typed(byteaArray([], refuse), BYTEA_ARRAY)] as never[]);
    expect(empty!.n).toBe(0);
    // a Buffer as a bytea parameter, as routed uploads send each blob
    const [one] = await sql.unsafe<{ hex: string }[]>("SELECT encode($1::bytea, 'hex') AS hex", [blobs[0]!] as never[]);
    expect(one!.hex).toBe(blobs[0]!.toString("hex"));
  } finally {
    await sql.end();
  }
});

test("patched: messages built without copies (Execute appended in Bind's buffer, room reserved once, no copy on write) arrive whole — large and pipelined, with non-ASCII text beside them, and through a cursor", async () => {
  const sql = postgres(db.directUrl, { max: 1, onnotice: () => {} });
  const random = (n: number) => Buffer.from(crypto.getRandomValues(new Uint8Array(Math.min(n, 65536))).subarray(0, n)).toString("base64");
  const text = "ключ-€-" + "é".repeat(3000); // 2 bytes a character: more than the room reserved for its length
  try {
    // 20 statements at once on one connection: pipelined, their messages joined into one write
    const sets = Array.from({ length: 20 }, (_, i) => Array.from({ length: 1 + (i % 4) * 30 }, (_, j) => random(1 + ((i * 7919 + j * 104729) % 4700))));
    const results = await Promise.all(sets.map((set, i) => sql.unsafe<{ n: number; md5: string; t: string }[]>(
      `SELECT n::int, md5(b) AS md5, $1::text AS t FROM unnest($2::bytea[]) WITH ORDINALITY AS u(b, n) ORDER BY n`,
      [`${text}${i}`, sql.typed(byteaArray(set, refuse), BYTEA_ARRAY)] as never[], { prepare: i % 2 === 0 })));
    results.forEach((rows, i) => {
      expect(rows.map((r) => r.md5)).toEqual(sets[i]!.map((s) => new Bun.CryptoHasher("md5").update(Buffer.from(s, "base64")).digest("hex")));
      expect(rows.every((r) => r.t === `${text}${i}`)).toBe(true);
    });
    // a cursor's Execute (a row count) follows the Bind in the same buffer
    const blobs = Array.from({ length: 25 }, (_, i) => random(4000 + i));
    const seen: string[] = [];
    for await (const rows of sql.unsafe<{ hex: string }[]>(`SELECT encode(b, 'base64') AS hex FROM unnest($1::bytea[]) WITH ORDINALITY AS u(b, n) ORDER BY n`,
      [sql.typed(byteaArray(blobs, refuse), BYTEA_ARRAY)] as never[]).cursor(10)) {
      seen.push(...rows.map((r) => r.hex.replaceAll("\n", "")));
    }
    expect(seen).toEqual(blobs);
  } finally {
    await sql.end();
  }
});

test("a text[] literal keeps every element a string, quotes and backslashes included", async () => {
  const values = ['plain', 'NULL', 'with "quote"', "back\\slash", "", "{braces}, commas"];
  const [row] = await db.sql.unsafe<{ v: string[] }[]>("SELECT $1::text::text[] AS v", [arrayLiteral(values)] as never[]);
  expect(row!.v).toEqual(values);
});
