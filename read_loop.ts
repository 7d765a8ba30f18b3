/**
 * The one read core of every consumer of the ring: the reporter and the bridge (`runReadLoop`,
 * a program shell with signals and one-line errors) and the subscriber API (`subscribe.ts`, with
 * an `AbortSignal` and exceptions). {@link readLoop} waits for the segment, holds reader id `ID`,
 * reconciles with the sink, then copies every new entry into the sink exactly once, with
 * heartbeats, loss reports, epoch handling (a re-created segment is a new incarnation) and an
 * idle strategy. `read_ptrs[ID]` is stored only after the sink has made the entries durable.
 *
 * @module
 */
import { ExitCode, onStopSignals, report, sleep } from "./cli.ts";
import { monotonicMs, realtimeWords } from "./ffi/posix.ts";
import { Histogram } from "./histogram.ts";
import { createIdleStrategy, EventLoopYield, type IdleName, type IdleStrategy } from "./idle.ts";
import { claimRole, type RoleClaim } from "./ownership.ts";
import { RingReader } from "./ring.ts";
import { Segment, SegmentNotFoundError, SegmentNotReadyError } from "./segment.ts";
import { type From, type Sink, SinkRewind, startPosition } from "./sinks/sink.ts";

/** What the read loop needs to know. */
export interface ReadLoopOptions {
  /** Program name for the one-line error report (`reporter`, `bridge`). */
  program: string;
  /** Prefix of every line, e.g. `reporter 3`. */
  tag: string;
  /** Reader id, 0..7. */
  id: number;
  /** Segment name. */
  name: string;
  /** Idle strategy when caught up. */
  idle: IdleName;
  /** Most entries per read (and per {@link Sink.write}). */
  batch: number;
  /** No progress line and no notices. */
  quiet: boolean;
  /** Where to write the publication-to-read latency histogram as JSON on exit, if anywhere. */
  latency?: string | undefined;
  /** Where to start when the output holds no position yet (the first incarnation only). */
  from?: From | undefined;
  /** Stops the loop as SIGINT does (for a program embedding it). */
  signal?: AbortSignal | undefined;
}

/** How a caller of {@link readLoop} stops it and hears from it. */
export interface ReadLoopControl {
  /** Why to stop (a signal name, `closed`), or undefined to go on. Polled between steps. */
  stopped(): string | undefined;
  /** A notice (attached, reclaimed, waiting, rewinding). */
  say(line: string): void;
  /** A warning that must not be suppressed (entries lost to lapping). */
  warn(line: string): void;
  /** The summary line of one incarnation. */
  summary(line: string): void;
  /** Waits of the futex strategy off the JS thread, so timers fire on time (the subscriber). */
  asyncIdle?: boolean;
  /** Called once per incarnation, after the sink has started (the subscriber waits for it). */
  started?(): void;
}

/**
 * Holds reader id `id` of `seg` until the returned claim is released (or the segment closed, or the
 * process killed: the kernel drops the role's lock with the descriptor): the one place the role is
 * claimed. Throws an OwnershipError when a live process holds it.
 */
export function holdReaderId(
  seg: Segment,
  id: number,
  program: string,
  say: (line: string) => void,
): RoleClaim {
  const taken = claimRole(
    seg,
    id,
    (pid) =>
      `Cannot attach ${program} as reader id ${id} of segment ${seg.name} is held by live pid ${pid}`,
  );
  if (taken.reclaimedFrom !== undefined) {
    say(`${program} ${id}: reclaimed reader id ${id} from dead pid ${taken.reclaimedFrom}`);
  }
  return taken;
}

/** Waits for the segment to exist and be initialised; says so once. Undefined if stopped. */
async function waitForSegment(
  o: ReadLoopOptions,
  c: ReadLoopControl,
): Promise<Segment | undefined> {
  let told = false;
  while (c.stopped() === undefined) {
    try {
      return Segment.open(o.name);
    } catch (e) {
      if (!(e instanceof SegmentNotFoundError || e instanceof SegmentNotReadyError)) throw e;
      if (!told) {
        c.say(`${o.tag}: waiting for segment ${o.name} (start the writer)`);
        told = true;
      }
    }
    await sleep(50);
  }
  return undefined;
}

/**
 * Runs the program shell of the read loop until SIGINT/SIGTERM: installs the signal listeners,
 * prints notices (unless quiet), warnings and the summary, and turns an error into its one-line
 * report. Resolves to the exit status.
 */
export async function runReadLoop(o: ReadLoopOptions, openSink: () => Sink): Promise<number> {
  let stopSignal: Deno.Signal | undefined;
  const removeSignals = onStopSignals((s) => (stopSignal = s));
  try {
    await readLoop(o, openSink, {
      stopped: () => stopSignal ?? (o.signal?.aborted ? "aborted" : undefined),
      say: (line) => {
        if (!o.quiet) console.error(line);
      },
      warn: (line) => console.error(line),
      summary: (line) => console.log(line),
    });
    return ExitCode.OK;
  } catch (e) {
    return report(o.program, e);
  } finally {
    removeSignals();
  }
}

/**
 * Options of {@link runSink}.
 *
 * @example
 * ```ts
 * import type { RunSinkOptions } from "./read_loop.ts";
 * const options: RunSinkOptions = { name: "/orders", reader: 4, from: "oldest" };
 * console.assert(options.reader === 4);
 * ```
 */
export interface RunSinkOptions {
  /** The segment's name. */
  name: string;
  /** The reader id to hold, 0..7. */
  reader: number;
  /** The program's name in messages (default `sink`). */
  program?: string;
  /** Idle strategy when caught up (default `sleep`). */
  idle?: IdleName;
  /** Most entries per {@link Sink.write} (default 4096, at most 4 MiB of entries). */
  batch?: number;
  /** No notices, only warnings, errors and the summary (default false). */
  quiet?: boolean;
  /** Where to start when the sink's output holds no position yet (default `persisted`). */
  from?: From;
  /** Stops it as SIGINT does: it drains, stores its position, closes the sink and resolves. */
  signal?: AbortSignal;
}

/**
 * Drives your own {@link Sink} as the reporter drives its CSV: waits for segment `name`, holds
 * reader id `reader` (a live holder is refused, exit 6), resumes where the sink says, copies
 * every entry into it exactly once (`read_ptrs[reader]` moves only after {@link Sink.flush}),
 * reports losses, follows a re-created segment, beats the reader's heartbeat, and stops on
 * SIGINT or SIGTERM. Errors are one line on stderr. Resolves to the exit status (0, or the
 * status of the error: see `cli.ts` `ExitCode`).
 *
 * @example
 * ```ts ignore
 * import { runSink } from "./read_loop.ts";
 * const sink = {} as import("./sinks/sink.ts").Sink; // your sink: see the README's JSON Lines one
 * Deno.exit(await runSink(() => sink, { name: "/orders", reader: 4 }));
 * ```
 */
export function runSink(openSink: () => Sink, options: RunSinkOptions): Promise<number> {
  const program = options.program ?? "sink";
  return runReadLoop({
    program,
    tag: `${program} ${options.reader}`,
    id: options.reader,
    name: options.name,
    idle: options.idle ?? "sleep",
    batch: options.batch ?? 4096,
    quiet: options.quiet ?? false,
    from: options.from,
    signal: options.signal,
  }, openSink);
}

/**
 * The read core: one pass per incarnation of the segment (when it is re-created under us, drain
 * the old one, then attach to the new one) until `control.stopped()` says why. `openSink` makes
 * the sink once, when the segment is valid and the reader id is held (so a refused reader creates
 * no output); the sink then lives across incarnations (its {@link Sink.start} reconciles each
 * one) and is closed at the end. Throws what fails.
 */
export async function readLoop(
  o: ReadLoopOptions,
  openSink: () => Sink,
  control: ReadLoopControl,
): Promise<void> {
  let sink: Sink | undefined;
  let from = o.from ?? "persisted";
  try {
    for (;;) {
      using seg = await waitForSegment(o, control);
      if (seg === undefined) {
        control.summary(
          `${o.tag}: stopped (${control.stopped()}) before segment ${o.name} appeared`,
        );
        return;
      }
      // Held until this pass ends; the kernel releases it with the descriptor (kill -9 too).
      using _id = holdReaderId(seg, o.id, o.program, control.say);
      sink ??= openSink();
      const pass = new ReadPass(o, seg, sink, control);
      if (!(await pass.start(from))) return;
      control.started?.();
      from = "persisted"; // a later incarnation starts where its own read_ptr says
      if (!(await pass.run())) return;
    }
  } finally {
    await sink?.close();
  }
}

/** Longest time entries may be in the sink but not covered by `read_ptr` while busy. */
const COMMIT_INTERVAL_MS = 10;
/**
 * Once caught up, read_ptr is stored at most this often: the CSV sink's check that the file is
 * still ours costs a stat (about 10 us), too much to pay per entry at 100,000 entries/s.
 */
const CAUGHT_UP_COMMIT_MS = 1;
/** How often the loop checks that its segment's name still refers to its mapping. */
const IDENTITY_CHECK_MS = 500;
/** How often each reader's heartbeat is stored. */
const HEARTBEAT_MS = 250;

/**
 * Most bytes of entries one read copies (and one {@link Sink.write} gets): `--batch` entries, but
 * no more than 4 MiB of them, so that a batch of 64 KiB entries stays 64 entries.
 */
export const MAX_BATCH_BYTES = 4 << 20;

/**
 * Entries per read for `entrySize`-byte entries and a requested `batch`: at most
 * {@link MAX_BATCH_BYTES} of them, and at least one.
 *
 * @example
 * ```ts
 * import { batchFor } from "./read_loop.ts";
 * console.assert(batchFor(64, 4096) === 4096 && batchFor(65536, 4096) === 64);
 * ```
 */
export function batchFor(entrySize: number, batch: number): number {
  return Math.max(1, Math.min(batch, Math.floor(MAX_BATCH_BYTES / entrySize)));
}

/** One incarnation of the segment, read into the sink: the steps of the loop, named. */
class ReadPass {
  readonly #o: ReadLoopOptions;
  readonly #seg: Segment;
  readonly #sink: Sink;
  readonly #c: ReadLoopControl;
  readonly #reader: RingReader;
  readonly #batch: number;
  readonly #entries: Uint32Array;
  readonly #clock = new Uint32Array(2);
  readonly #latency: Histogram | undefined;
  readonly #progress: boolean;
  #strategy: IdleStrategy | undefined;
  #count = 0;
  #t0 = monotonicMs();
  #lastBeat = -Infinity;
  #lastShow = this.#t0;
  #lastIdentity = this.#t0;
  #lastCommit = this.#t0;
  #replaced = false;
  #toldRemoved = false;
  #uncommitted = false;
  #pending: Promise<void> | undefined;
  #committed = 0;

  constructor(o: ReadLoopOptions, seg: Segment, sink: Sink, c: ReadLoopControl) {
    this.#o = o;
    this.#seg = seg;
    this.#sink = sink;
    this.#c = c;
    this.#reader = new RingReader(seg.buffer, o.id, {
      onLoss: (from, to) => {
        c.warn(
          `${o.tag}: lost entries ${from}..${to - 1} (${
            to - from
          }): overwritten before they were read`,
        );
        sink.lost(from, to);
      },
    });
    this.#batch = batchFor(seg.entrySize, o.batch);
    this.#entries = new Uint32Array(this.#batch * this.#reader.entryWords);
    this.#latency = o.latency === undefined ? undefined : new Histogram();
    this.#progress = !o.quiet && Deno.stderr.isTerminal();
  }

  /**
   * Reconciles the sink with this incarnation and moves the cursor to where it says. False when
   * stopped while the sink's output did not answer (nothing was read, read_ptr is unchanged).
   */
  async start(from: From): Promise<boolean> {
    const reader = this.#reader;
    const stored = reader.position;
    const writePtr = reader.writePtr();
    let resume: number;
    try {
      resume = await this.#sink.start({
        name: this.#o.name,
        epoch: this.#seg.info.epoch,
        schema: this.#seg.schema,
        entrySize: this.#seg.entrySize,
        batch: this.#batch,
        stored,
        initial: startPosition(from, stored, writePtr, reader.capacity),
        ...(from === "persisted" ? {} : { from }),
        writePtr,
        say: this.#c.say,
      });
    } catch (e) {
      if (!(e instanceof SinkRewind) || this.#c.stopped() === undefined) throw e;
      this.#c.summary(
        `${this.#o.tag}: stopped (${this.#c.stopped()}) before ${this.#sink.target} answered`,
      );
      return false;
    }
    // A seq the ring no longer holds stays as it is: the first read reports the gap as lost.
    reader.commitPosition(Math.min(resume, writePtr));
    this.#committed = reader.position;
    const made = createIdleStrategy(this.#o.idle, this.#seg.buffer, {
      async: this.#c.asyncIdle === true,
    });
    this.#strategy = made.strategy;
    if (made.fellBack) {
      this.#c.say(`${this.#o.tag}: futex is not available on ${Deno.build.os}; using backoff`);
    }
    this.#c.say(
      `${this.#o.tag}: reading ${this.#o.name} from seq ${resume} into ${this.#sink.target} (idle ${made.strategy.name})`,
    );
    return true;
  }

  /** Reads until stopped or the segment is re-created; true to attach to a new incarnation. */
  async run(): Promise<boolean> {
    this.#beat(monotonicMs());
    // While the loop waits on its sink (a server that does not answer, a consumer busy with a
    // batch), a timer keeps the heartbeat going, so the reader is seen alive and waiting.
    const beatTimer = setInterval(() => {
      if (monotonicMs() - this.#lastBeat >= HEARTBEAT_MS) this.#beat(monotonicMs());
    }, HEARTBEAT_MS);
    try {
      using loop = new EventLoopYield();
      let lastYield = this.#t0;
      while (this.#c.stopped() === undefined) {
        await this.#settlePending();
        const before = this.#reader.position;
        if (await this.#readOnce()) lastYield = monotonicMs();
        const caughtUp = this.#reader.position === before;
        const now = monotonicMs();
        await this.#commitIfDue(now, caughtUp);
        if (now - this.#lastBeat >= HEARTBEAT_MS) this.#beat(now);
        this.#showProgress(now);
        if (caughtUp && now - this.#lastIdentity >= IDENTITY_CHECK_MS && this.#checkReplaced(now)) {
          break;
        }
        if (caughtUp && this.#pending === undefined) {
          const wait = this.#strategy!.idle(this.#hasWork);
          if (wait !== undefined) {
            await wait;
            lastYield = monotonicMs();
            continue;
          }
        }
        // Let signals and timers in every few milliseconds, whether busy, spinning or blocking.
        if (monotonicMs() - lastYield >= 5) {
          await loop.yield();
          lastYield = monotonicMs();
        }
      }
    } finally {
      clearInterval(beatTimer);
    }
    await this.#drain();
    this.#summarise();
    return this.#replaced;
  }

  /** Awaits a flush started by the idle strategy's {@link #hasWork}. */
  async #settlePending(): Promise<void> {
    if (this.#pending === undefined) return;
    try {
      await this.#pending;
    } catch (e) {
      if (!this.#rewind(e)) throw e;
    }
    this.#pending = undefined;
  }

  /** One read into the sink. True when it waited on the sink (signals and timers got in). */
  async #readOnce(): Promise<boolean> {
    const reader = this.#reader;
    const before = reader.position;
    const n = reader.readBatch(this.#entries, this.#batch);
    let waited = false;
    if (n > 0) {
      if (this.#latency !== undefined) {
        this.#latency.recordBatch(
          this.#entries,
          n,
          realtimeWords(this.#clock),
          this.#reader.entryWords,
        );
      }
      const wrote = this.#sink.write(this.#entries, n);
      if (wrote !== undefined) {
        try {
          await wrote;
        } catch (e) {
          if (!this.#rewind(e)) throw e;
        }
        waited = true;
      }
      this.#count += n;
    }
    if (reader.position !== before) {
      this.#uncommitted = true;
      this.#strategy!.reset();
    }
    return waited;
  }

  /**
   * Stores read_ptr once caught up (at most every millisecond), or every commit interval while
   * busy: always after the sink made the entries durable.
   */
  async #commitIfDue(now: number, caughtUp: boolean): Promise<void> {
    if (!this.#uncommitted && !this.#sinkCommittedAhead()) return;
    const since = now - this.#lastCommit;
    const sink = this.#sink;
    if (!caughtUp && since >= COMMIT_INTERVAL_MS && sink.durable !== undefined) {
      // Busy, with acknowledgements in flight: store what is durable already, without waiting.
      const durable = sink.durable();
      if (durable > this.#committed) this.#store(durable);
      this.#lastCommit = now;
    } else if (
      since >= COMMIT_INTERVAL_MS || (caughtUp && since >= CAUGHT_UP_COMMIT_MS) ||
      sink.commitAfterWrite === true
    ) {
      const p = this.#persist();
      if (p !== undefined) {
        try {
          await p;
        } catch (e) {
          if (!this.#rewind(e)) throw e;
        }
      }
      this.#lastCommit = now;
    }
  }

  /** Whether the sink says more is done than read_ptr covers (a subscriber's own commit). */
  #sinkCommittedAhead(): boolean {
    const committed = this.#sink.committed?.();
    return committed !== undefined && committed > this.#committed;
  }

  /** Stores `position` as read_ptr without moving the cursor. */
  #store(position: number): void {
    const cursor = this.#reader.position;
    this.#reader.commitPosition(position);
    this.#reader.seek(cursor);
    this.#committed = position;
  }

  /**
   * Stores read_ptr (and the lost counter): the cursor, or the sink's {@link Sink.committed}
   * position when it keeps one behind the cursor (a subscriber that commits by hand).
   */
  #commit = (): void => {
    const reader = this.#reader;
    const position = Math.min(this.#sink.committed?.() ?? reader.position, reader.position);
    reader.commitAt(position);
    this.#committed = position;
    this.#uncommitted = false;
  };

  /** read_ptr is stored only after the sink made everything given so far durable. */
  #persist(): void | Promise<void> {
    const flushed = this.#sink.flush();
    if (flushed instanceof Promise) return flushed.then(this.#commit);
    this.#commit();
  }

  /**
   * Asked by a blocking idle strategy (futex) right before it blocks: store the position first,
   * so read_ptr is never left behind the output for a whole wait. An asynchronous flush is
   * awaited by the loop instead (the strategy is told there is work, so it does not block).
   */
  #hasWork = (): boolean => {
    if (this.#uncommitted && this.#pending === undefined) {
      const p = this.#persist();
      if (p !== undefined) {
        this.#pending = p;
        return true;
      }
    }
    return this.#pending !== undefined || this.#reader.available() > 0 ||
      this.#c.stopped() !== undefined || this.#sinkCommittedAhead();
  };

  /** A sink asked to re-read from an earlier position (its output refused or lost a batch). */
  #rewind(e: unknown): boolean {
    if (!(e instanceof SinkRewind)) return false;
    this.#c.say(`${this.#o.tag}: ${e.message}; reading again from seq ${e.position}`);
    this.#reader.seek(e.position);
    return true;
  }

  #beat(now: number): void {
    realtimeWords(this.#clock);
    this.#reader.heartbeat(this.#clock[0]!, this.#clock[1]!);
    this.#lastBeat = now;
  }

  #showProgress(now: number): void {
    if (!this.#progress || now - this.#lastShow < 250) return;
    this.#lastShow = now;
    const lag = this.#reader.available();
    Deno.stderr.writeSync(
      new TextEncoder().encode(
        `\r${this.#o.tag}: ${this.#count} ${this.#sink.unit}, ${
          Math.round(this.#count / ((now - this.#t0) / 1000))
        }/s, lag ${lag}, lost ${this.#reader.lost}   `,
      ),
    );
  }

  /** Caught up: is the name still ours? A re-created segment is a new incarnation. */
  #checkReplaced(now: number): boolean {
    this.#lastIdentity = now;
    const identity = this.#seg.identity();
    if (identity === "replaced") {
      this.#replaced = true;
      return true;
    }
    if (identity === "removed" && !this.#toldRemoved) {
      this.#c.say(
        `${this.#o.tag}: segment ${this.#o.name} was removed; waiting for its writer or a new segment`,
      );
      this.#toldRemoved = true;
    }
    return false;
  }

  /**
   * Drain: everything read is made durable before the last read_ptr. A batch the sink could not
   * make durable stays uncovered by read_ptr (the cursor moves back to it) and is read again on
   * the next start.
   */
  async #drain(): Promise<void> {
    if (this.#progress) Deno.stderr.writeSync(new TextEncoder().encode("\r\x1b[K"));
    try {
      if (this.#pending !== undefined) await this.#pending;
      await this.#persist();
    } catch (e) {
      if (!this.#rewind(e)) throw e;
      this.#commit();
    }
  }

  #summarise(): void {
    const seconds = (monotonicMs() - this.#t0) / 1000;
    const reader = this.#reader;
    const o = this.#o;
    this.#c.summary(
      `${o.tag}: wrote ${this.#count} ${this.#sink.unit} to ${this.#sink.target} in ${
        seconds.toFixed(3)
      } s; lost ${reader.lost}; read_ptr ${this.#committed} (${
        this.#replaced ? `segment ${o.name} was re-created` : this.#c.stopped()
      })`,
    );
    if (this.#latency !== undefined && o.latency !== undefined) {
      Deno.writeTextFileSync(o.latency, JSON.stringify(this.#latency));
    }
  }
}
