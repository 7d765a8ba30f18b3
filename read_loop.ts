/**
 * The shared read loop of every reader program (`reporter.ts`, `bridge.ts`): wait for the segment,
 * hold reader id `ID`, reconcile with the sink, then copy every new entry into the sink exactly
 * once, with heartbeats, loss reports, epoch handling (a re-created segment is a new incarnation)
 * and SIGINT/SIGTERM. `read_ptrs[ID]` is stored only after the sink has made the entries durable.
 *
 * @module
 */
import { ExitCode, onStopSignals, report, sleep } from "./cli.ts";
import { monotonicMs, realtimeWords } from "./ffi/posix.ts";
import { Histogram } from "./histogram.ts";
import { createIdleStrategy, EventLoopYield, type IdleName } from "./idle.ts";
import { claimRole, type RoleClaim } from "./ownership.ts";
import { RingReader } from "./ring.ts";
import { Segment, SegmentNotFoundError, SegmentNotReadyError } from "./segment.ts";
import { type Sink, SinkRewind } from "./sinks/sink.ts";

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
  stopped: () => boolean,
  say: (line: string) => void,
): Promise<Segment | undefined> {
  let told = false;
  while (!stopped()) {
    try {
      return Segment.open(o.name);
    } catch (e) {
      if (!(e instanceof SegmentNotFoundError || e instanceof SegmentNotReadyError)) throw e;
      if (!told) {
        say(`${o.tag}: waiting for segment ${o.name} (start the writer)`);
        told = true;
      }
    }
    await sleep(50);
  }
  return undefined;
}

/**
 * Runs the read loop until SIGINT/SIGTERM. `openSink` makes the sink once, when the segment is
 * valid and the reader id is held (so a refused reader creates no output); the sink then lives
 * across incarnations of the segment (its {@link Sink.start} reconciles each one), so an output
 * file stays locked for the reader's whole life. Resolves to the exit status (errors are
 * reported on one line).
 */
export async function runReadLoop(
  o: ReadLoopOptions,
  openSink: () => Sink,
): Promise<number> {
  const say = (line: string) => {
    if (!o.quiet) console.error(line);
  };
  let stopSignal: Deno.Signal | undefined;
  const removeSignals = onStopSignals((s) => (stopSignal = s));
  let sink: Sink | undefined;
  try {
    // One pass per incarnation of the segment: when it is re-created under us, drain the old
    // one, then attach to the new one.
    for (;;) {
      using seg = await waitForSegment(o, () => stopSignal !== undefined, say);
      if (seg === undefined) {
        console.log(`${o.tag}: stopped (${stopSignal}) before segment ${o.name} appeared`);
        return ExitCode.OK;
      }
      // Held until this pass ends; the kernel releases it with the descriptor (kill -9 too).
      using _id = holdReaderId(seg, o.id, o.program, say);
      sink ??= openSink();
      const result = await run(o, seg, sink, () => stopSignal, say);
      if (result !== REATTACH) return result;
    }
  } catch (e) {
    return report(o.program, e);
  } finally {
    try {
      await sink?.close();
    } finally {
      removeSignals();
    }
  }
}

/**
 * Most bytes of entries one read copies (and one {@link Sink.write} gets): `--batch` entries, but
 * no more than 4 MiB of them, so that a batch of 64 KiB entries stays 64 entries.
 */
export const MAX_BATCH_BYTES = 4 << 20;

/**
 * Entries per read for `entrySize`-byte entries and a requested `batch`: at most
 * {@link MAX_BATCH_BYTES} of them, and at least one.
 */
export function batchFor(entrySize: number, batch: number): number {
  return Math.max(1, Math.min(batch, Math.floor(MAX_BATCH_BYTES / entrySize)));
}

/** What {@link run} returns when the segment was re-created and the reader must re-attach. */
const REATTACH = -1;
/** Longest time entries may be in the sink but not covered by `read_ptr` while busy. */
const COMMIT_INTERVAL_MS = 10;
/**
 * Once caught up, read_ptr is stored at most this often: the CSV sink's check that the file is
 * still ours costs a stat (about 10 us), too much to pay per entry at 100,000 entries/s.
 */
const CAUGHT_UP_COMMIT_MS = 1;
/** How often the loop checks that its segment's name still refers to its mapping. */
const IDENTITY_CHECK_MS = 500;

async function run(
  o: ReadLoopOptions,
  seg: Segment,
  sink: Sink,
  stopSignal: () => Deno.Signal | undefined,
  say: (line: string) => void,
): Promise<number> {
  const tag = o.tag;
  const buffer = seg.buffer;
  const epoch = seg.info.epoch;
  const reader = new RingReader(buffer, o.id, {
    onLoss: (from, to) => {
      console.error(
        `${tag}: lost entries ${from}..${to - 1} (${to - from}): overwritten before they were read`,
      );
      sink.lost(from, to);
    },
  });
  const stored = reader.position;
  const batch = batchFor(seg.entrySize, o.batch);
  let resume: number;
  try {
    resume = await sink.start({
      name: o.name,
      epoch,
      schema: seg.schema,
      entrySize: seg.entrySize,
      batch,
      stored,
      writePtr: reader.writePtr(),
      say,
    });
  } catch (e) {
    // Stopped while the sink's output did not answer: nothing was read, read_ptr is unchanged.
    if (!(e instanceof SinkRewind) || stopSignal() === undefined) throw e;
    console.log(`${tag}: stopped (${stopSignal()}) before ${sink.target} answered`);
    return ExitCode.OK;
  }
  reader.commitPosition(resume);

  const { strategy, fellBack } = createIdleStrategy(o.idle, buffer);
  if (fellBack) say(`${tag}: futex is not available on ${Deno.build.os}; using backoff`);
  say(`${tag}: reading ${o.name} from seq ${resume} into ${sink.target} (idle ${strategy.name})`);

  const entries = new Uint32Array(batch * reader.entryWords);
  const clock = new Uint32Array(2);
  const latency = o.latency === undefined ? undefined : new Histogram();

  using loop = new EventLoopYield();
  const progress = !o.quiet && Deno.stderr.isTerminal();
  let count = 0;
  const t0 = monotonicMs();
  let lastBeat = -Infinity;
  let lastYield = t0;
  let lastShow = t0;
  let lastIdentity = t0;
  let replaced = false;
  let toldRemoved = false;
  let uncommitted = false;
  let lastCommit = t0;
  let pending: Promise<void> | undefined;
  let committed = resume;
  const commit = () => {
    reader.commit();
    committed = reader.position;
    uncommitted = false;
  };
  // read_ptr is stored only after the sink made everything given so far durable.
  const persist = (): void | Promise<void> => {
    const flushed = sink.flush();
    if (flushed instanceof Promise) return flushed.then(commit);
    commit();
  };
  // Asked by a blocking idle strategy (futex) right before it blocks: store the position first,
  // so read_ptr is never left behind the output for a whole wait. An asynchronous flush is
  // awaited by the loop instead (the strategy is told there is work, so it does not block).
  const hasWork = () => {
    if (uncommitted && pending === undefined) {
      const p = persist();
      if (p !== undefined) {
        pending = p;
        return true;
      }
    }
    return pending !== undefined || reader.available() > 0;
  };
  /** A sink asked to re-read from an earlier position (its output refused or lost a batch). */
  const rewind = (e: unknown): boolean => {
    if (!(e instanceof SinkRewind)) return false;
    say(`${tag}: ${e.message}; reading again from seq ${e.position}`);
    reader.seek(e.position);
    return true;
  };
  reader.heartbeat(realtimeWords(clock)[0]!, clock[1]!);
  // While the loop waits on its sink (a server that does not answer), a timer keeps the
  // heartbeat going, so the reader is seen alive and waiting rather than dead.
  const beatTimer = setInterval(() => {
    if (monotonicMs() - lastBeat < 250) return;
    realtimeWords(clock);
    reader.heartbeat(clock[0]!, clock[1]!);
    lastBeat = monotonicMs();
  }, 250);
  try {
    while (stopSignal() === undefined) {
      if (pending !== undefined) {
        try {
          await pending;
        } catch (e) {
          if (!rewind(e)) throw e;
        }
        pending = undefined;
      }
      const before = reader.position;
      const n = reader.readBatch(entries, batch);
      if (latency !== undefined && n > 0) latency.recordBatch(entries, n, realtimeWords(clock));
      if (n > 0) {
        const wrote = sink.write(entries, n);
        if (wrote !== undefined) {
          try {
            await wrote;
          } catch (e) {
            if (!rewind(e)) throw e;
          }
          // Waiting on the sink's I/O let signals and timers in already.
          lastYield = monotonicMs();
        }
        count += n;
      }
      const now = monotonicMs();
      if (reader.position !== before) {
        uncommitted = true;
        strategy.reset();
      }
      // Store read_ptr once caught up (at most every millisecond), or every commit interval while
      // busy: always after the sink made the entries durable.
      const since = now - lastCommit;
      const caughtUp = reader.position === before;
      if (uncommitted && !caughtUp && since >= COMMIT_INTERVAL_MS && sink.durable !== undefined) {
        // Busy, with acknowledgements in flight: store what is durable already, without waiting.
        const durable = sink.durable();
        if (durable > committed) {
          const cursor = reader.position;
          reader.commitPosition(durable);
          reader.seek(cursor);
          committed = durable;
        }
        lastCommit = now;
      } else if (
        uncommitted && (since >= COMMIT_INTERVAL_MS || (caughtUp && since >= CAUGHT_UP_COMMIT_MS))
      ) {
        const p = persist();
        if (p !== undefined) {
          try {
            await p;
          } catch (e) {
            if (!rewind(e)) throw e;
          }
        }
        lastCommit = now;
      }
      if (now - lastBeat >= 250) {
        realtimeWords(clock);
        reader.heartbeat(clock[0]!, clock[1]!);
        lastBeat = now;
      }
      if (progress && now - lastShow >= 250) {
        lastShow = now;
        const lag = reader.available();
        Deno.stderr.writeSync(
          new TextEncoder().encode(
            `\r${tag}: ${count} ${sink.unit}, ${
              Math.round(count / ((now - t0) / 1000))
            }/s, lag ${lag}, lost ${reader.lost}   `,
          ),
        );
      }
      if (reader.position === before && now - lastIdentity >= IDENTITY_CHECK_MS) {
        // Caught up: is the name still ours? A re-created segment is a new incarnation.
        lastIdentity = now;
        const identity = seg.identity();
        if (identity === "replaced") {
          replaced = true;
          break;
        }
        if (identity === "removed" && !toldRemoved) {
          say(`${tag}: segment ${o.name} was removed; waiting for its writer or a new segment`);
          toldRemoved = true;
        }
      }
      if (reader.position === before && pending === undefined) {
        const wait = strategy.idle(hasWork);
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
  if (progress) Deno.stderr.writeSync(new TextEncoder().encode("\r\x1b[K"));
  // Drain: everything read is made durable before the last read_ptr. A batch the sink could not
  // make durable stays uncovered by read_ptr (the cursor moves back to it) and is read again on
  // the next start.
  try {
    if (pending !== undefined) await pending;
    await persist();
  } catch (e) {
    if (!rewind(e)) throw e;
    commit();
  }
  const seconds = (monotonicMs() - t0) / 1000;
  console.log(
    `${tag}: wrote ${count} ${sink.unit} to ${sink.target} in ${
      seconds.toFixed(3)
    } s; lost ${reader.lost}; read_ptr ${reader.position} (${
      replaced ? `segment ${o.name} was re-created` : stopSignal()
    })`,
  );
  if (latency !== undefined && o.latency !== undefined) {
    Deno.writeTextFileSync(o.latency, JSON.stringify(latency));
  }
  return replaced ? REATTACH : ExitCode.OK;
}
