/**
 * Binary layout v1 of the segment: the contract between every program that maps it, in Deno, C
 * or Rust. Integers are little-endian; offsets are bytes from the start of the segment. Nothing
 * here may move: native readers depend on every number.
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
 *  0x090 | reserved, zero, up to 0x0C0                                   |
 *  0x0C0 | reader_owner[0..7]        8 x u64 (pid u32, token u32)        |
 *  0x100 | reader_heartbeat_ns[0..7] 8 x u64                             |
 *  0x140 | reader_lost[0..7]         8 x u64                             |
 *  0x180 +---------------------------------------------------------------+ entries_offset
 *        | slot 0 | slot 1 | ... | slot capacity-1        64 bytes each   |
 *        +---------------------------------------------------------------+
 *
 * Entry (64 bytes, one cache line)
 *  0x00 seq u64 atomic | 0x08 timestamp_ns u64 | 0x10 symbol char[8] | 0x18 price_e4 i64
 *  0x20 quantity u32   | 0x24 side u8 ('B'/'S') | 0x25 reserved u8[27], zero, to 0x40
 * ```
 *
 * **Publication protocol.** To write entry `i` in slot `i & (capacity - 1)` the writer first
 * sets bit 63 of the slot's `seq` (the *busy* bit: the slot is being written), then writes the
 * payload and `timestamp_ns`, then stores the low word and finally the high word of `seq = i`
 * (the release store that clears the busy bit), and then stores `write_ptr = i + 1`. Every
 * intermediate value of `seq` has the busy bit set, so a reader that sees `seq == i` before and
 * after copying the 64 bytes holds a whole, current entry. A slot that was never written holds
 * `seq = 0xFFFF_FFFF_FFFF_FFFF`.
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
/** `entry_size`: bytes per slot, 64. */
export const ENTRY_SIZE_OFFSET = CAPACITY_OFFSET + U32;
/** `entries_offset`: byte offset of slot 0, a multiple of 64. */
export const ENTRIES_OFFSET_OFFSET = ENTRY_SIZE_OFFSET + U32;
/** `flags`: reserved, zero in v1. */
export const FLAGS_OFFSET = ENTRIES_OFFSET_OFFSET + U32;
/** `epoch`: non-zero id of this incarnation of the segment (creation time in ns). */
export const EPOCH_OFFSET = FLAGS_OFFSET + U32;
/** `writer_owner`: pid (low u32) and start-time token (high u32) of the writer; 0 when none. */
export const WRITER_OWNER_OFFSET = EPOCH_OFFSET + U64;
/** `writer_heartbeat_ns`: CLOCK_REALTIME ns, refreshed at least once a second by the writer. */
export const WRITER_HEARTBEAT_OFFSET = WRITER_OWNER_OFFSET + U64;
/** `wake_seq`: u32 futex word the writer bumps before waking blocked readers. */
export const WAKE_SEQ_OFFSET = WRITER_HEARTBEAT_OFFSET + U64;
/** `waiters`: u32 count of readers announced as blocked on `wake_seq`. */
export const WAITERS_OFFSET = WAKE_SEQ_OFFSET + U32;
/** `writer_started_ns`: CLOCK_REALTIME ns when the current writer took the segment. */
export const WRITER_STARTED_OFFSET = WAITERS_OFFSET + U32;
/** `writer_start_index`: `write_ptr` when the current writer took the segment. */
export const WRITER_START_INDEX_OFFSET = WRITER_STARTED_OFFSET + U64;
/** Reserved, zero: room for later fields without moving the per-reader arrays. */
export const RESERVED_OFFSET = WRITER_START_INDEX_OFFSET + U64;
/** `reader_owner[0..7]`: pid (low u32) and token (high u32) of the reporter holding each id. */
export const READER_OWNERS_OFFSET = 0x0c0;
/** `reader_heartbeat_ns[0..7]`: CLOCK_REALTIME ns, refreshed at least once a second per reader. */
export const READER_HEARTBEATS_OFFSET = READER_OWNERS_OFFSET + MAX_READERS * U64;
/** `reader_lost[0..7]`: entries each reader skipped because the writer lapped it. */
export const READER_LOST_OFFSET = READER_HEARTBEATS_OFFSET + MAX_READERS * U64;
/** End of the header: the default `entries_offset`, and the smallest one accepted. */
export const HEADER_SIZE = READER_LOST_OFFSET + MAX_READERS * U64;

/** `seq`: the entry's index; bit 63 set while the slot is being written. */
export const SEQ_OFFSET = 0x00;
/** `timestamp_ns`: CLOCK_REALTIME nanoseconds at publication. */
export const TIMESTAMP_OFFSET = SEQ_OFFSET + U64;
/** `symbol`: ASCII instrument symbol, NUL-padded to 8 bytes. */
export const SYMBOL_OFFSET = TIMESTAMP_OFFSET + U64;
/** Length of the symbol field in bytes. */
export const SYMBOL_LENGTH = 8;
/** `price_e4`: signed price in units of 1/10,000. */
export const PRICE_OFFSET = SYMBOL_OFFSET + SYMBOL_LENGTH;
/** `quantity`: unsigned quantity. */
export const QUANTITY_OFFSET = PRICE_OFFSET + U64;
/** `side`: ASCII 'B' (buy) or 'S' (sell). */
export const SIDE_OFFSET = QUANTITY_OFFSET + U32;
/** Reserved bytes after `side`, zero, up to the end of the entry. */
export const ENTRY_RESERVED_OFFSET = SIDE_OFFSET + 1;
/**
 * Size of one entry: one cache line.
 *
 * @example
 * ```ts
 * import { ENTRY_SIZE } from "./layout.ts";
 * console.assert(ENTRY_SIZE === 64);
 * ```
 */
export const ENTRY_SIZE = 64;

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
/** Largest capacity accepted (2^24 slots, 1 GiB of entries). */
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
 * Byte size of a segment with `capacity` slots and the default entries offset.
 *
 * @example
 * ```ts
 * import { segmentSize } from "./layout.ts";
 * console.assert(segmentSize(16) === 384 + 16 * 64);
 * ```
 */
export function segmentSize(capacity: number, entriesOffset = HEADER_SIZE): number {
  return entriesOffset + capacity * ENTRY_SIZE;
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
export function slotOffset(index: number, capacity: number, entriesOffset = HEADER_SIZE): number {
  return entriesOffset + (index & (capacity - 1)) * ENTRY_SIZE;
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
  if (entrySize !== ENTRY_SIZE) fail(`its entry_size must be 64: current value is ${entrySize}`);
  const capacity = view.getUint32(CAPACITY_OFFSET, true);
  if (!isValidCapacity(capacity)) {
    fail(`its capacity must be a power of two from 1 to 2^24: current value is ${capacity}`);
  }
  const entriesOffset = view.getUint32(ENTRIES_OFFSET_OFFSET, true);
  if (entriesOffset < HEADER_SIZE || entriesOffset % ENTRY_SIZE !== 0) {
    fail(
      `its entries_offset must be a multiple of 64 of at least ${HEADER_SIZE}: current value is ${entriesOffset}`,
    );
  }
  const expected = entriesOffset + capacity * ENTRY_SIZE;
  if (size !== expected) {
    fail(
      `its size must be entries_offset + capacity x 64 = ${expected} bytes: current value is ${size}`,
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
  return { capacity, entriesOffset, epoch, writePtr: Number(writePtr), readPtrs };
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
//            Rpt-Kind: entries | lost
//            Rpt-Epoch: <epoch>   Rpt-First-Seq: <first seq>   Rpt-Count: <count>
//   data     entries: count x 64 bytes, each exactly the ring slot (entry layout above, seq
//                     first, little-endian), seqs first .. first+count-1 in order
//            lost:    empty; entries first .. first+count-1 were overwritten before the bridge
//                     read them
//
// Messages on a subject are in seq order within an epoch; a new epoch (the segment was
// re-created) starts again wherever its read_ptr is. The entry after a message is first+count.

/** Header naming what a stream message holds: {@link STREAM_KIND_ENTRIES} or {@link STREAM_KIND_LOST}. */
export const STREAM_KIND_HEADER = "Rpt-Kind";
/** Header holding the epoch (decimal) of the segment incarnation the message comes from. */
export const STREAM_EPOCH_HEADER = "Rpt-Epoch";
/** Header holding the seq (decimal) of the message's first entry or first lost entry. */
export const STREAM_FIRST_HEADER = "Rpt-First-Seq";
/** Header holding how many entries the message carries or names as lost. */
export const STREAM_COUNT_HEADER = "Rpt-Count";
/** `Rpt-Kind` of a message whose data is `count` entries of {@link ENTRY_SIZE} bytes. */
export const STREAM_KIND_ENTRIES = "entries";
/** `Rpt-Kind` of an empty message naming `count` entries lost to lapping from `first`. */
export const STREAM_KIND_LOST = "lost";
/**
 * Most entries in one stream message: 16,000 x 64 bytes stay under the server's default
 * `max_payload` of 1 MiB with room for the headers.
 *
 * @example
 * ```ts
 * import { ENTRY_SIZE, MAX_STREAM_BATCH } from "./layout.ts";
 * console.assert(MAX_STREAM_BATCH * ENTRY_SIZE < 1024 * 1024);
 * ```
 */
export const MAX_STREAM_BATCH = 16_000;

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
