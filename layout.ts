/**
 * Binary layout v1 of the segment: the contract between every program that maps it, in Deno, C
 * or Rust. Integers are little-endian; offsets are bytes from the start of the segment. Nothing
 * here may move: native readers depend on every number.
 *
 * The rules are specified once, in `docs/` (each rule in one place): the header, entry sizes and
 * validation in `docs/segment.md`; the schema block, versions 1 and 2, in `docs/schema.md`; the
 * publication and read protocol, the seq word, lapping, memory ordering and heartbeats in
 * `docs/protocol.md`; roles and locks in `docs/ownership.md`; the stream messages in
 * `docs/stream.md`. This file restates the numbers for TypeScript (`tests/docs_test.ts` keeps the
 * docs' numbers in step with these constants) and summarises the rules below.
 *
 * ```text
 * Segment
 *  0x000 +---------------------------------------------------------------+
 *        | write_ptr                         u64 atomic                   |
 *  0x008 | read_ptrs[0..7]                   8 x u64 atomic               |
 *  0x048 | magic "RPTS" u32 | version u32 | capacity u32 | entry_size u32 |
 *  0x058 | entries_offset u32 | flags u32   | epoch u64                   |
 *  0x068 +-------------------- extension (this implementation) ----------+
 *        | writer_owner u64 (pid u32, token u32)                         |
 *  0x070 | writer_heartbeat_ns u64                                       |
 *  0x078 | wake_seq u32 (futex word) | waiters u32                       |
 *  0x080 | writer_started_ns u64     | writer_start_index u64            |
 *  0x090 | schema_fingerprint u64 (0: no block, the default schema)        |
 *  0x098 | schema_offset u32 (0 or 0x180) | schema_length u32            |
 *  0x0A0 | reserved, zero, up to 0x0C0                                   |
 *  0x0C0 | reader_owner[0..7]        8 x u64 (pid u32, token u32)        |
 *  0x100 | reader_heartbeat_ns[0..7] 8 x u64                             |
 *  0x140 | reader_lost[0..7]         8 x u64                             |
 *  0x180 +---------------------------------------------------------------+
 *        | schema block (optional): schema_length bytes, then zero         |
 *        +---------------------------------------------------------------+ entries_offset
 *        | slot 0 | slot 1 | ... | slot capacity-1   entry_size bytes each |
 *        +---------------------------------------------------------------+
 *
 * Entry (entry_size bytes: a power of two from 64, one cache line, to 65,536; 64 by default)
 *  0x00 seq u64 atomic | 0x08 timestamp_ns u64 | 0x10 payload, entry_size - 16 bytes
 *
 * Payload of the default schema (a segment with no schema block)
 *  0x10 symbol char[8] | 0x18 price_e4 i64
 *  0x20 quantity u32   | 0x24 side u8 ('B'/'S') | 0x25 reserved u8[27], zero, to 0x40
 *
 * Schema block version 1 (at schema_offset = 0x180, schema_length = 8 + 36 x field_count bytes)
 *  0x00 magic u32 = 0x48435352 ("RSCH") | 0x04 version u16 = 1 | 0x06 field_count u16 (1..48)
 *  0x08 + 36 x i, field i:
 *       +0x00 name char[32]  [a-z_][a-z0-9_]*, 1..31 characters, NUL-padded
 *       +0x20 type u8        1 u8, 2 u16, 3 u32, 4 u64, 5 i8, 6 i16, 7 i32, 8 i64, 9 f32,
 *                            10 f64, 11 char[N]
 *       +0x21 size u8        1, 2, 4 or 8; N (1..48) for char
 *       +0x22 scale u8       0..18 for integers: printed with that many decimals; else 0
 *       +0x23 offset u8      byte offset in the entry: fields in order, natural alignment,
 *                            from 0x10, within 0x10..0x3F
 *
 * Schema block version 2 (schema_length = 8 + 44 x field_count bytes): for fields that version 1
 * cannot describe (one that ends past 0x40, or a bytes[N] field)
 *  0x00 magic u32 = 0x48435352 ("RSCH") | 0x04 version u16 = 2 | 0x06 field_count u16 (1..65,520)
 *  0x08 + 44 x i, field i:
 *       +0x00 name char[32]  as in version 1
 *       +0x20 type u8        1..11 as in version 1, 12 bytes[N]
 *       +0x21 scale u8       as in version 1
 *       +0x22 reserved u16   zero
 *       +0x24 size u32       bytes the field takes: 1, 2, 4 or 8; N (1..entry_size-16) for
 *                            char[N]; 4 + N (N 1..entry_size-20) for bytes[N]
 *       +0x28 offset u32     byte offset in the entry: fields in order, natural alignment
 *                            (4 for bytes), from 0x10, ending at or before entry_size
 *
 * bytes[N] in an entry: a u32 length L (0..N), then N bytes of which the first L are the value
 * (the rest zero).
 * ```
 *
 * **Schema.** `schema_fingerprint` is the 64-bit FNV-1a hash of the block's `schema_length`
 * bytes. All three words zero means no block: the default schema (`symbol char[8]`, `price i64`
 * scale 4, `quantity u32`, `side char[1]`), as in segments made before schemas existed and by
 * the C writer. With a block, `entries_offset` is the first multiple of 64 at or after its end
 * (equal to the end when the block ends on a multiple of 64). The block is
 * written before the magic and never changes for the life of the segment (its epoch).
 *
 * **Publication protocol** (`docs/protocol.md`). To write entry `i` in slot `i & (capacity - 1)`
 * the writer first sets bit 63 of the slot's `seq` (the *busy* bit: the slot is being written),
 * then writes the payload and `timestamp_ns`, then stores `seq = i` (the release that clears the
 * busy bit), and then stores `write_ptr = i + 1`. This TypeScript writer stores `seq = i` as two
 * 32-bit atomic stores, the low word and then the high word; the C header stores it with one
 * 64-bit release store. Every intermediate value of `seq` has the busy bit set (it lives in the
 * high word, stored last), so a reader that sees `seq == i` before and after copying the
 * `entry_size` bytes holds a whole, current entry. A reader loads `seq` as one 8-byte load, or,
 * without 64-bit atomics, the high word and then the low word, each compared with the expected
 * index's half; monotonic counters (`write_ptr`, `read_ptrs`) it loads high, low, high again
 * until both high loads agree. A slot that was never written holds `seq = 0xFFFF_FFFF_FFFF_FFFF`.
 *
 * **Ownership.** A role (the writer, or reader id k) is held by an exclusive open-file-description
 * lock (`fcntl` `F_OFD_SETLK`, `F_WRLCK`) on its own byte range of the segment's descriptor: the
 * bytes of its owner word. The kernel drops the lock when the holder's descriptor closes, kill -9
 * included, before the holder is reaped. The owner word only records who holds the role (pid and
 * start-time token, for messages and `status`); a role is live exactly while its lock is held,
 * which any descriptor of the segment can test with `F_OFD_GETLK`, a read-only one included.
 *
 * **Memory ordering in this implementation.** `ring.ts` runs the protocol on one of two paths,
 * fixed per writer or reader: `"tso"` (the default on x86_64 only) and `"atomic"` (the default on
 * every other CPU, and selectable on x86_64 so that it is tested there). An `Atomics` operation
 * is sequentially consistent on every CPU: an `xchg` store and a plain `mov` load on x86-64,
 * `stlr` and `ldar` on aarch64. A plain access is an ordinary typed-array store or load, or a
 * `memcpy` (`TypedArray.set`).
 *
 * ```text
 * access                         by       "tso" (x86_64 only)           "atomic" (any CPU)
 * seq high word |= busy bit      writer   claim(): Atomics.store         Atomics.store
 *                                         publishSimulated(): plain
 * timestamp_ns, 2 words          writer   plain (the clock writes it)    Atomics.store x 2
 * payload 0x10..entry_size-1     writer   plain (publish(): memcpy)      Atomics.store per word
 *   (entry_size/4 - 4 words)
 * seq low word = i               writer   publishSimulated(): plain      Atomics.store
 *                                         commit(): Atomics.store
 * seq high word = i >> 32        writer   Atomics.store (the release)    Atomics.store
 * write_ptr                      writer   Atomics.store (u32 low word, or one u64 store when the
 *                                         high word changes): same on both paths
 * write_ptr, hi/lo/hi            readers  Atomics.load (the acquire): same on both paths
 * seq, before and after the copy readers  Atomics.load                   Atomics.load
 * the entry_size-byte copy       readers  plain (one memcpy per run)     Atomics.load per word
 *   in between                                                            (entry_size/4 words)
 * read_ptrs[id], reader_lost[id] reader   Atomics.store; others load them with Atomics.load
 * heartbeats (writer, readers)   owner    Atomics.store (u64); status reads them plainly (a
 *                                         torn read there only skews a displayed age)
 * wake_seq / waiters             both     Atomics.add, Atomics.sub, Atomics.load, then futex
 * owner words                    owners   Atomics.exchange (under the role lock), Atomics.load
 * magic                          creator  Atomics.store last (the release); openers Atomics.load
 * ```
 *
 * On `"tso"` the plain stores rely on x86-64 making stores visible in program order (the busy
 * mark before the payload, the payload before `seq`), and the plain copy on loads not passing
 * earlier loads nor the later `seq` load. ARMv8 gives neither for plain accesses, and JavaScript
 * has no standalone fence; on `"atomic"` every access to a slot is an `Atomics` operation, so
 * the whole protocol is sequentially consistent and the seqlock holds on any CPU. The header's
 * live fields are `Atomics` accesses on both paths (but for the status heartbeat read above).
 * The C header (`include/rpt_shm.h`) uses acquire and release operations with explicit fences.
 *
 * @module
 */

/** Size of one u64 field in bytes. */
const U64 = 8;
/** Size of one u32 field in bytes. */
const U32 = 4;
/**
 * Number of reader ids, 0 to 7.
 *
 * @example
 * ```ts
 * import { MAX_READERS } from "./layout.ts";
 * for (let id = 0; id < MAX_READERS; id++) console.assert(id <= 7);
 * ```
 */
export const MAX_READERS = 8;

/** `write_ptr`: index of the next entry to write, i.e. the number of entries written so far. */
export const WRITE_PTR_OFFSET = 0x00;
/** `read_ptrs[0..7]`: per reader, the index of the next entry it will read. */
export const READ_PTRS_OFFSET = WRITE_PTR_OFFSET + U64;
/** `magic` = 0x53545052 ("RPTS"), stored last with a release store when a segment is ready. */
export const MAGIC_OFFSET = READ_PTRS_OFFSET + MAX_READERS * U64;
/** Layout version, 1. */
export const VERSION_OFFSET = MAGIC_OFFSET + U32;
/** `capacity`: number of slots, a power of two. */
export const CAPACITY_OFFSET = VERSION_OFFSET + U32;
/** `entry_size`: bytes per slot, a power of two from 64 to 65,536 (64 by default). */
export const ENTRY_SIZE_OFFSET = CAPACITY_OFFSET + U32;
/** `entries_offset`: byte offset of slot 0, a multiple of 64 at or after the schema block's end. */
export const ENTRIES_OFFSET_OFFSET = ENTRY_SIZE_OFFSET + U32;
/** `flags`: reserved, zero in v1. */
export const FLAGS_OFFSET = ENTRIES_OFFSET_OFFSET + U32;
/** `epoch`: non-zero id of this incarnation of the segment (creation time in ns). */
export const EPOCH_OFFSET = FLAGS_OFFSET + U32;
/** `writer_owner`: pid (low u32) and start-time token (high u32) of the writer; 0 when none. */
export const WRITER_OWNER_OFFSET = EPOCH_OFFSET + U64;
/**
 * `writer_heartbeat_ns`: CLOCK_REALTIME ns, stored when the writer takes the segment, every 100 ms
 * while it runs, and when it stops; `status` calls one older than 3 s stalled.
 */
export const WRITER_HEARTBEAT_OFFSET = WRITER_OWNER_OFFSET + U64;
/** `wake_seq`: u32 futex word the writer bumps before waking blocked readers. */
export const WAKE_SEQ_OFFSET = WRITER_HEARTBEAT_OFFSET + U64;
/** `waiters`: u32 count of readers announced as blocked on `wake_seq`. */
export const WAITERS_OFFSET = WAKE_SEQ_OFFSET + U32;
/** `writer_started_ns`: CLOCK_REALTIME ns when the current writer took the segment. */
export const WRITER_STARTED_OFFSET = WAITERS_OFFSET + U32;
/** `writer_start_index`: `write_ptr` when the current writer took the segment. */
export const WRITER_START_INDEX_OFFSET = WRITER_STARTED_OFFSET + U64;
/** `schema_fingerprint`: FNV-1a 64 of the schema block; 0 when there is none (default schema). */
export const SCHEMA_FINGERPRINT_OFFSET = WRITER_START_INDEX_OFFSET + U64;
/** `schema_offset`: u32 byte offset of the schema block, 0x180; 0 when there is none. */
export const SCHEMA_BLOCK_OFFSET_OFFSET = SCHEMA_FINGERPRINT_OFFSET + U64;
/**
 * `schema_length`: u32 byte length of the schema block, `8 + 36 x field_count` (version 1) or
 * `8 + 44 x field_count` (version 2); 0 for none.
 */
export const SCHEMA_BLOCK_LENGTH_OFFSET = SCHEMA_BLOCK_OFFSET_OFFSET + U32;
/** Reserved, zero: room for later fields without moving the per-reader arrays. */
export const RESERVED_OFFSET = SCHEMA_BLOCK_LENGTH_OFFSET + U32;
/** `reader_owner[0..7]`: pid (low u32) and token (high u32) of the reporter holding each id. */
export const READER_OWNERS_OFFSET = 0x0c0;
/** `reader_heartbeat_ns[0..7]`: CLOCK_REALTIME ns, stored every 250 ms by each reader. */
export const READER_HEARTBEATS_OFFSET = READER_OWNERS_OFFSET + MAX_READERS * U64;
/** `reader_lost[0..7]`: entries each reader skipped because the writer lapped it. */
export const READER_LOST_OFFSET = READER_HEARTBEATS_OFFSET + MAX_READERS * U64;
/** Length of one role's lock range: one owner word (8 bytes). */
export const ROLE_LOCK_LENGTH = U64;
/** Start of the writer role's lock range: the bytes of `writer_owner`. */
export const WRITER_LOCK_OFFSET = WRITER_OWNER_OFFSET;
/** Start of reader id 0's lock range; id k's starts `k * ROLE_LOCK_LENGTH` bytes further. */
export const READER_LOCKS_OFFSET = READER_OWNERS_OFFSET;
/** End of the header: the default `entries_offset`, and the smallest one accepted. */
export const HEADER_SIZE = READER_LOST_OFFSET + MAX_READERS * U64;
/** Largest `entries_offset` accepted: 4 MiB, room for the largest version-2 schema block. */
export const MAX_ENTRIES_OFFSET = 1 << 22;

/** `seq`: the entry's index; bit 63 set while the slot is being written. */
export const SEQ_OFFSET = 0x00;
/** `timestamp_ns`: CLOCK_REALTIME nanoseconds at publication. */
export const TIMESTAMP_OFFSET = SEQ_OFFSET + U64;
/** `symbol`: instrument symbol, NUL-padded to 8 bytes (writers store ASCII; readers pass any byte). */
export const SYMBOL_OFFSET = TIMESTAMP_OFFSET + U64;
/** Length of the symbol field in bytes. */
export const SYMBOL_LENGTH = 8;
/** `price_e4`: signed price in units of 1/10,000. */
export const PRICE_OFFSET = SYMBOL_OFFSET + SYMBOL_LENGTH;
/** `quantity`: unsigned quantity. */
export const QUANTITY_OFFSET = PRICE_OFFSET + U64;
/** `side`: 'B' (buy) or 'S' (sell) (writers store ASCII; readers pass any byte). */
export const SIDE_OFFSET = QUANTITY_OFFSET + U32;
/** Reserved bytes after `side`, zero, up to the end of the entry. */
export const ENTRY_RESERVED_OFFSET = SIDE_OFFSET + 1;
/** First payload byte of an entry: where a schema's fields start. */
export const PAYLOAD_OFFSET = TIMESTAMP_OFFSET + U64;
/** Payload bytes of a 64-byte entry, 0x10..0x3F: `entry_size - 16` in general. */
export const PAYLOAD_SIZE = 48;
/** Bytes of an entry before its payload: `seq` and `timestamp_ns`. */
export const ENTRY_HEADER_SIZE = PAYLOAD_OFFSET;

/** Schema block `magic` = 0x48435352 ("RSCH" as bytes). */
export const SCHEMA_MAGIC = 0x48435352;
/** Schema block `version` 1: one byte per field's size and offset (64-byte entries). */
export const SCHEMA_VERSION = 1;
/** Schema block `version` 2: a u32 per field's size and offset (any entry size, bytes[N]). */
export const SCHEMA_VERSION_2 = 2;
/** Byte offset of the first field record in the schema block (after magic, version, count). */
export const SCHEMA_FIELDS_OFFSET = 8;
/** Bytes of the `name` of a field record: 31 characters and at least one NUL. */
export const SCHEMA_NAME_SIZE = 32;
/** Bytes per field record: name, then type, size, scale and offset as one u8 each. */
export const SCHEMA_FIELD_SIZE = SCHEMA_NAME_SIZE + 4;
/** Largest version-1 schema block: 48 one-byte fields. */
export const SCHEMA_MAX_BLOCK = SCHEMA_FIELDS_OFFSET + PAYLOAD_SIZE * SCHEMA_FIELD_SIZE;
/** Bytes per version-2 field record: name, type u8, scale u8, reserved u16, size u32, offset u32. */
export const SCHEMA_FIELD_SIZE_V2 = SCHEMA_NAME_SIZE + 12;
/** Type code of `bytes[N]` in a version-2 block. */
export const SCHEMA_TYPE_BYTES = 12;
/** Bytes before the data of a `bytes[N]` field: its u32 length. */
export const BYTES_LENGTH_SIZE = U32;
/**
 * Default size of one entry, and the smallest: one cache line.
 *
 * @example
 * ```ts
 * import { ENTRY_SIZE } from "./layout.ts";
 * console.assert(ENTRY_SIZE === 64);
 * ```
 */
export const ENTRY_SIZE = 64;
/**
 * Largest entry size: 64 KiB.
 *
 * @example
 * ```ts
 * import { MAX_ENTRY_SIZE } from "./layout.ts";
 * console.assert(MAX_ENTRY_SIZE - 16 === 65_520); // the largest payload
 * ```
 */
export const MAX_ENTRY_SIZE = 65_536;
/**
 * Largest ring: `capacity x entry_size` may be at most 2^30 bytes (1 GiB).
 *
 * @example
 * ```ts
 * import { MAX_ENTRY_SIZE, MAX_RING_BYTES } from "./layout.ts";
 * console.assert(MAX_RING_BYTES / MAX_ENTRY_SIZE === 16_384); // slots of 64 KiB at most
 * ```
 */
export const MAX_RING_BYTES = 2 ** 30;

/**
 * Whether `n` is a valid `entry_size`: a power of two from 64 to 65,536.
 *
 * @example
 * ```ts
 * import { isValidEntrySize } from "./layout.ts";
 * console.assert(isValidEntrySize(1024) && !isValidEntrySize(100) && !isValidEntrySize(32));
 * ```
 */
export function isValidEntrySize(n: number): boolean {
  return Number.isInteger(n) && n >= ENTRY_SIZE && n <= MAX_ENTRY_SIZE && (n & (n - 1)) === 0;
}

/**
 * Why `capacity` slots of `entrySize` bytes make no valid ring, or `undefined` when they do: the
 * one check behind every "Cannot create" message (the caller prefixes it).
 *
 * @example
 * ```ts
 * import { ringShapeProblem } from "./layout.ts";
 * console.assert(ringShapeProblem(1024, 64) === undefined);
 * console.assert(ringShapeProblem(1 << 16, 1 << 16)!.includes("2^30"));
 * ```
 */
export function ringShapeProblem(capacity: number, entrySize: number): string | undefined {
  if (!isValidEntrySize(entrySize)) {
    return `entry size must be a power of two from 64 to 65536: current value is ${entrySize}`;
  }
  if (!isValidCapacity(capacity)) {
    return `capacity must be a power of two from 1 to ${MAX_CAPACITY}: current value is ${capacity}`;
  }
  if (capacity * entrySize > MAX_RING_BYTES) {
    return `capacity x entry size must be at most 2^30 bytes (1 GiB): current values are capacity ${capacity} and entry size ${entrySize} (${
      capacity * entrySize
    } bytes)`;
  }
  return undefined;
}

/**
 * "RPTS" read as a little-endian u32.
 *
 * @example
 * ```ts
 * import { MAGIC } from "./layout.ts";
 * const bytes = new Uint8Array(new Uint32Array([MAGIC]).buffer);
 * console.assert(new TextDecoder().decode(bytes) === "RPTS");
 * ```
 */
export const MAGIC = 0x53545052;
/**
 * This layout's version.
 *
 * @example
 * ```ts
 * import { VERSION } from "./layout.ts";
 * console.assert(VERSION === 1);
 * ```
 */
export const VERSION = 1;
/**
 * Default number of slots.
 *
 * @example
 * ```ts
 * import { DEFAULT_CAPACITY, segmentSize } from "./layout.ts";
 * console.assert(segmentSize(DEFAULT_CAPACITY) === 0x180 + 1024 * 64);
 * ```
 */
export const DEFAULT_CAPACITY = 1024;
/** Largest capacity accepted: 2^24 slots (1 GiB of 64-byte entries; see {@link MAX_RING_BYTES}). */
export const MAX_CAPACITY = 1 << 24;
/**
 * Default segment name.
 *
 * @example
 * ```ts
 * import { DEFAULT_NAME } from "./layout.ts";
 * console.assert(DEFAULT_NAME === "/rpt_sys_shm");
 * ```
 */
export const DEFAULT_NAME = "/rpt_sys_shm";
/** Bit 63 of `seq`, as the bit 31 of its high word: set while a slot is being written. */
export const BUSY_BIT_HI = 0x8000_0000;
/** Largest index the JavaScript side handles exactly (2^52 - 1; 14 years at 10 M entries/s). */
export const MAX_INDEX = 2 ** 52 - 1;

/**
 * Byte size of a segment with `capacity` slots of `entrySize` bytes after `entriesOffset`.
 *
 * @example
 * ```ts
 * import { segmentSize } from "./layout.ts";
 * console.assert(segmentSize(16) === 384 + 16 * 64);
 * console.assert(segmentSize(16, 384, 1024) === 384 + 16 * 1024);
 * ```
 */
export function segmentSize(
  capacity: number,
  entriesOffset = HEADER_SIZE,
  entrySize = ENTRY_SIZE,
): number {
  return entriesOffset + capacity * entrySize;
}

/**
 * Byte offset of entry `index` in a segment of `capacity` slots.
 *
 * @example
 * ```ts
 * import { slotOffset } from "./layout.ts";
 * console.assert(slotOffset(17, 16) === 384 + 64);
 * ```
 */
export function slotOffset(
  index: number,
  capacity: number,
  entriesOffset = HEADER_SIZE,
  entrySize = ENTRY_SIZE,
): number {
  return entriesOffset + (index & (capacity - 1)) * entrySize;
}

/** Whether `n` is a power of two from 1 to {@link MAX_CAPACITY}. */
export function isValidCapacity(n: number): boolean {
  return Number.isInteger(n) && n >= 1 && n <= MAX_CAPACITY && (n & (n - 1)) === 0;
}

/**
 * The decoded fields of one entry.
 *
 * @example
 * ```ts
 * import { type Entry, simulatedEntry } from "./layout.ts";
 * const e: Entry = { ...simulatedEntry(1), timestampNs: 0n };
 * console.assert(e.side === "S");
 * ```
 */
export interface Entry {
  /** The entry's index. */
  seq: number;
  /** CLOCK_REALTIME nanoseconds at publication. */
  timestampNs: bigint;
  /** Instrument symbol, up to 8 ASCII characters. */
  symbol: string;
  /** Price in units of 1/10,000. */
  priceE4: number;
  /** Quantity. */
  quantity: number;
  /** 'B' or 'S'. */
  side: string;
}

/** The symbols the simulated engine cycles through. */
export const SYMBOLS: readonly string[] = [
  "AAPL",
  "MSFT",
  "GOOG",
  "AMZN",
  "NVDA",
  "META",
  "TSLA",
  "NFLX",
];

/** Symbol of the simulated entry `seq`. */
export function symbolFor(seq: number): string {
  return SYMBOLS[seq % SYMBOLS.length]!;
}
/** Price (1/10,000 units) of the simulated entry `seq`: 100.0000 to 199.9999. */
export function priceFor(seq: number): number {
  return 1_000_000 + ((seq % 1_000_000) * 7919) % 1_000_000;
}
/** Quantity of the simulated entry `seq`: 1 to 1000. */
export function quantityFor(seq: number): number {
  return 1 + ((seq % 1000) * 37) % 1000;
}
/** Side of the simulated entry `seq`: 'B' for even, 'S' for odd. */
export function sideFor(seq: number): string {
  return seq % 2 === 0 ? "B" : "S";
}

/**
 * The deterministic payload of simulated entry `seq`, without the timestamp.
 *
 * @example
 * ```ts
 * import { simulatedEntry } from "./layout.ts";
 * const e = simulatedEntry(3);
 * console.assert(e.symbol === "AMZN" && e.side === "S");
 * ```
 */
export function simulatedEntry(seq: number): Omit<Entry, "timestampNs"> {
  return {
    seq,
    symbol: symbolFor(seq),
    priceE4: priceFor(seq),
    quantity: quantityFor(seq),
    side: sideFor(seq),
  };
}

/**
 * Encodes an entry into `view` at `offset` (64 bytes). Writes `seq` plainly: this is for tests and
 * tools; publishing goes through the ring writer, which follows the publication protocol.
 *
 * @example
 * ```ts
 * import { decodeEntry, encodeEntry } from "./layout.ts";
 * const view = new DataView(new ArrayBuffer(64));
 * encodeEntry(view, 0, { seq: 7, timestampNs: 1n, symbol: "AAPL", priceE4: 1234500, quantity: 10, side: "B" });
 * console.assert(decodeEntry(view, 0).symbol === "AAPL");
 * ```
 */
export function encodeEntry(view: DataView, offset: number, e: Entry): void {
  if (!Number.isSafeInteger(e.seq) || e.seq < 0 || e.seq > MAX_INDEX) {
    throw new RangeError(`Cannot encode entry as seq must be 0..2^52-1: current value is ${e.seq}`);
  }
  const symbol = new TextEncoder().encode(e.symbol);
  if (symbol.length > SYMBOL_LENGTH) {
    throw new RangeError(
      `Cannot encode entry as symbol must be at most 8 bytes: current value is ${e.symbol}`,
    );
  }
  if (e.side.length !== 1) {
    throw new RangeError(
      `Cannot encode entry as side must be one character: current value is ${e.side}`,
    );
  }
  view.setBigUint64(offset + SEQ_OFFSET, BigInt(e.seq), true);
  view.setBigUint64(offset + TIMESTAMP_OFFSET, e.timestampNs, true);
  for (let i = 0; i < SYMBOL_LENGTH; i++) {
    view.setUint8(offset + SYMBOL_OFFSET + i, symbol[i] ?? 0);
  }
  view.setBigInt64(offset + PRICE_OFFSET, BigInt(e.priceE4), true);
  view.setUint32(offset + QUANTITY_OFFSET, e.quantity, true);
  view.setUint8(offset + SIDE_OFFSET, e.side.charCodeAt(0));
  for (let i = ENTRY_RESERVED_OFFSET; i < ENTRY_SIZE; i++) view.setUint8(offset + i, 0);
}

/**
 * Decodes the entry at `offset` of `view`.
 *
 * @example
 * ```ts
 * import { decodeEntry } from "./layout.ts";
 * const e = decodeEntry(new DataView(new ArrayBuffer(64)), 0);
 * console.assert(e.seq === 0 && e.symbol === "");
 * ```
 */
export function decodeEntry(view: DataView, offset: number): Entry {
  let symbol = "";
  for (let i = 0; i < SYMBOL_LENGTH; i++) {
    const c = view.getUint8(offset + SYMBOL_OFFSET + i);
    if (c === 0) break;
    symbol += String.fromCharCode(c);
  }
  return {
    seq: Number(view.getBigUint64(offset + SEQ_OFFSET, true)),
    timestampNs: view.getBigUint64(offset + TIMESTAMP_OFFSET, true),
    symbol,
    priceE4: Number(view.getBigInt64(offset + PRICE_OFFSET, true)),
    quantity: view.getUint32(offset + QUANTITY_OFFSET, true),
    side: String.fromCharCode(view.getUint8(offset + SIDE_OFFSET)),
  };
}

/**
 * The fields of a segment header that describe its shape.
 *
 * @example
 * ```ts
 * import { type HeaderInfo, validateHeader } from "./layout.ts";
 * import { createRingBuffer } from "./ring.ts";
 * const buffer = createRingBuffer(16);
 * const info: HeaderInfo = validateHeader(buffer, buffer.byteLength, "(buffer)");
 * console.assert(info.capacity === 16 && info.writePtr === 0);
 * ```
 */
export interface HeaderInfo {
  /** Number of slots, a power of two. */
  capacity: number;
  /** Bytes per slot: a power of two from 64 to 65,536. */
  entrySize: number;
  /** Byte offset of slot 0. */
  entriesOffset: number;
  /** Incarnation id of the segment. */
  epoch: bigint;
  /** `write_ptr` when the header was validated. */
  writePtr: number;
  /** `read_ptrs[0..7]` when the header was validated. */
  readPtrs: number[];
}

/**
 * Validates the header of a mapped segment of `size` bytes held in `buffer`. Reads only inside
 * the first `size` bytes. Returns the header's shape, or throws a {@link SegmentInvalidError}
 * whose message names the field and its value.
 *
 * @example
 * ```ts
 * import { SegmentInvalidError, validateHeader } from "./layout.ts";
 * try {
 *   validateHeader(new ArrayBuffer(4096), 4096, "/demo");
 * } catch (e) {
 *   console.assert(e instanceof SegmentInvalidError);
 * }
 * ```
 */
export function validateHeader(buffer: ArrayBuffer, size: number, name: string): HeaderInfo {
  const fail = (what: string): never => {
    throw new SegmentInvalidError(`Cannot use segment ${name} as ${what}`);
  };
  if (!Number.isSafeInteger(size) || size < HEADER_SIZE || buffer.byteLength < size) {
    fail(`its size must be at least ${HEADER_SIZE} bytes: current value is ${size}`);
  }
  const view = new DataView(buffer, 0, size);
  const magic = view.getUint32(MAGIC_OFFSET, true);
  if (magic !== MAGIC) fail(`its magic must be 0x53545052: current value is 0x${hex(magic)}`);
  const version = view.getUint32(VERSION_OFFSET, true);
  if (version !== VERSION) fail(`its layout version must be 1: current value is ${version}`);
  const entrySize = view.getUint32(ENTRY_SIZE_OFFSET, true);
  if (!isValidEntrySize(entrySize)) {
    fail(`its entry_size must be a power of two from 64 to 65536: current value is ${entrySize}`);
  }
  const capacity = view.getUint32(CAPACITY_OFFSET, true);
  if (!isValidCapacity(capacity)) {
    fail(`its capacity must be a power of two from 1 to 2^24: current value is ${capacity}`);
  }
  if (capacity * entrySize > MAX_RING_BYTES) {
    fail(
      `its capacity x entry_size must be at most 2^30 bytes: current values are ${capacity} and ${entrySize}`,
    );
  }
  const entriesOffset = view.getUint32(ENTRIES_OFFSET_OFFSET, true);
  if (
    entriesOffset < HEADER_SIZE || entriesOffset > MAX_ENTRIES_OFFSET ||
    entriesOffset % ENTRY_SIZE !== 0
  ) {
    fail(
      `its entries_offset must be a multiple of 64 from ${HEADER_SIZE} to ${MAX_ENTRIES_OFFSET}: current value is ${entriesOffset}`,
    );
  }
  const expected = entriesOffset + capacity * entrySize;
  if (size !== expected) {
    fail(
      `its size must be entries_offset + capacity x entry_size = ${expected} bytes: current value is ${size}`,
    );
  }
  const epoch = view.getBigUint64(EPOCH_OFFSET, true);
  if (epoch === 0n) fail("its epoch must be non-zero: current value is 0");
  // Read the readers' positions before write_ptr: each was stored at most at the write_ptr of
  // its time, and write_ptr only grows, so a live segment never fails this check by a race.
  // Live counters: read each as one value (a byte-wise DataView read can tear under a store).
  const words = new Uint32Array(buffer, 0, HEADER_SIZE / 4);
  const raw: bigint[] = [];
  for (let id = 0; id < MAX_READERS; id++) {
    raw.push(atomicU64(words, READ_PTRS_OFFSET + id * U64));
  }
  const writePtr = atomicU64(words, WRITE_PTR_OFFSET);
  if (writePtr > BigInt(MAX_INDEX)) {
    fail(`its write_ptr must be at most 2^52-1: current value is ${writePtr}`);
  }
  const readPtrs: number[] = [];
  raw.forEach((r, id) => {
    if (r > writePtr) {
      fail(`read_ptrs[${id}] must be at most write_ptr ${writePtr}: current value is ${r}`);
    }
    readPtrs.push(Number(r));
  });
  return { capacity, entrySize, entriesOffset, epoch, writePtr: Number(writePtr), readPtrs };
}

/** Reads the u64 at byte `offset` atomically: high, low, high again until both highs agree. */
function atomicU64(words: Uint32Array, offset: number): bigint {
  const w = offset >>> 2;
  for (;;) {
    const hi = Atomics.load(words, w + 1);
    const lo = Atomics.load(words, w);
    if (Atomics.load(words, w + 1) === hi) return (BigInt(hi) << 32n) | BigInt(lo);
  }
}

function hex(n: number): string {
  return n.toString(16).toUpperCase().padStart(8, "0");
}

/**
 * Raised when a segment fails validation: wrong size, magic, version, entry size, ...
 *
 * @example
 * ```ts
 * import { SegmentInvalidError, validateHeader } from "./layout.ts";
 * try {
 *   validateHeader(new ArrayBuffer(384), 384, "/x");
 * } catch (e) {
 *   console.assert(e instanceof SegmentInvalidError && e.message.includes("magic"));
 * }
 * ```
 */
export class SegmentInvalidError extends Error {
  /**
   * Makes the error; `message` names the field and its value.
   *
   * @example
   * ```ts
   * import { SegmentInvalidError } from "./layout.ts";
   * console.assert(new SegmentInvalidError("bad").name === "SegmentInvalidError");
   * ```
   */
  constructor(message: string) {
    super(message);
    this.name = "SegmentInvalidError";
  }
}

// ---------------------------------------------------------------------------------------------
// Stream messages (NATS JetStream), written by `bridge.ts` and read by `follow.ts`
// ---------------------------------------------------------------------------------------------
//
// One message carries one or more consecutive entries of one incarnation (epoch) of a segment,
// or names a range of entries lost to lapping. A Go or C consumer reads it without our code:
//
//   subject  rpt.<segment name without "/", "." as "_"> unless --subject says otherwise
//   headers  Nats-Msg-Id: <epoch>:<first seq>           (decimal; deduplication)
//            Nats-Expected-Last-Subject-Sequence: <n>   (the stream seq of the previous message
//                                                        on the subject; compare-and-set)
//            Nats-Expected-Last-Msg-Id: <id>            (while several publishes are in flight)
//            Rpt-Kind: entries | lost | schema
//            Rpt-Epoch: <epoch>   Rpt-First-Seq: <first seq>   Rpt-Count: <count>
//            Rpt-Schema: <fingerprint>                  (16 lowercase hex digits: the FNV-1a
//                                                        64-bit hash of the epoch's schema block)
//            Rpt-Entry-Size: <entry_size>               (decimal, the epoch's entry_size; on
//                                                        every message; absent means 64)
//   data     entries: count x entry_size bytes, each exactly the ring slot (entry layout above,
//                     seq first, little-endian), seqs first .. first+count-1 in order
//            lost:    empty; entries first .. first+count-1 were overwritten before the bridge
//                     read them
//            schema:  the schema block of the epoch, byte for byte as in a segment (see
//                     `encodeSchemaBlock` in schema.ts; the default schema's block for a segment
//                     without one); count is 0, first is the seq of the next message's first
//                     entry, Nats-Msg-Id is <epoch>:<first seq>:schema
//
// Messages on a subject are in seq order within an epoch; a new epoch (the segment was
// re-created) starts again wherever its read_ptr is. The entry after a message is first+count.
// The first message of every epoch is its schema message; the bridge publishes it again before
// its next message whenever the subject's last message does not carry the epoch's fingerprint.
// Every entries and lost message carries the fingerprint of its epoch's schema: a reader decodes
// the entries with the block whose fingerprint it carries. A message without Rpt-Schema (a
// stream written by a bridge that predates schemas) means the default schema.
//
// Entry size: the stream says it on every message, in Rpt-Entry-Size (decimal; the epoch's
// entry_size, a power of two from 64 to 65,536; one value for the whole epoch, since a segment's
// entry_size is fixed at its creation). A consumer decodes an entries message by its own header:
// entry k of it is data[k x entry_size .. (k+1) x entry_size), and data holds exactly
// count x entry_size bytes. A message without Rpt-Entry-Size (a stream written by a bridge that
// predates entry sizes) means 64. follow refuses (exit 20, nothing of it written) a value that is
// not a valid entry size, one that does not hold the epoch's schema, one that differs from the
// epoch's, and data of another length.
//
// Message size: the headers and data of a message count against the server's max_payload
// (1 MiB by default), so an entries message holds at most
// min(--batch, streamBatchLimit(entry_size, max_payload)) entries, max_payload being the
// connected server's (read again at every write). The bridge refuses a server whose max_payload
// cannot hold one entry, or the schema block, and STREAM_HEADER_ROOM bytes of headers (exit 21).

/** Header naming what a stream message holds: {@link STREAM_KIND_ENTRIES} or {@link STREAM_KIND_LOST}. */
export const STREAM_KIND_HEADER = "Rpt-Kind";
/** Header holding the epoch (decimal) of the segment incarnation the message comes from. */
export const STREAM_EPOCH_HEADER = "Rpt-Epoch";
/** Header holding the seq (decimal) of the message's first entry or first lost entry. */
export const STREAM_FIRST_HEADER = "Rpt-First-Seq";
/** Header holding how many entries the message carries or names as lost. */
export const STREAM_COUNT_HEADER = "Rpt-Count";
/** `Rpt-Kind` of a message whose data is `count` entries of `Rpt-Entry-Size` bytes each. */
export const STREAM_KIND_ENTRIES = "entries";
/** `Rpt-Kind` of an empty message naming `count` entries lost to lapping from `first`. */
export const STREAM_KIND_LOST = "lost";
/** `Rpt-Kind` of a message whose data is its epoch's schema block (`count` 0). */
export const STREAM_KIND_SCHEMA = "schema";
/** Header holding the epoch's schema fingerprint as 16 lowercase hex digits (every message). */
export const STREAM_SCHEMA_HEADER = "Rpt-Schema";
/** Header holding the epoch's `entry_size` in decimal (every message); absent means 64. */
export const STREAM_ENTRY_SIZE_HEADER = "Rpt-Entry-Size";
/**
 * Most entries in one stream message: 16,000 x 64 bytes stay under the server's default
 * `max_payload` of 1 MiB with room for the headers. Larger entries take fewer: see
 * {@link streamBatchLimit}.
 *
 * @example
 * ```ts
 * import { ENTRY_SIZE, MAX_STREAM_BATCH } from "./layout.ts";
 * console.assert(MAX_STREAM_BATCH * ENTRY_SIZE < 1024 * 1024);
 * ```
 */
export const MAX_STREAM_BATCH = 16_000;
/** Bytes of a message's `max_payload` kept for its headers (they count against it). */
export const STREAM_HEADER_ROOM = 1024;

/**
 * Most entries of `entrySize` bytes in one stream message under a server's `maxPayload`:
 * `min(MAX_STREAM_BATCH, floor((maxPayload - STREAM_HEADER_ROOM) / entrySize))`; 0 when not even
 * one entry fits (the bridge refuses such a server).
 *
 * @example
 * ```ts
 * import { streamBatchLimit } from "./layout.ts";
 * console.assert(streamBatchLimit(64, 1 << 20) === 16_000);
 * console.assert(streamBatchLimit(65536, 1 << 20) === 15);
 * console.assert(streamBatchLimit(65536, 65536) === 0);
 * ```
 */
export function streamBatchLimit(entrySize: number, maxPayload: number): number {
  return Math.max(
    0,
    Math.min(MAX_STREAM_BATCH, Math.floor((maxPayload - STREAM_HEADER_ROOM) / entrySize)),
  );
}

/**
 * The `Nats-Msg-Id` of a stream message: `<epoch>:<first seq>`.
 *
 * @example
 * ```ts
 * import { streamMsgId } from "./layout.ts";
 * console.assert(streamMsgId(7n, 100) === "7:100");
 * ```
 */
export function streamMsgId(epoch: bigint, first: number): string {
  return `${epoch}:${first}`;
}

/**
 * The `Nats-Msg-Id` of a schema message: `<epoch>:<first seq>:schema` (the entries message after it
 * has the same epoch and first seq).
 *
 * @example
 * ```ts
 * import { streamSchemaMsgId } from "./layout.ts";
 * console.assert(streamSchemaMsgId(7n, 100) === "7:100:schema");
 * ```
 */
export function streamSchemaMsgId(epoch: bigint, first: number): string {
  return `${epoch}:${first}:schema`;
}

/**
 * The `Rpt-Schema` header value of a fingerprint: 16 lowercase hex digits.
 *
 * @example
 * ```ts
 * import { streamFingerprint } from "./layout.ts";
 * console.assert(streamFingerprint(0xabn) === "00000000000000ab");
 * ```
 */
export function streamFingerprint(fingerprint: bigint): string {
  return fingerprint.toString(16).padStart(16, "0");
}
