/**
 * `deno task writer`: the simulated high-frequency engine. It creates or re-opens the segment,
 * claims the writer role, and publishes entries whose payload is a function of `seq`, never
 * waiting for readers or disk.
 *
 * @module
 */
import {
  ExitCode,
  intFlag,
  nameFlag,
  onStopSignals,
  parse,
  parseProgramArgs,
  report,
  sleep,
  UsageError,
} from "./cli.ts";
import { monotonicMs, realtimeNs } from "./ffi/posix.ts";
import {
  DEFAULT_CAPACITY,
  DEFAULT_NAME,
  ENTRY_SIZE,
  isValidCapacity,
  MAX_CAPACITY,
  MAX_ENTRY_SIZE,
  ringShapeProblem,
  SegmentInvalidError,
  WRITER_START_INDEX_OFFSET,
  WRITER_STARTED_OFFSET,
} from "./layout.ts";
import { claimRole, type RoleClaim } from "./ownership.ts";
import { RingWriter, storeU64 } from "./ring.ts";
import { Segment, SegmentNotReadyError } from "./segment.ts";
import { checkSchemaFits, describeSchema, parseSchemaJson, type Schema } from "./schema.ts";
import { EventLoopYield, futexWaker, Pacer } from "./idle.ts";

const HELP = `Usage: deno task writer [options]

Publishes simulated engine entries into the shared-memory ring (any schema and entry size: see
docs/schema.md).

Options:
  --name NAME       segment name (default ${DEFAULT_NAME})
  --count N         write N entries, then stop (default: until SIGINT/SIGTERM)
  --rate R          entries per second; 0 = as fast as possible (default 10000)
  --capacity C      slots when creating, a power of two (default ${DEFAULT_CAPACITY})
  --entry-size N    bytes per slot when creating, a power of two from 64 to 65536 (default 64);
                    the payload is N - 16 bytes; capacity x entry size is at most 2^30 bytes
  --schema FILE     payload schema (JSON: a list of {"name", "type", "scale"?}) stored in the
                    segment when it is created; an existing segment must have the same one
  --recreate        remove an existing (even damaged) segment and create a new one (new epoch)
  --unlink-on-exit  remove the segment when the writer stops
  --quiet           no live status line on a terminal
  -h, --help        show this help

Exit status: 0 ok, 2 bad arguments, 3 invalid segment, 6 another writer is alive, 7 system error.`;

/** Parsed writer options. */
export interface WriterOptions {
  name: string;
  count: number | undefined;
  rate: number;
  capacity: number;
  capacityGiven: boolean;
  /** `--entry-size`: bytes per slot when creating (64 by default). */
  entrySize: number;
  entrySizeGiven: boolean;
  recreate: boolean;
  unlinkOnExit: boolean;
  quiet: boolean;
  /** `--schema FILE`: path of a JSON schema file. */
  schema?: string | undefined;
}

/**
 * Parses writer arguments; throws a UsageError naming the bad value.
 *
 * @example
 * ```ts
 * import { parseWriterArgs } from "./writer.ts";
 * const o = parseWriterArgs(["--rate", "0"]);
 * console.assert(o !== "help" && o.rate === 0);
 * ```
 */
export function parseWriterArgs(args: string[]): WriterOptions | "help" {
  const { values } = parse(args, {
    name: { type: "string" },
    count: { type: "string" },
    rate: { type: "string" },
    capacity: { type: "string" },
    "entry-size": { type: "string" },
    recreate: { type: "boolean" },
    schema: { type: "string" },
    "unlink-on-exit": { type: "boolean" },
    quiet: { type: "boolean" },
    help: { type: "boolean", short: "h" },
  });
  if (values.help) return "help";
  const name = nameFlag("start writer", values.name);
  const count = values.count === undefined
    ? undefined
    : intFlag("writer", "count", values.count, 0, 0, 2 ** 52 - 1);
  const rate = intFlag("writer", "rate", values.rate, 10_000, 0, 1_000_000_000);
  const capacity = intFlag(
    "writer",
    "capacity",
    values.capacity,
    DEFAULT_CAPACITY,
    1,
    MAX_CAPACITY,
  );
  if (!isValidCapacity(capacity)) {
    throw new UsageError(
      `Cannot start writer as --capacity must be a power of two from 1 to ${MAX_CAPACITY}: current value is ${capacity}`,
    );
  }
  const entrySize = intFlag(
    "writer",
    "entry-size",
    values["entry-size"],
    ENTRY_SIZE,
    ENTRY_SIZE,
    MAX_ENTRY_SIZE,
  );
  const problem = ringShapeProblem(capacity, entrySize);
  if (problem !== undefined) {
    throw new UsageError(
      `Cannot start writer as --${problem.replace("entry size", "entry-size")}`,
    );
  }
  return {
    name,
    count,
    rate,
    capacity,
    capacityGiven: values.capacity !== undefined,
    entrySize,
    entrySizeGiven: values["entry-size"] !== undefined,
    recreate: values.recreate === true,
    unlinkOnExit: values["unlink-on-exit"] === true,
    quiet: values.quiet === true,
    ...(values.schema === undefined ? {} : { schema: values.schema as string }),
  };
}

/**
 * Reads and validates the `--schema` file; any problem is a {@link UsageError} (exit 2) naming
 * the file, and the field and rule for a bad schema.
 */
export function loadSchemaFile(path: string): Schema {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (e) {
    const hint = e instanceof Deno.errors.NotCapable
      ? " (deno task writer may read files under the working directory only)"
      : "";
    throw new UsageError(
      `Cannot start writer as --schema file cannot be read: ${path}: ${
        (e as Error).message
      }${hint}`,
    );
  }
  try {
    return parseSchemaJson(text);
  } catch (e) {
    throw new UsageError(
      `Cannot start writer as --schema ${path} is invalid: ${
        (e as Error).message.replace(/^Cannot use schema as /, "")
      }`,
    );
  }
}

/** The schema of `--schema` must fit the payload of `--entry-size`: else exit 2 naming both. */
function checkSchemaFile(o: WriterOptions, schema: Schema): void {
  try {
    checkSchemaFits(schema, o.entrySize);
  } catch (e) {
    throw new UsageError(
      `Cannot start writer as --schema ${o.schema} does not fit --entry-size ${o.entrySize}: ${
        (e as Error).message.replace(/^Cannot use schema as /, "")
      }`,
    );
  }
}

/** Removes an existing segment for `--recreate`, refusing while a live writer holds it. */
async function removeForRecreate(name: string): Promise<void> {
  if (!Segment.exists(name)) return;
  let seg: Segment | undefined;
  const deadline = Date.now() + 2000;
  for (;;) {
    try {
      seg = Segment.open(name);
    } catch (e) {
      // Another writer may be initialising it right now: give it the same time create() gets.
      if (e instanceof SegmentNotReadyError && Date.now() < deadline) {
        await sleep(10);
        continue;
      }
      // A damaged or half-made segment is exactly what --recreate is for.
    }
    break;
  }
  try {
    // Take the writer role of the old segment before removing it: a live writer (or a writer
    // that has just created this segment and is about to claim it) then loses with exit 6
    // instead of going on publishing into a segment nobody can reach any more.
    using _role = seg === undefined ? undefined : claimRole(
      seg,
      "writer",
      (pid) => `Cannot recreate segment ${name} as writer pid ${pid} is alive; stop it first`,
    );
    Segment.unlink(name);
  } finally {
    seg?.close();
  }
  console.error(`writer: removed segment ${name} (--recreate)`);
}

/**
 * Opens or creates the segment, checks it against the options, and claims its writer role (held
 * for the writer's whole life: the kernel releases it with the descriptor, kill -9 too). A
 * segment whose name was removed while the claim waited for its lock (`clean`, `--recreate`) is
 * unreachable by readers: let it go and start over on the name.
 */
async function attach(
  o: WriterOptions,
  schema: Schema | undefined,
): Promise<{ seg: Segment; taken: RoleClaim }> {
  for (;;) {
    const seg = await Segment.openOrCreate(o.name, {
      capacity: o.capacity,
      entrySize: o.entrySize,
      schema,
    });
    try {
      if (!seg.created && schema !== undefined && seg.schema.fingerprint !== schema.fingerprint) {
        throw new SegmentInvalidError(
          `Cannot use segment ${o.name} as its schema (${
            describeSchema(seg.schema)
          }) differs from --schema ${o.schema} (${
            describeSchema(schema)
          }) (use --recreate to replace it)`,
        );
      }
      if (!seg.created && o.capacityGiven && seg.info.capacity !== o.capacity) {
        throw new SegmentInvalidError(
          `Cannot use segment ${o.name} as its capacity is ${seg.info.capacity} but --capacity ${o.capacity} was given (use --recreate to replace it)`,
        );
      }
      if (!seg.created && o.entrySizeGiven && seg.entrySize !== o.entrySize) {
        throw new SegmentInvalidError(
          `Cannot use segment ${o.name} as its entry size is ${seg.entrySize} but --entry-size ${o.entrySize} was given (use --recreate to replace it)`,
        );
      }
      const taken = claimRole(
        seg,
        "writer",
        (pid) => `Cannot start writer as segment ${o.name} is held by live writer pid ${pid}`,
      );
      if (seg.identity() === "same") return { seg, taken };
      taken.release();
    } catch (e) {
      seg.close();
      throw e;
    }
    seg.close();
  }
}

/** Runs the writer with `args`; resolves to the exit status. */
export async function main(args: string[]): Promise<number> {
  const o = parseProgramArgs("writer", HELP, () => parseWriterArgs(args));
  if (typeof o === "number") return o;
  let stopSignal: Deno.Signal | undefined;
  const removeSignals = onStopSignals((s) => (stopSignal = s));
  try {
    const schema = o.schema === undefined ? undefined : loadSchemaFile(o.schema);
    // Against --entry-size, or the default size of a segment about to be made (an existing
    // segment's own schema must equal it anyway).
    if (schema !== undefined && (o.entrySizeGiven || !Segment.exists(o.name))) {
      checkSchemaFile(o, schema);
    }
    if (o.recreate) await removeForRecreate(o.name);
    const attached = await attach(o, schema);
    using seg = attached.seg;
    const taken = attached.taken;
    const buffer = seg.buffer;
    try {
      const ring = new RingWriter(buffer, { wake: futexWaker(buffer) });
      const start = ring.position;
      storeU64(new Uint32Array(buffer), WRITER_START_INDEX_OFFSET, start);
      storeU64(new Uint32Array(buffer), WRITER_STARTED_OFFSET, Number(realtimeNs() / 1000n) * 1000);
      ring.heartbeat();
      const how = seg.created
        ? `created ${o.name} (capacity ${seg.info.capacity}, entry size ${seg.entrySize}${
          seg.schema.isDefault ? "" : `, schema ${describeSchema(seg.schema)}`
        })`
        : `re-opened ${o.name} at write_ptr ${start}`;
      const from = taken.reclaimedFrom
        ? `, took over from dead writer pid ${taken.reclaimedFrom}`
        : "";
      if (!o.quiet) console.error(`writer: ${how}${from}`);
      const progress = !o.quiet && Deno.stderr.isTerminal();
      const t0 = monotonicMs();
      let lastBeat = t0;
      let lastShow = t0;
      const total = o.count ?? Infinity;
      // At full speed, let signals in between batches without the millisecond of a timer.
      using loop = new EventLoopYield();
      let written = 0;
      // The simulated-value table is built before the pacer starts (212 ms at 64 KiB entries), so
      // the first entries do not go out as one burst to catch up.
      ring.publishSimulatedSchema(0);
      // Evenly paced at --rate; at --rate 0, as fast as possible, letting signals in per batch.
      const pacer = o.rate === 0 ? undefined : new Pacer(o.rate);
      // At most 4 MiB of entries between yields at full speed, 64 MiB when paced.
      const burst = (1 << 22) / seg.entrySize;
      const most = (1 << 26) / seg.entrySize;
      while (stopSignal === undefined && written < total) {
        const now = monotonicMs();
        let due = pacer === undefined ? burst : pacer.due(written);
        due = Math.min(due, total - written, most);
        if (due > 0) {
          ring.publishSimulatedSchema(due);
          written += due;
        }
        if (now - lastBeat >= 100) {
          ring.heartbeat();
          lastBeat = now;
        }
        if (progress && now - lastShow >= 250) {
          lastShow = now;
          const rate = written / Math.max((now - t0) / 1000, 1e-9);
          Deno.stderr.writeSync(
            new TextEncoder().encode(
              `\rwriter: ${written} entries, ${Math.round(rate)}/s, write_ptr ${ring.position}   `,
            ),
          );
        }
        if (written >= total) break;
        await (pacer === undefined ? loop.yield() : pacer.wait(written));
      }
      ring.heartbeat();
      const seconds = (monotonicMs() - t0) / 1000;
      if (progress) Deno.stderr.writeSync(new TextEncoder().encode("\r\x1b[K"));
      const why = stopSignal ? ` (${stopSignal})` : "";
      console.log(
        `writer: wrote ${written} entries in ${seconds.toFixed(3)} s (${
          Math.round(written / Math.max(seconds, 1e-9))
        } entries/s); write_ptr ${ring.position} on ${o.name}${why}`,
      );
    } finally {
      taken.release();
    }
    seg.close();
    if (o.unlinkOnExit) {
      Segment.unlink(o.name);
      console.error(`writer: removed segment ${o.name}`);
    }
    return ExitCode.OK;
  } catch (e) {
    return report("writer", e);
  } finally {
    removeSignals();
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
