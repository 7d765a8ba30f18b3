/*
 * rpt_shm.h: binary layout v1 of the rpt shared-memory ring, for C11 (GCC or Clang).
 *
 * The contract is specified in docs/ (each rule once): docs/segment.md (header, entry sizes,
 * validation), docs/schema.md (schema blocks v1 and v2), docs/protocol.md (publication, reading,
 * the seq word, lapping and loss accounting, memory ordering, heartbeats), docs/ownership.md
 * (roles and locks). layout.ts restates its numbers for TypeScript; this header restates them
 * for C, and every offset and size below is checked at compile time. tests/interop_test.ts compiles a program that prints
 * RPT_LAYOUT_NUMBERS / RPT_LAYOUT_STRINGS / RPT_LAYOUT_FIELDS as JSON and compares them with
 * layout.ts one by one, and checks a schema built here (rpt_schema_add, its version-2 block and
 * fingerprint) and the simulated values (rpt_sim_field) against schema.ts.
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
 *   entries_offset: slot 0 | slot 1 | ... | slot capacity-1, entry_size bytes each
 *
 * entry_size is a power of two from 64 (one cache line, the default) to 65,536 (RPT_MAX_ENTRY_SIZE);
 * capacity x entry_size is at most 2^30 (RPT_MAX_RING_BYTES); entries_offset is a multiple of 64
 * from 0x180 to 4 MiB (RPT_MAX_ENTRIES_OFFSET); the segment's size is exactly entries_offset +
 * capacity x entry_size. rpt_header_check() checks all of it; every reading path below takes the
 * entry size from the header (rpt_slot, rpt_read_slot), none assumes 64.
 *
 * Slot (entry_size bytes): 0x00 seq u64 | 0x08 timestamp_ns u64 | 0x10 payload, entry_size - 16
 * bytes, laid out by the schema. The rpt_entry struct is a 64-byte slot of the default schema;
 * in a larger slot of the default schema the bytes after 0x40 are zero.
 *
 * Schema block (layout.ts, schema.ts): all three schema words zero means no block and the default
 * schema (symbol char[8] @0x10, price i64 scale 4 @0x18, quantity u32 @0x20, side char[1] @0x24:
 * the rpt_entry struct below). Otherwise schema_offset is 0x180, entries_offset is the first
 * multiple of 64 at or after the block's end (equal to it when the block ends on a multiple of
 * 64), and schema_fingerprint is the FNV-1a 64 hash of the block's
 * bytes. Version 1 (schema_length 8 + 36 x field_count) is written whenever every field ends by
 * entry byte 0x40 and none is bytes[N]; else version 2 (schema_length 8 + 44 x field_count).
 *
 * Version 1:
 *   0x00 magic u32 "RSCH" (0x48435352) | 0x04 version u16 = 1 | 0x06 field_count u16 (1..48)
 *   0x08 + 36 x i, field i (rpt_schema_field):
 *     +0x00 name char[32]  [a-z_][a-z0-9_]*, 1..31 chars, NUL-padded (every byte after the
 *                          name zero); not seq, timestamp_ns or epoch; unique
 *     +0x20 type u8        rpt_type 1..11: 1 u8, 2 u16, 3 u32, 4 u64, 5 i8, 6 i16, 7 i32, 8 i64,
 *                          9 f32, 10 f64, 11 char[N]
 *     +0x21 size u8        1, 2, 4 or 8 as the type; N (1..48) for char[N]
 *     +0x22 scale u8       0..18 for integers (printed with that many decimals); 0 otherwise
 *     +0x23 offset u8      fields in order, natural alignment (1 for char), from 0x10; every
 *                          field ends by 0x40
 *
 * Version 2:
 *   0x00 magic u32 "RSCH" | 0x04 version u16 = 2 | 0x06 field_count u16 (1..65,520)
 *   0x08 + 44 x i, field i (rpt_schema_field_v2):
 *     +0x00 name char[32]  as in version 1
 *     +0x20 type u8        1..11 as in version 1, 12 bytes[N]
 *     +0x21 scale u8       as in version 1
 *     +0x22 reserved u16   zero
 *     +0x24 size u32       bytes the field takes: 1, 2, 4 or 8 as the type; N (1..65,520) for
 *                          char[N]; 4 + N (N 1..65,516) for bytes[N]
 *     +0x28 offset u32     fields in order, natural alignment (1 for char, 4 for bytes), from
 *                          0x10, every field ending by 65,536 and by the segment's entry_size
 *
 * bytes[N] in an entry: at the field's offset a u32 length L (0..N), then N bytes of which the
 * first L are the value and the rest zero. A stored L above N is a damaged entry.
 * rpt_schema_read() validates every byte of a block of either version as schema.ts does.
 *
 * Publication protocol (docs/protocol.md). To write entry i in slot i & (capacity - 1) the writer
 * sets bit 63 of the slot's seq (busy), writes the payload and timestamp, stores seq = i with
 * release (clearing busy), then stores write_ptr = i + 1 with release. This header stores seq = i
 * with one 64-bit release store; the TypeScript writer stores it as two 32-bit atomic stores, the
 * low word and then the high word (which holds the busy bit), so every value in between is busy.
 * A reader loads seq with one 8-byte acquire load (as rpt_read_slot does); a reader without 64-bit
 * atomics loads the high word, then the low word. A reader that sees seq == i before and after
 * copying the slot's entry_size bytes holds a whole, current entry. A never-written slot holds
 * seq = all ones. Heartbeats: the writer stores writer_heartbeat_ns when it takes the segment,
 * every 100 ms while it runs and when it stops; a reader stores its heartbeat every 250 ms.
 *
 * Ownership. A role (the writer, or reader id k) is held by an exclusive open-file-description
 * lock (fcntl F_OFD_SETLK, F_WRLCK, Linux) on its own byte range of the segment's descriptor:
 * the bytes of its owner word (RPT_WRITER_LOCK_OFFSET, RPT_READER_LOCKS_OFFSET + 8k; length
 * RPT_ROLE_LOCK_LENGTH). The kernel drops it when the holder's descriptor closes, kill -9
 * included. The owner word (pid | token << 32) only records who holds the role: take the lock
 * first, then store the word; a role is live exactly while its lock is held (F_OFD_GETLK).
 * rpt_role_lock() / rpt_role_locked() below do this; rpt_claim_role() runs the whole claim (lock,
 * then owner word; a live holder refuses it) as the Deno programs and the C examples do.
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
/** Default size of one entry, and the smallest: one cache line (sizeof(rpt_entry)). */
#define RPT_ENTRY_SIZE 64u
/** Largest entry size: 64 KiB. */
#define RPT_MAX_ENTRY_SIZE 65536u
/** Largest ring: capacity x entry_size may be at most 2^30 bytes (1 GiB). */
#define RPT_MAX_RING_BYTES (UINT64_C(1) << 30)
/** End of the header: the default entries_offset, and the smallest one accepted. */
#define RPT_HEADER_SIZE 0x180u
/** Largest entries_offset accepted: 4 MiB, room for the largest version-2 schema block. */
#define RPT_MAX_ENTRIES_OFFSET (1u << 22)
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
 * "Message format"): the data is `count` whole entries exactly as in the
 * ring, slot by slot (kind "entries": count x entry_size bytes, entry_size being the value of the
 * Rpt-Entry-Size header, 64 when it is absent), nothing (kind "lost": `count` entries from `first`
 * were lapped), or the epoch's schema block (kind "schema", `count` 0). Headers carry these names
 * on every message; values are decimal, the schema fingerprint 16 lowercase hex digits.
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
/** Header holding the epoch's entry_size in decimal (every message); absent means 64. */
#define RPT_STREAM_ENTRY_SIZE_HEADER "Rpt-Entry-Size"
/** Most entries in one message (under the server's default max_payload of 1 MiB). Larger entries
 * take fewer: min(RPT_MAX_STREAM_BATCH, (max_payload - RPT_STREAM_HEADER_ROOM) / entry_size). */
#define RPT_MAX_STREAM_BATCH 16000u
/** Bytes of a message's max_payload kept for its headers. */
#define RPT_STREAM_HEADER_ROOM 1024u

/** Every string layout.ts exports, as X(name, value): the drift test compares them. */
#define RPT_LAYOUT_STRINGS(X)                                                                     \
  X(DEFAULT_NAME, RPT_DEFAULT_NAME)                                                               \
  X(STREAM_KIND_HEADER, RPT_STREAM_KIND_HEADER)                                                   \
  X(STREAM_EPOCH_HEADER, RPT_STREAM_EPOCH_HEADER)                                                 \
  X(STREAM_FIRST_HEADER, RPT_STREAM_FIRST_HEADER)                                                 \
  X(STREAM_COUNT_HEADER, RPT_STREAM_COUNT_HEADER)                                                 \
  X(STREAM_SCHEMA_HEADER, RPT_STREAM_SCHEMA_HEADER)                                               \
  X(STREAM_ENTRY_SIZE_HEADER, RPT_STREAM_ENTRY_SIZE_HEADER)                                       \
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
/** First payload byte of an entry, and payload bytes of a 64-byte entry (0x10..0x3F); an entry
 * of entry_size bytes has entry_size - 16. */
#define RPT_PAYLOAD_OFFSET 0x10u
#define RPT_PAYLOAD_SIZE 48u
/** Bytes of a slot before its payload: seq and timestamp_ns. */
#define RPT_ENTRY_HEADER_SIZE RPT_PAYLOAD_OFFSET

/* Schema block. */
/** "RSCH" read as a little-endian u32. */
#define RPT_SCHEMA_MAGIC 0x48435352u
#define RPT_SCHEMA_VERSION 1u
#define RPT_SCHEMA_FIELDS_OFFSET 8u
#define RPT_SCHEMA_NAME_SIZE 32u
#define RPT_SCHEMA_FIELD_SIZE 36u
#define RPT_SCHEMA_MAX_BLOCK (RPT_SCHEMA_FIELDS_OFFSET + RPT_PAYLOAD_SIZE * RPT_SCHEMA_FIELD_SIZE)
/** Version 2 of the block: a u32 size and offset per field (any entry size, bytes[N]). */
#define RPT_SCHEMA_VERSION_2 2u
/** Bytes per version-2 field record: name, type u8, scale u8, reserved u16, size u32, offset u32. */
#define RPT_SCHEMA_FIELD_SIZE_V2 44u
/** Type code of bytes[N] (version 2 only). */
#define RPT_SCHEMA_TYPE_BYTES 12u
/** Bytes before the data of a bytes[N] field: its u32 length. */
#define RPT_BYTES_LENGTH_SIZE 4u
/** Most fields of a schema (version 2): one byte each in the payload of a 65,536-byte entry. */
#define RPT_SCHEMA_MAX_FIELDS (RPT_MAX_ENTRY_SIZE - RPT_PAYLOAD_OFFSET)

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
  RPT_T_CHAR,
  RPT_T_BYTES
} rpt_type;

/* ---- Structs -------------------------------------------------------------------------------- */

/** The segment header, 0x180 bytes at offset 0. */
typedef struct rpt_header {
  uint64_t write_ptr;                            /* atomic: index of the next entry to write */
  uint64_t read_ptrs[RPT_MAX_READERS];           /* atomic: per reader, next index it will read */
  uint32_t magic;                                /* RPT_MAGIC, release-stored last at creation */
  uint32_t version;                              /* layout version, RPT_VERSION */
  uint32_t capacity;                             /* number of slots, a power of two */
  uint32_t entry_size;                           /* bytes per slot: a power of two, 64..65536 */
  uint32_t entries_offset;                       /* slot 0: 64k >= block end, 0x180..4 MiB */
  uint32_t flags;                                /* reserved, zero in v1 */
  uint64_t epoch;                                /* non-zero incarnation id (creation ns) */
  uint64_t writer_owner;                         /* atomic: writer pid (lo) | token (hi); 0 free */
  uint64_t writer_heartbeat_ns;                  /* atomic: CLOCK_REALTIME ns, every 100 ms */
  uint32_t wake_seq;                             /* atomic: futex word bumped before a wake */
  uint32_t waiters;                              /* atomic: readers blocked on wake_seq */
  uint64_t writer_started_ns;                    /* CLOCK_REALTIME ns when the writer took over */
  uint64_t writer_start_index;                   /* write_ptr when the writer took over */
  uint64_t schema_fingerprint;                   /* FNV-1a 64 of the schema block; 0: no block */
  uint32_t schema_offset;                        /* 0x180, or 0 without a block */
  uint32_t schema_length;                        /* 8 + 36 (v1) or 44 (v2) x count; 0: none */
  uint8_t reserved[0x0C0 - 0x0A0];               /* zero: room for later fields */
  uint64_t reader_owner[RPT_MAX_READERS];        /* atomic: reader pid (lo) | token (hi) per id */
  uint64_t reader_heartbeat_ns[RPT_MAX_READERS]; /* atomic: CLOCK_REALTIME ns, every 250 ms */
  uint64_t reader_lost[RPT_MAX_READERS];         /* entries each reader skipped (lapped) */
} rpt_header;

/** A 64-byte slot of the default schema (any slot starts with seq and timestamp_ns). */
typedef struct rpt_entry {
  uint64_t seq;          /* atomic: the entry's index; bit 63 set while being written */
  uint64_t timestamp_ns; /* CLOCK_REALTIME ns at publication */
  char symbol[RPT_SYMBOL_LENGTH]; /* symbol, NUL-padded (ASCII written; any byte read) */
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

/** One field record of a version-1 schema block: 36 bytes. */
typedef struct rpt_schema_field {
  char name[RPT_SCHEMA_NAME_SIZE]; /* [a-z_][a-z0-9_]*, NUL-padded */
  uint8_t type;                    /* rpt_type */
  uint8_t size;                    /* bytes in the entry */
  uint8_t scale;                   /* decimals printed (integers), else 0 */
  uint8_t offset;                  /* byte offset in the entry */
} rpt_schema_field;

/** One field record of a version-2 schema block: 44 bytes. */
typedef struct rpt_schema_field_v2 {
  char name[RPT_SCHEMA_NAME_SIZE]; /* as in version 1 */
  uint8_t type;                    /* rpt_type, RPT_T_BYTES included */
  uint8_t scale;                   /* decimals printed (integers), else 0 */
  uint16_t reserved;               /* zero */
  uint32_t size;                   /* bytes in the entry: 4 + N for bytes[N] */
  uint32_t offset;                 /* byte offset in the entry */
} rpt_schema_field_v2;

/** One field of a decoded schema, whatever the block's version. */
typedef struct rpt_field {
  char name[RPT_SCHEMA_NAME_SIZE]; /* NUL-terminated */
  uint8_t type;                    /* rpt_type */
  uint8_t scale;                   /* decimals printed (integers), else 0 */
  uint32_t size;                   /* bytes it takes: 1, 2, 4, 8; N for char[N]; 4 + N for bytes[N] */
  uint32_t max_length;             /* N for char[N] and bytes[N], else size */
  uint32_t offset;                 /* byte offset in the entry, from 0x10 */
} rpt_field;

/**
 * A schema: decoded and validated (rpt_schema_read), or built (rpt_schema_add). It holds room for
 * RPT_SCHEMA_MAX_FIELDS fields, about 3 MiB: give it static storage or allocate it.
 */
typedef struct rpt_schema {
  uint64_t fingerprint; /* FNV-1a 64 of the block (of the default block without one) */
  int is_default;       /* 1 when the segment has no block */
  uint32_t version;     /* the block's version, 1 or 2 (1 for the default schema) */
  uint32_t field_count;
  uint32_t end;         /* entry byte just past the last field */
  rpt_field fields[RPT_SCHEMA_MAX_FIELDS];
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
_Static_assert(sizeof(rpt_schema_field_v2) == RPT_SCHEMA_FIELD_SIZE_V2, "schema field record v2");
_Static_assert(offsetof(rpt_schema_field_v2, size) == RPT_SCHEMA_NAME_SIZE + 4, "v2 size");
_Static_assert(RPT_ENTRY_SIZE * 1024u == RPT_MAX_ENTRY_SIZE, "entry sizes 64..65536");
_Static_assert(RPT_T_BYTES == RPT_SCHEMA_TYPE_BYTES, "bytes type code");
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
  X(SCHEMA_VERSION_2, RPT_SCHEMA_VERSION_2)                                                       \
  X(SCHEMA_FIELD_SIZE_V2, sizeof(rpt_schema_field_v2))                                            \
  X(SCHEMA_TYPE_BYTES, RPT_T_BYTES)                                                               \
  X(BYTES_LENGTH_SIZE, RPT_BYTES_LENGTH_SIZE)                                                     \
  X(ENTRY_HEADER_SIZE, RPT_ENTRY_HEADER_SIZE)                                                     \
  X(MAX_ENTRY_SIZE, RPT_MAX_ENTRY_SIZE)                                                           \
  X(MAX_RING_BYTES, RPT_MAX_RING_BYTES)                                                           \
  X(MAX_ENTRIES_OFFSET, RPT_MAX_ENTRIES_OFFSET)                                                   \
  X(STREAM_HEADER_ROOM, RPT_STREAM_HEADER_ROOM)                                                   \
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
  X(rpt_schema_field, offset)                                                                     \
  X(rpt_schema_field_v2, name)                                                                    \
  X(rpt_schema_field_v2, type)                                                                    \
  X(rpt_schema_field_v2, scale)                                                                   \
  X(rpt_schema_field_v2, reserved)                                                                \
  X(rpt_schema_field_v2, size)                                                                    \
  X(rpt_schema_field_v2, offset)

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

/* ---- Claiming a role: the lock, then the owner word (ownership.ts claimRole) ---------------- */

/*
 * Needs POSIX (kill, nanosleep, /proc): define _POSIX_C_SOURCE 200809L (or _DEFAULT_SOURCE,
 * _GNU_SOURCE) before the first #include, as the examples do. Without it this part is left out.
 */
#if defined(_POSIX_C_SOURCE) || defined(_DEFAULT_SOURCE) || defined(_GNU_SOURCE) ||              \
    defined(__APPLE__)
#define RPT_HAVE_CLAIM 1
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

/** The role of rpt_claim_role: RPT_ROLE_WRITER, or a reader id 0..7. */
#define RPT_ROLE_WRITER (-1)

/** The owner word of role (RPT_ROLE_WRITER or a reader id) in the header at h. */
static inline uint64_t *rpt_owner_word(rpt_header *h, int role) {
  return role == RPT_ROLE_WRITER ? &h->writer_owner : &h->reader_owner[role];
}

/** Start of the lock range of role (RPT_ROLE_WRITER or a reader id). */
static inline uint32_t rpt_role_lock_offset(int role) {
  return role == RPT_ROLE_WRITER ? RPT_WRITER_LOCK_OFFSET
                                 : RPT_READER_LOCKS_OFFSET + (uint32_t)role * RPT_ROLE_LOCK_LENGTH;
}

/* Reads /proc/PID/stat: the start-time token (low 32 bits of field 22, never 0) or 0 where it
 * cannot be read; *dying is set when the process is a zombie or has begun to exit (PF_EXITING). */
static inline uint32_t rpt_process_stat(pid_t pid, int *dying) {
  char path[64], buf[1024];
  *dying = 0;
  snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
  int fd = open(path, O_RDONLY);
  if (fd < 0) return 0;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return 0;
  buf[n] = '\0';
  char *p = strrchr(buf, ')');
  if (p == NULL || p[1] == '\0') return 0;
  p += 2;
  char state = p[0];
  unsigned long flags = 0;
  for (int field = 0; field < 19; field++) { /* fields[19] after ") " is field 22 */
    p = strchr(p, ' ');
    if (p == NULL) return 0;
    p++;
    if (field == 5) flags = strtoul(p, NULL, 10); /* fields[6]: flags */
  }
  *dying = state == 'Z' || state == 'X' || state == 'x' || (flags & 0x4u) != 0; /* PF_EXITING */
  char *end;
  unsigned long long start = strtoull(p, &end, 10);
  if (end == p) return 0;
  uint32_t token = (uint32_t)(start % 4294967296ull);
  return token ? token : 1;
}

/** This process's owner word: pid (low u32) | start-time token (high u32), as ownership.ts. */
static inline uint64_t rpt_owner_self(void) {
  int dying;
  pid_t pid = getpid();
  return ((uint64_t)rpt_process_stat(pid, &dying) << 32) | (uint32_t)pid;
}

/* Whether the owner word names a running process: it exists, is neither a zombie nor exiting,
 * and its start time matches the token. */
static inline int rpt_owner_alive(uint64_t word) {
  pid_t pid = (pid_t)(word & 0xffffffffu);
  uint32_t token = (uint32_t)(word >> 32);
  if (pid <= 0) return 0;
  if (kill(pid, 0) != 0 && errno != EPERM) return 0;
  int dying = 0;
  uint32_t now = rpt_process_stat(pid, &dying);
  if (dying) return 0;
  return token == 0 || now == 0 || now == token;
}

/** Outcome of rpt_claim_role. */
typedef enum rpt_claim_result {
  RPT_CLAIM_ERROR = -1, /* fcntl failed: errno is set */
  RPT_CLAIM_TAKEN = 0,  /* the role is this process's until fd is closed (or it dies) */
  RPT_CLAIM_HELD = 1,   /* a live process holds it: claim->holder is its pid */
} rpt_claim_result;

/** What rpt_claim_role found. */
typedef struct rpt_claim {
  uint64_t mine;  /* this process's owner word, stored in the role's owner word when taken */
  pid_t holder;   /* RPT_CLAIM_HELD: pid of the live holder */
  pid_t previous; /* RPT_CLAIM_TAKEN: pid of a dead holder whose word was replaced, 0 if none */
} rpt_claim;

/**
 * Claims role (RPT_ROLE_WRITER or a reader id 0..7) of the segment mapped at h, whose descriptor
 * fd is open O_RDWR: takes its lock (held until fd is closed, or the process dies), then stores
 * this process in the owner word. Refused (RPT_CLAIM_HELD) once the owner word names a running
 * process (seen twice 1 ms apart: a holder killed a moment ago still holds its lock until the
 * kernel closes its descriptors), at the latest after a second. Without open-file-description
 * locks (not Linux): the owner word alone, swapped in with a compare-and-swap.
 */
static inline rpt_claim_result rpt_claim_role(int fd, rpt_header *h, int role, rpt_claim *c) {
  uint64_t *word = rpt_owner_word(h, role);
  c->mine = rpt_owner_self();
  c->holder = 0;
  c->previous = 0;
#if defined(__linux__)
  int seen_alive = 0;
  for (int waited_ms = 0;; waited_ms++) {
    int r = rpt_role_lock(fd, rpt_role_lock_offset(role));
    if (r < 0) return RPT_CLAIM_ERROR;
    if (r == 0) {
      uint64_t previous = __atomic_exchange_n(word, c->mine, __ATOMIC_ACQ_REL);
      if (previous != 0 && previous != c->mine) c->previous = (pid_t)(previous & 0xffffffffu);
      return RPT_CLAIM_TAKEN;
    }
    uint64_t current = __atomic_load_n(word, __ATOMIC_ACQUIRE);
    seen_alive = current != 0 && rpt_owner_alive(current) ? seen_alive + 1 : 0;
    if (seen_alive >= 2 || waited_ms >= 1000) {
      c->holder = (pid_t)(current & 0xffffffffu);
      return RPT_CLAIM_HELD;
    }
    nanosleep(&(struct timespec){0, 1000000L}, NULL);
  }
#else
  (void)fd;
  for (;;) {
    uint64_t current = __atomic_load_n(word, __ATOMIC_ACQUIRE);
    if (current == c->mine) return RPT_CLAIM_TAKEN;
    if (current != 0 && rpt_owner_alive(current)) {
      c->holder = (pid_t)(current & 0xffffffffu);
      return RPT_CLAIM_HELD;
    }
    if (__atomic_compare_exchange_n(word, &current, c->mine, 0, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE)) {
      c->previous = (pid_t)(current & 0xffffffffu);
      return RPT_CLAIM_TAKEN;
    }
  }
#endif
}

/** Clears role's owner word if it still names this claim (the lock goes with the descriptor). */
static inline void rpt_release_role(rpt_header *h, int role, const rpt_claim *c) {
  uint64_t expected = c->mine;
  __atomic_compare_exchange_n(rpt_owner_word(h, role), &expected, 0, 0, __ATOMIC_ACQ_REL,
                              __ATOMIC_ACQUIRE);
}
#endif /* POSIX */

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

/** Byte size of a segment with capacity 64-byte slots and the default entries offset. */
static inline uint64_t rpt_segment_size(uint32_t capacity) {
  return (uint64_t)RPT_HEADER_SIZE + (uint64_t)capacity * RPT_ENTRY_SIZE;
}

/** Byte size of a segment with capacity slots of entry_size bytes after entries_offset. */
static inline uint64_t rpt_segment_size_of(uint32_t capacity, uint32_t entries_offset,
                                           uint32_t entry_size) {
  return (uint64_t)entries_offset + (uint64_t)capacity * entry_size;
}

/** Largest valid segment: RPT_MAX_ENTRIES_OFFSET + RPT_MAX_RING_BYTES. */
static inline uint64_t rpt_max_segment_size(void) {
  return (uint64_t)RPT_MAX_ENTRIES_OFFSET + RPT_MAX_RING_BYTES;
}

/** The entries_offset of a segment whose schema block is block_length bytes (0: no block). */
static inline uint32_t rpt_entries_offset_for(size_t block_length) {
  if (block_length == 0) return RPT_HEADER_SIZE;
  return (uint32_t)((RPT_HEADER_SIZE + block_length + 63) / 64 * 64);
}

/** Whether n is a power of two from 1 to RPT_MAX_CAPACITY. */
static inline int rpt_valid_capacity(uint64_t n) {
  return n >= 1 && n <= RPT_MAX_CAPACITY && (n & (n - 1)) == 0;
}

/** Whether n is a valid entry_size: a power of two from 64 to 65,536. */
static inline int rpt_valid_entry_size(uint64_t n) {
  return n >= RPT_ENTRY_SIZE && n <= RPT_MAX_ENTRY_SIZE && (n & (n - 1)) == 0;
}

/** The slot of entry index in a validated segment mapped at h (entry_size bytes from there; the
 * rpt_entry type gives its seq and timestamp_ns, and the default schema's payload). */
static inline rpt_entry *rpt_slot(rpt_header *h, uint64_t index) {
  return (rpt_entry *)((char *)h + h->entries_offset +
                       (size_t)(index & (uint64_t)(h->capacity - 1)) * h->entry_size);
}

/** A u64 word of a slot that may alias any field (the protocol copies slots word by word). */
typedef uint64_t rpt_word __attribute__((__may_alias__));
typedef uint32_t rpt_word32 __attribute__((__may_alias__));

/** Acquire load of a shared u64 (write_ptr, read_ptrs[k], seq, ...). */
static inline uint64_t rpt_load(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
/** Release store of a shared u64. */
static inline void rpt_store(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

/** Result of rpt_header_check. */
typedef enum rpt_check {
  RPT_OK = 0,
  RPT_BAD_SIZE,           /* smaller than the header, or not entries_offset + capacity x entry_size */
  RPT_BAD_MAGIC,          /* magic is not RPT_MAGIC (0 while the creator is still at work) */
  RPT_BAD_VERSION,        /* version is not RPT_VERSION */
  RPT_BAD_ENTRY_SIZE,     /* entry_size is not a power of two from 64 to 65,536 */
  RPT_BAD_CAPACITY,       /* capacity is not a power of two from 1 to 2^24 */
  RPT_BAD_ENTRIES_OFFSET, /* entries_offset is not a multiple of 64 from 0x180 to 4 MiB */
  RPT_BAD_EPOCH,          /* epoch is 0 */
  RPT_BAD_WRITE_PTR,      /* write_ptr is beyond RPT_MAX_INDEX */
  RPT_BAD_READ_PTR,       /* a read_ptrs[k] is beyond write_ptr */
  RPT_BAD_RING_BYTES,     /* capacity x entry_size is above 2^30 */
} rpt_check;

/**
 * Validates the header of a mapping of size bytes, in the order of layout.ts validateHeader.
 * Reads only inside the mapping. On RPT_BAD_READ_PTR, *bad_reader (if not NULL) is its id.
 */
static inline rpt_check rpt_header_check(const rpt_header *h, uint64_t size, int *bad_reader) {
  if (size < RPT_HEADER_SIZE) return RPT_BAD_SIZE;
  if (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != RPT_MAGIC) return RPT_BAD_MAGIC;
  if (h->version != RPT_VERSION) return RPT_BAD_VERSION;
  if (!rpt_valid_entry_size(h->entry_size)) return RPT_BAD_ENTRY_SIZE;
  if (!rpt_valid_capacity(h->capacity)) return RPT_BAD_CAPACITY;
  if ((uint64_t)h->capacity * h->entry_size > RPT_MAX_RING_BYTES) return RPT_BAD_RING_BYTES;
  if (h->entries_offset < RPT_HEADER_SIZE || h->entries_offset > RPT_MAX_ENTRIES_OFFSET ||
      h->entries_offset % 64u != 0) {
    return RPT_BAD_ENTRIES_OFFSET;
  }
  if (size != rpt_segment_size_of(h->capacity, h->entries_offset, h->entry_size)) {
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
  case RPT_BAD_SIZE: return "its size must be entries_offset + capacity x entry_size bytes";
  case RPT_BAD_MAGIC: return "its magic must be 0x53545052 (\"RPTS\")";
  case RPT_BAD_VERSION: return "its layout version must be 1";
  case RPT_BAD_ENTRY_SIZE: return "its entry_size must be a power of two from 64 to 65536";
  case RPT_BAD_CAPACITY: return "its capacity must be a power of two from 1 to 2^24";
  case RPT_BAD_ENTRIES_OFFSET:
    return "its entries_offset must be a multiple of 64 from 384 to 4194304";
  case RPT_BAD_EPOCH: return "its epoch must be non-zero";
  case RPT_BAD_WRITE_PTR: return "its write_ptr must be at most 2^52-1";
  case RPT_BAD_READ_PTR: return "a read_ptrs[k] must be at most write_ptr";
  case RPT_BAD_RING_BYTES: return "its capacity x entry_size must be at most 2^30 bytes";
  }
  return "unknown";
}

/** The header value rpt_header_check(h, size, &bad_reader) found wrong (size for RPT_BAD_SIZE). */
static inline uint64_t rpt_check_value(const rpt_header *h, uint64_t size, rpt_check c,
                                       int bad_reader) {
  switch (c) {
  case RPT_BAD_MAGIC: return h->magic;
  case RPT_BAD_VERSION: return h->version;
  case RPT_BAD_ENTRY_SIZE: return h->entry_size;
  case RPT_BAD_CAPACITY: return h->capacity;
  case RPT_BAD_ENTRIES_OFFSET: return h->entries_offset;
  case RPT_BAD_EPOCH: return h->epoch;
  case RPT_BAD_WRITE_PTR: return h->write_ptr;
  case RPT_BAD_READ_PTR: return h->read_ptrs[bad_reader];
  case RPT_BAD_RING_BYTES: return (uint64_t)h->capacity * h->entry_size;
  default: return size;
  }
}

/**
 * Initialises a zero-filled mapping of rpt_segment_size_of(capacity, rpt_entries_offset_for(
 * block_length), entry_size) bytes as a fresh segment: the schema block (block_length bytes at
 * 0x180, none when 0) with its place and fingerprint, the header fields, every slot's seq = all
 * ones, then the magic with a release store (last).
 */
static inline void rpt_segment_init(rpt_header *h, uint32_t capacity, uint32_t entry_size,
                                    uint64_t epoch, const unsigned char *block,
                                    size_t block_length);

/** rpt_segment_init of 64-byte entries and the default schema (no block). */
static inline void rpt_header_init(rpt_header *h, uint32_t capacity, uint64_t epoch) {
  rpt_segment_init(h, capacity, RPT_ENTRY_SIZE, epoch, NULL, 0);
}

/**
 * Reader: copies entry index out of its slot (entry_size bytes, a multiple of 8) into out and
 * validates the copy. Returns 1 when out holds entry index, whole and current; 0 when the slot
 * holds another entry (not yet written, being written, or overwritten: lapped) and out must be
 * ignored.
 *
 * seq is loaded with acquire before the copy; the bytes are copied with relaxed atomic loads
 * (plain moves on x86-64 and AArch64, and no data race in C11 terms); an acquire fence orders the
 * copy before the second load of seq.
 */
static inline int rpt_read_slot(const void *slot, uint64_t index, void *out, uint32_t entry_size) {
  const rpt_word *src = (const rpt_word *)slot;
  if (__atomic_load_n(&src[0], __ATOMIC_ACQUIRE) != index) return 0;
  rpt_word *dst = (rpt_word *)out;
  const uint32_t words = entry_size / 8;
  for (uint32_t k = 0; k < words; k++) dst[k] = __atomic_load_n(&src[k], __ATOMIC_RELAXED);
  __atomic_thread_fence(__ATOMIC_ACQUIRE);
  return __atomic_load_n(&src[0], __ATOMIC_RELAXED) == index && dst[0] == index;
}

/** rpt_read_slot of the first 64 bytes: a whole entry of the default schema in any slot size. */
static inline int rpt_read_entry(const rpt_entry *slot, uint64_t index, rpt_entry *out) {
  return rpt_read_slot(slot, index, out, RPT_ENTRY_SIZE);
}

/**
 * Writer, step 1 of 3: marks the slot busy (seq |= bit 63) and orders that store before the
 * payload stores that follow (release fence: a reader that sees any new payload byte then sees
 * the busy bit on its second seq load).
 */
static inline void rpt_claim_slot(rpt_entry *slot) {
  uint64_t old = __atomic_load_n(&slot->seq, __ATOMIC_RELAXED);
  __atomic_store_n(&slot->seq, old | RPT_BUSY_BIT, __ATOMIC_RELAXED);
  __atomic_thread_fence(__ATOMIC_RELEASE);
}

/**
 * Writer, step 2 of 3 (any number of times): stores n bytes from src at dst inside a claimed
 * slot with relaxed atomic stores (u64 words where aligned, else u32 and u8), so that a reader's
 * concurrent copy is no data race. src may have any alignment.
 */
static inline void rpt_store_bytes(void *dst, const void *src, size_t n) {
  unsigned char *d = (unsigned char *)dst;
  const unsigned char *s = (const unsigned char *)src;
  while (n > 0 && ((uintptr_t)d & 7u) != 0) {
    if (((uintptr_t)d & 3u) == 0 && n >= 4) {
      uint32_t v;
      memcpy(&v, s, 4);
      __atomic_store_n((rpt_word32 *)d, v, __ATOMIC_RELAXED);
      d += 4, s += 4, n -= 4;
    } else {
      __atomic_store_n(d, *s, __ATOMIC_RELAXED);
      d++, s++, n--;
    }
  }
  for (; n >= 8; d += 8, s += 8, n -= 8) {
    uint64_t v;
    memcpy(&v, s, 8);
    __atomic_store_n((rpt_word *)d, v, __ATOMIC_RELAXED);
  }
  if (n >= 4) {
    uint32_t v;
    memcpy(&v, s, 4);
    __atomic_store_n((rpt_word32 *)d, v, __ATOMIC_RELAXED);
    d += 4, s += 4, n -= 4;
  }
  for (; n > 0; d++, s++, n--) __atomic_store_n(d, *s, __ATOMIC_RELAXED);
}

/** Writer, step 2: stores n zero bytes at dst inside a claimed slot (as rpt_store_bytes). */
static inline void rpt_store_zeros(void *dst, size_t n) {
  static const unsigned char zeros[256];
  unsigned char *d = (unsigned char *)dst;
  for (; n > sizeof zeros; d += sizeof zeros, n -= sizeof zeros) {
    rpt_store_bytes(d, zeros, sizeof zeros);
  }
  rpt_store_bytes(d, zeros, n);
}

/**
 * Writer, step 3 of 3: publishes the claimed slot (== rpt_slot(h, index)) as entry index: seq =
 * index (release, one 64-bit store that clears the busy bit), then write_ptr = index + 1
 * (release). Only the single writer may call this.
 */
static inline void rpt_commit_slot(rpt_header *h, rpt_entry *slot, uint64_t index) {
  __atomic_store_n(&slot->seq, index, __ATOMIC_RELEASE);
  __atomic_store_n(&h->write_ptr, index + 1, __ATOMIC_RELEASE);
}

/**
 * Writer: publishes entry index into slot (== rpt_slot(h, index)) with bytes 8..length-1 of image
 * (timestamp_ns, then the payload; length a multiple of 8 from 16 to entry_size; image's seq is
 * ignored; the slot's bytes past length are left as they are): claim, relaxed atomic stores,
 * commit.
 */
static inline void rpt_publish_image(rpt_header *h, rpt_entry *slot, uint64_t index,
                                     const void *image, uint32_t length) {
  rpt_claim_slot(slot);
  rpt_word *dst = (rpt_word *)slot;
  const rpt_word *src = (const rpt_word *)image;
  for (uint32_t k = 1; k < length / 8; k++) __atomic_store_n(&dst[k], src[k], __ATOMIC_RELAXED);
  rpt_commit_slot(h, slot, index);
}

/** Writer: rpt_publish_image of a 64-byte entry *e (the default schema; bytes past 0x40 of a
 * larger slot stay zero). */
static inline void rpt_publish_slot(rpt_header *h, rpt_entry *slot, uint64_t index,
                                    const rpt_entry *e) {
  rpt_publish_image(h, slot, index, e, RPT_ENTRY_SIZE);
}

/** Writer: rpt_publish_slot into the slot of index. */
static inline void rpt_publish(rpt_header *h, uint64_t index, const rpt_entry *e) {
  rpt_publish_slot(h, rpt_slot(h, index), index, e);
}

/* ---- The schema block ------------------------------------------------------------------- */

/** FNV-1a 64 of n bytes, continuing from hash h (start with RPT_FNV_OFFSET). */
#define RPT_FNV_OFFSET UINT64_C(0xcbf29ce484222325)
static inline uint64_t rpt_fnv1a64_more(uint64_t h, const void *p, size_t n) {
  const unsigned char *b = (const unsigned char *)p;
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * UINT64_C(0x100000001b3);
  return h;
}

/** FNV-1a 64 of n bytes: the schema fingerprint. */
static inline uint64_t rpt_fnv1a64(const void *p, size_t n) {
  return rpt_fnv1a64_more(RPT_FNV_OFFSET, p, n);
}

/** Bytes a scalar type takes (0 for char and bytes, whose size comes from N). */
static inline uint32_t rpt_scalar_size(unsigned type) {
  static const uint8_t sizes[13] = {0, 1, 2, 4, 8, 1, 2, 4, 8, 4, 8, 0, 0};
  return type < 13 ? sizes[type] : 0;
}

/** Whether type is an integer type (u8..i64): the only ones with a scale. */
static inline int rpt_type_is_integer(unsigned type) {
  return type >= RPT_T_U8 && type <= RPT_T_I64;
}

/** Alignment of a field of type taking size bytes: 1 for char, 4 for bytes, else its size. */
static inline uint32_t rpt_field_align(unsigned type, uint32_t size) {
  return type == RPT_T_CHAR ? 1u : type == RPT_T_BYTES ? RPT_BYTES_LENGTH_SIZE : size;
}

/** Bytes of a block of version `version` with count fields. */
static inline size_t rpt_schema_block_length(uint32_t version, uint32_t count) {
  return RPT_SCHEMA_FIELDS_OFFSET +
         (size_t)count * (version == 1 ? RPT_SCHEMA_FIELD_SIZE : RPT_SCHEMA_FIELD_SIZE_V2);
}

/** Writes field f's record of a block of version `version` into out (36 or 44 bytes). */
static inline size_t rpt_schema_encode_field(const rpt_field *f, uint32_t version,
                                             unsigned char *out) {
  size_t name_length = 0;
  while (name_length < RPT_SCHEMA_NAME_SIZE - 1 && f->name[name_length] != 0) name_length++;
  if (version == 1) {
    rpt_schema_field r;
    memset(&r, 0, sizeof r);
    memcpy(r.name, f->name, name_length);
    r.type = f->type;
    r.size = (uint8_t)f->size;
    r.scale = f->scale;
    r.offset = (uint8_t)f->offset;
    memcpy(out, &r, sizeof r);
    return sizeof r;
  }
  rpt_schema_field_v2 r;
  memset(&r, 0, sizeof r);
  memcpy(r.name, f->name, name_length);
  r.type = f->type;
  r.scale = f->scale;
  r.size = f->size;
  r.offset = f->offset;
  memcpy(out, &r, sizeof r);
  return sizeof r;
}

/** Writes the block of schema s (its version, field_count and fields) into out, which has room
 * for rpt_schema_block_length(s->version, s->field_count) bytes; returns its length. */
static inline size_t rpt_schema_encode(const rpt_schema *s, unsigned char *out) {
  rpt_schema_head head = {RPT_SCHEMA_MAGIC, (uint16_t)s->version, (uint16_t)s->field_count};
  memcpy(out, &head, sizeof head);
  size_t n = sizeof head;
  for (uint32_t i = 0; i < s->field_count; i++) {
    n += rpt_schema_encode_field(&s->fields[i], s->version, out + n);
  }
  return n;
}

/** Starts building a schema in s (then rpt_schema_add each field, then rpt_schema_finish). */
static inline void rpt_schema_begin(rpt_schema *s) {
  s->fingerprint = 0;
  s->is_default = 0;
  s->version = 1;
  s->field_count = 0;
  s->end = RPT_PAYLOAD_OFFSET;
}

/**
 * Appends field name of type (n: N for RPT_T_CHAR and RPT_T_BYTES, ignored otherwise) with scale
 * to s, laid out as schema.ts defineSchema does: in order, natural alignment, from 0x10. Returns
 * 0, or -1 when it breaks a size rule (N out of range, past 65,536 bytes, too many fields) or a
 * scale rule; the name is the caller's to check (rpt_schema_read checks every rule).
 */
static inline int rpt_schema_add(rpt_schema *s, const char *name, rpt_type type, uint32_t n,
                                 unsigned scale) {
  if (s->field_count >= RPT_SCHEMA_MAX_FIELDS || type < RPT_T_U8 || type > RPT_T_BYTES) return -1;
  if (scale > 18 || (scale != 0 && !rpt_type_is_integer(type))) return -1;
  const uint32_t max_payload = RPT_MAX_ENTRY_SIZE - RPT_PAYLOAD_OFFSET;
  uint32_t size = rpt_scalar_size(type), max_length = size;
  if (type == RPT_T_CHAR || type == RPT_T_BYTES) {
    uint32_t most = type == RPT_T_CHAR ? max_payload : max_payload - RPT_BYTES_LENGTH_SIZE;
    if (n < 1 || n > most) return -1;
    max_length = n;
    size = type == RPT_T_CHAR ? n : RPT_BYTES_LENGTH_SIZE + n;
  }
  uint32_t align = rpt_field_align(type, size);
  uint64_t at = ((uint64_t)s->end + align - 1) / align * align;
  if (at + size > RPT_MAX_ENTRY_SIZE) return -1;
  rpt_field *f = &s->fields[s->field_count++];
  memset(f, 0, sizeof *f);
  for (size_t c = 0; c < RPT_SCHEMA_NAME_SIZE - 1 && name[c] != 0; c++) f->name[c] = name[c];
  f->type = (uint8_t)type;
  f->scale = (uint8_t)scale;
  f->size = size;
  f->max_length = max_length;
  f->offset = (uint32_t)at;
  s->end = (uint32_t)(at + size);
  return 0;
}

/** Finishes building s: version 1 when every field ends by 0x40 and none is bytes, else 2; the
 * fingerprint of its block. */
static inline void rpt_schema_finish(rpt_schema *s) {
  s->version = 1;
  for (uint32_t i = 0; i < s->field_count; i++) {
    const rpt_field *f = &s->fields[i];
    if (f->type == RPT_T_BYTES || f->offset + f->size > RPT_ENTRY_SIZE) s->version = 2;
  }
  rpt_schema_head head = {RPT_SCHEMA_MAGIC, (uint16_t)s->version, (uint16_t)s->field_count};
  uint64_t h = rpt_fnv1a64_more(RPT_FNV_OFFSET, &head, sizeof head);
  unsigned char record[RPT_SCHEMA_FIELD_SIZE_V2];
  for (uint32_t i = 0; i < s->field_count; i++) {
    h = rpt_fnv1a64_more(h, record, rpt_schema_encode_field(&s->fields[i], s->version, record));
  }
  s->fingerprint = h;
}

/** Fills s with the default schema (a segment with no block): today's rpt_entry payload. */
static inline void rpt_schema_default(rpt_schema *s) {
  rpt_schema_begin(s);
  rpt_schema_add(s, "symbol", RPT_T_CHAR, RPT_SYMBOL_LENGTH, 0);
  rpt_schema_add(s, "price", RPT_T_I64, 0, 4);
  rpt_schema_add(s, "quantity", RPT_T_U32, 0, 0);
  rpt_schema_add(s, "side", RPT_T_CHAR, 1, 0);
  rpt_schema_finish(s);
  s->is_default = 1;
}

/** Result of rpt_schema_read. */
typedef enum rpt_schema_check {
  RPT_SCHEMA_OK = 0,
  RPT_SCHEMA_BAD_PLACE,       /* schema_offset is not 0x180, or the block does not fit before
                                 entries_offset */
  RPT_SCHEMA_BAD_FINGERPRINT, /* schema_fingerprint is not the hash of the block */
  RPT_SCHEMA_BAD_HEAD,        /* magic, version, field_count or length is wrong */
  RPT_SCHEMA_BAD_FIELD,       /* a field record breaks a rule */
  RPT_SCHEMA_BAD_FIT,         /* the fields end past the segment's entry_size */
} rpt_schema_check;

/** Why rpt_schema_read refused a block: the rule broken and the value found. */
typedef struct rpt_schema_problem {
  rpt_schema_check check;
  int field;        /* index of the field (RPT_SCHEMA_BAD_FIELD), else -1 */
  uint32_t version; /* the block's version when known, else 0 */
  const char *rule; /* what must hold, e.g. "type code must be 1..12" */
  uint64_t value;   /* the value found */
  int hex;          /* print value in hex */
} rpt_schema_problem;

static inline int rpt_schema_name_char(char c, int first) {
  return (c >= 'a' && c <= 'z') || c == '_' || (!first && c >= '0' && c <= '9');
}

static inline rpt_schema_check rpt_schema_fail(rpt_schema_problem *p, rpt_schema_check c,
                                               int field, const char *rule, uint64_t value,
                                               int hex) {
  if (p) {
    p->check = c;
    p->field = field;
    p->rule = rule;
    p->value = value;
    p->hex = hex;
  }
  return c;
}

/* Checks field i's name (its 32 bytes at name): the rules of schema.ts, or a rule string. */
static inline const char *rpt_schema_name_rule(const char *name, uint64_t *value) {
  size_t n = 0;
  while (n < RPT_SCHEMA_NAME_SIZE && name[n] != 0) n++;
  *value = n;
  if (n < 1 || n > 31) return "name length must be 1..31";
  for (size_t k = 0; k < n; k++) {
    *value = (unsigned char)name[k];
    if (!rpt_schema_name_char(name[k], k == 0)) {
      return k == 0 ? "name must start with [a-z_] (byte value)"
                    : "name must continue with [a-z0-9_] (byte value)";
    }
  }
  for (size_t k = n; k < RPT_SCHEMA_NAME_SIZE; k++) {
    *value = k;
    if (name[k] != 0) return "name must be NUL-padded: byte index after the NUL is not zero";
  }
  *value = n;
  if (strcmp(name, "seq") == 0 || strcmp(name, "timestamp_ns") == 0 ||
      strcmp(name, "epoch") == 0) {
    return "name must not be seq, timestamp_ns or epoch (name length)";
  }
  return NULL;
}

/* Whether name (NUL-terminated) is already in table (open addressing over field indices + 1). */
static inline int rpt_schema_name_seen(const rpt_schema *s, uint32_t *table, uint32_t mask,
                                       const char *name, uint32_t index) {
  uint32_t h = (uint32_t)rpt_fnv1a64(name, strlen(name)) & mask;
  for (; table[h] != 0; h = (h + 1) & mask) {
    if (strcmp(s->fields[table[h] - 1].name, name) == 0) return 1;
  }
  table[h] = index + 1;
  return 0;
}

/* Decodes and checks record i of a block of version v at rec into s->fields[i] at entry byte *at. */
static inline rpt_schema_check rpt_schema_field_read(rpt_schema *s, uint32_t v, uint32_t i,
                                                     const unsigned char *rec, uint32_t *at,
                                                     rpt_schema_problem *p) {
  rpt_field *f = &s->fields[i];
  uint64_t value = 0;
  memset(f, 0, sizeof *f);
  const char *rule = rpt_schema_name_rule((const char *)rec, &value);
  if (rule) return rpt_schema_fail(p, RPT_SCHEMA_BAD_FIELD, (int)i, rule, value, 0);
  memcpy(f->name, rec, RPT_SCHEMA_NAME_SIZE);
  uint32_t size, offset;
  uint16_t reserved = 0;
  f->type = rec[32];
  if (v == 1) {
    size = rec[33], f->scale = rec[34], offset = rec[35];
  } else {
    f->scale = rec[33];
    memcpy(&reserved, rec + 34, 2);
    memcpy(&size, rec + 36, 4);
    memcpy(&offset, rec + 40, 4);
  }
  const int F = RPT_SCHEMA_BAD_FIELD;
  if (f->type < RPT_T_U8 || f->type > (v == 1 ? RPT_T_CHAR : RPT_T_BYTES)) {
    return rpt_schema_fail(p, F, (int)i,
                           v == 1 ? "type code must be 1..11" : "type code must be 1..12",
                           f->type, 0);
  }
  const uint32_t max_payload = RPT_MAX_ENTRY_SIZE - RPT_PAYLOAD_OFFSET;
  if (f->type == RPT_T_CHAR) {
    if (size < 1 || size > max_payload) {
      return rpt_schema_fail(p, F, (int)i, "size of char[N] must be N, 1..65520", size, 0);
    }
    f->max_length = size;
  } else if (f->type == RPT_T_BYTES) {
    if (size < RPT_BYTES_LENGTH_SIZE + 1 || size > max_payload) {
      return rpt_schema_fail(p, F, (int)i, "size of bytes[N] must be 4 + N, N 1..65516", size, 0);
    }
    f->max_length = size - RPT_BYTES_LENGTH_SIZE;
  } else {
    if (size != rpt_scalar_size(f->type)) {
      return rpt_schema_fail(p, F, (int)i, "size must be the type's (1, 2, 4 or 8)", size, 0);
    }
    f->max_length = size;
  }
  f->size = size;
  if (f->scale > 18 || (f->scale != 0 && !rpt_type_is_integer(f->type))) {
    return rpt_schema_fail(p, F, (int)i, "scale must be 0..18, and 0 unless an integer type",
                           f->scale, 0);
  }
  if (reserved != 0) return rpt_schema_fail(p, F, (int)i, "reserved u16 must be 0", reserved, 0);
  uint32_t align = rpt_field_align(f->type, size);
  uint64_t want = ((uint64_t)*at + align - 1) / align * align;
  if (offset != want) {
    return rpt_schema_fail(p, F, (int)i,
                           "offset must follow the previous field with natural alignment",
                           offset, 0);
  }
  if (want + size > (v == 1 ? RPT_ENTRY_SIZE : RPT_MAX_ENTRY_SIZE)) {
    return rpt_schema_fail(p, F, (int)i,
                           v == 1 ? "end (offset + size) must be at most 64 in version 1"
                                  : "end (offset + size) must be at most 65536",
                           want + size, 0);
  }
  f->offset = offset;
  *at = (uint32_t)(want + size);
  return RPT_SCHEMA_OK;
}

/* Checks the block's first 8 bytes and its length; sets s's version and field_count. */
static inline rpt_schema_check rpt_schema_head_read(rpt_schema *s, const unsigned char *block,
                                                    uint64_t len, rpt_schema_problem *p) {
  rpt_schema_head head;
  memcpy(&head, block, sizeof head);
  const int H = RPT_SCHEMA_BAD_HEAD;
  if (head.magic != RPT_SCHEMA_MAGIC) {
    return rpt_schema_fail(p, H, -1, "its schema block magic must be 0x48435352 (\"RSCH\")",
                           head.magic, 1);
  }
  if (head.version != 1 && head.version != 2) {
    return rpt_schema_fail(p, H, -1, "its schema block version must be 1 or 2", head.version, 0);
  }
  s->version = head.version;
  if (p) p->version = head.version;
  uint32_t most = head.version == 1 ? RPT_PAYLOAD_SIZE : RPT_SCHEMA_MAX_FIELDS;
  if (head.field_count < 1 || head.field_count > most) {
    return rpt_schema_fail(p, H, -1,
                           head.version == 1 ? "its schema block field_count must be 1..48"
                                             : "its schema block field_count must be 1..65520",
                           head.field_count, 0);
  }
  if (len != rpt_schema_block_length(head.version, head.field_count)) {
    return rpt_schema_fail(p, H, -1,
                           head.version == 1
                               ? "its schema block length must be 8 + 36 x field_count"
                               : "its schema block length must be 8 + 44 x field_count",
                           len, 0);
  }
  s->field_count = head.field_count;
  return RPT_SCHEMA_OK;
}

/**
 * Reads and validates the schema of a validated segment (rpt_header_check == RPT_OK) of size
 * bytes into *s, every byte as schema.ts decodeSchemaBlock and readSchema do: place, hash, head,
 * then every field (name, type code, size, scale, reserved, offset), and the fields must fit the
 * segment's entry_size. Reads only inside the mapping. On failure *why (if not NULL) names the
 * rule and the value (rpt_schema_problem_text prints it). Not reentrant: it checks that names are
 * unique with a static table (512 KiB), so call it from one thread at a time.
 */
static inline rpt_schema_check rpt_schema_read(const rpt_header *h, uint64_t size, rpt_schema *s,
                                               rpt_schema_problem *why) {
  static uint32_t names[2u * 65536u]; /* name table: field index + 1, 0 empty */
  if (why) why->version = 0;
  if (h->schema_fingerprint == 0 && h->schema_offset == 0 && h->schema_length == 0) {
    rpt_schema_default(s);
    return RPT_SCHEMA_OK;
  }
  uint64_t off = h->schema_offset, len = h->schema_length;
  const int P = RPT_SCHEMA_BAD_PLACE;
  if (off != RPT_HEADER_SIZE) {
    return rpt_schema_fail(why, P, -1, "its schema_offset must be 0x180 (or 0 for no block)", off,
                           0);
  }
  if (len < RPT_SCHEMA_FIELDS_OFFSET || off + len > h->entries_offset || off + len > size) {
    return rpt_schema_fail(why, P, -1,
                           "its schema block length must fit between 0x180 and entries_offset",
                           len, 0);
  }
  const unsigned char *block = (const unsigned char *)h + off;
  if (rpt_fnv1a64(block, (size_t)len) != h->schema_fingerprint) {
    return rpt_schema_fail(why, RPT_SCHEMA_BAD_FINGERPRINT, -1,
                           "its schema fingerprint must be the hash of its block",
                           h->schema_fingerprint, 1);
  }
  rpt_schema_check c = rpt_schema_head_read(s, block, len, why);
  if (c != RPT_SCHEMA_OK) return c;
  s->fingerprint = h->schema_fingerprint;
  s->is_default = 0;
  uint32_t mask = 1;
  while (mask < 2 * s->field_count) mask <<= 1;
  memset(names, 0, mask * sizeof *names);
  mask--;
  const size_t record = s->version == 1 ? RPT_SCHEMA_FIELD_SIZE : RPT_SCHEMA_FIELD_SIZE_V2;
  uint32_t at = RPT_PAYLOAD_OFFSET;
  for (uint32_t i = 0; i < s->field_count; i++) {
    c = rpt_schema_field_read(s, s->version, i, block + RPT_SCHEMA_FIELDS_OFFSET + i * record, &at,
                              why);
    if (c != RPT_SCHEMA_OK) return c;
    if (rpt_schema_name_seen(s, names, mask, s->fields[i].name, i)) {
      return rpt_schema_fail(why, RPT_SCHEMA_BAD_FIELD, (int)i,
                             "name must be unique (name length)", strlen(s->fields[i].name), 0);
    }
  }
  s->end = at;
  if (at > h->entry_size) {
    return rpt_schema_fail(why, RPT_SCHEMA_BAD_FIT, -1,
                           "its schema's fields must end by its entry_size (field end)", at, 0);
  }
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
    return "its schema block must start with \"RSCH\", version 1 or 2, a field count and the "
           "matching length";
  case RPT_SCHEMA_BAD_FIELD: return "a field of its schema block breaks a rule of schema.ts";
  case RPT_SCHEMA_BAD_FIT: return "its schema's fields must end by its entry_size";
  }
  return "unknown";
}

/**
 * Writes why's message into buf (n bytes): "<rule>: current value is <value>", prefixed with
 * "field <i> of its schema block (version <v>) " for a field. Returns buf.
 */
static inline char *rpt_schema_problem_text(const rpt_schema_problem *why, char *buf, size_t n) {
  char value[32];
  snprintf(value, sizeof value, why->hex ? "0x%llx" : "%llu", (unsigned long long)why->value);
  if (why->field >= 0) {
    snprintf(buf, n, "field %d of its schema block (version %u) %s: current value is %s",
             why->field, why->version, why->rule, value);
  } else {
    snprintf(buf, n, "%s: current value is %s", why->rule, value);
  }
  return buf;
}

/* ---- bytes[N] fields ------------------------------------------------------------------------ */

/** The stored length L of bytes field f in an entry (a copy, or a claimed slot of this writer). */
static inline uint32_t rpt_bytes_length(const void *entry, const rpt_field *f) {
  uint32_t len;
  memcpy(&len, (const unsigned char *)entry + f->offset, 4);
  return len;
}

/**
 * Writer, step 2: stores value (len bytes, len <= N) into bytes[N] field f of a claimed slot:
 * the u32 length, the bytes, then zeros up to N (schema.ts writeBytes). Returns -1, storing
 * nothing, when len > N.
 */
static inline int rpt_set_bytes(rpt_entry *slot, const rpt_field *f, const void *value,
                                uint32_t len) {
  if (len > f->max_length) return -1;
  unsigned char *at = (unsigned char *)slot + f->offset;
  __atomic_store_n((rpt_word32 *)at, len, __ATOMIC_RELAXED);
  rpt_store_bytes(at + RPT_BYTES_LENGTH_SIZE, value, len);
  if (len < f->max_length) rpt_store_zeros(at + RPT_BYTES_LENGTH_SIZE + len, f->max_length - len);
  return 0;
}

/* ---- Segment creation --------------------------------------------------------------------- */

static inline void rpt_segment_init(rpt_header *h, uint32_t capacity, uint32_t entry_size,
                                    uint64_t epoch, const unsigned char *block,
                                    size_t block_length) {
  h->version = RPT_VERSION;
  h->capacity = capacity;
  h->entry_size = entry_size;
  h->entries_offset = rpt_entries_offset_for(block_length);
  h->flags = 0;
  h->epoch = epoch;
  if (block_length > 0) {
    memcpy((unsigned char *)h + RPT_HEADER_SIZE, block, block_length);
    h->schema_fingerprint = rpt_fnv1a64(block, block_length);
    h->schema_offset = RPT_HEADER_SIZE;
    h->schema_length = (uint32_t)block_length;
  }
  for (uint32_t i = 0; i < capacity; i++) rpt_slot(h, i)->seq = RPT_SEQ_EMPTY;
  __atomic_store_n(&h->magic, RPT_MAGIC, __ATOMIC_RELEASE);
}

/* ---- The simulated writer's values for any schema (schema.ts simulatedValue) --------------- */

/** Period of the simulated values: field i of entry seq holds the values of (seq + i) mod 1024. */
#define RPT_SIM_PERIOD 1024u

/**
 * Writes into field f (index i of its schema) of the entry image at entry the value the simulated
 * writer stores for entry seq, as schema.ts simulatedValue (integers: the stored units). With
 * k = (seq + i) mod 1024 and h = (k x 2654435761 + 40503 x i) mod 2^32: integers take the k-th of
 * their special values, else h reduced to the type (64-bit: h x 2^32 + (h ^ 0x9e3779b9)); floats
 * the k-th of 11 specials, else (h / 2^32 - 0.5) x 10^(k mod 41 - 20); char[N] k mod (N + 1)
 * characters, the j-th being "AZaz09 ,\"\0-_.;:|"[(k + 7j) mod 16]; bytes[N] k mod (N + 1)
 * bytes, the j-th being (k + 7j + 31i) mod 256. The rest of a char or bytes field is zeroed.
 */
static inline void rpt_sim_field(const rpt_field *f, uint32_t i, uint64_t seq,
                                 unsigned char *entry) {
  static const char chars[17] = "AZaz09 ,\"\0-_.;:|";
  static const double f64[11] = {__builtin_nan(""), __builtin_inf(), -__builtin_inf(), -0.0, 0.0,
                                 5e-324, 2.225073858507201e-308, 1.7976931348623157e308,
                                 2.2250738585072014e-308, 1.0 / 3.0, -2.5};
  static const double pow10[41] = {1e-20, 1e-19, 1e-18, 1e-17, 1e-16, 1e-15, 1e-14, 1e-13, 1e-12,
                                   1e-11, 1e-10, 1e-9,  1e-8,  1e-7,  1e-6,  1e-5,  1e-4,  1e-3,
                                   1e-2,  1e-1,  1e0,   1e1,   1e2,   1e3,   1e4,   1e5,   1e6,
                                   1e7,   1e8,   1e9,   1e10,  1e11,  1e12,  1e13,  1e14,  1e15,
                                   1e16,  1e17,  1e18,  1e19,  1e20};
  const uint32_t k = (uint32_t)((seq + i) % RPT_SIM_PERIOD);
  const uint32_t h = k * 2654435761u + 40503u * i;
  unsigned char *at = entry + f->offset;
  switch ((rpt_type)f->type) {
  case RPT_T_BYTES: {
    uint32_t len = k % (f->max_length + 1);
    memcpy(at, &len, 4);
    for (uint32_t j = 0; j < len; j++) at[4 + j] = (unsigned char)(k + 7 * j + 31 * i);
    memset(at + 4 + len, 0, f->max_length - len);
    return;
  }
  case RPT_T_CHAR: {
    uint32_t len = k % (f->max_length + 1);
    for (uint32_t j = 0; j < len; j++) at[j] = (unsigned char)chars[(k + 7 * j) % 16];
    memset(at + len, 0, f->max_length - len);
    return;
  }
  case RPT_T_F32:
  case RPT_T_F64: {
    double v = k < 11 ? f64[k] : ((double)h / 4294967296.0 - 0.5) * pow10[k % 41];
    if (f->type == RPT_T_F64) {
      memcpy(at, &v, 8);
    } else {
      float x = k == 5 ? 1.401298464324817e-45f
              : k == 6 ? (float)1.1754942106924411e-38
              : k == 7 ? (float)3.4028234663852886e38
              : k == 8 ? (float)1.1754943508222875e-38
                       : (float)v;
      memcpy(at, &x, 4);
    }
    return;
  }
  case RPT_T_U64:
  case RPT_T_I64: {
    static const uint64_t u[6] = {0, 1, UINT64_MAX, UINT64_MAX - 1, (UINT64_C(1) << 53) + 1,
                                  UINT64_C(10000000000000000000)};
    static const uint64_t s[6] = {0, UINT64_C(1) << 63, INT64_MAX, UINT64_MAX,
                                  (UINT64_C(1) << 63) + 1, (uint64_t)(-(INT64_C(1) << 53) - 1)};
    uint64_t v = k < 6 ? (f->type == RPT_T_U64 ? u : s)[k]
                       : ((uint64_t)h << 32) | (uint32_t)(h ^ 0x9e3779b9u);
    memcpy(at, &v, 8);
    return;
  }
  default: { /* u8 u16 u32 i8 i16 i32: the low bytes of the value, two's complement */
    const uint32_t bits = f->size * 8;
    const uint32_t umax = bits == 32 ? UINT32_MAX : (1u << bits) - 1;
    const uint32_t smax = umax >> 1, smin = smax + 1; /* as unsigned: the two's complement */
    const uint32_t us[6] = {0, 1, umax, umax - 1, 10, 99};
    const uint32_t ss[6] = {0, 1, smin, smax, umax, umax - 9};
    uint32_t v = k < 6 ? (f->type >= RPT_T_I8 ? ss : us)[k] : h;
    memcpy(at, &v, f->size); /* little-endian: the low bytes */
    return;
  }
  }
}

#endif /* RPT_SHM_H */
