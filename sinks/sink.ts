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

/**
 * Where a reader starts when its output holds no position yet:
 * - `"persisted"`: `read_ptrs[ID]` (the default);
 * - `"oldest"`: the oldest entry the ring still holds, `max(0, write_ptr - capacity)`;
 * - `"latest"`: `write_ptr`, only entries published from now on;
 * - a seq: clamped to `write_ptr`; what the ring no longer holds of it is reported as lost.
 *
 * @example
 * ```ts
 * import { type From, startPosition } from "./sink.ts";
 * const from: From = "oldest";
 * console.assert(startPosition(from, 3, 5000, 1024) === 3976);
 * ```
 */
export type From = "persisted" | "oldest" | "latest" | number;

/**
 * The position `from` names in a ring of `capacity` slots whose reader stored `stored` and whose
 * writer is at `writePtr`. A seq below the oldest entry is kept: the first read reports the part
 * the ring no longer holds as lost.
 *
 * @example
 * ```ts
 * import { startPosition } from "./sink.ts";
 * console.assert(startPosition("latest", 0, 5000, 1024) === 5000);
 * console.assert(startPosition(9000, 0, 5000, 1024) === 5000);
 * ```
 */
export function startPosition(
  from: From,
  stored: number,
  writePtr: number,
  capacity: number,
): number {
  if (from === "persisted") return stored;
  if (from === "oldest") return Math.max(0, writePtr - capacity);
  if (from === "latest") return writePtr;
  return Math.min(from, writePtr);
}

/**
 * Parses a `--from` value: `oldest`, `latest`, `persisted` or a seq; a RangeError naming the
 * value otherwise.
 *
 * @example
 * ```ts
 * import { parseFrom } from "./sink.ts";
 * console.assert(parseFrom("latest") === "latest" && parseFrom("42") === 42);
 * ```
 */
export function parseFrom(value: string): From {
  if (value === "oldest" || value === "latest" || value === "persisted") return value;
  const n = /^\d+$/.test(value) ? Number(value) : NaN;
  if (!Number.isSafeInteger(n) || n > 2 ** 52 - 1) {
    throw new RangeError(
      `--from must be oldest, latest, persisted or a seq from 0 to 2^52-1: current value is ${
        JSON.stringify(value)
      }`,
    );
  }
  return n;
}

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
  /**
   * Where to resume when the output holds no position yet: `stored`, or what `--from` names
   * (`read_loop.ts` `startPosition`). A position the output holds wins over it.
   */
  initial: number;
  /** The `--from` given, for the one line saying the output's position wins; absent if none. */
  from?: From;
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
  /**
   * Optional: the position read_ptr may cover when the loop stores it after {@link flush}, when it
   * is behind everything given (a subscriber whose user commits by hand). Default: all of it.
   */
  committed?(): number;
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
