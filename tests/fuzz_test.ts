/**
 * Property-based fuzzing of segment validation against REAL shared-memory objects: random and
 * mutated header bytes written into segments made by `Segment.create`, and raw objects of random
 * sizes, then `Segment.open`. An independent oracle says what each must give: opening may only
 * succeed on a valid header (returning exactly its fields), and otherwise must throw a
 * SegmentInvalidError or SegmentNotReadyError with a message naming the segment. Anything else
 * (a RangeError from an out-of-bounds read, a crash) fails. Segment names are fuzzed too.
 *
 * The schema block is fuzzed the same way: real blocks of random valid schemas placed after the
 * header (with their fingerprint, offset and length in the header's words), then damaged; the
 * oracle checks the block from the contract (bounds, FNV-1a 64, every byte of every field).
 *
 * The seed is fixed (override with RPT_FUZZ_SEED) so a run is reproducible.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  CAPACITY_OFFSET,
  ENTRIES_OFFSET_OFFSET,
  ENTRY_SIZE,
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
import { Segment, SegmentNotReadyError, validateName } from "../segment.ts";
import { DEFAULT_SCHEMA, defineSchema, type FieldSpec, readSchema } from "../schema.ts";
import { segName, unlinkQuietly, writeRawShm } from "./_faults.ts";

const SEED = Number(Deno.env.get("RPT_FUZZ_SEED") ?? 20240611);
/** The largest object Segment.open maps: entries_offset up to 1 MiB, capacity up to 2^24. */
const LARGEST = (1 << 20) + MAX_CAPACITY * ENTRY_SIZE;
const U64_MAX = 2n ** 64n - 1n;

/** What opening must give, from the bytes alone. */
type Expected =
  | { kind: "notready" }
  | { kind: "invalid" }
  | {
    kind: "valid";
    capacity: number;
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

/**
 * The schema block check, from the contract in layout.ts: the fingerprint the segment must
 * report, or undefined when the block (or the words placing it) make the segment invalid.
 */
function expectedSchema(image: Uint8Array, entriesOffset: number): bigint | undefined {
  const v = new DataView(image.buffer, image.byteOffset, image.byteLength);
  const fp = v.getBigUint64(SCHEMA_FINGERPRINT_OFFSET, true);
  const off = v.getUint32(SCHEMA_BLOCK_OFFSET_OFFSET, true);
  const len = v.getUint32(SCHEMA_BLOCK_LENGTH_OFFSET, true);
  if (fp === 0n && off === 0 && len === 0) return DEFAULT_SCHEMA.fingerprint;
  if (off !== 0x180 || len < 8 || off + len > entriesOffset) return undefined;
  const block = new Uint8Array(len);
  block.set(image.subarray(off, Math.min(off + len, image.length)));
  if (fnv1a64(block) !== fp) return undefined;
  const b = new DataView(block.buffer);
  if (b.getUint32(0, true) !== 0x48435352 || b.getUint16(4, true) !== 1) return undefined;
  const count = b.getUint16(6, true);
  if (count < 1 || count > 48 || len !== 8 + 36 * count) return undefined;
  const names = new Set<string>();
  let at = 0x10;
  for (let i = 0; i < count; i++) {
    const r = block.subarray(8 + 36 * i, 8 + 36 * (i + 1));
    const nul = r.indexOf(0);
    if (nul < 1 || nul > 31 || r.subarray(nul, 32).some((x) => x !== 0)) return undefined;
    const name = String.fromCharCode(...r.subarray(0, nul));
    if (!/^[a-z_][a-z0-9_]*$/.test(name) || names.has(name)) return undefined;
    if (name === "seq" || name === "timestamp_ns" || name === "epoch") return undefined;
    names.add(name);
    const [code, size, scale, offset] = [r[32]!, r[33]!, r[34]!, r[35]!];
    const sizes = [0, 1, 2, 4, 8, 1, 2, 4, 8, 4, 8];
    if (code < 1 || code > 11) return undefined;
    if (code === 11 ? size < 1 || size > 48 : size !== sizes[code]) return undefined;
    if (scale > 18 || (code >= 9 && scale !== 0)) return undefined;
    const align = code === 11 ? 1 : size;
    at = Math.ceil(at / align) * align;
    if (offset !== at || at + size > 0x40) return undefined;
    at += size;
  }
  return fp;
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
  const fingerprint = expectedSchema(image, header.entriesOffset);
  return fingerprint === undefined ? { kind: "invalid" } : { ...header, fingerprint };
}

function expectedHeader(
  head: Uint8Array,
  size: number,
): Expected | (Omit<Extract<Expected, { kind: "valid" }>, "fingerprint">) {
  if (size === 0) return { kind: "notready" };
  if (size < HEADER_SIZE || size > LARGEST) return { kind: "invalid" };
  // Every valid size (entries_offset + capacity x 64) is a multiple of 64, and create() sets the
  // size before writing anything: any other size is invalid, never "not ready yet".
  if (size % 64 !== 0) return { kind: "invalid" };
  const bytes = new Uint8Array(HEADER_SIZE);
  bytes.set(head.subarray(0, Math.min(HEADER_SIZE, size)));
  const v = new DataView(bytes.buffer);
  const u32 = (at: number) => v.getUint32(at, true);
  const u64 = (at: number) => v.getBigUint64(at, true);
  // Every real segment is a multiple of 64 bytes (header and slots): anything else is invalid.
  if (size % 64 !== 0) return { kind: "invalid" };
  if (u32(MAGIC_OFFSET) === 0) return { kind: "notready" };
  if (u32(MAGIC_OFFSET) !== MAGIC || u32(VERSION_OFFSET) !== VERSION) return { kind: "invalid" };
  if (u32(ENTRY_SIZE_OFFSET) !== 64) return { kind: "invalid" };
  const capacity = u32(CAPACITY_OFFSET);
  let pow2 = false;
  for (let k = 0; k <= 24; k++) if (capacity === 2 ** k) pow2 = true;
  if (!pow2) return { kind: "invalid" };
  const entriesOffset = u32(ENTRIES_OFFSET_OFFSET);
  if (entriesOffset < 0x180 || entriesOffset % 64 !== 0) return { kind: "invalid" };
  if (size !== entriesOffset + capacity * 64) return { kind: "invalid" };
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
  return { kind: "valid", capacity, entriesOffset, epoch, writePtr: Number(writePtr), readPtrs };
}

// ---- arbitraries ----

const U32_EDGES = [
  0,
  1,
  2,
  63,
  64,
  65,
  0x17f,
  0x180,
  0x181,
  0x1c0,
  1 << 20,
  MAX_CAPACITY,
  MAX_CAPACITY + 1,
  MAX_CAPACITY * 2,
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

/** The block of a random valid schema: fields of every type, kept while they fit. */
const schemaBlock = fc.array(
  fc.record({
    type: fc.constantFrom("u8", "u16", "u32", "u64", "i8", "i16", "i32", "i64", "f32", "f64", "c"),
    n: fc.integer({ min: 1, max: 48 }),
    scale: fc.integer({ min: 0, max: 18 }),
  }),
  { minLength: 1, maxLength: 48 },
).map((raw) => {
  const specs: FieldSpec[] = [];
  for (const r of raw) {
    const spec: FieldSpec = {
      name: `f${specs.length}`,
      type: r.type === "c" ? `char[${r.n}]` : r.type,
    };
    if (r.type[0] === "u" || r.type[0] === "i") spec.scale = r.scale;
    try {
      defineSchema([...specs, spec]);
      specs.push(spec);
    } catch {
      // does not fit
    }
  }
  return specs.length === 0
    ? defineSchema([{ name: "x", type: "u8" }]).block
    : defineSchema(specs).block;
});

/** A header that is valid for some size: the base that mutations start from. */
const validHeader = fc.record({
  capLog: fc.integer({ min: 0, max: 24 }),
  extraLines: fc.oneof(
    { weight: 4, arbitrary: fc.constant(0) },
    { weight: 2, arbitrary: fc.integer({ min: 0, max: 16 }) },
    { weight: 1, arbitrary: fc.integer({ min: 0, max: ((1 << 20) - HEADER_SIZE) / 64 }) },
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
    { weight: 3, arbitrary: schemaBlock },
    { weight: 1, arbitrary: fc.constant("random" as const) },
  ),
}).map((p) => {
  const block = p.schema instanceof Uint8Array ? p.schema : undefined;
  if (block !== undefined) p.extraLines = Math.max(p.extraLines, Math.ceil(block.length / 64));
  const bytes = new Uint8Array(HEADER_SIZE + (block?.length ?? 0));
  const v = new DataView(bytes.buffer);
  v.setBigUint64(WRITE_PTR_OFFSET, BigInt(p.writePtr), true);
  p.readFractions.forEach((f, id) => {
    v.setBigUint64(READ_PTRS_OFFSET + id * 8, BigInt(Math.floor(f * p.writePtr)), true);
  });
  v.setUint32(MAGIC_OFFSET, MAGIC, true);
  v.setUint32(VERSION_OFFSET, VERSION, true);
  v.setUint32(CAPACITY_OFFSET, 2 ** p.capLog, true);
  v.setUint32(ENTRY_SIZE_OFFSET, ENTRY_SIZE, true);
  v.setUint32(ENTRIES_OFFSET_OFFSET, HEADER_SIZE + p.extraLines * 64, true);
  v.setBigUint64(EPOCH_OFFSET, p.epoch, true);
  bytes.set(p.extension, 0x68);
  if (p.schema !== "random") {
    v.setBigUint64(SCHEMA_FINGERPRINT_OFFSET, 0n, true);
    v.setBigUint64(SCHEMA_BLOCK_OFFSET_OFFSET, 0n, true);
  }
  if (block !== undefined) {
    bytes.set(block, HEADER_SIZE);
    v.setBigUint64(SCHEMA_FINGERPRINT_OFFSET, fnv1a64(block), true);
    v.setUint32(SCHEMA_BLOCK_OFFSET_OFFSET, HEADER_SIZE, true);
    v.setUint32(SCHEMA_BLOCK_LENGTH_OFFSET, block.length, true);
  }
  return bytes;
});

/** Random bytes whose identity fields (magic, version, entry size) are right: deeper checks. */
const plausibleHeader = fc.uint8Array({ minLength: HEADER_SIZE, maxLength: HEADER_SIZE }).map(
  (b) => {
    const v = new DataView(b.buffer);
    v.setUint32(MAGIC_OFFSET, MAGIC, true);
    v.setUint32(VERSION_OFFSET, VERSION, true);
    v.setUint32(ENTRY_SIZE_OFFSET, ENTRY_SIZE, true);
    return b;
  },
);

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
      fc.integer({ min: HEADER_SIZE, max: HEADER_SIZE + 8 + 3 * 36 }), // the block's first fields
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

/** The size the header claims, as a number (no wrap-around: at most 2^32 + 2^38). */
function claimedSize(bytes: Uint8Array): number {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return v.getUint32(ENTRIES_OFFSET_OFFSET, true) + v.getUint32(CAPACITY_OFFSET, true) * 64;
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

const stats = { opened: 0, valid: 0, notReady: 0, invalid: 0, direct: 0 };

/** Opens `name` and checks the outcome against the oracle. */
function checkOpen(name: string, head: Uint8Array, size: number): void {
  const want = expected(head, size);
  stats.opened++;
  let seg: Segment | undefined;
  try {
    seg = Segment.open(name);
  } catch (e) {
    const err = e as Error;
    const ctx = `size ${size}, expected ${want.kind}, got ${err?.name}: ${err?.message}`;
    assert.ok(
      e instanceof SegmentInvalidError || e instanceof SegmentNotReadyError,
      `only SegmentInvalidError/SegmentNotReadyError may be thrown: ${ctx}\n${err?.stack}`,
    );
    assert.ok(typeof err.message === "string" && err.message.length > 0, `empty message: ${ctx}`);
    assert.ok(err.message.includes(name), `the message must name the segment: ${ctx}`);
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
    if (want.kind === "valid") assert.equal(info.capacity, want.capacity);
  } catch (e) {
    if (e instanceof assert.AssertionError) throw e;
    assert.ok(
      e instanceof SegmentInvalidError && e.message.length > 0,
      `validateHeader threw ${(e as Error)?.name}: ${(e as Error)?.message}`,
    );
    assert.notEqual(want.kind, "valid", `validateHeader rejected a valid header, size ${size}`);
  }
}

Deno.test("fuzz: headers written into segments made by Segment.create", () => {
  const capacities = [1, 2, 64, 1024];
  const made: { name: string; seg: Segment }[] = [];
  const t0 = performance.now();
  const before = stats.opened;
  try {
    for (const capacity of capacities) {
      const name = segName("fzc");
      made.push({ name, seg: Segment.create(name, { capacity }) });
    }
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: capacities.length - 1 }),
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
            v.setUint32(ENTRIES_OFFSET_OFFSET, HEADER_SIZE, true);
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
    `fuzz totals: ${stats.opened} Segment.open cases on real shm (${stats.valid} valid, ${stats.invalid} invalid, ${stats.notReady} not ready), ${stats.direct} exact-size validateHeader cases; 0 crashes`,
  );
  assert.ok(stats.opened >= 10_000, `only ${stats.opened} cases ran`);
  assert.ok(stats.valid > 0 && stats.invalid > 0 && stats.notReady > 0, JSON.stringify(stats));
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
