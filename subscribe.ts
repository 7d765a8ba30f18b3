/**
 * The subscriber: consume the ring in your own code, with everything the reporter has — the
 * reader id held by its kernel-released lock, resume, losses, epochs, idling — as an async
 * iterator of batches. It runs on the one read core (`read_loop.ts`) that the reporter and the
 * bridge run on.
 *
 * Losses reach the consumer in order, never silently: every {@link Batch} carries the ranges lost
 * just before its first entry ({@link Batch.losses}); when entries were lost and nothing follows,
 * a batch of length 0 carries them. {@link SubscribeOptions.onLoss} hears each range too.
 *
 * @module
 */
import type { IdleName } from "./idle.ts";
import { BYTES_LENGTH_SIZE, MAX_READERS } from "./layout.ts";
import { readLoop } from "./read_loop.ts";
import type { Field, FieldValue, Schema } from "./schema.ts";
import { type From, type Sink, SinkRewind, type SinkStart } from "./sinks/sink.ts";
import { writeBase64 } from "./csv.ts";

/**
 * Options of {@link subscribe}.
 *
 * @example
 * ```ts
 * import type { SubscribeOptions } from "./subscribe.ts";
 * const options: SubscribeOptions = { reader: 3, from: "oldest", idle: "futex", autoCommit: false };
 * console.assert(options.reader === 3);
 * ```
 */
export interface SubscribeOptions {
  /** The reader id, 0..7, held with the same kernel-released lock as the reporter's. */
  reader: number;
  /**
   * Where to start: `"persisted"` (default: `read_ptrs[reader]`), `"oldest"` (the oldest entry
   * the ring holds), `"latest"` (entries published from now on) or a seq (clamped to what the ring
   * holds; the part it no longer holds is reported as lost). Applies to the first incarnation of
   * the segment; a re-created segment is read from its own `read_ptrs[reader]`.
   */
  from?: From;
  /**
   * How to wait when caught up: `futex` (default; off the JS thread, woken by the writer),
   * `sleep`, `backoff` or `spin` (the only one that keeps the event loop busy).
   */
  idle?: IdleName;
  /** Most entries per batch (default 4096; at most 4 MiB of entries). */
  batch?: number;
  /**
   * Store the position of a batch when the loop asks for the next one, and when iteration ends
   * normally (default true: at least once). With false, only {@link Subscription.commit} does.
   */
  autoCommit?: boolean;
  /** Stops the subscription: the iterator ends once the read core has stopped. */
  signal?: AbortSignal;
  /** Hears every range of entries lost to lapping, in order, before the batch that follows it. */
  onLoss?: (loss: Loss) => void;
}

/**
 * A range of entries `[from, to)` overwritten before they could be read.
 *
 * @example
 * ```ts
 * import type { Loss } from "./subscribe.ts";
 * const loss: Loss = { from: 10, to: 15, epoch: 1n };
 * console.assert(loss.to - loss.from === 5);
 * ```
 */
export interface Loss {
  /** First lost seq. */
  from: number;
  /** The seq after the last lost one. */
  to: number;
  /** The incarnation of the segment it belongs to. */
  epoch: bigint;
}

const POW10 = Array.from({ length: 19 }, (_, i) => 10 ** i);

/**
 * A field of a subscription's schema, resolved once by {@link Subscription.field}: the
 * allocation-free way to read it in a hot loop with {@link Batch.number} and the other getters.
 *
 * @example
 * ```ts
 * import type { FieldHandle } from "./subscribe.ts";
 * const describe = (h: FieldHandle) => `${h.field.name} ${h.field.type}`;
 * console.assert(typeof describe === "function");
 * ```
 */
export class FieldHandle {
  /** The field. */
  readonly field: Field;
  /** The schema it belongs to: a batch of another schema refuses it. */
  readonly schema: Schema;
  /** The field's byte offset in the entry. */
  readonly offset: number;
  /** Reads the field at byte `at` of `view` as a number (numeric fields). */
  readonly read: (view: DataView, at: number) => number;
  /** Reads the integer field at byte `at` of `view` as its units (no scale applied). */
  readonly units: (view: DataView, at: number) => number;

  /** @internal Made by {@link Subscription.field}. */
  constructor(field: Field, schema: Schema) {
    this.field = field;
    this.schema = schema;
    this.offset = field.offset;
    this.read = numberReader(field, field.scale);
    this.units = numberReader(field, 0);
  }
}

/** The allocation-free number reader of `f`: units / 10^scale. */
function numberReader(f: Field, scale: number): (view: DataView, at: number) => number {
  const div = POW10[scale]!;
  const scaled = (read: (v: DataView, at: number) => number) =>
    scale === 0 ? read : (v: DataView, at: number) => read(v, at) / div;
  switch (f.type) {
    case "u8":
      return scaled((v, at) => v.getUint8(at));
    case "i8":
      return scaled((v, at) => v.getInt8(at));
    case "u16":
      return scaled((v, at) => v.getUint16(at, true));
    case "i16":
      return scaled((v, at) => v.getInt16(at, true));
    case "u32":
      return scaled((v, at) => v.getUint32(at, true));
    case "i32":
      return scaled((v, at) => v.getInt32(at, true));
    case "u64":
      return scaled((v, at) => v.getUint32(at + 4, true) * 4294967296 + v.getUint32(at, true));
    case "i64":
      return scaled((v, at) => v.getInt32(at + 4, true) * 4294967296 + v.getUint32(at, true));
    case "f32":
      return (v, at) => v.getFloat32(at, true);
    case "f64":
      return (v, at) => v.getFloat64(at, true);
    default:
      return () => {
        throw new TypeError(
          `Cannot read field ${f.name} as a number as it is ${f.type}: use text() or bytes()`,
        );
      };
  }
}

/**
 * One batch of entries: a view over a buffer the subscription reuses, valid until the iteration
 * asks for the next batch. Entries are `0..length-1`, consecutive seqs of one epoch.
 *
 * Exact access to every value: `bigint` gives integers exactly (u64 beyond 2^53, scaled values
 * as units), `text` gives the reporter's CSV text of any field (exact decimals, `NaN`, `-0`),
 * `number` gives floats exactly (NaN and -0 included) and integers below 2^53. `number` allocates
 * nothing.
 *
 * @example
 * ```ts
 * import { type Batch } from "./subscribe.ts";
 * const total = (b: Batch) => {
 *   let n = 0;
 *   for (let i = 0; i < b.length; i++) n += b.seq(i);
 *   return n;
 * };
 * console.assert(typeof total === "function");
 * ```
 */
export class Batch {
  #words: Uint32Array = new Uint32Array(0);
  #view: DataView = new DataView(new ArrayBuffer(0));
  #bytes: Uint8Array = new Uint8Array(0);
  #stride = 16;
  #strideBytes = 64;
  #length = 0;
  #epoch = 0n;
  #schema: Schema | undefined;
  #handles = new Map<string, FieldHandle>();
  #losses: readonly Loss[] = [];

  /** Entries in this batch (0 when it only carries {@link losses}). */
  get length(): number {
    return this.#length;
  }
  /** The incarnation of the segment its entries come from. */
  get epoch(): bigint {
    return this.#epoch;
  }
  /** The schema of its entries. */
  get schema(): Schema {
    return this.#schema!;
  }
  /** Ranges lost to lapping just before its first entry, in order (usually none). */
  get losses(): readonly Loss[] {
    return this.#losses;
  }

  /**
   * Points the batch at the `count` entries a {@link Sink} was given in `write`, for the
   * incarnation `at` announced in `start`: a sink decodes them with the batch's getters. Returns
   * the batch.
   *
   * @example
   * ```ts
   * import { Batch, type Sink, type SinkStart } from "./mod.ts";
   * let at: SinkStart;
   * const batch = new Batch();
   * const lines: string[] = [];
   * const sink: Sink = {
   *   target: "memory",
   *   unit: "lines",
   *   start: (s) => Promise.resolve((at = s).initial),
   *   write: (entries, count) => {
   *     const b = batch.wrap(entries, count, at);
   *     for (let i = 0; i < b.length; i++) lines.push(`${b.seq(i)} ${b.get(i, "symbol")}`);
   *   },
   *   lost: () => {},
   *   flush: () => {},
   *   close: () => {},
   * };
   * console.assert(sink.unit === "lines");
   * ```
   */
  wrap(entries: Uint32Array, count: number, at: SinkStart): this {
    this.set(entries, at.entrySize >>> 2, count, at.epoch, at.schema, []);
    return this;
  }

  /** @internal Points the batch at `count` entries of `entries`, `stride` u32 words each. */
  set(
    entries: Uint32Array,
    stride: number,
    count: number,
    epoch: bigint,
    schema: Schema,
    losses: readonly Loss[],
  ): void {
    this.#stride = stride;
    this.#strideBytes = stride * 4;
    if (entries !== this.#words) {
      this.#words = entries;
      this.#view = new DataView(entries.buffer, entries.byteOffset, entries.byteLength);
      this.#bytes = new Uint8Array(entries.buffer, entries.byteOffset, entries.byteLength);
    }
    if (schema !== this.#schema) {
      this.#schema = schema;
      this.#handles = new Map(schema.fields.map((f) => [f.name, new FieldHandle(f, schema)]));
    }
    this.#length = count;
    this.#epoch = epoch;
    this.#losses = losses;
  }

  /** The seq of entry `i`. */
  seq(i: number): number {
    const w = i * this.#stride;
    return this.#words[w]! + this.#words[w + 1]! * 4294967296;
  }

  /** The CLOCK_REALTIME nanoseconds at publication of entry `i`, exactly. */
  timestampNs(i: number): bigint {
    return this.#view.getBigUint64(i * this.#stride * 4 + 8, true);
  }

  /** The handle of field `name` (resolve it once: {@link Subscription.field}). */
  #handle(name: string): FieldHandle {
    const h = this.#handles.get(name);
    if (h === undefined) {
      throw new RangeError(
        `Cannot read field ${name} as it is not in the schema (${
          this.schema.fields.map((f) => f.name).join(", ")
        })`,
      );
    }
    return h;
  }

  #at(i: number, h: FieldHandle): number {
    if (h.schema !== this.#schema) {
      throw new TypeError(
        `Cannot read field ${h.field.name} as its handle belongs to another schema: resolve it again with sub.field()`,
      );
    }
    return i * this.#strideBytes + h.offset;
  }

  /**
   * Field `h` of entry `i` as a number, allocating nothing: integers (units / 10^scale when
   * scaled; exact below 2^53), floats exactly (f32 widened). A TypeError for text and bytes.
   */
  number(i: number, h: FieldHandle): number {
    if (h.schema !== this.#schema) this.#at(i, h); // throws: a handle of another schema
    return h.read(this.#view, i * this.#strideBytes + h.offset);
  }

  /** Integer field `h` of entry `i` exactly, as a bigint of units (a scaled field's units). */
  bigint(i: number, h: FieldHandle): bigint {
    const at = this.#at(i, h);
    const v = this.#view;
    switch (h.field.type) {
      case "u64":
        return v.getBigUint64(at, true);
      case "i64":
        return v.getBigInt64(at, true);
    }
    if (h.field.kind === "uint" || h.field.kind === "int") return BigInt(h.units(v, at));
    throw new TypeError(`Cannot read field ${h.field.name} as a bigint as it is ${h.field.type}`);
  }

  /**
   * Field `h` of entry `i` as the reporter's CSV prints it, unquoted: text up to its first NUL,
   * exact decimals for integers, JavaScript's number-to-string for floats with `-0`, base64 for
   * bytes.
   */
  text(i: number, h: FieldHandle): string {
    const f = h.field;
    const at = this.#at(i, h);
    switch (f.kind) {
      case "char": {
        let s = "";
        for (let k = 0; k < f.size; k++) {
          const c = this.#bytes[at + k]!;
          if (c === 0) break;
          s += String.fromCharCode(c === 10 || c === 13 ? 63 : c);
        }
        return s;
      }
      case "bytes": {
        const data = this.bytes(i, h);
        const out = new Uint8Array(4 * Math.ceil(data.length / 3));
        return new TextDecoder().decode(out.subarray(0, writeBase64(out, 0, data, 0, data.length)));
      }
      case "float": {
        const x = h.read(this.#view, at);
        return Object.is(x, -0) ? "-0" : String(x);
      }
      default:
        return decimal(this.bigint(i, h), f.scale);
    }
  }

  /**
   * The bytes of field `h` of entry `i`: a view (valid until the next batch) of a `bytes[N]`
   * field's stored bytes, or of a `char[N]` field's N bytes. A TypeError for numbers.
   */
  bytes(i: number, h: FieldHandle): Uint8Array {
    const f = h.field;
    const at = this.#at(i, h);
    if (f.kind === "char") return this.#bytes.subarray(at, at + f.size);
    if (f.kind !== "bytes") {
      throw new TypeError(`Cannot read field ${f.name} as bytes as it is ${f.type}`);
    }
    const length = this.#view.getUint32(at, true);
    if (length > f.maxLength) {
      throw new RangeError(
        `Cannot read entry ${
          this.seq(i)
        } as field ${f.name} length must be at most ${f.maxLength}: current value is ${length}`,
      );
    }
    return this.#bytes.subarray(at + BYTES_LENGTH_SIZE, at + BYTES_LENGTH_SIZE + length);
  }

  /**
   * Field `name` of entry `i` as a plain value: a number for integers of up to 32 bits, floats
   * and scaled integers (units / 10^scale); a bigint for unscaled 64-bit integers; a string for
   * text; a copy of the bytes for `bytes[N]`.
   */
  get(i: number, name: string): FieldValue {
    const h = this.#handle(name);
    const f = h.field;
    if (f.kind === "char") return this.text(i, h);
    if (f.kind === "bytes") return this.bytes(i, h).slice();
    if (f.size === 8 && f.scale === 0 && f.kind !== "float") return this.bigint(i, h);
    return this.number(i, h);
  }

  /** Entry `i` as a plain object: `seq`, `timestampNs`, `epoch` and every field by {@link get}. */
  record(i: number): Record<string, FieldValue> {
    const out: Record<string, FieldValue> = {
      seq: this.seq(i),
      timestampNs: this.timestampNs(i),
      epoch: this.#epoch,
    };
    for (const f of this.schema.fields) out[f.name] = this.get(i, f.name);
    return out;
  }

  /** @internal The handle of `name` in the current schema. */
  handle(name: string): FieldHandle {
    return this.#handle(name);
  }
}

/** `units / 10^scale` as an exact decimal with `scale` digits after the point. */
function decimal(units: bigint, scale: number): string {
  if (scale === 0) return String(units);
  const negative = units < 0n;
  const digits = (negative ? -units : units).toString().padStart(scale + 1, "0");
  const cut = digits.length - scale;
  return `${negative ? "-" : ""}${digits.slice(0, cut)}.${digits.slice(cut)}`;
}

/** The end of iteration, shared by every `next()` after the read core stopped. */
const DONE: IteratorReturnResult<undefined> = { done: true, value: undefined };

/**
 * The read core's sink for a subscription: hands each batch to the consumer and waits until the
 * consumer asks for the next one (the batch is then done), or until the subscription closes
 * (the batch is then read again next time: it moves the read core back with a rewind).
 */
class SubscriberSink implements Sink {
  readonly target = "subscriber";
  readonly unit = "entries";
  /** A batch is done when the consumer asks for the next: store its position right then. */
  readonly commitAfterWrite = true;
  readonly batch = new Batch();
  /** Set for `autoCommit: false`: read_ptr covers only what {@link Subscription.commit} said. */
  committed?: () => number;
  #epoch = 0n;
  #schema: Schema | undefined;
  #stride = 16;
  #losses: Loss[] = [];
  #onLoss: ((loss: Loss) => void) | undefined;
  /** The batch given to the consumer or waiting for it, and the loop waiting for it to be done. */
  #held: { first: number; end: number; done: () => void; abandon: () => void } | undefined;
  #taken = false;
  #waiter: ((r: IteratorResult<Batch, undefined>) => void) | undefined;
  #failed: ((e: unknown) => void) | undefined;
  #ended = false;
  #closing = false;
  #heldDone = false;
  #error: unknown;
  #delivered = -1;
  #userCommitted = 0;
  #started: () => void;

  constructor(
    autoCommit: boolean,
    onLoss: ((loss: Loss) => void) | undefined,
    started: () => void,
  ) {
    this.#onLoss = onLoss;
    this.#started = started;
    if (!autoCommit) this.committed = () => this.#userCommitted;
  }

  /** Why the read core failed, once it has. */
  get error(): unknown {
    return this.#error;
  }

  /** The seq after the last entry delivered (-1 before the first batch). */
  get delivered(): number {
    return this.#delivered;
  }
  get epoch(): bigint {
    return this.#epoch;
  }
  get schema(): Schema | undefined {
    return this.#schema;
  }

  start(at: SinkStart): Promise<number> {
    this.#epoch = at.epoch;
    this.#schema = at.schema;
    this.#stride = at.entrySize >>> 2;
    this.#userCommitted = at.stored;
    this.#started();
    return Promise.resolve(at.initial);
  }

  write(entries: Uint32Array, count: number): Promise<void> {
    const first = entries[0]! + entries[1]! * 4294967296;
    const end = first + count;
    return this.#offer(entries, count, first, end);
  }

  lost(from: number, to: number): void {
    const loss = { from, to, epoch: this.#epoch };
    this.#losses.push(loss);
    this.#onLoss?.(loss);
  }

  /** Losses with no entry after them reach the consumer too: as a batch of length 0. */
  flush(): void | Promise<void> {
    if (this.#losses.length === 0) return;
    const end = this.#losses.at(-1)!.to;
    return this.#offer(new Uint32Array(0), 0, end, end);
  }

  close(): void {}

  #offer(entries: Uint32Array, count: number, first: number, end: number): Promise<void> {
    if (this.#closing) {
      return Promise.reject(new SinkRewind("the subscription closed", first));
    }
    this.batch.set(entries, this.#stride, count, this.#epoch, this.#schema!, this.#losses);
    this.#losses = [];
    return new Promise<void>((done, fail) => {
      this.#held = {
        first,
        end,
        done,
        abandon: () =>
          fail(new SinkRewind("the subscription closed before the batch was done", first)),
      };
      this.#taken = false;
      this.#heldDone = false;
      this.#give();
    });
  }

  /** Gives the held batch to a consumer waiting for one. */
  #give(): void {
    if (this.#held === undefined || this.#taken || this.#waiter === undefined) return;
    this.#taken = true;
    this.#delivered = this.#held.end;
    const waiter = this.#waiter;
    this.#waiter = this.#failed = undefined;
    waiter({ done: false, value: this.batch });
  }

  /** The consumer asks for the next batch: the one it holds is done. */
  next(): Promise<IteratorResult<Batch, undefined>> {
    if (this.#held !== undefined && this.#taken) {
      const held = this.#held;
      this.#held = undefined;
      held.done();
    }
    if (this.#waiter !== undefined) {
      return Promise.reject(new TypeError("Cannot ask for a batch while another next() waits"));
    }
    return new Promise((resolve, reject) => {
      this.#waiter = resolve;
      this.#failed = reject;
      this.#give();
      this.#settleEnd();
    });
  }

  /**
   * Everything delivered so far is done: read_ptr may cover it (with `autoCommit: false`, the
   * only way it moves), and closing now does not deliver the batch in hand again.
   */
  commit(): void {
    if (this.#delivered > this.#userCommitted) this.#userCommitted = this.#delivered;
    if (this.#held !== undefined && this.#taken) this.#heldDone = true;
  }

  /** Closing: a batch not done yet is read again next time. */
  abandon(): void {
    this.#closing = true;
    const held = this.#held;
    this.#held = undefined;
    if (held !== undefined && this.#heldDone) held.done();
    else held?.abandon();
  }

  /** The read core stopped (`error` when it failed): a waiting and every later `next()` end. */
  end(error?: unknown): void {
    this.#ended = true;
    this.#error = error;
    this.#settleEnd();
  }

  #settleEnd(): void {
    if (!this.#ended || this.#waiter === undefined || this.#held !== undefined) return;
    const [resolve, reject] = [this.#waiter, this.#failed!];
    this.#waiter = this.#failed = undefined;
    if (this.#error !== undefined) reject(this.#error);
    else resolve(DONE);
  }
}

/**
 * A subscription to a segment: an async iterable of {@link Batch}es. Holds its reader id until
 * closed (`await using`, {@link close}, the iteration ending, or the `signal`).
 *
 * @example
 * ```ts
 * import { RingWriter, Segment, subscribe } from "./mod.ts";
 * const name = `/rpt_doc_sub_${Deno.pid}`;
 * using seg = Segment.create(name, { capacity: 64 });
 * new RingWriter(seg.buffer).publishSimulated(10);
 * {
 *   await using sub = await subscribe(name, { reader: 3, from: "oldest", idle: "sleep" });
 *   const price = sub.field("price");
 *   let sum = 0;
 *   for await (const batch of sub) {
 *     for (let i = 0; i < batch.length; i++) sum += batch.number(i, price);
 *     if (sub.position === 10) break;
 *   }
 *   console.assert(sum > 0);
 * }
 * Segment.unlink(name);
 * ```
 */
export class Subscription implements AsyncIterable<Batch>, AsyncDisposable {
  readonly #sink: SubscriberSink;
  readonly #reader: number;
  #stop: string | undefined;
  #loop: Promise<void> = Promise.resolve();
  #signal: AbortSignal | undefined;
  #onAbort = () => this.#stopWith("aborted");

  /** @internal Made by {@link subscribe}. */
  constructor(reader: number, sink: SubscriberSink, signal: AbortSignal | undefined) {
    this.#reader = reader;
    this.#sink = sink;
    this.#signal = signal;
    signal?.addEventListener("abort", this.#onAbort, { once: true });
    if (signal?.aborted) this.#stop = "aborted";
  }

  /** @internal Runs the read core in the background. */
  run(loop: (stopped: () => string | undefined) => Promise<void>): Promise<void> {
    this.#loop = loop(() => this.#stop).then(
      () => this.#sink.end(),
      (e) => this.#sink.end(e),
    );
    return this.#loop;
  }

  /** The reader id held. */
  get reader(): number {
    return this.#reader;
  }
  /** The epoch of the segment incarnation being read. */
  get epoch(): bigint {
    return this.#sink.epoch;
  }
  /** The schema of the incarnation being read. */
  get schema(): Schema {
    return this.#sink.schema!;
  }
  /** The seq after the last entry delivered (where the next batch starts). */
  get position(): number {
    return this.#sink.delivered;
  }

  /** The handle of field `name`, for the allocation-free getters of {@link Batch}. */
  field(name: string): FieldHandle {
    const batch = this.#sink.batch;
    if (batch.length === 0 && this.#sink.schema !== undefined) {
      // Before the first batch: point it at the schema so its handles exist.
      batch.set(new Uint32Array(0), 16, 0, this.#sink.epoch, this.#sink.schema, []);
    }
    return batch.handle(name);
  }

  /**
   * Marks everything delivered so far (the current batch included) as done: with
   * `autoCommit: false`, the only way the stored position moves. Leaving the loop (`break`, an
   * exception, {@link close}) does not mark the batch in hand as done: it is delivered again on
   * the next start, unless `commit()` was called for it.
   */
  commit(): void {
    this.#sink.commit();
  }

  /** Stops reading, lets the current batch go (it is read again next time unless done), closes. */
  async close(): Promise<void> {
    this.#stopWith("closed");
    await this.#loop;
    this.#signal?.removeEventListener("abort", this.#onAbort);
  }

  #stopWith(reason: string): void {
    this.#stop ??= reason;
    this.#sink.abandon();
  }

  /** Closes the subscription. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** The batches, each valid until the next is asked for. Ending the loop early closes. */
  [Symbol.asyncIterator](): AsyncIterator<Batch, undefined> {
    return {
      next: () => this.#sink.next(),
      return: async () => {
        await this.close();
        return DONE;
      },
    };
  }
}

/**
 * Subscribes to segment `name` as reader `options.reader`: waits for the segment, holds the
 * reader id (a live holder is refused with an OwnershipError naming its pid), and resolves once
 * reading has started. See {@link SubscribeOptions} for where it starts and how it commits.
 *
 * @example
 * ```ts
 * import { RingWriter, Segment, subscribe } from "./mod.ts";
 * const name = `/rpt_doc_subscribe_${Deno.pid}`;
 * using seg = Segment.create(name, { capacity: 64 });
 * const writer = new RingWriter(seg.buffer);
 * writer.publishSimulated(5);
 * const sub = await subscribe(name, { reader: 0, from: "latest" });
 * writer.publishSimulated(3); // only these are read: from "latest"
 * for await (const batch of sub) {
 *   console.assert(batch.seq(0) >= 5);
 *   if (sub.position === 8) break;
 * }
 * Segment.unlink(name);
 * ```
 */
export async function subscribe(name: string, options: SubscribeOptions): Promise<Subscription> {
  const reader = options.reader;
  if (!Number.isInteger(reader) || reader < 0 || reader >= MAX_READERS) {
    throw new RangeError(`Cannot subscribe as reader id must be 0..7: current value is ${reader}`);
  }
  let started!: () => void;
  const attached = new Promise<void>((resolve) => (started = resolve));
  const sink = new SubscriberSink(options.autoCommit ?? true, options.onLoss, started);
  const sub = new Subscription(reader, sink, options.signal);
  const loop = sub.run((stopped) =>
    readLoop(
      {
        program: "subscriber",
        tag: `subscriber ${reader}`,
        id: reader,
        name,
        idle: options.idle ?? "futex",
        batch: options.batch ?? 4096,
        quiet: true,
        from: options.from,
      },
      () => sink,
      {
        stopped,
        say: () => {},
        warn: () => {},
        summary: () => {},
        asyncIdle: true,
      },
    )
  );
  await Promise.race([attached, loop]);
  // Refused (reader id held, segment invalid) before reading started: subscribe itself fails.
  if (sink.error !== undefined) throw sink.error;
  return sub;
}
