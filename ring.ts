/**
 * The ring itself: a single writer and up to eight readers over an `ArrayBuffer` of layout v1.
 * No FFI is needed here beyond the clock, so the logic is testable on a plain `ArrayBuffer`.
 *
 * Positions are monotonic u64 counters held as JavaScript numbers (exact below 2^52); a slot is
 * `index & (capacity - 1)`. The hot paths allocate nothing per entry: 64-bit fields are read and
 * written as two u32 words with `Atomics`, following the publication protocol of `layout.ts`.
 *
 * Two implementations of that protocol, chosen once per writer or reader ({@link MemoryOrdering}):
 * `"atomic"`, where every access to a slot is an `Atomics` operation (sequentially consistent, so
 * correct on any CPU, including weakly ordered ones such as aarch64), and `"tso"`, which writes
 * the payload and copies it out with plain stores and loads, correct only where stores and loads
 * are not reordered with each other (x86-64's total store order). `layout.ts` lists which access
 * carries which ordering on each path.
 *
 * @module
 */
import { realtimeWords } from "./ffi/posix.ts";
import {
  checkSchemaFits,
  DEFAULT_SCHEMA,
  encodeRecord,
  entriesOffsetFor,
  type Field,
  type FieldValue,
  readSchema,
  type Schema,
  simulatedPayloads,
  SIMULATION_PERIOD,
  writeBytes,
  writeField,
  writeSchema,
} from "./schema.ts";
import {
  BUSY_BIT_HI,
  CAPACITY_OFFSET,
  ENTRIES_OFFSET_OFFSET,
  ENTRY_SIZE,
  ENTRY_SIZE_OFFSET,
  EPOCH_OFFSET,
  MAGIC,
  MAGIC_OFFSET,
  MAX_INDEX,
  MAX_READERS,
  READ_PTRS_OFFSET,
  READER_HEARTBEATS_OFFSET,
  READER_LOST_OFFSET,
  ringShapeProblem,
  segmentSize,
  SYMBOLS,
  validateHeader,
  VERSION,
  VERSION_OFFSET,
  WAITERS_OFFSET,
  WAKE_SEQ_OFFSET,
  WRITE_PTR_OFFSET,
  WRITER_HEARTBEAT_OFFSET,
} from "./layout.ts";

const TWO_32 = 4294967296;

/**
 * How a {@link RingWriter} or {@link RingReader} orders its accesses to a slot:
 * - `"atomic"`: the busy mark, timestamp, payload and `seq` stores, and the reader's copy between
 *   its two `seq` checks, are all `Atomics` operations (sequentially consistent; `stlr`/`ldar` on
 *   aarch64). Correct under any CPU's memory model.
 * - `"tso"`: the busy mark, timestamp, payload and `seq` low word are plain stores and the copy is
 *   one plain `memcpy`, relying on x86-64 keeping stores in order and loads in order. Accepted on
 *   x86_64 only; faster there.
 *
 * @example
 * ```ts
 * import { createRingBuffer, type MemoryOrdering, RingWriter } from "./ring.ts";
 * const ordering: MemoryOrdering = "atomic"; // correct on every CPU
 * console.assert(new RingWriter(createRingBuffer(8), { ordering }).ordering === "atomic");
 * ```
 */
export type MemoryOrdering = "tso" | "atomic";

/**
 * The ordering a writer or reader uses when none is given: `"tso"` on x86_64, `"atomic"` on every
 * other CPU.
 *
 * @example
 * ```ts
 * import { DEFAULT_ORDERING } from "./ring.ts";
 * console.assert(DEFAULT_ORDERING === (Deno.build.arch === "x86_64" ? "tso" : "atomic"));
 * ```
 */
export const DEFAULT_ORDERING: MemoryOrdering = Deno.build.arch === "x86_64" ? "tso" : "atomic";

/** Validates an ordering option; `"tso"` is refused on a CPU that is not x86_64. */
function orderingOf(ordering: MemoryOrdering | undefined): MemoryOrdering {
  if (ordering === undefined) return DEFAULT_ORDERING;
  if (ordering !== "tso" && ordering !== "atomic") {
    throw new RangeError(
      `Cannot use memory ordering as it must be "tso" or "atomic": current value is ${ordering}`,
    );
  }
  if (ordering === "tso" && Deno.build.arch !== "x86_64") {
    throw new RangeError(
      `Cannot use memory ordering "tso" as it is correct on x86_64 only: current CPU is ${Deno.build.arch}`,
    );
  }
  return ordering;
}

/**
 * Size of a 64-byte entry (the default) in u32 words. A ring's own entry size is
 * {@link RingReader.entryWords}: size batch buffers from it.
 *
 * @example
 * ```ts
 * import { ENTRY_WORDS } from "./ring.ts";
 * const batch = new Uint32Array(128 * ENTRY_WORDS); // room for 128 64-byte entries
 * console.assert(batch.length === 2048);
 * ```
 */
export const ENTRY_WORDS = ENTRY_SIZE / 4;

/**
 * Atomically reads a monotonic u64 counter at byte `offset` as a number, with no allocation:
 * high word, low word, high word again until both high reads agree. Exact below 2^53.
 *
 * @example
 * ```ts
 * import { loadU64, storeU64 } from "./ring.ts";
 * const words = new Uint32Array(2);
 * storeU64(words, 0, 2 ** 40 + 5);
 * console.assert(loadU64(words, 0) === 2 ** 40 + 5);
 * ```
 */
export function loadU64(words: Uint32Array, offset: number): number {
  const w = offset >>> 2;
  for (;;) {
    const hi = Atomics.load(words, w + 1);
    const lo = Atomics.load(words, w);
    if (Atomics.load(words, w + 1) === hi) return hi * TWO_32 + lo;
  }
}

/**
 * Atomically stores `value` (an integer below 2^53) into the u64 at byte `offset`, as one 64-bit
 * store. Allocates a BigInt: use {@link storeU64Monotonic} on hot paths.
 *
 * @example
 * ```ts
 * import { loadU64, storeU64 } from "./ring.ts";
 * const words = new Uint32Array(4);
 * storeU64(words, 8, 2 ** 33);
 * console.assert(loadU64(words, 8) === 2 ** 33);
 * ```
 */
export function storeU64(words: Uint32Array, offset: number, value: number): void {
  const wide = new BigUint64Array(words.buffer, words.byteOffset, words.length >>> 1);
  Atomics.store(wide, offset >>> 3, BigInt(value));
}

/**
 * Stores `value` into a u64 counter whose current high word is `currentHi`: a single 32-bit
 * store of the low word when the high word does not change (so every reader, 64-bit or not, sees
 * the old or the new value), else one 64-bit store. Returns the new high word.
 */
export function storeU64Monotonic(
  words: Uint32Array,
  offset: number,
  value: number,
  currentHi: number,
): number {
  const lo = value >>> 0;
  const hi = (value - lo) / TWO_32;
  if (hi === currentHi) Atomics.store(words, offset >>> 2, lo);
  else storeU64(words, offset, value);
  return hi;
}

/**
 * Reads the clock into two u32 words (low, high) of CLOCK_REALTIME nanoseconds.
 *
 * @example
 * ```ts
 * import type { WordClock } from "./ring.ts";
 * let t = 0;
 * const fake: WordClock = (out, at) => { out[at] = ++t; out[at + 1] = 0; };
 * fake(new Uint32Array(2), 0);
 * ```
 */
export type WordClock = (out: Uint32Array, at: number) => unknown;

/**
 * Options for {@link RingWriter}.
 *
 * @example
 * ```ts
 * import { createRingBuffer, RingWriter, type RingWriterOptions } from "./ring.ts";
 * const options: RingWriterOptions = { clock: (out, at) => { out[at] = 1; out[at + 1] = 0; } };
 * console.assert(new RingWriter(createRingBuffer(8), options).position === 0);
 * ```
 */
export interface RingWriterOptions {
  /** Clock used for `timestamp_ns` (default: CLOCK_REALTIME through libc). */
  clock?: WordClock;
  /** Called with no arguments when readers wait on the wake word (default: nothing). */
  wake?: () => void;
  /** How slot stores are ordered (default: {@link DEFAULT_ORDERING}, by CPU). */
  ordering?: MemoryOrdering;
}

/** Shape of a ring: read from a validated header. */
interface Shape {
  capacity: number;
  mask: number;
  base: number; // u32 word index of slot 0
  entrySize: number;
  words: number; // u32 words per entry
}

function shapeOf(buffer: ArrayBuffer, name: string): Shape {
  const info = validateHeader(buffer, buffer.byteLength, name);
  return {
    capacity: info.capacity,
    mask: info.capacity - 1,
    base: info.entriesOffset >>> 2,
    entrySize: info.entrySize,
    words: info.entrySize >>> 2,
  };
}

/** Rows of the simulated-payload table of a custom schema (its period in seq). */
const SIMULATION_ROWS = SIMULATION_PERIOD;

/** The symbols as pairs of little-endian u32 words, for allocation-free encoding. */
const SYMBOL_WORDS = (() => {
  const out = new Uint32Array(SYMBOLS.length * 2);
  const bytes = new Uint8Array(out.buffer);
  SYMBOLS.forEach((s, i) => bytes.set(new TextEncoder().encode(s), i * 8));
  return out;
})();

/**
 * The single producer. It never waits for readers: it overwrites the oldest slot.
 *
 * @example
 * ```ts
 * import { RingWriter } from "./ring.ts";
 * import { createRingBuffer } from "./ring.ts";
 * const w = new RingWriter(createRingBuffer(8));
 * w.publishSimulated(3);
 * console.assert(w.position === 3);
 * ```
 */
export class RingWriter {
  #words: Uint32Array;
  #shape: Shape;
  #next: number;
  #nextHi: number;
  #clock: WordClock;
  #wake: (() => void) | undefined;
  #ts = new Uint32Array(2);
  #ordering: MemoryOrdering;
  #atomic: boolean;
  #bytes: Uint8Array;
  #payload: Uint8Array;
  #payloadWords: Uint32Array;

  /** Attaches to the ring in `buffer` (validated first) and continues from its `write_ptr`. */
  constructor(buffer: ArrayBuffer, options: RingWriterOptions = {}) {
    this.#ordering = orderingOf(options.ordering);
    this.#atomic = this.#ordering === "atomic";
    this.#shape = shapeOf(buffer, "(buffer)");
    this.#words = new Uint32Array(buffer);
    this.#bytes = new Uint8Array(buffer);
    this.#payload = new Uint8Array(this.#shape.entrySize - 16);
    this.#payloadWords = new Uint32Array(this.#payload.buffer);
    this.#next = loadU64(this.#words, WRITE_PTR_OFFSET);
    this.#nextHi = Math.floor(this.#next / TWO_32);
    this.#clock = options.clock ?? realtimeWords;
    this.#wake = options.wake;
  }

  /** Index of the next entry to write (`write_ptr`). */
  get position(): number {
    return this.#next;
  }

  /** Number of slots. */
  get capacity(): number {
    return this.#shape.capacity;
  }

  /** Bytes per slot (the header's `entry_size`); the payload is 16 bytes less. */
  get entrySize(): number {
    return this.#shape.entrySize;
  }

  /** How this writer orders its slot stores. */
  get ordering(): MemoryOrdering {
    return this.#ordering;
  }

  /**
   * Starts entry `position`: marks its slot busy and returns the slot's byte offset. Write the
   * payload at offsets 0x10 to `entrySize` of the slot, then call {@link commit}. With the
   * `"atomic"` ordering, store the payload words with `Atomics.store` ({@link publish} does).
   */
  claim(): number {
    const i = this.#next;
    if (i >= MAX_INDEX) throw new RangeError(`Cannot write as write_ptr reached 2^52-1`);
    const w = this.#shape.base + (i & this.#shape.mask) * this.#shape.words;
    Atomics.store(this.#words, w + 1, this.#words[w + 1]! | BUSY_BIT_HI);
    return w << 2;
  }

  /** Completes the entry started by {@link claim}: timestamp, seq (release), then `write_ptr`. */
  commit(): number {
    const words = this.#words;
    const i = this.#next;
    const entryWords = this.#shape.words;
    const w = this.#shape.base + (i & this.#shape.mask) * entryWords;
    if (this.#atomic) {
      if (this.#recordStaged) {
        // claimRecord()'s setters wrote into the staging entry: store its payload in order.
        const staged = this.#stagedWords!;
        for (let k = 4; k < entryWords; k++) Atomics.store(words, w + k, staged[k]!);
        this.#recordStaged = false;
      }
      const ts = this.#ts;
      this.#clock(ts, 0);
      Atomics.store(words, w + 2, ts[0]!);
      Atomics.store(words, w + 3, ts[1]!);
    } else {
      this.#clock(words, w + 2);
    }
    const lo = i >>> 0;
    Atomics.store(words, w, lo);
    Atomics.store(words, w + 1, (i - lo) / TWO_32);
    this.#next = i + 1;
    this.#nextHi = storeU64Monotonic(words, WRITE_PTR_OFFSET, i + 1, this.#nextHi);
    if (Atomics.load(words, WAITERS_OFFSET >>> 2) !== 0) this.#wakeWaiters();
    return i;
  }

  /** Bumps the wake word, then wakes every reader blocked on it (when a waker is configured). */
  #wakeWaiters(): void {
    if (this.#wake === undefined) return;
    Atomics.add(this.#words, WAKE_SEQ_OFFSET >>> 2, 1);
    this.#wake();
  }

  /**
   * Publishes one entry whose payload (up to `entrySize - 16` bytes) is copied to offset 0x10 of
   * the slot, the rest of the payload zeroed. Allocates nothing. Returns its index.
   */
  publish(payload: Uint8Array): number {
    const size = this.#payload.length;
    if (payload.length > size) {
      throw new RangeError(
        `Cannot publish as payload must be at most ${size} bytes (entry size ${this.#shape.entrySize}): current length is ${payload.length}`,
      );
    }
    const offset = this.claim();
    if (this.#atomic) {
      const staged = this.#payload;
      staged.set(payload);
      staged.fill(0, payload.length);
      const words = this.#words;
      const w = (offset >>> 2) + 4;
      const payloadWords = this.#payloadWords;
      for (let k = 0; k < payloadWords.length; k++) Atomics.store(words, w + k, payloadWords[k]!);
    } else {
      const bytes = this.#bytes;
      bytes.set(payload, offset + 16);
      bytes.fill(0, offset + 16 + payload.length, offset + 16 + size);
    }
    return this.commit();
  }

  /**
   * Publishes `count` entries of the simulated engine, whose payload is a function of `seq`.
   * Allocates nothing per entry. Returns the new `write_ptr`.
   */
  publishSimulated(count: number): number {
    return this.#atomic ? this.#publishSimulatedAtomic(count) : this.#publishSimulatedTso(count);
  }

  /** {@link publishSimulated} for the `"tso"` ordering: plain stores, x86-64 only. */
  #publishSimulatedTso(count: number): number {
    const words = this.#words;
    const { base, mask } = this.#shape;
    const clock = this.#clock;
    let i = this.#next;
    let nextHi = this.#nextHi;
    const end = i + count;
    if (end > MAX_INDEX) throw new RangeError(`Cannot write as write_ptr would pass 2^52-1`);
    const waitersWord = WAITERS_OFFSET >>> 2;
    let woke = false;
    // The payload is a function of i (see layout.ts); keep its parts as running counters so the
    // loop does no division: symbol i % 8, price from i % 10^6, quantity from i % 1000, side i % 2.
    let sym = (i % 8) * 2;
    let m6 = i % 1_000_000;
    let price = (m6 * 7919) % 1_000_000;
    let m3 = i % 1000;
    let qty = (m3 * 37) % 1000;
    let side = i % 2 === 0 ? 0x42 : 0x53;
    const entryWords = this.#shape.words;
    for (; i < end; i++) {
      const w = base + (i & mask) * entryWords;
      // Mark the slot busy (bit 63 of seq) before touching the payload. A plain store suffices
      // on x86-64, whose stores become visible in program order, and the opaque FFI clock call
      // right after it keeps the compiler from moving or dropping it. Not so on aarch64: there
      // the "atomic" twin below runs instead.
      words[w + 1] = words[w + 1]! | BUSY_BIT_HI;
      clock(words, w + 2);
      words[w + 4] = SYMBOL_WORDS[sym]!;
      words[w + 5] = SYMBOL_WORDS[sym + 1]!;
      words[w + 6] = 1_000_000 + price;
      words[w + 7] = 0;
      words[w + 8] = 1 + qty;
      words[w + 9] = side; // 'B' or 'S', then three zero bytes
      words[w + 10] = 0;
      words[w + 11] = 0;
      words[w + 12] = 0;
      words[w + 13] = 0;
      words[w + 14] = 0;
      words[w + 15] = 0;
      // seq = i: the low word keeps the busy bit set in the high word, so a plain store does;
      // the atomic store of the high word is the release that makes the entry valid.
      const lo = i >>> 0;
      words[w] = lo;
      Atomics.store(words, w + 1, (i - lo) / TWO_32);
      nextHi = storeU64Monotonic(words, WRITE_PTR_OFFSET, i + 1, nextHi);
      if (Atomics.load(words, waitersWord) !== 0) woke = true;
      sym = (sym + 2) & 15;
      side ^= 0x42 ^ 0x53;
      if (++m6 === 1_000_000) {
        m6 = 0;
        price = 0;
      } else if ((price += 7919) >= 1_000_000) price -= 1_000_000;
      if (++m3 === 1000) {
        m3 = 0;
        qty = 0;
      } else if ((qty += 37) >= 1000) qty -= 1000;
    }
    this.#next = i;
    this.#nextHi = nextHi;
    if (woke) this.#wakeWaiters();
    return i;
  }

  /**
   * {@link publishSimulated} for the `"atomic"` ordering: the same entries as the `"tso"` loop,
   * every slot store an `Atomics.store`, so each one is ordered after the busy mark and before
   * the `seq` store on any CPU. Kept as a twin of that loop so neither pays a per-entry branch.
   */
  #publishSimulatedAtomic(count: number): number {
    const words = this.#words;
    const { base, mask } = this.#shape;
    const clock = this.#clock;
    const ts = this.#ts;
    let i = this.#next;
    let nextHi = this.#nextHi;
    const end = i + count;
    if (end > MAX_INDEX) throw new RangeError(`Cannot write as write_ptr would pass 2^52-1`);
    const waitersWord = WAITERS_OFFSET >>> 2;
    let woke = false;
    let sym = (i % 8) * 2;
    let m6 = i % 1_000_000;
    let price = (m6 * 7919) % 1_000_000;
    let m3 = i % 1000;
    let qty = (m3 * 37) % 1000;
    let side = i % 2 === 0 ? 0x42 : 0x53;
    const entryWords = this.#shape.words;
    for (; i < end; i++) {
      const w = base + (i & mask) * entryWords;
      Atomics.store(words, w + 1, Atomics.load(words, w + 1) | BUSY_BIT_HI);
      clock(ts, 0);
      Atomics.store(words, w + 2, ts[0]!);
      Atomics.store(words, w + 3, ts[1]!);
      Atomics.store(words, w + 4, SYMBOL_WORDS[sym]!);
      Atomics.store(words, w + 5, SYMBOL_WORDS[sym + 1]!);
      Atomics.store(words, w + 6, 1_000_000 + price);
      Atomics.store(words, w + 7, 0);
      Atomics.store(words, w + 8, 1 + qty);
      Atomics.store(words, w + 9, side);
      for (let k = 10; k < 16; k++) Atomics.store(words, w + k, 0);
      const lo = i >>> 0;
      Atomics.store(words, w, lo);
      Atomics.store(words, w + 1, (i - lo) / TWO_32);
      nextHi = storeU64Monotonic(words, WRITE_PTR_OFFSET, i + 1, nextHi);
      if (Atomics.load(words, waitersWord) !== 0) woke = true;
      sym = (sym + 2) & 15;
      side ^= 0x42 ^ 0x53;
      if (++m6 === 1_000_000) {
        m6 = 0;
        price = 0;
      } else if ((price += 7919) >= 1_000_000) price -= 1_000_000;
      if (++m3 === 1000) {
        m3 = 0;
        qty = 0;
      } else if ((qty += 37) >= 1000) qty -= 1000;
    }
    this.#next = i;
    this.#nextHi = nextHi;
    if (woke) this.#wakeWaiters();
    return i;
  }

  /**
   * Stores the writer heartbeat (CLOCK_REALTIME ns). `writer.ts` calls it every 100 ms; `status`
   * calls a heartbeat older than 3 s stalled.
   */
  heartbeat(): void {
    this.#clock(this.#ts, 0);
    storeU64(this.#words, WRITER_HEARTBEAT_OFFSET, this.#ts[0]! + this.#ts[1]! * TWO_32);
  }

  // ---- Records by schema (see schema.ts). Built on claim()/commit(): same protocol. ----------

  #schema: Schema | undefined;
  #view: DataView | undefined;
  #scratch: DataView | undefined;
  #table: Uint32Array | undefined;
  /**
   * On the `"atomic"` ordering the typed setters write into this staging entry, never into the
   * slot with plain stores; {@link commit} then stores its payload words with `Atomics.store`.
   */
  #staged: DataView | undefined;
  #stagedWords: Uint32Array | undefined;
  #stagedBytes: Uint8Array | undefined;
  #recordStaged = false;

  /** The schema of the ring's entries, read from its header once (the default without a block). */
  get schema(): Schema {
    if (this.#schema === undefined) {
      const buffer = this.#words.buffer as ArrayBuffer;
      this.#schema = readSchema(buffer, buffer.byteLength, "(buffer)");
    }
    return this.#schema;
  }

  /**
   * The field called `name`, for the typed setters. Look it up once, outside the hot loop.
   * Throws a RangeError when the schema has no such field.
   */
  field(name: string): Field {
    const f = this.schema.fields.find((x) => x.name === name);
    if (f === undefined) {
      throw new RangeError(
        `Cannot publish as field ${name} is not in the schema (${
          this.schema.fields.map((x) => x.name).join(", ")
        })`,
      );
    }
    return f;
  }

  /**
   * Publishes one entry from values by field name (see {@link encodeRecord} for the rules: bigint
   * or safe integer for 64-bit fields, scaled numbers rounded, text ASCII and at most N long).
   * Every value is checked before the slot is claimed, so a RangeError leaves the ring as it was.
   * Returns the entry's index.
   */
  publishRecord(record: Record<string, FieldValue>): number {
    const schema = this.schema;
    const entryWords = this.#shape.words;
    this.#scratch ??= new DataView(new ArrayBuffer(this.#shape.entrySize));
    encodeRecord(schema, this.#scratch, 0, record, this.#payload.length);
    const words = this.#words;
    const w = this.claim() >>> 2;
    if (this.#atomic) {
      for (let k = 4; k < entryWords; k++) {
        Atomics.store(words, w + k, this.#scratch.getUint32(k * 4, true));
      }
    } else {
      for (let k = 4; k < entryWords; k++) words[w + k] = this.#scratch.getUint32(k * 4, true);
    }
    return this.commit();
  }

  /**
   * Allocation-free publishing, step 1: {@link claim} the next slot and zero its payload. Returns
   * the slot's byte offset for the typed setters; finish with {@link commit}.
   *
   * @example
   * ```ts
   * import { createRingBuffer, RingWriter } from "./ring.ts";
   * import { defineSchema } from "./schema.ts";
   * const schema = defineSchema([{ name: "px", type: "f64" }, { name: "qty", type: "u32" }]);
   * const w = new RingWriter(createRingBuffer(8, 1n, schema));
   * const px = w.field("px"), qty = w.field("qty");
   * for (let i = 0; i < 3; i++) {
   *   const slot = w.claimRecord();
   *   w.setNumber(slot, px, 100 + i / 4);
   *   w.setNumber(slot, qty, i);
   *   w.commit();
   * }
   * console.assert(w.position === 3);
   * ```
   */
  claimRecord(): number {
    const offset = this.claim();
    if (this.#atomic) {
      if (this.#staged === undefined) {
        const bytes = new ArrayBuffer(this.#shape.entrySize);
        this.#staged = new DataView(bytes);
        this.#stagedWords = new Uint32Array(bytes);
        this.#stagedBytes = new Uint8Array(bytes);
      }
      this.#stagedWords!.fill(0);
      this.#recordStaged = true;
      return offset;
    }
    this.#bytes.fill(0, offset + 16, offset + this.#shape.entrySize);
    return offset;
  }

  /**
   * Sets a numeric field of the claimed slot: any integer type (a scaled one rounds `value` to the
   * nearest unit; `u64`/`i64` take a safe integer here) or a float. Allocates nothing. Throws a
   * RangeError naming the field when the value does not fit; the slot stays claimed.
   */
  setNumber(slot: number, field: Field, value: number): void {
    this.#setField(slot, field, value);
  }

  /** Sets a `u64`/`i64` field (or any integer field) of the claimed slot from a bigint of units. */
  setBigInt(slot: number, field: Field, value: bigint): void {
    this.#setField(slot, field, value);
  }

  /** Sets a `char[N]` field of the claimed slot: ASCII, at most N characters, NUL-padded. */
  setText(slot: number, field: Field, value: string): void {
    this.#setField(slot, field, value);
  }

  /**
   * Sets a `bytes[N]` field of the claimed slot: copies `value` (at most N bytes) and stores its
   * length. Allocates nothing. Throws a RangeError naming the field, N and the length when it is
   * longer; the slot stays claimed.
   *
   * @example
   * ```ts
   * import { createRingBuffer, RingWriter } from "./ring.ts";
   * import { defineSchema } from "./schema.ts";
   * const schema = defineSchema([{ name: "blob", type: "bytes[1000]" }]);
   * const w = new RingWriter(createRingBuffer(8, 1n, schema, 1024));
   * const blob = w.field("blob");
   * const message = new Uint8Array(600).fill(7);
   * w.setBytes(w.claimRecord(), blob, message);
   * w.commit();
   * console.assert(w.position === 1);
   * ```
   */
  setBytes(slot: number, field: Field, value: Uint8Array): void {
    if (field.kind !== "bytes") {
      throw new RangeError(
        `Cannot publish as field ${field.name} is ${field.type}, not bytes[N]: use setNumber, setBigInt or setText`,
      );
    }
    if (this.#recordStaged) writeBytes(this.#stagedBytes!, field.offset, field, value);
    else writeBytes(this.#bytes, slot + field.offset, field, value);
  }

  /**
   * Publishes `count` simulated entries for the ring's schema: the default schema's engine
   * ({@link publishSimulated}), or for a custom schema the values of `simulatedValue` in
   * schema.ts, copied from a table built once. Allocates nothing per entry. Returns `write_ptr`.
   */
  publishSimulatedSchema(count: number): number {
    const schema = this.schema;
    if (schema.isDefault) return this.publishSimulated(count);
    const table = this.#table ??= simulatedPayloads(schema, this.#shape.entrySize);
    const words = this.#words;
    const end = this.#next + count;
    if (end > MAX_INDEX) throw new RangeError(`Cannot write as write_ptr would pass 2^52-1`);
    const atomic = this.#atomic;
    const entryWords = this.#shape.words;
    const rowWords = entryWords - 4;
    for (let i = this.#next; i < end; i++) {
      const w = this.claim() >>> 2;
      const row = (i % SIMULATION_ROWS) * rowWords - 4;
      if (atomic) {
        for (let k = 4; k < entryWords; k++) Atomics.store(words, w + k, table[row + k]!);
      } else if (rowWords <= 12) {
        for (let k = 4; k < entryWords; k++) words[w + k] = table[row + k]!;
      } else {
        words.set(table.subarray(row + 4, row + entryWords), w + 4);
      }
      this.commit();
    }
    return this.#next;
  }

  #dataView(): DataView {
    return this.#view ??= new DataView(this.#words.buffer);
  }

  /** Writes a field of the claimed slot: into the staging entry on `"atomic"`, else in place. */
  #setField(slot: number, field: Field, value: FieldValue): void {
    if (this.#recordStaged) writeField(this.#staged!, 0, field, value);
    else writeField(this.#dataView(), slot, field, value);
  }
}

/**
 * A lost range of indices, `[from, to)`.
 *
 * @example
 * ```ts
 * import type { LossHandler } from "./ring.ts";
 * const onLoss: LossHandler = (from, to) => console.error(`lost ${from}..${to - 1}`);
 * onLoss(3, 5);
 * ```
 */
export type LossHandler = (from: number, to: number) => void;

/**
 * Options for {@link RingReader}.
 *
 * @example
 * ```ts
 * import { createRingBuffer, RingReader, type RingReaderOptions } from "./ring.ts";
 * const options: RingReaderOptions = { position: 0, onLoss: (from, to) => console.error(from, to) };
 * console.assert(new RingReader(createRingBuffer(8), 1, options).position === 0);
 * ```
 */
export interface RingReaderOptions {
  /** Called once per contiguous range of entries overwritten before they were read. */
  onLoss?: LossHandler;
  /** Where to start (default: `read_ptrs[id]`). */
  position?: number;
  /** How the copy between the two `seq` checks loads (default: {@link DEFAULT_ORDERING}). */
  ordering?: MemoryOrdering;
}

/**
 * One reader: copies entries out of the ring and validates each copy after making it (the seq
 * stamp is the same before and after), so a torn or stale entry is counted as lost, never
 * returned as data.
 *
 * @example
 * ```ts
 * import { createRingBuffer, ENTRY_WORDS, RingReader, RingWriter } from "./ring.ts";
 * const buffer = createRingBuffer(8);
 * new RingWriter(buffer).publishSimulated(5);
 * const r = new RingReader(buffer, 0);
 * const dst = new Uint32Array(16 * ENTRY_WORDS);
 * console.assert(r.readBatch(dst, 16) === 5);
 * r.commit();
 * ```
 */
export class RingReader {
  #words: Uint32Array;
  #shape: Shape;
  #id: number;
  #pos: number;
  #committedHi: number;
  #onLoss: LossHandler | undefined;
  #lossFrom = -1;
  #lossTo = -1;
  #lost = 0;
  #lostUncommitted = 0;
  #ok = new Uint8Array(0);
  #ordering: MemoryOrdering;
  #atomic: boolean;

  /** Attaches reader `id` (0..7) to the ring in `buffer`, at `read_ptrs[id]` by default. */
  constructor(buffer: ArrayBuffer, id: number, options: RingReaderOptions = {}) {
    if (!Number.isInteger(id) || id < 0 || id >= MAX_READERS) {
      throw new RangeError(
        `Cannot attach reader as reader id must be 0..7: current value is ${id}`,
      );
    }
    this.#ordering = orderingOf(options.ordering);
    this.#atomic = this.#ordering === "atomic";
    this.#shape = shapeOf(buffer, "(buffer)");
    this.#words = new Uint32Array(buffer);
    this.#id = id;
    const stored = loadU64(this.#words, READ_PTRS_OFFSET + id * 8);
    this.#committedHi = Math.floor(stored / TWO_32);
    this.#pos = options.position ?? stored;
    this.#onLoss = options.onLoss;
  }

  /** This reader's id. */
  get id(): number {
    return this.#id;
  }
  /** Index of the next entry this reader will copy. */
  get position(): number {
    return this.#pos;
  }
  /** Entries lost to lapping since this reader was attached. */
  get lost(): number {
    return this.#lost;
  }
  /** Number of slots. */
  get capacity(): number {
    return this.#shape.capacity;
  }
  /** Bytes per entry (the header's `entry_size`). */
  get entrySize(): number {
    return this.#shape.entrySize;
  }
  /** u32 words per entry: the stride of the entries {@link readBatch} copies out. */
  get entryWords(): number {
    return this.#shape.words;
  }
  /** How this reader's copy loads are ordered. */
  get ordering(): MemoryOrdering {
    return this.#ordering;
  }

  /** The writer's `write_ptr`, read with acquire ordering. */
  writePtr(): number {
    return loadU64(this.#words, WRITE_PTR_OFFSET);
  }

  /** Entries published but not yet copied by this reader. */
  available(): number {
    return this.writePtr() - this.#pos;
  }

  /** Moves the cursor (not the stored `read_ptr`) to `position`. */
  seek(position: number): void {
    if (!Number.isSafeInteger(position) || position < 0 || position > this.writePtr()) {
      throw new RangeError(
        `Cannot seek reader ${this.#id} as position must be 0..write_ptr: current value is ${position}`,
      );
    }
    this.#pos = position;
  }

  /**
   * Copies up to `max` new entries into `dst` ({@link entryWords} words each), contiguous,
   * validating each copy. Entries overwritten before they could be copied are skipped and reported through
   * `onLoss`. Returns the number of entries copied; the cursor moves past skipped ones too.
   */
  readBatch(dst: Uint32Array, max: number): number {
    const words = this.#words;
    const { base, mask, capacity, words: entryWords } = this.#shape;
    const writePtr = this.writePtr();
    let pos = this.#pos;
    if (writePtr - pos > capacity) {
      // Everything older than one lap is gone already: skip it as one range.
      this.#lose(pos, writePtr - capacity);
      pos = writePtr - capacity;
    }
    const limit = Math.min(writePtr - pos, max, (dst.length / entryWords) | 0);
    if (this.#ok.length < limit) this.#ok = new Uint8Array(limit); // grows once, then reused
    let out = 0;
    let done = 0;
    // Slots [pos, pos + limit) form at most two contiguous runs (the ring may wrap once). Per
    // run: check every seq (before), copy the run, check every seq again (after). Entry k is
    // valid when both checks saw seq == k: the copy happened in between. The "tso" copy is one
    // memcpy of plain loads, which x86-64 keeps between the checks; the "atomic" copy loads
    // each word with Atomics.load, which no CPU moves across the checks' atomic loads.
    while (done < limit) {
      const slot = pos & mask;
      const run = Math.min(limit - done, capacity - slot);
      const first = base + slot * entryWords;
      const ok = this.#ok;
      for (let k = 0; k < run; k++) {
        const w = first + k * entryWords;
        const i = pos + k;
        const lo = i >>> 0;
        ok[k] = Atomics.load(words, w + 1) === (i - lo) / TWO_32 && Atomics.load(words, w) === lo
          ? 1
          : 0;
      }
      const at = out * entryWords;
      if (this.#atomic) copyAtomic(words, first, dst, at, run * entryWords);
      else dst.set(words.subarray(first, first + run * entryWords), at);
      let kept = 0;
      for (let k = 0; k < run; k++) {
        const w = first + k * entryWords;
        const i = pos + k;
        const lo = i >>> 0;
        const valid = ok[k] === 1 && Atomics.load(words, w + 1) === (i - lo) / TWO_32 &&
          Atomics.load(words, w) === lo;
        if (!valid) {
          this.#lose(i, i + 1);
          continue;
        }
        if (kept !== k) {
          // Close the gap left by a lost entry (rare: only when the writer laps us mid-run).
          dst.copyWithin(at + kept * entryWords, at + k * entryWords, at + (k + 1) * entryWords);
        }
        kept++;
      }
      out += kept;
      pos += run;
      done += run;
    }
    this.#pos = pos;
    this.#flushLoss();
    return out;
  }

  /** Stores the cursor as `read_ptrs[id]` (and the lost counter, when it moved). */
  commit(): void {
    this.#committedHi = storeU64Monotonic(
      this.#words,
      READ_PTRS_OFFSET + this.#id * 8,
      this.#pos,
      this.#committedHi,
    );
    if (this.#lostUncommitted !== 0) {
      const at = READER_LOST_OFFSET + this.#id * 8;
      storeU64(this.#words, at, loadU64(this.#words, at) + this.#lostUncommitted);
      this.#lostUncommitted = 0;
    }
  }

  /**
   * Stores `position` (at most the cursor) as `read_ptrs[id]`, and the lost counter, without moving
   * the cursor: for a consumer whose output covers less than it has read.
   */
  commitAt(position: number): void {
    if (!Number.isSafeInteger(position) || position < 0 || position > this.#pos) {
      throw new RangeError(
        `Cannot commit reader ${this.#id} as position must be 0..${this.#pos} (the cursor): current value is ${position}`,
      );
    }
    const cursor = this.#pos;
    this.#pos = position;
    this.commit();
    this.#pos = cursor;
  }

  /** Stores `position` as `read_ptrs[id]` directly and moves the cursor there. */
  commitPosition(position: number): void {
    this.seek(position);
    storeU64(this.#words, READ_PTRS_OFFSET + this.#id * 8, position);
    this.#committedHi = Math.floor(position / TWO_32);
  }

  /** Stores this reader's heartbeat: `ns` split as two words. */
  heartbeat(lo: number, hi: number): void {
    storeU64(this.#words, READER_HEARTBEATS_OFFSET + this.#id * 8, hi * TWO_32 + lo);
  }

  #lose(from: number, to: number): void {
    const n = to - from;
    this.#lost += n;
    this.#lostUncommitted += n;
    if (this.#lossTo === from) {
      this.#lossTo = to;
      return;
    }
    this.#flushLoss();
    this.#lossFrom = from;
    this.#lossTo = to;
  }

  #flushLoss(): void {
    if (this.#lossFrom < 0) return;
    const from = this.#lossFrom;
    const to = this.#lossTo;
    this.#lossFrom = this.#lossTo = -1;
    this.#onLoss?.(from, to);
  }
}

/** Copies `count` words from `src` at `from` to `dst` at `at`, each with `Atomics.load`. */
function copyAtomic(
  src: Uint32Array,
  from: number,
  dst: Uint32Array,
  at: number,
  count: number,
): void {
  for (let k = 0; k < count; k++) dst[at + k] = Atomics.load(src, from + k);
}

/**
 * Makes a ring of layout v1 in a plain `ArrayBuffer`: for tests, and for code that wants the ring
 * logic without shared memory.
 *
 * @example
 * ```ts
 * import { createRingBuffer } from "./ring.ts";
 * console.assert(createRingBuffer(16).byteLength === 384 + 16 * 64);
 * ```
 */
export function createRingBuffer(
  capacity: number,
  epoch = 1n,
  schema: Schema = DEFAULT_SCHEMA,
  entrySize = ENTRY_SIZE,
): ArrayBuffer {
  const bytes = ringBytes(capacity, schema, entrySize);
  return initRing(new ArrayBuffer(bytes), capacity, epoch, schema, entrySize);
}

/**
 * Byte size of a ring of `capacity` slots of `entrySize` bytes holding `schema`, after checking
 * that they make a valid ring: a RangeError naming the values otherwise (a SchemaError when the
 * schema does not fit the entry).
 *
 * @example
 * ```ts
 * import { ringBytes } from "./ring.ts";
 * import { DEFAULT_SCHEMA } from "./schema.ts";
 * console.assert(ringBytes(16, DEFAULT_SCHEMA, 1024) === 384 + 16 * 1024);
 * ```
 */
export function ringBytes(capacity: number, schema: Schema, entrySize = ENTRY_SIZE): number {
  const problem = ringShapeProblem(capacity, entrySize);
  if (problem !== undefined) throw new RangeError(`Cannot create ring as ${problem}`);
  checkSchemaFits(schema, entrySize);
  return segmentSize(capacity, entriesOffsetFor(schema), entrySize);
}

/**
 * Writes a fresh header, the schema block (none for the default schema) and empty slots into
 * `buffer` (zeroed, `segmentSize(capacity, entriesOffsetFor(schema))` bytes), storing the magic
 * last with a release store. Returns `buffer`.
 *
 * @example
 * ```ts
 * import { initRing } from "./ring.ts";
 * import { segmentSize } from "./layout.ts";
 * const buffer = initRing(new ArrayBuffer(segmentSize(8)), 8, 1n);
 * console.assert(new Uint32Array(buffer)[0x50 / 4] === 8);
 * ```
 */
export function initRing(
  buffer: ArrayBuffer,
  capacity: number,
  epoch: bigint,
  schema: Schema = DEFAULT_SCHEMA,
  entrySize = ENTRY_SIZE,
): ArrayBuffer {
  ringBytes(capacity, schema, entrySize);
  const entriesOffset = entriesOffsetFor(schema);
  if (epoch === 0n) {
    throw new RangeError("Cannot create ring as epoch must be non-zero: current value is 0");
  }
  const view = new DataView(buffer);
  view.setUint32(VERSION_OFFSET, VERSION, true);
  view.setUint32(CAPACITY_OFFSET, capacity, true);
  view.setUint32(ENTRY_SIZE_OFFSET, entrySize, true);
  view.setUint32(ENTRIES_OFFSET_OFFSET, entriesOffset, true);
  view.setBigUint64(EPOCH_OFFSET, epoch, true);
  writeSchema(buffer, schema);
  // Every slot starts as "never written": seq all ones (busy bit set, no index).
  const words = new Uint32Array(buffer, entriesOffset);
  for (let i = 0; i < words.length; i += entrySize >>> 2) {
    words[i] = 0xffff_ffff;
    words[i + 1] = 0xffff_ffff;
  }
  Atomics.store(new Uint32Array(buffer), MAGIC_OFFSET >>> 2, MAGIC);
  return buffer;
}
