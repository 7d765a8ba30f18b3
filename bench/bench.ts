/**
 * `deno task bench`: measures the real programs side by side in one run and prints a table
 * against the targets; writes `bench/results/latest.json` and `bench/results/latest.svg`.
 *
 * - Writer throughput (`writer.ts --rate 0`) with 0, 1 and 8 reporters (`--idle sleep`) attached.
 * - Reporter throughput: rows/s draining a ring that is full, timed by polling `read_ptrs[0]`
 *   from its first move to `read_ptr == write_ptr`.
 * - Latency from publication to the reporter holding the entry (`reporter.ts --latency`), at
 *   10k and 100k entries/s, per idle strategy, and the reporter's CPU% once idle.
 * - The same pipeline over Unix domain sockets (`socket_writer.ts`, `socket_reporter.ts`).
 * - Native C rows (`examples/c`), compiled at bench time when a C compiler is present.
 *
 * Options: `--quick` (at most about a minute, for CI), `--smoke` (seconds; for the tests),
 * `--out-dir DIR` (default `bench/results`; must be under it with the task's permissions).
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import { onStopSignals, parse, sleep, UsageError } from "../cli.ts";
import { libc, monotonicMs } from "../ffi/posix.ts";
import { IDLE_STRATEGIES } from "../idle.ts";
import { READ_PTRS_OFFSET, READER_HEARTBEATS_OFFSET, WRITE_PTR_OFFSET } from "../layout.ts";
import { REPORTER_FLAGS, spawnProgram, WRITER_FLAGS } from "../programs.ts";
import { loadU64 } from "../ring.ts";
import { Histogram } from "../histogram.ts";
import { DEFAULT_SCHEMA, defineSchema, type Schema, schemaToJson } from "../schema.ts";
import {
  cpuSeconds,
  type Proc,
  type ProcOutput,
  readProcFile,
  Resources,
  waitUntil,
} from "./procs.ts";
import { natsBench, type NatsConfig } from "./nats.ts";
import {
  type BenchResults,
  checkTargets,
  type ConsumeResult,
  type DrainResult,
  type LargeEntryResult,
  type LatencyResult,
  latencyStats,
  type Machine,
  median,
  type NativeResult,
  ratio,
  renderSvg,
  renderTable,
  type SchemaDrainResult,
  type SizedLatencyResult,
  type SocketResult,
  type WriterResult,
} from "./report.ts";

/** The schemas whose drains the bench compares with the native C reader. */
export const BENCH_SCHEMAS: readonly { label: string; fields: string; schema: Schema }[] = [
  { label: "default", fields: "symbol, price, quantity, side", schema: DEFAULT_SCHEMA },
  {
    label: "integer",
    fields: "8 x i32 + 2 x u64",
    schema: defineSchema([
      ...Array.from({ length: 8 }, (_, i) => ({ name: `i${i}`, type: "i32" })),
      { name: "u0", type: "u64" },
      { name: "u1", type: "u64" },
    ]),
  },
  {
    label: "float",
    fields: "4 x f64 + 4 x f32",
    schema: defineSchema([
      ...Array.from({ length: 4 }, (_, i) => ({ name: `d${i}`, type: "f64" })),
      ...Array.from({ length: 4 }, (_, i) => ({ name: `f${i}`, type: "f32" })),
    ]),
  },
];

/** Permission flags of `deno task bench` (a test pins them to deno.json). */
export const BENCH_FLAGS: readonly string[] = [
  "--allow-ffi",
  "--allow-read",
  "--allow-write=bench/results",
  "--allow-run",
  "--allow-sys=osRelease,loadavg",
  "--allow-net=127.0.0.1",
];

/** Sizes of the large-entry rows (one `bytes[entrySize - 24]` field: see {@link blobSchema}). */
export interface LargeConfig {
  entrySize: number;
  /** Slots of the writer's ring: 65,536 x 1 KiB = 64 MiB, larger than the caches. */
  capacity: number;
  /** Entries each writer run times, after one untimed lap. */
  count: number;
  reps: number;
  drainCapacity: number;
  /** Entry sizes of the `--idle spin` latency rows at `latencyRate`. */
  latencySizes: number[];
  latencyRate: number;
}

/** Sizes and durations of one mode. */
export interface Config {
  mode: "full" | "quick" | "smoke";
  writerCount: number;
  writerReps: number;
  readerCounts: number[];
  drainCapacity: number;
  drainReps: number;
  rates: number[];
  latencySeconds: number;
  idleSeconds: number;
  latencyCapacity: number;
  socketCount: number;
  socketFanoutCount: number;
  socketReps: number;
  /** The NATS rows (bench/nats.ts). */
  nats: NatsConfig;
  large: LargeConfig;
}

/** The configuration of each mode. */
export const CONFIGS: Record<Config["mode"], Config> = {
  full: {
    mode: "full",
    writerCount: 5_000_000,
    writerReps: 3,
    readerCounts: [0, 1, 8],
    drainCapacity: 1 << 22,
    drainReps: 2,
    rates: [10_000, 100_000],
    latencySeconds: 4,
    idleSeconds: 5,
    latencyCapacity: 1 << 16,
    socketCount: 2_000_000,
    socketFanoutCount: 500_000,
    socketReps: 2,
    nats: {
      entries: 1 << 21,
      reps: 3,
      latencyRate: 10_000,
      latencySeconds: 4,
      sweep: [[256, 4], [1024, 4], [4096, 1], [4096, 16], [16000, 1], [16000, 4]],
    },
    large: {
      entrySize: 1024,
      capacity: 1 << 16,
      count: 1 << 20,
      reps: 3,
      drainCapacity: 1 << 16,
      latencySizes: [1024, 65536],
      latencyRate: 10_000,
    },
  },
  quick: {
    mode: "quick",
    writerCount: 1_000_000,
    writerReps: 1,
    readerCounts: [0, 1, 8],
    drainCapacity: 1 << 20,
    drainReps: 1,
    rates: [10_000, 100_000],
    latencySeconds: 0.75,
    idleSeconds: 1.5,
    latencyCapacity: 1 << 16,
    socketCount: 500_000,
    socketFanoutCount: 100_000,
    socketReps: 1,
    nats: { entries: 1 << 19, reps: 1, latencyRate: 10_000, latencySeconds: 1, sweep: [] },
    large: {
      entrySize: 1024,
      capacity: 1 << 16,
      count: 1 << 18,
      reps: 1,
      drainCapacity: 1 << 15,
      latencySizes: [1024, 65536],
      latencyRate: 10_000,
    },
  },
  smoke: {
    mode: "smoke",
    writerCount: 20_000,
    writerReps: 1,
    readerCounts: [0, 1, 8],
    drainCapacity: 1 << 14,
    drainReps: 1,
    rates: [10_000],
    latencySeconds: 0.2,
    idleSeconds: 0.3,
    latencyCapacity: 1 << 14,
    socketCount: 20_000,
    socketFanoutCount: 5_000,
    socketReps: 1,
    nats: { entries: 1 << 14, reps: 1, latencyRate: 1000, latencySeconds: 0.2, sweep: [] },
    large: {
      entrySize: 1024,
      capacity: 1 << 10,
      count: 1 << 12,
      reps: 1,
      drainCapacity: 1 << 10,
      latencySizes: [1024, 65536],
      latencyRate: 10_000,
    },
  },
};

const ROOT = fileURLToPath(new URL("../", import.meta.url));
const DEFAULT_OUT = fileURLToPath(new URL("./results/", import.meta.url));
const SOCKET_WRITER = "bench/socket_writer.ts";
const SOCKET_REPORTER = "bench/socket_reporter.ts";
const FILL_WRITER = "bench/fill_writer.ts";
/** Longest wait for any one program. */
const PROGRAM_TIMEOUT_MS = 180_000;

/** The schema of the large-entry rows: one field `blob`, `bytes[entrySize - 24]`. */
export function blobSchema(entrySize: number): Schema {
  return defineSchema([{ name: "blob", type: `bytes[${entrySize - 24}]` }]);
}

/** Smallest power of two at least `n`. */
export function pow2AtLeast(n: number): number {
  let c = 1;
  while (c < n) c *= 2;
  return c;
}

/** Parses `rate` and the other numbers out of a program's summary line. */
export function parseSummary(
  kind:
    | "writer"
    | "reporter"
    | "socket_writer"
    | "socket_reporter"
    | "rpt_writer"
    | "rpt_reader"
    | "fill_writer",
  stdout: string,
): { count: number; seconds: number; rate: number; lost?: number } | undefined {
  const patterns: Record<typeof kind, RegExp> = {
    writer: /^writer: wrote (\d+) entries in ([\d.]+) s \((\d+) entries\/s\)/m,
    rpt_writer: /^rpt_writer: wrote (\d+) entries in ([\d.]+) s \((\d+) entries\/s\)/m,
    socket_writer: /^socket_writer: wrote (\d+) entries to \d+ readers in ([\d.]+) s \((\d+) /m,
    socket_reporter: /^socket_reporter: read (\d+) rows in ([\d.]+) s \((\d+) rows\/s\)/m,
    fill_writer:
      /^fill_writer: wrote (\d+) entries of \d+ bytes in ([\d.]+) s \((\d+) entries\/s\)/m,
    rpt_reader: /^rpt_reader: read (\d+) rows in ([\d.]+) s \((\d+) rows\/s\)/m,
    reporter: /^reporter \d+: wrote (\d+) rows to .* in ([\d.]+) s; lost (\d+);/m,
  };
  const m = patterns[kind].exec(stdout);
  if (m === null) return undefined;
  if (kind === "reporter") {
    const count = Number(m[1]);
    const seconds = Number(m[2]);
    return { count, seconds, rate: count / Math.max(seconds, 1e-9), lost: Number(m[3]) };
  }
  return { count: Number(m[1]), seconds: Number(m[2]), rate: Number(m[3]) };
}

/** Throws with the program's output when it did not exit 0. */
function expectOk(label: string, o: ProcOutput): ProcOutput {
  if (o.code !== 0) {
    throw new Error(
      `Cannot finish the bench as ${label} exited with status ${o.code}${
        o.signal ? ` (${o.signal})` : ""
      }: ${(o.stderr || o.stdout).trim().split("\n").slice(-3).join(" | ")}`,
    );
  }
  return o;
}

/** One bench run: its resources, its temporary directory and its segment names. */
class Bench {
  readonly res = new Resources();
  readonly cfg: Config;
  readonly tmp: string;
  readonly notes: string[] = [];
  #seq = 0;

  constructor(cfg: Config, tmp: string) {
    this.cfg = cfg;
    this.tmp = tmp;
  }

  /** A fresh, unique segment name: `/rpt_b_<pid>_<n>`. */
  segmentName(): string {
    return `/rpt_b_${Deno.pid}_${this.#seq++}`;
  }

  /**
   * `writer.ts` on segment `name`; `schemaFile` (under the run directory) for a custom schema,
   * `entrySize` for entries other than 64 bytes.
   */
  writer(
    name: string,
    count: number,
    rate: number,
    capacity: number,
    schemaFile?: string,
    entrySize?: number,
  ): Proc {
    const args = ["--name", name, "--count", String(count), "--rate", String(rate)];
    args.push("--capacity", String(capacity), "--quiet");
    if (schemaFile !== undefined) args.push("--schema", schemaFile);
    if (entrySize !== undefined) args.push("--entry-size", String(entrySize));
    return this.res.track(
      `writer ${name}`,
      spawnProgram("writer.ts", WRITER_FLAGS, args, this.#cwd),
    );
  }

  reporter(name: string, id: number, idle: string, out: string, latency?: string): Proc {
    const args = [String(id), "--name", name, "--idle", idle, "--out", out, "--quiet"];
    if (latency !== undefined) args.push("--latency", latency);
    return this.res.track(
      `reporter ${id} (${idle}) on ${name}`,
      spawnProgram("reporter.ts", REPORTER_FLAGS, args, this.#cwd),
    );
  }

  get #cwd(): { cwd: string } {
    return { cwd: this.tmp };
  }

  /** Waits until every reporter in `ids` has stored its first heartbeat (it is in its loop). */
  async attached(words: Uint32Array, procs: Proc[], ids: number[]): Promise<void> {
    await waitUntil(
      () => {
        for (const p of procs) {
          if (p.exited) throw new Error(`Cannot finish the bench as ${p.label} exited early`);
        }
        return ids.every((id) => loadU64(words, READER_HEARTBEATS_OFFSET + id * 8) !== 0);
      },
      60_000,
      `reporters ${ids.join(",")} attaching`,
      5,
    );
  }

  removeFile(path: string): void {
    try {
      Deno.removeSync(path);
    } catch {
      // Never written.
    }
  }

  // ---------------------------------------------------------------- shared-memory throughput

  async writerRun(readers: number): Promise<number> {
    const count = this.cfg.writerCount;
    const capacity = pow2AtLeast(count); // no reporter is ever lapped
    const name = this.segmentName();
    const seg = this.res.createSegment(name, capacity);
    const words = new Uint32Array(seg.buffer, 0, 128);
    const reps: Proc[] = [];
    const files: string[] = [];
    try {
      for (let id = 0; id < readers; id++) {
        files.push(`${this.tmp}/w${id}.csv`);
        reps.push(this.reporter(name, id, "sleep", `w${id}.csv`));
      }
      await this.attached(words, reps, reps.map((_, id) => id));
      const w = this.writer(name, count, 0, capacity);
      const out = expectOk(w.label, await w.wait(PROGRAM_TIMEOUT_MS));
      const s = parseSummary("writer", out.stdout);
      if (s === undefined) throw new Error(`Cannot parse the writer's summary: ${out.stdout}`);
      return s.rate;
    } finally {
      await Promise.all(reps.map((p) => p.stop()));
      files.forEach((f) => this.removeFile(f));
      this.res.dropSegment(name);
    }
  }

  /** Fills a ring of `capacity` entries with `fill`, then times `drain` by polling read_ptrs[0]. */
  async drainRun(
    fill: (name: string, capacity: number) => Proc,
    drain: (name: string) => Proc,
    capacity = this.cfg.drainCapacity,
    schema?: Schema,
    entrySize?: number,
  ): Promise<{ rowsPerSec: number; output: ProcOutput }> {
    const name = this.segmentName();
    const seg = this.res.createSegment(name, capacity, schema, entrySize);
    const words = new Uint32Array(seg.buffer, 0, 128);
    let reader: Proc | undefined;
    try {
      const f = fill(name, capacity);
      expectOk(f.label, await f.wait(PROGRAM_TIMEOUT_MS));
      const end = loadU64(words, WRITE_PTR_OFFSET);
      if (end !== capacity) throw new Error(`Cannot drain as the fill stopped at ${end}`);
      const t0 = monotonicMs();
      reader = drain(name);
      let first = -1;
      let t1 = 0;
      let t2 = 0;
      const deadline = monotonicMs() + PROGRAM_TIMEOUT_MS;
      for (;;) {
        const p = loadU64(words, READ_PTRS_OFFSET);
        const now = monotonicMs();
        if (first < 0 && p > 0) {
          first = p;
          t1 = now;
        }
        if (p >= end) {
          t2 = now;
          break;
        }
        if (reader.exited && loadU64(words, READ_PTRS_OFFSET) < end) {
          expectOk(reader.label, await reader.stop());
          throw new Error(`Cannot drain as ${reader.label} stopped at read_ptr ${p}`);
        }
        if (now > deadline) throw new Error(`Cannot drain as ${reader.label} took too long`);
        await sleep(1);
      }
      const output = await reader.stop();
      // The rate between the first and the last read_ptr seen; when the whole ring went in one
      // commit (a tiny ring, a starved poller), from the drain's start instead (a lower bound,
      // since it includes the program's start-up).
      const rowsPerSec = t2 > t1
        ? (end - first) / ((t2 - t1) / 1000)
        : t2 > t0
        ? end / ((t2 - t0) / 1000)
        : NaN;
      return { rowsPerSec, output };
    } finally {
      await reader?.stop();
      this.removeFile(`${this.tmp}/drain.csv`);
      this.res.dropSegment(name);
    }
  }

  async reporterDrain(out = "csv"): Promise<DrainResult> {
    const runs: number[] = [];
    let lost = 0;
    for (let i = 0; i < this.cfg.drainReps; i++) {
      const r = await this.drainRun(
        (name, capacity) => this.writer(name, capacity, 0, capacity),
        (name) => this.reporter(name, 0, "sleep", `drain_${i}.${out}`),
      );
      const s = parseSummary("reporter", r.output.stdout);
      lost += s?.lost ?? 0;
      runs.push(Math.round(r.rowsPerSec));
    }
    return { capacity: this.cfg.drainCapacity, rowsPerSec: median(runs), runs, lost };
  }

  /**
   * The subscriber's iteration against a bare readBatch loop over the same ring, each reading the
   * price of every entry (bench/consume.ts, one process, laps alternating).
   */
  async consume(): Promise<ConsumeResult> {
    const entries = this.cfg.drainCapacity;
    const p = this.res.track(
      "consume",
      spawnProgram("bench/consume.ts", ["--allow-ffi"], [
        "--name",
        this.segmentName(),
        "--count",
        String(entries),
        "--reps",
        String(Math.max(3, this.cfg.drainReps)),
      ], this.#cwd),
    );
    const o = expectOk(p.label, await p.wait(PROGRAM_TIMEOUT_MS));
    const runs = JSON.parse(o.stdout.trim().split("\n").at(-1)!) as {
      bare: number[];
      subscriber: number[];
    };
    return {
      entries,
      bare: median(runs.bare),
      subscriber: median(runs.subscriber),
      bareRuns: runs.bare,
      subscriberRuns: runs.subscriber,
    };
  }

  // ---------------------------------------------------------------- drains per schema

  /**
   * Drains a full ring under the default schema, an integer-only schema (8 x i32 + 2 x u64) and a
   * float schema (4 x f64 + 4 x f32), each with the Deno reporter and the native C reader in
   * turn, so both see the same machine load. The writer fills the ring with the simulated values
   * of each schema (schema.ts simulatedValue).
   */
  async schemaDrains(): Promise<SchemaDrainResult[]> {
    const reader = await this.compile("examples/c/rpt_reader.c");
    const out: SchemaDrainResult[] = [];
    for (const { label, fields, schema } of BENCH_SCHEMAS) {
      const file = schema.isDefault ? undefined : this.schemaFile(label, schema);
      const fill = (name: string, capacity: number) =>
        this.writer(name, capacity, 0, capacity, file);
      const runs: number[] = [];
      const nativeRuns: number[] = [];
      for (let i = 0; i < this.cfg.drainReps; i++) {
        const r = await this.drainRun(
          fill,
          (name) => this.reporter(name, 0, "sleep", "drain.csv"),
          undefined,
          schema,
        );
        runs.push(Math.round(r.rowsPerSec));
        if (typeof reader === "string") {
          const n = await this.drainRun(
            fill,
            (name) => this.cReader(reader, name),
            undefined,
            schema,
          );
          nativeRuns.push(Math.round(n.rowsPerSec));
        }
      }
      out.push({
        schema: label,
        fields,
        capacity: this.cfg.drainCapacity,
        rowsPerSec: median(runs),
        runs,
        nativeRowsPerSec: nativeRuns.length > 0 ? median(nativeRuns) : null,
        nativeRuns,
      });
    }
    return out;
  }

  /** Writes `schema` as a writer's `--schema` file in the run directory; returns its name. */
  schemaFile(label: string, schema: Schema): string {
    const file = `${label}.json`;
    const fields = schemaToJson(schema).fields.map(({ name, type, scale }) => ({
      name,
      type,
      scale,
    }));
    Deno.writeTextFileSync(`${this.tmp}/${file}`, JSON.stringify(fields));
    return file;
  }

  /** examples/c/rpt_reader (built at `path`) draining segment `name` from its start into CSV. */
  cReader(path: string, name: string): Proc {
    return this.res.track(
      `rpt_reader ${name}`,
      new Deno.Command(path, {
        args: ["--name", name, "--id", "0", "--out", "drain.csv", "--from-start"],
        cwd: this.tmp,
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn(),
    );
  }

  /**
   * Compiles `source` (relative to the project root) with `cc` into the run directory, once per
   * run; resolves to the binary's path, or to `{ reason }` without a compiler or when it fails.
   */
  compile(source: string): Promise<string | { reason: string }> {
    let built = this.#built.get(source);
    if (built === undefined) this.#built.set(source, built = this.#compile(source));
    return built;
  }

  #built = new Map<string, Promise<string | { reason: string }>>();

  async #compile(source: string): Promise<string | { reason: string }> {
    const path = `${this.tmp}/${source.replace(/^.*\//, "").replace(/\.c$/, "")}`;
    const args = [
      "-O2",
      "-std=c11",
      "-pthread",
      `-I${ROOT}include`,
      `${ROOT}${source}`,
      "-o",
      path,
    ];
    if (Deno.build.os === "linux") args.push("-lrt");
    try {
      const o = await new Deno.Command("cc", { args, stdin: "null" }).output();
      if (o.code === 0) return path;
      const err = new TextDecoder().decode(o.stderr).trim().split("\n").slice(0, 2).join(" | ");
      return { reason: `cc failed on ${source}: ${err}` };
    } catch {
      return { reason: "no C compiler: `cc` is not on PATH" };
    }
  }

  // ---------------------------------------------------------------- latency

  /**
   * Publication -> read latency at `rate`/s with reporter `--idle idle`; at 64-byte entries of
   * the default schema, or at the entry size of `large` (a ring of at most 64 MiB).
   */
  async latencyRun(
    idle: string,
    rate: number,
    measureIdle: boolean,
    large?: { entrySize: number; schema: Schema; file: string },
  ): Promise<LatencyResult> {
    const capacity = large === undefined
      ? this.cfg.latencyCapacity
      : Math.min(this.cfg.latencyCapacity, (64 << 20) / large.entrySize);
    const count = Math.max(1, Math.round(rate * this.cfg.latencySeconds));
    const name = this.segmentName();
    const seg = this.res.createSegment(name, capacity, large?.schema, large?.entrySize);
    const words = new Uint32Array(seg.buffer, 0, 128);
    const latFile = `${this.tmp}/lat.json`;
    this.removeFile(latFile);
    const rep = this.reporter(name, 0, idle, "lat.csv", "lat.json");
    try {
      await this.attached(words, [rep], [0]);
      const w = this.writer(name, count, rate, capacity, large?.file, large?.entrySize);
      expectOk(w.label, await w.wait(PROGRAM_TIMEOUT_MS));
      await waitUntil(
        () => {
          if (rep.exited) throw new Error(`Cannot finish the bench as ${rep.label} exited early`);
          return loadU64(words, READ_PTRS_OFFSET) >= count;
        },
        30_000,
        `${rep.label} catching up`,
        2,
      );
      let idleCpu: LatencyResult["idleCpu"] = null;
      if (measureIdle) {
        await sleep(300); // let the idle strategy settle into its idle state
        const c0 = cpuSeconds(rep.pid);
        const t0 = monotonicMs();
        await sleep(this.cfg.idleSeconds * 1000);
        const c1 = cpuSeconds(rep.pid);
        const window = (monotonicMs() - t0) / 1000;
        if (c0 !== undefined && c1 !== undefined) {
          idleCpu = {
            windowSeconds: Math.round(window * 1000) / 1000,
            cpuSeconds: Math.round((c1 - c0) * 1000) / 1000,
            percent: Math.round(((c1 - c0) / window) * 10000) / 100,
          };
        }
      }
      const out = expectOk(rep.label, await rep.stop());
      const s = parseSummary("reporter", out.stdout);
      const h = Histogram.fromJSON(JSON.parse(Deno.readTextFileSync(latFile)));
      return {
        idle,
        rate,
        lost: s?.lost ?? 0,
        ...latencyStats(h),
        idleCpuPercent: idleCpu === null ? null : idleCpu.percent,
        idleCpu,
      };
    } finally {
      await rep.stop();
      this.removeFile(latFile);
      this.removeFile(`${this.tmp}/lat.csv`);
      this.res.dropSegment(name);
    }
  }

  // ---------------------------------------------------------------- sockets

  socketWriter(path: string, readers: number, count: number, rate: number, batch = 4096): Proc {
    const flags = ["--allow-ffi", `--allow-net=unix:${path}`, `--allow-read=${path}`];
    flags.push(`--allow-write=${path}`);
    const args = ["--path", path, "--readers", String(readers), "--count", String(count)];
    args.push("--rate", String(rate), "--batch", String(batch));
    return this.res.track(
      `socket_writer (${readers} readers)`,
      spawnProgram(SOCKET_WRITER, flags, args, this.#cwd),
    );
  }

  socketReporter(path: string, out: string, latency?: string): Proc {
    const flags = ["--allow-ffi", `--allow-net=unix:${path}`, ...REPORTER_FLAGS.slice(1)];
    const args = ["--path", path, "--out", out];
    if (latency !== undefined) args.push("--latency", latency);
    return this.res.track(
      `socket_reporter ${out}`,
      spawnProgram(SOCKET_REPORTER, flags, args, this.#cwd),
    );
  }

  async socketRun(
    readers: number,
    count: number,
    rate: number,
    latency: boolean,
    batch = 4096,
  ): Promise<{ writer: number; reporters: number[]; histogram?: Histogram }> {
    const path = `${this.tmp}/s${this.#seq++}.sock`;
    const w = this.socketWriter(path, readers, count, rate, batch);
    const reps: Proc[] = [];
    try {
      for (let i = 0; i < readers; i++) {
        reps.push(this.socketReporter(path, `s${i}.csv`, latency ? `s${i}.json` : undefined));
      }
      const wo = expectOk(w.label, await w.wait(PROGRAM_TIMEOUT_MS));
      const ws = parseSummary("socket_writer", wo.stdout);
      if (ws === undefined) throw new Error(`Cannot parse socket_writer output: ${wo.stdout}`);
      const rates: number[] = [];
      for (const r of reps) {
        const o = expectOk(r.label, await r.wait(PROGRAM_TIMEOUT_MS));
        const s = parseSummary("socket_reporter", o.stdout);
        if (s === undefined || s.count !== count) {
          throw new Error(`Cannot use socket_reporter output: ${o.stdout.trim()}`);
        }
        rates.push(s.rate);
      }
      const histogram = latency
        ? Histogram.fromJSON(JSON.parse(Deno.readTextFileSync(`${this.tmp}/s0.json`)))
        : undefined;
      return { writer: ws.rate, reporters: rates, ...(histogram ? { histogram } : {}) };
    } finally {
      await Promise.all([w.stop(), ...reps.map((r) => r.stop())]);
      for (let i = 0; i < readers; i++) {
        this.removeFile(`${this.tmp}/s${i}.csv`);
        this.removeFile(`${this.tmp}/s${i}.json`);
      }
      this.removeFile(path);
    }
  }

  async socket(): Promise<SocketResult> {
    const writer: WriterResult[] = [];
    const reporterRuns: number[] = [];
    for (const readers of [1, 8]) {
      const count = readers === 1 ? this.cfg.socketCount : this.cfg.socketFanoutCount;
      const runs: number[] = [];
      for (let i = 0; i < this.cfg.socketReps; i++) {
        const r = await this.socketRun(readers, count, 0, false);
        runs.push(Math.round(r.writer));
        if (readers === 1) reporterRuns.push(Math.round(r.reporters[0]!));
      }
      writer.push({ reporters: readers, entries: count, entriesPerSec: median(runs), runs });
    }
    // Each entry sent as soon as it is published, the visibility the ring gives every entry.
    const perEntryWriter: WriterResult[] = [];
    for (const readers of [1, 8]) {
      const count = Math.max(1, Math.round(this.cfg.socketFanoutCount / (readers === 1 ? 2 : 4)));
      const runs: number[] = [];
      for (let i = 0; i < this.cfg.socketReps; i++) {
        runs.push(Math.round((await this.socketRun(readers, count, 0, false, 1)).writer));
      }
      perEntryWriter.push({
        reporters: readers,
        entries: count,
        entriesPerSec: median(runs),
        runs,
      });
    }
    const latency: SocketResult["latency"] = [];
    for (const rate of this.cfg.rates) {
      const count = Math.max(1, Math.round(rate * this.cfg.latencySeconds));
      const r = await this.socketRun(1, count, rate, true);
      latency.push({ rate, ...latencyStats(r.histogram!) });
    }
    return {
      writer,
      perEntryWriter,
      reporterRowsPerSec: median(reporterRuns),
      reporterRuns,
      latency,
    };
  }

  // ---------------------------------------------------------------- large entries

  /**
   * Large entries (`cfg.large`): the writer rows (bench/fill_writer.ts against
   * bench/fill_writer.c, run in turn), the drain of a full ring into CSV (the reporter against
   * examples/c/rpt_reader), then `--idle spin` latency per entry size.
   */
  async large(): Promise<LargeEntryResult> {
    const c = this.cfg.large;
    const schema = blobSchema(c.entrySize);
    const field = schema.fields[0]!;
    const file = this.schemaFile(`blob${c.entrySize}`, schema);
    const fillC = await this.compile("bench/fill_writer.c");
    let reader = await this.compile("examples/c/rpt_reader.c");
    const reasons = [fillC, reader].flatMap((x) => typeof x === "string" ? [] : [x.reason]);
    const common = (name: string) => ["--name", name, "--count", String(c.count)];
    const lap = ["--warmup", String(c.capacity), "--length", String(field.maxLength)];
    const writerRuns: number[] = [];
    const nativeWriterRuns: number[] = [];
    for (let i = 0; i < c.reps; i++) {
      writerRuns.push(
        await this.fillRun(
          schema,
          (name) =>
            spawnProgram(FILL_WRITER, WRITER_FLAGS, [
              ...common(name),
              ...lap,
              "--field",
              field.name,
            ]),
        ),
      );
      if (typeof fillC !== "string") continue;
      const args = (name: string) => [...common(name), ...lap, "--field-offset", `${field.offset}`];
      nativeWriterRuns.push(
        await this.fillRun(
          schema,
          (name) =>
            new Deno.Command(fillC, {
              args: args(name),
              stdin: "null",
              stdout: "piped",
              stderr: "piped",
            })
              .spawn(),
        ),
      );
    }
    const fill = (name: string, capacity: number) =>
      this.writer(name, capacity, 0, capacity, file, c.entrySize);
    const drainRuns: number[] = [];
    const nativeDrainRuns: number[] = [];
    for (let i = 0; i < this.cfg.drainReps; i++) {
      const drain = (name: string) => this.reporter(name, 0, "sleep", "drain.csv");
      const r = await this.drainRun(fill, drain, c.drainCapacity, schema, c.entrySize);
      drainRuns.push(Math.round(r.rowsPerSec));
      if (typeof reader !== "string") continue;
      const path = reader;
      try {
        const n = await this.drainRun(
          fill,
          (name) => this.cReader(path, name),
          c.drainCapacity,
          schema,
          c.entrySize,
        );
        nativeDrainRuns.push(Math.round(n.rowsPerSec));
      } catch (e) {
        reader = { reason: `examples/c/rpt_reader: ${(e as Error).message}` };
        reasons.push(reader.reason);
      }
    }
    const latency: SizedLatencyResult[] = [];
    for (const size of c.latencySizes) {
      const s = blobSchema(size);
      const big = { entrySize: size, schema: s, file: this.schemaFile(`blob${size}`, s) };
      const { idle, rate, lost, count, p50, p99, p999, max, mean, curve } = await this.latencyRun(
        "spin",
        c.latencyRate,
        false,
        big,
      );
      const fields = s.fields[0]!.type;
      latency.push({
        entrySize: size,
        fields,
        idle,
        rate,
        lost,
        count,
        p50,
        p99,
        p999,
        max,
        mean,
        curve,
      });
    }
    return {
      entrySize: c.entrySize,
      fields: field.type,
      capacity: c.capacity,
      entries: c.count,
      writerEntriesPerSec: median(writerRuns),
      writerRuns,
      nativeWriterEntriesPerSec: nativeWriterRuns.length > 0 ? median(nativeWriterRuns) : null,
      nativeWriterRuns,
      drainCapacity: c.drainCapacity,
      drainRowsPerSec: median(drainRuns),
      drainRuns,
      nativeDrainRowsPerSec: nativeDrainRuns.length > 0 ? median(nativeDrainRuns) : null,
      nativeDrainRuns,
      nativeReason: reasons.length > 0 ? reasons.join("; ") : null,
      latency,
    };
  }

  /** One writer run of large entries on a fresh ring of `cfg.large.capacity` slots: entries/s. */
  async fillRun(schema: Schema, spawn: (name: string) => Deno.ChildProcess): Promise<number> {
    const name = this.segmentName();
    this.res.createSegment(name, this.cfg.large.capacity, schema, this.cfg.large.entrySize);
    try {
      const p = this.res.track(`fill_writer ${name}`, spawn(name));
      const o = expectOk(p.label, await p.wait(PROGRAM_TIMEOUT_MS));
      const s = parseSummary("fill_writer", o.stdout);
      if (s === undefined) throw new Error(`Cannot parse fill_writer output: ${o.stdout}`);
      return s.rate;
    } finally {
      this.res.dropSegment(name);
    }
  }

  // ---------------------------------------------------------------- native C

  async native(): Promise<NativeResult> {
    const none = (reason: string): NativeResult => ({
      available: false,
      reason,
      compiler: null,
      writerEntriesPerSec: null,
      writerRuns: [],
      readerRowsPerSec: null,
      readerRuns: [],
      readerSelfReported: [],
    });
    const sources = ["rpt_writer", "rpt_reader"].map((n) => `${ROOT}examples/c/${n}.c`);
    for (const s of [...sources, `${ROOT}include/rpt_shm.h`]) {
      try {
        Deno.statSync(s);
      } catch {
        return none(`${s.slice(ROOT.length)} is missing`);
      }
    }
    let compiler: string;
    try {
      const v = await new Deno.Command("cc", { args: ["--version"], stdin: "null" }).output();
      compiler = new TextDecoder().decode(v.stdout).split("\n")[0]!.trim();
    } catch {
      return none("no C compiler: `cc` is not on PATH");
    }
    const bin: Record<string, string> = {};
    for (const n of ["rpt_writer", "rpt_reader"]) {
      const path = await this.compile(`examples/c/${n}.c`);
      if (typeof path !== "string") return none(path.reason);
      bin[n] = path;
    }
    const run = (label: string, path: string, args: string[]) =>
      this.res.track(
        label,
        new Deno.Command(path, {
          args,
          cwd: this.tmp,
          stdin: "null",
          stdout: "piped",
          stderr: "piped",
        })
          .spawn(),
      );
    const nativeWriter = (name: string, count: number, capacity: number) =>
      run(`rpt_writer ${name}`, bin.rpt_writer!, [
        "--name",
        name,
        "--count",
        String(count),
        "--capacity",
        String(capacity),
        "--rate",
        "0",
      ]);
    const writerRuns: number[] = [];
    for (let i = 0; i < this.cfg.writerReps; i++) {
      const count = this.cfg.writerCount;
      const capacity = pow2AtLeast(count);
      const name = this.segmentName();
      this.res.createSegment(name, capacity);
      try {
        const w = nativeWriter(name, count, capacity);
        const o = expectOk(w.label, await w.wait(PROGRAM_TIMEOUT_MS));
        const s = parseSummary("rpt_writer", o.stdout);
        if (s === undefined) throw new Error(`Cannot parse rpt_writer output: ${o.stdout}`);
        writerRuns.push(s.rate);
      } finally {
        this.res.dropSegment(name);
      }
    }
    const readerRuns: number[] = [];
    const readerSelfReported: number[] = [];
    for (let i = 0; i < this.cfg.drainReps; i++) {
      const r = await this.drainRun(
        (name, capacity) => nativeWriter(name, capacity, capacity),
        (name) =>
          run(`rpt_reader ${name}`, bin.rpt_reader!, [
            "--name",
            name,
            "--id",
            "0",
            "--out",
            "drain.csv",
            "--from-start",
          ]),
      );
      readerRuns.push(Math.round(r.rowsPerSec));
      const s = parseSummary("rpt_reader", expectOk("rpt_reader", r.output).stdout);
      if (s !== undefined) readerSelfReported.push(s.rate);
    }
    return {
      available: true,
      reason: null,
      compiler,
      writerEntriesPerSec: median(writerRuns),
      writerRuns,
      readerRowsPerSec: median(readerRuns),
      readerRuns,
      readerSelfReported,
    };
  }
}

/**
 * Diagnostics for the latency floor, measured in this process: one non-blocking FFI call
 * round trip (how `futex`, `backoff` and `sleep` wake the reporter's JS thread), and the two
 * syscalls the reporter makes per batch (append ~700 bytes, then stat the output path).
 */
async function probes(tmp: string): Promise<Record<string, number>> {
  const c = libc();
  for (let i = 0; i < 50; i++) await c.usleep(0);
  const t0 = monotonicMs();
  for (let i = 0; i < 500; i++) await c.usleep(0);
  const ffiRoundTripUs = ((monotonicMs() - t0) * 1000) / 500;
  const path = `${tmp}/probe.csv`;
  const f = Deno.openSync(path, { write: true, create: true, truncate: true });
  const row = new Uint8Array(700).fill(0x41);
  const time = (body: () => void) => {
    const start = monotonicMs();
    for (let i = 0; i < 2000; i++) body();
    return ((monotonicMs() - start) * 1000) / 2000;
  };
  const writeUs = time(() => f.writeSync(row));
  const statUs = time(() => Deno.statSync(path));
  f.close();
  Deno.removeSync(path);
  return {
    nonblockingFfiRoundTripUs: Math.round(ffiRoundTripUs * 10) / 10,
    batchWriteUs: Math.round(writeUs * 100) / 100,
    batchStatUs: Math.round(statUs * 100) / 100,
  };
}

function machine(): Machine {
  const info = Deno.build.os === "linux" ? readProcFile("/proc/cpuinfo") ?? "" : "";
  const cpuModel = /^model name\s*:\s*(.*)$/m.exec(info)?.[1]?.trim() ?? "unknown";
  let osRelease = "";
  try {
    osRelease = Deno.osRelease();
  } catch {
    // No --allow-sys=osRelease.
  }
  return {
    cores: navigator.hardwareConcurrency,
    cpuModel,
    deno: Deno.version.deno,
    v8: Deno.version.v8,
    typescript: Deno.version.typescript,
    os: Deno.build.os,
    osRelease,
    arch: Deno.build.arch,
    loadavgBefore: loadavg(),
    loadavgAfter: [],
    date: new Date().toISOString(),
  };
}

function loadavg(): number[] {
  try {
    return Deno.loadavg();
  } catch {
    return [];
  }
}

const HELP = `Usage: deno task bench [--quick | --smoke] [--out-dir DIR]

Measures writer and reporter throughput, end-to-end latency per idle strategy, a Unix socket
baseline and native C rows; prints a table against the targets and writes DIR/latest.json and
DIR/latest.svg (default bench/results).

  --quick        a short run (at most about a minute), for CI
  --smoke        a tiny run (seconds), for the tests: the figures mean nothing
  --drains-only  only the drains per schema (default, integer, float) against native C,
                 printed and not written (for profiling the formatter)
  --large-only   only the large-entry rows (1 KiB writer and drain against native C, spin
                 latency at 1 KiB and 64 KiB), printed as JSON and not written
  --out-dir DIR  where to write latest.json and latest.svg
  --nats-only    only the NATS rows (bridge, its ceiling, follow, latency), printed as JSON
                 and written to DIR/nats.json
  -h, --help     show this help`;

/** Runs the bench; resolves to the exit status. */
export async function main(args: string[]): Promise<number> {
  const { values } = parse(args, {
    quick: { type: "boolean" },
    smoke: { type: "boolean" },
    "drains-only": { type: "boolean" },
    "large-only": { type: "boolean" },
    "out-dir": { type: "string" },
    "nats-only": { type: "boolean" },
    help: { type: "boolean", short: "h" },
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  if (values.quick && values.smoke) {
    throw new UsageError("Cannot bench as --quick and --smoke exclude each other");
  }
  const cfg = CONFIGS[values.smoke ? "smoke" : values.quick ? "quick" : "full"];
  const outDir = (values["out-dir"] as string | undefined) ?? DEFAULT_OUT;
  const m = machine();
  const started = monotonicMs();
  const tmpRoot = `${DEFAULT_OUT}tmp`;
  Deno.mkdirSync(tmpRoot, { recursive: true });
  const tmp = Deno.makeTempDirSync({ dir: tmpRoot, prefix: "run_" });
  const bench = new Bench(cfg, tmp);
  bench.res.dir(tmp);
  let interrupted: Deno.Signal | undefined;
  const removeSignals = onStopSignals((s) => {
    if (interrupted !== undefined) return;
    interrupted = s;
    console.error(`bench: ${s}: stopping every child, unlinking segments, removing ${tmp}`);
    bench.res.dispose().finally(() => Deno.exit(130));
  });
  const step = (what: string) =>
    console.error(`bench: [${((monotonicMs() - started) / 1000).toFixed(1)} s] ${what}`);
  try {
    step(`${cfg.mode} run; programs in ${tmp}`);
    if (values["drains-only"]) {
      // Only the schema drains, printed (for profiling the formatter); nothing written.
      for (const d of await bench.schemaDrains()) {
        console.log(
          `drain ${d.schema} (${d.fields}): ${
            Math.round(d.rowsPerSec)
          } rows/s [${d.runs}], native ${d.nativeRowsPerSec ?? "n/a"} [${d.nativeRuns}], ${
            ratio(d.rowsPerSec, d.nativeRowsPerSec)
          }`,
        );
      }
      return 0;
    }
    if (values["large-only"]) {
      const large = await bench.large();
      console.log(
        JSON.stringify(
          { ...large, latency: large.latency.map(({ curve: _, ...l }) => l) },
          null,
          2,
        ),
      );
      return 0;
    }
    if (values["nats-only"]) {
      const nats = await natsBench(bench, cfg.nats, step);
      const text = JSON.stringify(
        { mode: cfg.mode, machine: { ...m, loadavgAfter: loadavg() }, nats },
        null,
        2,
      );
      Deno.mkdirSync(outDir, { recursive: true });
      Deno.writeTextFileSync(`${outDir}/nats.json`, text + "\n");
      console.log(text);
      console.log(`\nwrote ${outDir.replace(/\/$/, "")}/nats.json`);
      return 0;
    }
    const writer: WriterResult[] = [];
    for (const readers of cfg.readerCounts) {
      const runs: number[] = [];
      for (let i = 0; i < cfg.writerReps; i++) {
        step(`writer throughput, ${readers} reporters, run ${i + 1}/${cfg.writerReps}`);
        runs.push(Math.round(await bench.writerRun(readers)));
      }
      writer.push({
        reporters: readers,
        entries: cfg.writerCount,
        entriesPerSec: median(runs),
        runs,
      });
    }
    step(`reporter drain of ${cfg.drainCapacity} entries`);
    const reporter = await bench.reporterDrain();
    step(`reporter drain of ${cfg.drainCapacity} entries into SQLite`);
    const sqliteDrain = await bench.reporterDrain("db");
    step(`subscriber iteration against a bare readBatch loop, ${cfg.drainCapacity} entries`);
    const consume = await bench.consume();
    const latency: LatencyResult[] = [];
    for (const idle of IDLE_STRATEGIES) {
      for (const rate of cfg.rates) {
        step(`latency, --idle ${idle}, ${rate}/s`);
        latency.push(await bench.latencyRun(idle, rate, rate === cfg.rates[0]));
      }
    }
    step(`drains of ${cfg.drainCapacity} entries per schema: default, integer, float`);
    const schemaDrains = await bench.schemaDrains();
    step(`large entries: ${cfg.large.entrySize}-byte writer and drain against C, spin latency`);
    const large = await bench.large();
    step("socket baseline");
    const socket = await bench.socket();
    step("native C");
    const native = await bench.native();
    const nats = await natsBench(bench, cfg.nats, step);
    if (!nats.available) console.error(`bench: NATS rows skipped: ${nats.reason}`);
    step("probes");
    const probe = await probes(tmp);
    if (!native.available) console.error(`bench: native C rows skipped: ${native.reason}`);
    m.loadavgAfter = loadavg();
    const results: BenchResults = {
      version: 1,
      mode: cfg.mode,
      seconds: Math.round((monotonicMs() - started) / 100) / 10,
      machine: m,
      config: { ...cfg },
      writer,
      reporter,
      latency,
      socket,
      native,
      schemaDrains,
      large,
      nats,
      consume,
      sqliteDrain,
      probes: probe,
      targets: [],
      notes: bench.notes,
    };
    if (reporter.lost > 0) bench.notes.push(`the drain reporter lost ${reporter.lost} entries`);
    for (const l of latency) {
      if (l.lost > 0) bench.notes.push(`latency run --idle ${l.idle} ${l.rate}/s lost ${l.lost}`);
    }
    for (const l of large.latency) {
      if (l.lost > 0) {
        bench.notes.push(`latency run --idle spin at ${l.entrySize}-byte entries lost ${l.lost}`);
      }
    }
    if (m.cores < 10) {
      bench.notes.push(
        `${m.cores} cores: 8 reporters + 1 writer share them, so the 8-reporter writer rate measures CPU sharing`,
      );
    }
    bench.notes.push(
      `probes in the bench process: a non-blocking FFI round trip (the futex/backoff/sleep wake-up path) takes ${probe.nonblockingFfiRoundTripUs} µs; the reporter's per-batch append + stat take ${probe.batchWriteUs} + ${probe.batchStatUs} µs`,
    );
    results.targets = checkTargets(results);
    Deno.mkdirSync(outDir, { recursive: true });
    Deno.writeTextFileSync(`${outDir}/latest.json`, JSON.stringify(results, null, 2) + "\n");
    Deno.writeTextFileSync(`${outDir}/latest.svg`, renderSvg(results));
    console.log(renderTable(results));
    console.log(`\nwrote ${outDir.replace(/\/$/, "")}/latest.json and latest.svg`);
    return 0;
  } catch (e) {
    if (interrupted !== undefined) return 130;
    console.error(`bench: error: ${(e as Error).message}`);
    return 1;
  } finally {
    await bench.res.dispose();
    removeSignals();
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
