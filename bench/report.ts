/**
 * The bench's results: their JSON shape, the target checks, the printed table and the SVG chart
 * of the latency distributions (hand-written SVG, no dependencies).
 *
 * @module
 */
import type { Histogram } from "../histogram.ts";
import type { NatsResult } from "./nats.ts";

/** Machine the bench ran on. */
export interface Machine {
  cores: number;
  cpuModel: string;
  deno: string;
  v8: string;
  typescript: string;
  os: string;
  osRelease: string;
  arch: string;
  loadavgBefore: number[];
  loadavgAfter: number[];
  date: string;
}

/** One writer throughput configuration. */
export interface WriterResult {
  reporters: number;
  entries: number;
  /** Median of the runs, entries/s (the writer's own summary). */
  entriesPerSec: number;
  runs: number[];
}

/** The reporter drain of a full ring. */
export interface DrainResult {
  capacity: number;
  /** Median of the runs, rows/s from the first read_ptr move to read_ptr == write_ptr. */
  rowsPerSec: number;
  runs: number[];
  lost: number;
}

/** Drain of a full ring under one payload schema: the reporter and the native C reader. */
export interface SchemaDrainResult {
  /** default, integer or float. */
  schema: string;
  /** The fields, e.g. `8 x i32 + 2 x u64`. */
  fields: string;
  capacity: number;
  /** Median rows/s of the Deno reporter. */
  rowsPerSec: number;
  runs: number[];
  /** Median rows/s of examples/c/rpt_reader over the same kind of ring, null without cc. */
  nativeRowsPerSec: number | null;
  nativeRuns: number[];
}

/** Latency summary in nanoseconds, plus the distribution curve. */
export interface LatencyStats {
  count: number;
  p50: number;
  p99: number;
  p999: number;
  max: number;
  mean: number;
  /** `[percentile, ns]` points from 0 to 99.999 and 100 (max), for the chart. */
  curve: [number, number][];
}

/** One latency run of the shared-memory reporter. */
export interface LatencyResult extends LatencyStats {
  idle: string;
  rate: number;
  lost: number;
  /** Reporter CPU% (utime + stime of /proc/PID/stat) over the idle window, if measured. */
  idleCpuPercent: number | null;
  idleCpu: { windowSeconds: number; cpuSeconds: number; percent: number } | null;
}

/** The socket baseline. */
export interface SocketResult {
  /** The socket writer batching 4096 entries per write (entries reach readers in batches). */
  writer: WriterResult[];
  /**
   * The socket writer sending each entry as it is published (one write per entry and reader):
   * the same visibility as the ring, where every entry is readable once published.
   */
  perEntryWriter: WriterResult[];
  /** rows/s of one socket reporter fed at full speed (first byte to end of stream). */
  reporterRowsPerSec: number;
  reporterRuns: number[];
  latency: (LatencyStats & { rate: number })[];
}

/** The native C rows, or why they are missing. */
export interface NativeResult {
  available: boolean;
  reason: string | null;
  compiler: string | null;
  writerEntriesPerSec: number | null;
  writerRuns: number[];
  /** rows/s measured like the Deno reporter (read_ptr polling). */
  readerRowsPerSec: number | null;
  readerRuns: number[];
  /** rows/s as printed by rpt_reader itself. */
  readerSelfReported: number[];
}

/** A latency run of the shared-memory reporter at a large entry size (`--idle spin`). */
export interface SizedLatencyResult extends LatencyStats {
  entrySize: number;
  /** The schema, e.g. `bytes[1000]`. */
  fields: string;
  idle: string;
  rate: number;
  lost: number;
}

/**
 * Large entries (1 KiB by default, one `bytes[N]` field): the library's writer filling it from a
 * user's buffer through the setters against a native C writer doing the same copies, the reporter
 * draining them into CSV (base64) against the native C reader, and latency per entry size.
 */
export interface LargeEntryResult {
  entrySize: number;
  /** The schema, e.g. `bytes[1000]`. */
  fields: string;
  /** Slots of the writer's ring (capacity x entry size: larger than the caches). */
  capacity: number;
  /** Entries each writer run times (after a warm-up of one lap). */
  entries: number;
  /** Median entries/s of bench/fill_writer.ts (claimRecord, setBytes, commit). */
  writerEntriesPerSec: number;
  writerRuns: number[];
  /** Median entries/s of bench/fill_writer.c, null without a C compiler. */
  nativeWriterEntriesPerSec: number | null;
  nativeWriterRuns: number[];
  /** Slots of the drained ring. */
  drainCapacity: number;
  /** Median rows/s of the Deno reporter draining a full ring into CSV. */
  drainRowsPerSec: number;
  drainRuns: number[];
  /** Median rows/s of examples/c/rpt_reader over the same ring, null when it cannot. */
  nativeDrainRowsPerSec: number | null;
  nativeDrainRuns: number[];
  /** Why a native figure is missing, else null. */
  nativeReason: string | null;
  latency: SizedLatencyResult[];
}

/** One target check. */
export interface TargetResult {
  name: string;
  target: string;
  value: string;
  /** true PASS, false MISS, null SKIP (a figure is missing). */
  pass: boolean | null;
}

/** Everything `latest.json` holds. */
/** The subscriber against a bare `readBatch` loop, one numeric field per entry, same ring. */
export interface ConsumeResult {
  /** Entries per lap (a full ring). */
  entries: number;
  /** Medians, entries/s. */
  bare: number;
  subscriber: number;
  bareRuns: number[];
  subscriberRuns: number[];
}

export interface BenchResults {
  version: 1;
  mode: string;
  seconds: number;
  machine: Machine;
  config: Record<string, unknown>;
  writer: WriterResult[];
  reporter: DrainResult;
  latency: LatencyResult[];
  socket: SocketResult;
  native: NativeResult;
  /** Drains under the default, an integer-only and a float schema, each against native C. */
  schemaDrains: SchemaDrainResult[];
  /** Large entries against native C, and latency per entry size (absent in older results). */
  large?: LargeEntryResult;
  /** The bridge into NATS JetStream, its ceiling, follow, latency (bench/nats.ts). */
  nats?: NatsResult;
  /** The subscriber's iteration against a bare readBatch loop (bench/consume.ts). */
  consume?: ConsumeResult;
  /** The reporter's drain of the default schema into SQLite, beside its CSV drain. */
  sqliteDrain?: DrainResult;
  /** Diagnostics of the latency floor (µs): see `probes` in bench.ts. */
  probes: Record<string, number>;
  targets: TargetResult[];
  notes: string[];
}

/** Percentiles of the chart curve: 0, then 1 - 10^-x for x = 0.1 .. 5 (99.999%). */
export const CURVE_PERCENTILES: readonly number[] = [
  0,
  ...Array.from({ length: 50 }, (_, i) => 100 * (1 - 10 ** (-(i + 1) / 10))),
];

/** Summarises a histogram. */
export function latencyStats(h: Histogram): LatencyStats {
  const curve: [number, number][] = CURVE_PERCENTILES.map((p) => [round(p, 4), h.percentile(p)]);
  curve.push([100, h.max]);
  return {
    count: h.total,
    p50: h.percentile(50),
    p99: h.percentile(99),
    p999: h.percentile(99.9),
    max: h.max,
    mean: round(h.mean(), 1),
    curve,
  };
}

function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** Median of a non-empty list (mean of the middle two for an even count). */
export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** `1.23 M/s`, `456 k/s`. */
export function rate(x: number | null | undefined): string {
  if (x === null || x === undefined || !Number.isFinite(x)) return "n/a";
  if (x >= 1e6) return `${(x / 1e6).toFixed(2)} M/s`;
  if (x >= 1e3) return `${(x / 1e3).toFixed(1)} k/s`;
  return `${x.toFixed(0)} /s`;
}

/** Nanoseconds as `850 ns`, `12.3 µs`, `4.56 ms`, `1.20 s`. */
export function duration(ns: number | null | undefined): string {
  if (ns === null || ns === undefined || !Number.isFinite(ns)) return "n/a";
  if (ns < 1e3) return `${ns.toFixed(0)} ns`;
  if (ns < 1e6) return `${(ns / 1e3).toFixed(ns < 1e4 ? 2 : 1)} µs`;
  if (ns < 1e9) return `${(ns / 1e6).toFixed(2)} ms`;
  return `${(ns / 1e9).toFixed(2)} s`;
}

/** Entries/s of `entrySize` bytes as `1234 MB/s` (10^6 bytes). */
export function mbRate(perSec: number | null | undefined, entrySize: number): string {
  if (perSec === null || perSec === undefined || !Number.isFinite(perSec)) return "n/a";
  return `${(perSec * entrySize / 1e6).toFixed(0)} MB/s`;
}

/** `1 KiB`, `64 KiB`, `64 B`. */
export function sizeLabel(bytes: number): string {
  return bytes >= 1024 ? `${bytes / 1024} KiB` : `${bytes} B`;
}

/** `0.25x`. */
export function ratio(a: number | null | undefined, b: number | null | undefined): string {
  if (a === null || a === undefined || b === null || b === undefined || !(b > 0)) return "n/a";
  const r = a / b;
  return `${r >= 10 ? r.toFixed(0) : r >= 1 ? r.toFixed(1) : r.toFixed(2)}x`;
}

function ok(pass: boolean | null): string {
  return pass === null ? "SKIP" : pass ? "PASS" : "MISS";
}

function rateLabel(r: number): string {
  return r >= 1000 ? `${r / 1000}k/s` : `${r}/s`;
}

/** Checks the targets of the brief against the results. */
export function checkTargets(r: BenchResults): TargetResult[] {
  const out: TargetResult[] = [];
  const w = (n: number) => r.writer.find((x) => x.reporters === n)?.entriesPerSec;
  const sw = (n: number) => r.socket.perEntryWriter.find((x) => x.reporters === n)?.entriesPerSec;
  const swBatched = (n: number) => r.socket.writer.find((x) => x.reporters === n)?.entriesPerSec;
  const cmp = (
    name: string,
    target: string,
    a: number | undefined | null,
    b: number | undefined | null,
    min: number,
  ) => {
    const known = a !== undefined && a !== null && b !== undefined && b !== null && b > 0;
    out.push({
      name,
      target,
      value: known ? ratio(a, b) : "n/a",
      pass: known ? a / b >= min : null,
    });
  };
  cmp("writer, 0 reporters vs native C writer", ">= 0.5x", w(0), r.native.writerEntriesPerSec, 0.5);
  cmp("writer, 8 reporters vs its 0-reporter rate", ">= 0.8x", w(8), w(0), 0.8);
  cmp(
    "reporter drain vs native C reader",
    ">= 0.8x",
    r.reporter.rowsPerSec,
    r.native.readerRowsPerSec,
    0.8,
  );
  for (const d of r.schemaDrains ?? []) {
    if (d.schema === "float") continue; // reported, no target: floats print via number-to-string
    cmp(
      `drain, ${d.schema} schema (${d.fields}) vs native C reader, same run`,
      ">= 0.5x",
      d.rowsPerSec,
      d.nativeRowsPerSec,
      0.5,
    );
  }
  const big = r.large;
  if (big !== undefined) {
    const size = sizeLabel(big.entrySize);
    cmp(
      `writer at ${size} entries (${big.fields}, setters) vs native C writer, MB/s`,
      ">= 0.6x",
      big.writerEntriesPerSec,
      big.nativeWriterEntriesPerSec,
      0.6,
    );
    cmp(
      `drain at ${size} entries into CSV (base64) vs native C reader`,
      ">= 0.5x",
      big.drainRowsPerSec,
      big.nativeDrainRowsPerSec,
      0.5,
    );
  }
  if (r.consume !== undefined) {
    cmp(
      "subscriber iteration (one numeric field) vs a bare readBatch loop",
      ">= 0.8x",
      r.consume.subscriber,
      r.consume.bare,
      0.8,
    );
  }
  if (r.sqliteDrain !== undefined) {
    out.push({
      name: "reporter drain into SQLite, default schema",
      target: ">= 300,000 rows/s",
      value: rate(r.sqliteDrain.rowsPerSec),
      pass: r.sqliteDrain.rowsPerSec >= 300_000,
    });
  }
  for (const rt of [...new Set(r.latency.map((l) => l.rate))]) {
    const spin = r.latency.find((l) => l.idle === "spin" && l.rate === rt);
    out.push({
      name: `spin p50 at ${rateLabel(rt)}`,
      target: "<= 2 µs",
      value: spin ? duration(spin.p50) : "n/a",
      pass: spin ? spin.p50 <= 2000 : null,
    });
  }
  for (const rt of [...new Set(r.latency.map((l) => l.rate))]) {
    const f = r.latency.find((l) => l.idle === "futex" && l.rate === rt);
    out.push({
      name: `futex p50 at ${rateLabel(rt)}`,
      target: "<= 50 µs",
      value: f ? duration(f.p50) : "n/a",
      pass: f ? f.p50 <= 50_000 : null,
    });
  }
  const fIdle = r.latency.find((l) => l.idle === "futex" && l.idleCpuPercent !== null);
  out.push({
    name: "futex idle CPU",
    target: "<= 1%",
    value: fIdle ? `${fIdle.idleCpuPercent!.toFixed(2)}%` : "n/a",
    pass: fIdle ? fIdle.idleCpuPercent! <= 1 : null,
  });
  cmp("writer vs socket writer per entry, 1 reporter", ">= 10x", w(1), sw(1), 10);
  cmp("writer vs socket writer per entry, 8 reporters", ">= 10x", w(8), sw(8), 10);
  cmp("writer vs socket writer batched, 1 reporter", ">= 10x", w(1), swBatched(1), 10);
  cmp("writer vs socket writer batched, 8 reporters", ">= 10x", w(8), swBatched(8), 10);
  cmp(
    "reporter drain vs socket reporter",
    ">= 10x",
    r.reporter.rowsPerSec,
    r.socket.reporterRowsPerSec,
    10,
  );
  for (const s of r.socket.latency) {
    for (const idle of ["spin", "futex"]) {
      const l = r.latency.find((x) => x.idle === idle && x.rate === s.rate);
      const known = l !== undefined && l.p50 > 0;
      out.push({
        name: `socket p50 / ${idle} p50 at ${rateLabel(s.rate)}`,
        target: ">= 10x",
        value: known ? ratio(s.p50, l.p50) : "n/a",
        pass: known ? s.p50 / l.p50 >= 10 : null,
      });
    }
  }
  const n = r.nats;
  if (n !== undefined) {
    cmp(
      `bridge vs its ceiling (${n.batch} entries/message, ${n.inflight} in flight)`,
      ">= 0.9x",
      n.available ? n.bridgeEntriesPerSec : null,
      n.available ? n.ceilingEntriesPerSec : null,
      0.9,
    );
    out.push({
      name: "bridge into a local file-storage stream",
      target: ">= 500 k/s",
      value: n.available ? rate(n.bridgeEntriesPerSec) : "n/a",
      pass: n.available ? n.bridgeEntriesPerSec >= 500_000 : null,
    });
  }
  return out;
}

/** The throughput rows of large entries: writer and drain, each with its native C twin. */
function largeRows(b: LargeEntryResult): string[][] {
  const size = sizeLabel(b.entrySize);
  const mb = (xs: number[]) =>
    xs.map((x) => (x * b.entrySize / 1e6).toFixed(0)).join(" ") + " MB/s";
  const both = (perSec: number | null) => `${mbRate(perSec, b.entrySize)} (${rate(perSec)})`;
  const rows = [[
    `writer, ${size} entries (${b.fields} via setBytes), ${b.capacity} slots`,
    both(b.writerEntriesPerSec),
    ratio(b.writerEntriesPerSec, b.nativeWriterEntriesPerSec),
    mb(b.writerRuns),
  ]];
  if (b.nativeWriterEntriesPerSec !== null) {
    rows.push([
      "  native C writer, same copies",
      both(b.nativeWriterEntriesPerSec),
      "1.00x",
      mb(b.nativeWriterRuns),
    ]);
  }
  rows.push([
    `drain, ${size} entries into CSV (base64), ${b.drainCapacity} slots`,
    both(b.drainRowsPerSec),
    ratio(b.drainRowsPerSec, b.nativeDrainRowsPerSec),
    mb(b.drainRuns),
  ]);
  if (b.nativeDrainRowsPerSec !== null) {
    rows.push([
      "  native C reader, same entries",
      both(b.nativeDrainRowsPerSec),
      "1.00x",
      mb(b.nativeDrainRuns),
    ]);
  }
  if (b.nativeReason !== null) rows.push(["  native C rows missing", "", "", b.nativeReason]);
  return rows;
}

/** The NATS rows of the table: throughput, then the sweep, then latency. */
function natsRows(n: NatsResult): string[] {
  if (!n.available) return [`NATS rows skipped: ${n.reason ?? ""}`];
  const runs = (xs: number[]) => xs.map((x) => (x / 1e6).toFixed(2)).join(" ") + " M";
  const t: string[][] = [["NATS JETSTREAM (local, file storage)", "rate", "vs ceiling", "runs"]];
  t.push([
    `bridge drain, ${n.batch} entries/message, ${n.inflight} in flight`,
    rate(n.bridgeEntriesPerSec),
    ratio(n.bridgeEntriesPerSec, n.ceilingEntriesPerSec),
    runs(n.bridgeRuns),
  ]);
  t.push([
    "ceiling: same client and bytes, no ring",
    rate(n.ceilingEntriesPerSec),
    "1.00x",
    runs(n.ceilingRuns),
  ]);
  t.push(["follow, stream into CSV", rate(n.followEntriesPerSec), "", ""]);
  for (const p of n.sweep) {
    t.push([
      `sweep: ${p.batch} entries/message, ${p.inflight} in flight (bridge / ceiling)`,
      rate(p.bridgeEntriesPerSec),
      ratio(p.bridgeEntriesPerSec, p.ceilingEntriesPerSec),
      `${(p.ceilingEntriesPerSec / 1e6).toFixed(2)} M`,
    ]);
  }
  if (n.latency !== null) {
    t.push([
      `latency publication -> follow at ${rateLabel(n.latency.rate)}`,
      `p50 ${duration(n.latency.p50)}`,
      `p99 ${duration(n.latency.p99)}`,
      `${n.latency.entries} samples`,
    ]);
  }
  return [columns(t)];
}

/** Lays out rows as aligned columns (first column left, others left too, two spaces apart). */
export function columns(rows: string[][]): string {
  const widths: number[] = [];
  for (const row of rows) row.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  return rows.map((row) => row.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd()).join(
    "\n",
  );
}

/** The printed table. */
export function renderTable(r: BenchResults): string {
  const m = r.machine;
  const lines: string[] = [];
  lines.push(
    `rpt-shm bench (${r.mode}, ${
      r.seconds.toFixed(0)
    } s) on ${m.cores} cores, ${m.cpuModel}; Deno ${m.deno}; ${m.os} ${m.osRelease} ${m.arch}; ${m.date}`,
  );
  lines.push(
    `load average before ${m.loadavgBefore.map((x) => x.toFixed(2)).join(" ")}, after ${
      m.loadavgAfter.map((x) => x.toFixed(2)).join(" ")
    } (shared machine: figures may be noisy)`,
  );
  lines.push("");
  const nw = r.native.writerEntriesPerSec;
  const nr = r.native.readerRowsPerSec;
  const t: string[][] = [["THROUGHPUT", "rate", "vs native", "runs"]];
  const runs = (xs: number[]) => xs.map((x) => (x / 1e6).toFixed(2)).join(" ") + " M";
  for (const x of r.writer) {
    t.push([
      `writer, ${x.reporters} reporter${x.reporters === 1 ? "" : "s"} (--idle sleep)`,
      rate(x.entriesPerSec),
      ratio(x.entriesPerSec, nw),
      runs(x.runs),
    ]);
  }
  t.push([
    `reporter drain of a full ring (${r.reporter.capacity} entries)`,
    rate(r.reporter.rowsPerSec),
    ratio(r.reporter.rowsPerSec, nr),
    runs(r.reporter.runs),
  ]);
  for (const d of r.schemaDrains ?? []) {
    t.push([
      `drain, ${d.schema} schema (${d.fields})`,
      rate(d.rowsPerSec),
      ratio(d.rowsPerSec, d.nativeRowsPerSec),
      runs(d.runs),
    ]);
    if (d.nativeRowsPerSec !== null) {
      t.push([
        `  native C reader, same schema`,
        rate(d.nativeRowsPerSec),
        "1.00x",
        runs(d.nativeRuns),
      ]);
    }
  }
  if (r.sqliteDrain !== undefined) {
    t.push([
      `reporter drain into SQLite (--out drain.db), default schema`,
      rate(r.sqliteDrain.rowsPerSec),
      ratio(r.sqliteDrain.rowsPerSec, nr),
      runs(r.sqliteDrain.runs),
    ]);
  }
  if (r.consume !== undefined) {
    const c = r.consume;
    t.push([
      `bare readBatch loop, one field per entry (${c.entries})`,
      rate(c.bare),
      "",
      runs(c.bareRuns),
    ]);
    t.push([
      `  subscriber: for await + batch.number(i, field)`,
      rate(c.subscriber),
      `${ratio(c.subscriber, c.bare)} of bare`,
      runs(c.subscriberRuns),
    ]);
  }
  if (r.large !== undefined) t.push(...largeRows(r.large));
  if (r.native.available) {
    t.push(["native C writer, 0 readers", rate(nw), "1.00x", runs(r.native.writerRuns)]);
    t.push(["native C reader drain", rate(nr), "1.00x", runs(r.native.readerRuns)]);
  } else {
    t.push(["native C rows", "skipped", "", r.native.reason ?? ""]);
  }
  for (const x of r.socket.perEntryWriter) {
    t.push([
      `socket writer per entry, ${x.reporters} reporter${x.reporters === 1 ? "" : "s"}`,
      rate(x.entriesPerSec),
      ratio(x.entriesPerSec, nw),
      runs(x.runs),
    ]);
  }
  for (const x of r.socket.writer) {
    t.push([
      `socket writer batched, ${x.reporters} reporter${x.reporters === 1 ? "" : "s"}`,
      rate(x.entriesPerSec),
      ratio(x.entriesPerSec, nw),
      runs(x.runs),
    ]);
  }
  t.push([
    "socket reporter (1 reporter, full speed)",
    rate(r.socket.reporterRowsPerSec),
    ratio(r.socket.reporterRowsPerSec, nr),
    runs(r.socket.reporterRuns),
  ]);
  lines.push(columns(t));
  lines.push("");
  const l: string[][] = [[
    "LATENCY publish->read",
    "rate",
    "p50",
    "p99",
    "p99.9",
    "max",
    "samples",
    "idle CPU",
  ]];
  for (const x of r.latency) {
    l.push([
      `shm, --idle ${x.idle}`,
      rateLabel(x.rate),
      duration(x.p50),
      duration(x.p99),
      duration(x.p999),
      duration(x.max),
      String(x.count),
      x.idleCpuPercent === null ? "" : `${x.idleCpuPercent.toFixed(2)}%`,
    ]);
  }
  for (const x of r.large?.latency ?? []) {
    l.push([
      `shm, --idle ${x.idle}, ${sizeLabel(x.entrySize)} entries (${x.fields})`,
      rateLabel(x.rate),
      duration(x.p50),
      duration(x.p99),
      duration(x.p999),
      duration(x.max),
      String(x.count),
      "",
    ]);
  }
  for (const x of r.socket.latency) {
    l.push([
      "socket (blocking read)",
      rateLabel(x.rate),
      duration(x.p50),
      duration(x.p99),
      duration(x.p999),
      duration(x.max),
      String(x.count),
      "",
    ]);
  }
  lines.push(columns(l));
  lines.push("");
  if (r.nats !== undefined) {
    lines.push(...natsRows(r.nats));
    lines.push("");
  }
  const g: string[][] = [["TARGET", "value", "target", "result"]];
  for (const x of r.targets) g.push([x.name, x.value, x.target, ok(x.pass)]);
  lines.push(columns(g));
  if (r.notes.length > 0) {
    lines.push("");
    for (const n of r.notes) lines.push(`note: ${n}`);
  }
  return lines.join("\n");
}

/** A power of ten of nanoseconds as `1 ns` .. `100 ms`, `1 s`, `10 s`. */
function decade(ns: number): string {
  const units: [number, string][] = [[1e9, "s"], [1e6, "ms"], [1e3, "µs"], [1, "ns"]];
  for (const [f, u] of units) if (ns >= f * 0.999) return `${Math.round(ns / f)} ${u}`;
  return `${ns} ns`;
}

const COLORS: Record<string, string> = {
  sleep: "#1f77b4",
  spin: "#d62728",
  backoff: "#2ca02c",
  futex: "#9467bd",
  socket: "#7f7f7f",
};

function esc(s: string): string {
  return s.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;");
}

/**
 * The latency distributions as an SVG: one panel per rate, latency (log scale) against
 * percentile (log of 1 / (1 - p): 0, 90, 99, 99.9, 99.99, 99.999%), one line per idle strategy
 * and one for the socket baseline.
 */
export function renderSvg(r: BenchResults): string {
  const rates = [...new Set(r.latency.map((l) => l.rate))];
  const series = (rt: number) => [
    ...r.latency.filter((l) => l.rate === rt).map((l) => ({ name: l.idle, curve: l.curve })),
    ...r.socket.latency.filter((l) => l.rate === rt).map((l) => ({
      name: "socket",
      curve: l.curve,
    })),
  ];
  const all = r.latency.flatMap((l) => l.curve).concat(r.socket.latency.flatMap((l) => l.curve));
  const values = all.map(([, v]) => v).filter((v) => v > 0);
  const lo = 10 ** Math.floor(Math.log10(Math.max(Math.min(...values, 1e9), 10)));
  const hi = 10 ** Math.ceil(Math.log10(Math.max(...values, lo * 10)));
  const pw = 460, ph = 300, ml = 70, mr = 20, mt = 60, mb = 70;
  const width = rates.length * (pw + ml + mr);
  const height = mt + ph + mb;
  const xMax = 5.5; // 100% (max) is drawn at x = 5.5
  const xOf = (p: number) => (p >= 100 ? xMax : Math.min(-Math.log10(1 - p / 100), 5));
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
  );
  out.push(`<rect width="${width}" height="${height}" fill="white"/>`);
  const m = r.machine;
  out.push(
    `<text x="10" y="20" font-size="15" font-weight="bold">rpt-shm: entry latency, publication to reporter (${
      esc(r.mode)
    } run)</text>`,
  );
  out.push(
    `<text x="10" y="38" fill="#555">${
      esc(`${m.cores} cores, ${m.cpuModel}, Deno ${m.deno}, ${m.os} ${m.osRelease}, ${m.date}`)
    }</text>`,
  );
  rates.forEach((rt, k) => {
    const ox = k * (pw + ml + mr) + ml;
    const X = (p: number) => ox + (xOf(p) / xMax) * pw;
    const Y = (v: number) =>
      mt + ph - ((Math.log10(Math.max(v, lo)) - Math.log10(lo)) / Math.log10(hi / lo)) * ph;
    out.push(
      `<text x="${ox + pw / 2}" y="${mt - 8}" text-anchor="middle" font-weight="bold">${
        rateLabel(rt)
      }</text>`,
    );
    out.push(
      `<rect x="${ox}" y="${mt}" width="${pw}" height="${ph}" fill="none" stroke="#999"/>`,
    );
    for (let d = lo; d <= hi * 1.0001; d *= 10) {
      const y = Y(d);
      out.push(
        `<line x1="${ox}" y1="${y.toFixed(1)}" x2="${ox + pw}" y2="${
          y.toFixed(1)
        }" stroke="#e5e5e5"/>`,
      );
      out.push(
        `<text x="${ox - 6}" y="${(y + 4).toFixed(1)}" text-anchor="end">${decade(d)}</text>`,
      );
    }
    const ticks: [number, string][] = [
      [0, "0%"],
      [90, "90%"],
      [99, "99%"],
      [99.9, "99.9%"],
      [99.99, "99.99%"],
      [99.999, "99.999%"],
      [100, "max"],
    ];
    for (const [p, label] of ticks) {
      const x = X(p);
      out.push(
        `<line x1="${x.toFixed(1)}" y1="${mt}" x2="${x.toFixed(1)}" y2="${
          mt + ph
        }" stroke="#e5e5e5"/>`,
      );
      out.push(
        `<text x="${x.toFixed(1)}" y="${mt + ph + 16}" text-anchor="middle">${label}</text>`,
      );
    }
    out.push(
      `<text x="${ox + pw / 2}" y="${
        mt + ph + 34
      }" text-anchor="middle" fill="#555">percentile</text>`,
    );
    series(rt).forEach((s, i) => {
      const color = COLORS[s.name] ?? "#000";
      const pts = s.curve
        .filter(([p]) => p <= 99.999 || p >= 100)
        .map(([p, v]) => `${X(p).toFixed(1)},${Y(v).toFixed(1)}`)
        .join(" ");
      const dash = s.name === "socket" ? ` stroke-dasharray="6 3"` : "";
      out.push(
        `<polyline points="${pts}" fill="none" stroke="${color}" stroke-width="2"${dash}/>`,
      );
      const lx = ox + i * 90;
      const ly = mt + ph + 54;
      out.push(
        `<line x1="${lx}" y1="${ly - 4}" x2="${lx + 20}" y2="${
          ly - 4
        }" stroke="${color}" stroke-width="2"${dash}/>`,
      );
      out.push(`<text x="${lx + 24}" y="${ly}">${esc(s.name)}</text>`);
    });
  });
  out.push("</svg>");
  return out.join("\n") + "\n";
}
