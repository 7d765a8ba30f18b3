/**
 * Shared helpers of the test suite: unique segment names, temporary working directories, child
 * processes whose output is collected as it arrives, polling with a deadline, and direct reads
 * of a segment's header.
 *
 * @module
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { connect, type ConnectionOptions, type NatsConnection } from "@nats-io/transport-node";
import { type JetStreamManager, jetstreamManager, StorageType } from "@nats-io/jetstream";
import { cString, libc, os } from "../ffi/posix.ts";
import { csvHeader, parseRow, splitRow } from "../csv.ts";
import {
  decodeSchemaBlock,
  type Field,
  type FieldSpec,
  type Schema,
  simulatedValue,
} from "../schema.ts";
import {
  EPOCH_OFFSET,
  MAX_READERS,
  priceFor,
  quantityFor,
  READ_PTRS_OFFSET,
  sideFor,
  STREAM_KIND_LOST,
  STREAM_KIND_SCHEMA,
  streamFingerprint,
  symbolFor,
  WRITE_PTR_OFFSET,
} from "../layout.ts";
import {
  BRIDGE_FLAGS,
  FOLLOW_FLAGS,
  REPORTER_FLAGS,
  spawnProgram,
  withNatsHosts,
  WRITER_FLAGS,
} from "../programs.ts";
import { loadU64, storeU64 } from "../ring.ts";
import { Segment } from "../segment.ts";
import { type StreamPosition, streamPosition } from "../sinks/jetstream.ts";

/** How long any condition may take before a test gives up: generous, never asserted on. */
export const DEADLINE_MS = 30_000;

let counter = 0;

/**
 * A segment name unique to this test process and call: `/rpt_t2_` + pid + counter + tag (at most
 * 30 characters after the slash).
 */
export function uniqueName(tag: string): string {
  counter++;
  const base = `rpt_t2_${Deno.pid.toString(36)}${counter.toString(36)}_`;
  return `/${base}${tag.replace(/[^A-Za-z0-9]/g, "").slice(0, 30 - base.length)}`;
}

/** Removes a segment name, ignoring one that is not there. */
export function unlinkQuietly(name: string): void {
  try {
    Segment.unlink(name);
  } catch (e) {
    if ((e as { code?: string }).code !== "ENOENT") throw e;
  }
}

/** Creates a fresh temporary directory for a test's working directory. */
export function tempDir(): Promise<string> {
  return Deno.makeTempDir({ prefix: "rpt_t2_" });
}

/** Resolves after `ms` milliseconds (for pacing polls only, never for correctness). */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Polls `condition` every 20 ms until it returns a truthy value, which is returned; throws naming
 * `what` after {@link DEADLINE_MS}.
 */
export async function waitFor<T>(
  what: string,
  condition: () => T | Promise<T>,
  timeoutMs = DEADLINE_MS,
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await condition();
    if (value) return value as NonNullable<T>;
    if (Date.now() > deadline) {
      throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await delay(20);
  }
}

/** A child process with its stdout and stderr collected as text while it runs. */
export class Proc {
  readonly child: Deno.ChildProcess;
  readonly label: string;
  stdout = "";
  stderr = "";
  #done: Promise<unknown>;
  #exit: Deno.CommandStatus | undefined;

  constructor(label: string, child: Deno.ChildProcess) {
    this.label = label;
    this.child = child;
    const collect = async (stream: ReadableStream<Uint8Array>, into: "stdout" | "stderr") => {
      for await (const text of stream.pipeThrough(new TextDecoderStream())) this[into] += text;
    };
    this.#done = Promise.all([
      collect(child.stdout, "stdout"),
      collect(child.stderr, "stderr"),
      child.status.then((s) => (this.#exit = s)),
    ]);
  }

  /** The process id. */
  get pid(): number {
    return this.child.pid;
  }

  /** Whether the process has exited (as far as this side has seen). */
  get exited(): boolean {
    return this.#exit !== undefined;
  }

  /** Sends `signal` if the process is still running. */
  signal(signal: Deno.Signal): void {
    if (this.#exit !== undefined) return;
    try {
      this.child.kill(signal);
    } catch {
      // exited in between
    }
  }

  /** Waits for exit and for all output; returns the exit code. */
  async wait(): Promise<number> {
    await this.#done;
    return this.#exit!.code;
  }

  /** Waits for exit (at most {@link DEADLINE_MS}, else SIGKILL and throw); returns the code. */
  async waitExit(): Promise<number> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), DEADLINE_MS);
    });
    const result = await Promise.race([this.wait(), timeout]);
    clearTimeout(timer);
    if (result === "timeout") {
      await this.close();
      throw new Error(`${this.label} did not exit within ${DEADLINE_MS} ms\n${this.describe()}`);
    }
    return result;
  }

  /** Kills the process if it still runs (SIGCONT first, in case it was stopped) and awaits it. */
  async close(): Promise<void> {
    if (this.#exit === undefined) {
      this.signal("SIGKILL");
      this.signal("SIGCONT");
    }
    await this.#done;
  }

  /** The output, for failure messages. */
  describe(): string {
    return `--- ${this.label} stdout ---\n${this.stdout}--- ${this.label} stderr ---\n${this.stderr}`;
  }
}

/** Starts `writer.ts` with the flags of `deno task writer`. */
export function startWriter(args: string[], cwd: string): Proc {
  return new Proc("writer", spawnProgram("writer.ts", WRITER_FLAGS, args, { cwd }));
}

/** Starts `reporter.ts` with the flags of `deno task reporter`. */
export function startReporter(args: string[], cwd: string): Proc {
  return new Proc(
    `reporter ${args[0]}`,
    spawnProgram("reporter.ts", REPORTER_FLAGS, args, { cwd }),
  );
}

/** Kills and awaits every process given (those still running get SIGKILL). */
export async function closeAll(...procs: (Proc | undefined)[]): Promise<void> {
  await Promise.all(procs.map((p) => p?.close()));
}

/** The positions in a segment's header. */
export interface Positions {
  writePtr: number;
  readPtrs: number[];
  epoch: bigint;
}

/** Opens segment `name` and reads its write_ptr, read_ptrs and epoch; undefined if not there. */
export function positions(name: string): Positions | undefined {
  let seg: Segment;
  try {
    seg = Segment.open(name);
  } catch {
    return undefined;
  }
  try {
    const words = new Uint32Array(seg.buffer);
    const readPtrs: number[] = [];
    for (let id = 0; id < MAX_READERS; id++) {
      readPtrs.push(loadU64(words, READ_PTRS_OFFSET + id * 8));
    }
    return {
      writePtr: loadU64(words, WRITE_PTR_OFFSET),
      readPtrs,
      epoch: new DataView(seg.buffer).getBigUint64(EPOCH_OFFSET, true),
    };
  } finally {
    seg.close();
  }
}

/** Reads the u64 at byte `offset` of segment `name`. */
export function readU64(name: string, offset: number): number {
  using seg = Segment.open(name);
  return loadU64(new Uint32Array(seg.buffer), offset);
}

/** Stores `value` into the u64 at byte `offset` of segment `name`. */
export function writeU64(name: string, offset: number, value: number): void {
  using seg = Segment.open(name);
  storeU64(new Uint32Array(seg.buffer), offset, value);
}

/** Waits until reader `id` of segment `name` has stored a read_ptr of at least `target`. */
export function waitForReadPtr(name: string, id: number, target: number): Promise<Positions> {
  return waitFor(
    `read_ptrs[${id}] of ${name} to reach ${target}`,
    () => {
      const p = positions(name);
      return p !== undefined && p.readPtrs[id]! >= target ? p : undefined;
    },
  );
}

/** Creates a raw shared-memory object of `size` zero bytes, with no header (exclusive). */
export function createRawShm(name: string, size: number): void {
  const f = os();
  const c = libc();
  const flags = f.O_RDWR | f.O_CREAT | f.O_EXCL;
  const fd = f.shmOpenVariadic
    ? (c.shm_open as unknown as (n: Uint8Array, o: number) => number)(cString(name), flags)
    : c.shm_open(cString(name), flags, 0o600);
  if (fd < 0) throw new Error(`shm_open ${name} failed`);
  try {
    if (c.ftruncate(fd, BigInt(size)) !== 0) throw new Error(`ftruncate ${name} failed`);
  } finally {
    c.close(fd);
  }
}

/** Changes the size of an existing shared-memory object (grows it with zero bytes). */
export function resizeShm(name: string, size: number): void {
  const f = os();
  const c = libc();
  const fd = f.shmOpenVariadic
    ? (c.shm_open as unknown as (n: Uint8Array, o: number) => number)(cString(name), f.O_RDWR)
    : c.shm_open(cString(name), f.O_RDWR, 0o600);
  if (fd < 0) throw new Error(`shm_open ${name} failed`);
  try {
    if (c.ftruncate(fd, BigInt(size)) !== 0) throw new Error(`ftruncate ${name} failed`);
  } finally {
    c.close(fd);
  }
}

/** Reads the whole content of a shared-memory object, whatever its header (for checks). */
export function readRawShm(name: string): Uint8Array {
  const f = os();
  const c = libc();
  const fd = f.shmOpenVariadic
    ? (c.shm_open as unknown as (n: Uint8Array, o: number) => number)(cString(name), f.O_RDONLY)
    : c.shm_open(cString(name), f.O_RDONLY, 0o600);
  if (fd < 0) throw new Error(`shm_open ${name} failed`);
  try {
    const layout = f.stat[Deno.build.arch]!;
    const stat = new Uint8Array(layout.size);
    if (c.fstat(fd, stat) !== 0) throw new Error(`fstat ${name} failed`);
    const size = Number(new DataView(stat.buffer).getBigInt64(layout.sizeOffset, true));
    const out = new Uint8Array(size);
    let done = 0;
    while (done < size) {
      const n = Number(c.read(fd, out.subarray(done), BigInt(size - done)));
      if (n <= 0) throw new Error(`read ${name} failed after ${done} of ${size} bytes`);
      done += n;
    }
    return out;
  } finally {
    c.close(fd);
  }
}

/** The reporter CSV's rows (header excluded), as lines. */
export function csvLines(text: string): string[] {
  const lines = text.split("\n");
  if (lines.at(-1) === "") lines.pop();
  return lines.slice(1);
}

/**
 * Checks every row of a reporter CSV against the simulated payload and `epoch`, requires the seqs
 * to be strictly increasing, and returns them. Throws naming the first bad line.
 */
export function checkRows(text: string, epoch: bigint): number[] {
  const seqs: number[] = [];
  csvLines(text).forEach((line, i) => {
    const row = parseRow(line);
    if (row === undefined) throw new Error(`line ${i + 2} is not a row: ${line}`);
    const price = priceFor(row.seq);
    const expected = `${Math.floor(price / 10000)}.${String(price % 10000).padStart(4, "0")}`;
    if (
      row.symbol !== symbolFor(row.seq) || row.price !== expected ||
      row.quantity !== quantityFor(row.seq) || row.side !== sideFor(row.seq) ||
      row.epoch !== epoch || row.timestampNs === 0n
    ) throw new Error(`line ${i + 2} has a wrong field: ${line}`);
    if (seqs.length > 0 && row.seq <= seqs.at(-1)!) {
      throw new Error(`line ${i + 2} has seq ${row.seq} after ${seqs.at(-1)}`);
    }
    seqs.push(row.seq);
  });
  return seqs;
}

/**
 * The text a reporter prints for field `f` of simulated entry `seq` (custom schemas), computed
 * independently of csv.ts: bigint arithmetic for integers, the text up to its first NUL, floats
 * as number-to-string with -0 as "-0", bytes as base64 by `node:buffer`. Quoting is not applied (compare with {@link splitRow}).
 */
export function expectedField(f: Field, seq: number): string {
  const v = simulatedValue(f, seq);
  if (f.kind === "bytes") return Buffer.from(v as Uint8Array).toString("base64");
  if (f.kind === "char") {
    const text = v as string;
    const nul = text.indexOf("\0");
    return (nul < 0 ? text : text.slice(0, nul)).replace(/[\r\n]/g, "?");
  }
  if (f.kind === "float") {
    const x = v as number;
    return Object.is(x, -0) ? "-0" : String(x);
  }
  const units = BigInt(v as number | bigint);
  if (f.scale === 0) return String(units);
  const negative = units < 0n;
  const digits = (negative ? -units : units).toString().padStart(f.scale + 1, "0");
  const cut = digits.length - f.scale;
  return `${negative ? "-" : ""}${digits.slice(0, cut)}.${digits.slice(cut)}`;
}

/**
 * Checks a reporter CSV of a custom schema: the header, then every field of every row against
 * the simulated writer's formula, the epoch, strictly increasing seqs. Returns the seqs; throws
 * naming the first bad line and field.
 */
export function checkSchemaRows(text: string, schema: Schema, epoch: bigint): number[] {
  const header = text.slice(0, text.indexOf("\n"));
  if (header !== csvHeader(schema)) throw new Error(`header is ${header}`);
  const seqs: number[] = [];
  const columns = schema.fields.length + 3;
  csvLines(text).forEach((line, i) => {
    const fields = splitRow(line);
    if (fields === undefined || fields.length !== columns) {
      throw new Error(`line ${i + 2} is not a row of ${columns} columns: ${JSON.stringify(line)}`);
    }
    const seq = Number(fields[0]);
    if (!/^\d+$/.test(fields[0]!) || !/^\d+$/.test(fields[1]!) || fields[1] === "0") {
      throw new Error(`line ${i + 2} has a bad seq or timestamp: ${line}`);
    }
    schema.fields.forEach((f, p) => {
      const want = expectedField(f, seq);
      if (fields[p + 2] !== want) {
        throw new Error(
          `line ${i + 2} field ${f.name} (${f.type}${f.scale ? ` scale ${f.scale}` : ""}) is ${
            JSON.stringify(fields[p + 2])
          }, expected ${JSON.stringify(want)}: ${JSON.stringify(line)}`,
        );
      }
    });
    if (fields[columns - 1] !== String(epoch)) throw new Error(`line ${i + 2} has epoch ${line}`);
    if (seqs.length > 0 && seq <= seqs.at(-1)!) {
      throw new Error(`line ${i + 2} has seq ${seq} after ${seqs.at(-1)}`);
    }
    seqs.push(seq);
  });
  return seqs;
}

/** A schema's field declared again as a `--schema` file lists it: `scale` only when it is not 0. */
export function specOf(f: { name: string; type: string; scale: number }): FieldSpec {
  return f.scale ? { name: f.name, type: f.type, scale: f.scale } : { name: f.name, type: f.type };
}

/** The last seq of a reporter CSV, or -1 if it has no rows. */
export function lastSeq(text: string): number {
  const lines = csvLines(text);
  if (lines.length === 0) return -1;
  const row = parseRow(lines.at(-1)!);
  if (row === undefined) throw new Error(`last line is not a row: ${lines.at(-1)}`);
  return row.seq;
}

/**
 * Waits until the CSV `file` of scenario `s` can be read and its last row is `seq` (a file not
 * there yet, or ending mid-row, is polled again); `what` names it in the timeout message, given
 * after `timeoutMs`.
 */
export async function waitForLastSeq(
  what: string,
  s: Pick<Scenario, "read">,
  file: string,
  seq: number,
  timeoutMs = DEADLINE_MS,
): Promise<void> {
  await waitFor(what, () => {
    try {
      return lastSeq(s.read(file)) === seq;
    } catch {
      return false;
    }
  }, timeoutMs);
}

/** What a process test gets: its own directory, segment name and tracked programs. */
export interface Scenario {
  /** The fresh working directory of every program started. */
  dir: string;
  /** The test's own segment name. */
  name: string;
  /** Starts the writer on this segment (`--name` is added). */
  writer(args?: string[]): Proc;
  /** Starts reporter `id` on this segment (`--name` is added). */
  reporter(id: number, args?: string[]): Proc;
  /** Reads a file of the working directory. */
  read(file: string): string;
  /** Path of a file in the working directory. */
  path(file: string): string;
}

/**
 * Runs a process test: a fresh temporary directory and segment name, and in any case every
 * program started is killed and awaited, the segment removed and the directory deleted. On
 * failure the programs' output is printed.
 */
export async function scenario(tag: string, fn: (s: Scenario) => Promise<void>): Promise<void> {
  const dir = await tempDir();
  const name = uniqueName(tag);
  const procs: Proc[] = [];
  const s: Scenario = {
    dir,
    name,
    writer: (args = []) => {
      const p = startWriter(["--name", name, ...args], dir);
      procs.push(p);
      return p;
    },
    reporter: (id, args = []) => {
      const p = startReporter([String(id), "--name", name, ...args], dir);
      procs.push(p);
      return p;
    },
    read: (file) => Deno.readTextFileSync(`${dir}/${file}`),
    path: (file) => `${dir}/${file}`,
  };
  try {
    await fn(s);
  } catch (e) {
    await closeAll(...procs);
    console.error(`scenario ${name} failed; output of its programs:`);
    for (const p of procs) console.error(p.describe());
    throw e;
  } finally {
    await closeAll(...procs);
    unlinkQuietly(name);
    await Deno.remove(dir, { recursive: true });
  }
}

/**
 * The absolute path of an external tool (a server such as `nats-server` or `prometheus`) found on
 * PATH or in the sbin folders Debian installs servers into, or undefined.
 */
export function findTool(tool: string): string | undefined {
  const dirs = [
    ...(Deno.env.get("PATH") ?? "").split(":"),
    "/usr/sbin",
    "/sbin",
    "/usr/local/sbin",
  ];
  for (const dir of dirs) {
    if (dir === "") continue;
    const path = `${dir}/${tool}`;
    try {
      const info = Deno.statSync(path);
      if (info.isFile && ((info.mode ?? 0) & 0o111) !== 0) return path;
    } catch {
      // not in this folder
    }
  }
  return undefined;
}

/**
 * The path of a tool a test needs. Where it is missing the test says "skipped" with the install
 * command and the caller returns; under `CI=true` a missing tool fails the test instead, so CI
 * never passes by skipping.
 *
 * @example
 * ```ts ignore
 * const nats = requireTool("nats-server", "apt-get install nats-server");
 * if (nats === undefined) return;
 * ```
 */
export function requireTool(tool: string, install: string): string | undefined {
  const path = findTool(tool);
  if (path !== undefined) return path;
  if (Deno.env.get("CI") === "true") {
    throw new Error(`Cannot run this test as ${tool} is not installed (CI=true): ${install}`);
  }
  console.log(`skipped: ${tool} is not installed; install it with: ${install}`);
  return undefined;
}

/**
 * Starts `bridge.ts` with the flags of `deno task bridge`, the network grant scoped to the test's
 * server (`host:port`) instead of port 4222, in its own process group (killed as a group).
 */
export function startBridge(args: string[], cwd: string, hostPort: string): Proc {
  return new Proc(
    `bridge ${args[0]}`,
    spawnProgram("bridge.ts", withNatsHosts(BRIDGE_FLAGS, hostPort), args, { cwd, detached: true }),
  );
}

/** Starts `follow.ts` with the flags of `deno task follow`, the network grant as for the bridge. */
export function startFollow(args: string[], cwd: string, hostPort: string): Proc {
  return new Proc(
    "follow",
    spawnProgram("follow.ts", withNatsHosts(FOLLOW_FLAGS, hostPort), args, { cwd, detached: true }),
  );
}

/** SIGKILLs the process group of `p` (a program started detached), as a supervisor would. */
export function killGroup(p: Proc): void {
  try {
    Deno.kill(-p.pid, "SIGKILL");
  } catch {
    // already gone
  }
}

/** A free TCP port on 127.0.0.1 (the kernel's choice, released at once). */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** Whether something accepts TCP connections on 127.0.0.1:`port`. */
async function accepting(port: number): Promise<boolean> {
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    conn.close();
    return true;
  } catch {
    return false;
  }
}

/**
 * A `nats-server` of a test: on a loopback port, JetStream storing into its own directory, killed
 * with SIGKILL and restarted on the same store as the test likes.
 */
export class NatsServer {
  readonly bin: string;
  readonly port: number;
  readonly storeDir: string;
  readonly args: string[];
  proc: Proc;
  /** Every process started, for the output on failure. */
  readonly all: Proc[] = [];

  private constructor(bin: string, port: number, storeDir: string, args: string[]) {
    this.bin = bin;
    this.port = port;
    this.storeDir = storeDir;
    this.args = args;
    this.proc = this.#spawn();
  }

  /**
   * Starts a server on a free port with its store in `dir`/`store`; `config` (nats-server
   * configuration text) is written to `dir`/`server.conf` and given with -c when present.
   */
  static async start(
    bin: string,
    dir: string,
    options: { config?: string; port?: number; extra?: string[]; tag?: string } = {},
  ): Promise<NatsServer> {
    const port = options.port ?? freePort();
    const storeDir = `${dir}/store${options.tag ?? ""}`;
    const args = ["-a", "127.0.0.1", "-p", String(port), "-js", "-sd", storeDir];
    if (options.config !== undefined) {
      const conf = `${dir}/server${options.tag ?? ""}.conf`;
      Deno.writeTextFileSync(conf, options.config);
      args.push("-c", conf);
    }
    args.push(...(options.extra ?? []));
    const server = new NatsServer(bin, port, storeDir, args);
    await server.ready();
    return server;
  }

  #spawn(): Proc {
    const p = new Proc(
      `nats-server :${this.port}`,
      new Deno.Command(this.bin, {
        args: this.args,
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn(),
    );
    this.all.push(p);
    return p;
  }

  /** `127.0.0.1:port`, for the programs' network grant. */
  get hostPort(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** Waits until the server accepts connections (restarting it if it exited, e.g. port busy). */
  async ready(): Promise<void> {
    await waitFor(`nats-server on port ${this.port}`, async () => {
      if (this.proc.exited) this.proc = this.#spawn();
      return await accepting(this.port) && this.proc.stderr.includes("Server is ready");
    });
  }

  /** SIGKILL, not awaited: a server dying mid-write. */
  kill9(): void {
    this.proc.signal("SIGKILL");
  }

  /** Starts it again on the same port and store, at once (the killed one is not awaited). */
  async restart(): Promise<void> {
    this.proc = this.#spawn();
    await this.ready();
  }

  /** Stops every process started. */
  async close(): Promise<void> {
    await closeAll(...this.all);
  }

  /** The output of every process started, for failure messages. */
  describe(): string {
    return this.all.map((p) => p.describe()).join("\n");
  }
}

/** How to install the NATS server the NATS tests need. */
export const NATS_INSTALL = "apt-get install nats-server";

/** What a NATS process test gets on top of a {@link Scenario}. */
export interface NatsScenario extends Scenario {
  server: NatsServer;
  /** `nats://127.0.0.1:PORT/STREAM`. */
  url(stream: string): string;
  bridge(id: number, url: string, args?: string[]): Proc;
  follow(url: string, args?: string[]): Proc;
  /** An in-process client of the server (closed by the scenario). */
  client(options?: ConnectionOptions): Promise<{ nc: NatsConnection; jsm: JetStreamManager }>;
}

/**
 * Runs a NATS process test: a {@link scenario} with its own `nats-server` (JetStream, file store
 * in the scenario's directory, `config` when given); every bridge and follow started is killed
 * as a process group at the end, the server stopped. Skipped (failed under CI=true) without
 * `nats-server`.
 */
export async function natsScenario(
  tag: string,
  fn: (s: NatsScenario) => Promise<void>,
  serverOptions: { config?: string } = {},
): Promise<void> {
  const bin = requireTool("nats-server", NATS_INSTALL);
  if (bin === undefined) return;
  await scenario(tag, async (base) => {
    const server = await NatsServer.start(bin, base.dir, serverOptions);
    const procs: Proc[] = [];
    const clients: NatsConnection[] = [];
    const s: NatsScenario = {
      ...base,
      server,
      url: (stream) => `nats://${server.hostPort}/${stream}`,
      bridge: (id, url, args = []) => {
        const p = startBridge(
          [String(id), url, "--name", base.name, ...args],
          base.dir,
          server.hostPort,
        );
        procs.push(p);
        return p;
      },
      follow: (url, args = []) => {
        const p = startFollow([url, "--name", base.name, ...args], base.dir, server.hostPort);
        procs.push(p);
        return p;
      },
      client: async (options = {}) => {
        const nc = await connect({
          servers: server.hostPort,
          maxReconnectAttempts: -1,
          ...options,
        });
        clients.push(nc);
        return { nc, jsm: await jetstreamManager(nc) };
      },
    };
    try {
      await fn(s);
    } catch (e) {
      for (const p of procs) console.error(p.describe());
      console.error(server.describe());
      throw e;
    } finally {
      for (const p of procs) killGroup(p);
      await closeAll(...procs);
      await Promise.all(clients.map((c) => c.close().catch(() => {})));
      await server.close();
    }
  });
}

/** Creates a stream for `subject` with a short duplicate window (file storage). */
export async function addStream(
  jsm: JetStreamManager,
  stream: string,
  subject: string,
  duplicateWindowMs = 1000,
  replicas = 1,
): Promise<void> {
  await jsm.streams.add({
    name: stream,
    subjects: [subject],
    storage: StorageType.File,
    duplicate_window: duplicateWindowMs * 1_000_000,
    num_replicas: replicas,
  });
}

/** Every message of a stream, in order, with its position headers and data. */
export async function streamMessages(
  jsm: JetStreamManager,
  stream: string,
): Promise<{ at: StreamPosition; data: Uint8Array }[]> {
  const state = (await jsm.streams.info(stream)).state;
  const out: { at: StreamPosition; data: Uint8Array }[] = [];
  for (let seq = state.first_seq; seq <= state.last_seq && state.messages > 0; seq++) {
    const m = await jsm.streams.getMessage(stream, { seq });
    if (m === null) continue;
    const at = streamPosition(m.seq, m.header);
    assert.ok(at !== undefined, `stream seq ${seq} has no position headers`);
    out.push({ at, data: m.data });
  }
  return out;
}

/**
 * Checks that the stream holds every seq `0..count-1` of `epoch` exactly once, in order, each
 * entry's own seq matching its place (entries messages) or named by a loss message, after a
 * schema message whose block every later message's `Rpt-Schema` names. Returns the number of
 * messages, of entries recorded as lost, and of schema messages.
 */
export async function checkExactlyOnce(
  jsm: JetStreamManager,
  stream: string,
  epoch: bigint,
  count: number,
): Promise<{ messages: number; lost: number; schemas: number }> {
  let next = 0;
  let lost = 0;
  let schemas = 0;
  let fingerprint: string | undefined;
  const messages = await streamMessages(jsm, stream);
  for (const { at, data } of messages) {
    assert.equal(at.epoch, epoch, `stream seq ${at.seq}: epoch`);
    assert.equal(at.first, next, `stream seq ${at.seq}: first seq ${at.first}, expected ${next}`);
    if (at.kind === STREAM_KIND_SCHEMA) {
      assert.equal(at.count, 0, `stream seq ${at.seq}: a schema message names no entries`);
      const own = streamFingerprint(decodeSchemaBlock(data).fingerprint);
      assert.equal(at.schema, own, `stream seq ${at.seq}: Rpt-Schema of the schema message`);
      assert.ok(fingerprint === undefined || fingerprint === own, "one schema per epoch");
      fingerprint = own;
      schemas++;
      continue;
    }
    assert.ok(fingerprint !== undefined, `stream seq ${at.seq}: no schema message before it`);
    assert.equal(at.schema, fingerprint, `stream seq ${at.seq}: Rpt-Schema`);
    if (at.kind === STREAM_KIND_LOST) {
      assert.equal(data.length, 0);
      lost += at.count;
    } else {
      assert.equal(data.length, at.count * at.entrySize, `stream seq ${at.seq}: data size`);
      const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
      for (let k = 0; k < at.count; k++) {
        assert.equal(
          Number(view.getBigUint64(k * at.entrySize, true)),
          at.first + k,
          "entry seq",
        );
      }
    }
    next += at.count;
  }
  assert.equal(next, count, "the stream covers every seq");
  return { messages: messages.length, lost, schemas };
}

export function epochOf(name: string): bigint {
  using seg = Segment.open(name);
  return seg.info.epoch;
}

/** A pseudo-random generator seeded per run (the seed is printed, so a failure can be replayed). */
export function random(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

// ---- A supervisor's kill campaign (shared by supervisor_test.ts and sqlite_test.ts).

/** A file of the repository, as an absolute path. */
function repoPath(file: string): string {
  return decodeURIComponent(new URL(`../${file}`, import.meta.url).pathname);
}

/**
 * Writes a `deno.json` into `dir` whose writer and reporter tasks are the repository's, with
 * the program's absolute path instead of its relative one: `deno task` then runs the real
 * programs with the tasks' exact flags, in `dir` (the reporter's `--allow-write=.` is `dir`).
 */
export function writeTaskConfig(dir: string): void {
  const repo = JSON.parse(Deno.readTextFileSync(repoPath("deno.json"))) as {
    tasks: Record<string, string>;
  };
  const tasks: Record<string, string> = {};
  for (const [task, flags] of [["writer", WRITER_FLAGS], ["reporter", REPORTER_FLAGS]] as const) {
    const command = repo.tasks[task]!;
    assert.equal(command, `deno run ${flags.join(" ")} ${task}.ts`, `the ${task} task's command`);
    tasks[task] = command.replace(` ${task}.ts`, ` ${repoPath(`${task}.ts`)}`);
  }
  Deno.writeTextFileSync(`${dir}/deno.json`, JSON.stringify({ tasks }));
}

/**
 * Starts `deno task <task> <args>` in `dir` as the leader of a new session and process group
 * (`setsid` execs in place, so the pid is the group id), as a supervisor does.
 */
export function spawnTaskGroup(dir: string, task: string, args: string[]): Proc {
  return new Proc(
    `deno task ${task}`,
    new Deno.Command("setsid", {
      args: [Deno.execPath(), "task", "--quiet", task, ...args],
      cwd: dir,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).spawn(),
  );
}

/** `kill(-pgid, sig)`: signals every process of the group (the task and its `deno run` child). */
export function signalGroup(pgid: number, sig: number): void {
  libc().kill(-pgid, sig);
}

/**
 * A supervisor's restart: starts `deno task <task>` in its own group, at once, and again each
 * time it exits before holding its role (`held` matches its stderr once it does), until it holds
 * it (giving up after {@link DEADLINE_MS}). Every start is kept in `procs`; every refusal is
 * added to `refusals`.
 */
export async function restartTask(
  dir: string,
  task: string,
  args: string[],
  held: RegExp,
  procs: Proc[],
  refusals: string[],
): Promise<Proc> {
  const deadline = Date.now() + DEADLINE_MS;
  for (;;) {
    if (Date.now() > deadline) {
      throw new Error(`deno task ${task} never held its role: ${refusals.at(-1) ?? ""}`);
    }
    const p = spawnTaskGroup(dir, task, args);
    procs.push(p);
    const outcome = await waitFor(
      `${p.label} pid ${p.pid} to hold its role or exit`,
      () => (held.test(p.stderr) ? "held" : p.exited ? "exited" : undefined),
    );
    if (outcome === "held") return p;
    refusals.push(`exit ${await p.wait()}: ${p.stderr.trim()}`);
  }
}

/** What {@link reporterKillCampaign} runs. */
export interface KillCampaign {
  /** Kills, each restarted at once. */
  restarts: number;
  /** The writer's arguments (`--name` is added). */
  writerArgs: string[];
  /** More arguments of `deno task reporter 0` (e.g. `--out orders.db`). */
  reporterArgs?: string[];
  /** Reads the output once the reporter stopped: the seqs of its rows, each row checked. */
  seqs: (epoch: bigint) => number[] | Promise<number[]>;
  /** What the output is called in the result line. */
  output?: string;
}

/**
 * The reporter's kill campaign: `deno task reporter 0` killed with kill -9 of its group mid-copy
 * `c.restarts` times, each restarted at once with nothing reaped, while the writer publishes; then
 * `c.seqs(epoch)` checks every row and returns the seqs, which must be every entry published,
 * each once. Returns a line saying what happened.
 */
export async function reporterKillCampaign(s: Scenario, c: KillCampaign): Promise<string> {
  const SIGKILL = 9;
  const SIGTERM = 15;
  writeTaskConfig(s.dir);
  const procs: Proc[] = [];
  const refusals: string[] = [];
  let refused = 0; // restarts refused at least once
  const held = /reporter 0: reading /;
  const args = ["0", "--name", s.name, ...(c.reporterArgs ?? [])];
  try {
    const writer = s.writer(c.writerArgs);
    await waitFor("the writer to publish", () => (positions(s.name)?.writePtr ?? 0) > 0);
    let current = await restartTask(s.dir, "reporter", args, held, procs, []);
    const t0 = performance.now();
    for (let i = 1; i <= c.restarts; i++) {
      // Kill it while it copies: once its stored position has moved since it started.
      const from = positions(s.name)!.readPtrs[0]!;
      await waitForReadPtr(s.name, 0, from + 1);
      signalGroup(current.pid, SIGKILL);
      const before = refusals.length;
      current = await restartTask(s.dir, "reporter", args, held, procs, refusals);
      if (refusals.length > before) refused++;
    }
    const ms = performance.now() - t0;
    writer.signal("SIGTERM");
    assert.equal(await writer.waitExit(), 0, writer.describe());
    const end = positions(s.name)!;
    await waitForReadPtr(s.name, 0, end.writePtr);
    signalGroup(current.pid, SIGTERM); // `deno task` forwards it; the reporter stops cleanly
    assert.equal(await current.waitExit(), 0, current.describe());
    const seqs = await c.seqs(end.epoch);
    assert.equal(seqs.length, end.writePtr, "one row per entry published");
    assert.equal(seqs[0], 0);
    assert.equal(seqs.at(-1), end.writePtr - 1);
    assert.equal(
      refused,
      0,
      `${refused} of ${c.restarts} restarts refused: ${refusals.join("; ")}`,
    );
    return `${c.restarts} of ${c.restarts} restarts right after kill -9 mid-copy accepted at once (${
      (ms / c.restarts).toFixed(0)
    } ms per cycle); ${end.writePtr} entries, each exactly once in the ${c.output ?? "CSV"}`;
  } finally {
    for (const p of procs) if (!p.exited) signalGroup(p.pid, SIGKILL);
    await Promise.all(procs.map((p) => p.close()));
  }
}
