/**
 * The reporter's CSV format: exact decimal output of u64/i64 fields beyond 2^53, RFC 4180
 * quoting, and the parseRow round trip; fields filling entries of 64 bytes to 64 KiB round-trip
 * through the ring and the CSV, bytes[N] as base64; a damaged bytes length is refused. No
 * processes.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { isDeepStrictEqual } from "node:util";
import fc from "fast-check";
import {
  CSV_HEADER,
  csvHeader,
  formatRows,
  makeFormatter,
  MAX_ROW_BYTES,
  maxRowBytes,
  parseRow,
  splitRow,
  writeBase64,
  writeI64,
  writeU64,
  writeUint,
} from "../csv.ts";
import {
  createRingBuffer,
  ENTRY_WORDS,
  type MemoryOrdering,
  RingReader,
  RingWriter,
} from "../ring.ts";
import {
  DEFAULT_SCHEMA,
  defineSchema,
  describeSchema,
  entriesOffsetFor,
  type Field,
  type FieldValue,
  type Schema,
  simulatedValue,
} from "../schema.ts";
import { expectedField } from "./_helpers.ts";

interface RawEntry {
  seq: bigint;
  timestampNs: bigint;
  symbol: Uint8Array; // up to 8 bytes, NUL-padded in the slot
  priceE4: bigint; // i64
  quantity: number; // u32
  side: number; // one byte, 0 for none
}

/** Lays out entries as the ring holds them: 16 little-endian words each. */
function slots(entries: RawEntry[]): Uint32Array {
  const words = new Uint32Array(entries.length * ENTRY_WORDS);
  const view = new DataView(words.buffer);
  entries.forEach((e, k) => {
    const at = k * 64;
    view.setBigUint64(at, e.seq, true);
    view.setBigUint64(at + 8, e.timestampNs, true);
    new Uint8Array(words.buffer, at + 16, 8).set(e.symbol);
    view.setBigInt64(at + 24, e.priceE4, true);
    view.setUint32(at + 32, e.quantity, true);
    view.setUint8(at + 36, e.side);
  });
  return words;
}

function format(entries: RawEntry[], epoch = 7n): string {
  const out = new Uint8Array(entries.length * MAX_ROW_BYTES + 64);
  const tail = new TextEncoder().encode(`,${epoch}\n`);
  const end = formatRows(slots(entries), entries.length, out, 0, tail);
  return new TextDecoder().decode(out.subarray(0, end));
}

const ascii = (s: string) => new TextEncoder().encode(s);
const B = "B".charCodeAt(0);

function entry(fields: Partial<RawEntry>): RawEntry {
  return {
    seq: 1n,
    timestampNs: 2n,
    symbol: ascii("AAPL"),
    priceE4: 1_234_567n,
    quantity: 10,
    side: B,
    ...fields,
  };
}

/** The expected price text of a price in 1/10,000 units, computed with BigInt. */
function priceText(p: bigint): string {
  const sign = p < 0n ? "-" : "";
  const a = p < 0n ? -p : p;
  return `${sign}${a / 10000n}.${(a % 10000n).toString().padStart(4, "0")}`;
}

/** CR and LF written as "?" (a row never spans lines); RFC 4180 quoting for a comma or quote. */
function csvField(s: string): string {
  s = s.replace(/[\r\n]/g, "?");
  return /[",]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
}

Deno.test("csv header is exactly seq,timestamp_ns,symbol,price,quantity,side,epoch", () => {
  assert.equal(CSV_HEADER, "seq,timestamp_ns,symbol,price,quantity,side,epoch");
});

Deno.test("csv formats a plain row", () => {
  assert.equal(format([entry({})]), "1,2,AAPL,123.4567,10,B,7\n");
  assert.equal(
    format([entry({ seq: 0n, timestampNs: 0n, priceE4: 0n, quantity: 0 })], 1n),
    "0,0,AAPL,0.0000,0,B,1\n",
  );
});

Deno.test("csv writes u64 timestamps and seqs above 2^53 exactly", () => {
  const cases = [
    2n ** 53n - 1n,
    2n ** 53n,
    2n ** 53n + 1n,
    2n ** 63n,
    1_795_692_687_725_493_311n,
    10n ** 19n,
    10n ** 19n - 1n,
    2n ** 64n - 2n,
    2n ** 64n - 1n,
    (2n ** 32n) * 1_000_000_000n + 999_999_999n,
  ];
  for (const v of cases) {
    assert.equal(
      format([entry({ seq: v, timestampNs: v })]),
      `${v},${v},AAPL,123.4567,10,B,7\n`,
      `value ${v}`,
    );
  }
});

Deno.test("csv writes negative and extreme i64 prices with four decimals", () => {
  const cases: [bigint, string][] = [
    [-1n, "-0.0001"],
    [-10_000n, "-1.0000"],
    [-12_345_678n, "-1234.5678"],
    [-(2n ** 63n), "-922337203685477.5808"],
    [2n ** 63n - 1n, "922337203685477.5807"],
    [-(2n ** 53n) - 1n, priceText(-(2n ** 53n) - 1n)],
    [2n ** 53n + 12_345n, priceText(2n ** 53n + 12_345n)],
    [-(2n ** 32n), priceText(-(2n ** 32n))],
    [99_999n, "9.9999"],
  ];
  for (const [p, text] of cases) {
    assert.equal(format([entry({ priceE4: p })]), `1,2,AAPL,${text},10,B,7\n`, `price ${p}`);
  }
});

Deno.test("csv quotes a symbol needing RFC 4180 quoting and doubles its quotes", () => {
  assert.equal(format([entry({ symbol: ascii("A,B") })]), '1,2,"A,B",123.4567,10,B,7\n');
  assert.equal(format([entry({ symbol: ascii('Q"T') })]), '1,2,"Q""T",123.4567,10,B,7\n');
  // A row never spans lines: CR and LF are written as "?", so restart repair can trust every LF.
  assert.equal(format([entry({ symbol: ascii("L\nF") })]), "1,2,L?F,123.4567,10,B,7\n");
  assert.equal(format([entry({ symbol: ascii("C\rR") })]), "1,2,C?R,123.4567,10,B,7\n");
  assert.equal(format([entry({ symbol: ascii('"\n1,2') })]), '1,2,"""?1,2",123.4567,10,B,7\n');
  assert.equal(
    format([entry({ symbol: ascii('""""""""') })]),
    '1,2,"""""""""""""""""",123.4567,10,B,7\n',
  );
  assert.equal(format([entry({ symbol: ascii("ABCDEFGH") })]), "1,2,ABCDEFGH,123.4567,10,B,7\n");
  assert.equal(format([entry({ symbol: new Uint8Array() })]), "1,2,,123.4567,10,B,7\n");
  assert.equal(format([entry({ side: ",".charCodeAt(0) })]), '1,2,AAPL,123.4567,10,",",7\n');
  assert.equal(format([entry({ side: 0 })]), "1,2,AAPL,123.4567,10,,7\n");
});

Deno.test("csv writes u32 quantities up to 4294967295", () => {
  assert.equal(format([entry({ quantity: 0xffff_ffff })]), "1,2,AAPL,123.4567,4294967295,B,7\n");
});

Deno.test("csv formats several rows back to back, appending at pos", () => {
  const out = new Uint8Array(3 * MAX_ROW_BYTES + 10);
  out.set(ascii("XY"));
  const src = slots([entry({ seq: 5n }), entry({ seq: 6n, side: "S".charCodeAt(0) })]);
  const end = formatRows(src, 2, out, 2, ascii(",9\n"));
  assert.equal(
    new TextDecoder().decode(out.subarray(0, end)),
    "XY5,2,AAPL,123.4567,10,B,9\n6,2,AAPL,123.4567,10,S,9\n",
  );
});

Deno.test("csv: the widest possible row fits in MAX_ROW_BYTES", () => {
  const widest = format([entry({
    seq: 2n ** 64n - 1n,
    timestampNs: 2n ** 64n - 1n,
    symbol: ascii('""""""""'),
    priceE4: -(2n ** 63n),
    quantity: 0xffff_ffff,
    side: '"'.charCodeAt(0),
  })], 2n ** 64n - 1n);
  assert.ok(
    new TextEncoder().encode(widest).length <= MAX_ROW_BYTES,
    `${widest.length} > ${MAX_ROW_BYTES}`,
  );
});

Deno.test("csv number writers are exact at the word boundaries", () => {
  const text = (f: (out: Uint8Array) => number) => {
    const out = new Uint8Array(32);
    return new TextDecoder().decode(out.subarray(0, f(out)));
  };
  assert.equal(text((o) => writeUint(o, 0, 0)), "0");
  assert.equal(text((o) => writeUint(o, 0, 2 ** 53 - 1)), "9007199254740991");
  assert.equal(text((o) => writeU64(o, 0, 0xffff_ffff, 0xffff_ffff)), "18446744073709551615");
  assert.equal(text((o) => writeU64(o, 0, 0, 0x200000)), String(2n ** 53n));
  assert.equal(text((o) => writeU64(o, 0, 1, 0x200000)), String(2n ** 53n + 1n));
  assert.equal(text((o) => writeI64(o, 0, 0, 0x8000_0000)), "-9223372036854775808");
  assert.equal(text((o) => writeI64(o, 0, 0xffff_ffff, 0xffff_ffff)), "-1");
  assert.equal(text((o) => writeI64(o, 0, 0xffff_ffff, 0x7fff_ffff)), "9223372036854775807");
});

Deno.test("csv parseRow reads back a formatted row, quotes included", () => {
  const line = format([entry({
    seq: 123n,
    timestampNs: 2n ** 63n + 5n,
    symbol: ascii('A,"B'),
    priceE4: -5n,
  })], 99n);
  assert.equal(line, '123,9223372036854775813,"A,""B",-0.0005,10,B,99\n');
  assert.deepEqual(parseRow(line.slice(0, -1)), {
    seq: 123,
    timestampNs: 2n ** 63n + 5n,
    symbol: 'A,"B',
    price: "-0.0005",
    quantity: 10,
    side: "B",
    epoch: 99n,
  });
});

Deno.test("csv parseRow rejects lines that are not reporter rows", () => {
  for (
    const bad of [
      "",
      CSV_HEADER,
      "1,2,AAPL,1.0000,3,B",
      "1,2,AAPL,1.0000,3,B,7,8",
      "x,2,AAPL,1.0000,3,B,7",
      "1,-2,AAPL,1.0000,3,B,7",
      "1,2,AAPL,1.0000,3.5,B,7",
      '1,2,"AAPL,1.0000,3,B,7',
      '1,2,"AA"PL,1.0000,3,B,7',
    ]
  ) assert.equal(parseRow(bad), undefined, JSON.stringify(bad));
});

Deno.test("csv formatRows and parseRow round-trip arbitrary entries", () => {
  const u64 = fc.bigInt({ min: 0n, max: 2n ** 64n - 1n });
  const symbolChar = fc.constantFrom(
    ...Array.from({ length: 0x7f - 0x20 }, (_, i) => String.fromCharCode(0x20 + i)),
    "\n",
    "\r",
  );
  const arbitraryEntry = fc.record({
    seq: u64,
    timestampNs: u64,
    symbol: fc.array(symbolChar, { minLength: 1, maxLength: 8 }).map((a) => a.join("")),
    priceE4: fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }),
    quantity: fc.integer({ min: 0, max: 0xffff_ffff }),
    side: fc.constantFrom("B", "S", ",", '"', "x"),
  });
  fc.assert(
    fc.property(fc.array(arbitraryEntry, { minLength: 1, maxLength: 5 }), u64, (entries, epoch) => {
      const text = format(
        entries.map((e) => ({
          ...e,
          symbol: ascii(e.symbol),
          side: e.side.charCodeAt(0),
        })),
        epoch,
      );
      const expected = entries.map((e) =>
        [
          e.seq,
          e.timestampNs,
          csvField(e.symbol),
          priceText(e.priceE4),
          e.quantity,
          csvField(e.side),
          epoch,
        ].join(",") + "\n"
      ).join("");
      assert.equal(text, expected);
      // Each row is one line and parses back (CR and LF come back as "?").
      assert.equal(text.split("\n").length, entries.length + 1);
      for (const e of entries) {
        const line = format([{ ...e, symbol: ascii(e.symbol), side: e.side.charCodeAt(0) }], epoch);
        assert.deepEqual(parseRow(line.slice(0, -1)), {
          seq: Number(e.seq),
          timestampNs: e.timestampNs,
          symbol: e.symbol.replace(/[\r\n]/g, "?"),
          price: priceText(e.priceE4),
          quantity: e.quantity,
          side: e.side,
          epoch,
        });
      }
    }),
    { numRuns: 500 },
  );
});

Deno.test("csv: the default schema's generated formatter writes today's CSV byte for byte", () => {
  // tests/fixtures/default_schema.csv was written by the fixed-field formatter this replaced
  // (before schemas existed): 3000 simulated entries with a fixed clock, then edge entries.
  let t = 1_700_000_000_000_000_000n;
  const clock = (out: Uint32Array, at: number) => {
    t += 999_983n;
    out[at] = Number(t & 0xffff_ffffn);
    out[at + 1] = Number(t >> 32n);
  };
  const buffer = createRingBuffer(4096, 1_764_000_000_000_000_123n);
  const w = new RingWriter(buffer, { clock });
  w.publishSimulatedSchema(3000);
  const edge: [string, bigint, number, string][] = [
    ["A,B", -12345n, 0, "B"],
    ['Q"T', -1n, 4294967295, "S"],
    ["", 0n, 1, ""],
    ["LONGSYMB", 9223372036854775807n, 7, ","],
    ["X\nY\rZ", -9223372036854775808n, 2, '"'],
    ["Z", 10000n, 3, "B"],
    ["ab cd", -99999n, 5, "S"],
  ];
  const v = new DataView(buffer);
  for (const [sym, price, qty, side] of edge) {
    const off = w.claimRecord();
    new Uint8Array(buffer, off + 16, 8).set(ascii(sym));
    v.setBigInt64(off + 24, price, true);
    v.setUint32(off + 32, qty, true);
    if (side) v.setUint8(off + 36, side.charCodeAt(0));
    w.commit();
  }
  const r = new RingReader(buffer, 0);
  const dst = new Uint32Array(4096 * ENTRY_WORDS);
  const n = r.readBatch(dst, 4096);
  assert.equal(n, 3007);
  const format = makeFormatter(DEFAULT_SCHEMA);
  const tail = ascii(",1764000000000000123\n");
  const out = new Uint8Array(n * (maxRowBytes(DEFAULT_SCHEMA) + tail.length));
  const end = format(dst, n, out, 0, tail);
  const file = new Uint8Array([
    ...ascii(csvHeader(DEFAULT_SCHEMA) + "\n"),
    ...out.subarray(0, end),
  ]);
  const pinned = Deno.readFileSync(new URL("./fixtures/default_schema.csv", import.meta.url));
  assert.equal(file.length, pinned.length);
  assert.deepEqual(file, pinned);
  assert.ok(maxRowBytes(DEFAULT_SCHEMA) <= MAX_ROW_BYTES);
});

Deno.test("csv: generated formatters allocate nothing per row for non-float fields", async () => {
  // Format the same batch k times in a child with --trace-gc: scavenges must not grow with k
  // (one 16-byte heap number per row would add hundreds of scavenges between the two runs).
  const program = `
    import { createRingBuffer, ENTRY_WORDS, RingReader, RingWriter } from "${new URL(
    "../ring.ts",
    import.meta.url,
  )}";
    import { makeFormatter, maxRowBytes } from "${new URL("../csv.ts", import.meta.url)}";
    import { DEFAULT_SCHEMA, defineSchema } from "${new URL("../schema.ts", import.meta.url)}";
    const schemas = [DEFAULT_SCHEMA, defineSchema([
      { name: "a", type: "u8", scale: 2 }, { name: "b", type: "i16", scale: 1 },
      { name: "c", type: "u32", scale: 9 }, { name: "d", type: "i32", scale: 12 },
      { name: "e", type: "u64", scale: 3 }, { name: "f", type: "i64", scale: 18 },
      { name: "g", type: "char[8]" }, { name: "h", type: "i64" },
    ]), defineSchema([
      ...Array.from({ length: 8 }, (_, i) => ({ name: "i" + i, type: "i32" })),
      { name: "u0", type: "u64" }, { name: "u1", type: "u64" },
    ])];
    const schema = schemas[Number(Deno.args[0])];
    const N = 4096;
    const buf = createRingBuffer(N, 123n, schema);
    new RingWriter(buf).publishSimulatedSchema(N);
    const dst = new Uint32Array(N * ENTRY_WORDS);
    new RingReader(buf, 0).readBatch(dst, N);
    const tail = new TextEncoder().encode(",1764000000000000123\\n");
    const out = new Uint8Array(N * (maxRowBytes(schema) + tail.length));
    const format = makeFormatter(schema);
    for (let i = 0; i < Number(Deno.args[1]); i++) format(dst, N, out, 0, tail);
  `;
  const dir = Deno.makeTempDirSync();
  try {
    Deno.writeTextFileSync(`${dir}/p.ts`, program);
    const scavenges = async (which: number, times: number) => {
      const o = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "--allow-read",
          "--allow-ffi",
          "--v8-flags=--trace-gc",
          `${dir}/p.ts`,
          `${which}`,
          `${times}`,
        ],
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.equal(o.code, 0, new TextDecoder().decode(o.stderr));
      return (new TextDecoder().decode(o.stdout).match(/Scavenge/g) ?? []).length;
    };
    for (const which of [0, 1, 2]) {
      const few = await scavenges(which, 200);
      const many = await scavenges(which, 1200); // 4 M more rows
      assert.ok(
        many - few < 20,
        `schema ${which}: ${few} scavenges, then ${many} with 6x the rows`,
      );
    }
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------------------------------------
// Entry sizes and bytes[N]

/** Every ordering this CPU accepts: "tso" on x86_64 only. */
const ORDERINGS: readonly MemoryOrdering[] = Deno.build.arch === "x86_64"
  ? ["tso", "atomic"]
  : ["atomic"];

/**
 * Schemas whose last field ends exactly at entry byte `entrySize`: every kind of field with a
 * bytes[N] tail, one bytes[N] field alone, and a char[N] tail.
 */
function fillingSchemas(entrySize: number): Schema[] {
  return [
    defineSchema([
      { name: "a", type: "u8" },
      { name: "b", type: "i16", scale: 1 },
      { name: "c", type: "u32" },
      { name: "d", type: "i64", scale: 4 },
      { name: "e", type: "f32" },
      { name: "small", type: "bytes[3]" }, // 0x24: length, then 3 bytes to 0x2B
      { name: "g", type: "char[3]" },
      { name: "f", type: "f64" },
      { name: "blob", type: `bytes[${entrySize - 60}]` }, // 0x38 to the entry's end
    ]),
    defineSchema([{ name: "blob", type: `bytes[${entrySize - 20}]` }]),
    defineSchema([{ name: "n", type: "u64" }, { name: "text", type: `char[${entrySize - 24}]` }]),
  ];
}

/** The length of a char or bytes value of row `row`: 0, 1, N, then lengths in between. */
function lengthFor(row: number, n: number): number {
  return [0, 1, n, n >> 1, n - 1, Math.min(2, n), Math.min(3, n)][row % 7]!;
}

/** Text cycled through for char values: comma and quote included (quoted, then unquoted). */
const TEXT = 'AZaz09 ,"-_.;:|';

/**
 * The value of field `f` in row `row`: for char and bytes, {@link lengthFor} characters or bytes;
 * otherwise the simulated writer's value (integers as bigint units).
 */
function valueFor(f: Field, row: number): FieldValue {
  if (f.kind === "bytes" || f.kind === "char") {
    const length = lengthFor(row, f.maxLength);
    if (f.kind === "char") {
      return Array.from({ length }, (_, i) => TEXT[(row + 7 * i) % TEXT.length]).join("");
    }
    return Uint8Array.from({ length }, (_, i) => (row * 31 + i * 7 + f.index * 13) & 0xff);
  }
  const v = simulatedValue(f, row);
  return typeof v === "number" && f.kind !== "float" ? BigInt(v) : v;
}

/** What the CSV holds for field `f` of row `row` (unquoted): base64 by node:buffer for bytes. */
function textFor(f: Field, row: number): string {
  if (f.kind === "bytes") return Buffer.from(valueFor(f, row) as Uint8Array).toString("base64");
  if (f.kind === "char") return valueFor(f, row) as string;
  return expectedField(f, row);
}

/** Publishes row `row` of `schema` with publishRecord, or with the allocation-free setters. */
function publishRow(w: RingWriter, schema: Schema, row: number, setters: boolean): void {
  if (!setters) {
    w.publishRecord(Object.fromEntries(schema.fields.map((f) => [f.name, valueFor(f, row)])));
    return;
  }
  const slot = w.claimRecord();
  for (const f of schema.fields) {
    const v = valueFor(f, row);
    if (f.kind === "bytes") w.setBytes(slot, f, v as Uint8Array);
    else if (f.kind === "char") w.setText(slot, f, v as string);
    else if (f.kind === "float") w.setNumber(slot, f, v as number);
    else w.setBigInt(slot, f, v as bigint);
  }
  w.commit();
}

/**
 * Publishes `rows` rows of `schema` in a ring of 8 `entrySize`-byte slots (so later rows overwrite
 * longer values with shorter ones), reads the last lap with readBatch and formats it. Returns the
 * ring's bytes and the CSV of the rows read.
 */
function roundTrip(
  schema: Schema,
  entrySize: number,
  ordering: MemoryOrdering,
  setters: boolean,
  rows: number,
): { ring: Uint8Array; csv: string } {
  const buffer = createRingBuffer(8, 5n, schema, entrySize);
  const w = new RingWriter(buffer, {
    ordering,
    clock: (out, at) => (out[at] = 42, out[at + 1] = 0),
  });
  for (let row = 0; row < rows; row++) publishRow(w, schema, row, setters);
  const r = new RingReader(buffer, 0, { ordering, position: rows - 8 });
  const dst = new Uint32Array(8 * r.entryWords);
  assert.equal(r.readBatch(dst, 8), 8);
  const tail = ascii(",5\n");
  const out = new Uint8Array(8 * (maxRowBytes(schema) + tail.length));
  const end = makeFormatter(schema, entrySize)(dst, 8, out, 0, tail);
  return { ring: new Uint8Array(buffer), csv: new TextDecoder().decode(out.subarray(0, end)) };
}

for (const entrySize of [64, 128, 1024, 65_536]) {
  Deno.test(`csv: fields filling a ${entrySize}-byte entry exactly round-trip through the ring and the CSV, bytes as base64`, () => {
    for (const schema of fillingSchemas(entrySize)) {
      assert.equal(schema.end, entrySize, describeSchema(schema));
      const rows = 8 + 7; // a lap, then seven rows over it
      const reference = roundTrip(schema, entrySize, ORDERINGS[0]!, false, rows);
      for (const ordering of ORDERINGS) {
        for (const setters of [false, true]) {
          const { ring, csv } = roundTrip(schema, entrySize, ordering, setters, rows);
          const how = `${describeSchema(schema)}, ${ordering}, ${setters ? "setters" : "record"}`;
          assert.ok(isDeepStrictEqual(ring, reference.ring), `${how}: the same ring bytes`);
          const lines = csv.split("\n");
          assert.equal(lines.pop(), "", "every row ends with a newline");
          assert.equal(lines.length, 8);
          lines.forEach((line, k) => {
            const row = rows - 8 + k;
            const want = [`${row}`, "42", ...schema.fields.map((f) => textFor(f, row)), "5"];
            assert.deepEqual(splitRow(line), want, `${how}: row ${row}`);
          });
        }
      }
      // Each bytes value is its length, its bytes, then zeros to N, whatever the slot held before.
      const view = new DataView(reference.ring.buffer);
      for (let row = rows - 8; row < rows; row++) {
        const slot = entriesOffsetFor(schema) + (row % 8) * entrySize;
        for (const f of schema.fields.filter((f) => f.kind === "bytes")) {
          const value = valueFor(f, row) as Uint8Array;
          assert.equal(view.getUint32(slot + f.offset, true), value.length);
          const stored = reference.ring.subarray(
            slot + f.offset + 4,
            slot + f.offset + 4 + f.maxLength,
          );
          assert.deepEqual(stored.subarray(0, value.length), value);
          assert.ok(
            stored.subarray(value.length).every((b) => b === 0),
            `row ${row} ${f.name} padding`,
          );
        }
      }
    }
  });
}

Deno.test("csv: writeBase64 writes what node:buffer's base64 does, for any bytes and place", () => {
  fc.assert(
    fc.property(
      fc.uint8Array({ minLength: 0, maxLength: 3000, size: "max" }), // lengths across 0..3000
      fc.nat(7),
      fc.nat(7),
      (bytes, at, pos) => {
        const src = new Uint8Array(at + bytes.length).fill(0xa5);
        src.set(bytes, at);
        const expected = Buffer.from(bytes).toString("base64");
        const out = new Uint8Array(pos + expected.length + 8).fill(0x21);
        const end = writeBase64(out, pos, src, at, bytes.length);
        assert.equal(end, pos + expected.length);
        assert.equal(new TextDecoder().decode(out.subarray(pos, end)), expected);
        assert.ok(out.subarray(0, pos).every((b) => b === 0x21), "nothing written before pos");
        assert.ok(out.subarray(end).every((b) => b === 0x21), "nothing written after the end");
      },
    ),
    { numRuns: 1000 },
  );
  // RFC 4648's test vectors, padding included.
  const vectors = ["", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"];
  vectors.forEach((b64, n) => {
    const out = new Uint8Array(8);
    const end = writeBase64(out, 0, ascii("foobar"), 0, n);
    assert.equal(new TextDecoder().decode(out.subarray(0, end)), b64);
  });
});

Deno.test("csv: a stored bytes length above N is a SegmentInvalidError naming the seq, the field and the length", () => {
  const schema = defineSchema([{ name: "id", type: "u16" }, { name: "blob", type: "bytes[100]" }]);
  const format = makeFormatter(schema, 128);
  const entries = new Uint32Array(2 * 32); // two 128-byte entries
  const view = new DataView(entries.buffer);
  const seq = 2 ** 40 + 5;
  view.setBigUint64(0, BigInt(seq), true);
  view.setBigUint64(128, BigInt(seq + 1), true);
  view.setUint32(0x14, 100, true); // entry 0: N bytes, valid
  const out = new Uint8Array(2 * (maxRowBytes(schema) + 4));
  for (const length of [101, 0x8000_0000, 0xffff_ffff]) {
    view.setUint32(128 + 0x14, length, true); // entry 1: damaged
    assert.throws(() => format(entries, 2, out, 0, ascii(",1\n")), {
      name: "SegmentInvalidError",
      message: `Cannot use entry ${
        seq + 1
      } as field blob length must be at most 100: current value is ${length}`,
    });
  }
  view.setUint32(128 + 0x14, 100, true);
  const end = format(entries, 2, out, 0, ascii(",1\n"));
  const rows = new TextDecoder().decode(out.subarray(0, end)).split("\n");
  assert.equal(rows[1], `${seq + 1},0,0,${Buffer.alloc(100).toString("base64")},1`);
});
