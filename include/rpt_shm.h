/*
 * rpt_shm.h: binary layout v1 of the rpt shared-memory ring, for C11 (GCC or Clang).
 *
 * The contract lives in layout.ts; this header restates it, and every offset and size below is
 * checked at compile time. tests/interop_test.ts compiles a program that prints
 * RPT_LAYOUT_NUMBERS / RPT_LAYOUT_FIELDS as JSON and compares them with layout.ts one by one.
 *
 * Segment (little-endian; offsets in bytes from the start of the mapping):
 *
 *   0x000 write_ptr u64 | 0x008 read_ptrs[8] u64
 *   0x048 magic u32 | version u32 | capacity u32 | entry_size u32
 *   0x058 entries_offset u32 | flags u32 | 0x060 epoch u64
 *   0x068 writer_owner u64 | 0x070 writer_heartbeat_ns u64 | 0x078 wake_seq u32 | waiters u32
 *   0x080 writer_started_ns u64 | 0x088 writer_start_index u64
 *   0x090 schema_fingerprint u64 | 0x098 schema_offset u32 | 0x09C schema_length u32
 *   0x0A0 reserved to 0x0C0
 *   0x0C0 reader_owner[8] u64 | 0x100 reader_heartbeat_ns[8] u64 | 0x140 reader_lost[8] u64
 *   0x180 schema block (optional, schema_length bytes), zero up to entries_offset
 *   entries_offset: slot 0 | slot 1 | ... | slot capacity-1, 64 bytes each
 *
 * Entry: 0x00 seq u64 | 0x08 timestamp_ns u64 | 0x10 payload, 48 bytes, laid out by the schema.
 *
 * Schema block (layout.ts, schema.ts): all three schema words zero means no block and the default
 * schema (symbol char[8] @0x10, price i64 scale 4 @0x18, quantity u32 @0x20, side char[1] @0x24:
 * the rpt_entry struct below). Otherwise schema_offset is 0x180, schema_length is
 * 8 + 36 x field_count, entries_offset is the first multiple of 64 after the block, and
 * schema_fingerprint is the FNV-1a 64 hash of the block's bytes:
 *   0x00 magic u32 "RSCH" | 0x04 version u16 = 1 | 0x06 field_count u16 (1..48)
 *   0x08 + 36 x i: name char[32] ([a-z_][a-z0-9_]*, 1..31 chars, NUL-padded) | type u8
 *        (rpt_type) | size u8 (1, 2, 4, 8; N for char[N], 1..48) | scale u8 (0..18, integers
 *        only) | offset u8 (fields in order, natural alignment, from 0x10, ending by 0x40)
 * rpt_schema_read() validates every byte of it as schema.ts does.
 *
 * Publication protocol. To write entry i in slot i & (capacity - 1) the writer sets bit 63 of
 * the slot's seq (busy), writes the payload and timestamp, stores seq = i with release (clearing
 * busy), then stores write_ptr = i + 1 with release. A reader that sees seq == i before and after
 * copying the 64 bytes holds a whole, current entry. A never-written slot holds seq = all ones.
 *
 * Ownership. A role (the writer, or reader id k) is held by an exclusive open-file-description
 * lock (fcntl F_OFD_SETLK, F_WRLCK, Linux) on its own byte range of the segment's descriptor:
 * the bytes of its owner word (RPT_WRITER_LOCK_OFFSET, RPT_READER_LOCKS_OFFSET + 8k; length
 * RPT_ROLE_LOCK_LENGTH). The kernel drops it when the holder's descriptor closes, kill -9
 * included. The owner word (pid | token << 32) only records who holds the role: take the lock
 * first, then store the word; a role is live exactly while its lock is held (F_OFD_GETLK).
 * rpt_role_lock() / rpt_role_locked() below do this.
 *
 * Shared fields are plain fixed-width integers accessed with the GCC/Clang __atomic builtins
 * (available under -std=c11), so the structs have exactly the layout of the contract.
 */
#ifndef RPT_SHM_H
#define RPT_SHM_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if !defined(__GNUC__) && !defined(__clang__)
#error "rpt_shm.h needs the GCC/Clang __atomic builtins"
#endif
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "rpt_shm.h maps layout v1 directly: it needs a little-endian CPU"
#endif

/* ---- Constants (names mirror layout.ts with an RPT_ prefix) -------------------------------- */

/** "RPTS" read as a little-endian u32. */
#define RPT_MAGIC 0x53545052u
/** This layout's version. */
#define RPT_VERSION 1u
/** Number of reader ids, 0 to 7. */
#define RPT_MAX_READERS 8
/** Size of one entry: one cache line. */
#define RPT_ENTRY_SIZE 64u
/** End of the header: the default entries_offset, and the smallest one accepted. */
#define RPT_HEADER_SIZE 0x180u
/** Length of the symbol field in bytes. */
#define RPT_SYMBOL_LENGTH 8
/** Default number of slots. */
#define RPT_DEFAULT_CAPACITY 1024u
/** Largest capacity accepted (2^24 slots). */
#define RPT_MAX_CAPACITY (1u << 24)
/** Default segment name. */
#define RPT_DEFAULT_NAME "/rpt_sys_shm"
/** Bit 63 of seq: set while a slot is being written. */
#define RPT_BUSY_BIT (UINT64_C(1) << 63)

/*
 * NATS JetStream messages written by `deno task bridge` (layout.ts, "Stream messages"; README,
 * "Message format"): the data is `count` whole entries of RPT_ENTRY_SIZE bytes exactly as in the
 * ring (kind "entries"), nothing (kind "lost": `count` entries from `first` were lapped), or the
 * epoch's schema block (kind "schema", `count` 0). Headers carry these names; values are decimal,
 * the schema fingerprint 16 lowercase hex digits.
 */
/** Header naming what a message holds: RPT_STREAM_KIND_ENTRIES, _LOST or _SCHEMA. */
#define RPT_STREAM_KIND_HEADER "Rpt-Kind"
/** Header holding the epoch of the segment incarnation the message comes from. */
#define RPT_STREAM_EPOCH_HEADER "Rpt-Epoch"
/** Header holding the seq of the message's first entry (or first lost entry). */
#define RPT_STREAM_FIRST_HEADER "Rpt-First-Seq"
/** Header holding how many entries the message carries or names as lost. */
#define RPT_STREAM_COUNT_HEADER "Rpt-Count"
/** Header holding the epoch's schema fingerprint (every message). */
#define RPT_STREAM_SCHEMA_HEADER "Rpt-Schema"
/** Rpt-Kind of a message whose data is `count` entries. */
#define RPT_STREAM_KIND_ENTRIES "entries"
/** Rpt-Kind of an empty message naming `count` entries lost to lapping from `first`. */
#define RPT_STREAM_KIND_LOST "lost"
/** Rpt-Kind of a message whose data is its epoch's schema block. */
#define RPT_STREAM_KIND_SCHEMA "schema"
/** Most entries in one message (under the server's default max_payload of 1 MiB). */
#define RPT_MAX_STREAM_BATCH 16000u

/** Every string layout.ts exports, as X(name, value): the drift test compares them. */
#define RPT_LAYOUT_STRINGS(X)                                                                     \
  X(DEFAULT_NAME, RPT_DEFAULT_NAME)                                                               \
  X(STREAM_KIND_HEADER, RPT_STREAM_KIND_HEADER)                                                   \
  X(STREAM_EPOCH_HEADER, RPT_STREAM_EPOCH_HEADER)                                                 \
  X(STREAM_FIRST_HEADER, RPT_STREAM_FIRST_HEADER)                                                 \
  X(STREAM_COUNT_HEADER, RPT_STREAM_COUNT_HEADER)                                                 \
  X(STREAM_SCHEMA_HEADER, RPT_STREAM_SCHEMA_HEADER)                                               \
  X(STREAM_KIND_ENTRIES, RPT_STREAM_KIND_ENTRIES)                                                 \
  X(STREAM_KIND_LOST, RPT_STREAM_KIND_LOST)                                                       \
  X(STREAM_KIND_SCHEMA, RPT_STREAM_KIND_SCHEMA)
/** The busy bit as bit 31 of seq's high u32 word (layout.ts BUSY_BIT_HI). */
#define RPT_BUSY_BIT_HI 0x80000000u
/** seq of a slot that was never written. */
#define RPT_SEQ_EMPTY UINT64_MAX
/** Largest index the JavaScript side handles exactly (2^52 - 1). */
#define RPT_MAX_INDEX ((UINT64_C(1) << 52) - 1)

/* Header field offsets. */
#define RPT_WRITE_PTR_OFFSET 0x000u
#define RPT_READ_PTRS_OFFSET 0x008u
#define RPT_MAGIC_OFFSET 0x048u
#define RPT_VERSION_OFFSET 0x04Cu
#define RPT_CAPACITY_OFFSET 0x050u
#define RPT_ENTRY_SIZE_OFFSET 0x054u
#define RPT_ENTRIES_OFFSET_OFFSET 0x058u
#define RPT_FLAGS_OFFSET 0x05Cu
#define RPT_EPOCH_OFFSET 0x060u
#define RPT_WRITER_OWNER_OFFSET 0x068u
#define RPT_WRITER_HEARTBEAT_OFFSET 0x070u
#define RPT_WAKE_SEQ_OFFSET 0x078u
#define RPT_WAITERS_OFFSET 0x07Cu
#define RPT_WRITER_STARTED_OFFSET 0x080u
#define RPT_WRITER_START_INDEX_OFFSET 0x088u
#define RPT_SCHEMA_FINGERPRINT_OFFSET 0x090u
#define RPT_SCHEMA_BLOCK_OFFSET_OFFSET 0x098u
#define RPT_SCHEMA_BLOCK_LENGTH_OFFSET 0x09Cu
#define RPT_RESERVED_OFFSET 0x0A0u
#define RPT_READER_OWNERS_OFFSET 0x0C0u
#define RPT_READER_HEARTBEATS_OFFSET 0x100u
#define RPT_READER_LOST_OFFSET 0x140u

/* Role locks: byte ranges of the segment's descriptor (fcntl F_OFD_SETLK), one per role. */
#define RPT_ROLE_LOCK_LENGTH 8u
#define RPT_WRITER_LOCK_OFFSET RPT_WRITER_OWNER_OFFSET
#define RPT_READER_LOCKS_OFFSET RPT_READER_OWNERS_OFFSET

/* Entry field offsets. */
#define RPT_SEQ_OFFSET 0x00u
#define RPT_TIMESTAMP_OFFSET 0x08u
#define RPT_SYMBOL_OFFSET 0x10u
#define RPT_PRICE_OFFSET 0x18u
#define RPT_QUANTITY_OFFSET 0x20u
#define RPT_SIDE_OFFSET 0x24u
#define RPT_ENTRY_RESERVED_OFFSET 0x25u
/** First payload byte of an entry, and payload bytes (0x10..0x3F). */
#define RPT_PAYLOAD_OFFSET 0x10u
#define RPT_PAYLOAD_SIZE 48u

/* Schema block. */
/** "RSCH" read as a little-endian u32. */
#define RPT_SCHEMA_MAGIC 0x48435352u
#define RPT_SCHEMA_VERSION 1u
#define RPT_SCHEMA_FIELDS_OFFSET 8u
#define RPT_SCHEMA_NAME_SIZE 32u
#define RPT_SCHEMA_FIELD_SIZE 36u
#define RPT_SCHEMA_MAX_BLOCK (RPT_SCHEMA_FIELDS_OFFSET + RPT_PAYLOAD_SIZE * RPT_SCHEMA_FIELD_SIZE)

/** Field type codes of the schema block. */
typedef enum rpt_type {
  RPT_T_U8 = 1,
  RPT_T_U16,
  RPT_T_U32,
  RPT_T_U64,
  RPT_T_I8,
  RPT_T_I16,
  RPT_T_I32,
  RPT_T_I64,
  RPT_T_F32,
  RPT_T_F64,
  RPT_T_CHAR
} rpt_type;

/* ---- Structs -------------------------------------------------------------------------------- */

/** The segment header, 0x180 bytes at offset 0. */
typedef struct rpt_header {
  uint64_t write_ptr;                            /* atomic: index of the next entry to write */
  uint64_t read_ptrs[RPT_MAX_READERS];           /* atomic: per reader, next index it will read */
  uint32_t magic;                                /* RPT_MAGIC, release-stored last at creation */
  uint32_t version;                              /* layout version, RPT_VERSION */
  uint32_t capacity;                             /* number of slots, a power of two */
  uint32_t entry_size;                           /* bytes per slot, RPT_ENTRY_SIZE */
  uint32_t entries_offset;                       /* byte offset of slot 0, multiple of 64 */
  uint32_t flags;                                /* reserved, zero in v1 */
  uint64_t epoch;                                /* non-zero incarnation id (creation ns) */
  uint64_t writer_owner;                         /* atomic: writer pid (lo) | token (hi); 0 free */
  uint64_t writer_heartbeat_ns;                  /* atomic: CLOCK_REALTIME ns, refreshed <= 1 s */
  uint32_t wake_seq;                             /* atomic: futex word bumped before a wake */
  uint32_t waiters;                              /* atomic: readers blocked on wake_seq */
  uint64_t writer_started_ns;                    /* CLOCK_REALTIME ns when the writer took over */
  uint64_t writer_start_index;                   /* write_ptr when the writer took over */
  uint64_t schema_fingerprint;                   /* FNV-1a 64 of the schema block; 0: no block */
  uint32_t schema_offset;                        /* 0x180, or 0 without a block */
  uint32_t schema_length;                        /* 8 + 36 x field_count, or 0 without a block */
  uint8_t reserved[0x0C0 - 0x0A0];               /* zero: room for later fields */
  uint64_t reader_owner[RPT_MAX_READERS];        /* atomic: reader pid (lo) | token (hi) per id */
  uint64_t reader_heartbeat_ns[RPT_MAX_READERS]; /* atomic: CLOCK_REALTIME ns per reader id */
  uint64_t reader_lost[RPT_MAX_READERS];         /* entries each reader skipped (lapped) */
} rpt_header;

/** One slot: 64 bytes, one cache line. */
typedef struct rpt_entry {
  uint64_t seq;          /* atomic: the entry's index; bit 63 set while being written */
  uint64_t timestamp_ns; /* CLOCK_REALTIME ns at publication */
  char symbol[RPT_SYMBOL_LENGTH]; /* ASCII symbol, NUL-padded */
  int64_t price_e4;      /* signed price in 1/10,000 units */
  uint32_t quantity;     /* unsigned quantity */
  uint8_t side;          /* 'B' (buy) or 'S' (sell) */
  uint8_t reserved[27];  /* zero, to 0x40 */
} rpt_entry;

/** The schema block's first 8 bytes. */
typedef struct rpt_schema_head {
  uint32_t magic;       /* RPT_SCHEMA_MAGIC */
  uint16_t version;     /* RPT_SCHEMA_VERSION */
  uint16_t field_count; /* 1..48 */
} rpt_schema_head;

/** One field record of the schema block: 36 bytes. */
typedef struct rpt_schema_field {
  char name[RPT_SCHEMA_NAME_SIZE]; /* [a-z_][a-z0-9_]*, NUL-padded */
  uint8_t type;                    /* rpt_type */
  uint8_t size;                    /* bytes in the entry */
  uint8_t scale;                   /* decimals printed (integers), else 0 */
  uint8_t offset;                  /* byte offset in the entry */
} rpt_schema_field;

/** A decoded, validated schema. */
typedef struct rpt_schema {
  uint64_t fingerprint; /* FNV-1a 64 of the block (of the default block without one) */
  int is_default;       /* 1 when the segment has no block */
  uint32_t field_count;
  rpt_schema_field fields[RPT_PAYLOAD_SIZE];
} rpt_schema;

/* ---- Compile-time checks of every offset and size --------------------------------------- */

#define RPT_FIELD_SIZE(type, field) sizeof(((type *)0)->field)

_Static_assert(sizeof(rpt_header) == RPT_HEADER_SIZE, "rpt_header must be 0x180 bytes");
_Static_assert(sizeof(rpt_entry) == RPT_ENTRY_SIZE, "rpt_entry must be 64 bytes");
_Static_assert(offsetof(rpt_header, write_ptr) == RPT_WRITE_PTR_OFFSET, "write_ptr");
_Static_assert(offsetof(rpt_header, read_ptrs) == RPT_READ_PTRS_OFFSET, "read_ptrs");
_Static_assert(offsetof(rpt_header, magic) == RPT_MAGIC_OFFSET, "magic");
_Static_assert(offsetof(rpt_header, version) == RPT_VERSION_OFFSET, "version");
_Static_assert(offsetof(rpt_header, capacity) == RPT_CAPACITY_OFFSET, "capacity");
_Static_assert(offsetof(rpt_header, entry_size) == RPT_ENTRY_SIZE_OFFSET, "entry_size");
_Static_assert(offsetof(rpt_header, entries_offset) == RPT_ENTRIES_OFFSET_OFFSET, "entries_offset");
_Static_assert(offsetof(rpt_header, flags) == RPT_FLAGS_OFFSET, "flags");
_Static_assert(offsetof(rpt_header, epoch) == RPT_EPOCH_OFFSET, "epoch");
_Static_assert(offsetof(rpt_header, writer_owner) == RPT_WRITER_OWNER_OFFSET, "writer_owner");
_Static_assert(offsetof(rpt_header, writer_heartbeat_ns) == RPT_WRITER_HEARTBEAT_OFFSET,
               "writer_heartbeat_ns");
_Static_assert(offsetof(rpt_header, wake_seq) == RPT_WAKE_SEQ_OFFSET, "wake_seq");
_Static_assert(offsetof(rpt_header, waiters) == RPT_WAITERS_OFFSET, "waiters");
_Static_assert(offsetof(rpt_header, writer_started_ns) == RPT_WRITER_STARTED_OFFSET,
               "writer_started_ns");
_Static_assert(offsetof(rpt_header, writer_start_index) == RPT_WRITER_START_INDEX_OFFSET,
               "writer_start_index");
_Static_assert(offsetof(rpt_header, schema_fingerprint) == RPT_SCHEMA_FINGERPRINT_OFFSET,
               "schema_fingerprint");
_Static_assert(offsetof(rpt_header, schema_offset) == RPT_SCHEMA_BLOCK_OFFSET_OFFSET,
               "schema_offset");
_Static_assert(offsetof(rpt_header, schema_length) == RPT_SCHEMA_BLOCK_LENGTH_OFFSET,
               "schema_length");
_Static_assert(offsetof(rpt_header, reserved) == RPT_RESERVED_OFFSET, "reserved");
_Static_assert(sizeof(rpt_schema_head) == RPT_SCHEMA_FIELDS_OFFSET, "schema head");
_Static_assert(sizeof(rpt_schema_field) == RPT_SCHEMA_FIELD_SIZE, "schema field record");
_Static_assert(offsetof(rpt_schema_field, type) == RPT_SCHEMA_NAME_SIZE, "schema field type");
_Static_assert(offsetof(rpt_entry, symbol) == RPT_PAYLOAD_OFFSET, "payload");
_Static_assert(offsetof(rpt_header, reader_owner) == RPT_READER_OWNERS_OFFSET, "reader_owner");
_Static_assert(offsetof(rpt_header, reader_heartbeat_ns) == RPT_READER_HEARTBEATS_OFFSET,
               "reader_heartbeat_ns");
_Static_assert(offsetof(rpt_header, reader_lost) == RPT_READER_LOST_OFFSET, "reader_lost");
_Static_assert(RPT_FIELD_SIZE(rpt_header, read_ptrs) == RPT_MAX_READERS * 8, "read_ptrs size");
_Static_assert(RPT_FIELD_SIZE(rpt_header, reader_lost) == RPT_MAX_READERS * 8, "reader_lost size");
_Static_assert(RPT_READER_LOST_OFFSET + RPT_MAX_READERS * 8 == RPT_HEADER_SIZE, "header end");
_Static_assert(offsetof(rpt_entry, seq) == RPT_SEQ_OFFSET, "seq");
_Static_assert(offsetof(rpt_entry, timestamp_ns) == RPT_TIMESTAMP_OFFSET, "timestamp_ns");
_Static_assert(offsetof(rpt_entry, symbol) == RPT_SYMBOL_OFFSET, "symbol");
_Static_assert(RPT_FIELD_SIZE(rpt_entry, symbol) == RPT_SYMBOL_LENGTH, "symbol size");
_Static_assert(offsetof(rpt_entry, price_e4) == RPT_PRICE_OFFSET, "price_e4");
_Static_assert(offsetof(rpt_entry, quantity) == RPT_QUANTITY_OFFSET, "quantity");
_Static_assert(offsetof(rpt_entry, side) == RPT_SIDE_OFFSET, "side");
_Static_assert(offsetof(rpt_entry, reserved) == RPT_ENTRY_RESERVED_OFFSET, "entry reserved");
_Static_assert(RPT_HEADER_SIZE % RPT_ENTRY_SIZE == 0, "slot 0 must be cache-line aligned");
_Static_assert(RPT_BUSY_BIT >> 32 == RPT_BUSY_BIT_HI, "busy bit");
_Static_assert(__GCC_ATOMIC_LLONG_LOCK_FREE == 2, "64-bit atomics must be lock-free");
_Static_assert(__GCC_ATOMIC_INT_LOCK_FREE == 2, "32-bit atomics must be lock-free");

/*
 * Every layout number under the name layout.ts exports it by, for the drift test:
 * X(NAME, value). Header and entry fields also appear in RPT_LAYOUT_FIELDS with their sizes.
 */
#define RPT_LAYOUT_NUMBERS(X)                                                                     \
  X(MAX_READERS, RPT_MAX_READERS)                                                                 \
  X(WRITE_PTR_OFFSET, offsetof(rpt_header, write_ptr))                                            \
  X(READ_PTRS_OFFSET, offsetof(rpt_header, read_ptrs))                                            \
  X(MAGIC_OFFSET, offsetof(rpt_header, magic))                                                    \
  X(VERSION_OFFSET, offsetof(rpt_header, version))                                                \
  X(CAPACITY_OFFSET, offsetof(rpt_header, capacity))                                              \
  X(ENTRY_SIZE_OFFSET, offsetof(rpt_header, entry_size))                                          \
  X(ENTRIES_OFFSET_OFFSET, offsetof(rpt_header, entries_offset))                                  \
  X(FLAGS_OFFSET, offsetof(rpt_header, flags))                                                    \
  X(EPOCH_OFFSET, offsetof(rpt_header, epoch))                                                    \
  X(WRITER_OWNER_OFFSET, offsetof(rpt_header, writer_owner))                                      \
  X(WRITER_HEARTBEAT_OFFSET, offsetof(rpt_header, writer_heartbeat_ns))                           \
  X(WAKE_SEQ_OFFSET, offsetof(rpt_header, wake_seq))                                              \
  X(WAITERS_OFFSET, offsetof(rpt_header, waiters))                                                \
  X(WRITER_STARTED_OFFSET, offsetof(rpt_header, writer_started_ns))                               \
  X(WRITER_START_INDEX_OFFSET, offsetof(rpt_header, writer_start_index))                          \
  X(SCHEMA_FINGERPRINT_OFFSET, offsetof(rpt_header, schema_fingerprint))                         \
  X(SCHEMA_BLOCK_OFFSET_OFFSET, offsetof(rpt_header, schema_offset))                              \
  X(SCHEMA_BLOCK_LENGTH_OFFSET, offsetof(rpt_header, schema_length))                              \
  X(RESERVED_OFFSET, offsetof(rpt_header, reserved))                                              \
  X(READER_OWNERS_OFFSET, offsetof(rpt_header, reader_owner))                                     \
  X(READER_HEARTBEATS_OFFSET, offsetof(rpt_header, reader_heartbeat_ns))                          \
  X(READER_LOST_OFFSET, offsetof(rpt_header, reader_lost))                                        \
  X(ROLE_LOCK_LENGTH, RPT_ROLE_LOCK_LENGTH)                                                       \
  X(WRITER_LOCK_OFFSET, RPT_WRITER_LOCK_OFFSET)                                                   \
  X(READER_LOCKS_OFFSET, RPT_READER_LOCKS_OFFSET)                                                 \
  X(HEADER_SIZE, sizeof(rpt_header))                                                              \
  X(SEQ_OFFSET, offsetof(rpt_entry, seq))                                                         \
  X(TIMESTAMP_OFFSET, offsetof(rpt_entry, timestamp_ns))                                          \
  X(SYMBOL_OFFSET, offsetof(rpt_entry, symbol))                                                   \
  X(SYMBOL_LENGTH, RPT_FIELD_SIZE(rpt_entry, symbol))                                             \
  X(PRICE_OFFSET, offsetof(rpt_entry, price_e4))                                                  \
  X(QUANTITY_OFFSET, offsetof(rpt_entry, quantity))                                               \
  X(SIDE_OFFSET, offsetof(rpt_entry, side))                                                       \
  X(ENTRY_RESERVED_OFFSET, offsetof(rpt_entry, reserved))                                         \
  X(ENTRY_SIZE, sizeof(rpt_entry))                                                                \
  X(PAYLOAD_OFFSET, RPT_PAYLOAD_OFFSET)                                                           \
  X(PAYLOAD_SIZE, RPT_PAYLOAD_SIZE)                                                               \
  X(SCHEMA_MAGIC, RPT_SCHEMA_MAGIC)                                                               \
  X(SCHEMA_VERSION, RPT_SCHEMA_VERSION)                                                           \
  X(SCHEMA_FIELDS_OFFSET, sizeof(rpt_schema_head))                                                \
  X(SCHEMA_NAME_SIZE, RPT_FIELD_SIZE(rpt_schema_field, name))                                     \
  X(SCHEMA_FIELD_SIZE, sizeof(rpt_schema_field))                                                  \
  X(SCHEMA_MAX_BLOCK, RPT_SCHEMA_MAX_BLOCK)                                                       \
  X(MAGIC, RPT_MAGIC)                                                                             \
  X(VERSION, RPT_VERSION)                                                                         \
  X(DEFAULT_CAPACITY, RPT_DEFAULT_CAPACITY)                                                       \
  X(MAX_CAPACITY, RPT_MAX_CAPACITY)                                                               \
  X(MAX_STREAM_BATCH, RPT_MAX_STREAM_BATCH)                                                       \
  X(BUSY_BIT_HI, (RPT_BUSY_BIT >> 32))                                                            \
  X(MAX_INDEX, RPT_MAX_INDEX)

/** Every field as X(struct, field), in layout order: offsets and sizes must tile each struct. */
#define RPT_LAYOUT_FIELDS(X)                                                                      \
  X(rpt_header, write_ptr)                                                                        \
  X(rpt_header, read_ptrs)                                                                        \
  X(rpt_header, magic)                                                                            \
  X(rpt_header, version)                                                                          \
  X(rpt_header, capacity)                                                                         \
  X(rpt_header, entry_size)                                                                       \
  X(rpt_header, entries_offset)                                                                   \
  X(rpt_header, flags)                                                                            \
  X(rpt_header, epoch)                                                                            \
  X(rpt_header, writer_owner)                                                                     \
  X(rpt_header, writer_heartbeat_ns)                                                              \
  X(rpt_header, wake_seq)                                                                         \
  X(rpt_header, waiters)                                                                          \
  X(rpt_header, writer_started_ns)                                                                \
  X(rpt_header, writer_start_index)                                                               \
  X(rpt_header, schema_fingerprint)                                                               \
  X(rpt_header, schema_offset)                                                                    \
  X(rpt_header, schema_length)                                                                    \
  X(rpt_header, reserved)                                                                         \
  X(rpt_header, reader_owner)                                                                     \
  X(rpt_header, reader_heartbeat_ns)                                                              \
  X(rpt_header, reader_lost)                                                                      \
  X(rpt_entry, seq)                                                                               \
  X(rpt_entry, timestamp_ns)                                                                      \
  X(rpt_entry, symbol)                                                                            \
  X(rpt_entry, price_e4)                                                                          \
  X(rpt_entry, quantity)                                                                          \
  X(rpt_entry, side)                                                                              \
  X(rpt_entry, reserved)                                                                          \
  X(rpt_schema_head, magic)                                                                       \
  X(rpt_schema_head, version)                                                                     \
  X(rpt_schema_head, field_count)                                                                 \
  X(rpt_schema_field, name)                                                                       \
  X(rpt_schema_field, type)                                                                       \
  X(rpt_schema_field, size)                                                                       \
  X(rpt_schema_field, scale)                                                                      \
  X(rpt_schema_field, offset)

/* ---- Role locks (Linux open-file-description locks) ---------------------------------------- */

#if defined(__linux__)
#include <errno.h>
#include <fcntl.h>
#include <stdio.h> /* SEEK_SET */

/* The fcntl commands of open-file-description locks (Linux 3.15+, the same number on every CPU);
 * glibc names them only under _GNU_SOURCE. */
#define RPT_F_OFD_GETLK 36
#define RPT_F_OFD_SETLK 37
#if defined(F_OFD_SETLK)
_Static_assert(F_OFD_SETLK == RPT_F_OFD_SETLK && F_OFD_GETLK == RPT_F_OFD_GETLK, "F_OFD_*");
#endif

/** Start of the lock range of reader id (0..7); the writer's is RPT_WRITER_LOCK_OFFSET. */
static inline uint32_t rpt_reader_lock_offset(int id) {
  return RPT_READER_LOCKS_OFFSET + (uint32_t)id * RPT_ROLE_LOCK_LENGTH;
}

/**
 * Takes the role whose range starts at lock_offset on the segment descriptor fd (opened
 * O_RDWR), without waiting. Returns 0 when taken, 1 when another open file description holds
 * it (read the owner word for its pid), -1 with errno set on any other failure. Hold fd open for
 * as long as the role is held; closing it (or dying) releases the role.
 */
static inline int rpt_role_lock(int fd, uint32_t lock_offset) {
  struct flock fl;
  memset(&fl, 0, sizeof fl);
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = (off_t)lock_offset;
  fl.l_len = (off_t)RPT_ROLE_LOCK_LENGTH;
  if (fcntl(fd, RPT_F_OFD_SETLK, &fl) == 0) return 0;
  return (errno == EAGAIN || errno == EACCES) ? 1 : -1;
}

/**
 * Whether another open file description holds the role whose range starts at lock_offset (any
 * descriptor of the segment will do, a read-only one included): 1 held, 0 free, -1 on failure.
 */
static inline int rpt_role_locked(int fd, uint32_t lock_offset) {
  struct flock fl;
  memset(&fl, 0, sizeof fl);
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = (off_t)lock_offset;
  fl.l_len = (off_t)RPT_ROLE_LOCK_LENGTH;
  if (fcntl(fd, RPT_F_OFD_GETLK, &fl) != 0) return -1;
  return fl.l_type != F_UNLCK;
}
#endif

/* ---- The simulated engine's deterministic payload (layout.ts simulatedEntry) ---------------- */

/** Symbol of simulated entry seq: one of 8, NUL-padded to 8 bytes (layout.ts SYMBOLS). */
static inline const char *rpt_sim_symbol(uint64_t seq) {
  static const char symbols[8][RPT_SYMBOL_LENGTH] = {
      "AAPL", "MSFT", "GOOG", "AMZN", "NVDA", "META", "TSLA", "NFLX",
  };
  return symbols[seq & 7u];
}
/** Price (1/10,000 units) of simulated entry seq: 100.0000 to 199.9999. */
static inline int64_t rpt_sim_price(uint64_t seq) {
  return (int64_t)(1000000u + ((seq % 1000000u) * 7919u) % 1000000u);
}
/** Quantity of simulated entry seq: 1 to 1000. */
static inline uint32_t rpt_sim_quantity(uint64_t seq) {
  return (uint32_t)(1u + ((seq % 1000u) * 37u) % 1000u);
}
/** Side of simulated entry seq: 'B' for even, 'S' for odd. */
static inline uint8_t rpt_sim_side(uint64_t seq) { return (seq & 1u) ? 'S' : 'B'; }

/** Fills e (except seq) with the payload of simulated entry seq and timestamp ts_ns. */
static inline void rpt_sim_entry(rpt_entry *e, uint64_t seq, uint64_t ts_ns) {
  memset(e, 0, sizeof *e);
  e->timestamp_ns = ts_ns;
  memcpy(e->symbol, rpt_sim_symbol(seq), RPT_SYMBOL_LENGTH);
  e->price_e4 = rpt_sim_price(seq);
  e->quantity = rpt_sim_quantity(seq);
  e->side = rpt_sim_side(seq);
}

/* ---- Accessors and the publication protocol ----------------------------------------------- */

/** Byte size of a segment with capacity slots and the default entries offset. */
static inline uint64_t rpt_segment_size(uint32_t capacity) {
  return (uint64_t)RPT_HEADER_SIZE + (uint64_t)capacity * RPT_ENTRY_SIZE;
}

/** Whether n is a power of two from 1 to RPT_MAX_CAPACITY. */
static inline int rpt_valid_capacity(uint64_t n) {
  return n >= 1 && n <= RPT_MAX_CAPACITY && (n & (n - 1)) == 0;
}

/** The slot of entry index in a validated segment mapped at h. */
static inline rpt_entry *rpt_slot(rpt_header *h, uint64_t index) {
  return (rpt_entry *)((char *)h + h->entries_offset) + (index & (uint64_t)(h->capacity - 1));
}

/** A u64 word of a slot that may alias any field (the protocol copies slots word by word). */
typedef uint64_t rpt_word __attribute__((__may_alias__));

/** Acquire load of a shared u64 (write_ptr, read_ptrs[k], seq, ...). */
static inline uint64_t rpt_load(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
/** Release store of a shared u64. */
static inline void rpt_store(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

/** Result of rpt_header_check. */
typedef enum rpt_check {
  RPT_OK = 0,
  RPT_BAD_SIZE,           /* smaller than the header, or not entries_offset + capacity * 64 */
  RPT_BAD_MAGIC,          /* magic is not RPT_MAGIC (0 while the creator is still at work) */
  RPT_BAD_VERSION,        /* version is not RPT_VERSION */
  RPT_BAD_ENTRY_SIZE,     /* entry_size is not 64 */
  RPT_BAD_CAPACITY,       /* capacity is not a power of two from 1 to 2^24 */
  RPT_BAD_ENTRIES_OFFSET, /* entries_offset is not a multiple of 64 of at least 0x180 */
  RPT_BAD_EPOCH,          /* epoch is 0 */
  RPT_BAD_WRITE_PTR,      /* write_ptr is beyond RPT_MAX_INDEX */
  RPT_BAD_READ_PTR,       /* a read_ptrs[k] is beyond write_ptr */
} rpt_check;

/**
 * Validates the header of a mapping of size bytes, in the order of layout.ts validateHeader.
 * Reads only inside the mapping. On RPT_BAD_READ_PTR, *bad_reader (if not NULL) is its id.
 */
static inline rpt_check rpt_header_check(const rpt_header *h, uint64_t size, int *bad_reader) {
  if (size < RPT_HEADER_SIZE) return RPT_BAD_SIZE;
  if (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != RPT_MAGIC) return RPT_BAD_MAGIC;
  if (h->version != RPT_VERSION) return RPT_BAD_VERSION;
  if (h->entry_size != RPT_ENTRY_SIZE) return RPT_BAD_ENTRY_SIZE;
  if (!rpt_valid_capacity(h->capacity)) return RPT_BAD_CAPACITY;
  if (h->entries_offset < RPT_HEADER_SIZE || h->entries_offset % RPT_ENTRY_SIZE != 0) {
    return RPT_BAD_ENTRIES_OFFSET;
  }
  if (size != (uint64_t)h->entries_offset + (uint64_t)h->capacity * RPT_ENTRY_SIZE) {
    return RPT_BAD_SIZE;
  }
  if (h->epoch == 0) return RPT_BAD_EPOCH;
  /* Readers' positions first: each was at most the write_ptr of its time, which only grows. */
  uint64_t r[RPT_MAX_READERS];
  for (int k = 0; k < RPT_MAX_READERS; k++) r[k] = rpt_load(&h->read_ptrs[k]);
  uint64_t w = rpt_load(&h->write_ptr);
  if (w > RPT_MAX_INDEX) return RPT_BAD_WRITE_PTR;
  for (int k = 0; k < RPT_MAX_READERS; k++) {
    if (r[k] > w) {
      if (bad_reader) *bad_reader = k;
      return RPT_BAD_READ_PTR;
    }
  }
  return RPT_OK;
}

/** A short description of a rpt_check value. */
static inline const char *rpt_check_message(rpt_check c) {
  switch (c) {
  case RPT_OK: return "valid";
  case RPT_BAD_SIZE: return "its size must be entries_offset + capacity x 64 bytes";
  case RPT_BAD_MAGIC: return "its magic must be 0x53545052 (\"RPTS\")";
  case RPT_BAD_VERSION: return "its layout version must be 1";
  case RPT_BAD_ENTRY_SIZE: return "its entry_size must be 64";
  case RPT_BAD_CAPACITY: return "its capacity must be a power of two from 1 to 2^24";
  case RPT_BAD_ENTRIES_OFFSET: return "its entries_offset must be a multiple of 64 of at least 0x180";
  case RPT_BAD_EPOCH: return "its epoch must be non-zero";
  case RPT_BAD_WRITE_PTR: return "its write_ptr must be at most 2^52-1";
  case RPT_BAD_READ_PTR: return "a read_ptrs[k] must be at most write_ptr";
  }
  return "unknown";
}

/**
 * Initialises a zero-filled mapping of rpt_segment_size(capacity) bytes as a fresh segment:
 * header fields, every slot's seq = all ones, then the magic with a release store (last).
 */
static inline void rpt_header_init(rpt_header *h, uint32_t capacity, uint64_t epoch) {
  h->version = RPT_VERSION;
  h->capacity = capacity;
  h->entry_size = RPT_ENTRY_SIZE;
  h->entries_offset = RPT_HEADER_SIZE;
  h->flags = 0;
  h->epoch = epoch;
  rpt_entry *slots = (rpt_entry *)((char *)h + RPT_HEADER_SIZE);
  for (uint32_t i = 0; i < capacity; i++) slots[i].seq = RPT_SEQ_EMPTY;
  __atomic_store_n(&h->magic, RPT_MAGIC, __ATOMIC_RELEASE);
}

/**
 * Reader: copies entry index out of its slot into *out and validates the copy. Returns 1 when
 * *out is entry index, whole and current; 0 when the slot holds another entry (not yet written,
 * being written, or overwritten: lapped) and *out must be ignored.
 *
 * seq is loaded with acquire before the copy; the 64 bytes are copied with relaxed atomic loads
 * (plain moves on x86-64 and AArch64, and no data race in C11 terms); an acquire fence orders the
 * copy before the second load of seq.
 */
static inline int rpt_read_entry(const rpt_entry *slot, uint64_t index, rpt_entry *out) {
  if (__atomic_load_n(&slot->seq, __ATOMIC_ACQUIRE) != index) return 0;
  const rpt_word *src = (const rpt_word *)slot;
  rpt_word *dst = (rpt_word *)out;
  for (int k = 0; k < 8; k++) dst[k] = __atomic_load_n(&src[k], __ATOMIC_RELAXED);
  __atomic_thread_fence(__ATOMIC_ACQUIRE);
  return __atomic_load_n(&slot->seq, __ATOMIC_RELAXED) == index && dst[0] == index;
}

/**
 * Writer, step 1 of 2: marks the slot busy (seq |= bit 63) and orders that store before the
 * payload stores that follow (release fence: a reader that sees any new payload byte then sees
 * the busy bit on its second seq load).
 */
static inline void rpt_claim_slot(rpt_entry *slot) {
  uint64_t old = __atomic_load_n(&slot->seq, __ATOMIC_RELAXED);
  __atomic_store_n(&slot->seq, old | RPT_BUSY_BIT, __ATOMIC_RELAXED);
  __atomic_thread_fence(__ATOMIC_RELEASE);
}

/**
 * Writer: publishes entry index into slot (== rpt_slot(h, index)) with the payload of *e (bytes
 * 8..63; e->seq is ignored): busy bit, payload (relaxed atomic stores), seq = index (release, one
 * 64-bit store that clears the busy bit), then write_ptr = index + 1 (release). Only the single
 * writer may call this.
 */
static inline void rpt_publish_slot(rpt_header *h, rpt_entry *slot, uint64_t index,
                                    const rpt_entry *e) {
  rpt_claim_slot(slot);
  rpt_word *dst = (rpt_word *)slot;
  const rpt_word *src = (const rpt_word *)e;
  for (int k = 1; k < 8; k++) __atomic_store_n(&dst[k], src[k], __ATOMIC_RELAXED);
  __atomic_store_n(&slot->seq, index, __ATOMIC_RELEASE);
  __atomic_store_n(&h->write_ptr, index + 1, __ATOMIC_RELEASE);
}

/** Writer: rpt_publish_slot into the slot of index. */
static inline void rpt_publish(rpt_header *h, uint64_t index, const rpt_entry *e) {
  rpt_publish_slot(h, rpt_slot(h, index), index, e);
}

/* ---- The schema block ------------------------------------------------------------------- */

/** FNV-1a 64 of n bytes: the schema fingerprint. */
static inline uint64_t rpt_fnv1a64(const void *p, size_t n) {
  const unsigned char *b = (const unsigned char *)p;
  uint64_t h = UINT64_C(0xcbf29ce484222325);
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * UINT64_C(0x100000001b3);
  return h;
}

/** Writes the block of schema s (field_count and fields) into out (RPT_SCHEMA_MAX_BLOCK bytes);
 * returns its length. */
static inline size_t rpt_schema_encode(const rpt_schema *s, unsigned char *out) {
  rpt_schema_head head = {RPT_SCHEMA_MAGIC, RPT_SCHEMA_VERSION, (uint16_t)s->field_count};
  memcpy(out, &head, sizeof head);
  memcpy(out + sizeof head, s->fields, s->field_count * sizeof(rpt_schema_field));
  return sizeof head + s->field_count * sizeof(rpt_schema_field);
}

/** Fills s with the default schema (a segment with no block): today's rpt_entry payload. */
static inline void rpt_schema_default(rpt_schema *s) {
  static const rpt_schema_field fields[4] = {
      {"symbol", RPT_T_CHAR, 8, 0, RPT_SYMBOL_OFFSET},
      {"price", RPT_T_I64, 8, 4, RPT_PRICE_OFFSET},
      {"quantity", RPT_T_U32, 4, 0, RPT_QUANTITY_OFFSET},
      {"side", RPT_T_CHAR, 1, 0, RPT_SIDE_OFFSET},
  };
  memset(s, 0, sizeof *s);
  s->is_default = 1;
  s->field_count = 4;
  memcpy(s->fields, fields, sizeof fields);
  unsigned char block[RPT_SCHEMA_MAX_BLOCK];
  s->fingerprint = rpt_fnv1a64(block, rpt_schema_encode(s, block));
}

/** Result of rpt_schema_read. */
typedef enum rpt_schema_check {
  RPT_SCHEMA_OK = 0,
  RPT_SCHEMA_BAD_PLACE,       /* schema_offset is not 0x180, or the block does not fit before
                                 entries_offset */
  RPT_SCHEMA_BAD_FINGERPRINT, /* schema_fingerprint is not the hash of the block */
  RPT_SCHEMA_BAD_HEAD,        /* magic, version, field_count or length is wrong */
  RPT_SCHEMA_BAD_FIELD,       /* a field record breaks a rule (*bad_field is its index) */
} rpt_schema_check;

static inline int rpt_schema_name_char(char c, int first) {
  return (c >= 'a' && c <= 'z') || c == '_' || (!first && c >= '0' && c <= '9');
}

/**
 * Reads and validates the schema of a validated segment (rpt_header_check == RPT_OK) of size
 * bytes into *s, every byte as schema.ts decodeSchemaBlock does. Reads only inside the mapping.
 * On RPT_SCHEMA_BAD_FIELD, *bad_field (if not NULL) is the field's index.
 */
static inline rpt_schema_check rpt_schema_read(const rpt_header *h, uint64_t size, rpt_schema *s,
                                               int *bad_field) {
  if (h->schema_fingerprint == 0 && h->schema_offset == 0 && h->schema_length == 0) {
    rpt_schema_default(s);
    return RPT_SCHEMA_OK;
  }
  uint64_t off = h->schema_offset, len = h->schema_length;
  if (off != RPT_HEADER_SIZE || len < RPT_SCHEMA_FIELDS_OFFSET || off + len > h->entries_offset ||
      off + len > size) {
    return RPT_SCHEMA_BAD_PLACE;
  }
  const unsigned char *block = (const unsigned char *)h + off;
  if (rpt_fnv1a64(block, (size_t)len) != h->schema_fingerprint) return RPT_SCHEMA_BAD_FINGERPRINT;
  rpt_schema_head head;
  memcpy(&head, block, sizeof head);
  if (head.magic != RPT_SCHEMA_MAGIC || head.version != RPT_SCHEMA_VERSION ||
      head.field_count < 1 || head.field_count > RPT_PAYLOAD_SIZE ||
      len != RPT_SCHEMA_FIELDS_OFFSET + (uint64_t)head.field_count * RPT_SCHEMA_FIELD_SIZE) {
    return RPT_SCHEMA_BAD_HEAD;
  }
  static const uint8_t sizes[12] = {0, 1, 2, 4, 8, 1, 2, 4, 8, 4, 8, 0};
  memset(s, 0, sizeof *s);
  s->fingerprint = h->schema_fingerprint;
  s->field_count = head.field_count;
  unsigned at = RPT_PAYLOAD_OFFSET;
  for (unsigned i = 0; i < head.field_count; i++) {
    rpt_schema_field *f = &s->fields[i];
    memcpy(f, block + RPT_SCHEMA_FIELDS_OFFSET + i * RPT_SCHEMA_FIELD_SIZE, sizeof *f);
    if (bad_field) *bad_field = (int)i;
    size_t n = 0;
    while (n < RPT_SCHEMA_NAME_SIZE && f->name[n] != 0) n++;
    if (n < 1 || n > 31) return RPT_SCHEMA_BAD_FIELD;
    for (size_t k = 0; k < n; k++) {
      if (!rpt_schema_name_char(f->name[k], k == 0)) return RPT_SCHEMA_BAD_FIELD;
    }
    for (size_t k = n; k < RPT_SCHEMA_NAME_SIZE; k++) {
      if (f->name[k] != 0) return RPT_SCHEMA_BAD_FIELD;
    }
    if (strcmp(f->name, "seq") == 0 || strcmp(f->name, "timestamp_ns") == 0 ||
        strcmp(f->name, "epoch") == 0) {
      return RPT_SCHEMA_BAD_FIELD;
    }
    for (unsigned j = 0; j < i; j++) {
      if (strcmp(s->fields[j].name, f->name) == 0) return RPT_SCHEMA_BAD_FIELD;
    }
    if (f->type < RPT_T_U8 || f->type > RPT_T_CHAR) return RPT_SCHEMA_BAD_FIELD;
    if (f->type == RPT_T_CHAR ? (f->size < 1 || f->size > RPT_PAYLOAD_SIZE)
                              : f->size != sizes[f->type]) {
      return RPT_SCHEMA_BAD_FIELD;
    }
    if (f->scale > 18 || (f->type >= RPT_T_F32 && f->scale != 0)) return RPT_SCHEMA_BAD_FIELD;
    unsigned align = f->type == RPT_T_CHAR ? 1u : f->size;
    at = (at + align - 1) / align * align;
    if (f->offset != at || at + f->size > RPT_ENTRY_SIZE) return RPT_SCHEMA_BAD_FIELD;
    at += f->size;
  }
  if (bad_field) *bad_field = -1;
  return RPT_SCHEMA_OK;
}

/** A short description of a rpt_schema_check value. */
static inline const char *rpt_schema_check_message(rpt_schema_check c) {
  switch (c) {
  case RPT_SCHEMA_OK: return "valid";
  case RPT_SCHEMA_BAD_PLACE:
    return "its schema block must be at 0x180 and end by entries_offset";
  case RPT_SCHEMA_BAD_FINGERPRINT: return "its schema fingerprint must be the hash of its block";
  case RPT_SCHEMA_BAD_HEAD:
    return "its schema block must start with \"RSCH\", version 1, 1..48 fields, length 8 + 36 x count";
  case RPT_SCHEMA_BAD_FIELD: return "a field of its schema block breaks a rule of schema.ts";
  }
  return "unknown";
}

#endif /* RPT_SHM_H */
