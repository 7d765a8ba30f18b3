/**
 * The payload schema: its rules (every bad kind is refused naming the field and the rule), its
 * natural-alignment layout, the block stored in the segment (round trip, damage refused, never
 * read out of bounds), publishing records by name, the typed setters, the simulated writer for
 * random schemas with every field of every row checked, and the programs: `writer --schema`,
 * conflicts on re-open, and a CSV of another schema rotated aside.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { csvHeader, makeFormatter, maxRowBytes } from "../csv.ts";
import {
  ENTRIES_OFFSET_OFFSET,
  HEADER_SIZE,
  SCHEMA_BLOCK_LENGTH_OFFSET,
  SCHEMA_BLOCK_OFFSET_OFFSET,
  SCHEMA_FINGERPRINT_OFFSET,
  SegmentInvalidError,
} from "../layout.ts";
import {
  createRingBuffer,
  DEFAULT_ORDERING,
  ENTRY_WORDS,
  type MemoryOrdering,
  ringBytes,
  RingReader,
  RingWriter,
} from "../ring.ts";
import {
  checkSchemaFits,
  decodeSchemaBlock,
  DEFAULT_SCHEMA,
  defineSchema,
  encodeSchemaBlock,
  entriesOffsetFor,
  type FieldSpec,
  fingerprint64,
  parseSchemaJson,
  readSchema,
  type Schema,
  SchemaError,
  schemaToJson,
  simulatedPayloads,
} from "../schema.ts";
import { Segment } from "../segment.ts";
import {
  checkSchemaRows,
  csvLines,
  Proc,
  scenario,
  specOf,
  uniqueName,
  unlinkQuietly,
  waitFor,
} from "./_helpers.ts";
import { spawnProgram, STATUS_FLAGS } from "../programs.ts";

/** Rows in a CSV file so far (0 while it does not exist yet). */
function rows(path: string): number {
  try {
    return csvLines(Deno.readTextFileSync(path)).length;
  } catch {
    return 0;
  }
}

const TYPES = ["u8", "u16", "u32", "u64", "i8", "i16", "i32", "i64", "f32", "f64"];

Deno.test("schema: the default schema is today's entry at today's offsets", () => {
  const s = DEFAULT_SCHEMA;
  assert.deepEqual(
    s.fields.map((f) => [f.name, f.type, f.scale, f.offset]),
    [["symbol", "char[8]", 0, 0x10], ["price", "i64", 4, 0x18], ["quantity", "u32", 0, 0x20], [
      "side",
      "char[1]",
      0,
      0x24,
    ]],
  );
  assert.equal(s.isDefault, true);
  assert.equal(csvHeader(s), "seq,timestamp_ns,symbol,price,quantity,side,epoch");
  assert.equal(entriesOffsetFor(s), HEADER_SIZE, "the default schema is stored as no block");
  const b = createRingBuffer(8);
  const v = new DataView(b);
  assert.equal(v.getBigUint64(SCHEMA_FINGERPRINT_OFFSET, true), 0n);
  assert.equal(v.getUint32(SCHEMA_BLOCK_OFFSET_OFFSET, true), 0);
  assert.equal(v.getUint32(SCHEMA_BLOCK_LENGTH_OFFSET, true), 0);
  assert.equal(readSchema(b, b.byteLength, "x"), DEFAULT_SCHEMA);
  assert.equal(defineSchema(s.fields.map(specOf)).isDefault, true, "declared again: still default");
});

Deno.test("schema: fields are laid out in order with natural alignment from 0x10", () => {
  const s = defineSchema([
    { name: "a", type: "u8" },
    { name: "b", type: "u16" },
    { name: "c", type: "char[3]" },
    { name: "d", type: "u32" },
    { name: "e", type: "f64" },
    { name: "f", type: "i8" },
    { name: "g", type: "i64", scale: 18 },
  ]);
  assert.deepEqual(s.fields.map((f) => f.offset), [0x10, 0x12, 0x14, 0x18, 0x20, 0x28, 0x30]);
  // Exactly 48 bytes fits a 64-byte entry; one more byte does not.
  checkSchemaFits(defineSchema([{ name: "x", type: "char[48]" }]), 64);
  checkSchemaFits(
    defineSchema([{ name: "a", type: "u8" }, { name: "b", type: "u64" }, {
      name: "c",
      type: "char[32]",
    }]),
    64,
  );
  assert.throws(() => checkSchemaFits(defineSchema([{ name: "x", type: "char[49]" }]), 64));
  // bytes[N] is a u32 length, 4-byte aligned, then N bytes; the next field follows its N bytes.
  const b = defineSchema([
    { name: "a", type: "u8" },
    { name: "blob", type: "bytes[5]" },
    { name: "c", type: "char[3]" },
    { name: "d", type: "u16" },
  ]);
  assert.deepEqual(b.fields.map((f) => [f.offset, f.size, f.maxLength, f.kind]), [
    [0x10, 1, 1, "uint"],
    [0x14, 9, 5, "bytes"],
    [0x1d, 3, 3, "char"],
    [0x20, 2, 2, "uint"],
  ]);
  assert.deepEqual([b.end, b.minEntrySize, b.version], [0x22, 64, 2]);
});

/** Every kind of bad schema, with what its message must name. */
const BAD: [string, unknown, RegExp][] = [
  [
    "more than 65,520 bytes (the payload of a 64 KiB entry)",
    [{ name: "a", type: "char[65520]" }, { name: "b", type: "u8" }],
    /field b ends at payload byte 65521 .*must fit in 65520 bytes \(a 65536-byte entry\)/,
  ],
  [
    "more than 65,520 bytes by alignment",
    [{ name: "a", type: "u8" }, { name: "b", type: "char[65512]" }, { name: "c", type: "u64" }],
    /field c ends at payload byte 65528 with natural alignment.*65520 bytes/,
  ],
  [
    "more than 65,520 bytes with a bytes field",
    [{ name: "a", type: "u8" }, { name: "b", type: "bytes[65513]" }],
    /field b ends at payload byte 65521 with natural alignment/,
  ],
  ["an upper-case name", [{ name: "Px", type: "u8" }], /field 0 name must match \[a-z_\]/],
  ["a name starting with a digit", [{ name: "1x", type: "u8" }], /field 0 name must match/],
  ["an empty name", [{ name: "", type: "u8" }], /field 0 name must match/],
  ["a 32-character name", [{ name: "a".repeat(32), type: "u8" }], /at most 31 characters/],
  ["a name that is not a string", [{ name: 7, type: "u8" }], /field 0 name must match/],
  [
    "a duplicate name",
    [{ name: "a", type: "u8" }, { name: "a", type: "u8" }],
    /field a is declared twice/,
  ],
  ["the reserved name seq", [{ name: "seq", type: "u8" }], /field seq has a reserved name/],
  [
    "the reserved name timestamp_ns",
    [{ name: "timestamp_ns", type: "u64" }],
    /field timestamp_ns has a reserved name/,
  ],
  ["the reserved name epoch", [{ name: "epoch", type: "u64" }], /field epoch has a reserved name/],
  ["an unknown type", [{ name: "a", type: "u128" }], /field a has an unknown type.*"u128"/],
  ["a missing type", [{ name: "a" }], /field a has an unknown type.*missing/],
  ["char without N", [{ name: "a", type: "char" }], /field a has an unknown type/],
  [
    "char[0]",
    [{ name: "a", type: "char[0]" }],
    /field a has char\[N\] with N out of 1..65520: current value is "char\[0\]"/,
  ],
  [
    "char[65521]",
    [{ name: "a", type: "char[65521]" }],
    /field a has char\[N\] with N out of 1..65520: current value is "char\[65521\]"/,
  ],
  [
    "char[012]",
    [{ name: "a", type: "char[012]" }],
    /N out of 1..65520: current value is "char\[012\]"/,
  ],
  [
    "char[100000]",
    [{ name: "a", type: "char[100000]" }],
    /field a has an unknown type.*"char\[100000\]"/,
  ],
  [
    "bytes[0]",
    [{ name: "a", type: "bytes[0]" }],
    /field a has bytes\[N\] with N out of 1..65516: current value is "bytes\[0\]"/,
  ],
  [
    "bytes[65517]",
    [{ name: "a", type: "bytes[65517]" }],
    /field a has bytes\[N\] with N out of 1..65516: current value is "bytes\[65517\]"/,
  ],
  ["bytes without N", [{ name: "a", type: "bytes" }], /field a has an unknown type.*"bytes"/],
  ["a scale on bytes", [{ name: "a", type: "bytes[4]", scale: 1 }], /field a has a scale/],
  [
    "scale 19",
    [{ name: "a", type: "i64", scale: 19 }],
    /field a scale must be an integer from 0 to 18: current value is 19/,
  ],
  ["scale -1", [{ name: "a", type: "i32", scale: -1 }], /field a scale must be/],
  ["scale 1.5", [{ name: "a", type: "i32", scale: 1.5 }], /field a scale must be/],
  [
    "a scale on a float",
    [{ name: "a", type: "f64", scale: 2 }],
    /field a has a scale but only integer types/,
  ],
  ["a scale on char", [{ name: "a", type: "char[2]", scale: 1 }], /field a has a scale/],
  ["an unknown key", [{ name: "a", type: "u8", unit: "usd" }], /unknown key.*"unit"/],
  ["no fields", [], /at least one field/],
  ["not a list", { name: "a" }, /must be a list of fields/],
];

Deno.test("schema: every kind of bad schema is a SchemaError naming the field and the rule", () => {
  for (const [what, specs, message] of BAD) {
    assert.throws(() => defineSchema(specs as FieldSpec[]), (e: unknown) => {
      assert.ok(e instanceof SchemaError, `${what}: ${e}`);
      assert.match(e.message, message, what);
      assert.match(e.message, /^Cannot use schema as /, what);
      assert.ok(!e.message.includes("\n"), `${what}: one line`);
      return true;
    }, what);
  }
});

Deno.test("schema: JSON is a list of fields or {fields: [...]}; bad JSON is a SchemaError", () => {
  const a = parseSchemaJson('[{"name":"px","type":"f64"}]');
  const b = parseSchemaJson('{"fields":[{"name":"px","type":"f64"}]}');
  assert.equal(a.fingerprint, b.fingerprint);
  assert.throws(() => parseSchemaJson("[{"), /not valid JSON/);
  assert.throws(() => parseSchemaJson('{"columns":[]}'), /current keys are \["columns"\]/);
});

Deno.test("schema block: encodes byte by byte and decodes to the same schema", () => {
  const s = defineSchema([{ name: "venue", type: "char[4]" }, {
    name: "px",
    type: "i64",
    scale: 2,
  }]);
  const b = encodeSchemaBlock(s);
  const v = new DataView(b.buffer);
  assert.equal(b.length, 8 + 2 * 36);
  assert.equal(new TextDecoder().decode(b.subarray(0, 4)), "RSCH");
  assert.equal(v.getUint16(4, true), 1);
  assert.equal(v.getUint16(6, true), 2);
  assert.equal(new TextDecoder().decode(b.subarray(8, 13)), "venue");
  assert.ok(b.subarray(13, 40).every((x) => x === 0), "name NUL-padded to 32 bytes");
  assert.deepEqual([...b.subarray(40, 44)], [11, 4, 0, 0x10], "char, N=4, scale 0, offset 0x10");
  assert.deepEqual([...b.subarray(44 + 32, 80)], [8, 8, 2, 0x18], "i64, 8 bytes, scale 2, 0x18");
  assert.equal(s.fingerprint, fingerprint64(b));
  const back = decodeSchemaBlock(b);
  assert.deepEqual(back.fields, s.fields);
  assert.equal(schemaToJson(back).fingerprint, s.fingerprint.toString(16).padStart(16, "0"));
});

/**
 * Every single-byte change of the valid block `good` is refused with a one-line SchemaError or
 * decodes to another valid schema whose block is exactly the changed bytes (a rename, say): never
 * silently reinterpreted.
 */
function assertEveryByteChecked(good: Uint8Array): void {
  for (let i = 0; i < good.length; i++) {
    for (const x of [0, 1, 0x7f, 0x80, 0xff, good[i]! ^ 1]) {
      const bad = good.slice();
      bad[i] = x;
      try {
        const d = decodeSchemaBlock(bad);
        assert.deepEqual(d.block, bad, `byte ${i} = ${x} decoded as a different block`);
      } catch (e) {
        assert.ok(e instanceof SchemaError, `byte ${i} = ${x}: ${e}`);
        assert.ok(!e.message.includes("\n"), `byte ${i} = ${x}: one line`);
      }
    }
  }
}

Deno.test("schema block: every damaged byte is refused, never read out of bounds", () => {
  const s = defineSchema([{ name: "a", type: "u16" }, { name: "b", type: "f32" }]);
  const good = encodeSchemaBlock(s);
  assertEveryByteChecked(good);
  assertEveryByteChecked(encodeSchemaBlock(V2_SCHEMA));
  assert.throws(() => decodeSchemaBlock(good.subarray(0, 7)), /at least 8 bytes/);
  assert.throws(() => decodeSchemaBlock(good.subarray(0, good.length - 1)), /length must be/);
  const zeroCount = good.slice();
  zeroCount[6] = 0;
  assert.throws(() => decodeSchemaBlock(zeroCount), /field_count must be 1..48/);
  const afterNul = good.slice();
  afterNul[8 + 5] = 0x61; // a byte after the name's NUL
  assert.throws(() => decodeSchemaBlock(afterNul), /byte 0xd must be 0x0/);
  const wrongOffset = good.slice();
  wrongOffset[8 + 36 + 35] = 0x13; // b is at 0x14: a misaligned offset
  assert.throws(() => decodeSchemaBlock(wrongOffset), /must be 0x14: current value is 0x13/);
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 0, maxLength: 400 }), (bytes) => {
      try {
        decodeSchemaBlock(bytes);
      } catch (e) {
        if (!(e instanceof SchemaError)) throw e;
      }
    }),
    { numRuns: 500 },
  );
  // Random records behind a valid head (magic, version 1 or 2, a field_count that matches the
  // length): a SchemaError or a block that re-encodes to exactly those bytes.
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 8 }),
      fc.boolean(),
      fc.uint8Array({ minLength: 8 * 44, maxLength: 8 * 44 }),
      (count, v1, records) => {
        const bytes = new Uint8Array(8 + count * (v1 ? 36 : 44));
        bytes.set(records.subarray(0, bytes.length - 8), 8);
        const head = new DataView(bytes.buffer);
        head.setUint32(0, 0x48435352, true);
        head.setUint16(4, v1 ? 1 : 2, true);
        head.setUint16(6, count, true);
        try {
          assert.deepEqual(decodeSchemaBlock(bytes).block, bytes);
        } catch (e) {
          if (!(e instanceof SchemaError)) throw e;
        }
      },
    ),
    { numRuns: 500 },
  );
});

/** A version-2 schema: u32 at 0x10, bytes[100] at 0x14 (104 bytes taken), u16 at 0x7C. */
const V2_SCHEMA = defineSchema([
  { name: "id", type: "u32" },
  { name: "blob", type: "bytes[100]" },
  { name: "tail", type: "u16" },
]);

Deno.test("schema block version 2: every kind of damage is a one-line SchemaError naming the value", () => {
  const good = encodeSchemaBlock(V2_SCHEMA);
  assert.equal(good.length, 8 + 3 * 44);
  const field = (i: number) => 8 + 44 * i;
  const u16 = (at: number, x: number) => (b: Uint8Array) =>
    new DataView(b.buffer).setUint16(at, x, true);
  const u32 = (at: number, x: number) => (b: Uint8Array) =>
    new DataView(b.buffer).setUint32(at, x, true);
  const byte = (at: number, x: number) => (b: Uint8Array) => void (b[at] = x);
  const damage: [string, (b: Uint8Array) => void, string][] = [
    ["version 3", u16(4, 3), "version must be 1 or 2: current value is 3"],
    ["version 0", u16(4, 0), "version must be 1 or 2: current value is 0"],
    [
      "version 1 over 44-byte records",
      u16(4, 1),
      "length must be 8 + 36 x field_count = 116 bytes: current length is 140",
    ],
    ["field_count 0", u16(6, 0), "field_count must be 1..65520: current value is 0"],
    [
      "field_count 65535",
      u16(6, 65_535),
      "field_count must be 1..65520: current value is 65535",
    ],
    [
      "field_count 2 (the block is longer)",
      u16(6, 2),
      "length must be 8 + 44 x field_count = 96 bytes: current length is 140",
    ],
    [
      "field_count 4 (the block is shorter)",
      u16(6, 4),
      "length must be 8 + 44 x field_count = 184 bytes: current length is 140",
    ],
    ["reserved low byte", byte(field(1) + 0x22, 1), "byte 0x56 must be 0x0: current value is 0x1"],
    [
      "reserved high byte",
      byte(field(1) + 0x23, 0x80),
      "byte 0x57 must be 0x0: current value is 0x80",
    ],
    ["size of a u32 is 5", u32(field(0) + 0x24, 5), "byte 0x2c must be 0x4: current value is 0x5"],
    [
      "size of bytes[N] below 4",
      u32(field(1) + 0x24, 3),
      'is invalid: field blob has an unknown type (one of u8 u16 u32 u64 i8 i16 i32 i64 f32 f64 char[N] bytes[N]): current value is "bytes[-1]"',
    ],
    [
      "size of bytes[N] is 4 (N = 0)",
      u32(field(1) + 0x24, 4),
      'is invalid: field blob has bytes[N] with N out of 1..65516: current value is "bytes[0]"',
    ],
    [
      "size of bytes[N] past 65,520",
      u32(field(1) + 0x24, 70_000),
      'is invalid: field blob has bytes[N] with N out of 1..65516: current value is "bytes[69996]"',
    ],
    [
      "size of bytes[N] moves the next field",
      u32(field(1) + 0x24, 105),
      "byte 0x88 must be 0x7e: current value is 0x7c",
    ],
    ["offset 0x18", u32(field(1) + 0x28, 0x18), "byte 0x5c must be 0x14: current value is 0x18"],
    [
      "offset past 65,535",
      u32(field(1) + 0x28, 0x10014),
      "byte 0x5e must be 0x0: current value is 0x1",
    ],
    ["type 13", byte(field(1) + 0x20, 13), "field 1 type code must be 1..12: current value is 13"],
    ["type 0", byte(field(0) + 0x20, 0), "field 0 type code must be 1..12: current value is 0"],
    [
      "a scale on bytes[N]",
      byte(field(1) + 0x21, 2),
      "is invalid: field blob has a scale but only integer types take one: type is bytes[100]",
    ],
    [
      "an upper-case name",
      byte(field(0), 0x49),
      'is invalid: field 0 name must match [a-z_][a-z0-9_]* with at most 31 characters: current value is "Id"',
    ],
    [
      "a name byte over 0x7F",
      byte(field(0) + 1, 0xc3),
      "field 0 name must be ASCII: byte 1 is 0xc3",
    ],
    [
      "a byte after the name's NUL",
      byte(field(0) + 10, 0x61),
      "byte 0x12 must be 0x0: current value is 0x61",
    ],
    [
      "an empty name",
      byte(field(0), 0),
      'is invalid: field 0 name must match [a-z_][a-z0-9_]* with at most 31 characters: current value is ""',
    ],
    [
      "a name of 32 characters (no NUL)",
      (b) => b.fill(0x61, field(0), field(0) + 32),
      `is invalid: field 0 name must match [a-z_][a-z0-9_]* with at most 31 characters: current value is "${
        "a".repeat(32)
      }"`,
    ],
    [
      "a reserved name",
      (b) => b.set([0x73, 0x65, 0x71, 0], field(2)),
      'is invalid: field seq has a reserved name (seq, timestamp_ns and epoch are columns of every row): current value is "seq"',
    ],
    [
      "a duplicate name",
      (b) => b.set([0x69, 0x64, 0, 0], field(2)),
      "is invalid: field id is declared twice: names must be unique",
    ],
  ];
  for (const [what, hurt, message] of damage) {
    const bad = good.slice();
    hurt(bad);
    assert.throws(() => decodeSchemaBlock(bad), {
      name: "SchemaError",
      message: `schema block ${message}`,
    }, what);
  }
  // Version 1 has no bytes[N] (type 12) and describes 64-byte entries only.
  const v1 = encodeSchemaBlock(
    defineSchema([{ name: "a", type: "u32" }, { name: "b", type: "char[4]" }]),
  );
  const twelve = v1.slice();
  twelve[8 + 36 + 32] = 12;
  assert.throws(() => decodeSchemaBlock(twelve), {
    name: "SchemaError",
    message: "schema block field 1 type code must be 1..11: current value is 12",
  });
  const past = v1.slice();
  past[8 + 36 + 33] = 48; // b becomes char[48] at 0x14: it ends at 0x44
  assert.throws(() => decodeSchemaBlock(past), {
    name: "SchemaError",
    message:
      "schema block version 1 must describe fields within a 64-byte entry: field b ends at entry byte 68",
  });
  assert.equal(decodeSchemaBlock(good).fingerprint, V2_SCHEMA.fingerprint, "the undamaged block");
});

Deno.test("a schema larger than the payload is a SchemaError naming both sizes", () => {
  const s = defineSchema([{ name: "a", type: "char[41]" }, { name: "b", type: "u64" }]);
  assert.deepEqual([s.end, s.minEntrySize], [72, 128]);
  const at64 =
    "Cannot use schema as its fields take 56 payload bytes (field b ends at entry byte 72) but entry size 64 holds 48: use an entry size of at least 128";
  const refused = { name: "SchemaError", message: at64 };
  assert.throws(() => checkSchemaFits(s, 64), refused);
  assert.throws(() => createRingBuffer(8, 1n, s), refused, "the default entry size is 64");
  assert.throws(() => createRingBuffer(8, 1n, s, 64), refused);
  assert.throws(() => ringBytes(8, s, 64), refused);
  assert.throws(() => simulatedPayloads(s, 64), refused);
  checkSchemaFits(s, 128);
  assert.equal(createRingBuffer(8, 1n, s, 128).byteLength, entriesOffsetFor(s) + 8 * 128);
  // A bytes field one byte past a 1 KiB entry, and the largest payload of all.
  const blob = defineSchema([{ name: "blob", type: "bytes[1005]" }]);
  assert.throws(() => checkSchemaFits(blob, 1024), {
    name: "SchemaError",
    message:
      "Cannot use schema as its fields take 1009 payload bytes (field blob ends at entry byte 1025) but entry size 1024 holds 1008: use an entry size of at least 2048",
  });
  const largest = defineSchema([{ name: "x", type: "char[65520]" }]);
  checkSchemaFits(largest, 65_536);
  assert.throws(() => checkSchemaFits(largest, 32_768), /use an entry size of at least 65536$/);
  // A segment whose header's entry_size is smaller than its block's fields is refused on open.
  const buffer = createRingBuffer(4, 1n, blob, 2048);
  new DataView(buffer).setUint32(0x54, 1024, true);
  assert.throws(() => readSchema(buffer, buffer.byteLength, "/x"), {
    name: "SegmentInvalidError",
    message:
      "Cannot use segment /x as schema block its fields take 1009 payload bytes (field blob ends at entry byte 1025) but entry size 1024 holds 1008: use an entry size of at least 2048",
  });
});

Deno.test("schema in a segment: the header's words place the block; damage is refused", () => {
  const s = defineSchema([{ name: "qty", type: "u32" }, { name: "venue", type: "char[4]" }]);
  const fresh = () => createRingBuffer(8, 1n, s);
  const b = fresh();
  const v = new DataView(b);
  assert.equal(v.getUint32(SCHEMA_BLOCK_OFFSET_OFFSET, true), 0x180);
  assert.equal(v.getUint32(SCHEMA_BLOCK_LENGTH_OFFSET, true), 8 + 2 * 36);
  assert.equal(v.getBigUint64(SCHEMA_FINGERPRINT_OFFSET, true), s.fingerprint);
  assert.equal(v.getUint32(ENTRIES_OFFSET_OFFSET, true), 0x200, "next multiple of 64 after it");
  assert.equal(readSchema(b, b.byteLength, "/x").fingerprint, s.fingerprint);
  const damage: [string, (d: DataView) => void, RegExp][] = [
    ["a block byte", (d) => d.setUint8(0x180 + 9, 0x7a), /fingerprint must be the hash/],
    ["the fingerprint", (d) => d.setUint8(SCHEMA_FINGERPRINT_OFFSET, 1), /fingerprint/],
    [
      "the offset",
      (d) => d.setUint32(SCHEMA_BLOCK_OFFSET_OFFSET, 0x100, true),
      /offset must be 0x180/,
    ],
    [
      "a huge length",
      (d) => d.setUint32(SCHEMA_BLOCK_LENGTH_OFFSET, 0xffff_ffff, true),
      /length must fit/,
    ],
    [
      "a length past entries_offset",
      (d) => d.setUint32(SCHEMA_BLOCK_LENGTH_OFFSET, 0x81, true),
      /length must fit/,
    ],
    ["a short length", (d) => d.setUint32(SCHEMA_BLOCK_LENGTH_OFFSET, 4, true), /length must fit/],
    ["words half zero", (d) => d.setBigUint64(SCHEMA_FINGERPRINT_OFFSET, 0n, true), /fingerprint/],
  ];
  for (const [what, hurt, message] of damage) {
    const d = fresh();
    hurt(new DataView(d));
    assert.throws(() => readSchema(d, d.byteLength, "/x"), (e: unknown) => {
      assert.ok(e instanceof SegmentInvalidError, what);
      assert.match(e.message, /^Cannot use segment \/x as /, what);
      assert.match(e.message, message, what);
      return true;
    });
  }
  // A block whose fingerprint matches but whose content is invalid is refused too.
  const d = fresh();
  new Uint8Array(d)[0x180 + 8] = 0x41; // 'A' in a name
  const bytes = new Uint8Array(d, 0x180, 8 + 2 * 36);
  new DataView(d).setBigUint64(SCHEMA_FINGERPRINT_OFFSET, fingerprint64(bytes), true);
  assert.throws(() => readSchema(d, d.byteLength, "/x"), /name must match/);
});

Deno.test("publishRecord: values by name, bigint or safe integer, scaled rounding", () => {
  const s = defineSchema([
    { name: "venue", type: "char[4]" },
    { name: "px", type: "i64", scale: 2 },
    { name: "qty", type: "u32" },
    { name: "big", type: "u64" },
    { name: "f", type: "f32" },
    { name: "small", type: "i16", scale: 1 },
  ]);
  const b = createRingBuffer(8, 1n, s);
  const w = new RingWriter(b);
  const slot = (i: number) => entriesOffsetFor(s) + i * 64;
  const v = new DataView(b);
  assert.equal(
    w.publishRecord({ venue: "XNAS", px: 101.25, qty: 7, big: 2n ** 64n - 1n, f: 0.5 }),
    0,
  );
  assert.equal(new TextDecoder().decode(new Uint8Array(b, slot(0) + 0x10, 4)), "XNAS");
  assert.equal(v.getBigInt64(slot(0) + 0x18, true), 10125n);
  assert.equal(v.getUint32(slot(0) + 0x20, true), 7);
  assert.equal(v.getBigUint64(slot(0) + 0x28, true), 2n ** 64n - 1n);
  assert.equal(v.getFloat32(slot(0) + 0x30, true), 0.5);
  w.publishRecord({ px: 123.45, big: 2 ** 53 - 1, small: -3276.8, venue: "A" });
  assert.equal(v.getBigInt64(slot(1) + 0x18, true), 12345n, "123.45 at scale 2 is 12345");
  assert.equal(v.getBigUint64(slot(1) + 0x28, true), 2n ** 53n - 1n);
  assert.equal(v.getInt16(slot(1) + 0x34, true), -32768);
  w.publishRecord({ px: -0.015 });
  assert.equal(v.getBigInt64(slot(2) + 0x18, true), -1n, "rounds to the nearest unit");
  const bad: [Record<string, unknown>, RegExp][] = [
    [{ qty: -1 }, /field qty must be an integer from 0 to 4294967295/],
    [{ qty: 2 ** 32 }, /field qty/],
    [{ qty: 1.5 }, /field qty/],
    [{ big: -1n }, /field big must be 0..2\^64-1/],
    [{ big: 2n ** 64n }, /field big/],
    [{ big: 2 ** 53 }, /field big must be a bigint or a safe integer/],
    [{ px: 2n ** 63n }, /field px must be -2\^63..2\^63-1/],
    [{ px: 1e14 }, /field px must be a number whose value x 10\^2 is a safe integer/],
    [{ small: 3276.8 }, /field small must be from -3276.8 to 3276.7/],
    [{ venue: "XNASD" }, /field venue must be at most 4 characters/],
    [{ venue: "Zé" }, /field venue must be ASCII/],
    [{ venue: 5 }, /field venue must be a string/],
    [{ f: 1e39 }, /field f must fit in f32/],
    [{ f: "1" }, /field f must be a number/],
    [{ nope: 1 }, /field nope is not in the schema/],
  ];
  for (const [record, message] of bad) {
    const before = w.position;
    assert.throws(
      () => w.publishRecord(record as Record<string, number>),
      (e: unknown) => e instanceof RangeError && message.test(e.message),
      JSON.stringify(record, (_, x) => typeof x === "bigint" ? `${x}n` : x),
    );
    assert.equal(w.position, before, "a refused record leaves the ring as it was");
  }
});

for (const ordering of ["tso", "atomic"] as const) {
  Deno.test(`typed setters publish the same bytes as publishRecord, allocation-free path (${ordering} ordering)`, () => {
    const s = defineSchema([
      { name: "venue", type: "char[4]" },
      { name: "px", type: "i64", scale: 2 },
      { name: "qty", type: "u32" },
      { name: "ts", type: "u64" },
      { name: "r", type: "f64" },
    ]);
    const a = createRingBuffer(8, 1n, s);
    const b = createRingBuffer(8, 1n, s);
    const clock = (out: Uint32Array, at: number) => {
      out[at] = 1;
      out[at + 1] = 0;
    };
    const wa = new RingWriter(a, { clock, ordering });
    const wb = new RingWriter(b, { clock, ordering });
    const [venue, px, qty, ts, r] = ["venue", "px", "qty", "ts", "r"].map((n) => wb.field(n));
    for (let i = 0; i < 20; i++) {
      wa.publishRecord({ venue: "XN", px: -i * 1.01, qty: i, ts: BigInt(i) << 40n, r: i / 3 });
      const slot = wb.claimRecord();
      wb.setText(slot, venue!, "XN");
      wb.setNumber(slot, px!, -i * 1.01);
      wb.setNumber(slot, qty!, i);
      wb.setBigInt(slot, ts!, BigInt(i) << 40n);
      wb.setNumber(slot, r!, i / 3);
      wb.commit();
    }
    assert.deepEqual(new Uint8Array(a), new Uint8Array(b));
    // The same bytes as the "tso" writer's publishRecord: the staging entry changes nothing.
    const c = createRingBuffer(8, 1n, s);
    const wc = new RingWriter(c, { clock, ordering: "tso" });
    for (let i = 0; i < 20; i++) {
      wc.publishRecord({ venue: "XN", px: -i * 1.01, qty: i, ts: BigInt(i) << 40n, r: i / 3 });
    }
    assert.deepEqual(new Uint8Array(a), new Uint8Array(c));
    assert.throws(() => wb.field("nope"), /field nope is not in the schema/);
    const slot = wb.claimRecord();
    assert.throws(() => wb.setNumber(slot, qty!, -1), /field qty/);
  });
}

/**
 * Random valid schemas: fields of every type, `char[N]` and `bytes[N]` with N up to `maxN`,
 * greedily kept while they fit entries of `entrySize` bytes.
 */
function schemasFor(entrySize: number, maxN: number): fc.Arbitrary<Schema> {
  return fc.array(
    fc.record({
      type: fc.constantFrom(...TYPES, "char", "bytes"),
      n: fc.integer({ min: 1, max: maxN }),
      scale: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 18 })),
    }),
    { minLength: 1, maxLength: 14 },
  ).map((raw) => {
    const specs: FieldSpec[] = [];
    let fitting = defineSchema([{ name: "f0", type: "u8" }]);
    for (const r of raw) {
      const type = r.type === "char" || r.type === "bytes" ? `${r.type}[${r.n}]` : r.type;
      const spec: FieldSpec = { name: `f${specs.length}`, type };
      if (r.scale && TYPES.includes(r.type) && r.type[0] !== "f") spec.scale = r.scale;
      const candidate = defineSchema([...specs, spec]);
      if (candidate.end <= entrySize) {
        fitting = candidate;
        specs.push(spec);
      }
    }
    return fitting;
  });
}

/** Random schemas of 64-byte entries (the writer's default). */
const schemas = schemasFor(64, 12);

/**
 * Publishes `count` simulated entries of `schema` in a ring of `entrySize`-byte entries, reads and
 * formats them all.
 */
function roundTrip(
  schema: Schema,
  count: number,
  start = 0,
  ordering: MemoryOrdering = DEFAULT_ORDERING,
  entrySize = 64,
): string {
  const buffer = createRingBuffer(256, 77n, schema, entrySize);
  // Start at `start`: write_ptr is where the simulation's phase is taken from.
  if (start > 0) new DataView(buffer).setBigUint64(0, BigInt(start), true);
  let t = 1_700_000_000_000_000_000n;
  const w = new RingWriter(buffer, {
    ordering,
    clock: (out, at) => {
      t += 1000n;
      out[at] = Number(t & 0xffff_ffffn);
      out[at + 1] = Number(t >> 32n);
    },
  });
  const r = new RingReader(buffer, 0, { position: start, ordering });
  const format = makeFormatter(schema, entrySize);
  const tail = new TextEncoder().encode(",77\n");
  const dst = new Uint32Array(256 * r.entryWords);
  const out = new Uint8Array(256 * (maxRowBytes(schema) + tail.length));
  let text = csvHeader(schema) + "\n";
  for (let done = 0; done < count;) {
    const n = Math.min(200, count - done);
    w.publishSimulatedSchema(n);
    const got = r.readBatch(dst, 256);
    assert.equal(got, n);
    text += new TextDecoder().decode(out.subarray(0, format(dst, got, out, 0, tail)));
    done += n;
  }
  return text;
}

/** Random schemas at each entry size, with the largest N of their char and bytes fields. */
const PROPERTY_SIZES: [entrySize: number, maxN: number, runs: number][] = [
  [64, 12, 150],
  [1024, 300, 40],
  [65_536, 20_000, 6],
];

for (const [entrySize, maxN, numRuns] of PROPERTY_SIZES) {
  Deno.test(`property: random schemas in ${entrySize}-byte entries, every field of every row is the simulation's value`, () => {
    fc.assert(
      fc.property(
        schemasFor(entrySize, maxN),
        fc.integer({ min: 0, max: 2000 }),
        (schema, start) => {
          const text = roundTrip(schema, 300, start, DEFAULT_ORDERING, entrySize);
          const seqs = checkSchemaRows(text, schema, 77n);
          assert.equal(seqs.length, 300);
          assert.equal(seqs[0], start);
          // The "atomic" ordering (the default off x86-64) publishes and reads the same rows.
          assert.equal(roundTrip(schema, 300, start, "atomic", entrySize), text);
        },
      ),
      { numRuns },
    );
  });
}

Deno.test("property: specials reach the CSV: extremes, negative decimals, NaN, ±Infinity, -0, subnormals", () => {
  const s = defineSchema([
    { name: "i", type: "i64", scale: 3 },
    { name: "u", type: "u64" },
    { name: "c", type: "char[6]" },
    { name: "d", type: "f64" },
    { name: "f", type: "f32" },
    { name: "n", type: "i8", scale: 2 },
  ]);
  const text = roundTrip(s, 1100); // one whole period of the simulation, and then some
  checkSchemaRows(text, s, 77n);
  const all = text.split("\n").join("\n");
  for (
    const needle of [
      "-9223372036854775.808",
      "9223372036854775.807",
      "18446744073709551615",
      "NaN",
      "-Infinity",
      ",-0,",
      "5e-324",
      "1.401298464324817e-45",
      '","',
      '""',
      "-1.28",
    ]
  ) assert.ok(all.includes(needle), `the CSV holds ${needle}`);
  assert.ok(!all.includes("\0"), "text stops at its first NUL");
});

/** Writes `schema` as a `--schema` file at `path`, every field with its `scale` (0 included). */
function writeSchemaFile(path: string, schema: Schema): void {
  const specs = schemaToJson(schema).fields.map(({ name, type, scale }) => ({ name, type, scale }));
  Deno.writeTextFileSync(path, JSON.stringify(specs));
}

Deno.test("the writer publishes a JSON --schema; the reporter's CSV checks field by field", async () => {
  await scenario("schema_e2e", async (s) => {
    const schema = defineSchema([
      { name: "venue", type: "char[5]" },
      { name: "px", type: "i64", scale: 4 },
      { name: "qty", type: "u16" },
      { name: "r", type: "f32" },
      { name: "d", type: "f64" },
      { name: "n", type: "i8", scale: 1 },
    ]);
    writeSchemaFile(s.path("s.json"), schema);
    const w = s.writer([
      "--schema",
      "s.json",
      "--count",
      "3000",
      "--rate",
      "0",
      "--capacity",
      "4096",
    ]);
    assert.equal(await w.waitExit(), 0, w.describe());
    const r = s.reporter(0, ["--out", "o.csv"]);
    await waitFor("3000 rows", () => rows(s.path("o.csv")) === 3000);
    r.signal("SIGTERM");
    assert.equal(await r.waitExit(), 0);
    using seg = Segment.open(s.name, { readOnly: true });
    assert.equal(seg.schema.fingerprint, schema.fingerprint);
    const seqs = checkSchemaRows(s.read("o.csv"), schema, seg.info.epoch);
    assert.deepEqual(seqs, Array.from({ length: 3000 }, (_, i) => i));
    // status shows the schema, and --json includes it.
    const status = new Proc("status", spawnProgram("status.ts", STATUS_FLAGS, ["--name", s.name]));
    assert.equal(await status.waitExit(), 0, status.stderr);
    assert.match(
      status.stdout,
      new RegExp(
        `^schema  custom ${
          schema.fingerprint.toString(16).padStart(16, "0")
        }  venue char\\[5\\] @0x10, px i64 scale 4 @0x18, qty u16 @0x20, r f32 @0x24, d f64 @0x28, n i8 scale 1 @0x30$`,
        "m",
      ),
    );
    const json = new Proc(
      "status",
      spawnProgram("status.ts", STATUS_FLAGS, ["--name", s.name, "--json"]),
    );
    assert.equal(await json.waitExit(), 0, json.stderr);
    assert.deepEqual(JSON.parse(json.stdout).schema, schemaToJson(schema));
  });
});

Deno.test("a bad --schema file is exit 2 naming the field and the rule; nothing is created", async () => {
  await scenario("schema_bad", async (s) => {
    const invalid = "is invalid: ";
    // A valid schema larger than the default entry's payload: exit 2 naming both sizes.
    const tooBig = "does not fit --entry-size 64: ";
    const cases: [unknown, string, RegExp][] = [
      [
        [{ name: "a", type: "char[41]" }, { name: "b", type: "u64" }],
        tooBig,
        /its fields take 56 payload bytes \(field b ends at entry byte 72\) but entry size 64 holds 48: use an entry size of at least 128\n$/,
      ],
      [[{ name: "Bad", type: "u8" }], invalid, /field 0 name must match/],
      [
        [{ name: "a", type: "u8" }, { name: "a", type: "u8" }],
        invalid,
        /field a is declared twice/,
      ],
      [[{ name: "epoch", type: "u8" }], invalid, /field epoch has a reserved name/],
      [[{ name: "a", type: "float" }], invalid, /field a has an unknown type.*"float"/],
      [[{ name: "a", type: "char[0]" }], invalid, /field a has char\[N\] with N out of 1..65520/],
      [[{ name: "a", type: "bytes[0]" }], invalid, /field a has bytes\[N\] with N out of 1..65516/],
      [
        [{ name: "a", type: "u32", scale: 19 }],
        invalid,
        /field a scale must be an integer from 0 to 18/,
      ],
    ];
    for (const [spec, kind, message] of cases) {
      Deno.writeTextFileSync(s.path("bad.json"), JSON.stringify(spec));
      const w = s.writer(["--schema", "bad.json", "--count", "1"]);
      assert.equal(await w.waitExit(), 2, w.describe());
      assert.ok(
        w.stderr.startsWith(`writer: error: Cannot start writer as --schema bad.json ${kind}`),
        w.stderr,
      );
      assert.match(w.stderr, message);
      assert.equal(w.stderr.trim().split("\n").length, 1, "one line");
      assert.equal(Segment.exists(s.name), false);
    }
    const missing = s.writer(["--schema", "nope.json"]);
    assert.equal(await missing.waitExit(), 2);
    assert.match(missing.stderr, /--schema file cannot be read: nope.json/);
  });
});

Deno.test("schema conflicts: re-open with another --schema is exit 3; --recreate rotates the CSV", async () => {
  await scenario("schema_conflict", async (s) => {
    Deno.writeTextFileSync(s.path("a.json"), '[{"name":"a","type":"u32"}]');
    Deno.writeTextFileSync(s.path("b.json"), '[{"name":"b","type":"i16","scale":2}]');
    const w1 = s.writer(["--schema", "a.json", "--count", "10", "--rate", "0"]);
    assert.equal(await w1.waitExit(), 0, w1.describe());
    const r1 = s.reporter(0, ["--out", "o.csv"]);
    await waitFor("10 rows", () => rows(s.path("o.csv")) === 10);
    r1.signal("SIGTERM");
    assert.equal(await r1.waitExit(), 0);
    const epochA = Segment.open(s.name, { readOnly: true });
    const a = epochA.schema;
    const eA = epochA.info.epoch;
    epochA.close();
    // The same schema again is fine; another one is refused and changes nothing.
    const same = s.writer(["--schema", "a.json", "--count", "0"]);
    assert.equal(await same.waitExit(), 0, same.describe());
    const other = s.writer(["--schema", "b.json", "--count", "1"]);
    assert.equal(await other.waitExit(), 3, other.describe());
    assert.match(
      other.stderr,
      /Cannot use segment \S+ as its schema \(a u32 @0x10\) differs from --schema b.json \(b i16 scale 2 @0x10\) \(use --recreate to replace it\)/,
    );
    const noSchema = s.writer(["--count", "5", "--rate", "0"]);
    assert.equal(await noSchema.waitExit(), 0, "no --schema: the segment's own schema is used");
    // --recreate with the other schema: a new epoch, and the reporter moves the old CSV aside.
    const w2 = s.writer(["--schema", "b.json", "--recreate", "--count", "20", "--rate", "0"]);
    assert.equal(await w2.waitExit(), 0, w2.describe());
    using seg = Segment.open(s.name, { readOnly: true });
    const r2 = s.reporter(0, ["--out", "o.csv"]);
    await waitFor("20 rows", () => {
      try {
        return csvLines(s.read("o.csv")).length === 20 &&
          s.read("o.csv").startsWith("seq,timestamp_ns,b,");
      } catch {
        return false;
      }
    });
    r2.signal("SIGTERM");
    assert.equal(await r2.waitExit(), 0);
    assert.match(r2.stderr, /was written under another schema; moved it to o.epoch-\d+.csv/);
    checkSchemaRows(s.read("o.csv"), seg.schema, seg.info.epoch);
    const old = s.read(`o.epoch-${eA}.csv`);
    assert.equal(checkSchemaRows(old, a, eA).length, 10, "the old rows are kept, whole");
  });
});

Deno.test("Segment.create stores a TypeScript schema; open() reads it back", () => {
  const name = uniqueName("schema_ts");
  const schema = defineSchema([{ name: "venue", type: "char[4]" }, { name: "px", type: "f64" }]);
  try {
    {
      using seg = Segment.create(name, { capacity: 16, schema });
      assert.equal(seg.info.entriesOffset, 0x200, "0x180 + 8 + 2 x 36, up to a multiple of 64");
      new RingWriter(seg.buffer).publishRecord({ venue: "XNAS", px: 101.25 });
    }
    using again = Segment.open(name);
    assert.equal(again.schema.fingerprint, schema.fingerprint);
    const r = new RingReader(again.buffer, 0);
    const dst = new Uint32Array(16 * ENTRY_WORDS);
    assert.equal(r.readBatch(dst, 16), 1);
    const out = new Uint8Array(512);
    const end = makeFormatter(again.schema)(dst, 1, out, 0, new TextEncoder().encode(",1\n"));
    assert.match(new TextDecoder().decode(out.subarray(0, end)), /^0,\d+,XNAS,101.25,1\n$/);
  } finally {
    unlinkQuietly(name);
  }
});

Deno.test("property through the programs: random schemas, writer --schema publishes, the reporter copies every field", async () => {
  await scenario("schema_prop", async (s) => {
    // A fixed seed: the same five random schemas every run.
    const samples = fc.sample(schemas, { numRuns: 5, seed: 424242 });
    for (const [k, schema] of samples.entries()) {
      writeSchemaFile(s.path(`p${k}.json`), schema);
      const count = 1100 + k; // one period of the simulation and then some
      const w = s.writer([
        "--schema",
        `p${k}.json`,
        "--recreate",
        "--count",
        `${count}`,
        "--rate",
        "0",
        "--capacity",
        "2048",
      ]);
      assert.equal(await w.waitExit(), 0, w.describe());
      const r = s.reporter(0, ["--out", "p.csv"]);
      await waitFor(`${count} rows of schema ${k}`, () => {
        try {
          const text = Deno.readTextFileSync(s.path("p.csv"));
          return text.startsWith(csvHeader(schema) + "\n") && csvLines(text).length === count;
        } catch {
          return false;
        }
      });
      r.signal("SIGTERM");
      assert.equal(await r.waitExit(), 0, r.describe());
      using seg = Segment.open(s.name, { readOnly: true });
      assert.equal(seg.schema.fingerprint, schema.fingerprint);
      const seqs = checkSchemaRows(s.read("p.csv"), schema, seg.info.epoch);
      assert.equal(seqs.length, count);
    }
  });
});
