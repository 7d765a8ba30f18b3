/**
 * The reporter's CSV: one header row, then one row per entry, formatted straight into bytes with
 * no per-row string or allocation.
 *
 * Columns: `seq,timestamp_ns,symbol,price,quantity,side,epoch`. Every row is one line: text
 * fields are quoted for a comma or a quote, and CR or LF in them is written as `?`. `price` is
 * `price_e4 / 10000` with four decimals; `epoch` is the segment incarnation the row came from, so
 * rows of a re-created segment are never confused with older ones.
 *
 * @module
 */
import { ENTRY_SIZE } from "./layout.ts";

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

const ENTRY_WORDS = ENTRY_SIZE / 4;
const COMMA = 0x2c;
const NEWLINE = 0x0a;
const QUOTE = 0x22;

/** Writes the decimal digits of a non-negative integer below 2^53 at `pos`; returns the end. */
export function writeUint(out: Uint8Array, pos: number, n: number): number {
  if (n < 1e9) return writeSmall(out, pos, n | 0);
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
 * Writes the u64 `hi * 2^32 + lo` in decimal, exactly, without BigInt: long division by 10^9 in
 * 16-bit steps keeps every intermediate below 2^53.
 */
export function writeU64(out: Uint8Array, pos: number, lo: number, hi: number): number {
  if (hi < 0x200000) return writeUint(out, pos, hi * 4294967296 + lo); // below 2^53
  const B = 1e9;
  const q1 = Math.floor(hi / B);
  let r = hi - q1 * B;
  let t = r * 65536 + (lo >>> 16);
  const q2 = Math.floor(t / B);
  r = t - q2 * B;
  t = r * 65536 + (lo & 0xffff);
  const q3 = Math.floor(t / B);
  r = t - q3 * B;
  const q = q1 * 4294967296 + q2 * 65536 + q3; // < 2^35
  if (q === 0) return writeUint(out, pos, r);
  pos = writeUint(out, pos, q);
  return writePadded(out, pos, r, 9);
}

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

/** Writes the seq `hi * 2^32 + lo` like {@link writeU64}, incrementing the last seq's digits. */
function writeSeq(out: Uint8Array, pos: number, lo: number, hi: number): number {
  if (hi >= 0x200000) {
    seqLast = -2;
    return writeU64(out, pos, lo, hi);
  }
  const n = hi * 4294967296 + lo;
  if (n === seqLast + 1) {
    let i = seqLength - 1;
    while (i >= 0 && seqDigits[i] === 0x39) seqDigits[i--] = 0x30;
    if (i >= 0) seqDigits[i]!++;
    else {
      seqDigits.copyWithin(1, 0, seqLength);
      seqDigits[0] = 0x31;
      seqLength++;
    }
  } else {
    seqLength = writeUint(seqDigits, 0, n);
  }
  seqLast = n;
  for (let i = 0; i < seqLength; i++) out[pos + i] = seqDigits[i]!;
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

/** Writes a price in 1/10,000 units as `units.dddd`. */
function writePrice(out: Uint8Array, pos: number, lo: number, hi: number): number {
  let negative = false;
  if (hi >= 0x8000_0000) {
    negative = true;
    lo = (~lo + 1) >>> 0;
    hi = (~hi + (lo === 0 ? 1 : 0)) >>> 0;
  }
  if (negative) out[pos++] = 0x2d;
  if (hi < 0x200000) {
    const v = hi * 4294967296 + lo;
    const units = Math.floor(v / 10000);
    pos = writeUint(out, pos, units);
    out[pos++] = 0x2e;
    return writePadded(out, pos, v - units * 10000, 4);
  }
  // Beyond 2^53: divide the u64 by 10^4 exactly in 16-bit steps.
  const D = 10000;
  const q1 = Math.floor(hi / D);
  let r = hi - q1 * D;
  let t = r * 65536 + (lo >>> 16);
  const q2 = Math.floor(t / D);
  r = t - q2 * D;
  t = r * 65536 + (lo & 0xffff);
  const q3 = Math.floor(t / D);
  r = t - q3 * D;
  // units = q1 * 2^32 + q2 * 2^16 + q3, printed as a u64 from words
  const low = q2 * 65536 + q3; // may exceed 2^32: carry into the high word
  const carry = Math.floor(low / 4294967296);
  pos = writeU64(out, pos, low - carry * 4294967296, q1 + carry);
  out[pos++] = 0x2e;
  return writePadded(out, pos, r, 4);
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

/**
 * Formats `count` entries held contiguously in `src` (16 words each) as CSV rows into `out` from
 * `pos`, each ending with `,<epoch>\n` (`epochTail` holds `,<epoch>\n` as bytes). Returns the end.
 * `out` must have room for `count * MAX_ROW_BYTES` bytes.
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
export function formatRows(
  src: Uint32Array,
  count: number,
  out: Uint8Array,
  pos: number,
  epochTail: Uint8Array,
): number {
  const bytes = new Uint8Array(src.buffer, src.byteOffset, src.byteLength);
  const tailLength = epochTail.length;
  for (let k = 0; k < count; k++) {
    const w = k * ENTRY_WORDS;
    const b = w * 4;
    pos = writeSeq(out, pos, src[w]!, src[w + 1]!);
    out[pos++] = COMMA;
    pos = writeTimestamp(out, pos, src[w + 2]!, src[w + 3]!);
    out[pos++] = COMMA;
    let len = 0;
    while (len < 8 && bytes[b + 16 + len] !== 0) len++;
    pos = writeText(out, pos, bytes, b + 16, len);
    out[pos++] = COMMA;
    pos = writePrice(out, pos, src[w + 6]!, src[w + 7]!);
    out[pos++] = COMMA;
    pos = writeUint(out, pos, src[w + 8]!);
    out[pos++] = COMMA;
    pos = writeText(out, pos, bytes, b + 36, bytes[b + 36] === 0 ? 0 : 1);
    for (let i = 0; i < tailLength; i++) out[pos++] = epochTail[i]!;
  }
  return pos;
}

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
