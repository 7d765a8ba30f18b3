/**
 * `deno task status`: what an operator looks at first (like Aeron's AeronStat). Maps the segment
 * read-only and shows the layout, the writer, `write_ptr` and the publication rate, and for each
 * reader id its position, lag, losses and owner. It never changes the segment. With `--serve` it
 * serves the same objects over HTTP for Prometheus (see metrics.ts).
 *
 * @module
 */
import { ExitCode, nameFlag, onStopSignals, parse, report, sleep, UsageError } from "./cli.ts";
import { realtimeNs } from "./ffi/posix.ts";
import {
  DEFAULT_NAME,
  ENTRY_SIZE,
  MAX_READERS,
  READ_PTRS_OFFSET,
  READER_HEARTBEATS_OFFSET,
  READER_LOST_OFFSET,
  TIMESTAMP_OFFSET,
  VERSION_OFFSET,
  WRITE_PTR_OFFSET,
  WRITER_HEARTBEAT_OFFSET,
  WRITER_START_INDEX_OFFSET,
  WRITER_STARTED_OFFSET,
} from "./layout.ts";
import { roleHolder } from "./ownership.ts";
import { DEFAULT_LISTEN, type ListenAddress, parseListenAddress, serveMetrics } from "./metrics.ts";
import { loadU64 } from "./ring.ts";
import { Segment } from "./segment.ts";
import { type SchemaJson, schemaToJson } from "./schema.ts";

/** A heartbeat older than this marks a live process as stalled. */
export const STALL_AFTER_MS = 3000;

/** Liveness of a writer or reader id. */
export type ProcessState = "alive" | "stalled" | "dead" | "none";

/** One reader id's row of the status. */
export interface ReaderStatus {
  /** Reader id, 0 to 7. */
  id: number;
  /** `read_ptrs[id]`: the next entry it will read. */
  read_ptr: number;
  /** Entries published but not yet read: `write_ptr - read_ptr`. */
  lag: number;
  /** Age in ns of the oldest unread entry (0 when caught up, null when no longer in the ring). */
  lag_ns: number | null;
  /** Whether the writer has lapped it: more than `capacity` entries behind. */
  lapped: boolean;
  /** Entries it skipped because they were overwritten (`reader_lost[id]`). */
  lost: number;
  /** Pid of the reporter holding the id, 0 when free. */
  owner_pid: number;
  /** Whether the id is held: its lock is held, whatever the owner word says. */
  alive: boolean;
  /** alive, stalled (heartbeat older than 3 s), dead (lock free, owner word left) or none. */
  state: ProcessState;
  /** Age of its heartbeat in ms, null when it never beat. */
  heartbeat_age_ms: number | null;
}

/** The whole status of one segment: stable JSON for scripts and monitoring. */
export interface Status {
  /** Segment name. */
  name: string;
  /** Layout version. */
  version: number;
  /** Number of slots. */
  capacity: number;
  /** Incarnation id, as a decimal string (a u64). */
  epoch: string;
  /** Entries written so far. */
  write_ptr: number;
  /** Average entries/s since the current writer took the segment (0 without a writer). */
  rate: number;
  /** The writer role. */
  writer: {
    pid: number;
    alive: boolean;
    state: ProcessState;
    heartbeat_age_ms: number | null;
  };
  /** The eight reader ids, in order. */
  readers: ReaderStatus[];
  /** The payload schema stored in the segment (`default: true` when it has no block). */
  schema: SchemaJson;
}

function stateOf(pid: number, alive: boolean, ageMs: number | null): ProcessState {
  if (pid === 0 && !alive) return "none";
  if (!alive) return "dead";
  return ageMs !== null && ageMs > STALL_AFTER_MS ? "stalled" : "alive";
}

/**
 * Reads the status of an open segment without writing to it.
 *
 * @example
 * ```ts
 * import { Segment } from "./segment.ts";
 * import { readStatus } from "./status.ts";
 * const name = `/rpt_doc_status_${Deno.pid}`;
 * Segment.create(name, { capacity: 8 }).close();
 * try {
 *   using seg = Segment.open(name, { readOnly: true });
 *   console.assert(readStatus(seg).readers.length === 8);
 * } finally {
 *   Segment.unlink(name);
 * }
 * ```
 */
export function readStatus(seg: Segment): Status {
  const buffer = seg.buffer;
  const words = new Uint32Array(buffer);
  const view = new DataView(buffer);
  const { capacity, entriesOffset, epoch } = seg.info;
  const ageMs = (offset: number): number | null => {
    const beat = view.getBigUint64(offset, true);
    return beat === 0n ? null : Math.max(0, Number(nowNs - beat) / 1e6);
  };
  const readPtrs = Array.from(
    { length: MAX_READERS },
    (_, id) => loadU64(words, READ_PTRS_OFFSET + id * 8),
  );
  const writePtr = loadU64(words, WRITE_PTR_OFFSET);
  // Read the clock after write_ptr, so no entry looked at below is newer than "now".
  const nowNs = realtimeNs();
  const w = roleHolder(seg, "writer");
  const writerAlive = w.alive;
  const writerAge = ageMs(WRITER_HEARTBEAT_OFFSET);
  const started = view.getBigUint64(WRITER_STARTED_OFFSET, true);
  const startIndex = loadU64(words, WRITER_START_INDEX_OFFSET);
  const seconds = started === 0n ? 0 : Number(nowNs - started) / 1e9;
  const rate = writerAlive && seconds > 0 ? (writePtr - startIndex) / seconds : 0;
  const readers = readPtrs.map((readPtr, id): ReaderStatus => {
    const o = roleHolder(seg, id);
    const alive = o.alive;
    const heartbeatAge = ageMs(READER_HEARTBEATS_OFFSET + id * 8);
    const lag = Math.max(0, writePtr - readPtr);
    let lagNs: number | null = 0;
    if (lag > 0) {
      lagNs = null;
      const slot = entriesOffset + (readPtr & (capacity - 1)) * ENTRY_SIZE;
      if (loadU64(words, slot) === readPtr) {
        const ts = view.getBigUint64(slot + TIMESTAMP_OFFSET, true);
        if (loadU64(words, slot) === readPtr) lagNs = Math.max(0, Number(nowNs - ts));
      }
    }
    return {
      id,
      read_ptr: readPtr,
      lag,
      lag_ns: lagNs,
      lapped: lag > capacity,
      lost: loadU64(words, READER_LOST_OFFSET + id * 8),
      owner_pid: o.pid,
      alive,
      state: stateOf(o.pid, alive, heartbeatAge),
      heartbeat_age_ms: heartbeatAge,
    };
  });
  return {
    name: seg.name,
    version: view.getUint32(VERSION_OFFSET, true),
    capacity,
    epoch: epoch.toString(),
    write_ptr: writePtr,
    rate,
    writer: {
      pid: w.pid,
      alive: writerAlive,
      state: stateOf(w.pid, writerAlive, writerAge),
      heartbeat_age_ms: writerAge,
    },
    readers,
    schema: schemaToJson(seg.schema),
  };
}

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
 * Formats a status for a terminal; `rate` overrides the average rate (for `--watch`).
 *
 * @example
 * ```ts ignore
 * import { formatStatus, readStatus } from "./status.ts";
 * console.log(formatStatus(readStatus(seg)));
 * ```
 */
export function formatStatus(s: Status, rate = s.rate): string {
  const created = new Date(Number(BigInt(s.epoch) / 1_000_000n)).toISOString();
  const lines = [
    `segment ${s.name}  layout v${s.version}  capacity ${s.capacity}  epoch ${s.epoch} (created ${created})`,
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
  for (const r of s.readers) {
    lines.push(
      [
        String(r.id).padEnd(3),
        String(r.read_ptr).padEnd(15),
        String(r.lag).padEnd(12),
        duration(r.lag_ns).padEnd(10),
        (r.lapped ? "yes" : "no").padEnd(7),
        String(r.lost).padEnd(11),
        String(r.owner_pid || "-").padEnd(8),
        r.state +
        (r.heartbeat_age_ms !== null && r.owner_pid ? ` (${age(r.heartbeat_age_ms)})` : ""),
      ].join(" "),
    );
  }
  return lines.join("\n");
}

const HELP = `Usage: deno task status [options]

Shows a segment's layout, payload schema, writer, write_ptr and rate, and each reader id's
position, lag, losses and owner. Maps the segment read-only: it never changes it.

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
      const snapshot = (() => {
        using seg = Segment.open(name, { readOnly: true });
        return readStatus(seg);
      })();
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
