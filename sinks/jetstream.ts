/**
 * The bridge's sink: entries published into a NATS JetStream stream exactly once, in the message
 * format documented in `layout.ts` (one or more consecutive entries per message, each the ring
 * slot of `entry_size` bytes, said in `Rpt-Entry-Size` on every message; a message naming each
 * range lost to lapping).
 *
 * A message holds at most `min(batch, streamBatchLimit(entry_size, max_payload))` entries, the
 * server's `max_payload` read from the connection at every write (a reconnection may reach
 * another server); a server whose `max_payload` cannot hold one entry, or the schema block, is
 * refused with {@link ExitCode.NATS_MAX_PAYLOAD}.
 *
 * Exactly once, with no dependence on the server's duplicate window:
 * - the position lives in the stream: on start (and after any failure) the last message on the
 *   subject (`last_by_subj`) says which entry comes next;
 * - every publish carries `Nats-Msg-Id: <epoch>:<first seq>` and
 *   `Nats-Expected-Last-Subject-Sequence` (the stream sequence of the previous message on the
 *   subject, predicted while several publishes are in flight), so a stale publish is refused by
 *   the server instead of stored twice;
 * - while several publishes are in flight, each also carries `Nats-Expected-Last-Msg-Id` (the
 *   previous message's id): if one is refused or lost, every later one is refused too, so the
 *   stream never gets a gap;
 * - `read_ptrs[ID]` covers only entries whose publish was acknowledged ({@link flush}).
 *
 * The schema travels in the stream: every message carries `Rpt-Schema` (the fingerprint), and
 * before its first message of an epoch (or whenever the subject's last message does not carry
 * this epoch's fingerprint) the sink publishes a schema message holding the block, in the same
 * chain (`count` 0, so it does not move the position).
 *
 * Any refusal, duplicate acknowledgement, timeout or lost connection makes the sink wait for the
 * publishes in flight, read the stream's last message again (retrying with backoff while the
 * server is unreachable) and ask the read loop to read again from there ({@link SinkRewind}).
 *
 * @module
 */
import { headers, type MsgHdrs } from "@nats-io/transport-node";
import type { JetStreamClient, JetStreamManager, PubAck } from "@nats-io/jetstream";
import { ExitCode, NatsError, OutputError, sleep } from "../cli.ts";
import {
  ENTRY_SIZE,
  STREAM_COUNT_HEADER,
  STREAM_ENTRY_SIZE_HEADER,
  STREAM_EPOCH_HEADER,
  STREAM_FIRST_HEADER,
  STREAM_HEADER_ROOM,
  STREAM_KIND_ENTRIES,
  STREAM_KIND_HEADER,
  STREAM_KIND_LOST,
  STREAM_KIND_SCHEMA,
  STREAM_SCHEMA_HEADER,
  streamBatchLimit,
  streamFingerprint,
  streamMsgId,
  streamSchemaMsgId,
} from "../layout.ts";
import { ensureStream } from "../nats.ts";
import { type Sink, SinkRewind, type SinkStart } from "./sink.ts";

/** Options of {@link JetStreamSink}. */
export interface JetStreamSinkOptions {
  /** JetStream client of `nc`. */
  js: JetStreamClient;
  /** JetStream manager of `nc`. */
  jsm: JetStreamManager;
  /** The stream (it exists and captures `subject`). */
  stream: string;
  /** The subject every message is published on. */
  subject: string;
  /** Most publishes awaiting their acknowledgement. */
  inflight: number;
  /** How long to wait for one acknowledgement, in ms. */
  ackTimeoutMs: number;
  /** Prefix of notices, e.g. `bridge 3`. */
  tag: string;
  /** True once the program was asked to stop. */
  stopped: () => boolean;
  /** The connected server's `max_payload` in bytes (headers and data of one message). */
  maxPayload: () => number;
}

/** Where a stream message sits, read from its headers. */
export interface StreamPosition {
  /** Stream sequence of the message. */
  seq: number;
  /** Its `Rpt-Epoch`. */
  epoch: bigint;
  /** Its `Rpt-First-Seq`. */
  first: number;
  /** Its `Rpt-Count`. */
  count: number;
  /** Its `Rpt-Kind`. */
  kind: string;
  /** Its `Rpt-Schema` (16 hex digits), undefined when it has none (a bridge before schemas). */
  schema: string | undefined;
  /**
   * Its `Rpt-Entry-Size`: 64 when it has none (a bridge before entry sizes), NaN when the value
   * is not decimal digits (whether it is a valid entry size is the reader's check).
   */
  entrySize: number;
}

/**
 * Reads the position headers of the message at stream sequence `seq`; undefined when it is not
 * one of ours.
 *
 * @example
 * ```ts ignore
 * const last = await jsm.streams.getMessage("RPT", { last_by_subj: "rpt.rpt_sys_shm" });
 * const at = last === null ? undefined : streamPosition(last.seq, last.header);
 * ```
 */
export function streamPosition(seq: number, h: MsgHdrs | undefined): StreamPosition | undefined {
  const epoch = h?.get(STREAM_EPOCH_HEADER) ?? "";
  const first = h?.get(STREAM_FIRST_HEADER) ?? "";
  const count = h?.get(STREAM_COUNT_HEADER) ?? "";
  if (!/^\d+$/.test(epoch) || !/^\d+$/.test(first) || !/^\d+$/.test(count)) return undefined;
  return {
    seq,
    epoch: BigInt(epoch),
    first: Number(first),
    count: Number(count),
    kind: h?.get(STREAM_KIND_HEADER) ?? "",
    schema: h?.has(STREAM_SCHEMA_HEADER) ? h.get(STREAM_SCHEMA_HEADER) : undefined,
    entrySize: streamEntrySize(h),
  };
}

/**
 * The entry size a message's `Rpt-Entry-Size` says: {@link ENTRY_SIZE} (64) when the header is
 * absent, NaN when it is not decimal digits.
 *
 * @example
 * ```ts
 * import { headers } from "@nats-io/transport-node";
 * import { streamEntrySize } from "./jetstream.ts";
 * const h = headers();
 * console.assert(streamEntrySize(h) === 64);
 * h.set("Rpt-Entry-Size", "1024");
 * console.assert(streamEntrySize(h) === 1024);
 * ```
 */
export function streamEntrySize(h: MsgHdrs | undefined): number {
  if (h === undefined || !h.has(STREAM_ENTRY_SIZE_HEADER)) return ENTRY_SIZE;
  const text = h.get(STREAM_ENTRY_SIZE_HEADER);
  return /^\d{1,9}$/.test(text) ? Number(text) : NaN;
}

interface Message {
  kind: typeof STREAM_KIND_ENTRIES | typeof STREAM_KIND_LOST | typeof STREAM_KIND_SCHEMA;
  first: number;
  count: number;
  data: Uint8Array;
}

interface InFlight {
  first: number;
  count: number;
  id: string;
  /** The stream sequence this message must get (chained), or 0 when published alone. */
  predicted: number;
  outcome: Promise<{ ack: PubAck } | { error: Error }>;
}

/** Entries into one subject of a JetStream stream, several publishes in flight, exactly once. */
export class JetStreamSink implements Sink {
  readonly unit = "entries";
  readonly target: string;
  #o: JetStreamSinkOptions;
  #epoch = 0n;
  #epochText = "";
  /** The epoch's bytes per entry, its stride in u32 words, and `Rpt-Entry-Size`. */
  #entrySize = ENTRY_SIZE;
  #entryWords = ENTRY_SIZE / 4;
  #entrySizeText = `${ENTRY_SIZE}`;
  /** The segment's name, for the max_payload refusal. */
  #segment = "";
  /** The epoch's schema fingerprint (`Rpt-Schema`) and block. */
  #schemaText = "";
  #schemaBlock = new Uint8Array(0);
  /** Whether a schema message must go before the next message (see {@link #needsSchema}). */
  #schemaNeeded = true;
  /** Entries before this index are not ours to publish (the start position). */
  #base = 0;
  /** Index after the last acknowledged entry. */
  #acked = 0;
  /** Index after the last entry made durable by {@link flush} (what read_ptr may cover). */
  #flushed = 0;
  /** Stream sequence of our last message (acknowledged, or predicted while in flight). */
  #lastSeq = 0;
  /** Id of our last message while the stream's last message is known to be ours. */
  #lastId: string | undefined;
  #queue: InFlight[] = [];
  #losses: [number, number][] = [];
  #say: (line: string) => void = () => {};
  /**
   * Set once the server refused a pipelined publish whose expectation was right (the previous
   * message was stored exactly where predicted): a clustered stream on nats-server 2.9 checks
   * the expected sequence before the previous proposal is applied. From then on, one publish at
   * a time.
   */
  #oneAtATime = false;

  /** Prepares the sink; the stream is read by {@link start}. */
  constructor(options: JetStreamSinkOptions) {
    this.#o = options;
    this.target = `stream ${options.stream} subject ${options.subject}`;
  }

  /** Resumes after the last message on the subject, or at `read_ptr` when that is further on. */
  async start(at: SinkStart): Promise<number> {
    this.#epoch = at.epoch;
    this.#epochText = `${at.epoch}`;
    this.#entrySize = at.entrySize;
    this.#entryWords = at.entrySize >>> 2;
    this.#entrySizeText = `${at.entrySize}`;
    this.#segment = at.name;
    this.#schemaText = streamFingerprint(at.schema.fingerprint);
    this.#schemaBlock = at.schema.block.slice();
    this.#messageLimit(); // refuse a server that cannot carry one entry before anything else
    this.#say = at.say;
    const o = this.#o;
    // Made here, with the reader id held: a bridge refused the id changes nothing on the server.
    await this.#retrying(
      () => ensureStream(o.jsm, o.stream, o.subject, true, (line) => at.say(`${o.tag}: ${line}`)),
    );
    const last = await this.#last();
    // No message of this epoch: start where --from says (read_ptr by default).
    let resume = at.initial;
    if (last !== undefined && last.epoch === at.epoch) {
      const end = last.first + last.count;
      if (end > at.writePtr) {
        throw new OutputError(
          `Cannot resume ${this.target} as its last message ends at seq ${
            end - 1
          } but segment ${at.name} has write_ptr ${at.writePtr}`,
          ExitCode.OUTPUT_MISMATCH,
        );
      }
      resume = Math.max(end, at.stored);
      if (at.from !== undefined) {
        at.say(
          `${this.#o.tag}: ${this.target} holds entries up to seq ${
            end - 1
          }: resuming after them (--from ${at.from} applies to a stream with no position)`,
        );
      }
      if (resume !== at.stored) {
        at.say(
          `${this.#o.tag}: ${this.target} ends at seq ${
            end - 1
          }; read_ptr ${at.stored} -> ${resume}`,
        );
      }
    } else if (last !== undefined) {
      at.say(
        `${this.#o.tag}: segment ${at.name} was re-created (epoch ${last.epoch} -> ${at.epoch}); its messages start at seq ${resume}`,
      );
    }
    this.#lastSeq = last?.seq ?? 0;
    this.#lastId = undefined;
    this.#schemaNeeded = this.#needsSchema(last);
    this.#base = this.#acked = this.#flushed = resume;
    return resume;
  }

  /**
   * Publishes the entries: one message per run of consecutive seqs (after any loss before it),
   * each of at most the entries one message may hold under the server's `max_payload`.
   */
  write(entries: Uint32Array, count: number): void | Promise<void> {
    const messages: Message[] = [];
    const size = this.#entrySize;
    const limit = this.#messageLimit();
    const bytes = new Uint8Array(entries.buffer, entries.byteOffset, count * size);
    let start = 0;
    let first = seqAt(entries, 0, this.#entryWords);
    for (let k = 1; k <= count; k++) {
      const run = k - start;
      if (k < count && run < limit && seqAt(entries, k, this.#entryWords) === first + run) {
        continue;
      }
      this.#lossesBefore(first, messages);
      messages.push({
        kind: STREAM_KIND_ENTRIES,
        first,
        count: run,
        data: bytes.slice(start * size, k * size),
      });
      if (k < count) {
        start = k;
        first = seqAt(entries, k, this.#entryWords);
      }
    }
    this.#schemaFirst(messages);
    return this.#send(messages, 0);
  }

  /** Queues a loss message; it is published in seq order with the entries. */
  lost(from: number, to: number): void {
    this.#losses.push([from, to]);
  }

  /** Publishes pending loss messages and waits for every acknowledgement. */
  async flush(): Promise<void> {
    const messages: Message[] = [];
    this.#lossesBefore(Infinity, messages);
    this.#schemaFirst(messages);
    const sending = this.#send(messages, 0);
    if (sending !== undefined) await sending;
    while (this.#queue.length > 0) await this.#settleHead();
    this.#flushed = this.#acked;
  }

  /** Index after the last acknowledged entry: what read_ptr may cover without waiting. */
  durable(): number {
    return this.#acked;
  }

  /** Nothing to release: the connection belongs to the program. */
  close(): void {}

  /**
   * Most entries one message may hold under the connected server's `max_payload`; throws a
   * {@link NatsError} ({@link ExitCode.NATS_MAX_PAYLOAD}) when it cannot hold one, or the
   * schema block (a version-2 block of many fields can pass 1 MiB).
   */
  #messageLimit(): number {
    const maxPayload = this.#o.maxPayload();
    const limit = streamBatchLimit(this.#entrySize, maxPayload);
    if (limit === 0) {
      throw this.#tooSmall(maxPayload, "one entry", `entry size ${this.#entrySize}`);
    }
    const block = this.#schemaBlock.length;
    if (block > maxPayload - STREAM_HEADER_ROOM) {
      throw this.#tooSmall(maxPayload, "the schema block", `schema block ${block} bytes`);
    }
    return limit;
  }

  /** The refusal of a server whose `max_payload` cannot hold `what` (`value`) with the headers. */
  #tooSmall(maxPayload: number, what: string, value: string): NatsError {
    return new NatsError(
      `Cannot publish segment ${this.#segment} into ${this.target} as the server's max_payload must hold ${what} and ${STREAM_HEADER_ROOM} bytes of headers: current values are max_payload ${maxPayload} and ${value}`,
      ExitCode.NATS_MAX_PAYLOAD,
    );
  }

  /**
   * Whether the subject's last message leaves this epoch's schema unsaid: none, another epoch's,
   * or one without this fingerprint (another schema, or a bridge before schemas).
   */
  #needsSchema(last: StreamPosition | undefined): boolean {
    return last === undefined || last.epoch !== this.#epoch || last.schema !== this.#schemaText;
  }

  /** Puts the schema message before `messages` when the stream does not have it yet. */
  #schemaFirst(messages: Message[]): void {
    if (!this.#schemaNeeded || messages.length === 0) return;
    messages.unshift({
      kind: STREAM_KIND_SCHEMA,
      first: messages[0]!.first,
      count: 0,
      data: this.#schemaBlock,
    });
    this.#schemaNeeded = false;
  }

  #lossesBefore(first: number, into: Message[]): void {
    while (this.#losses.length > 0 && this.#losses[0]![0] < first) {
      const [from, to] = this.#losses.shift()!;
      into.push({ kind: STREAM_KIND_LOST, first: from, count: to - from, data: new Uint8Array(0) });
    }
  }

  /** Publishes `messages[i..]`, waiting only when the in-flight limit is reached. */
  #send(messages: Message[], i: number): void | Promise<void> {
    for (; i < messages.length; i++) {
      // Until one acknowledgement shows the stream's last message is ours, publish one at a time.
      const limit = this.#lastId === undefined || this.#oneAtATime ? 1 : this.#o.inflight;
      if (this.#queue.length >= limit) return this.#waitThenSend(messages, i);
      this.#publish(messages[i]!);
    }
  }

  async #waitThenSend(messages: Message[], i: number): Promise<void> {
    await this.#settleHead();
    const rest = this.#send(messages, i);
    if (rest !== undefined) await rest;
  }

  #publish(m: Message): void {
    const o = this.#o;
    const id = m.kind === STREAM_KIND_SCHEMA
      ? streamSchemaMsgId(this.#epoch, m.first)
      : streamMsgId(this.#epoch, m.first);
    const h = headers();
    h.set(STREAM_KIND_HEADER, m.kind);
    h.set(STREAM_EPOCH_HEADER, this.#epochText);
    h.set(STREAM_FIRST_HEADER, `${m.first}`);
    h.set(STREAM_COUNT_HEADER, `${m.count}`);
    h.set(STREAM_SCHEMA_HEADER, this.#schemaText);
    h.set(STREAM_ENTRY_SIZE_HEADER, this.#entrySizeText);
    const chained = this.#lastId !== undefined;
    const outcome = o.js.publish(o.subject, m.data, {
      msgID: id,
      headers: h,
      timeout: o.ackTimeoutMs,
      expect: chained
        ? { lastSubjectSequence: this.#lastSeq, lastMsgID: this.#lastId! }
        : { lastSubjectSequence: this.#lastSeq },
    }).then((ack) => ({ ack }), (error: Error) => ({ error }));
    const predicted = chained ? this.#lastSeq + 1 : 0;
    if (chained) {
      this.#lastSeq = predicted;
      this.#lastId = id;
    }
    this.#queue.push({ first: m.first, count: m.count, id, predicted, outcome });
  }

  /** Waits for the oldest publish; on anything but the expected acknowledgement, re-syncs. */
  async #settleHead(): Promise<void> {
    const head = this.#queue[0]!;
    const result = await head.outcome;
    if ("error" in result) {
      const wrongLast = (result.error as { code?: number }).code === WRONG_LAST_SEQUENCE;
      const expected = head.predicted !== 0 && wrongLast ? head.predicted - 1 : undefined;
      return await this.#resync(
        `publish of seq ${head.first} failed: ${result.error.message}`,
        expected,
      );
    }
    const { ack } = result;
    if (ack.duplicate) {
      return await this.#resync(
        `publish of seq ${head.first} was a duplicate of stream seq ${ack.seq}`,
      );
    }
    if (head.predicted !== 0 && ack.seq !== head.predicted) {
      return await this.#resync(
        `publish of seq ${head.first} got stream seq ${ack.seq}, expected ${head.predicted}`,
      );
    }
    this.#queue.shift();
    this.#acked = head.first + head.count;
    if (head.predicted === 0) {
      // Published alone: now the stream's last message is known to be this one.
      this.#lastSeq = ack.seq;
      this.#lastId = head.id;
    }
  }

  /** Waits out every publish in flight, reads the stream's last message, and rewinds there. */
  async #resync(reason: string, pipelinedExpectation?: number): Promise<never> {
    await Promise.all(this.#queue.map((q) => q.outcome));
    this.#queue = [];
    this.#losses = [];
    const last = await this.#last();
    if (
      pipelinedExpectation !== undefined && last?.seq === pipelinedExpectation && !this.#oneAtATime
    ) {
      this.#oneAtATime = true;
      this.#say(
        `${this.#o.tag}: the server refused a pipelined publish whose expected sequence ${pipelinedExpectation} was right (a clustered stream on nats-server 2.9 checks it before the previous publish is applied); publishing one at a time from now on`,
      );
    }
    let next = this.#base;
    if (last !== undefined && last.epoch === this.#epoch) next = last.first + last.count;
    next = Math.max(next, this.#flushed);
    this.#lastSeq = last?.seq ?? 0;
    this.#lastId = undefined;
    this.#schemaNeeded = this.#needsSchema(last);
    this.#acked = next;
    throw new SinkRewind(reason, next);
  }

  /** The last message on the subject, retrying with backoff while the server cannot answer. */
  #last(): Promise<StreamPosition | undefined> {
    return this.#retrying(async () => {
      const o = this.#o;
      const m = await o.jsm.streams.getMessage(o.stream, { last_by_subj: o.subject });
      if (m === null) return undefined;
      const at = streamPosition(m.seq, m.header);
      if (at === undefined) {
        throw new OutputError(
          `Cannot use ${this.target} as its last message (stream seq ${m.seq}) has no ${STREAM_EPOCH_HEADER}, ${STREAM_FIRST_HEADER} and ${STREAM_COUNT_HEADER} headers: another publisher uses the subject`,
          ExitCode.OUTPUT_MISMATCH,
        );
      }
      return at;
    });
  }

  /**
   * Runs `request` until the server answers it, retrying with backoff (said once) while the
   * server cannot be reached; errors that retrying cannot fix are thrown. Stopped while waiting:
   * a {@link SinkRewind} to the last durable position.
   */
  async #retrying<T>(request: () => Promise<T>): Promise<T> {
    const o = this.#o;
    let told = false;
    let wait = 250;
    for (;;) {
      try {
        const value = await request();
        if (told) this.#say(`${o.tag}: ${this.target} answers again`);
        return value;
      } catch (e) {
        if (e instanceof OutputError) throw e;
        if (e instanceof NatsError && !TRANSIENT.test(e.message)) throw e;
        if (o.stopped()) {
          throw new SinkRewind(`stopped while ${this.target} did not answer`, this.#flushed);
        }
        if (!told) {
          this.#say(
            `${o.tag}: cannot read ${this.target} (${
              (e as Error).message
            }); keeping read_ptr at ${this.#flushed}, retrying with backoff`,
          );
          told = true;
        }
        const until = Date.now() + wait;
        while (!o.stopped() && Date.now() < until) await sleep(50);
        wait = Math.min(wait * 2, 2000);
      }
    }
  }
}

/** Failures that retrying can fix: the server or its JetStream did not answer (yet). */
const TRANSIENT = /timeout|timed out|no responders|disconnect|closed|connection|not enabled/i;

/** JetStream's error code for a wrong `Nats-Expected-Last-Subject-Sequence`. */
const WRONG_LAST_SEQUENCE = 10071;

/** The seq of entry `k` of `entries`, entries being `words` u32 words apart. */
function seqAt(entries: Uint32Array, k: number, words: number): number {
  const w = k * words;
  return entries[w + 1]! * 2 ** 32 + entries[w]!;
}
