/**
 * The reporter's output file: opened, checked, repaired after a crash, and appended to in whole
 * batches. Its last row is where the reporter's position really lives (Kafka's rule for
 * exactly-once into an external system): on start the reporter resumes after it.
 *
 * One reporter per file: the reporter holds an exclusive lock on the file (`flock`, through
 * `Deno.FsFile.tryLockSync`) from before it reads the tail until it closes it, so a second
 * reporter given the same file refuses (exit 6) and never touches it. The kernel drops the lock
 * with the descriptor, kill -9 included.
 *
 * @module
 */
import { ExitCode, OutputError } from "./cli.ts";
import { CSV_HEADER, parseRowEnds } from "./csv.ts";

/**
 * How much of the file's end a restart reads to find its last row: room for two of the longest
 * rows any schema prints (a `char[65520]` field quoted with every byte doubled is 131,042 bytes),
 * a complete one and a torn one after it.
 */
const TAIL_BYTES = 512 * 1024;

/** The last row's seq, timestamp and epoch: where a restart resumes. */
export type LastRow = { seq: number; timestampNs: bigint; epoch: bigint };

/** What {@link OutputFile.open} found in an existing file. */
export interface OutputState {
  /** The last complete row, if any. */
  last: LastRow | undefined;
  /**
   * Whether the file is a reporter CSV of another schema (another header): its rows must be
   * rotated aside, never mixed with rows of this schema.
   */
  schemaChanged?: boolean;
  /** Bytes of a partial last line removed, 0 if none. */
  repairedBytes: number;
  /** Whether the file was created by this open. */
  created: boolean;
}

/** The CSV file a reporter appends to. */
export class OutputFile implements Disposable {
  #file: Deno.FsFile;
  #path: string;
  #ino: number | null;
  #state: OutputState;
  #headerLine: string;

  private constructor(file: Deno.FsFile, path: string, state: OutputState, header: string) {
    this.#headerLine = header + "\n";
    this.#file = file;
    this.#path = path;
    this.#state = state;
    this.#ino = file.statSync().ino;
  }

  /**
   * Opens (or creates) `path`, locks it, checks its header, repairs a partial last line left by a
   * crash, and reads the last complete row. Throws {@link OutputError} (exit 5 if it cannot be
   * opened, 6 if another process holds its lock, 8 if it is not a reporter CSV). `header` is the
   * header row of the segment's schema; a reporter CSV with another header is reported in
   * `state.schemaChanged`.
   */
  static open(path: string, header: string = CSV_HEADER): OutputFile {
    // The path may be renamed to another file between our open and our lock (a reporter rotating
    // it aside): the lock counts only while the path still names the locked file, so check, and
    // open the path again if it moved.
    for (let attempt = 1;; attempt++) {
      const { file, created } = openOrCreate(path);
      // Lock before reading anything: the tail is only the truth while no one else appends to it.
      if (!tryLock(file, path)) {
        file.close(); // never remove it, even if created here: it is the lock holder's file now
        throw lockedError(path);
      }
      let moved: boolean;
      try {
        moved = !sameFile(file, path);
      } catch (e) {
        file.close();
        throw new OutputError(`Cannot open output file ${path}: ${(e as Error).message}`);
      }
      if (moved) {
        file.close(); // locked a file the path no longer names: never write to it
        if (attempt < 100) continue;
        throw new OutputError(
          `Cannot open output file ${path} as it keeps being replaced while it is opened`,
          ExitCode.OWNERSHIP,
        );
      }
      try {
        const state = inspect(file, path, header + "\n");
        state.created = created;
        return new OutputFile(file, path, state, header);
      } catch (e) {
        file.close();
        if (created) Deno.removeSync(path);
        if (e instanceof OutputError) throw e;
        throw new OutputError(
          `Cannot prepare output file ${path} (reading it, repairing a torn last line or writing its header): ${
            (e as Error).message
          }`,
        );
      }
    }
  }

  /**
   * Refuses up front, before anything waits for a segment, if `path` exists and another process
   * holds its lock: rejects with {@link OutputError} (exit 6 naming the file; exit 5 if it exists
   * but cannot be opened). Opens it without creating it, tries the lock and releases it again,
   * so a reporter refused later (a bad segment, a held reader id) never creates its file; the
   * real lock is taken by {@link open}. A held lock is tried again for up to `recheckMs` (default
   * 1000) before refusing: a holder killed a moment ago (a supervisor's restart) still holds it
   * until the kernel has closed its descriptors.
   */
  static async probe(path: string, recheckMs = 1000): Promise<void> {
    const deadline = Date.now() + recheckMs;
    for (;;) {
      let file: Deno.FsFile;
      try {
        file = Deno.openSync(path, { read: true });
      } catch (e) {
        if (e instanceof Deno.errors.NotFound) return;
        throw new OutputError(`Cannot open output file ${path}: ${(e as Error).message}`);
      }
      try {
        if (tryLock(file, path)) return;
      } finally {
        file.close(); // drops the probe's lock
      }
      if (Date.now() >= deadline) throw lockedError(path);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }

  /**
   * Reads the file's tail again, under the lock it still holds (repairing a partial last line
   * again if there is one), so that the next incarnation of the segment is reconciled with the
   * file as it is now. `header` is the header row of the new incarnation's schema.
   */
  refresh(header: string = CSV_HEADER): OutputState {
    this.#headerLine = header + "\n";
    try {
      this.#state = inspect(this.#file, this.#path, this.#headerLine);
    } catch (e) {
      if (e instanceof OutputError) throw e;
      throw new OutputError(`Cannot read output file ${this.#path} again: ${(e as Error).message}`);
    }
    return this.#state;
  }

  /** The path given to {@link open}. */
  get path(): string {
    return this.#path;
  }
  /** What was found on open. */
  get state(): OutputState {
    return this.#state;
  }

  /** Appends all of `bytes` (one batch of whole rows). Throws {@link OutputError} on failure. */
  append(bytes: Uint8Array): void {
    let done = 0;
    try {
      while (done < bytes.length) done += this.#file.writeSync(bytes.subarray(done));
    } catch (e) {
      throw new OutputError(
        `Cannot write output file ${this.#path} (${done} of ${bytes.length} bytes written): ${
          (e as Error).message
        }`,
      );
    }
  }

  /** `fdatasync`: the rows survive power loss once this returns. */
  sync(): void {
    try {
      this.#file.syncDataSync();
    } catch (e) {
      throw new OutputError(`Cannot sync output file ${this.#path}: ${(e as Error).message}`);
    }
  }

  /**
   * Checks that the path still names this file and that it is still writable, so rows never go
   * to a file that was removed or replaced under the reporter.
   */
  verify(): void {
    let info: Deno.FileInfo;
    try {
      info = Deno.statSync(this.#path);
    } catch (e) {
      throw new OutputError(
        `Cannot keep writing output file ${this.#path} as it was removed: ${(e as Error).message}`,
      );
    }
    if (this.#ino !== null && info.ino !== this.#ino) {
      throw new OutputError(
        `Cannot keep writing output file ${this.#path} as it was replaced by another file`,
      );
    }
    if (info.mode !== null && (info.mode & 0o222) === 0) {
      throw new OutputError(
        `Cannot keep writing output file ${this.#path} as it was made read-only: mode ${
          (info.mode & 0o777).toString(8)
        }`,
      );
    }
  }

  /**
   * Moves the current file aside as `<stem>.epoch-<epoch><ext>` and starts an empty one: used when
   * the segment was re-created, so rows of two incarnations never share a file. The new file is
   * made, locked and given its header under a temporary name in the same directory; the old one
   * is linked to its aside name (never over an existing file: exit 5 naming it), the new one is
   * renamed into place, and only then is the old one closed. So the path always names a file this
   * reporter holds locked, and nothing is ever overwritten.
   */
  rotate(oldEpoch: bigint): string {
    const dot = this.#path.lastIndexOf(".");
    const slash = this.#path.lastIndexOf("/");
    const cut = dot > slash ? dot : this.#path.length;
    const fail = (e: unknown): OutputError =>
      e instanceof OutputError
        ? e
        : new OutputError(`Cannot rotate output file ${this.#path}: ${(e as Error).message}`);
    // 1. The new file, locked and with its header, under a name nobody else opens.
    const temp = `${this.#path.slice(0, slash + 1)}.${
      this.#path.slice(slash + 1)
    }.rotating-${Deno.pid}`;
    let next: Deno.FsFile;
    try {
      try {
        next = Deno.openSync(temp, { read: true, write: true, createNew: true });
      } catch (e) {
        if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
        Deno.removeSync(temp); // left by a crash of a process of our pid: ours to remove
        next = Deno.openSync(temp, { read: true, write: true, createNew: true });
      }
    } catch (e) {
      throw fail(e);
    }
    let aside = "";
    try {
      if (!tryLock(next, temp)) throw lockedError(temp);
      const header = new TextEncoder().encode(this.#headerLine);
      let done = 0;
      while (done < header.length) done += next.writeSync(header.subarray(done));
      // 2. The old file gets its aside name as a second link: never over an existing file (an
      // earlier rotation's: number the next one), and never a moment without the path.
      for (let n = 0;; n++) {
        aside = `${this.#path.slice(0, cut)}.epoch-${oldEpoch}${n === 0 ? "" : `.${n}`}${
          this.#path.slice(cut)
        }`;
        const there = statOrUndefined(aside);
        if (there === undefined) break;
        if (there.ino === this.#ino && this.#ino !== null) break; // linked before a crash
      }
      if (statOrUndefined(aside)?.ino !== this.#ino) {
        try {
          Deno.linkSync(this.#path, aside);
        } catch (e) {
          if (e instanceof Deno.errors.AlreadyExists) {
            throw new OutputError(
              `Cannot rotate output file ${this.#path} as ${aside} exists already (never overwritten)`,
            );
          }
          throw e;
        }
      }
      // 3. The new file takes the path in one step; the old one lives on as the aside name.
      Deno.renameSync(temp, this.#path);
    } catch (e) {
      next.close();
      try {
        Deno.removeSync(temp);
      } catch {
        // renamed already, or never made
      }
      throw fail(e);
    }
    // 4. Only now the old file is let go (and its lock with it).
    this.#file.close();
    this.#file = next;
    try {
      this.#ino = next.statSync().ino;
    } catch (e) {
      throw fail(e);
    }
    this.#state = { last: undefined, repairedBytes: 0, created: true };
    return aside;
  }

  /** Closes the file, which releases its lock. Idempotent. */
  close(): void {
    try {
      this.#file.close();
    } catch {
      // already closed
    }
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** Opens `path` read-write, creating it if it does not exist (exit 5 if neither works). */
function openOrCreate(path: string): { file: Deno.FsFile; created: boolean } {
  try {
    try {
      return { file: Deno.openSync(path, { read: true, write: true }), created: false };
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
      return {
        file: Deno.openSync(path, { read: true, write: true, createNew: true }),
        created: true,
      };
    }
  } catch (e) {
    throw new OutputError(`Cannot open output file ${path}: ${(e as Error).message}`);
  }
}

/** Whether `path` (followed, if a link) still names the file open as `file`: device and inode. */
function sameFile(file: Deno.FsFile, path: string): boolean {
  const mine = file.statSync();
  let named: Deno.FileInfo;
  try {
    named = Deno.statSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
  return named.ino === mine.ino && named.dev === mine.dev;
}

/** `lstat` of `path`, or undefined if nothing is there. */
function statOrUndefined(path: string): Deno.FileInfo | undefined {
  try {
    return Deno.lstatSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
}

/** Takes the exclusive lock on `file` without waiting: false if another process holds it. */
function tryLock(file: Deno.FsFile, path: string): boolean {
  try {
    return file.tryLockSync(true);
  } catch (e) {
    throw new OutputError(`Cannot lock output file ${path}: ${(e as Error).message}`);
  }
}

/**
 * The refusal when another process holds the file's lock (a reporter, a `follow`, or any program
 * that locked it): exit 6, like a held reader id.
 */
function lockedError(path: string): OutputError {
  return new OutputError(
    `Cannot write output file ${path} as another process holds its lock (one reporter per file)`,
    ExitCode.OWNERSHIP,
  );
}

/** Checks the header, repairs a partial tail, finds the last row; leaves the offset at the end. */
function inspect(file: Deno.FsFile, path: string, headerLine: string): OutputState {
  const size = file.statSync().size;
  const encoder = new TextEncoder();
  if (size === 0) {
    file.writeSync(encoder.encode(headerLine));
    return { last: undefined, repairedBytes: 0, created: false };
  }
  const head = new Uint8Array(Math.min(size, headerLine.length));
  file.seekSync(0, Deno.SeekMode.Start);
  readFully(file, head);
  const headText = new TextDecoder().decode(head);
  if (size < headerLine.length || !headText.endsWith("\n")) {
    // A crash while the header itself was written: only a prefix of it can be there.
    if (headerLine.startsWith(headText) && size < headerLine.length) {
      file.truncateSync(0);
      file.seekSync(0, Deno.SeekMode.Start);
      file.writeSync(encoder.encode(headerLine));
      return { last: undefined, repairedBytes: size, created: false };
    }
  }
  let headerLength = headerLine.length;
  let columns = headerLine.split(",").length;
  let schemaChanged = false;
  if (headText !== headerLine) {
    // A reporter CSV of another schema (seq,timestamp_ns,<fields>,epoch): rotated aside later.
    const first = new Uint8Array(Math.min(size, 4096));
    file.seekSync(0, Deno.SeekMode.Start);
    readFully(file, first);
    const newline = first.indexOf(0x0a);
    const line = new TextDecoder().decode(first.subarray(0, Math.max(newline, 0)));
    if (newline < 0 || !/^seq,timestamp_ns(,[a-z_][a-z0-9_]*)+,epoch$/.test(line)) {
      throw new OutputError(
        `Cannot use output file ${path} as its header must be "${
          headerLine.slice(0, -1)
        }": current value is ${JSON.stringify(headText.split("\n")[0]!.slice(0, 80))}`,
        ExitCode.OUTPUT_MISMATCH,
      );
    }
    headerLength = newline + 1;
    columns = line.split(",").length;
    schemaChanged = true;
  }
  const tailLength = Math.min(size - headerLength, TAIL_BYTES);
  const tail = new Uint8Array(tailLength);
  file.seekSync(size - tailLength, Deno.SeekMode.Start);
  readFully(file, tail);
  let end = tail.length;
  let repairedBytes = 0;
  if (end > 0 && tail[end - 1] !== 0x0a) {
    const lastNewline = tail.lastIndexOf(0x0a);
    if (lastNewline < 0 && tailLength === TAIL_BYTES) {
      throw new OutputError(
        `Cannot use output file ${path} as its last line is longer than ${TAIL_BYTES} bytes`,
        ExitCode.OUTPUT_MISMATCH,
      );
    }
    repairedBytes = end - (lastNewline + 1);
    end = lastNewline + 1;
    file.truncateSync(size - repairedBytes);
  }
  let last: LastRow | undefined;
  if (end > 0) {
    const start = tail.lastIndexOf(0x0a, end - 2) + 1;
    if (start === 0 && tailLength === TAIL_BYTES) {
      throw new OutputError(
        `Cannot use output file ${path} as its last row is longer than ${TAIL_BYTES} bytes`,
        ExitCode.OUTPUT_MISMATCH,
      );
    }
    const line = new TextDecoder().decode(tail.subarray(start, end - 1));
    last = parseRowEnds(line, columns);
    if (last === undefined) {
      throw new OutputError(
        `Cannot use output file ${path} as its last row is not a reporter row: current value is ${
          JSON.stringify(line.slice(0, 80))
        }`,
        ExitCode.OUTPUT_MISMATCH,
      );
    }
  }
  file.seekSync(0, Deno.SeekMode.End);
  return { last, repairedBytes, created: false, ...(schemaChanged ? { schemaChanged } : {}) };
}

function readFully(file: Deno.FsFile, into: Uint8Array): void {
  let done = 0;
  while (done < into.length) {
    const n = file.readSync(into.subarray(done));
    if (n === null || n === 0) throw new Error(`unexpected end of file after ${done} bytes`);
    done += n;
  }
}
