/**
 * Bench plumbing: child processes that are always reaped, shared-memory segments that are always
 * unlinked and temporary directories that are always removed, even when a measurement fails or
 * the bench is interrupted; plus the CPU time of a process from `/proc`.
 *
 * @module
 */
import { sleep } from "../cli.ts";
import { cString, libc, monotonicMs, os } from "../ffi/posix.ts";
import { Segment } from "../segment.ts";
import type { Schema } from "../schema.ts";

/** A child process whose stdout and stderr are collected as it runs. */
export class Proc {
  readonly label: string;
  readonly child: Deno.ChildProcess;
  readonly result: Promise<Deno.CommandOutput>;
  #exited = false;

  constructor(label: string, child: Deno.ChildProcess) {
    this.label = label;
    this.child = child;
    // output() drains both pipes concurrently, so a chatty child never blocks on a full pipe.
    this.result = child.output().finally(() => (this.#exited = true));
  }

  /** The child's pid. */
  get pid(): number {
    return this.child.pid;
  }

  /** Whether the child has exited. */
  get exited(): boolean {
    return this.#exited;
  }

  /** Waits for the child to exit within `timeoutMs`, else kills it and throws. */
  async wait(timeoutMs: number): Promise<ProcOutput> {
    const done = await Promise.race([this.result, sleep(timeoutMs).then(() => undefined)]);
    if (done === undefined) {
      await this.stop(1000);
      throw new Error(`Cannot finish the bench as ${this.label} did not exit in ${timeoutMs} ms`);
    }
    return decode(done);
  }

  /** Sends SIGTERM (SIGKILL after `graceMs`) unless exited; resolves to the output. */
  async stop(graceMs = 5000): Promise<ProcOutput> {
    if (!this.#exited) {
      signal(this.child, "SIGTERM");
      const done = await Promise.race([this.result, sleep(graceMs).then(() => undefined)]);
      if (done === undefined) signal(this.child, "SIGKILL");
    }
    return decode(await this.result);
  }
}

/** What a child printed, and how it ended. */
export interface ProcOutput {
  code: number;
  signal: Deno.Signal | null;
  stdout: string;
  stderr: string;
}

function decode(o: Deno.CommandOutput): ProcOutput {
  const d = new TextDecoder();
  return { code: o.code, signal: o.signal, stdout: d.decode(o.stdout), stderr: d.decode(o.stderr) };
}

function signal(child: Deno.ChildProcess, sig: Deno.Signal): void {
  try {
    child.kill(sig);
  } catch {
    // Already exited.
  }
}

/** Everything the bench must give back: processes, segments, directories. */
export class Resources implements AsyncDisposable {
  #procs = new Set<Proc>();
  #segments = new Map<string, Segment>();
  #dirs: string[] = [];

  /** Tracks a spawned child. */
  track(label: string, child: Deno.ChildProcess): Proc {
    const p = new Proc(label, child);
    this.#procs.add(p);
    p.result.finally(() => this.#procs.delete(p)).catch(() => {});
    return p;
  }

  /**
   * Creates segment `name` (capacity slots, optional schema and entry size, 64 by default) and
   * keeps it mapped until {@link dropSegment}.
   */
  createSegment(name: string, capacity: number, schema?: Schema, entrySize?: number): Segment {
    if (Segment.exists(name)) Segment.unlink(name);
    const seg = Segment.create(name, { capacity, schema, entrySize });
    this.#segments.set(name, seg);
    return seg;
  }

  /** Unmaps and unlinks a segment made by {@link createSegment}. */
  dropSegment(name: string): void {
    const seg = this.#segments.get(name);
    this.#segments.delete(name);
    seg?.close();
    try {
      if (Segment.exists(name)) Segment.unlink(name);
    } catch (e) {
      console.error(`bench: cannot unlink segment ${name}: ${(e as Error).message}`);
    }
  }

  /** Tracks a directory to remove recursively at the end. */
  dir(path: string): string {
    this.#dirs.push(path);
    return path;
  }

  /** Stops every child still running, unlinks every segment, removes every directory. */
  async dispose(): Promise<void> {
    await Promise.all([...this.#procs].map((p) => p.stop(2000).catch(() => {})));
    for (const name of [...this.#segments.keys()]) this.dropSegment(name);
    for (const d of this.#dirs.splice(0).reverse()) {
      try {
        Deno.removeSync(d, { recursive: true });
      } catch (e) {
        if (!(e instanceof Deno.errors.NotFound)) {
          console.error(`bench: cannot remove ${d}: ${(e as Error).message}`);
        }
      }
    }
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.dispose();
  }
}

/** Polls `cond` every `everyMs` until true; throws naming `what` after `timeoutMs`. */
export async function waitUntil(
  cond: () => boolean,
  timeoutMs: number,
  what: string,
  everyMs = 1,
): Promise<void> {
  const deadline = monotonicMs() + timeoutMs;
  while (!cond()) {
    if (monotonicMs() > deadline) {
      throw new Error(`Cannot finish the bench as ${what} did not happen in ${timeoutMs} ms`);
    }
    await sleep(everyMs);
  }
}

/**
 * Reads a small file of `/proc` through libc: Deno refuses `/proc` to `Deno.readFile` without
 * `--allow-all`, and the bench already holds `--allow-ffi`. `undefined` when it cannot be read.
 */
export function readProcFile(path: string): string | undefined {
  const c = libc();
  const fd = c.open(cString(path), os().O_RDONLY);
  if (fd < 0) return undefined;
  const chunks: Uint8Array[] = [];
  try {
    for (;;) {
      const buf = new Uint8Array(65536);
      const n = Number(c.read(fd, buf, BigInt(buf.length)));
      if (n < 0) return undefined;
      if (n === 0) break;
      chunks.push(buf.subarray(0, n));
    }
  } finally {
    c.close(fd);
  }
  const all = new Uint8Array(chunks.reduce((a, b) => a + b.length, 0));
  let at = 0;
  for (const ch of chunks) {
    all.set(ch, at);
    at += ch.length;
  }
  return new TextDecoder().decode(all);
}

/** Clock ticks per second of `/proc/PID/stat` (`USER_HZ`, 100 on Linux). */
export const CLOCK_TICKS = 100;

/**
 * CPU time (user + system, all threads) of process `pid` in seconds: `utime + stime` of
 * `/proc/PID/stat` (fields 14 and 15, in ticks of 10 ms). `undefined` when it is gone.
 */
export function cpuSeconds(pid: number): number | undefined {
  const text = readProcFile(`/proc/${pid}/stat`);
  if (text === undefined) return undefined;
  // Fields after the parenthesised command name start at field 3.
  const rest = text.slice(text.lastIndexOf(")") + 2).split(" ");
  const ticks = Number(rest[11]) + Number(rest[12]);
  return Number.isFinite(ticks) ? ticks / CLOCK_TICKS : undefined;
}
