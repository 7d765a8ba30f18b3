/**
 * The loop of `follow.ts`: reads the messages a bridge published (format in `layout.ts`) and
 * writes them through the CSV sink exactly as a local reporter writes the same entries. Its
 * position is its file's last row: on start it finds the first message past that row (a binary
 * search over the stream's sequences by the position headers) and skips what the file holds.
 *
 * The schema of each epoch comes from the stream: its schema message (the epoch's first message)
 * holds the block, and every message's `Rpt-Schema` must name it. The CSV of an epoch is written
 * with that schema's header and formatter, rotated per epoch and schema as the reporter rotates.
 * A missing or damaged schema, or a message of another fingerprint, stops follow with
 * {@link ExitCode.STREAM_SCHEMA} before anything of it is written.
 *
 * The entry size of each epoch comes from its messages' `Rpt-Entry-Size` (absent: 64, a stream
 * written before entry sizes): it must be valid, hold the schema, be the same on every message of
 * the epoch, and every entries message must hold `count x entry size` bytes; else follow stops
 * with {@link ExitCode.STREAM_SCHEMA} too. Entries go to the CSV sink (whose formatter strides by
 * the entry size) at most {@link batchFor} of them per write, whatever a message holds.
 *
 * @module
 */
import type { NatsConnection } from "@nats-io/transport-node";
import { DeliverPolicy, jetstream, type JetStreamManager } from "@nats-io/jetstream";
import { ExitCode, OutputError } from "./cli.ts";
import { Histogram } from "./histogram.ts";
import type { MsgHdrs } from "@nats-io/transport-node";
import {
  isValidEntrySize,
  MAX_STREAM_BATCH,
  STREAM_ENTRY_SIZE_HEADER,
  STREAM_KIND_ENTRIES,
  STREAM_KIND_HEADER,
  STREAM_KIND_LOST,
  STREAM_KIND_SCHEMA,
  STREAM_SCHEMA_HEADER,
  streamFingerprint,
} from "./layout.ts";
import { batchFor } from "./read_loop.ts";
import { checkSchemaFits, decodeSchemaBlock, DEFAULT_SCHEMA, type Schema } from "./schema.ts";
import type { CsvFileSink } from "./sinks/csv_file.ts";
import { type StreamPosition, streamPosition } from "./sinks/jetstream.ts";

/** How often rows are checked (and synced with `--fsync batch`) while they arrive. */
const FLUSH_MS = 100;

/** What the follow loop needs to know. */
export interface FollowLoopOptions {
  /** The stream's name. */
  stream: string;
  /** The subject the bridge publishes on. */
  subject: string;
  /** The output file's path, for messages. */
  out: string;
  /** Where to write the publication-to-row latency histogram as JSON on exit, if anywhere. */
  latency?: string | undefined;
}

/**
 * Follows the stream into CSV files made by `newSink` (one per epoch, rotated as the reporter
 * rotates) until SIGINT/SIGTERM (`stopSignal`; `setOnStop` receives the function that ends the
 * wait for messages). Resolves to the exit status.
 */
export async function runFollowLoop(
  o: FollowLoopOptions,
  nc: NatsConnection,
  jsm: JetStreamManager,
  newSink: () => CsvFileSink,
  stopSignal: () => Deno.Signal | undefined,
  setOnStop: (f: () => void) => void,
  say: (line: string) => void,
): Promise<number> {
  const stream = o.stream;
  const where = `stream ${stream} subject ${o.subject}`;
  let sink = newSink();
  const lastRow = sink.lastRow();
  /** The epoch being written; undefined before the first. */
  let current: Epoch | undefined;
  const startSeq = lastRow === undefined
    ? 1
    : await findStart(jsm, stream, o.subject, lastRow.epoch, lastRow.seq + 1);
  say(
    `follow: reading ${where} from stream seq ${startSeq} into ${o.out}${
      lastRow === undefined ? "" : ` (it ends at seq ${lastRow.seq} of epoch ${lastRow.epoch})`
    }`,
  );
  const js = jetstream(nc);
  const consumer = await js.consumers.get(stream, {
    filter_subjects: o.subject,
    deliver_policy: startSeq <= 1 ? DeliverPolicy.All : DeliverPolicy.StartSequence,
    ...(startSeq <= 1 ? {} : { opt_start_seq: startSeq }),
  });
  // By count, not bytes: a byte budget stalls once what is left is smaller than one message.
  // Pulls expire after 5 s (heartbeats every 2.5 s) instead of 30 s, so a pull lost with a
  // restarted server is noticed and re-issued within seconds.
  const messages = await consumer.consume({ max_messages: 32, expires: 5000 });
  setOnStop(() => messages.stop());
  if (stopSignal() !== undefined) messages.stop();

  const latency = o.latency === undefined ? undefined : new Histogram();
  const clock = new Uint32Array(2);
  let rows = 0;
  let lost = 0;
  let dirty = false;
  let failure: unknown;
  const t0 = performance.now();
  const flushTimer = setInterval(() => {
    if (!dirty) return;
    dirty = false;
    try {
      sink.flush();
    } catch (e) {
      failure = e;
      messages.stop();
    }
  }, FLUSH_MS);
  try {
    for await (const m of messages) {
      const at = streamPosition(m.seq, m.headers);
      if (at === undefined) {
        say(`follow: stream seq ${m.seq} on ${o.subject} is not a bridge message; skipped`);
        continue;
      }
      if (lastRow !== undefined && current === undefined && at.epoch < lastRow.epoch) continue;
      if (current === undefined || at.epoch > current.epoch) {
        // A new incarnation of the segment: its schema first (nothing is written without it),
        // then rotate the file as the reporter does.
        const schema = at.kind === STREAM_KIND_SCHEMA
          ? schemaOf(where, m.seq, m.data, at.schema)
          : await epochSchema(jsm, stream, o.subject, where, at);
        const entrySize = epochEntrySize(where, m.seq, m.headers, at, schema);
        const batch = batchFor(entrySize, MAX_STREAM_BATCH);
        if (current !== undefined) {
          sink.flush();
          sink.close();
          sink = newSink();
        }
        const resume = await sink.start({
          name: where,
          epoch: at.epoch,
          schema,
          entrySize,
          batch,
          stored: 0,
          initial: 0,
          writePtr: Number.MAX_SAFE_INTEGER,
          say,
        });
        current = {
          epoch: at.epoch,
          fingerprint: streamFingerprint(schema.fingerprint),
          next: resume,
          entrySize,
          batch,
          words: new Uint32Array(batch * (entrySize >>> 2)),
        };
      }
      if (at.epoch < current.epoch) continue;
      checkEntrySize(where, m.seq, m.headers, at, current);
      if (at.kind === STREAM_KIND_SCHEMA) {
        // The epoch's schema said again (a bridge restarted): it must be the same one.
        const again = streamFingerprint(schemaOf(where, m.seq, m.data, at.schema).fingerprint);
        checkFingerprint(where, m.seq, again, current);
        continue;
      }
      checkFingerprint(where, m.seq, at.schema ?? DEFAULT_FINGERPRINT, current);
      if (at.kind === STREAM_KIND_LOST) {
        if (at.first + at.count > current.next) {
          console.error(
            `follow: lost entries ${at.first}..${
              at.first + at.count - 1
            } (${at.count}): overwritten before the bridge read them`,
          );
          lost += at.first + at.count - Math.max(at.first, current.next);
          current.next = at.first + at.count;
        }
        continue;
      }
      if (at.kind !== STREAM_KIND_ENTRIES) {
        throw new OutputError(
          `Cannot read stream seq ${m.seq} of ${where} as its ${STREAM_KIND_HEADER} must be entries, lost or schema: current value is ${
            JSON.stringify(at.kind)
          }`,
          ExitCode.OUTPUT_MISMATCH,
        );
      }
      if (m.data.length !== at.count * current.entrySize) {
        throw schemaError(
          `Cannot follow ${where} as stream seq ${m.seq} holds ${m.data.length} bytes for ${at.count} entries of ${current.entrySize} bytes (${
            entrySizeSaid(m.headers)
          })`,
        );
      }
      const end = at.first + at.count;
      if (end <= current.next) continue; // already in the file
      if (at.first > current.next) {
        say(
          `follow: ${where} has no entries ${current.next}..${
            at.first - 1
          }; continuing at ${at.first}`,
        );
        current.next = at.first;
      }
      const skip = current.next - at.first;
      writeEntries(sink, current, m.data, skip, at.count - skip, latency, clock);
      rows += at.count - skip;
      current.next = end;
      dirty = true;
      if (failure !== undefined) break;
    }
    if (failure !== undefined) throw failure;
    sink.flush();
  } finally {
    clearInterval(flushTimer);
    sink.close();
  }
  console.log(
    `follow: wrote ${rows} rows to ${o.out} in ${
      ((performance.now() - t0) / 1000).toFixed(3)
    } s; lost ${lost}; next seq ${
      current?.next ?? (lastRow === undefined ? 0 : lastRow.seq + 1)
    } (${stopSignal() ?? "stream closed"})`,
  );
  if (latency !== undefined && o.latency !== undefined) {
    Deno.writeTextFileSync(o.latency, JSON.stringify(latency));
  }
  return ExitCode.OK;
}

/** The epoch being written. */
interface Epoch {
  epoch: bigint;
  /** Its schema's fingerprint (`Rpt-Schema`). */
  fingerprint: string;
  /** The seq the next row must have. */
  next: number;
  /** Its bytes per entry (`Rpt-Entry-Size`). */
  entrySize: number;
  /** Most entries per write into the sink. */
  batch: number;
  /** Where entries are copied for the sink: `batch` entries. */
  words: Uint32Array;
}

/**
 * Writes `count` entries of a message's `data`, from entry `skip` on, into the sink: copied into
 * the epoch's words, at most a batch per write.
 */
function writeEntries(
  sink: CsvFileSink,
  e: Epoch,
  data: Uint8Array,
  skip: number,
  count: number,
  latency: Histogram | undefined,
  clock: Uint32Array,
): void {
  const bytes = new Uint8Array(e.words.buffer);
  for (let done = 0; done < count; done += e.batch) {
    const n = Math.min(e.batch, count - done);
    const from = (skip + done) * e.entrySize;
    bytes.set(data.subarray(from, from + n * e.entrySize));
    if (latency !== undefined) {
      latency.recordBatch(e.words, n, nowWords(clock), e.entrySize >>> 2);
    }
    sink.write(e.words, n);
  }
}

/** How a message's `Rpt-Entry-Size` reads in an error: its value, or that it is absent. */
function entrySizeSaid(h: MsgHdrs | undefined): string {
  return h?.has(STREAM_ENTRY_SIZE_HEADER)
    ? `${STREAM_ENTRY_SIZE_HEADER} ${JSON.stringify(h.get(STREAM_ENTRY_SIZE_HEADER))}`
    : `no ${STREAM_ENTRY_SIZE_HEADER}, which means 64`;
}

/**
 * The entry size of the epoch that the message at stream seq `seq` opens for follow: its
 * `Rpt-Entry-Size`, which must be a valid entry size that holds the epoch's schema.
 */
function epochEntrySize(
  where: string,
  seq: number,
  h: MsgHdrs | undefined,
  at: StreamPosition,
  schema: Schema,
): number {
  if (!isValidEntrySize(at.entrySize)) {
    throw schemaError(
      `Cannot follow ${where} as the ${STREAM_ENTRY_SIZE_HEADER} of stream seq ${seq} must be a power of two from 64 to 65536: current value is ${
        JSON.stringify(h?.get(STREAM_ENTRY_SIZE_HEADER))
      }`,
    );
  }
  try {
    checkSchemaFits(schema, at.entrySize);
  } catch (e) {
    throw schemaError(
      `Cannot follow ${where} as the schema of epoch ${at.epoch} does not fit entry size ${at.entrySize} (stream seq ${seq} has ${
        entrySizeSaid(h)
      }): ${(e as Error).message.replace(/^Cannot use schema as /, "")}`,
    );
  }
  return at.entrySize;
}

/** Throws unless the message's entry size is its epoch's. */
function checkEntrySize(
  where: string,
  seq: number,
  h: MsgHdrs | undefined,
  at: StreamPosition,
  current: Epoch,
): void {
  if (at.entrySize === current.entrySize) return;
  throw schemaError(
    `Cannot follow ${where} as stream seq ${seq} has ${
      entrySizeSaid(h)
    } but epoch ${current.epoch} has entry size ${current.entrySize}`,
  );
}

/** What a message without `Rpt-Schema` (a bridge before schemas) carries: the default schema. */
const DEFAULT_FINGERPRINT = streamFingerprint(DEFAULT_SCHEMA.fingerprint);

/** A schema error of the stream: exit {@link ExitCode.STREAM_SCHEMA}, nothing written. */
function schemaError(message: string): OutputError {
  return new OutputError(message, ExitCode.STREAM_SCHEMA);
}

/** Throws unless the message's fingerprint is its epoch's. */
function checkFingerprint(
  where: string,
  seq: number,
  fingerprint: string,
  current: Epoch,
): void {
  if (fingerprint === current.fingerprint) return;
  throw schemaError(
    `Cannot follow ${where} as stream seq ${seq} carries schema fingerprint ${fingerprint} but epoch ${current.epoch} has schema ${current.fingerprint}`,
  );
}

/** Decodes the block of the schema message at stream seq `seq`; it must match its `Rpt-Schema`. */
function schemaOf(
  where: string,
  seq: number,
  data: Uint8Array,
  header: string | undefined,
): Schema {
  let schema: Schema;
  try {
    schema = decodeSchemaBlock(data);
  } catch (e) {
    throw schemaError(
      `Cannot follow ${where} as the schema message at stream seq ${seq} is damaged: ${
        (e as Error).message
      }`,
    );
  }
  const fingerprint = streamFingerprint(schema.fingerprint);
  if (header !== fingerprint) {
    throw schemaError(
      `Cannot follow ${where} as the schema message at stream seq ${seq} has ${STREAM_SCHEMA_HEADER} ${
        header ?? "(none)"
      } but its block's fingerprint is ${fingerprint}`,
    );
  }
  return schema;
}

/**
 * The schema of the epoch of the message `at` (read mid-epoch, e.g. on a restart): the default
 * for a message without `Rpt-Schema`; otherwise the block of the epoch's first message (found by
 * a binary search over the position headers), which must be its schema message, or the default
 * when that first message has no `Rpt-Schema` (an epoch begun by a bridge before schemas).
 */
async function epochSchema(
  jsm: JetStreamManager,
  stream: string,
  subject: string,
  where: string,
  at: StreamPosition,
): Promise<Schema> {
  if (at.schema === undefined) return DEFAULT_SCHEMA;
  const missing = () =>
    schemaError(
      `Cannot follow ${where} as the schema message of epoch ${at.epoch} (fingerprint ${at.schema}) is missing: the epoch's first message is not one`,
    );
  let lo = (await jsm.streams.info(stream)).state.first_seq;
  let hi = at.seq; // the first message of the epoch is in [lo, at.seq]
  while (lo < hi) {
    const mid = Math.floor((lo + hi) / 2);
    const p = await positionAt(jsm, stream, subject, mid);
    if (p === undefined) throw missing();
    if (p.at.epoch < at.epoch) lo = mid + 1;
    else hi = mid;
  }
  const first = await positionAt(jsm, stream, subject, lo);
  // An epoch begun by a bridge before schemas is the default schema's (a newer bridge resuming
  // it said so with a schema message mid-epoch, which follow checks as it reads on).
  if (first !== undefined && first.at.schema === undefined) return DEFAULT_SCHEMA;
  if (first === undefined || first.at.kind !== STREAM_KIND_SCHEMA) throw missing();
  return schemaOf(where, first.at.seq, first.data, first.at.schema);
}

/** The position and data of our message at stream seq `seq`; undefined if not ours or gone. */
async function positionAt(
  jsm: JetStreamManager,
  stream: string,
  subject: string,
  seq: number,
): Promise<{ at: StreamPosition; data: Uint8Array } | undefined> {
  try {
    const m = await jsm.streams.getMessage(stream, { seq });
    if (m === null || m.subject !== subject) return undefined;
    const at = streamPosition(m.seq, m.header);
    return at === undefined ? undefined : { at, data: m.data };
  } catch {
    return undefined;
  }
}

/** CLOCK_REALTIME now as two words (lo, hi) of nanoseconds, without FFI. */
function nowWords(out: Uint32Array): Uint32Array {
  const ns = Math.round((performance.timeOrigin + performance.now()) * 1e6);
  const lo = ns % 2 ** 32;
  out[0] = lo;
  out[1] = (ns - lo) / 2 ** 32;
  return out;
}

/**
 * The stream sequence to start reading at so that the entry `(epoch, next)` is the first one not
 * yet in the file: a binary search over the stream's messages by their position headers (every
 * message of a stream the bridge created is on its subject), falling back to the stream's first
 * message when a probed one is not ours.
 */
async function findStart(
  jsm: JetStreamManager,
  stream: string,
  subject: string,
  epoch: bigint,
  next: number,
): Promise<number> {
  const state = (await jsm.streams.info(stream)).state;
  let lo = state.first_seq;
  let hi = state.last_seq + 1; // answer in [lo, hi]: first message whose end is past (epoch, next)
  const before = (p: StreamPosition) =>
    p.epoch < epoch || (p.epoch === epoch && p.first + p.count <= next);
  while (lo < hi) {
    const mid = Math.floor((lo + hi) / 2);
    let p: StreamPosition | undefined;
    try {
      const m = await jsm.streams.getMessage(stream, { seq: mid });
      p = m !== null && m.subject === subject ? streamPosition(m.seq, m.header) : undefined;
    } catch {
      p = undefined;
    }
    if (p === undefined) return state.first_seq; // not ours or deleted: read from the start
    if (before(p)) lo = mid + 1;
    else hi = mid;
  }
  return Math.max(lo, 1);
}
