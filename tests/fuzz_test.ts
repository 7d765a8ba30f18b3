/**
 * Property-based fuzzing of segment validation against REAL shared-memory objects: random and
 * mutated header bytes written into segments made by `Segment.create`, and raw objects of random
 * sizes, then `Segment.open`. An independent oracle says what each must give: opening may only
 * succeed on a valid header (returning exactly its fields), and otherwise must throw a
 * SegmentInvalidError or SegmentNotReadyError with a one-line message naming the segment. Anything
 * else (a RangeError from an out-of-bounds read, a crash) fails. Segment names are fuzzed too.
 *
 * Headers carry every entry size (64 to 65,536 bytes); the entry size, `capacity x entry_size`
 * (at most 2^30) and `entries_offset` (at most 4 MiB) are also fuzzed out of bounds on their own.
 *
 * The schema block is fuzzed the same way: real blocks of random valid schemas of both versions
 * (version 2 with bytes[N] and fields past 0x40) placed after the header (with their fingerprint,
 * offset and length in the header's words), then damaged; the oracle checks the block from the
 * contract (bounds, FNV-1a 64, every byte of every field, and that it fits the entry size).
 *
 * The seed is fixed (override with RPT_FUZZ_SEED) so a run is reproducible.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  CAPACITY_OFFSET,
  ENTRIES_OFFSET_OFFSET,
  ENTRY_SIZE_OFFSET,
  EPOCH_OFFSET,
  FLAGS_OFFSET,
  HEADER_SIZE,
  MAGIC,
  MAGIC_OFFSET,
  MAX_CAPACITY,
  MAX_INDEX,
  MAX_READERS,
  READ_PTRS_OFFSET,
  SCHEMA_BLOCK_LENGTH_OFFSET,
  SCHEMA_BLOCK_OFFSET_OFFSET,
  SCHEMA_FINGERPRINT_OFFSET,
  SCHEMA_MAX_BLOCK,
  SegmentInvalidError,
  validateHeader,
  VERSION,
  VERSION_OFFSET,
  WRITE_PTR_OFFSET,
} from "../layout.ts";
import { type CreateOptions, Segment, SegmentNotReadyError, validateName } from "../segment.ts";
import {
  decodeSchemaBlock,
  DEFAULT_SCHEMA,
  defineSchema,
  encodeSchemaBlock,
  type FieldSpec,
  readSchema,
  type Schema,
  SchemaError,
} from "../schema.ts";
import { segName, unlinkQuietly, writeRawShm } from "./_faults.ts";

const SEED = Number(Deno.env.get("RPT_FUZZ_SEED") ?? 20240611);
/** The contract's bounds: entry sizes 2^6..2^16, capacity x entry_size <= 2^30, offset <= 4 MiB. */
const MIN_ENTRY_LOG = 6;
const MAX_ENTRY_LOG = 16;
const MAX_RING = 2 ** 30;
const MAX_OFFSET = 4 * 1024 * 1024;
/** The largest object Segment.open maps: entries_offset up to 4 MiB, then up to 2^30 bytes. */
const LARGEST = MAX_OFFSET + MAX_RING;
/**
 * Objects larger than this are opened read-only. A read-write open pre-faults the whole mapping
 * (MAP_POPULATE): for the 1 GiB objects the raw-object case kept making, that zeroed a gigabyte
 * per open and the case took three minutes. A read-only open maps lazily and validates the same.
 */
const POPULATE_LIMIT = 1 << 22;
const U64_MAX = 2n ** 64n - 1n;

/** What opening must give, from the bytes alone. */
type Expected =
  | { kind: "notready" }
  | { kind: "invalid" }
  | {
    kind: "valid";
    capacity: number;
    entrySize: number;
    entriesOffset: number;
    epoch: bigint;
    writePtr: number;
    readPtrs: number[];
    /** The schema fingerprint the segment must report (the default schema's without a block). */
    fingerprint: bigint;
  };

/** Bytes a fuzzed object image carries beyond the header: room for the largest block. */
const IMAGE_SIZE = HEADER_SIZE + SCHEMA_MAX_BLOCK;

/** FNV-1a 64, from the contract. */
function fnv1a64(bytes: Uint8Array): bigint {
  let h = 0xcbf29ce484222325n;
  for (const b of bytes) h = ((h ^ BigInt(b)) * 0x100000001b3n) % (1n << 64n);
  return h;
}

/** Bytes of each scalar type code 1..10 (u8 u16 u32 u64 i8 i16 i32 i64 f32 f64). */
const SCALAR_SIZES = [0, 1, 2, 4, 8, 1, 2, 4, 8, 4, 8];

/** Field `i`'s name from its 32-byte record, or undefined when the name breaks the rules. */
function blockName(r: Uint8Array, names: Set<string>): string | undefined {
  const nul = r.indexOf(0);
  if (nul < 1 || nul > 31 || r.subarray(nul, 32).some((x) => x !== 0)) return undefined;
  const name = String.fromCharCode(...r.subarray(0, nul));
  if (!/^[a-z_][a-z0-9_]*$/.test(name) || names.has(name)) return undefined;
  if (name === "seq" || name === "timestamp_ns" || name === "epoch") return undefined;
  names.add(name);
  return name;
}

/**
 * The schema block check from the contract in layout.ts, versions 1 and 2: the entry byte where
 * the last field ends, or undefined when the block is invalid (whatever the entry size).
 */
function blockEnd(block: Uint8Array): number | undefined {
  const b = new DataView(block.buffer, block.byteOffset, block.byteLength);
  if (block.length < 8 || b.getUint32(0, true) !== 0x48435352) return undefined;
  const version = b.getUint16(4, true);
  if (version !== 1 && version !== 2) return undefined;
  const v1 = version === 1;
  const record = v1 ? 36 : 44;
  const count = b.getUint16(6, true);
  if (count < 1 || count > (v1 ? 48 : 65520) || block.length !== 8 + record * count) {
    return undefined;
  }
  const names = new Set<string>();
  let at = 0x10;
  for (let i = 0; i < count; i++) {
    const r = block.subarray(8 + record * i, 8 + record * (i + 1));
    const rv = new DataView(r.buffer, r.byteOffset, r.byteLength);
    if (blockName(r, names) === undefined) return undefined;
    const code = r[32]!;
    const [size, scale, offset] = v1
      ? [r[33]!, r[34]!, r[35]!]
      : [rv.getUint32(36, true), r[33]!, rv.getUint32(40, true)];
    if (!v1 && rv.getUint16(34, true) !== 0) return undefined; // reserved
    if (code < 1 || code > (v1 ? 11 : 12)) return undefined;
    if (code === 11 && (size < 1 || size > 65520)) return undefined; // char[N], N = size
    if (code === 12 && (size < 5 || size > 65520)) return undefined; // bytes[N], N = size - 4
    if (code <= 10 && size !== SCALAR_SIZES[code]) return undefined;
    if (scale > 18 || (code >= 9 && scale !== 0)) return undefined;
    const align = code === 11 ? 1 : code === 12 ? 4 : size;
    at = Math.ceil(at / align) * align;
    if (offset !== at || at + size > (v1 ? 0x40 : 0x10000)) return undefined;
    at += size;
  }
  return at;
}

/**
 * The schema block words of the header: the fingerprint the segment must report, or undefined
 * when the block (or the words placing it) make the segment invalid.
 */
function expectedSchema(
  image: Uint8Array,
  entriesOffset: number,
  entrySize: number,
): bigint | undefined {
  const v = new DataView(image.buffer, image.byteOffset, image.byteLength);
  const fp = v.getBigUint64(SCHEMA_FINGERPRINT_OFFSET, true);
  const off = v.getUint32(SCHEMA_BLOCK_OFFSET_OFFSET, true);
  const len = v.getUint32(SCHEMA_BLOCK_LENGTH_OFFSET, true);
  if (fp === 0n && off === 0 && len === 0) return DEFAULT_SCHEMA.fingerprint;
  if (off !== 0x180 || len < 8 || off + len > entriesOffset) return undefined;
  const block = new Uint8Array(len);
  block.set(image.subarray(off, Math.min(off + len, image.length)));
  const end = blockEnd(block); // before the hash: a wrong length costs nothing
  if (end === undefined || end > entrySize) return undefined;
  return fnv1a64(block) === fp ? fp : undefined;
}

/**
 * The oracle, written from the layout's contract and not from the code under test. `head` holds
 * the object's first bytes (zero beyond them), `size` is the object's size.
 */
function expected(head: Uint8Array, size: number): Expected {
  const header = expectedHeader(head, size);
  if (header.kind !== "valid") return header;
  const image = new Uint8Array(IMAGE_SIZE);
  image.set(head.subarray(0, Math.min(IMAGE_SIZE, size, head.length)));
  const fingerprint = expectedSchema(image, header.entriesOffset, header.entrySize);
  return fingerprint === undefined ? { kind: "invalid" } : { ...header, fingerprint };
}

function expectedHeader(
  head: Uint8Array,
  size: number,
): Expected | (Omit<Extract<Expected, { kind: "valid" }>, "fingerprint">) {
  if (size === 0) return { kind: "notready" };
  if (size < HEADER_SIZE || size > LARGEST) return { kind: "invalid" };
  // Every valid size (entries_offset + capacity x entry_size) is a multiple of 64, and create()
  // sets the size before writing anything: any other size is invalid, never "not ready yet".
  if (size % 64 !== 0) return { kind: "invalid" };
  const bytes = new Uint8Array(HEADER_SIZE);
  bytes.set(head.subarray(0, Math.min(HEADER_SIZE, size)));
  const v = new DataView(bytes.buffer);
  const u32 = (at: number) => v.getUint32(at, true);
  const u64 = (at: number) => v.getBigUint64(at, true);
  if (u32(MAGIC_OFFSET) === 0) return { kind: "notready" };
  if (u32(MAGIC_OFFSET) !== MAGIC || u32(VERSION_OFFSET) !== VERSION) return { kind: "invalid" };
  const entrySize = u32(ENTRY_SIZE_OFFSET);
  if (!isPowerOfTwo(entrySize, MIN_ENTRY_LOG, MAX_ENTRY_LOG)) return { kind: "invalid" };
  const capacity = u32(CAPACITY_OFFSET);
  if (!isPowerOfTwo(capacity, 0, 24)) return { kind: "invalid" };
  if (capacity * entrySize > MAX_RING) return { kind: "invalid" };
  const entriesOffset = u32(ENTRIES_OFFSET_OFFSET);
  if (entriesOffset < 0x180 || entriesOffset > MAX_OFFSET || entriesOffset % 64 !== 0) {
    return { kind: "invalid" };
  }
  if (size !== entriesOffset + capacity * entrySize) return { kind: "invalid" };
  const epoch = u64(EPOCH_OFFSET);
  if (epoch === 0n) return { kind: "invalid" };
  const writePtr = u64(WRITE_PTR_OFFSET);
  if (writePtr > BigInt(2 ** 52 - 1)) return { kind: "invalid" };
  const readPtrs: number[] = [];
  for (let id = 0; id < 8; id++) {
    const r = u64(READ_PTRS_OFFSET + id * 8);
    if (r > writePtr) return { kind: "invalid" };
    readPtrs.push(Number(r));
  }
  const writeIndex = Number(writePtr);
  return {
    kind: "valid",
    capacity,
    entrySize,
    entriesOffset,
    epoch,
    writePtr: writeIndex,
    readPtrs,
  };
}

/** Whether `n` is 2^k for some k in `min..max`. */
function isPowerOfTwo(n: number, min: number, max: number): boolean {
  for (let k = min; k <= max; k++) if (n === 2 ** k) return true;
  return false;
}

// ---- arbitraries ----

const U32_EDGES = [
  0,
  1,
  2,
  63,
  64,
  65,
  128,
  1024,
  0x17f,
  0x180,
  0x181,
  0x1c0,
  1 << 16,
  (1 << 16) + 1,
  1 << 17,
  1 << 20,
  MAX_OFFSET - 64,
  MAX_OFFSET,
  MAX_OFFSET + 64,
  MAX_CAPACITY,
  MAX_CAPACITY + 1,
  MAX_CAPACITY * 2,
  MAX_RING,
  0x7fff_ffff,
  0x8000_0000,
  0xffff_ffff,
  MAGIC,
  VERSION,
];
const U64_EDGES = [
  0n,
  1n,
  BigInt(MAX_INDEX) - 1n,
  BigInt(MAX_INDEX),
  BigInt(MAX_INDEX) + 1n,
  2n ** 53n,
  2n ** 63n,
  U64_MAX,
];
const U32_FIELDS = [
  SCHEMA_BLOCK_OFFSET_OFFSET,
  SCHEMA_BLOCK_LENGTH_OFFSET,
  MAGIC_OFFSET,
  VERSION_OFFSET,
  CAPACITY_OFFSET,
  ENTRY_SIZE_OFFSET,
  ENTRIES_OFFSET_OFFSET,
  FLAGS_OFFSET,
];
const U64_FIELDS = [
  WRITE_PTR_OFFSET,
  ...Array.from({ length: MAX_READERS }, (_, id) => READ_PTRS_OFFSET + id * 8),
  EPOCH_OFFSET,
  SCHEMA_FINGERPRINT_OFFSET,
];

/** A random field: every type; N of char and bytes small, up to 2000, or at the bounds. */
const rawField = fc.record({
  type: fc.constantFrom(
    ..."u8 u16 u32 u64 i8 i16 i32 i64 f32 f64 char bytes".split(" "),
  ),
  n: fc.oneof(
    { weight: 3, arbitrary: fc.integer({ min: 1, max: 48 }) },
    { weight: 2, arbitrary: fc.integer({ min: 1, max: 2000 }) },
    { weight: 1, arbitrary: fc.constantFrom(1, 44, 45, 48, 49, 65516, 65520) },
  ),
  scale: fc.integer({ min: 0, max: 18 }),
});

/** The schema of random fields, keeping those that still fit (the first field always does). */
function schemaOf(raw: { type: string; n: number; scale: number }[]): Schema {
  const specs: FieldSpec[] = [];
  for (const r of raw) {
    const sized = r.type === "char" || r.type === "bytes";
    const spec: FieldSpec = {
      name: `f${specs.length}`,
      type: sized ? `${r.type}[${r.n}]` : r.type,
    };
    if (r.type[0] === "u" || r.type[0] === "i") spec.scale = r.scale;
    try {
      defineSchema([...specs, spec]);
      specs.push(spec);
    } catch {
      // does not fit
    }
  }
  return specs.length === 0 ? defineSchema([{ name: "x", type: "u8" }]) : defineSchema(specs);
}

/** A random valid schema of block version 1: scalars and char[N], all within a 64-byte entry. */
const schemaV1 = fc.array(rawField, { minLength: 1, maxLength: 48 }).map((raw) =>
  schemaOf(raw.map((r) => r.type === "bytes" ? { ...r, type: "u8" } : { ...r, n: r.n % 48 + 1 }))
).filter((s) => s.version === 1);

/** A random valid schema of block version 2: bytes[N], or fields ending past entry byte 0x40. */
const schemaV2 = fc.tuple(
  fc.array(rawField, { minLength: 1, maxLength: 31 }),
  fc.option(fc.integer({ min: 1, max: 2000 })), // often a bytes[N] field last
).map(([raw, n]) => schemaOf(n === null ? raw : [...raw, { type: "bytes", n, scale: 0 }]))
  .filter((s) => s.version === 2);

/** log2 of an entry size: mostly 64 bytes, often up to 4 KiB, sometimes up to 64 KiB. */
const entryLog = fc.oneof(
  { weight: 4, arbitrary: fc.constant(MIN_ENTRY_LOG) },
  { weight: 3, arbitrary: fc.integer({ min: MIN_ENTRY_LOG, max: 12 }) },
  { weight: 1, arbitrary: fc.integer({ min: MIN_ENTRY_LOG, max: MAX_ENTRY_LOG }) },
);

/** The words of a header that is valid for some size. */
interface HeaderShape {
  capacity: number;
  entrySize: number;
  entriesOffset: number;
  epoch: bigint;
  writePtr: number;
  readPtrs: number[];
  extension: Uint8Array;
  /** A block to place at 0x180 with its fingerprint (or `fingerprint` instead of its hash). */
  block?: Uint8Array;
  fingerprint?: bigint;
  /** Keep the random schema words of `extension` instead of zero or a block. */
  randomSchemaWords?: boolean;
}

/** The bytes of a header of `shape`, followed by its block if any. */
function headerBytes(h: HeaderShape): Uint8Array {
  const bytes = new Uint8Array(HEADER_SIZE + (h.block?.length ?? 0));
  const v = new DataView(bytes.buffer);
  v.setBigUint64(WRITE_PTR_OFFSET, BigInt(h.writePtr), true);
  h.readPtrs.forEach((r, id) => v.setBigUint64(READ_PTRS_OFFSET + id * 8, BigInt(r), true));
  v.setUint32(MAGIC_OFFSET, MAGIC, true);
  v.setUint32(VERSION_OFFSET, VERSION, true);
  v.setUint32(CAPACITY_OFFSET, h.capacity, true);
  v.setUint32(ENTRY_SIZE_OFFSET, h.entrySize, true);
  v.setUint32(ENTRIES_OFFSET_OFFSET, h.entriesOffset, true);
  v.setBigUint64(EPOCH_OFFSET, h.epoch, true);
  bytes.set(h.extension, 0x68);
  if (!h.randomSchemaWords) {
    v.setBigUint64(SCHEMA_FINGERPRINT_OFFSET, 0n, true);
    v.setBigUint64(SCHEMA_BLOCK_OFFSET_OFFSET, 0n, true);
  }
  if (h.block !== undefined) {
    bytes.set(h.block, HEADER_SIZE);
    v.setBigUint64(SCHEMA_FINGERPRINT_OFFSET, h.fingerprint ?? fnv1a64(h.block), true);
    v.setUint32(SCHEMA_BLOCK_OFFSET_OFFSET, HEADER_SIZE, true);
    v.setUint32(SCHEMA_BLOCK_LENGTH_OFFSET, h.block.length, true);
  }
  return bytes;
}

/** The smallest entries_offset after a block of `length` bytes (0 for none). */
function offsetAfter(length: number): number {
  return Math.ceil((HEADER_SIZE + length) / 64) * 64;
}

/** A fresh header (epoch 1, nothing written) of the given shape, with `block` after it. */
function plainHeader(
  capacity: number,
  entrySize: number,
  entriesOffset: number,
  block?: Uint8Array,
): Uint8Array {
  const readPtrs = Array(MAX_READERS).fill(0);
  const extension = new Uint8Array(HEADER_SIZE - 0x68);
  const shape = { capacity, entrySize, entriesOffset, epoch: 1n, writePtr: 0, readPtrs, extension };
  return headerBytes({ ...shape, block });
}

/** A header that is valid for some size: the base that mutations start from. */
const validShape: fc.Arbitrary<HeaderShape> = fc.record({
  // Mostly small rings, so that most objects are small; capacities up to 2^24 still occur.
  capLog: fc.oneof(
    { weight: 6, arbitrary: fc.integer({ min: 0, max: 10 }) },
    { weight: 1, arbitrary: fc.integer({ min: 0, max: 24 }) },
  ),
  entryLog,
  extraLines: fc.oneof(
    { weight: 4, arbitrary: fc.constant(0) },
    { weight: 2, arbitrary: fc.integer({ min: 0, max: 16 }) },
    { weight: 1, arbitrary: fc.integer({ min: 0, max: (MAX_OFFSET - HEADER_SIZE) / 64 }) },
  ),
  epoch: fc.oneof(fc.constant(1n), fc.bigInt({ min: 1n, max: U64_MAX })),
  writePtr: fc.oneof(
    fc.integer({ min: 0, max: 2000 }),
    fc.integer({ min: 0, max: MAX_INDEX }),
    fc.constant(MAX_INDEX),
  ),
  readFractions: fc.array(fc.double({ min: 0, max: 1, noNaN: true }), {
    minLength: MAX_READERS,
    maxLength: MAX_READERS,
  }),
  extension: fc.uint8Array({ minLength: HEADER_SIZE - 0x68, maxLength: HEADER_SIZE - 0x68 }),
  // Most headers carry no block (zero words) or a real one; some keep random words.
  schema: fc.oneof(
    { weight: 3, arbitrary: fc.constant("none" as const) },
    { weight: 2, arbitrary: schemaV1 },
    { weight: 2, arbitrary: schemaV2 },
    { weight: 1, arbitrary: fc.constant("random" as const) },
  ),
  // Sometimes an entry smaller than the schema needs: the block is valid but does not fit.
  tooSmall: fc.integer({ min: 0, max: 7 }).map((n) => n === 0),
}).map((p) => {
  const schema = typeof p.schema === "object" ? p.schema : undefined;
  let entryLog = p.entryLog;
  if (schema !== undefined && !p.tooSmall) {
    while (2 ** entryLog < schema.minEntrySize) entryLog++;
  }
  const capLog = Math.min(p.capLog, 30 - entryLog);
  const block = schema?.block;
  return {
    capacity: 2 ** capLog,
    entrySize: 2 ** entryLog,
    entriesOffset: Math.max(offsetAfter(block?.length ?? 0), HEADER_SIZE + p.extraLines * 64),
    epoch: p.epoch,
    writePtr: p.writePtr,
    readPtrs: p.readFractions.map((f) => Math.floor(f * p.writePtr)),
    extension: p.extension,
    block,
    randomSchemaWords: p.schema === "random",
  };
});

const validHeader = validShape.map(headerBytes);

/** Random bytes whose identity fields (magic, version, entry size) are right: deeper checks. */
const plausibleHeader = fc.tuple(
  fc.uint8Array({ minLength: HEADER_SIZE, maxLength: HEADER_SIZE }),
  entryLog,
).map(([b, log]) => {
  const v = new DataView(b.buffer);
  v.setUint32(MAGIC_OFFSET, MAGIC, true);
  v.setUint32(VERSION_OFFSET, VERSION, true);
  v.setUint32(ENTRY_SIZE_OFFSET, 2 ** log, true);
  return b;
});

type Mutation =
  | { kind: "byte"; at: number; value: number }
  | { kind: "bit"; at: number; bit: number }
  | { kind: "u32"; at: number; value: number }
  | { kind: "u64"; at: number; value: bigint };

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({
    kind: fc.constant("byte" as const),
    at: fc.oneof(
      fc.integer({ min: 0, max: HEADER_SIZE - 1 }),
      fc.integer({ min: HEADER_SIZE, max: HEADER_SIZE + 8 + 3 * 44 }), // the block's first fields
    ),
    value: fc.integer({ min: 0, max: 255 }),
  }),
  fc.record({
    kind: fc.constant("bit" as const),
    at: fc.integer({ min: 0, max: 0x67 }),
    bit: fc.integer({ min: 0, max: 7 }),
  }),
  fc.record({
    kind: fc.constant("u32" as const),
    at: fc.constantFrom(...U32_FIELDS),
    value: fc.oneof(fc.constantFrom(...U32_EDGES), fc.integer({ min: 0, max: 0xffff_ffff })),
  }),
  fc.record({
    kind: fc.constant("u64" as const),
    at: fc.constantFrom(...U64_FIELDS),
    value: fc.oneof(fc.constantFrom(...U64_EDGES), fc.bigInt({ min: 0n, max: U64_MAX })),
  }),
);

function mutate(bytes: Uint8Array, mutations: Mutation[]): Uint8Array {
  const out = bytes.slice();
  const v = new DataView(out.buffer);
  for (const m of mutations) {
    if (m.at >= out.length) continue; // past a header without a block
    if (m.kind === "byte") out[m.at] = m.value;
    else if (m.kind === "bit") out[m.at]! ^= 1 << m.bit;
    else if (m.kind === "u32") v.setUint32(m.at, m.value, true);
    else v.setBigUint64(m.at, m.value, true);
  }
  return out;
}

const header = fc.oneof(
  { weight: 2, arbitrary: validHeader },
  {
    weight: 6,
    arbitrary: fc.tuple(validHeader, fc.array(mutation, { minLength: 1, maxLength: 4 })).map((
      [b, ms],
    ) => mutate(b, ms)),
  },
  { weight: 1, arbitrary: fc.uint8Array({ minLength: HEADER_SIZE, maxLength: HEADER_SIZE }) },
  { weight: 1, arbitrary: plausibleHeader },
  { weight: 1, arbitrary: fc.constant(new Uint8Array(HEADER_SIZE)) },
);

/** The size the header claims, as a number (no wrap-around: at most 2^32 + 2^64). */
function claimedSize(bytes: Uint8Array): number {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return v.getUint32(ENTRIES_OFFSET_OFFSET, true) +
    v.getUint32(CAPACITY_OFFSET, true) * v.getUint32(ENTRY_SIZE_OFFSET, true);
}

type SizeChoice =
  | { kind: "claimed"; delta: number }
  | { kind: "fixed"; size: number };

const sizeChoice: fc.Arbitrary<SizeChoice> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({ kind: fc.constant("claimed" as const), delta: fc.constant(0) }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant("claimed" as const),
      delta: fc.oneof(fc.integer({ min: -130, max: 130 }), fc.constantFrom(-64, -1, 1, 64)),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant("fixed" as const),
      size: fc.oneof(
        fc.integer({ min: 0, max: HEADER_SIZE + 128 }),
        fc.constantFrom(0, 1, 8, 0x47, 0x48, 0x4b, 0x4c, 0x67, 0x68, HEADER_SIZE - 1, HEADER_SIZE),
      ),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant("fixed" as const),
      size: fc.oneof(
        fc.integer({ min: 0, max: 1 << 22 }),
        fc.constantFrom(LARGEST - 1, LARGEST, LARGEST + 1, LARGEST + 64),
      ),
    }),
  },
);

function sizeFor(bytes: Uint8Array, choice: SizeChoice): number {
  if (choice.kind === "fixed") return choice.size;
  const size = claimedSize(bytes) + choice.delta;
  // Keep sparse objects within what Segment.open may map (+ a little, to probe the bound).
  return size < 0 || size > LARGEST + 64 ? LARGEST + 64 : size;
}

// ---- the checks ----

const stats = { opened: 0, valid: 0, notReady: 0, invalid: 0, direct: 0, wide: 0, v2: 0 };

/** Opens `name` and checks the outcome against the oracle. */
function checkOpen(name: string, head: Uint8Array, size: number): void {
  const want = expected(head, size);
  stats.opened++;
  let seg: Segment | undefined;
  try {
    seg = Segment.open(name, { readOnly: size > POPULATE_LIMIT });
  } catch (e) {
    const err = e as Error;
    const ctx = `size ${size}, expected ${want.kind}, got ${err?.name}: ${err?.message}`;
    assert.ok(
      e instanceof SegmentInvalidError || e instanceof SegmentNotReadyError,
      `only SegmentInvalidError/SegmentNotReadyError may be thrown: ${ctx}\n${err?.stack}`,
    );
    assert.ok(typeof err.message === "string" && err.message.length > 0, `empty message: ${ctx}`);
    assert.ok(err.message.includes(name), `the message must name the segment: ${ctx}`);
    assert.ok(!err.message.includes("\n"), `the message must be one line: ${ctx}`);
    if (want.kind === "valid") assert.fail(`a valid header was rejected: ${ctx}`);
    if (want.kind === "notready") {
      assert.ok(e instanceof SegmentNotReadyError, `expected not-ready: ${ctx}`);
      stats.notReady++;
    } else {
      assert.ok(e instanceof SegmentInvalidError, `expected invalid: ${ctx}`);
      stats.invalid++;
    }
    return;
  }
  try {
    assert.equal(
      want.kind,
      "valid",
      `opened an object the oracle calls ${want.kind}, size ${size}`,
    );
    if (want.kind !== "valid") return;
    assert.equal(seg.size, size);
    const { kind: _k, fingerprint, ...fields } = want;
    assert.deepEqual({ ...seg.info }, fields);
    assert.equal(seg.schema.fingerprint, fingerprint, "the schema the oracle read");
    stats.valid++;
    if (seg.entrySize > 64) stats.wide++;
    if (seg.schema.version === 2) stats.v2++;
  } finally {
    seg.close();
  }
}

/**
 * validateHeader on a plain buffer of exactly `size` bytes: any read past the end would throw a
 * RangeError rather than a SegmentInvalidError, so this proves it stays in bounds.
 */
function checkDirect(head: Uint8Array, size: number): void {
  if (size > 1 << 16) return;
  const buffer = new ArrayBuffer(size);
  new Uint8Array(buffer).set(head.subarray(0, Math.min(size, head.length)));
  const want = expected(head, size);
  stats.direct++;
  try {
    const info = validateHeader(buffer, size, "/direct");
    readSchema(buffer, size, "/direct");
    assert.equal(want.kind, "valid", `validateHeader accepted an invalid header, size ${size}`);
    if (want.kind === "valid") {
      assert.deepEqual([info.capacity, info.entrySize], [want.capacity, want.entrySize]);
    }
  } catch (e) {
    if (e instanceof assert.AssertionError) throw e;
    assert.ok(
      e instanceof SegmentInvalidError && e.message.length > 0,
      `validateHeader threw ${(e as Error)?.name}: ${(e as Error)?.message}`,
    );
    assert.notEqual(want.kind, "valid", `validateHeader rejected a valid header, size ${size}`);
  }
}

/** The segments the first case writes headers into: every entry size class, one with a block. */
const MADE: CreateOptions[] = [
  { capacity: 1 },
  { capacity: 2 },
  { capacity: 64, entrySize: 1024 },
  { capacity: 1024 },
  {
    capacity: 4,
    entrySize: 65536,
    schema: defineSchema([
      ...Array.from({ length: 19 }, (_, i) => ({ name: `c${i}`, type: "char[100]" })),
      { name: "blob", type: "bytes[60000]" },
    ]),
  },
];

Deno.test("fuzz: headers written into segments made by Segment.create", () => {
  const made: { name: string; seg: Segment }[] = [];
  const t0 = performance.now();
  const before = stats.opened;
  try {
    for (const options of MADE) {
      const name = segName("fzc");
      made.push({ name, seg: Segment.create(name, options) });
    }
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: MADE.length - 1 }),
        header,
        fc.boolean(),
        fc.array(mutation, { maxLength: 2 }),
        (which, base, fit, after) => {
          const { name, seg } = made[which]!;
          let bytes = base;
          if (fit) {
            // Shape the header to this segment so that valid ones occur, then mutate again.
            bytes = base.slice();
            const v = new DataView(bytes.buffer);
            v.setUint32(CAPACITY_OFFSET, seg.info.capacity, true);
            v.setUint32(ENTRY_SIZE_OFFSET, seg.entrySize, true);
            v.setUint32(ENTRIES_OFFSET_OFFSET, seg.info.entriesOffset, true);
            bytes = mutate(bytes, after);
          }
          new Uint8Array(seg.buffer).set(bytes.subarray(0, Math.min(bytes.length, seg.size)));
          checkOpen(name, new Uint8Array(seg.buffer).slice(0, IMAGE_SIZE), seg.size);
        },
      ),
      { numRuns: 5000, seed: SEED },
    );
  } finally {
    for (const { name, seg } of made) {
      seg.close();
      unlinkQuietly(name);
    }
  }
  console.log(
    `fuzz (created segments): ${stats.opened - before} cases in ${
      ((performance.now() - t0) / 1000).toFixed(1)
    } s, seed ${SEED}`,
  );
});

Deno.test("fuzz: raw shared-memory objects of random sizes and headers", () => {
  const name = segName("fzr");
  const t0 = performance.now();
  const before = stats.opened;
  try {
    fc.assert(
      fc.property(header, sizeChoice, (bytes, choice) => {
        const size = sizeFor(bytes, choice);
        writeRawShm(name, size, bytes);
        checkOpen(name, bytes, size);
        checkDirect(bytes, size);
      }),
      { numRuns: 7000, seed: SEED + 1 },
    );
  } finally {
    unlinkQuietly(name);
  }
  console.log(
    `fuzz (raw objects): ${stats.opened - before} cases in ${
      ((performance.now() - t0) / 1000).toFixed(1)
    } s, seed ${SEED + 1}`,
  );
  console.log(
    `fuzz totals: ${stats.opened} Segment.open cases on real shm (${stats.valid} valid: ${stats.wide} with entries over 64 bytes, ${stats.v2} with a version-2 block; ${stats.invalid} invalid, ${stats.notReady} not ready), ${stats.direct} exact-size validateHeader cases; 0 crashes`,
  );
  assert.ok(stats.opened >= 10_000, `only ${stats.opened} cases ran`);
  assert.ok(stats.valid > 0 && stats.invalid > 0 && stats.notReady > 0, JSON.stringify(stats));
  assert.ok(stats.wide > 0 && stats.v2 > 0, JSON.stringify(stats));
});

/** A header field pushed out of its bounds, with the text the refusal must name. */
type BadShape =
  | { kind: "entry_size"; value: number }
  | { kind: "ring"; capLog: number; entryLog: number }
  | { kind: "entries_offset"; value: number };

const badShape: fc.Arbitrary<BadShape> = fc.oneof(
  fc.record({
    kind: fc.constant("entry_size" as const),
    value: fc.oneof(
      fc.integer({ min: 0, max: 0xffff_ffff }),
      fc.integer({ min: 0, max: 1 << 17 }),
      fc.constantFrom(0, 1, 16, 32, 63, 65, 96, 100, 127, 129, 65535, 65537, 1 << 17, 1 << 30),
      fc.constantFrom(0x8000_0000, 0xffff_ffff),
    ).filter((v) => !isPowerOfTwo(v, MIN_ENTRY_LOG, MAX_ENTRY_LOG)),
  }),
  fc.record({
    kind: fc.constant("ring" as const),
    capLog: fc.integer({ min: 0, max: 24 }),
    entryLog: fc.integer({ min: MIN_ENTRY_LOG, max: MAX_ENTRY_LOG }),
  }).filter((r) => r.capLog + r.entryLog > 30),
  fc.record({
    kind: fc.constant("entries_offset" as const),
    value: fc.oneof(
      fc.integer({ min: MAX_OFFSET + 1, max: 0xffff_ffff }),
      fc.integer({ min: MAX_OFFSET / 64 + 1, max: Math.floor(0xffff_ffff / 64) }).map((n) =>
        n * 64
      ),
      fc.constantFrom(MAX_OFFSET + 1, MAX_OFFSET + 64, 2 * MAX_OFFSET, 0x8000_0000, 0xffff_ffc0),
    ),
  }),
);

/** What `fn` threw (undefined when it returned). */
function refusal(fn: () => void): Error | undefined {
  try {
    fn();
  } catch (e) {
    return e as Error;
  }
  return undefined;
}

/** `bytes` with `bad` written in; the text its refusal must contain. */
function applyBadShape(bytes: Uint8Array, bad: BadShape): string {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bad.kind === "entry_size") {
    v.setUint32(ENTRY_SIZE_OFFSET, bad.value, true);
    return `entry_size must be a power of two from 64 to 65536: current value is ${bad.value}`;
  }
  if (bad.kind === "entries_offset") {
    v.setUint32(ENTRIES_OFFSET_OFFSET, bad.value, true);
    return `entries_offset must be a multiple of 64 from 384 to 4194304: current value is ${bad.value}`;
  }
  v.setUint32(CAPACITY_OFFSET, 2 ** bad.capLog, true);
  v.setUint32(ENTRY_SIZE_OFFSET, 2 ** bad.entryLog, true);
  const [capacity, entrySize] = [2 ** bad.capLog, 2 ** bad.entryLog];
  return `capacity x entry_size must be at most 2^30 bytes: current values are ${capacity} and ${entrySize}`;
}

Deno.test("fuzz: entry_size, capacity x entry_size over 2^30 and entries_offset over 4 MiB: a one-line SegmentInvalidError naming the value, at once", () => {
  const name = segName("fze");
  let slowest = 0;
  let cases = 0;
  try {
    fc.assert(
      fc.property(validHeader, badShape, fc.integer({ min: 0, max: 4096 }), (base, bad, k) => {
        const bytes = base.slice();
        const naming = applyBadShape(bytes, bad);
        // An object whose size passes Segment.open's own bounds, so the header is what it reads.
        const size = HEADER_SIZE + k * 64;
        writeRawShm(name, size, bytes);
        const t0 = performance.now();
        const err = refusal(() => Segment.open(name).close());
        slowest = Math.max(slowest, performance.now() - t0);
        assert.ok(err instanceof SegmentInvalidError, `${err}`);
        const message = err.message;
        assert.ok(message.includes(name) && message.includes(naming), message);
        assert.ok(!message.includes("\n"), message);
        assert.equal(expected(bytes, size).kind, "invalid", "the oracle agrees");
        const direct = new ArrayBuffer(size);
        new Uint8Array(direct).set(bytes.subarray(0, size));
        assert.throws(() => validateHeader(direct, size, "/direct"), SegmentInvalidError);
        cases++;
      }),
      { numRuns: 1500, seed: SEED + 3 },
    );
    // The bounds themselves are accepted (read-only: a 1 GiB ring is mapped lazily).
    for (
      const [capacity, entrySize, entriesOffset] of [
        [2 ** 24, 64, HEADER_SIZE],
        [2 ** 14, 65536, HEADER_SIZE],
        [1, 65536, MAX_OFFSET],
        [2 ** 14, 65536, MAX_OFFSET],
      ]
    ) {
      const bytes = plainHeader(capacity!, entrySize!, entriesOffset!);
      const size = entriesOffset! + capacity! * entrySize!;
      writeRawShm(name, size, bytes);
      using seg = Segment.open(name, { readOnly: true });
      assert.deepEqual([seg.info.capacity, seg.entrySize, seg.size], [capacity, entrySize, size]);
    }
  } finally {
    unlinkQuietly(name);
  }
  console.log(
    `fuzz (entry size and ring bounds): ${cases} refusals, slowest open ${slowest.toFixed(1)} ms`,
  );
  assert.ok(slowest < 1000, `an open took ${slowest} ms`);
});

type BlockMutation =
  | { kind: "byte"; at: number; value: number }
  | { kind: "bit"; at: number; bit: number }
  | { kind: "word"; field: number; at: 0x20 | 0x21 | 0x22 | 0x24 | 0x28; value: number }
  | { kind: "last"; value: number }
  | { kind: "head"; at: 4 | 6; value: number }
  | { kind: "length"; delta: number };

const FIELD_WORD_EDGES = [0, 1, 2, 4, 5, 8, 11, 12, 13, 16, 17, 19, 48, 64, 65, 0xff];
const FIELD_U32_EDGES = [
  0,
  3,
  4,
  5,
  16,
  48,
  64,
  65516,
  65520,
  65521,
  65536,
  0x10_0000,
  0xffff_ffff,
];

const blockMutation: fc.Arbitrary<BlockMutation> = fc.oneof(
  fc.record({
    kind: fc.constant("byte" as const),
    at: fc.nat(),
    value: fc.integer({ min: 0, max: 255 }),
  }),
  fc.record({
    kind: fc.constant("bit" as const),
    at: fc.nat(),
    bit: fc.integer({ min: 0, max: 7 }),
  }),
  fc.record({
    kind: fc.constant("word" as const),
    field: fc.nat(),
    at: fc.constantFrom(0x20 as const, 0x21 as const, 0x22 as const, 0x24 as const, 0x28 as const),
    value: fc.oneof(
      fc.constantFrom(...FIELD_WORD_EDGES, ...FIELD_U32_EDGES),
      fc.integer({ min: 0, max: 0xffff_ffff }),
    ),
  }),
  // The last field's size: an empty bytes[N] (4), one byte short of or past the entry's end.
  fc.record({
    kind: fc.constant("last" as const),
    value: fc.oneof(
      fc.constantFrom(4, 5),
      fc.integer({ min: 0, max: 9 }),
      fc.integer({ min: 65512, max: 65524 }),
    ),
  }),
  fc.record({
    kind: fc.constant("head" as const),
    at: fc.constantFrom(4 as const, 6 as const),
    value: fc.oneof(fc.constantFrom(0, 1, 2, 3, 48, 49, 65520, 65521, 0xffff), fc.nat(0xffff)),
  }),
  fc.record({
    kind: fc.constant("length" as const),
    delta: fc.constantFrom(-44, -36, -8, -1, 1, 8, 36, 44),
  }),
);

/** `block` with `ms` applied: bytes anywhere, a field's type/scale/reserved/size/offset, length. */
function mutateBlock(block: Uint8Array, ms: BlockMutation[]): Uint8Array {
  let out = block.slice();
  for (const m of ms) {
    const v = new DataView(out.buffer);
    if (m.kind === "length") {
      const resized = new Uint8Array(Math.max(0, out.length + m.delta));
      resized.set(out.subarray(0, resized.length));
      out = resized;
    } else if (out.length < 8) continue;
    else if (m.kind === "byte") out[m.at % out.length] = m.value;
    else if (m.kind === "bit") out[m.at % out.length]! ^= 1 << m.bit;
    else if (m.kind === "head") v.setUint16(m.at, m.value, true);
    else if (m.kind === "last") {
      if (out.length >= 8 + 44) {
        v.setUint32(8 + 44 * Math.floor((out.length - 52) / 44) + 0x24, m.value, true);
      }
    } else {
      const at = 8 + 44 * (m.field % Math.max(1, Math.floor((out.length - 8) / 44))) + m.at;
      if (at + 4 > out.length) continue;
      if (m.at === 0x20 || m.at === 0x21) out[at] = m.value & 0xff;
      else if (m.at === 0x22) v.setUint16(at, m.value & 0xffff, true);
      else v.setUint32(at, m.value, true);
    }
  }
  return out;
}

/** Tallies of the version-2 block case. */
const blocks = { decoded: 0, refused: 0, withBytes: 0 };

/** decodeSchemaBlock on `block` against the oracle's verdict `end` (undefined: invalid). */
function checkDecode(block: Uint8Array, end: number | undefined): void {
  let decoded: Schema;
  try {
    decoded = decodeSchemaBlock(block);
  } catch (e) {
    assert.ok(e instanceof SchemaError, `decode threw ${(e as Error)?.name}: ${e}`);
    assert.ok(e.message.length > 0 && !e.message.includes("\n"), e.message);
    assert.equal(end, undefined, `a valid block was refused: ${e.message}`);
    blocks.refused++;
    return;
  }
  assert.notEqual(end, undefined, "decoded a block the oracle calls invalid");
  assert.deepEqual(encodeSchemaBlock(decoded), block, "re-encodes to the same bytes");
  assert.equal(decoded.end, end);
  blocks.decoded++;
  if (decoded.fields.some((f) => f.kind === "bytes")) blocks.withBytes++;
}

Deno.test("fuzz: version-2 schema blocks with bytes[N], mutated: each decodes to a schema that re-encodes to the same bytes, or is a one-line SchemaError / SegmentInvalidError", () => {
  const name = segName("fzb");
  const t0 = performance.now();
  let opened = 0;
  try {
    fc.assert(
      fc.property(
        schemaV2,
        fc.array(blockMutation, { minLength: 0, maxLength: 3 }),
        fc.integer({ min: -1, max: 2 }),
        (schema, ms, extraLog) => {
          const block = mutateBlock(schema.block, ms);
          const end = blockEnd(block);
          checkDecode(block, end);
          // The same block in a segment, with its own hash in the header: an entry size that
          // holds it (extraLog >= 0) or one size too small.
          let entryLog = MIN_ENTRY_LOG;
          while (2 ** entryLog < (end ?? 64)) entryLog++;
          entryLog = Math.max(MIN_ENTRY_LOG, Math.min(MAX_ENTRY_LOG, entryLog + extraLog));
          const entriesOffset = offsetAfter(block.length);
          const bytes = plainHeader(2, 2 ** entryLog, entriesOffset, block);
          const size = entriesOffset + 2 * 2 ** entryLog;
          writeRawShm(name, size, bytes);
          checkOpen(name, bytes, size);
          opened++;
        },
      ),
      { numRuns: 2000, seed: SEED + 4 },
    );
  } finally {
    unlinkQuietly(name);
  }
  console.log(
    `fuzz (version-2 blocks): ${blocks.decoded} decoded (${blocks.withBytes} with bytes[N]), ${blocks.refused} refused, ${opened} opened as segments in ${
      ((performance.now() - t0) / 1000).toFixed(1)
    } s`,
  );
  assert.ok(blocks.decoded > 100 && blocks.refused > 100 && blocks.withBytes > 50);
});

/** The name rule, from the contract: one leading slash, then 1 to 30 of [A-Za-z0-9._-], no "." or "..". */
function nameIsValid(s: string): boolean {
  return /^\/[A-Za-z0-9._-]{1,30}$/.test(s) && s !== "/." && s !== "/..";
}

Deno.test("fuzz: segment names: one leading slash, no other slash, bounded length", () => {
  const nameChar = fc.constantFrom(
    ..."abcXYZ019._-/",
    " ",
    "\0",
    "\\",
    ":",
    "é",
    "\n",
  );
  const names = fc.oneof(
    fc.string({ unit: nameChar, maxLength: 40 }),
    fc.string({ unit: nameChar, maxLength: 40 }).map((s) => "/" + s),
    fc.string({ unit: fc.constantFrom(..."aZ9._-"), minLength: 0, maxLength: 34 }).map((s) =>
      "/" + s
    ),
    fc.string({ unit: "binary", maxLength: 40 }),
    fc.constantFrom("", "/", "//", "/.", "/..", "/...", "/a/b", "a", "a/", "//a", "/a/"),
  );
  let cases = 0;
  let accepted = 0;
  fc.assert(
    fc.property(names, (s) => {
      cases++;
      const ok = nameIsValid(s);
      let threw: unknown;
      try {
        assert.equal(validateName(s), s);
      } catch (e) {
        threw = e;
      }
      if (ok) {
        assert.equal(threw, undefined, `valid name ${JSON.stringify(s)} rejected: ${threw}`);
        accepted++;
        assert.ok(s.length <= 31 && s.lastIndexOf("/") === 0);
        return;
      }
      assert.ok(threw instanceof TypeError, `invalid name ${JSON.stringify(s)} was accepted`);
      assert.ok(threw.message.includes(JSON.stringify(s)), threw.message);
      // Nothing touches the system with a bad name.
      assert.throws(() => Segment.open(s), TypeError);
      assert.throws(() => Segment.create(s, { capacity: 1 }), TypeError);
      assert.throws(() => Segment.exists(s), TypeError);
    }),
    { numRuns: 3000, seed: SEED + 2 },
  );
  // The bound is exactly 31 bytes.
  assert.equal(validateName("/" + "a".repeat(30)), "/" + "a".repeat(30));
  assert.throws(() => validateName("/" + "a".repeat(31)), TypeError);
  console.log(`fuzz (names): ${cases} cases, ${accepted} accepted`);
});
