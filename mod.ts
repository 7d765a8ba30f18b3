/**
 * Low-latency inter-process communication for Deno over POSIX shared memory: one writer publishes
 * fixed-size entries (64 bytes by default, up to 64 KiB, chosen per segment) into a ring in a
 * `shm_open` segment, and up to eight readers copy them out, each at its own persisted position. The binary layout (v1) is a C ABI: see
 * `layout.ts` and `include/rpt_shm.h`.
 *
 * Needs `--allow-ffi` (unscoped: the pointer and view APIs require it). FFI is full native access.
 *
 * @example Create a segment, publish, read, close
 * ```ts
 * import { ENTRY_WORDS, RingReader, RingWriter, Segment } from "./mod.ts";
 *
 * const name = `/rpt_example_${Deno.pid}`;
 * {
 *   using seg = Segment.create(name, { capacity: 1024 });
 *   const writer = new RingWriter(seg.buffer);
 *   writer.publishSimulated(10);
 *
 *   const reader = new RingReader(seg.buffer, 0);
 *   const entries = new Uint32Array(64 * ENTRY_WORDS);
 *   const n = reader.readBatch(entries, 64);
 *   reader.commit();
 *   console.assert(n === 10);
 * }
 * Segment.unlink(name);
 * ```
 *
 * @example Entries of 1 KiB with a variable-length bytes field
 * ```ts
 * import { defineSchema, makeFormatter, RingReader, RingWriter, Segment } from "./mod.ts";
 *
 * const name = `/rpt_example_1k_${Deno.pid}`;
 * const schema = defineSchema([{ name: "id", type: "u64" }, { name: "body", type: "bytes[990]" }]);
 * {
 *   using seg = Segment.create(name, { capacity: 1024, entrySize: 1024, schema });
 *   const writer = new RingWriter(seg.buffer);
 *   const id = writer.field("id"), body = writer.field("body");
 *   const message = new TextEncoder().encode("hello");
 *   const slot = writer.claimRecord(); // allocation-free: claim, set, commit
 *   writer.setNumber(slot, id, 1);
 *   writer.setBytes(slot, body, message);
 *   writer.commit();
 *
 *   const reader = new RingReader(seg.buffer, 0);
 *   const entries = new Uint32Array(16 * reader.entryWords); // entry size / 4 words each
 *   const n = reader.readBatch(entries, 16);
 *   const out = new Uint8Array(4096);
 *   const end = makeFormatter(schema, seg.entrySize)(entries, n, out, 0, new TextEncoder().encode(",1\n"));
 *   console.assert(new TextDecoder().decode(out.subarray(0, end)).includes(",1,aGVsbG8=,"));
 * }
 * Segment.unlink(name);
 * ```
 *
 * @module
 */
export {
  createRingBuffer,
  DEFAULT_ORDERING,
  ENTRY_WORDS,
  initRing,
  loadU64,
  type LossHandler,
  type MemoryOrdering,
  ringBytes,
  RingReader,
  type RingReaderOptions,
  RingWriter,
  type RingWriterOptions,
  storeU64,
  type WordClock,
} from "./ring.ts";
export {
  type CreateOptions,
  Segment,
  SegmentNotFoundError,
  SegmentNotReadyError,
  validateName,
} from "./segment.ts";
export {
  decodeEntry,
  DEFAULT_CAPACITY,
  DEFAULT_NAME,
  encodeEntry,
  type Entry,
  ENTRY_SIZE,
  type HeaderInfo,
  isValidEntrySize,
  MAGIC,
  MAX_ENTRY_SIZE,
  MAX_READERS,
  MAX_RING_BYTES,
  ringShapeProblem,
  SegmentInvalidError,
  segmentSize,
  simulatedEntry,
  slotOffset,
  validateHeader,
  VERSION,
} from "./layout.ts";
export {
  CSV_HEADER,
  csvHeader,
  formatRows,
  makeFormatter,
  maxRowBytes,
  parseRow,
  parseRowEnds,
  type Row,
  type RowFormatter,
  splitRow,
  writeBase64,
} from "./csv.ts";
export {
  checkSchemaFits,
  decodeSchemaBlock,
  DEFAULT_SCHEMA,
  defineSchema,
  describeSchema,
  encodeRecord,
  encodeSchemaBlock,
  type Field,
  type FieldKind,
  type FieldSpec,
  type FieldType,
  type FieldValue,
  fingerprint64,
  parseSchemaJson,
  readSchema,
  type ScalarType,
  type Schema,
  SchemaError,
  type SchemaJson,
  schemaToJson,
  simulatedValue,
  writeBytes,
  writeField,
} from "./schema.ts";
export {
  createIdleStrategy,
  EventLoopYield,
  FutexIdle,
  type FutexOutcome,
  futexSupported,
  futexWaker,
  IDLE_STRATEGIES,
  type IdleName,
  type IdleStrategy,
} from "./idle.ts";
export {
  claimRole,
  OwnershipError,
  type OwnershipOptions,
  type Role,
  RoleClaim,
  type RoleHolder,
  roleHolder,
} from "./ownership.ts";
export { PosixError } from "./ffi/posix.ts";
export {
  Batch,
  FieldHandle,
  type Loss,
  subscribe,
  type SubscribeOptions,
  Subscription,
} from "./subscribe.ts";
export { runSink, type RunSinkOptions } from "./read_loop.ts";
export { type From, type Sink, SinkRewind, type SinkStart } from "./sinks/sink.ts";
