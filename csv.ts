/**
 * The reporter's CSV: one header row, then one row per entry, formatted straight into bytes with
 * no per-row string or allocation (except for float fields).
 *
 * Columns: `seq,timestamp_ns,<the schema's fields in order>,epoch`; for the default schema
 * `seq,timestamp_ns,symbol,price,quantity,side,epoch`. Every row is one line: text fields are
 * printed up to their first NUL, quoted for a comma or a quote, and CR or LF in them is written as
 * `?`. Integers print in decimal; a scaled integer prints with `scale` digits after the point
 * (`price` is `price_e4 / 10000` with four decimals). Floats print as JavaScript's shortest
 * round-trip number-to-string (`NaN`, `Infinity`, `-Infinity`, `1e-7`, ...), except that negative
 * zero prints `-0`. A `bytes[N]` field prints the base64 of its stored bytes (RFC 4648, standard
 * alphabet, with padding; empty for length 0), never quoted. `epoch` is the segment incarnation the row came from, so rows of a re-created
 * segment are never confused with older ones.
 *
 * {@link makeFormatter} generates one specialised formatter per schema (with `new Function`),
 * once, at start: the field loop is unrolled into straight-line code.
 *
 * @module
 */
import { BYTES_LENGTH_SIZE, ENTRY_SIZE, SegmentInvalidError } from "./layout.ts";
import { DEFAULT_SCHEMA, type Field, type Schema } from "./schema.ts";

/**
 * The header row, without its newline.
 *
 * @example
 * ```ts
 * import { CSV_HEADER } from "./csv.ts";
 * console.assert(CSV_HEADER.startsWith("seq,timestamp_ns,"));
 * ```
 */
export const CSV_HEADER = "seq,timestamp_ns,symbol,price,quantity,side,epoch";

/** Upper bound of one formatted row in bytes (quoted symbol with every byte doubled). */
export const MAX_ROW_BYTES = 20 + 1 + 20 + 1 + 18 + 1 + 22 + 1 + 10 + 1 + 4 + 1 + 20 + 1;

const COMMA = 0x2c;
const NEWLINE = 0x0a;
const QUOTE = 0x22;

/** Writes the decimal digits of a non-negative integer below 2^53 at `pos`; returns the end. */
export function writeUint(out: Uint8Array, pos: number, n: number): number {
  if (n < 1e9) return writeSmall(out, pos, n | 0);
  if (n < 1e10) {
    // Ten digits (a u32 or an i32 magnitude above 10^9): one leading digit, then nine.
    const head = (n / 1e9) | 0;
    out[pos] = 0x30 + head;
    return writePadded(out, pos + 1, n - head * 1e9, 9);
  }
  // Split into a head and nine low digits so each part stays in int32 arithmetic.
  const head = Math.floor(n / 1e9);
  pos = writeUint(out, pos, head);
  return writePadded(out, pos, (n - head * 1e9) | 0, 9);
}

/** "00" to "99" as ASCII byte pairs: two digits per division. */
const DIGIT_PAIRS = (() => {
  const d = new Uint8Array(200);
  for (let i = 0; i < 100; i++) {
    d[i * 2] = 0x30 + ((i / 10) | 0);
    d[i * 2 + 1] = 0x30 + (i % 10);
  }
  return d;
})();

/** Number of decimal digits of 0 <= n < 10^9. */
function digitCount(n: number): number {
  if (n < 10000) return n < 10 ? 1 : n < 100 ? 2 : n < 1000 ? 3 : 4;
  if (n < 10_000_000) return n < 100_000 ? 5 : n < 1_000_000 ? 6 : 7;
  return n < 100_000_000 ? 8 : 9;
}

/** Writes the last `count` digits of int32 `n` ending at `end`, two at a time. */
function fillDigits(out: Uint8Array, end: number, n: number, count: number): void {
  let p = end;
  while (count >= 2) {
    const q = (n / 100) | 0;
    const r = (n - q * 100) << 1;
    out[--p] = DIGIT_PAIRS[r + 1]!;
    out[--p] = DIGIT_PAIRS[r]!;
    n = q;
    count -= 2;
  }
  if (count === 1) out[--p] = 0x30 + n % 10;
}

/** Writes 0 <= n < 10^9 with no leading zeros. */
function writeSmall(out: Uint8Array, pos: number, n: number): number {
  const len = digitCount(n);
  fillDigits(out, pos + len, n, len);
  return pos + len;
}

/** Writes 0 <= n < 10^width (width <= 9) zero-padded to `width` digits; returns the end. */
function writePadded(out: Uint8Array, pos: number, n: number, width: number): number {
  fillDigits(out, pos + width, n, width);
  return pos + width;
}

/**
 * Writes the u64 `hi * 2^32 + lo` in decimal, exactly, without BigInt (the long division of
 * `writeU64At`, which the generated formatters call on the entry's words).
 */
export function writeU64(out: Uint8Array, pos: number, lo: number, hi: number): number {
  U64_WORDS[0] = lo;
  U64_WORDS[1] = hi;
  return writeU64At(out, pos, U64_WORDS, 0);
}

/** The words of {@link writeU64}'s argument (a scratch: formatting runs on one thread). */
const U64_WORDS = new Uint32Array(2);

// Timestamps of neighbouring rows share their high word and their seconds: keep both digested.
let tsHi = -1;
let tsBaseSeconds = 0; // floor(hi * 2^32 / 10^9)
let tsBaseNanos = 0; // (hi * 2^32) mod 10^9
let tsSeconds = -1;
const tsSecondsDigits = new Uint8Array(20);
let tsSecondsLength = 0;

/**
 * Writes the u64 nanosecond timestamp `hi * 2^32 + lo` exactly, like {@link writeU64}, but with
 * the division of the high word and the digits of the seconds cached across calls: rows of one
 * batch mostly differ only in their last nine digits.
 */
export function writeTimestamp(out: Uint8Array, pos: number, lo: number, hi: number): number {
  WORDS[0] = lo;
  WORDS[1] = hi;
  return writeTimestampAt(out, pos, WORDS, 0);
}

/** Scratch words for the exported number writers, which take a u64 as two numbers. */
const WORDS = new Uint32Array(2);

/**
 * {@link writeTimestamp} of the words `src[i]` (low) and `src[i + 1]` (high), read here: a word of
 * 2^30 or more passed to a function that is not inlined would be boxed on the heap.
 */
function writeTimestampAt(out: Uint8Array, pos: number, src: Uint32Array, i: number): number {
  const lo = src[i]!;
  const hi = src[i + 1]!;
  if (hi !== tsHi) {
    const B = 1e9;
    const q1 = Math.floor(hi / B);
    let r = hi - q1 * B;
    let t = r * 65536;
    const q2 = Math.floor(t / B);
    r = t - q2 * B;
    t = r * 65536;
    const q3 = Math.floor(t / B);
    tsBaseNanos = t - q3 * B;
    tsBaseSeconds = q1 * 4294967296 + q2 * 65536 + q3;
    tsHi = hi;
  }
  const t = tsBaseNanos + lo; // < 10^9 + 2^32: exact
  const carry = Math.floor(t / 1e9);
  const seconds = tsBaseSeconds + carry;
  const nanos = t - carry * 1e9;
  if (seconds === 0) return writeSmall(out, pos, nanos);
  if (seconds !== tsSeconds) {
    tsSeconds = seconds;
    tsSecondsLength = writeUint(tsSecondsDigits, 0, seconds);
  }
  for (let i = 0; i < tsSecondsLength; i++) out[pos + i] = tsSecondsDigits[i]!;
  return writePadded(out, pos + tsSecondsLength, nanos, 9);
}

// Consecutive rows carry consecutive seqs: keep the last one's digits and count them up.
let seqLast = -2;
const seqDigits = new Uint8Array(24);
let seqLength = 0;

/** Writes the seq of words `src[i]`, `src[i + 1]`, counting the last seq's digits up. */
function writeSeqAt(out: Uint8Array, pos: number, src: Uint32Array, i: number): number {
  const hi = src[i + 1]!;
  if (hi >= 0x200000) {
    seqLast = -2;
    return writeU64At(out, pos, src, i);
  }
  const n = hi * 4294967296 + src[i]!;
  if (n === seqLast + 1) {
    let k = seqLength - 1;
    while (k >= 0 && seqDigits[k] === 0x39) seqDigits[k--] = 0x30;
    if (k >= 0) seqDigits[k]!++;
    else {
      seqDigits.copyWithin(1, 0, seqLength);
      seqDigits[0] = 0x31;
      seqLength++;
    }
  } else {
    seqLength = writeUint(seqDigits, 0, n);
  }
  seqLast = n;
  for (let k = 0; k < seqLength; k++) out[pos + k] = seqDigits[k]!;
  return pos + seqLength;
}

/** Writes the i64 `hi * 2^32 + lo` (hi as signed) in decimal. */
export function writeI64(out: Uint8Array, pos: number, lo: number, hi: number): number {
  if (hi >= 0x8000_0000) {
    out[pos++] = 0x2d; // '-'
    // two's complement negation of (hi, lo)
    lo = (~lo + 1) >>> 0;
    hi = (~hi + (lo === 0 ? 1 : 0)) >>> 0;
  }
  return writeU64(out, pos, lo, hi);
}

/** Whether a byte must be quoted in a CSV field. */
function needsQuote(b: number): boolean {
  return b === COMMA || b === QUOTE;
}

/** A text byte as written: CR and LF become `?`, so that every LF in the file ends a row. */
function textByte(b: number): number {
  return b === NEWLINE || b === 0x0d ? 0x3f : b;
}

/**
 * Writes a text field of `len` bytes from `src` at `at`, quoted per RFC 4180 when it holds a comma
 * or a quote. CR and LF are written as `?`: a row never spans lines, which is what lets a restart
 * find the last row and repair a torn one by looking for the last LF.
 */
function writeText(out: Uint8Array, pos: number, src: Uint8Array, at: number, len: number): number {
  let quote = false;
  for (let i = 0; i < len; i++) if (needsQuote(src[at + i]!)) quote = true;
  if (!quote) {
    for (let i = 0; i < len; i++) out[pos++] = textByte(src[at + i]!);
    return pos;
  }
  out[pos++] = QUOTE;
  for (let i = 0; i < len; i++) {
    const b = src[at + i]!;
    if (b === QUOTE) out[pos++] = QUOTE;
    out[pos++] = textByte(b);
  }
  out[pos++] = QUOTE;
  return pos;
}

/** The base64 alphabet of RFC 4648 (standard, not URL-safe), as ASCII codes. */
const BASE64 = new TextEncoder().encode(
  "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
);
/** Two base64 characters for every 12-bit value, low byte first: one lookup per 12 bits. */
const BASE64_PAIRS = (() => {
  const t = new Uint16Array(4096);
  for (let i = 0; i < 4096; i++) t[i] = BASE64[i >>> 6]! | (BASE64[i & 63]! << 8);
  return t;
})();

/**
 * Writes the base64 (RFC 4648, standard alphabet, `=` padding) of `len` bytes of `src` from `at`
 * into `out` at `pos`; returns the end. Allocates nothing: how a `bytes[N]` field prints.
 *
 * @example
 * ```ts
 * import { writeBase64 } from "./csv.ts";
 * const out = new Uint8Array(8);
 * const end = writeBase64(out, 0, new TextEncoder().encode("hi!?"), 0, 4);
 * console.assert(new TextDecoder().decode(out.subarray(0, end)) === "aGkhPw==");
 * ```
 */
export function writeBase64(
  out: Uint8Array,
  pos: number,
  src: Uint8Array,
  at: number,
  len: number,
): number {
  const end = at + len - (len % 3);
  for (let i = at; i < end; i += 3) {
    const n = (src[i]! << 16) | (src[i + 1]! << 8) | src[i + 2]!;
    const hi = BASE64_PAIRS[n >>> 12]!;
    const lo = BASE64_PAIRS[n & 4095]!;
    out[pos] = hi & 0xff;
    out[pos + 1] = hi >>> 8;
    out[pos + 2] = lo & 0xff;
    out[pos + 3] = lo >>> 8;
    pos += 4;
  }
  const rest = len % 3;
  if (rest !== 0) {
    const n = (src[end]! << 16) | (rest === 2 ? src[end + 1]! << 8 : 0);
    out[pos++] = BASE64[n >>> 18]!;
    out[pos++] = BASE64[(n >>> 12) & 63]!;
    out[pos++] = rest === 2 ? BASE64[(n >>> 6) & 63]! : 0x3d;
    out[pos++] = 0x3d;
  }
  return pos;
}

/**
 * Writes the `bytes[N]` field `N` = `max` whose length word is `src[i]` and whose data starts at
 * byte `b` of `bytes`, as base64. A stored length above N is a damaged entry: a
 * SegmentInvalidError naming the entry's seq (word `src[w]`), the field and the length.
 */
function writeBytesField(
  out: Uint8Array,
  pos: number,
  src: Uint32Array,
  i: number,
  bytes: Uint8Array,
  b: number,
  max: number,
  name: string,
  w: number,
): number {
  const len = src[i]!;
  if (len > max) {
    throw new SegmentInvalidError(
      `Cannot use entry ${
        src[w]! + src[w + 1]! * 4294967296
      } as field ${name} length must be at most ${max}: current value is ${len}`,
    );
  }
  return writeBase64(out, pos, bytes, b, len);
}

/**
 * A CSV formatter for one schema and entry size: formats `count` entries held contiguously in
 * `src` (entry size / 4 words each) as rows into `out` from `pos`, each ending with `epochTail` (`,<epoch>\n` as bytes).
 * Returns the end. `out` must have room for `count * (maxRowBytes(schema) + epochTail.length)`.
 *
 * @example
 * ```ts
 * import { makeFormatter, type RowFormatter } from "./csv.ts";
 * import { DEFAULT_SCHEMA } from "./schema.ts";
 * const format: RowFormatter = makeFormatter(DEFAULT_SCHEMA);
 * console.assert(format(new Uint32Array(16), 0, new Uint8Array(0), 0, new Uint8Array(0)) === 0);
 * ```
 */
export type RowFormatter = (
  src: Uint32Array,
  count: number,
  out: Uint8Array,
  pos: number,
  epochTail: Uint8Array,
) => number;

/**
 * The CSV header row of `schema`, without its newline: `seq,timestamp_ns,<fields>,epoch`.
 *
 * @example
 * ```ts
 * import { csvHeader } from "./csv.ts";
 * import { defineSchema } from "./schema.ts";
 * const s = defineSchema([{ name: "px", type: "f64" }]);
 * console.assert(csvHeader(s) === "seq,timestamp_ns,px,epoch");
 * ```
 */
export function csvHeader(schema: Schema): string {
  return ["seq", "timestamp_ns", ...schema.fields.map((f) => f.name), "epoch"].join(",");
}

/** Most bytes a field prints. */
function fieldMaxBytes(f: Field): number {
  if (f.kind === "char") return 2 * f.size + 2;
  if (f.kind === "bytes") return 4 * Math.ceil(f.maxLength / 3);
  if (f.kind === "float") return 25;
  const digits = [0, 3, 5, 0, 10, 0, 0, 0, 20][f.size]!;
  return Math.max(digits, f.scale + 1) + (f.scale > 0 ? 1 : 0) + (f.kind === "int" ? 1 : 0);
}

/**
 * Upper bound of one formatted row of `schema` in bytes, without the epoch tail but with the
 * comma before it.
 *
 * @example
 * ```ts
 * import { maxRowBytes, MAX_ROW_BYTES } from "./csv.ts";
 * import { DEFAULT_SCHEMA } from "./schema.ts";
 * console.assert(maxRowBytes(DEFAULT_SCHEMA) <= MAX_ROW_BYTES);
 * ```
 */
export function maxRowBytes(schema: Schema): number {
  let n = 20 + 1 + 20 + 1;
  for (const f of schema.fields) n += fieldMaxBytes(f) + 1;
  return n;
}

// ---- Helpers of the generated formatters. A double that is not a small integer (a word of 2^30
// or more, a 53-bit value) is boxed on the heap when it is passed to a function V8 did not
// inline, so these take the source array and a word index and read the words themselves, and
// pass on only values below 10^9: the rows of any schema allocate nothing (floats aside).

/** Negated i64 words for the helpers below (a scratch: the formatter runs on one thread). */
const NEGATED = new Uint32Array(2);

/** Writes the u64 of words `src[i]` (low) and `src[i + 1]` (high) in decimal, exactly. */
function writeU64At(out: Uint8Array, pos: number, src: Uint32Array, i: number): number {
  const lo = src[i]!;
  const hi = src[i + 1]!;
  if (hi < 0x200000) {
    // Below 2^53: split into a head below 2^53 / 10^9 and nine digits, both small integers.
    const n = hi * 4294967296 + lo;
    const head = Math.floor(n / 1e9);
    const low = n - head * 1e9;
    if (head === 0) return writeSmall(out, pos, low);
    pos = writeSmall(out, pos, head);
    return writePadded(out, pos, low, 9);
  }
  // Long division by 10^9 in 16-bit steps: every intermediate stays below 2^53.
  const B = 1e9;
  const q1 = Math.floor(hi / B);
  let r = hi - q1 * B;
  let t = r * 65536 + (lo >>> 16);
  const q2 = Math.floor(t / B);
  r = t - q2 * B;
  t = r * 65536 + (lo & 0xffff);
  const q3 = Math.floor(t / B);
  r = t - q3 * B;
  const q = q1 * 4294967296 + q2 * 65536 + q3; // < 2^35, non-zero
  const qHead = Math.floor(q / 1e9); // < 35
  const qLow = q - qHead * 1e9;
  if (qHead === 0) pos = writeSmall(out, pos, qLow);
  else {
    pos = writeSmall(out, pos, qHead);
    pos = writePadded(out, pos, qLow, 9);
  }
  return writePadded(out, pos, r, 9);
}

/** Writes the u32 `src[i]` in decimal. */
function writeU32At(out: Uint8Array, pos: number, src: Uint32Array, i: number): number {
  const v = src[i]!;
  if (v < 1e9) return writeSmall(out, pos, v);
  const head = (v / 1e9) | 0;
  out[pos] = 0x30 + head;
  return writePadded(out, pos + 1, v - head * 1e9, 9);
}

/** Writes the i32 `src[i]` in decimal. */
function writeI32At(out: Uint8Array, pos: number, src: Uint32Array, i: number): number {
  let v = src[i]! | 0;
  if (v < 0) {
    out[pos++] = 0x2d;
    v = -v;
  }
  if (v < 1e9) return writeSmall(out, pos, v);
  const head = (v / 1e9) | 0;
  out[pos] = 0x30 + head;
  return writePadded(out, pos + 1, v - head * 1e9, 9);
}

/** Writes the i64 of words `src[i]`, `src[i + 1]` in decimal. */
function writeI64At(out: Uint8Array, pos: number, src: Uint32Array, i: number): number {
  const hi = src[i + 1]!;
  if (hi < 0x8000_0000) return writeU64At(out, pos, src, i);
  out[pos++] = 0x2d;
  const lo = (~src[i]! + 1) >>> 0;
  NEGATED[0] = lo;
  NEGATED[1] = (~hi + (lo === 0 ? 1 : 0)) >>> 0;
  return writeU64At(out, pos, NEGATED, 0);
}

const scaledDigits = new Uint8Array(24);

/** Writes the u64 of words `src[i]`, `src[i + 1]` with `scale` digits after the point. */
function writeScaledAt(
  out: Uint8Array,
  pos: number,
  src: Uint32Array,
  i: number,
  scale: number,
): number {
  const len = writeU64At(scaledDigits, 0, src, i);
  if (len <= scale) {
    out[pos++] = 0x30;
    out[pos++] = 0x2e;
    for (let k = len; k < scale; k++) out[pos++] = 0x30;
    for (let k = 0; k < len; k++) out[pos++] = scaledDigits[k]!;
    return pos;
  }
  const cut = len - scale;
  for (let k = 0; k < cut; k++) out[pos++] = scaledDigits[k]!;
  out[pos++] = 0x2e;
  for (let k = cut; k < len; k++) out[pos++] = scaledDigits[k]!;
  return pos;
}

/** Writes the i64 of words `src[i]`, `src[i + 1]` with `scale` digits after the point. */
function writeScaledI64At(
  out: Uint8Array,
  pos: number,
  src: Uint32Array,
  i: number,
  scale: number,
): number {
  const hi = src[i + 1]!;
  if (hi < 0x8000_0000) return writeScaledAt(out, pos, src, i, scale);
  out[pos++] = 0x2d;
  const lo = (~src[i]! + 1) >>> 0;
  NEGATED[0] = lo;
  NEGATED[1] = (~hi + (lo === 0 ? 1 : 0)) >>> 0;
  return writeScaledAt(out, pos, NEGATED, 0, scale);
}

/** Writes a float as JavaScript's number-to-string, negative zero as `-0`. Allocates a string. */
function writeFloat(out: Uint8Array, pos: number, x: number): number {
  if (x === 0) {
    if (1 / x < 0) out[pos++] = 0x2d;
    out[pos++] = 0x30;
    return pos;
  }
  const s = String(x);
  for (let i = 0; i < s.length; i++) out[pos++] = s.charCodeAt(i);
  return pos;
}

/** The helpers a generated formatter calls, passed in by name. */
const HELPERS = {
  writeBytesField,
  writePadded,
  writeSmall,
  writeText,
  writeFloat,
  writeSeqAt,
  writeTimestampAt,
  writeU32At,
  writeI32At,
  writeU64At,
  writeI64At,
  writeScaledAt,
  writeScaledI64At,
};

/** The statements that print field `f` of the entry at word `w` / byte `b`. */
function fieldCode(f: Field): string {
  const o = f.offset;
  const wo = o >>> 2;
  const neg = `if (v < 0) { out[pos++] = 45; v = -v; }`;
  // An integer 0 <= x < 2^32 in local `name`: below 10^9 at once, else one digit and nine.
  const u32 = (name: string) =>
    `if (${name} < 1e9) pos = writeSmall(out, pos, ${name}); ` +
    `else { n = (${name} / 1e9) | 0; out[pos++] = 48 + n; ` +
    `pos = writePadded(out, pos, ${name} - n * 1e9, 9); }`;
  // A magnitude v < 2^32 (64-bit fields take their own helpers) with `scale` decimals.
  const p = 10 ** f.scale;
  const scaled = f.scale <= 9
    ? `u = Math.floor(v / ${p}); ${u32("u")} out[pos++] = 46; ` +
      `pos = writePadded(out, pos, v - u * ${p}, ${f.scale});`
    // 10^scale > 2^32 > v: "0.", zeros, then v as ten digits.
    : `out[pos++] = 48; out[pos++] = 46; ${"out[pos++] = 48; ".repeat(f.scale - 10)}` +
      `n = (v / 1e9) | 0; out[pos++] = 48 + n; pos = writePadded(out, pos, v - n * 1e9, 9);`;
  const put = f.scale > 0 ? scaled : u32("v");
  if (f.kind === "bytes") {
    return `pos = writeBytesField(out, pos, src, w + ${wo}, bytes, b + ${
      o + BYTES_LENGTH_SIZE
    }, ${f.maxLength}, ${JSON.stringify(f.name)}, w);`;
  }
  switch (f.type) {
    case "u8":
      return `v = bytes[b + ${o}]; ${put}`;
    case "i8":
      return `v = (bytes[b + ${o}] << 24) >> 24; ${neg} ${put}`;
    case "u16":
      return `v = bytes[b + ${o}] | (bytes[b + ${o + 1}] << 8); ${put}`;
    case "i16":
      return `v = ((bytes[b + ${o}] | (bytes[b + ${o + 1}] << 8)) << 16) >> 16; ${neg} ${put}`;
    case "u32":
      if (f.scale === 0) return `pos = writeU32At(out, pos, src, w + ${wo});`;
      return `v = src[w + ${wo}]; ${put}`;
    case "i32":
      if (f.scale === 0) return `pos = writeI32At(out, pos, src, w + ${wo});`;
      return `v = src[w + ${wo}] | 0; ${neg} ${put}`;
    case "u64":
    case "i64": {
      const signed = f.type === "i64";
      if (f.scale === 0) {
        return `pos = ${signed ? "writeI64At" : "writeU64At"}(out, pos, src, w + ${wo});`;
      }
      if (f.scale > 9) {
        return `pos = ${
          signed ? "writeScaledI64At" : "writeScaledAt"
        }(out, pos, src, w + ${wo}, ${f.scale});`;
      }
      // Below 2^53 in magnitude (every price): inline, with local doubles only.
      // The sign is written only on the inline path: the helper writes its own.
      const negate = signed
        ? `if (hi >= 0x80000000) { sg = 1; lo = (~lo + 1) >>> 0; ` +
          `hi = (~hi + (lo === 0 ? 1 : 0)) >>> 0; } `
        : "";
      return `lo = src[w + ${wo}]; hi = src[w + ${wo + 1}]; sg = 0; ${negate}` +
        `if (hi < 0x200000) { if (sg === 1) out[pos++] = 45; ` +
        `v = hi * 4294967296 + lo; u = Math.floor(v / ${p}); ` +
        `n = Math.floor(u / 1e9); c = u - n * 1e9; ` +
        `if (n === 0) pos = writeSmall(out, pos, c); ` +
        `else { pos = writeSmall(out, pos, n); pos = writePadded(out, pos, c, 9); } ` +
        `out[pos++] = 46; pos = writePadded(out, pos, v - u * ${p}, ${f.scale}); } ` +
        `else pos = ${
          signed ? "writeScaledI64At" : "writeScaledAt"
        }(out, pos, src, w + ${wo}, ${f.scale});`;
    }
    case "f32":
      return `pos = writeFloat(out, pos, view.getFloat32(b + ${o}, true));`;
    case "f64":
      return `pos = writeFloat(out, pos, view.getFloat64(b + ${o}, true));`;
    default: // char[N]: inline when no quoting is needed (the usual case), else writeText
      if (f.size === 1) {
        return `c = bytes[b + ${o}]; if (c !== 0) { if (c === 44 || c === 34) ` +
          `pos = writeText(out, pos, bytes, b + ${o}, 1); ` +
          `else out[pos++] = c === 10 || c === 13 ? 63 : c; }`;
      }
      return `n = 0; q = 0; while (n < ${f.size}) { c = bytes[b + ${o} + n]; if (c === 0) break; ` +
        `if (c === 44 || c === 34) q = 1; n++; } ` +
        `if (q === 0) { for (let i = 0; i < n; i++) { c = bytes[b + ${o} + i]; ` +
        `out[pos++] = c === 10 || c === 13 ? 63 : c; } } ` +
        `else pos = writeText(out, pos, bytes, b + ${o}, n);`;
  }
}

/**
 * Generates the CSV formatter of `schema` for entries of `entrySize` bytes (64 by default), once:
 * straight-line code per field, no per-row allocation except for float fields (number-to-string).
 * Build it at start and reuse it.
 *
 * @example
 * ```ts
 * import { makeFormatter } from "./csv.ts";
 * import { defineSchema } from "./schema.ts";
 * const s = defineSchema([{ name: "venue", type: "char[4]" }, { name: "px", type: "i32", scale: 2 }]);
 * const src = new Uint32Array(16);
 * src[0] = 7; src[4] = 0x53414e58; src[5] = -12345 >>> 0;
 * const out = new Uint8Array(256);
 * const end = makeFormatter(s)(src, 1, out, 0, new TextEncoder().encode(",1\n"));
 * console.assert(new TextDecoder().decode(out.subarray(0, end)) === "7,0,XNAS,-123.45,1\n");
 * ```
 */
export function makeFormatter(schema: Schema, entrySize = ENTRY_SIZE): RowFormatter {
  const body = schema.fields.map((f) => `    out[pos++] = 44;\n    ${fieldCode(f)}`).join("\n");
  const source = `
"use strict";
const { ${Object.keys(HELPERS).join(", ")} } = helpers;
let lastSrc = null, lastBytes = null, lastView = null;
return function formatRows(src, count, out, pos, epochTail) {
  if (src !== lastSrc) {
    lastSrc = src;
    lastBytes = new Uint8Array(src.buffer, src.byteOffset, src.byteLength);
    lastView = new DataView(src.buffer, src.byteOffset, src.byteLength);
  }
  const bytes = lastBytes, view = lastView;
  const tailLength = epochTail.length;
  // n, q, c, sg: small integers (text length, quote flag, byte, sign); v, u, lo, hi: numbers.
  let n = 0, q = 0, c = 0, sg = 0, v = 0, u = 0, lo = 0, hi = 0;
  for (let k = 0; k < count; k++) {
    const w = k * ${entrySize >>> 2};
    const b = w * 4;
    pos = writeSeqAt(out, pos, src, w);
    out[pos++] = 44;
    pos = writeTimestampAt(out, pos, src, w + 2);
${body}
    out.set(epochTail, pos);
    pos += tailLength;
  }
  return pos;
};`;
  return new Function("helpers", source)(HELPERS) as RowFormatter;
}

/**
 * Formats `count` entries of the default schema (see {@link RowFormatter}): the formatter that
 * {@link makeFormatter} generates for `DEFAULT_SCHEMA`.
 *
 * @example
 * ```ts
 * import { formatRows } from "./csv.ts";
 * const src = new Uint32Array(16);
 * src[0] = 5; src[4] = 0x4c5041; src[6] = 1234567; src[8] = 9; src[9] = 0x42;
 * const out = new Uint8Array(256);
 * const end = formatRows(src, 1, out, 0, new TextEncoder().encode(",1\n"));
 * console.assert(new TextDecoder().decode(out.subarray(0, end)) === "5,0,APL,123.4567,9,B,1\n");
 * ```
 */
export const formatRows: RowFormatter = makeFormatter(DEFAULT_SCHEMA);

/**
 * One parsed CSV row of the reporter's format (for tests, reconciliation and tools).
 *
 * @example
 * ```ts
 * import { parseRow, type Row } from "./csv.ts";
 * const row: Row | undefined = parseRow("1,2,MSFT,100.5000,3,S,9");
 * console.assert(row?.epoch === 9n);
 * ```
 */
export interface Row {
  /** The entry's index. */
  seq: number;
  /** CLOCK_REALTIME nanoseconds at publication. */
  timestampNs: bigint;
  /** Instrument symbol. */
  symbol: string;
  /** Price as printed, e.g. `123.4567`. */
  price: string;
  /** Quantity. */
  quantity: number;
  /** `B` or `S`. */
  side: string;
  /** The segment incarnation the row came from. */
  epoch: bigint;
}

/**
 * Parses one row of the reporter's CSV (no trailing newline). Returns `undefined` when the line
 * is not a well-formed row.
 *
 * @example
 * ```ts
 * import { parseRow } from "./csv.ts";
 * console.assert(parseRow("5,10,AAPL,100.0000,3,B,7")?.seq === 5);
 * ```
 */
export function parseRow(line: string): Row | undefined {
  const fields = splitRow(line);
  if (fields === undefined) return undefined;
  if (fields.length !== 7) return undefined;
  const [seq, ts, symbol, price, quantity, side, epoch] = fields as [
    string,
    string,
    string,
    string,
    string,
    string,
    string,
  ];
  if (!/^\d+$/.test(seq) || !/^\d+$/.test(ts) || !/^\d+$/.test(epoch) || !/^\d+$/.test(quantity)) {
    return undefined;
  }
  return {
    seq: Number(seq),
    timestampNs: BigInt(ts),
    symbol,
    price,
    quantity: Number(quantity),
    side,
    epoch: BigInt(epoch),
  };
}

/**
 * The seq and epoch of one row of a reporter CSV of `columns` columns (any schema), or
 * `undefined` when the line is not such a row. What a restart needs to resume after it.
 *
 * @example
 * ```ts
 * import { parseRowEnds } from "./csv.ts";
 * console.assert(parseRowEnds('5,10,"a,b",1.5,7', 5)?.epoch === 7n);
 * ```
 */
export function parseRowEnds(
  line: string,
  columns: number,
): { seq: number; timestampNs: bigint; epoch: bigint } | undefined {
  const fields = splitRow(line);
  if (fields === undefined || fields.length !== columns) return undefined;
  const seq = fields[0]!;
  const ts = fields[1]!;
  const epoch = fields[columns - 1]!;
  if (!/^\d+$/.test(seq) || !/^\d+$/.test(ts) || !/^\d+$/.test(epoch)) return undefined;
  return { seq: Number(seq), timestampNs: BigInt(ts), epoch: BigInt(epoch) };
}

/**
 * Splits one CSV line (no newline) into its fields, undoing RFC 4180 quoting. Returns
 * `undefined` for a malformed line (an unterminated quote, text after a closing quote).
 *
 * @example
 * ```ts
 * import { splitRow } from "./csv.ts";
 * console.assert(splitRow('1,"a,""b",c')?.[1] === 'a,"b');
 * ```
 */
export function splitRow(line: string): string[] | undefined {
  const fields: string[] = [];
  let i = 0;
  while (i <= line.length) {
    if (line[i] === '"') {
      let value = "";
      i++;
      for (;;) {
        if (i >= line.length) return undefined;
        if (line[i] === '"') {
          if (line[i + 1] === '"') {
            value += '"';
            i += 2;
            continue;
          }
          i++;
          break;
        }
        value += line[i++];
      }
      fields.push(value);
      if (i < line.length && line[i] !== ",") return undefined;
      i++;
    } else {
      let end = line.indexOf(",", i);
      if (end < 0) end = line.length;
      fields.push(line.slice(i, end));
      i = end + 1;
    }
  }
  return fields;
}
