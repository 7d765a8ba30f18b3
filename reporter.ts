/**
 * `deno task reporter ID`: a sidecar that copies every new entry of the ring into its own CSV
 * file, storing its read position in the segment only after the rows are written.
 *
 * @module
 */
import {
  ExitCode,
  intFlag,
  nameFlag,
  onStopSignals,
  OutputError,
  parse,
  report,
  sleep,
  UsageError,
} from "./cli.ts";
import { csvHeader, makeFormatter, maxRowBytes } from "./csv.ts";
import { monotonicMs, realtimeWords } from "./ffi/posix.ts";
import { createIdleStrategy, EventLoopYield, IDLE_STRATEGIES, type IdleName } from "./idle.ts";
import { DEFAULT_NAME, MAX_READERS } from "./layout.ts";
import { OutputFile } from "./output.ts";
import { claimRole } from "./ownership.ts";
import { ENTRY_WORDS, RingReader } from "./ring.ts";
import { Segment, SegmentNotFoundError, SegmentNotReadyError } from "./segment.ts";
import { Histogram } from "./bench/histogram.ts";

const HELP = `Usage: deno task reporter ID [options]

Copies every new entry of the ring into a CSV file, exactly once across crashes.

Arguments:
  ID                reader id, 0 to 7

Options:
  --name NAME       segment name (default ${DEFAULT_NAME})
  --out FILE        output file (default output_ID.csv in the working directory)
  --fsync MODE      none (default): rows reach the page cache before read_ptr advances;
                    batch: fdatasync before read_ptr advances (survives power loss)
  --idle MODE       sleep (default, 1 ms between empty polls), spin, backoff or futex
  --batch N         most entries per write, 1 to 65536 (default 4096)
  --quiet           no progress line and no notices, only errors and the summary
  --latency FILE    record publication-to-read latency of every entry; write it to FILE as JSON
                    on exit (for the bench)
  -h, --help        show this help

Exit status: 0 ok, 2 bad arguments, 3 invalid segment, 5 output file cannot be opened or
written, 6 reader id held by a live reporter, 7 system error, 8 output file does not match.`;

/** Parsed reporter options. */
export interface ReporterOptions {
  id: number;
  name: string;
  out: string;
  fsync: "none" | "batch";
  idle: IdleName;
  batch: number;
  quiet: boolean;
  /** `--latency FILE`: where to write the latency histogram on exit. */
  latency?: string | undefined;
}

/**
 * Parses reporter arguments; throws a UsageError naming the bad value.
 *
 * @example
 * ```ts
 * import { parseReporterArgs } from "./reporter.ts";
 * const o = parseReporterArgs(["3"]);
 * console.assert(o !== "help" && o.out === "output_3.csv");
 * ```
 */
export function parseReporterArgs(args: string[]): ReporterOptions | "help" {
  const { values, positionals } = parse(args, {
    name: { type: "string" },
    out: { type: "string" },
    fsync: { type: "string" },
    idle: { type: "string" },
    batch: { type: "string" },
    quiet: { type: "boolean" },
    latency: { type: "string" },
    help: { type: "boolean", short: "h" },
  }, true);
  if (values.help) return "help";
  if (positionals.length === 0) {
    throw new UsageError("Cannot start reporter as reader id is missing: give an id from 0 to 7");
  }
  if (positionals.length > 1) {
    throw new UsageError(
      `Cannot start reporter as it takes one reader id: current value is ${positionals.join(" ")}`,
    );
  }
  const raw = positionals[0]!;
  const id = /^\d+$/.test(raw) ? Number(raw) : NaN;
  if (!Number.isInteger(id) || id < 0 || id >= MAX_READERS) {
    throw new UsageError(
      `Cannot start reporter as reader id must be an integer from 0 to 7: current value is ${
        JSON.stringify(raw)
      }`,
    );
  }
  const name = nameFlag("start reporter", values.name);
  const fsync = (values.fsync as string | undefined) ?? "none";
  if (fsync !== "none" && fsync !== "batch") {
    throw new UsageError(
      `Cannot start reporter as --fsync must be none or batch: current value is ${
        JSON.stringify(fsync)
      }`,
    );
  }
  const idle = (values.idle as string | undefined) ?? "sleep";
  if (!(IDLE_STRATEGIES as readonly string[]).includes(idle)) {
    throw new UsageError(
      `Cannot start reporter as --idle must be one of ${
        IDLE_STRATEGIES.join(", ")
      }: current value is ${JSON.stringify(idle)}`,
    );
  }
  const out = (values.out as string | undefined) ?? `output_${id}.csv`;
  if (out === "") {
    throw new UsageError('Cannot start reporter as --out must be a file path: current value is ""');
  }
  return {
    id,
    name,
    out,
    fsync,
    idle: idle as IdleName,
    batch: intFlag("reporter", "batch", values.batch, 4096, 1, 65536),
    quiet: values.quiet === true,
    // Present only when given, so the parsed options of every other run are unchanged.
    ...(values.latency === undefined ? {} : { latency: values.latency as string }),
  };
}

/** Waits for the segment to exist and be initialised; says so once. Undefined if stopped. */
async function waitForSegment(
  o: ReporterOptions,
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
        say(`reporter ${o.id}: waiting for segment ${o.name} (start the writer)`);
        told = true;
      }
    }
    await sleep(50);
  }
  return undefined;
}

/** Runs the reporter with `args`; resolves to the exit status. */
export async function main(args: string[]): Promise<number> {
  let options: ReporterOptions | "help";
  try {
    options = parseReporterArgs(args);
  } catch (e) {
    return report("reporter", e);
  }
  if (options === "help") {
    console.log(HELP);
    return ExitCode.OK;
  }
  const o = options;
  const tag = `reporter ${o.id}`;
  const say = (line: string) => {
    if (!o.quiet) console.error(line);
  };
  let stopSignal: Deno.Signal | undefined;
  const removeSignals = onStopSignals((s) => (stopSignal = s));
  // Opened and locked (before its tail is read) once the segment is valid and the reader id is
  // held; then kept locked for the reporter's whole life, across passes: one reporter per file.
  let out: OutputFile | undefined;
  try {
    // One pass per incarnation of the segment: when it is re-created under us, drain the old
    // one, then attach to the new one (whose rows go to a fresh file, see OutputFile.rotate).
    for (;;) {
      using seg = await waitForSegment(o, () => stopSignal !== undefined, say);
      if (seg === undefined) {
        console.log(`${tag}: stopped (${stopSignal}) before segment ${o.name} appeared`);
        return ExitCode.OK;
      }
      // Held until this pass ends; the kernel releases it with the descriptor (kill -9 too).
      const taken = claimRole(
        seg,
        o.id,
        (pid) =>
          `Cannot attach reporter as reader id ${o.id} of segment ${o.name} is held by live pid ${pid}`,
      );
      try {
        if (taken.reclaimedFrom !== undefined) {
          say(`${tag}: reclaimed reader id ${o.id} from dead pid ${taken.reclaimedFrom}`);
        }
        // The segment's schema fixes the CSV header; a later pass reconciles with the file as
        // it is now, under the header of that incarnation's schema.
        const header = csvHeader(seg.schema);
        if (out === undefined) out = OutputFile.open(o.out, header);
        else out.refresh(header);
        const result = await run(o, seg, out, () => stopSignal, say);
        if (result !== REATTACH) return result;
      } finally {
        taken.release();
      }
    }
  } catch (e) {
    return report("reporter", e);
  } finally {
    out?.close();
    removeSignals();
  }
}

/** What {@link run} returns when the segment was re-created and the reporter must re-attach. */
const REATTACH = -1;
/** Longest time rows may be written but not yet covered by `read_ptr` while the reporter is busy. */
const COMMIT_INTERVAL_MS = 10;
/**
 * Once caught up, read_ptr is stored at most this often: the check that the file is still ours
 * costs a stat (about 10 us), too much to pay per entry at 100,000 entries/s.
 */
const CAUGHT_UP_COMMIT_MS = 1;
/** How often the reporter checks that its segment's name still refers to its mapping. */
const IDENTITY_CHECK_MS = 500;

async function run(
  o: ReporterOptions,
  seg: Segment,
  out: OutputFile,
  stopSignal: () => Deno.Signal | undefined,
  say: (line: string) => void,
): Promise<number> {
  const tag = `reporter ${o.id}`;
  const buffer = seg.buffer;
  const epoch = seg.info.epoch;
  // The segment's schema fixes the header and the row format: one formatter, built once.
  const schema = seg.schema;
  const formatRows = makeFormatter(schema);
  const reader = new RingReader(buffer, o.id, {
    onLoss: (from, to) =>
      console.error(
        `${tag}: lost entries ${from}..${to - 1} (${to - from}): overwritten before they were read`,
      ),
  });
  if (out.state.repairedBytes > 0) {
    say(`${tag}: removed a partial last line (${out.state.repairedBytes} bytes) from ${o.out}`);
  }
  // Reconcile: the output file is the truth; read_ptr may lag it by one batch after a crash.
  const stored = reader.position;
  const writePtr = reader.writePtr();
  let resume = stored;
  let last = out.state.last;
  if (out.state.schemaChanged) {
    const aside = out.rotate(last?.epoch ?? 0n);
    say(`${tag}: ${o.out} was written under another schema; moved it to ${aside}`);
    last = undefined;
  }
  if (last !== undefined && last.epoch === epoch) {
    if (last.seq + 1 > writePtr) {
      throw new OutputError(
        `Cannot resume ${o.out} as its last seq is ${last.seq} but segment ${o.name} has write_ptr ${writePtr}`,
        ExitCode.OUTPUT_MISMATCH,
      );
    }
    resume = Math.max(last.seq + 1, stored);
  } else if (last !== undefined) {
    const aside = out.rotate(last.epoch);
    say(
      `${tag}: segment ${o.name} was re-created (epoch ${last.epoch} -> ${epoch}); moved the old rows to ${aside}`,
    );
  }
  if (resume !== stored) {
    say(`${tag}: ${o.out} ends at seq ${resume - 1}; read_ptr ${stored} -> ${resume}`);
  }
  reader.commitPosition(resume);
  if (o.fsync === "batch") out.sync();

  const { strategy, fellBack } = createIdleStrategy(o.idle, buffer);
  if (fellBack) say(`${tag}: futex is not available on ${Deno.build.os}; using backoff`);
  say(`${tag}: reading ${o.name} from seq ${resume} into ${o.out} (idle ${strategy.name})`);

  const epochTail = new TextEncoder().encode(`,${epoch}\n`);
  const entries = new Uint32Array(o.batch * ENTRY_WORDS);
  const text = new Uint8Array(o.batch * (maxRowBytes(schema) + epochTail.length));
  const clock = new Uint32Array(2);
  const latency = o.latency === undefined ? undefined : new Histogram();

  using loop = new EventLoopYield();
  const progress = !o.quiet && Deno.stderr.isTerminal();
  let rows = 0;
  const t0 = monotonicMs();
  let lastBeat = -Infinity;
  let lastYield = t0;
  let lastShow = t0;
  let lastIdentity = t0;
  let replaced = false;
  let toldRemoved = false;
  let uncommitted = false;
  let lastCommit = t0;
  const persist = () => {
    if (o.fsync === "batch") out.sync();
    out.verify();
    reader.commit();
    uncommitted = false;
  };
  // Asked by a blocking idle strategy (futex) right before it blocks: store the position first,
  // so read_ptr is never left behind the file for a whole wait.
  const hasWork = () => {
    if (uncommitted) persist();
    return reader.available() > 0;
  };
  reader.heartbeat(realtimeWords(clock)[0]!, clock[1]!);
  while (stopSignal() === undefined) {
    const before = reader.position;
    const n = reader.readBatch(entries, o.batch);
    if (latency !== undefined && n > 0) latency.recordBatch(entries, n, realtimeWords(clock));
    const now = monotonicMs();
    if (n > 0) {
      out.append(text.subarray(0, formatRows(entries, n, text, 0, epochTail)));
      rows += n;
    }
    if (reader.position !== before) {
      uncommitted = true;
      strategy.reset();
    }
    // Store read_ptr once caught up (at most every millisecond), or every 10 ms while busy: always
    // after the rows are written (and synced with --fsync batch) and the file is checked.
    const since = now - lastCommit;
    if (
      uncommitted &&
      (since >= COMMIT_INTERVAL_MS || (reader.position === before && since >= CAUGHT_UP_COMMIT_MS))
    ) {
      persist();
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
          `\r${tag}: ${rows} rows, ${
            Math.round(rows / ((now - t0) / 1000))
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
    if (reader.position === before) {
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
  if (progress) Deno.stderr.writeSync(new TextEncoder().encode("\r\x1b[K"));
  persist();
  const seconds = (monotonicMs() - t0) / 1000;
  console.log(
    `${tag}: wrote ${rows} rows to ${o.out} in ${
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

if (import.meta.main) Deno.exit(await main(Deno.args));
