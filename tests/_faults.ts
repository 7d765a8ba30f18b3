/**
 * Helpers for the fault tests: the real writer and reporter as supervised child processes, a view
 * of a live segment's counters, polling with generous deadlines, CSV checks and a small tmpfs.
 *
 * Every child is spawned with the task flags of `programs.ts`; its stdout and stderr are drained
 * as they come (so a chatty child never blocks on a full pipe) and kept as text.
 *
 * @module
 */
import { parseRow, type Row } from "../csv.ts";
import { cString, libc, MAP_FAILED, MAP_SHARED, os, PROT_READ, PROT_WRITE } from "../ffi/posix.ts";
import {
  BUSY_BIT_HI,
  ENTRY_SIZE,
  priceFor,
  quantityFor,
  READ_PTRS_OFFSET,
  READER_HEARTBEATS_OFFSET,
  READER_LOST_OFFSET,
  READER_OWNERS_OFFSET,
  sideFor,
  symbolFor,
  WRITE_PTR_OFFSET,
  WRITER_HEARTBEAT_OFFSET,
  WRITER_OWNER_OFFSET,
} from "../layout.ts";
import { REPORTER_FLAGS, spawnProgram, WRITER_FLAGS } from "../programs.ts";
import { loadU64 } from "../ring.ts";
import { Segment } from "../segment.ts";

/** Generous deadline for every wait: the machine is shared and slow under load. */
export const DEADLINE_MS = 60_000;

let nameCounter = 0;

/** A unique segment name `/rpt_t3_<tag>_<suffix>` (at most 31 bytes). */
export function segName(tag: string): string {
  const suffix = Deno.pid.toString(36) + (nameCounter++).toString(36) +
    Math.floor(Math.random() * 36 ** 3).toString(36);
  const name = `/rpt_t3_${tag.slice(0, 6)}_${suffix}`;
  if (name.length > 31) throw new Error(`segment name too long: ${name}`);
  return name;
}

/** Removes a segment if it exists; never throws. */
export function unlinkQuietly(name: string): void {
  try {
    Segment.unlink(name);
  } catch { /* already gone */ }
}

/** A fresh temporary directory (the working directory of reporters). */
export function tempDir(tag: string): string {
  return Deno.makeTempDirSync({ prefix: `rpt_t3_${tag}_` });
}

/** Removes a directory tree; never throws. */
export function removeQuietly(path: string): void {
  try {
    Deno.removeSync(path, { recursive: true });
  } catch { /* already gone */ }
}

/** Resolves after `ms` milliseconds. */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A uniformly random integer in `[min, max]`. */
export function randInt(min: number, max: number): number {
  return min + Math.floor(Math.random() * (max - min + 1));
}

/** One real program running as a child, with its output collected. */
export class Proc {
  readonly label: string;
  readonly child: Deno.ChildProcess;
  readonly pid: number;
  stdout = "";
  stderr = "";
  /** The exit status, once the child has exited and been reaped. */
  status: Deno.CommandStatus | undefined;
  /** Resolves once the child has exited and both of its streams are drained. */
  readonly done: Promise<Deno.CommandStatus>;

  constructor(label: string, child: Deno.ChildProcess) {
    this.label = label;
    this.child = child;
    this.pid = child.pid;
    const drain = async (stream: ReadableStream<Uint8Array>, into: "stdout" | "stderr") => {
      const decoder = new TextDecoder();
      for await (const chunk of stream) this[into] += decoder.decode(chunk, { stream: true });
      this[into] += decoder.decode();
    };
    const status = child.status.then((s) => {
      this.status = s;
      return s;
    });
    this.done = Promise.all([status, drain(child.stdout, "stdout"), drain(child.stderr, "stderr")])
      .then(([s]) => s);
  }

  /** Whether the child has exited (and was reaped). */
  get exited(): boolean {
    return this.status !== undefined;
  }

  /** Sends `signal` unless the child has exited already. Returns whether it was sent. */
  kill(signal: Deno.Signal): boolean {
    if (this.exited) return false;
    try {
      this.child.kill(signal);
      return true;
    } catch {
      return false; // exited between the check and the kill
    }
  }

  /** Sends `signal` (if still running) and waits for the exit and the drained output. */
  async stop(signal: Deno.Signal = "SIGKILL"): Promise<Deno.CommandStatus> {
    if (signal !== "SIGCONT") this.kill("SIGCONT"); // a stopped child cannot act on SIGTERM
    this.kill(signal);
    return await this.done;
  }

  /** A one-line description for failure messages. */
  describe(): string {
    const s = this.status
      ? `exit ${this.status.code}${this.status.signal ? ` (${this.status.signal})` : ""}`
      : "running";
    return `${this.label} pid ${this.pid} ${s}; stderr: ${tail(this.stderr)}; stdout: ${
      tail(this.stdout)
    }`;
  }
}

function tail(text: string, n = 600): string {
  const t = text.trim();
  return JSON.stringify(t.length > n ? "..." + t.slice(-n) : t);
}

/** Starts `writer.ts --name NAME ...args` with the writer's task flags. */
export function spawnWriter(name: string, args: string[] = [], cwd?: string): Proc {
  return new Proc(
    "writer",
    spawnProgram("writer.ts", WRITER_FLAGS, ["--name", name, ...args], { cwd }),
  );
}

/** Starts `reporter.ts ID --name NAME ...args` in `cwd` with the reporter's task flags. */
export function spawnReporter(id: number, name: string, cwd: string, args: string[] = []): Proc {
  return new Proc(
    `reporter ${id}`,
    spawnProgram("reporter.ts", REPORTER_FLAGS, [String(id), "--name", name, ...args], { cwd }),
  );
}

/** Kills (SIGKILL) and reaps every child still running; never throws. */
export async function killAll(procs: Iterable<Proc | undefined>): Promise<void> {
  await Promise.all([...procs].map((p) => p?.stop("SIGKILL").catch(() => undefined)));
}

/**
 * Polls `condition` every `everyMs` until it holds. Throws, naming `what`, after `timeoutMs`, or
 * at once when one of `alive` exits (with its output in the message).
 */
export async function waitFor(
  what: string,
  condition: () => boolean | Promise<boolean>,
  options: { timeoutMs?: number; alive?: (Proc | undefined)[]; everyMs?: number } = {},
): Promise<void> {
  const deadline = Date.now() + (options.timeoutMs ?? DEADLINE_MS);
  for (;;) {
    if (await condition()) return;
    for (const p of options.alive ?? []) {
      if (p?.exited) {
        throw new Error(`${p.label} exited while waiting for ${what}: ${p.describe()}`);
      }
    }
    if (Date.now() > deadline) {
      const state = (options.alive ?? []).map((p) => p?.describe()).join(" | ");
      throw new Error(
        `timed out after ${options.timeoutMs ?? DEADLINE_MS} ms waiting for ${what}${
          state ? `: ${state}` : ""
        }`,
      );
    }
    await delay(options.everyMs ?? 20);
  }
}

/** Waits until the segment can be opened (created and initialised). */
export async function openWhenReady(
  name: string,
  alive: (Proc | undefined)[] = [],
): Promise<Watch> {
  let watch: Watch | undefined;
  await waitFor(`segment ${name} to be ready`, () => {
    try {
      watch = new Watch(Segment.open(name));
      return true;
    } catch {
      return false;
    }
  }, { alive });
  return watch!;
}

/** The counters of a live segment, read the way the programs read them. */
export class Watch implements Disposable {
  readonly seg: Segment;
  readonly words: Uint32Array;

  constructor(seg: Segment) {
    this.seg = seg;
    this.words = new Uint32Array(seg.buffer);
  }

  writePtr(): number {
    return loadU64(this.words, WRITE_PTR_OFFSET);
  }
  readPtr(id: number): number {
    return loadU64(this.words, READ_PTRS_OFFSET + id * 8);
  }
  readerLost(id: number): number {
    return loadU64(this.words, READER_LOST_OFFSET + id * 8);
  }
  /** The pid in the writer's owner word (0 when free). */
  writerPid(): number {
    return Atomics.load(this.words, WRITER_OWNER_OFFSET >>> 2);
  }
  /** The pid in reader `id`'s owner word (0 when free). */
  readerPid(id: number): number {
    return Atomics.load(this.words, (READER_OWNERS_OFFSET + id * 8) >>> 2);
  }
  writerHeartbeat(): number {
    return loadU64(this.words, WRITER_HEARTBEAT_OFFSET);
  }
  readerHeartbeat(id: number): number {
    return loadU64(this.words, READER_HEARTBEATS_OFFSET + id * 8);
  }
  /** Byte offset of the slot holding entry `index`. */
  slotOffset(index: number): number {
    const info = this.seg.info;
    return info.entriesOffset + (index & (info.capacity - 1)) * ENTRY_SIZE;
  }
  /** The slot's `seq` as (lo, hi) words. */
  slotSeq(index: number): { lo: number; hi: number } {
    const w = this.slotOffset(index) >>> 2;
    return { lo: Atomics.load(this.words, w), hi: Atomics.load(this.words, w + 1) };
  }
  /** Whether the slot of entry `index` has its busy bit set (a never-written slot has too). */
  slotBusy(index: number): boolean {
    return (this.slotSeq(index).hi & BUSY_BIT_HI) !== 0;
  }
  /**
   * Whether the slot of entry `index` was left partly written: busy bit set, and either its low
   * seq word or some payload word already stored (a never-written slot is all ones, then zeros).
   */
  slotHalfWritten(index: number): boolean {
    const { lo, hi } = this.slotSeq(index);
    if ((hi & BUSY_BIT_HI) === 0) return false;
    if (hi !== 0xffff_ffff || lo !== 0xffff_ffff) return true;
    const w = this.slotOffset(index) >>> 2;
    for (let j = 2; j < ENTRY_SIZE / 4; j++) if (this.words[w + j] !== 0) return true;
    return false;
  }

  close(): void {
    this.seg.close();
  }
  [Symbol.dispose](): void {
    this.close();
  }
}

/** What is wrong with `row` against the simulated payload of its seq, or undefined. */
export function rowProblem(row: Row): string | undefined {
  const price = priceFor(row.seq);
  const expected = `${Math.floor(price / 10000)}.${String(price % 10000).padStart(4, "0")}`;
  if (row.symbol !== symbolFor(row.seq)) return `symbol ${row.symbol}`;
  if (row.price !== expected) return `price ${row.price} (expected ${expected})`;
  if (row.quantity !== quantityFor(row.seq)) return `quantity ${row.quantity}`;
  if (row.side !== sideFor(row.seq)) return `side ${row.side}`;
  if (row.timestampNs === 0n) return "timestamp 0";
  return undefined;
}

/** The outcome of {@link scanCsv}. */
export interface CsvScan {
  /** Seqs of the rows, in file order. */
  seqs: number[];
  /** Bytes after the last newline (a partial row), 0 if none. */
  partialBytes: number;
  /** The first problem found, if any. */
  problem: string | undefined;
}

/**
 * Checks every complete row of a reporter CSV: header, well-formed, payload matching its seq,
 * one epoch, seqs strictly increasing (so no duplicate). Does not require completeness.
 */
export function scanCsv(text: string): CsvScan {
  const seqs: number[] = [];
  const header = "seq,timestamp_ns,symbol,price,quantity,side,epoch\n";
  if (text.length === 0) return { seqs, partialBytes: 0, problem: undefined };
  if (!text.startsWith(header)) {
    return { seqs, partialBytes: 0, problem: `bad header: ${JSON.stringify(text.slice(0, 60))}` };
  }
  let at = header.length;
  let epoch: bigint | undefined;
  let line = 2;
  for (;;) {
    const nl = text.indexOf("\n", at);
    if (nl < 0) break;
    const row = parseRow(text.slice(at, nl));
    if (!row) {
      return { seqs, partialBytes: 0, problem: `line ${line} is not a row: ${text.slice(at, nl)}` };
    }
    const wrong = rowProblem(row);
    if (wrong) {
      return {
        seqs,
        partialBytes: 0,
        problem: `line ${line} (seq ${row.seq}) has a wrong ${wrong}`,
      };
    }
    if (epoch === undefined) epoch = row.epoch;
    else if (row.epoch !== epoch) {
      return {
        seqs,
        partialBytes: 0,
        problem: `line ${line} has epoch ${row.epoch}, expected ${epoch}`,
      };
    }
    const prev = seqs.at(-1);
    if (prev !== undefined && row.seq <= prev) {
      return {
        seqs,
        partialBytes: 0,
        problem: `line ${line}: seq ${row.seq} after ${prev} (duplicate or out of order)`,
      };
    }
    seqs.push(row.seq);
    at = nl + 1;
    line++;
  }
  return { seqs, partialBytes: text.length - at, problem: undefined };
}

/** Reads a file as text; "" when it does not exist. */
export function readText(path: string): string {
  try {
    return Deno.readTextFileSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return "";
    throw e;
  }
}

/** Runs a command to completion; returns its status code and output. */
export async function run(cmd: string, args: string[]): Promise<{ code: number; out: string }> {
  const r = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped", stdin: "null" })
    .output();
  const d = new TextDecoder();
  return { code: r.code, out: (d.decode(r.stdout) + d.decode(r.stderr)).trim() };
}

/** Mounts a tmpfs of `bytes` at `dir`; returns undefined, or why it could not. */
export async function mountTmpfs(dir: string, bytes: number): Promise<string | undefined> {
  if (Deno.build.os !== "linux") return `tmpfs mounts need Linux (this is ${Deno.build.os})`;
  try {
    const r = await run("mount", ["-t", "tmpfs", "-o", `size=${bytes},mode=0755`, "tmpfs", dir]);
    return r.code === 0 ? undefined : `mount -t tmpfs failed (${r.code}): ${r.out}`;
  } catch (e) {
    return `mount could not run: ${(e as Error).message}`;
  }
}

/** Changes the size of the tmpfs mounted at `dir`. */
export async function resizeTmpfs(dir: string, bytes: number): Promise<void> {
  const r = await run("mount", ["-o", `remount,size=${bytes}`, dir]);
  if (r.code !== 0) throw new Error(`remount of ${dir} failed (${r.code}): ${r.out}`);
}

/** Unmounts `dir`; never throws. */
export async function unmountQuietly(dir: string): Promise<void> {
  try {
    await run("umount", [dir]);
  } catch { /* not mounted */ }
}

/**
 * Makes a raw shared-memory object `name` of `size` bytes whose first bytes are `head` (cut to
 * `size`), the rest zero: bypasses Segment.create so any size and any header can be tried.
 * Reuses the object when it exists.
 */
export function writeRawShm(name: string, size: number, head: Uint8Array): void {
  const c = libc();
  const f = os();
  const cname = cString(name);
  const flags = f.O_RDWR | f.O_CREAT;
  const fd = f.shmOpenVariadic
    ? (c.shm_open as unknown as (n: Uint8Array, o: number) => number)(cname, flags)
    : c.shm_open(cname, flags, 0o600);
  if (fd < 0) throw new Error(`shm_open(${name}) failed`);
  try {
    if (c.ftruncate(fd, 0n) !== 0) throw new Error(`ftruncate(${name}, 0) failed`);
    if (c.ftruncate(fd, BigInt(size)) !== 0) throw new Error(`ftruncate(${name}, ${size}) failed`);
    const n = Math.min(size, head.length);
    if (n === 0) return;
    const p = c.mmap(null, BigInt(n), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0n);
    if (p === null || Deno.UnsafePointer.value(p) === MAP_FAILED) {
      throw new Error(`mmap(${name}) failed`);
    }
    const view = new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(p, n));
    view.set(head.subarray(0, n));
    view.buffer.transfer(0);
    c.munmap(p, BigInt(n));
  } finally {
    c.close(fd);
  }
}

/** Parses the reporter's "lost entries A..B (N)" stderr lines. */
export function lostRanges(stderr: string): { from: number; to: number; n: number }[] {
  const out: { from: number; to: number; n: number }[] = [];
  for (const m of stderr.matchAll(/lost entries (\d+)\.\.(\d+) \((\d+)\)/g)) {
    out.push({ from: Number(m[1]), to: Number(m[2]), n: Number(m[3]) });
  }
  return out;
}

/** Parses the reporter's summary line: rows written, lost, read_ptr. */
export function reporterSummary(
  stdout: string,
): { rows: number; lost: number; readPtr: number } | undefined {
  const m = /wrote (\d+) rows to .* lost (\d+); read_ptr (\d+)/.exec(stdout);
  return m ? { rows: Number(m[1]), lost: Number(m[2]), readPtr: Number(m[3]) } : undefined;
}

/** The seq of the last complete row of a CSV, read from its tail; -1 if none or no file. */
export function lastCompleteSeq(path: string): number {
  let file: Deno.FsFile;
  try {
    file = Deno.openSync(path, { read: true });
  } catch {
    return -1;
  }
  try {
    const size = file.statSync().size;
    const n = Math.min(size, 8192);
    const buf = new Uint8Array(n);
    file.seekSync(size - n, Deno.SeekMode.Start);
    let done = 0;
    while (done < n) {
      const got = file.readSync(buf.subarray(done));
      if (!got) break;
      done += got;
    }
    const text = new TextDecoder().decode(buf.subarray(0, done));
    const end = text.lastIndexOf("\n");
    if (end < 0) return -1;
    const line = text.slice(text.lastIndexOf("\n", end - 1) + 1, end);
    const seq = /^(\d+),/.exec(line);
    return seq ? Number(seq[1]) : -1;
  } finally {
    file.close();
  }
}

/**
 * Samples, until stopped, the rule "rows below read_ptr are on disk": read_ptr first, then the
 * file's last complete row (the file only grows in between). Returns the samples and violations.
 */
export function monitor(watch: Watch, id: number, path: () => string) {
  let stop = false;
  const result = { samples: 0, violations: [] as string[] };
  const loop = (async () => {
    while (!stop) {
      const rp = watch.readPtr(id);
      const last = lastCompleteSeq(path());
      if (last >= 0 || rp === 0) {
        result.samples++;
        if (rp > last + 1) result.violations.push(`read_ptr ${rp} > last row ${last} + 1`);
      }
      await delay(15);
    }
  })();
  return {
    result,
    async end() {
      stop = true;
      await loop;
      return result;
    },
  };
}
