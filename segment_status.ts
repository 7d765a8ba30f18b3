/**
 * A segment's status as one read-only look sees it: the {@link Status} object that
 * `deno task status --json` prints and that `status --serve` turns into Prometheus metrics. This
 * module is the layer both build on: `status.ts` (the terminal tool) and `metrics.ts` (the HTTP
 * endpoint) import it, and it imports neither.
 *
 * @module
 */
import { realtimeNs } from "./ffi/posix.ts";
import {
  MAX_READERS,
  READ_PTRS_OFFSET,
  READER_HEARTBEATS_OFFSET,
  READER_LOST_OFFSET,
  slotOffset,
  TIMESTAMP_OFFSET,
  VERSION_OFFSET,
  WRITE_PTR_OFFSET,
  WRITER_HEARTBEAT_OFFSET,
  WRITER_START_INDEX_OFFSET,
  WRITER_STARTED_OFFSET,
} from "./layout.ts";
import { roleHolder } from "./ownership.ts";
import { loadU64 } from "./ring.ts";
import type { Segment } from "./segment.ts";
import { type SchemaJson, schemaToJson } from "./schema.ts";

/** A heartbeat older than this marks a live process as stalled. */
export const STALL_AFTER_MS = 3000;

/** Liveness of a writer or reader id. */
export type ProcessState = "alive" | "stalled" | "dead" | "none";

/** One reader id's row of the status. */
export interface ReaderStatus {
  /** Reader id, 0 to 7. */
  id: number;
  /** `read_ptrs[id]`: the next entry it will read. */
  read_ptr: number;
  /** Entries published but not yet read: `write_ptr - read_ptr`. */
  lag: number;
  /** Age in ns of the oldest unread entry (0 when caught up, null when no longer in the ring). */
  lag_ns: number | null;
  /** Whether the writer has lapped it: more than `capacity` entries behind. */
  lapped: boolean;
  /** Entries it skipped because they were overwritten (`reader_lost[id]`). */
  lost: number;
  /** Pid of the reporter holding the id, 0 when free. */
  owner_pid: number;
  /** Whether the id is held: its lock is held, whatever the owner word says. */
  alive: boolean;
  /** alive, stalled (heartbeat older than 3 s), dead (lock free, owner word left) or none. */
  state: ProcessState;
  /** Age of its heartbeat in ms, null when it never beat. */
  heartbeat_age_ms: number | null;
}

/** The whole status of one segment: stable JSON for scripts and monitoring. */
export interface Status {
  /** Segment name. */
  name: string;
  /** Layout version. */
  version: number;
  /** Number of slots. */
  capacity: number;
  /** Bytes per slot (the header's `entry_size`): a power of two from 64 to 65,536. */
  entry_size: number;
  /** Incarnation id, as a decimal string (a u64). */
  epoch: string;
  /** Entries written so far. */
  write_ptr: number;
  /** Average entries/s since the current writer took the segment (0 without a writer). */
  rate: number;
  /** The writer role. */
  writer: {
    pid: number;
    alive: boolean;
    state: ProcessState;
    heartbeat_age_ms: number | null;
  };
  /** The eight reader ids, in order. */
  readers: ReaderStatus[];
  /** The payload schema stored in the segment (`default: true` when it has no block). */
  schema: SchemaJson;
}

/**
 * Whether reader id `r` has never been attached since the segment was created: its lock is free
 * and its owner word, heartbeat, `read_ptr` and `lost` are all zero. `status` shows such an id as
 * `unused` (not as lapped) and `/metrics` gives it no series, so "reader down" means a reporter
 * that ran and stopped, not an id nobody uses.
 *
 * @example
 * ```ts
 * import { readerUnused, type ReaderStatus } from "./segment_status.ts";
 * const r: ReaderStatus = {
 *   id: 0, read_ptr: 0, lag: 900, lag_ns: null, lapped: true, lost: 0, owner_pid: 0,
 *   alive: false, state: "none", heartbeat_age_ms: null,
 * };
 * console.assert(readerUnused(r) && !readerUnused({ ...r, read_ptr: 1 }));
 * ```
 */
export function readerUnused(r: ReaderStatus): boolean {
  return !r.alive && r.owner_pid === 0 && r.heartbeat_age_ms === null && r.read_ptr === 0 &&
    r.lost === 0;
}

function stateOf(pid: number, alive: boolean, ageMs: number | null): ProcessState {
  if (pid === 0 && !alive) return "none";
  if (!alive) return "dead";
  return ageMs !== null && ageMs > STALL_AFTER_MS ? "stalled" : "alive";
}

/**
 * Age in ns at `nowNs` of entry `index` (the oldest one a reader has not read), whose slot is at
 * byte `slot`; null when the slot no longer holds it (overwritten, or being written).
 */
function entryAgeNs(words: Uint32Array, slot: number, index: number, nowNs: bigint): number | null {
  if (loadU64(words, slot) !== index) return null;
  const ts = new DataView(words.buffer).getBigUint64(slot + TIMESTAMP_OFFSET, true);
  if (loadU64(words, slot) !== index) return null;
  return Math.max(0, Number(nowNs - ts));
}

/**
 * Reads the status of an open segment without writing to it.
 *
 * @example
 * ```ts
 * import { Segment } from "./segment.ts";
 * import { readStatus } from "./segment_status.ts";
 * const name = `/rpt_doc_status_${Deno.pid}`;
 * Segment.create(name, { capacity: 8, entrySize: 256 }).close();
 * try {
 *   using seg = Segment.open(name, { readOnly: true });
 *   const s = readStatus(seg);
 *   console.assert(s.readers.length === 8 && s.entry_size === 256);
 * } finally {
 *   Segment.unlink(name);
 * }
 * ```
 */
export function readStatus(seg: Segment): Status {
  const words = new Uint32Array(seg.buffer);
  const view = new DataView(seg.buffer);
  const { capacity, entriesOffset, entrySize, epoch } = seg.info;
  const ageMs = (offset: number): number | null => {
    const beat = view.getBigUint64(offset, true);
    return beat === 0n ? null : Math.max(0, Number(nowNs - beat) / 1e6);
  };
  const readPtrs = Array.from(
    { length: MAX_READERS },
    (_, id) => loadU64(words, READ_PTRS_OFFSET + id * 8),
  );
  const writePtr = loadU64(words, WRITE_PTR_OFFSET);
  // Read the clock after write_ptr, so no entry looked at below is newer than "now".
  const nowNs = realtimeNs();
  const w = roleHolder(seg, "writer");
  const writerAge = ageMs(WRITER_HEARTBEAT_OFFSET);
  const started = view.getBigUint64(WRITER_STARTED_OFFSET, true);
  const startIndex = loadU64(words, WRITER_START_INDEX_OFFSET);
  const seconds = started === 0n ? 0 : Number(nowNs - started) / 1e9;
  const rate = w.alive && seconds > 0 ? (writePtr - startIndex) / seconds : 0;
  const readers = readPtrs.map((readPtr, id): ReaderStatus => {
    const o = roleHolder(seg, id);
    const heartbeatAge = ageMs(READER_HEARTBEATS_OFFSET + id * 8);
    const lag = Math.max(0, writePtr - readPtr);
    return {
      id,
      read_ptr: readPtr,
      lag,
      lag_ns: lag > 0
        ? entryAgeNs(words, slotOffset(readPtr, capacity, entriesOffset, entrySize), readPtr, nowNs)
        : 0,
      lapped: lag > capacity,
      lost: loadU64(words, READER_LOST_OFFSET + id * 8),
      owner_pid: o.pid,
      alive: o.alive,
      state: stateOf(o.pid, o.alive, heartbeatAge),
      heartbeat_age_ms: heartbeatAge,
    };
  });
  return {
    name: seg.name,
    version: view.getUint32(VERSION_OFFSET, true),
    capacity,
    entry_size: entrySize,
    epoch: epoch.toString(),
    write_ptr: writePtr,
    rate,
    writer: {
      pid: w.pid,
      alive: w.alive,
      state: stateOf(w.pid, w.alive, writerAge),
      heartbeat_age_ms: writerAge,
    },
    readers,
    schema: schemaToJson(seg.schema),
  };
}
