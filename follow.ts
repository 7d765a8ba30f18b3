/**
 * `deno task follow nats://HOST:PORT/STREAM`: runs on any host and writes exactly the CSV a local
 * reporter writes for the same segment (same header, rows and epoch rotation, byte for byte),
 * from the messages the bridge published. Exactly once across its own kill -9: the file's last
 * row is its position, as for the reporter, and on start it skips the messages the file holds.
 *
 * @module
 */
import { DeliverPolicy, jetstream } from "@nats-io/jetstream";
import {
  ExitCode,
  nameFlag,
  NatsError,
  onStopSignals,
  OutputError,
  parse,
  report,
  sleep,
  UsageError,
} from "./cli.ts";
import { Histogram } from "./histogram.ts";
import {
  DEFAULT_NAME,
  ENTRY_SIZE,
  MAX_STREAM_BATCH,
  STREAM_KIND_ENTRIES,
  STREAM_KIND_LOST,
} from "./layout.ts";
import {
  connectNats,
  defaultSubject,
  ensureStream,
  manager,
  type NatsTarget,
  parseNatsUrl,
  validateSubject,
} from "./nats.ts";
import { CsvFileSink } from "./sinks/csv_file.ts";
import { type StreamPosition, streamPosition } from "./sinks/jetstream.ts";
import { ENTRY_WORDS } from "./ring.ts";

const HELP = `Usage: deno task follow nats://HOST:PORT/STREAM [options]

Reads the stream a bridge publishes into and writes exactly the CSV a local reporter writes for
the same segment, exactly once across crashes. Waits for the stream if the bridge has not made it
yet. Follows live; SIGINT/SIGTERM stop it (exit 0).

Arguments:
  URL               nats://[USER:PASS@|TOKEN@]HOST:PORT/STREAM, or tls://... for TLS

Options:
  --name NAME       segment name the subject is derived from (default ${DEFAULT_NAME})
  --subject SUBJ    subject to read (default rpt.<segment name without "/">: rpt.rpt_sys_shm)
  --out FILE        output file (default follow.csv in the working directory)
  --fsync MODE      none (default) or batch: fdatasync every 100 ms while rows arrive
  --creds FILE      NATS credentials file (user JWT and nkey seed)
  --tls-ca FILE     CA certificate that signed the server's certificate (implies TLS)
  --quiet           no notices, only errors and the summary
  --latency FILE    record publication-to-row latency of every entry; write it to FILE as JSON
                    on exit (for the bench)
  -h, --help        show this help

Exit status: 0 ok, 2 bad arguments, 5 output file cannot be opened or written, 8 output file
does not match the stream, 10 URL not nats:// or tls://, 11 no or bad stream name,
12 credentials refused, 13 stream does not capture the subject, 14 TLS failed, 16 JetStream
request refused, 17 host:port outside the --allow-net grant.`;

/** Parsed follow options. */
export interface FollowOptions {
  target: NatsTarget;
  subject: string;
  out: string;
  fsync: "none" | "batch";
  creds?: string | undefined;
  tlsCa?: string | undefined;
  quiet: boolean;
  latency?: string | undefined;
}

/**
 * Parses follow arguments; throws a UsageError or a NatsError naming the bad value.
 *
 * @example
 * ```ts
 * import { parseFollowArgs } from "./follow.ts";
 * const o = parseFollowArgs(["nats://127.0.0.1:4222/RPT"]);
 * console.assert(o !== "help" && o.out === "follow.csv");
 * ```
 */
export function parseFollowArgs(args: string[]): FollowOptions | "help" {
  const { values, positionals } = parse(args, {
    name: { type: "string" },
    subject: { type: "string" },
    out: { type: "string" },
    fsync: { type: "string" },
    creds: { type: "string" },
    "tls-ca": { type: "string" },
    quiet: { type: "boolean" },
    latency: { type: "string" },
    help: { type: "boolean", short: "h" },
  }, true);
  if (values.help) return "help";
  if (positionals.length !== 1) {
    throw new UsageError(
      `Cannot start follow as it takes one server URL: current value is ${
        JSON.stringify(positionals.join(" "))
      }`,
    );
  }
  const target = parseNatsUrl(positionals[0]!, "follow");
  const name = nameFlag("start follow", values.name);
  const subject = validateSubject(
    "follow",
    (values.subject as string | undefined) ?? defaultSubject(name),
  );
  const fsync = (values.fsync as string | undefined) ?? "none";
  if (fsync !== "none" && fsync !== "batch") {
    throw new UsageError(
      `Cannot start follow as --fsync must be none or batch: current value is ${
        JSON.stringify(fsync)
      }`,
    );
  }
  const out = (values.out as string | undefined) ?? "follow.csv";
  if (out === "") {
    throw new UsageError('Cannot start follow as --out must be a file path: current value is ""');
  }
  return {
    target,
    subject,
    out,
    fsync,
    creds: values.creds as string | undefined,
    tlsCa: values["tls-ca"] as string | undefined,
    quiet: values.quiet === true,
    latency: values.latency as string | undefined,
  };
}

/** How often rows are checked (and synced with `--fsync batch`) while they arrive. */
const FLUSH_MS = 100;

/** Runs follow with `args`; resolves to the exit status. */
export async function main(args: string[]): Promise<number> {
  let options: FollowOptions | "help";
  try {
    options = parseFollowArgs(args);
  } catch (e) {
    return report("follow", e);
  }
  if (options === "help") {
    console.log(HELP);
    return ExitCode.OK;
  }
  const o = options;
  const say = (line: string) => {
    if (!o.quiet) console.error(line);
  };
  let stopSignal: Deno.Signal | undefined;
  let onStop = () => {};
  const removeSignals = onStopSignals((s) => {
    stopSignal = s;
    onStop();
  });
  try {
    const nc = await connectNats(o.target, {
      program: "follow",
      creds: o.creds,
      tlsCa: o.tlsCa,
      say,
      stopped: () => stopSignal !== undefined,
    });
    if (nc === undefined) {
      console.log(`follow: stopped (${stopSignal}) before ${o.target.display} answered`);
      return ExitCode.OK;
    }
    try {
      const jsm = await manager(nc);
      // Like the reporter waiting for its segment: a stream the bridge has not created yet is
      // waited for (said once), not an error.
      let told = false;
      for (;;) {
        try {
          await ensureStream(jsm, o.target.stream, o.subject, false, say);
          break;
        } catch (e) {
          if (!(e instanceof NatsError) || e.exitCode !== ExitCode.NATS_STREAM_MISSING) throw e;
          if (!told) {
            say(`follow: waiting for stream ${o.target.stream} (start the bridge)`);
            told = true;
          }
        }
        if (stopSignal !== undefined) {
          console.log(`follow: stopped (${stopSignal}) before stream ${o.target.stream} appeared`);
          return ExitCode.OK;
        }
        await sleep(250);
      }
      return await follow(o, nc, jsm, () => stopSignal, (f) => (onStop = f), say);
    } finally {
      await nc.close().catch(() => {});
    }
  } catch (e) {
    return report("follow", e);
  } finally {
    removeSignals();
  }
}

async function follow(
  o: FollowOptions,
  nc: Parameters<typeof jetstream>[0],
  jsm: Awaited<ReturnType<typeof manager>>,
  stopSignal: () => Deno.Signal | undefined,
  setOnStop: (f: () => void) => void,
  say: (line: string) => void,
): Promise<number> {
  const stream = o.target.stream;
  const where = `stream ${stream} subject ${o.subject}`;
  const newSink = () =>
    new CsvFileSink({
      path: o.out,
      fsync: o.fsync,
      batch: MAX_STREAM_BATCH,
      tag: "follow",
      readPtr: false,
    });
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
  jsm: Awaited<ReturnType<typeof manager>>,
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

if (import.meta.main) Deno.exit(await main(Deno.args));
