/**
 * Binary layout v1: every offset pinned to the table, the entry encoding, and header
 * validation. No processes, no shared memory: plain ArrayBuffers.
 */
import assert from "node:assert/strict";
import * as L from "../layout.ts";
import { createRingBuffer, ENTRY_WORDS, RingWriter } from "../ring.ts";
import {
  DEFAULT_SCHEMA,
  defineSchema,
  encodeSchemaBlock,
  type FieldSpec,
  fingerprint64,
} from "../schema.ts";

Deno.test("layout header offsets match the issue's table", () => {
  assert.equal(L.WRITE_PTR_OFFSET, 0x00);
  assert.equal(L.READ_PTRS_OFFSET, 0x08);
  assert.equal(L.MAX_READERS, 8);
  assert.equal(L.MAGIC_OFFSET, 0x48, "read_ptrs are 8 x u64 from 0x08");
  assert.equal(L.VERSION_OFFSET, 0x4c);
  assert.equal(L.CAPACITY_OFFSET, 0x50);
  assert.equal(L.ENTRY_SIZE_OFFSET, 0x54);
  assert.equal(L.ENTRIES_OFFSET_OFFSET, 0x58);
  assert.equal(L.FLAGS_OFFSET, 0x5c);
  assert.equal(L.EPOCH_OFFSET, 0x60);
});

Deno.test("layout constants: magic is 0x53545052, version 1, entry size 64", () => {
  assert.equal(L.MAGIC, 0x53545052);
  assert.equal(L.VERSION, 1);
  assert.equal(L.ENTRY_SIZE, 64);
  assert.equal(L.BUSY_BIT_HI, 0x8000_0000, "bit 63 of seq is bit 31 of its high word");
});

Deno.test("layout extension offsets are pinned", () => {
  assert.equal(L.WRITER_OWNER_OFFSET, 0x68);
  assert.equal(L.WRITER_HEARTBEAT_OFFSET, 0x70);
  assert.equal(L.WAKE_SEQ_OFFSET, 0x78);
  assert.equal(L.WAITERS_OFFSET, 0x7c);
  assert.equal(L.WRITER_STARTED_OFFSET, 0x80);
  assert.equal(L.WRITER_START_INDEX_OFFSET, 0x88);
  assert.equal(L.SCHEMA_FINGERPRINT_OFFSET, 0x90, "the schema words take reserved 0x90..0xA0");
  assert.equal(L.SCHEMA_BLOCK_OFFSET_OFFSET, 0x98);
  assert.equal(L.SCHEMA_BLOCK_LENGTH_OFFSET, 0x9c);
  assert.equal(L.RESERVED_OFFSET, 0xa0);
  assert.equal(L.READER_OWNERS_OFFSET, 0xc0);
  assert.equal(L.READER_HEARTBEATS_OFFSET, 0x100);
  assert.equal(L.READER_LOST_OFFSET, 0x140);
  assert.equal(L.HEADER_SIZE, 0x180);
  assert.equal(L.HEADER_SIZE % L.ENTRY_SIZE, 0, "slot 0 starts on a cache line");
});

Deno.test("role lock ranges are pinned: each role's lock covers the bytes of its owner word", () => {
  assert.equal(L.ROLE_LOCK_LENGTH, 8);
  assert.equal(L.WRITER_LOCK_OFFSET, 0x68);
  assert.equal(L.WRITER_LOCK_OFFSET, L.WRITER_OWNER_OFFSET);
  assert.equal(L.READER_LOCKS_OFFSET, 0xc0);
  assert.equal(L.READER_LOCKS_OFFSET, L.READER_OWNERS_OFFSET);
  // Nine ranges, pairwise disjoint: one role's lock never blocks another's.
  const starts = [
    L.WRITER_LOCK_OFFSET,
    ...Array.from({ length: L.MAX_READERS }, (_, k) => L.READER_LOCKS_OFFSET + k * 8),
  ].sort((a, b) => a - b);
  for (let i = 1; i < starts.length; i++) {
    assert.ok(starts[i]! >= starts[i - 1]! + L.ROLE_LOCK_LENGTH, `ranges ${i - 1} and ${i}`);
  }
  assert.equal(L.READER_LOCKS_OFFSET + 7 * 8 + L.ROLE_LOCK_LENGTH, L.READER_HEARTBEATS_OFFSET);
});

Deno.test("layout entry offsets are pinned: seq 0x00, timestamp 0x08, payload 0x10..0x3F", () => {
  assert.equal(L.SEQ_OFFSET, 0x00);
  assert.equal(L.TIMESTAMP_OFFSET, 0x08);
  assert.equal(L.SYMBOL_OFFSET, 0x10);
  assert.equal(L.SYMBOL_LENGTH, 8);
  assert.equal(L.PRICE_OFFSET, 0x18);
  assert.equal(L.QUANTITY_OFFSET, 0x20);
  assert.equal(L.SIDE_OFFSET, 0x24);
  assert.equal(L.ENTRY_RESERVED_OFFSET, 0x25);
  assert.equal(ENTRY_WORDS * 4, 0x40, "the payload ends at 0x3F");
  assert.equal(L.PAYLOAD_OFFSET, 0x10);
  assert.equal(L.PAYLOAD_SIZE, 48);
});

Deno.test("layout schema block constants are pinned: RSCH, v1, 8-byte head, 36-byte fields", () => {
  assert.equal(L.SCHEMA_MAGIC, 0x48435352);
  assert.equal(
    new TextDecoder().decode(new Uint8Array(new Uint32Array([L.SCHEMA_MAGIC]).buffer)),
    "RSCH",
  );
  assert.equal(L.SCHEMA_VERSION, 1);
  assert.equal(L.SCHEMA_FIELDS_OFFSET, 8);
  assert.equal(L.SCHEMA_NAME_SIZE, 32);
  assert.equal(L.SCHEMA_FIELD_SIZE, 36);
  assert.equal(L.SCHEMA_MAX_BLOCK, 8 + 48 * 36);
});

Deno.test("layout entry sizes and their bounds are pinned: 64 to 65,536, 2^30 per ring, 4 MiB of header and schema", () => {
  assert.equal(L.ENTRY_SIZE, 64, "the default and the smallest");
  assert.equal(L.MAX_ENTRY_SIZE, 65_536);
  assert.equal(L.MAX_RING_BYTES, 2 ** 30);
  assert.equal(L.MAX_ENTRIES_OFFSET, 4 * 1024 * 1024);
  assert.equal(L.ENTRY_HEADER_SIZE, 16, "seq and timestamp_ns before every payload");
  assert.equal(L.ENTRY_HEADER_SIZE, L.PAYLOAD_OFFSET);
  assert.equal(L.MAX_CAPACITY, 2 ** 24);
  assert.equal(L.MAX_CAPACITY * L.ENTRY_SIZE, L.MAX_RING_BYTES, "2^24 slots of 64 bytes fill 2^30");
  // The largest version-2 block (65,520 one-byte fields) fits below MAX_ENTRIES_OFFSET.
  const largestBlock = L.SCHEMA_FIELDS_OFFSET + (L.MAX_ENTRY_SIZE - 16) * L.SCHEMA_FIELD_SIZE_V2;
  assert.equal(largestBlock, 2_882_888);
  assert.ok(L.HEADER_SIZE + largestBlock <= L.MAX_ENTRIES_OFFSET);
  const valid = [64, 128, 256, 512, 1024, 2048, 4096, 8192, 16_384, 32_768, 65_536];
  for (const n of valid) assert.ok(L.isValidEntrySize(n), `${n}`);
  for (const n of [0, 1, 32, 63, 65, 96, 100, 65_535, 131_072, -64, 64.5, NaN, Infinity]) {
    assert.ok(!L.isValidEntrySize(n), `${n}`);
  }
  assert.equal(L.segmentSize(16, 0x180, 4096), 0x180 + 16 * 4096);
  assert.equal(L.segmentSize(16, 0x200, 65_536), 0x200 + 16 * 65_536);
  assert.equal(L.slotOffset(0, 8, 0x180, 1024), 0x180);
  assert.equal(L.slotOffset(9, 8, 0x200, 1024), 0x200 + 1024);
  assert.equal(L.slotOffset(2 ** 32 + 7, 16, 0x180, 65_536), 0x180 + 7 * 65_536);
});

Deno.test("layout schema block version 2 constants are pinned: 44-byte fields, type 12 bytes[N], u32 length", () => {
  assert.equal(L.SCHEMA_VERSION_2, 2);
  assert.equal(L.SCHEMA_FIELD_SIZE_V2, 44);
  assert.equal(L.SCHEMA_FIELD_SIZE_V2, L.SCHEMA_NAME_SIZE + 12);
  assert.equal(L.SCHEMA_TYPE_BYTES, 12);
  assert.equal(L.BYTES_LENGTH_SIZE, 4);
});

Deno.test("a version-2 schema block is laid out byte by byte as layout.ts documents", () => {
  // venue @0x10 (5 bytes), px @0x18 (8), blob @0x20 (4 + 1000), qty @0x40C (2), d @0x410 (8).
  const schema = defineSchema([
    { name: "venue", type: "char[5]" },
    { name: "px", type: "i64", scale: 4 },
    { name: "blob", type: "bytes[1000]" },
    { name: "qty", type: "u16", scale: 2 },
    { name: "d", type: "f64" },
  ]);
  const block = encodeSchemaBlock(schema);
  assert.equal(block.length, 8 + 5 * 44);
  assert.deepEqual([...block.subarray(0, 8)], [0x52, 0x53, 0x43, 0x48, 2, 0, 5, 0], "RSCH, 2, 5");
  // [name, type, scale, size, offset] of each field, then its 44 bytes checked one by one.
  const fields: [string, number, number, number, number][] = [
    ["venue", 11, 0, 5, 0x10],
    ["px", 8, 4, 8, 0x18],
    ["blob", 12, 0, 1004, 0x20],
    ["qty", 2, 2, 2, 0x40c],
    ["d", 10, 0, 8, 0x410],
  ];
  fields.forEach(([name, type, scale, size, offset], i) => {
    const record = block.subarray(8 + 44 * i, 8 + 44 * (i + 1));
    const expected = new Uint8Array(44);
    expected.set(new TextEncoder().encode(name), 0x00); // name char[32], NUL-padded
    expected[0x20] = type;
    expected[0x21] = scale;
    // 0x22..0x23 reserved u16, zero
    new DataView(expected.buffer).setUint32(0x24, size, true);
    new DataView(expected.buffer).setUint32(0x28, offset, true);
    assert.deepEqual(record, expected, `field ${i} (${name})`);
  });
  // The little-endian u32 words, literally: blob's size 1004 and qty's offset 0x40C.
  assert.deepEqual([...block.subarray(8 + 88 + 0x20, 8 + 88 + 44)], [
    12,
    0,
    0,
    0,
    0xec,
    0x03,
    0,
    0,
    0x20,
    0,
    0,
    0,
  ]);
  assert.deepEqual([...block.subarray(8 + 132 + 0x28, 8 + 132 + 44)], [0x0c, 0x04, 0, 0]);
  assert.equal(schema.fingerprint, fingerprint64(block), "the fingerprint hashes the block");
  assert.deepEqual([schema.version, schema.end, schema.minEntrySize], [2, 0x418, 2048]);
  // In a segment: at 0x180, schema_length 228, entries_offset the next multiple of 64.
  const buffer = createRingBuffer(4, 1n, schema, 2048);
  const view = new DataView(buffer);
  assert.equal(view.getUint32(L.SCHEMA_BLOCK_OFFSET_OFFSET, true), 0x180);
  assert.equal(view.getUint32(L.SCHEMA_BLOCK_LENGTH_OFFSET, true), 228);
  assert.equal(view.getUint32(L.ENTRIES_OFFSET_OFFSET, true), 0x180 + 256);
  assert.deepEqual(new Uint8Array(buffer, 0x180, 228), block);
});

Deno.test("the schema block is version 1 while every field ends by 0x40 and none is bytes[N]", () => {
  const version = (specs: FieldSpec[]) => defineSchema(specs).version;
  assert.equal(DEFAULT_SCHEMA.version, 1);
  assert.equal(version([{ name: "a", type: "char[48]" }]), 1, "ends exactly at 0x40");
  assert.equal(version([{ name: "a", type: "char[49]" }]), 2, "ends at 0x41");
  assert.equal(version([{ name: "a", type: "char[44]" }, { name: "b", type: "u32" }]), 1);
  assert.equal(
    version([{ name: "a", type: "char[45]" }, { name: "b", type: "u32" }]),
    2,
    "by alignment",
  );
  assert.equal(version([{ name: "a", type: "bytes[1]" }]), 2, "bytes[N] needs version 2");
  assert.equal(encodeSchemaBlock(defineSchema([{ name: "a", type: "char[48]" }])).length, 8 + 36);
});

Deno.test("a created ring reads RPTS at bytes 0x48..0x4B and a v1 header", () => {
  const buffer = createRingBuffer(16, 42n);
  const bytes = new Uint8Array(buffer);
  assert.equal(new TextDecoder().decode(bytes.subarray(0x48, 0x4c)), "RPTS");
  const view = new DataView(buffer);
  assert.equal(view.getUint32(0x48, true), 0x53545052);
  assert.equal(view.getUint32(0x4c, true), 1);
  assert.equal(view.getUint32(0x50, true), 16);
  assert.equal(view.getUint32(0x54, true), 64);
  assert.equal(view.getUint32(0x58, true), 0x180);
  assert.equal(view.getUint32(0x5c, true), 0, "flags are zero in v1");
  assert.equal(view.getBigUint64(0x60, true), 42n);
  assert.equal(view.getBigUint64(0x00, true), 0n);
  for (let id = 0; id < 8; id++) assert.equal(view.getBigUint64(0x08 + id * 8, true), 0n);
  assert.equal(buffer.byteLength, 0x180 + 16 * 64);
  assert.equal(L.segmentSize(16), 0x180 + 16 * 64);
  for (let slot = 0; slot < 16; slot++) {
    assert.equal(
      view.getBigUint64(0x180 + slot * 64, true),
      0xffff_ffff_ffff_ffffn,
      `slot ${slot} starts as never written`,
    );
  }
});

Deno.test("slotOffset maps an index to its slot modulo capacity", () => {
  assert.equal(L.slotOffset(0, 8), 0x180);
  assert.equal(L.slotOffset(7, 8), 0x180 + 7 * 64);
  assert.equal(L.slotOffset(8, 8), 0x180);
  assert.equal(L.slotOffset(2 ** 32 + 3, 8), 0x180 + 3 * 64);
});

Deno.test("encodeEntry and decodeEntry round-trip every field at its offset", () => {
  const view = new DataView(new ArrayBuffer(128));
  const entry: L.Entry = {
    seq: 2 ** 52 - 1,
    timestampNs: 0xffff_ffff_ffff_fffen,
    symbol: "ABCDEFGH",
    priceE4: -123_456_789,
    quantity: 0xffff_ffff,
    side: "S",
  };
  encodeEntry64(view, 64, entry);
  assert.deepEqual(L.decodeEntry(view, 64), entry);
  assert.equal(view.getBigUint64(64 + 0x00, true), BigInt(2 ** 52 - 1));
  assert.equal(view.getBigUint64(64 + 0x08, true), 0xffff_ffff_ffff_fffen);
  assert.equal(
    new TextDecoder().decode(new Uint8Array(view.buffer, 64 + 0x10, 8)),
    "ABCDEFGH",
  );
  assert.equal(view.getBigInt64(64 + 0x18, true), -123_456_789n);
  assert.equal(view.getUint32(64 + 0x20, true), 0xffff_ffff);
  assert.equal(view.getUint8(64 + 0x24), 0x53);
  for (let i = 0x25; i < 0x40; i++) assert.equal(view.getUint8(64 + i), 0, `byte ${i} is zero`);
  // The first 64 bytes were not touched.
  assert.ok(new Uint8Array(view.buffer, 0, 64).every((b) => b === 0));

  const short = { ...entry, seq: 0, symbol: "AB", timestampNs: 0n, priceE4: 0, side: "B" };
  encodeEntry64(view, 0, short);
  assert.deepEqual(L.decodeEntry(view, 0), short);
  assert.equal(view.getUint8(0x10 + 2), 0, "a short symbol is NUL-padded");
});

function encodeEntry64(view: DataView, offset: number, e: L.Entry): void {
  new Uint8Array(view.buffer, offset, 64).fill(0xaa); // garbage that must be overwritten
  L.encodeEntry(view, offset, e);
}

Deno.test("encodeEntry refuses a seq beyond 2^52-1, a symbol over 8 bytes, a side of 2 chars", () => {
  const view = new DataView(new ArrayBuffer(64));
  const ok: L.Entry = { ...L.simulatedEntry(1), timestampNs: 1n };
  assert.throws(() => L.encodeEntry(view, 0, { ...ok, seq: 2 ** 52 }), /2\^52-1.*4503599627370496/);
  assert.throws(() => L.encodeEntry(view, 0, { ...ok, seq: -1 }), /current value is -1/);
  assert.throws(() => L.encodeEntry(view, 0, { ...ok, symbol: "NINECHARS" }), /NINECHARS/);
  assert.throws(() => L.encodeEntry(view, 0, { ...ok, side: "BS" }), /current value is BS/);
});

Deno.test("a simulated entry published by RingWriter decodes field by field", () => {
  const buffer = createRingBuffer(8);
  const ts = 0x1234_5678_9abc_def0n;
  const writer = new RingWriter(buffer, {
    clock: (out, at) => {
      out[at] = Number(ts & 0xffff_ffffn);
      out[at + 1] = Number(ts >> 32n);
    },
  });
  assert.equal(writer.publishSimulated(11), 11);
  const view = new DataView(buffer);
  for (let seq = 3; seq < 11; seq++) {
    const at = L.slotOffset(seq, 8);
    const e = L.decodeEntry(view, at);
    assert.equal(e.seq, seq);
    assert.equal(e.timestampNs, ts);
    assert.equal(e.symbol, L.symbolFor(seq));
    assert.equal(e.priceE4, L.priceFor(seq));
    assert.equal(e.quantity, L.quantityFor(seq));
    assert.equal(e.side, L.sideFor(seq));
    assert.deepEqual({ ...e, timestampNs: undefined }, {
      ...L.simulatedEntry(seq),
      timestampNs: undefined,
    });
    for (let i = 0x25; i < 0x40; i++) assert.equal(view.getUint8(at + i), 0);
  }
  assert.equal(view.getBigUint64(L.WRITE_PTR_OFFSET, true), 11n);
});

Deno.test("the simulated payload is deterministic and in its documented ranges", () => {
  assert.deepEqual(L.simulatedEntry(0), {
    seq: 0,
    symbol: "AAPL",
    priceE4: 1_000_000,
    quantity: 1,
    side: "B",
  });
  assert.deepEqual(L.simulatedEntry(1), {
    seq: 1,
    symbol: "MSFT",
    priceE4: 1_007_919,
    quantity: 38,
    side: "S",
  });
  for (const seq of [0, 1, 7, 8, 999, 1000, 999_999, 1_000_000, 2 ** 40 + 1, 2 ** 52 - 2]) {
    const e = L.simulatedEntry(seq);
    assert.ok(e.priceE4 >= 1_000_000 && e.priceE4 <= 1_999_999, `price of ${seq}`);
    assert.ok(e.quantity >= 1 && e.quantity <= 1000, `quantity of ${seq}`);
    assert.equal(e.side, seq % 2 === 0 ? "B" : "S");
    assert.equal(e.symbol, L.SYMBOLS[seq % 8]);
  }
});

// ---------------------------------------------------------------------------------------------
// Header validation

/** A valid 16-slot ring, changed by `mutate`, then validated; returns the error message. */
function invalid(mutate: (view: DataView) => void, size?: number): string {
  const buffer = createRingBuffer(16, 7n);
  mutate(new DataView(buffer));
  try {
    L.validateHeader(buffer, size ?? buffer.byteLength, "/rpt_t2_hdr");
  } catch (e) {
    assert.ok(e instanceof L.SegmentInvalidError, `expected SegmentInvalidError, got ${e}`);
    assert.equal(e.name, "SegmentInvalidError");
    assert.ok(e.message.includes("/rpt_t2_hdr"), `names the segment: ${e.message}`);
    assert.ok(!e.message.includes("\n"), "one line");
    return e.message;
  }
  throw new assert.AssertionError({ message: "validateHeader accepted an invalid header" });
}

Deno.test("a valid header is accepted and its shape returned", () => {
  const buffer = createRingBuffer(16, 7n);
  const view = new DataView(buffer);
  view.setBigUint64(L.WRITE_PTR_OFFSET, 100n, true);
  view.setBigUint64(L.READ_PTRS_OFFSET + 3 * 8, 100n, true);
  view.setBigUint64(L.READ_PTRS_OFFSET + 5 * 8, 42n, true);
  assert.deepEqual(L.validateHeader(buffer, buffer.byteLength, "/x"), {
    capacity: 16,
    entrySize: 64,
    entriesOffset: 0x180,
    epoch: 7n,
    writePtr: 100,
    readPtrs: [0, 0, 0, 100, 0, 42, 0, 0],
  });
});

Deno.test("header validation rejects a wrong size, naming the size", () => {
  const full = 0x180 + 16 * 64;
  assert.match(
    invalid(() => {}, full - 64),
    new RegExp(`= ${full} bytes: current value is ${full - 64}`),
  );
  assert.match(invalid(() => {}, 100), /at least 384 bytes: current value is 100/);
  const bigger = new ArrayBuffer(full + 64);
  new Uint8Array(bigger).set(new Uint8Array(createRingBuffer(16, 7n)));
  assert.throws(
    () => L.validateHeader(bigger, bigger.byteLength, "/big"),
    (e: Error) =>
      e instanceof L.SegmentInvalidError && e.message.includes(`current value is ${full + 64}`),
  );
});

Deno.test("header validation rejects a wrong magic, naming it in hex", () => {
  assert.match(
    invalid((v) => v.setUint32(L.MAGIC_OFFSET, 0xdeadbeef, true)),
    /magic must be 0x53545052: current value is 0xDEADBEEF/,
  );
  // "RPTS" stored big-endian is a different number.
  assert.match(
    invalid((v) => v.setUint32(L.MAGIC_OFFSET, 0x53545052, false)),
    /current value is 0x52505453/,
  );
});

Deno.test("header validation rejects a wrong version, naming it", () => {
  assert.match(
    invalid((v) => v.setUint32(L.VERSION_OFFSET, 2, true)),
    /version must be 1: current value is 2/,
  );
  assert.match(invalid((v) => v.setUint32(L.VERSION_OFFSET, 0, true)), /current value is 0$/);
});

Deno.test("header validation rejects an entry size that is not a power of two from 64 to 65,536 and capacity x entry size over 2^30, naming the value", () => {
  for (const size of [0, 32, 63, 65, 96, 100, 1000, 65_535, 131_072, 0xffff_ffff]) {
    assert.match(
      invalid((v) => v.setUint32(L.ENTRY_SIZE_OFFSET, size, true)),
      new RegExp(
        `its entry_size must be a power of two from 64 to 65536: current value is ${size}$`,
      ),
    );
  }
  // A valid entry size that does not match the segment's size is a size error naming it.
  assert.match(
    invalid((v) => v.setUint32(L.ENTRY_SIZE_OFFSET, 128, true)),
    /size must be entries_offset \+ capacity x entry_size = 2432 bytes: current value is 1408$/,
  );
  // capacity x entry_size over 2^30 is refused before the size is compared (no 2 GiB mapping).
  const over = invalid((v) => {
    v.setUint32(L.CAPACITY_OFFSET, 2 ** 15, true);
    v.setUint32(L.ENTRY_SIZE_OFFSET, 65_536, true);
  });
  assert.match(
    over,
    /capacity x entry_size must be at most 2\^30 bytes: current values are 32768 and 65536$/,
  );
  assert.match(
    invalid((v) => {
      v.setUint32(L.CAPACITY_OFFSET, 2 ** 24, true);
      v.setUint32(L.ENTRY_SIZE_OFFSET, 128, true);
    }),
    /current values are 16777216 and 128$/,
  );
  // Every valid size of a matching segment is accepted and returned.
  for (let size = 64; size <= L.MAX_ENTRY_SIZE; size *= 2) {
    const buffer = createRingBuffer(4, 7n, DEFAULT_SCHEMA, size);
    const info = L.validateHeader(buffer, buffer.byteLength, "/x");
    assert.deepEqual([info.entrySize, info.capacity], [size, 4]);
    assert.equal(new DataView(buffer).getUint32(0x54, true), size, "entry_size at 0x54");
    assert.equal(buffer.byteLength, L.segmentSize(4, 0x180, size));
  }
});

Deno.test("header validation rejects a capacity that is not a power of two, naming it", () => {
  assert.match(
    invalid((v) => v.setUint32(L.CAPACITY_OFFSET, 12, true)),
    /capacity must be a power of two.*current value is 12/,
  );
  assert.match(invalid((v) => v.setUint32(L.CAPACITY_OFFSET, 0, true)), /capacity.*value is 0/);
  assert.match(
    invalid((v) => v.setUint32(L.CAPACITY_OFFSET, 2 ** 25, true)),
    /capacity.*current value is 33554432/,
  );
  // A power of two that does not match the size is a size error.
  assert.match(
    invalid((v) => v.setUint32(L.CAPACITY_OFFSET, 32, true)),
    /size must be entries_offset \+ capacity x entry_size = 2432 bytes: current value is 1408/,
  );
});

Deno.test("header validation rejects a bad entries_offset, naming it", () => {
  assert.match(
    invalid((v) => v.setUint32(L.ENTRIES_OFFSET_OFFSET, 0x1a0, true)),
    /entries_offset must be a multiple of 64 from 384 to 4194304: current value is 416/,
  );
  assert.match(
    invalid((v) => v.setUint32(L.ENTRIES_OFFSET_OFFSET, 0x100, true)),
    /entries_offset.*current value is 256/,
  );
  // Past 4 MiB (a multiple of 64, so only the bound refuses it).
  assert.match(
    invalid((v) => v.setUint32(L.ENTRIES_OFFSET_OFFSET, L.MAX_ENTRIES_OFFSET + 64, true)),
    /entries_offset must be a multiple of 64 from 384 to 4194304: current value is 4194368$/,
  );
});

Deno.test("header validation rejects epoch 0", () => {
  assert.match(
    invalid((v) => v.setBigUint64(L.EPOCH_OFFSET, 0n, true)),
    /epoch must be non-zero: current value is 0/,
  );
});

Deno.test("header validation rejects a read_ptr beyond write_ptr, naming the reader", () => {
  const message = invalid((v) => {
    v.setBigUint64(L.WRITE_PTR_OFFSET, 2n, true);
    v.setBigUint64(L.READ_PTRS_OFFSET + 3 * 8, 5n, true);
  });
  assert.match(message, /read_ptrs\[3\] must be at most write_ptr 2: current value is 5/);
});

Deno.test("header validation rejects a write_ptr beyond 2^52-1", () => {
  assert.match(
    invalid((v) => v.setBigUint64(L.WRITE_PTR_OFFSET, 1n << 60n, true)),
    /write_ptr must be at most 2\^52-1: current value is 1152921504606846976/,
  );
});

Deno.test("isValidCapacity accepts powers of two from 1 to 2^24 only", () => {
  for (const n of [1, 2, 64, 1024, 2 ** 24]) assert.ok(L.isValidCapacity(n), `${n}`);
  for (const n of [0, -1, 3, 12, 1000, 2 ** 25, 1.5, NaN]) assert.ok(!L.isValidCapacity(n), `${n}`);
});

Deno.test("stream messages: header names, kinds, message ids, the fingerprint text and the largest batch are pinned", () => {
  assert.equal(L.STREAM_KIND_HEADER, "Rpt-Kind");
  assert.equal(L.STREAM_EPOCH_HEADER, "Rpt-Epoch");
  assert.equal(L.STREAM_FIRST_HEADER, "Rpt-First-Seq");
  assert.equal(L.STREAM_COUNT_HEADER, "Rpt-Count");
  assert.equal(L.STREAM_KIND_ENTRIES, "entries");
  assert.equal(L.STREAM_KIND_LOST, "lost");
  assert.equal(L.STREAM_KIND_SCHEMA, "schema");
  assert.equal(L.STREAM_SCHEMA_HEADER, "Rpt-Schema");
  assert.equal(L.MAX_STREAM_BATCH, 16_000);
  assert.ok(
    L.MAX_STREAM_BATCH * L.ENTRY_SIZE + 4096 <= 1024 * 1024,
    "fits the default max_payload",
  );
  assert.equal(L.streamMsgId(1795709114593641945n, 4096), "1795709114593641945:4096");
  assert.equal(
    L.streamSchemaMsgId(1795709114593641945n, 4096),
    "1795709114593641945:4096:schema",
  );
  assert.equal(L.streamFingerprint(0xcbf29ce484222325n), "cbf29ce484222325");
  assert.equal(L.streamFingerprint(1n), "0000000000000001");
});

Deno.test("stream messages carry Rpt-Entry-Size; streamBatchLimit keeps a message under max_payload", () => {
  assert.equal(L.STREAM_ENTRY_SIZE_HEADER, "Rpt-Entry-Size");
  assert.equal(L.STREAM_HEADER_ROOM, 1024);
  const MiB = 1024 * 1024;
  const cases: [number, number, number][] = [
    [64, MiB, 16_000], // capped at MAX_STREAM_BATCH
    [64, 8 * MiB, 16_000],
    [128, MiB, 8184],
    [1024, MiB, 1023],
    [4096, MiB, 255],
    [65_536, MiB, 15],
    [65_536, 8 * MiB, 127],
    [65_536, 65_536 + 1024, 1], // exactly one entry and the header room
    [65_536, 65_536 + 1023, 0],
    [65_536, 65_536, 0], // not even one: the bridge refuses such a server
    [64, 1000, 0],
  ];
  for (const [entrySize, maxPayload, limit] of cases) {
    assert.equal(L.streamBatchLimit(entrySize, maxPayload), limit, `${entrySize} in ${maxPayload}`);
    if (limit > 0) assert.ok(limit * entrySize + L.STREAM_HEADER_ROOM <= maxPayload);
  }
});
