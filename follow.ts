/**
 * `deno task follow nats://HOST:PORT/STREAM`: runs on any host and writes exactly the CSV a local
 * reporter writes for the same segment (same header, rows and epoch rotation, byte for byte),
 * from the messages the bridge published. Exactly once across its own kill -9: the file's last
 * row is its position, as for the reporter, and on start it skips the messages the file holds.
 *
 * @module
 */
import {
  ExitCode,
  fsyncFlag,
  NatsError,
  onStopSignals,
  outFlag,
  parse,
  parseProgramArgs,
  report,
  sleep,
  UsageError,
} from "./cli.ts";
import { DEFAULT_NAME, MAX_STREAM_BATCH } from "./layout.ts";
import { runFollowLoop } from "./follow_loop.ts";
import {
  connectNats,
  ensureStream,
  manager,
  NATS_FLAGS,
  type NatsTarget,
  parseNatsDestination,
  streamSubject,
} from "./nats.ts";
import { CsvFileSink } from "./sinks/csv_file.ts";

const HELP = `Usage: deno task follow nats://HOST:PORT/STREAM [options]

Reads the stream a bridge publishes into and writes exactly the CSV a local reporter writes for
the same segment, exactly once across crashes. Waits for the stream if the bridge has not made it
yet. Follows live; SIGINT/SIGTERM stop it (exit 0).

Arguments:
  URL               nats://[USER:PASS@|TOKEN@]HOST:PORT/STREAM, or tls://... for TLS

Options:
  --name NAME       segment name the subject is derived from: rpt.<name without "/">
  --subject SUBJ    subject to read; with neither flag, the stream's one bridge subject (the
                    one holding its messages; several are exit 2, listed), or for an empty
                    stream its one subject, else rpt.<${DEFAULT_NAME} without "/">
  --out FILE        output file (default follow.csv in the working directory)
  --fsync MODE      none (default) or batch: fdatasync every 100 ms while rows arrive
  --creds FILE      NATS credentials file (user JWT and nkey seed)
  --tls-ca FILE     CA certificate that signed the server's certificate (implies TLS)
  --quiet           no notices, only errors and the summary
  --latency FILE    record publication-to-row latency of every entry; write it to FILE as JSON
                    on exit (for the bench)
  -h, --help        show this help

Exit status: 0 ok, 2 bad arguments or several subjects in the stream, 5 output file cannot be opened or written, 8 output file
does not match the stream, 10 URL not nats:// or tls://, 11 no or bad stream name,
12 credentials refused, 13 stream does not capture the subject, 14 TLS failed, 16 JetStream
request refused, 17 host:port outside the --allow-net grant, 18 a Deno permission missing,
20 an epoch's schema missing from the stream or damaged, or a message of another schema, or
an Rpt-Entry-Size that is invalid, does not hold the schema, differs within an epoch or does
not match the message's data.`;

/** Parsed follow options. */
export interface FollowOptions {
  target: NatsTarget;
  subject: string;
  /** Whether `--subject` or `--name` chose the subject; else the stream's one subject is used. */
  subjectGiven: boolean;
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
    ...NATS_FLAGS,
    out: { type: "string" },
    fsync: { type: "string" },
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
  const { target, subject, creds, tlsCa } = parseNatsDestination("follow", positionals[0]!, values);
  const fsync = fsyncFlag("follow", values.fsync);
  const out = outFlag("follow", values.out, "follow.csv");
  return {
    target,
    subject,
    subjectGiven: values.subject !== undefined || values.name !== undefined,
    out,
    fsync,
    creds,
    tlsCa,
    quiet: values.quiet === true,
    latency: values.latency as string | undefined,
  };
}

/** Runs follow with `args`; resolves to the exit status. */
export async function main(args: string[]): Promise<number> {
  const o = parseProgramArgs("follow", HELP, () => parseFollowArgs(args));
  if (typeof o === "number") return o;
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
      // waited for (said once), not an error; so is a JetStream that does not answer in time (a
      // cluster still electing its leaders).
      let told = false;
      for (;;) {
        try {
          if (!o.subjectGiven) {
            o.subject = await streamSubject(jsm, o.target.stream, o.subject);
            say(`follow: following subject ${o.subject} of stream ${o.target.stream}`);
          }
          await ensureStream(jsm, o.target.stream, o.subject, false, say);
          break;
        } catch (e) {
          if (!(e instanceof NatsError)) throw e;
          const missing = e.exitCode === ExitCode.NATS_STREAM_MISSING;
          if (!missing && !(e.exitCode === ExitCode.NATS_REFUSED && /timeout/i.test(e.message))) {
            throw e;
          }
          if (!told) {
            say(
              missing
                ? `follow: waiting for stream ${o.target.stream} (start the bridge)`
                : `follow: waiting for stream ${o.target.stream} (${e.message})`,
            );
            told = true;
          }
        }
        if (stopSignal !== undefined) {
          console.log(`follow: stopped (${stopSignal}) before stream ${o.target.stream} appeared`);
          return ExitCode.OK;
        }
        await sleep(250);
      }
      const newSink = () =>
        new CsvFileSink({
          path: o.out,
          fsync: o.fsync,
          batch: MAX_STREAM_BATCH,
          tag: "follow",
          readPtr: false,
        });
      return await runFollowLoop(
        { stream: o.target.stream, subject: o.subject, out: o.out, latency: o.latency },
        nc,
        jsm,
        newSink,
        () => stopSignal,
        (f) => (onStop = f),
        say,
      );
    } finally {
      await nc.close().catch(() => {});
    }
  } catch (e) {
    return report("follow", e);
  } finally {
    removeSignals();
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
