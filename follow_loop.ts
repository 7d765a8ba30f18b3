/**
 * The loop of `follow.ts`: reads the messages a bridge published (format in `layout.ts`) and
 * writes them through the CSV sink exactly as a local reporter writes the same entries. Its
 * position is its file's last row: on start it finds the first message past that row (a binary
 * search over the stream's sequences by the position headers) and skips what the file holds.
 *
 * @module
 */
import type { NatsConnection } from "@nats-io/transport-node";
import { DeliverPolicy, jetstream, type JetStreamManager } from "@nats-io/jetstream";
import { ExitCode, OutputError } from "./cli.ts";
import { Histogram } from "./histogram.ts";
import { ENTRY_SIZE, STREAM_KIND_ENTRIES, STREAM_KIND_LOST } from "./layout.ts";
import { ENTRY_WORDS } from "./ring.ts";
import { DEFAULT_SCHEMA } from "./schema.ts";
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
  /** The epoch being written and the seq its next row must have; undefined before the first. */
  let current: { epoch: bigint; next: number } | undefined;
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

  let words = new Uint32Array(1024 * ENTRY_WORDS);
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
        // A new incarnation of the segment: rotate the file as the reporter does.
        if (current !== undefined) {
          sink.flush();
          sink.close();
          sink = newSink();
        }
        const resume = await sink.start({
          name: where,
          epoch: at.epoch,
          schema: DEFAULT_SCHEMA,
          stored: 0,
          writePtr: Number.MAX_SAFE_INTEGER,
          say,
        });
        current = { epoch: at.epoch, next: resume };
      }
      if (at.epoch < current.epoch) continue;
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
      if (at.kind !== STREAM_KIND_ENTRIES || m.data.length !== at.count * ENTRY_SIZE) {
        throw new OutputError(
          `Cannot read stream seq ${m.seq} of ${where} as it holds ${m.data.length} bytes for ${at.count} entries (kind ${at.kind})`,
          ExitCode.OUTPUT_MISMATCH,
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
      const count = at.count - skip;
      if (words.length < count * ENTRY_WORDS) words = new Uint32Array(count * ENTRY_WORDS);
      new Uint8Array(words.buffer).set(m.data.subarray(skip * ENTRY_SIZE));
      if (latency !== undefined) latency.recordBatch(words, count, nowWords(clock));
      sink.write(words, count);
      rows += count;
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
