/**
 * `deno task bridge ID nats://HOST:PORT/STREAM`: a reporter whose output is a NATS JetStream
 * stream instead of a CSV file. It holds reader id `ID` like any reporter and publishes every
 * entry exactly once (see `sinks/jetstream.ts` for the argument, `layout.ts` for the format).
 *
 * @module
 */
import { jetstream } from "@nats-io/jetstream";
import {
  ExitCode,
  fromFlag,
  idleFlag,
  intFlag,
  NatsError,
  onStopSignals,
  parse,
  parseProgramArgs,
  readerIdArg,
  report,
  UsageError,
} from "./cli.ts";
import type { IdleName } from "./idle.ts";
import { DEFAULT_NAME, MAX_STREAM_BATCH } from "./layout.ts";
import {
  connectNats,
  ensureStream,
  manager,
  NATS_FLAGS,
  type NatsTarget,
  parseNatsDestination,
} from "./nats.ts";
import type { From } from "./sinks/sink.ts";
import { runReadLoop } from "./read_loop.ts";
import { JetStreamSink } from "./sinks/jetstream.ts";

/** Entries per message by default: chosen from `deno task bench` (docs/performance.md). */
export const DEFAULT_BRIDGE_BATCH = 4096;
/** Publishes awaiting acknowledgement by default: chosen from `deno task bench`. */
export const DEFAULT_INFLIGHT = 4;
/** nats-server's default `max_payload`, assumed only before the server's info arrives. */
const DEFAULT_MAX_PAYLOAD = 1 << 20;

const HELP = `Usage: deno task bridge ID nats://HOST:PORT/STREAM [options]

Publishes every new entry of the ring into a NATS JetStream stream, exactly once across crashes
of the bridge and of the server. Creates the stream (file storage) when it is missing.

Arguments:
  ID                 reader id, 0 to 7
  URL                nats://[USER:PASS@|TOKEN@]HOST:PORT/STREAM, or tls://... for TLS

Options:
  --name NAME        segment name (default ${DEFAULT_NAME})
  --subject SUBJ     subject of the messages (default rpt.<segment name without "/">,
                     "." as "_": rpt.rpt_sys_shm)
  --idle MODE        sleep (default, 1 ms between empty polls), spin, backoff or futex
  --batch N          most entries per message, 1 to ${MAX_STREAM_BATCH} (default ${DEFAULT_BRIDGE_BATCH}); fewer
                     when they would pass 4 MiB or the server's max_payload less 1024 bytes
  --inflight N       most publishes awaiting acknowledgement, 1 to 64 (default ${DEFAULT_INFLIGHT})
  --from WHERE       where to start when the stream holds no message of this segment's epoch:
                     persisted (default, read_ptrs[ID]), oldest, latest or a seq; a position the
                     stream holds wins
  --creds FILE       NATS credentials file (user JWT and nkey seed)
  --tls-ca FILE      CA certificate that signed the server's certificate (implies TLS)
  --quiet            no progress line and no notices, only errors and the summary
  -h, --help         show this help

Exit status: 0 ok, 2 bad arguments, 3 invalid segment, 6 reader id held by a live process,
7 system error, 8 stream does not match the segment, 10 URL not nats:// or tls://, 11 no or bad
stream name, 12 credentials refused, 13 stream does not capture the subject, 14 TLS failed,
16 JetStream request refused, 17 host:port outside the --allow-net grant, 18 a Deno
permission missing, 21 the server's max_payload cannot hold one entry or the schema block.`;

/** Parsed bridge options. */
export interface BridgeOptions {
  id: number;
  target: NatsTarget;
  name: string;
  subject: string;
  idle: IdleName;
  batch: number;
  inflight: number;
  /** `--from`: where to start when the stream holds no position yet; absent when not given. */
  from?: From;
  creds?: string | undefined;
  tlsCa?: string | undefined;
  quiet: boolean;
}

/**
 * Parses bridge arguments; throws a UsageError or a NatsError naming the bad value.
 *
 * @example
 * ```ts
 * import { parseBridgeArgs } from "./bridge.ts";
 * const o = parseBridgeArgs(["3", "nats://127.0.0.1:4222/RPT"]);
 * console.assert(o !== "help" && o.subject === "rpt.rpt_sys_shm");
 * ```
 */
export function parseBridgeArgs(args: string[]): BridgeOptions | "help" {
  const { values, positionals } = parse(args, {
    ...NATS_FLAGS,
    idle: { type: "string" },
    batch: { type: "string" },
    inflight: { type: "string" },
    from: { type: "string" },
    quiet: { type: "boolean" },
    help: { type: "boolean", short: "h" },
  }, true);
  if (values.help) return "help";
  if (positionals.length !== 2) {
    throw new UsageError(
      `Cannot start bridge as it takes a reader id and a server URL: current value is ${
        JSON.stringify(positionals.join(" "))
      }`,
    );
  }
  const id = readerIdArg("bridge", positionals[0]!);
  const { target, name, subject, creds, tlsCa } = parseNatsDestination(
    "bridge",
    positionals[1]!,
    values,
  );
  const idle = idleFlag("bridge", values.idle);
  return {
    id,
    target,
    name,
    subject,
    idle,
    batch: intFlag("bridge", "batch", values.batch, DEFAULT_BRIDGE_BATCH, 1, MAX_STREAM_BATCH),
    inflight: intFlag("bridge", "inflight", values.inflight, DEFAULT_INFLIGHT, 1, 64),
    ...(values.from === undefined ? {} : { from: fromFlag("bridge", values.from) }),
    creds,
    tlsCa,
    quiet: values.quiet === true,
  };
}

/** Runs the bridge with `args`; resolves to the exit status. */
export async function main(args: string[]): Promise<number> {
  const o = parseProgramArgs("bridge", HELP, () => parseBridgeArgs(args));
  if (typeof o === "number") return o;
  const tag = `bridge ${o.id}`;
  const say = (line: string) => {
    if (!o.quiet) console.error(line);
  };
  let stopped = false;
  const removeSignals = onStopSignals(() => (stopped = true));
  try {
    const nc = await connectNats(o.target, {
      program: tag,
      creds: o.creds,
      tlsCa: o.tlsCa,
      say,
      stopped: () => stopped,
    });
    if (nc === undefined) {
      console.log(`${tag}: stopped before ${o.target.display} answered`);
      return ExitCode.OK;
    }
    try {
      const jsm = await manager(nc);
      // A stream that exists must capture the subject: checked now, before waiting for the
      // segment. A missing one is created only once the reader id is held (the sink's start).
      try {
        await ensureStream(jsm, o.target.stream, o.subject, false, say);
      } catch (e) {
        if (!(e instanceof NatsError) || e.exitCode !== ExitCode.NATS_STREAM_MISSING) throw e;
      }
      const js = jetstream(nc);
      return await runReadLoop(
        {
          program: "bridge",
          tag,
          id: o.id,
          name: o.name,
          idle: o.idle,
          batch: o.batch,
          quiet: o.quiet,
          from: o.from,
        },
        () =>
          new JetStreamSink({
            js,
            jsm,
            stream: o.target.stream,
            subject: o.subject,
            inflight: o.inflight,
            ackTimeoutMs: 5000,
            tag,
            stopped: () => stopped,
            // Known once connected; the default is nats-server's own (1 MiB).
            maxPayload: () => nc.info?.max_payload ?? DEFAULT_MAX_PAYLOAD,
          }),
      );
    } finally {
      await nc.close().catch(() => {});
    }
  } catch (e) {
    return report("bridge", e);
  } finally {
    removeSignals();
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
