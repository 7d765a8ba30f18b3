/**
 * The output of a reader: where the shared read loop (`read_loop.ts`) puts the entries it copies
 * out of the ring. A sink owns the reader's real position: on start it says where to resume, and
 * `read_ptrs[id]` only ever covers entries the sink has made durable ({@link Sink.flush}).
 *
 * One file per sink: `csv_file.ts` (the reporter) and `jetstream.ts` (the bridge). A second
 * engine (Redis Streams, Kafka) is one more file implementing this interface.
 *
 * @module
 */

import type { Schema } from "../schema.ts";

/** What a sink learns about the segment incarnation it is started for. */
export interface SinkStart {
  /** The segment's name. */
  name: string;
  /** The incarnation's epoch (the segment header's `epoch`). */
  epoch: bigint;
  /** The incarnation's payload schema (the default for a segment without a schema block). */
  schema: Schema;
  /** The incarnation's bytes per entry (the header's `entry_size`): the stride of every write. */
  entrySize: number;
  /** Most entries one {@link Sink.write} call gets in this incarnation. */
  batch: number;
  /** `read_ptrs[id]` as stored in the segment. */
  stored: number;
  /** The writer's `write_ptr` now. */
  writePtr: number;
  /** Prints a notice (suppressed by `--quiet`). */
  say: (line: string) => void;
}

/**
 * The output of the shared read loop. Calls come in this order: {@link start} for each
 * incarnation of the segment, then {@link write} and {@link lost} in seq order interleaved with
 * {@link flush}; after the last incarnation, {@link close}.
 */
export interface Sink {
  /** Where the output goes, for messages (a file path, a stream and subject). */
  readonly target: string;
  /** What one written entry is called in the summary line ("rows", "entries"). */
  readonly unit: string;
  /**
   * Reconciles the output with the segment and returns the index to resume reading at: after the
   * last entry the output holds, or at `stored` when that is further on. Rejects when the output
   * cannot belong to this segment.
   */
  start(at: SinkStart): Promise<number>;
  /**
   * Takes `count` entries (`entrySize / 4` words each, seq in words 0-1) held contiguously in
   * `entries`, in seq order; the array is reused after the call returns or its promise resolves. A promise is
   * returned only when the sink needs the loop to wait (back-pressure); the CSV sink never does.
   */
  write(entries: Uint32Array, count: number): void | Promise<void>;
  /** Records that entries `from..to-1` were overwritten before they could be read. */
  lost(from: number, to: number): void;
  /**
   * Makes everything given so far durable in the output (rows written and checked, publishes
   * acknowledged). Only after it resolves may `read_ptrs[id]` cover those entries.
   */
  flush(): void | Promise<void>;
  /**
   * Optional: the index before which every entry given is already durable, known without
   * waiting (a sink with acknowledgements in flight). While busy the loop stores this as
   * `read_ptr` instead of calling {@link flush}, so the pipeline never drains to commit.
   */
  durable?(): number;
  /** Releases the output's resources. Idempotent. */
  close(): void | Promise<void>;
}

/**
 * Thrown (or rejected with) by a sink whose output refused or lost entries it was given: the loop
 * moves its cursor back to `position` (never behind `read_ptrs[id]`, which only covers durable
 * entries) and reads them again.
 */
export class SinkRewind extends Error {
  /** Index of the first entry to read again. */
  readonly position: number;
  /**
   * @example
   * ```ts
   * import { SinkRewind } from "./sink.ts";
   * console.assert(new SinkRewind("server restarted", 7).position === 7);
   * ```
   */
  constructor(message: string, position: number) {
    super(message);
    this.name = "SinkRewind";
    this.position = position;
  }
}
