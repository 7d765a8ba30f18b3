/**
 * The reporter's CSV format: exact decimal output of u64/i64 fields beyond 2^53, RFC 4180
 * quoting, and the parseRow round trip. No processes.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  CSV_HEADER,
  csvHeader,
  formatRows,
  makeFormatter,
  MAX_ROW_BYTES,
  maxRowBytes,
  parseRow,
  writeI64,
  writeU64,
  writeUint,
} from "../csv.ts";
import { createRingBuffer, ENTRY_WORDS, RingReader, RingWriter } from "../ring.ts";
import { DEFAULT_SCHEMA } from "../schema.ts";

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
