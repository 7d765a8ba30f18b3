/**
 * `deno task status`: what an operator looks at first (like Aeron's AeronStat). Maps the segment
 * read-only and shows the layout, the writer, `write_ptr` and the publication rate, and for each
 * reader id its position, lag, losses and owner. It never changes the segment. With `--serve` it
 * serves the same objects over HTTP for Prometheus (see metrics.ts).
 *
 * @module
 */
import { ExitCode, nameFlag, onStopSignals, parse, report, sleep, UsageError } from "./cli.ts";
import { DEFAULT_NAME } from "./layout.ts";
import { DEFAULT_LISTEN, type ListenAddress, parseListenAddress, serveMetrics } from "./metrics.ts";
import { type ReaderStatus, readerUnused, readStatus, type Status } from "./segment_status.ts";
import { Segment } from "./segment.ts";

function age(ms: number | null): string {
  if (ms === null) return "-";
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
}

function duration(ns: number | null): string {
  if (ns === null) return "gone";
  if (ns < 1e3) return `${ns} ns`;
  if (ns < 1e6) return `${(ns / 1e3).toFixed(1)} us`;
  if (ns < 1e9) return `${(ns / 1e6).toFixed(1)} ms`;
  return `${(ns / 1e9).toFixed(1)} s`;
}

/**
 * One reader id's line of the table. An id never attached ({@link readerUnused}) is `unused`,
 * with no lag time and no lapped flag: nobody is behind.
 */
function readerRow(r: ReaderStatus): string {
  const unused = readerUnused(r);
  return [
    String(r.id).padEnd(3),
    String(r.read_ptr).padEnd(15),
    String(r.lag).padEnd(12),
    (unused ? "-" : duration(r.lag_ns)).padEnd(10),
    (unused ? "-" : r.lapped ? "yes" : "no").padEnd(7),
    String(r.lost).padEnd(11),
    String(r.owner_pid || "-").padEnd(8),
    unused ? "unused" : r.state +
      (r.heartbeat_age_ms !== null && r.owner_pid ? ` (${age(r.heartbeat_age_ms)})` : ""),
  ].join(" ");
}

/**
 * Formats a status for a terminal; `rate` overrides the average rate (for `--watch`).
 *
 * @example
 * ```ts ignore
 * import { formatStatus } from "./status.ts";
 * import { readStatus } from "./segment_status.ts";
 * console.log(formatStatus(readStatus(seg)));
 * ```
 */
export function formatStatus(s: Status, rate = s.rate): string {
  const created = new Date(Number(BigInt(s.epoch) / 1_000_000n)).toISOString();
  const lines = [
    `segment ${s.name}  layout v${s.version}  capacity ${s.capacity}  entry size ${s.entry_size} bytes  epoch ${s.epoch} (created ${created})`,
    `writer  pid ${s.writer.pid || "-"}  ${s.writer.state}  heartbeat ${
      age(s.writer.heartbeat_age_ms)
    } ago  write_ptr ${s.write_ptr}  rate ${Math.round(rate)}/s`,
    `schema  ${s.schema.default ? "default" : "custom"} ${s.schema.fingerprint}  ${
      s.schema.fields.map((f) =>
        `${f.name} ${f.type}${f.scale ? ` scale ${f.scale}` : ""} @0x${f.offset.toString(16)}`
      ).join(", ")
    }`,
    "",
    "id  read_ptr        lag          lag time   lapped  lost        owner    state",
  ];
  for (const r of s.readers) lines.push(readerRow(r));
  return lines.join("\n");
}

const HELP = `Usage: deno task status [options]

Shows a segment's layout (capacity, entry size, epoch), payload schema, writer, write_ptr and
rate, and each reader id's position, lag, losses and owner (an id never attached is unused).
Maps the segment read-only: it never changes it.

Options:
  --name NAME              segment name (default ${DEFAULT_NAME}); with --serve it may be repeated
  --watch                  refresh every second (in place on a terminal) until SIGINT
  --json                   print one JSON object (with --watch: one per line)
  --serve [[HOST:]PORT]    serve /metrics (Prometheus) and /status.json over HTTP until SIGINT
                           (default ${DEFAULT_LISTEN}; PORT alone means 127.0.0.1). Another
                           address needs its own grant: deno run --allow-ffi
                           --allow-net=HOST:PORT status.ts --serve HOST:PORT
  -h, --help               show this help

Exit status: 0 ok, 2 bad arguments, 3 damaged segment, 4 no such segment, 7 system error,
19 cannot listen (address in use, not on this machine, or not granted).`;

/** `--serve` with no value (last, or followed by a flag) means the default address. */
function defaultServe(args: string[]): string[] {
  return args.map((a, i) =>
    a === "--serve" && (args[i + 1] === undefined || args[i + 1]!.startsWith("-"))
      ? `--serve=${DEFAULT_LISTEN}`
      : a
  );
}

/** Maps segment `name` read-only and reads its status. */
function lookAtSegment(name: string): Status {
  using seg = Segment.open(name, { readOnly: true });
  return readStatus(seg);
}

/** Runs the status tool with `args`; resolves to the exit status. */
export async function main(args: string[]): Promise<number> {
  let names: string[];
  let watch: boolean;
  let json: boolean;
  let serve: ListenAddress | undefined;
  try {
    const { values } = parse(defaultServe(args), {
      name: { type: "string", multiple: true },
      watch: { type: "boolean" },
      json: { type: "boolean" },
      serve: { type: "string" },
      help: { type: "boolean", short: "h" },
    });
    if (values.help) {
      console.log(HELP);
      return ExitCode.OK;
    }
    const given = (values.name as unknown as string[] | undefined) ?? [undefined];
    names = given.map((n) => nameFlag("show status", n));
    watch = values.watch === true;
    json = values.json === true;
    if (typeof values.serve === "string") {
      if (watch || json) {
        throw new UsageError(
          `Cannot serve metrics as --serve cannot be combined with ${watch ? "--watch" : "--json"}`,
        );
      }
      serve = parseListenAddress(values.serve);
    } else if (names.length > 1) {
      throw new UsageError(
        `Cannot show status as --name may be given once without --serve: current values are ${
          names.join(", ")
        }`,
      );
    }
  } catch (e) {
    return report("status", e);
  }
  if (serve !== undefined) {
    const stopping = new AbortController();
    const removeSignals = onStopSignals(() => stopping.abort());
    try {
      await serveMetrics({ names, address: serve, read: lookAtSegment, signal: stopping.signal });
      return ExitCode.OK;
    } catch (e) {
      return report("status", e);
    } finally {
      removeSignals();
    }
  }
  const name = names[0]!;
  let stop = false;
  const removeSignals = onStopSignals(() => (stop = true));
  try {
    const tty = Deno.stdout.isTerminal();
    let previous: { at: number; writePtr: number } | undefined;
    do {
      const snapshot = lookAtSegment(name);
      const at = performance.now();
      let rate = snapshot.rate;
      if (previous && at > previous.at) {
        rate = ((snapshot.write_ptr - previous.writePtr) * 1000) / (at - previous.at);
      }
      previous = { at, writePtr: snapshot.write_ptr };
      if (json) console.log(JSON.stringify(watch ? { ...snapshot, rate } : snapshot));
      else if (watch && tty) console.log(`\x1b[H\x1b[2J${formatStatus(snapshot, rate)}`);
      else console.log(formatStatus(snapshot, rate) + (watch ? "\n" : ""));
      if (!watch) break;
      for (let i = 0; i < 10 && !stop; i++) await sleep(100);
    } while (!stop);
    return ExitCode.OK;
  } catch (e) {
    return report("status", e);
  } finally {
    removeSignals();
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
