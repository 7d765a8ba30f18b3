/**
 * `deno task reporter ID`: a sidecar that copies every new entry of the ring into its own CSV
 * file, storing its read position in the segment only after the rows are written.
 *
 * @module
 */
import {
  fromFlag,
  fsyncFlag,
  idleFlag,
  intFlag,
  nameFlag,
  outFlag,
  parse,
  parseProgramArgs,
  readerIdArg,
  report,
  UsageError,
} from "./cli.ts";
import type { IdleName } from "./idle.ts";
import { DEFAULT_NAME } from "./layout.ts";
import { OutputFile } from "./output.ts";
import { runReadLoop } from "./read_loop.ts";
import { Segment } from "./segment.ts";
import { CsvFileSink } from "./sinks/csv_file.ts";
import type { From, Sink } from "./sinks/sink.ts";
import { isDatabasePath, SqliteSink } from "./sinks/sqlite.ts";

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
  --from WHERE      where to start when the output holds no position yet: persisted (default,
                    read_ptrs[ID]), oldest (the oldest entry the ring holds), latest (only new
                    entries) or a seq; a position the output holds wins
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
  /** `--from`: where to start when the output holds no position yet; absent when not given. */
  from?: From;
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
    from: { type: "string" },
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
  const id = readerIdArg("reporter", positionals[0]!);
  const name = nameFlag("start reporter", values.name);
  const fsync = fsyncFlag("reporter", values.fsync);
  const idle = idleFlag("reporter", values.idle);
  const out = outFlag("reporter", values.out, `output_${id}.csv`);
  return {
    id,
    name,
    out,
    fsync,
    idle,
    batch: intFlag("reporter", "batch", values.batch, 4096, 1, 65536),
    quiet: values.quiet === true,
    // Present only when given, so the parsed options of every other run are unchanged.
    ...(values.from === undefined ? {} : { from: fromFlag("reporter", values.from) }),
    ...(values.latency === undefined ? {} : { latency: values.latency as string }),
  };
}

/** The reporter's sink for its output: SQLite for `.db`, `.sqlite` or `.sqlite3`, else CSV. */
function outputSink(
  o: { path: string; fsync: "none" | "batch"; batch: number; tag: string },
): Sink {
  return isDatabasePath(o.path) ? new SqliteSink(o) : new CsvFileSink(o);
}

/** Runs the reporter with `args`; resolves to the exit status. */
export async function main(args: string[]): Promise<number> {
  const o = parseProgramArgs("reporter", HELP, () => parseReporterArgs(args));
  if (typeof o === "number") return o;
  const tag = `reporter ${o.id}`;
  try {
    // One reporter per file: about to wait for a segment that is not there yet, refuse now rather
    // than after it appears. (With the segment there, a held reader id is refused first, naming
    // its holder's pid; then the output file's own lock refuses, naming the file.)
    if (!Segment.exists(o.name)) await OutputFile.probe(o.out);
  } catch (e) {
    return report("reporter", e);
  }
  return await runReadLoop(
    {
      program: "reporter",
      tag,
      id: o.id,
      name: o.name,
      idle: o.idle,
      batch: o.batch,
      quiet: o.quiet,
      latency: o.latency,
      from: o.from,
    },
    () => outputSink({ path: o.out, fsync: o.fsync, batch: o.batch, tag }),
  );
}

if (import.meta.main) Deno.exit(await main(Deno.args));
