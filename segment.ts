/**
 * The shared-memory segment as a resource: one object owns the file descriptor and the mapping,
 * and `close()` (or `using`) unmaps, then closes. After that the view is detached, so no typed
 * array over the mapping can touch unmapped memory.
 *
 * @module
 */
import {
  check,
  cString,
  errnoName,
  libc,
  MAP_FAILED,
  MAP_SHARED,
  ofdLock,
  os,
  PosixError,
  PROT_READ,
  PROT_WRITE,
  realtimeNs,
} from "./ffi/posix.ts";
import {
  DEFAULT_CAPACITY,
  ENTRY_SIZE,
  HEADER_SIZE,
  type HeaderInfo,
  MAGIC_OFFSET,
  MAX_ENTRIES_OFFSET,
  MAX_RING_BYTES,
  ringShapeProblem,
  SegmentInvalidError,
  segmentSize,
  validateHeader,
} from "./layout.ts";
import { initRing } from "./ring.ts";
import {
  checkSchemaFits,
  DEFAULT_SCHEMA,
  entriesOffsetFor,
  readSchema,
  type Schema,
} from "./schema.ts";

/** Longest segment name accepted, slash included (macOS allows 31 bytes; we hold every OS to it). */
export const MAX_NAME_LENGTH = 31;

/**
 * Checks a segment name: one leading slash, then 1 to 30 characters from `A-Z a-z 0-9 . _ -`,
 * other than `.` and `..` (which name the shm directory and its parent: the OS refuses them).
 * Throws a TypeError naming the value otherwise.
 *
 * @example
 * ```ts
 * import { validateName } from "./segment.ts";
 * validateName("/rpt_sys_shm");
 * ```
 */
export function validateName(name: string): string {
  if (
    typeof name !== "string" || !/^\/[A-Za-z0-9._-]{1,30}$/.test(name) || name === "/." ||
    name === "/.."
  ) {
    throw new TypeError(
      `Cannot use segment name as it must be a slash then 1 to 30 characters of A-Z a-z 0-9 . _ - (not . or ..): current value is ${
        JSON.stringify(name)
      }`,
    );
  }
  return name;
}

/**
 * Options for {@link Segment.create}.
 *
 * @example
 * ```ts
 * import { type CreateOptions, Segment } from "./segment.ts";
 * const options: CreateOptions = { capacity: 4096 };
 * const name = `/rpt_doc_co_${Deno.pid}`;
 * Segment.create(name, options).close();
 * Segment.unlink(name);
 * ```
 */
export interface CreateOptions {
  /** Number of slots, a power of two (default 1024). */
  capacity?: number;
  /**
   * Bytes per slot: a power of two from 64 to 65,536 (default 64); the payload is 16 bytes less.
   * `capacity x entrySize` may be at most 2^30 bytes.
   */
  entrySize?: number;
  /**
   * The payload schema, from `defineSchema` (default: today's entry, stored as no block). It is
   * stored in the segment, so every reader formats entries by it. Its fields must fit the payload.
   */
  schema?: Schema;
}

/** Options for {@link Segment.open}. */
export interface OpenOptions {
  /**
   * Map the segment read-only (`O_RDONLY`, `PROT_READ`): for tools that must not change it. Any
   * store through the view then faults, so only read it.
   */
  readOnly?: boolean;
}

/**
 * Raised by {@link Segment.open} when no segment has that name (yet).
 *
 * @example
 * ```ts
 * import { Segment, SegmentNotFoundError } from "./segment.ts";
 * try {
 *   Segment.open(`/rpt_doc_none_${Deno.pid}`);
 * } catch (e) {
 *   console.assert(e instanceof SegmentNotFoundError);
 * }
 * ```
 */
export class SegmentNotFoundError extends Error {
  /**
   * Makes the error for segment `name`.
   *
   * @example
   * ```ts
   * import { SegmentNotFoundError } from "./segment.ts";
   * console.assert(new SegmentNotFoundError("/x").message.includes("/x"));
   * ```
   */
  constructor(name: string) {
    super(`Cannot open segment ${name} as it does not exist`);
    this.name = "SegmentNotFoundError";
  }
}

/**
 * Raised by {@link Segment.open} when the segment exists but its creator has not finished.
 *
 * @example
 * ```ts
 * import { Segment, SegmentNotReadyError } from "./segment.ts";
 * async function openWhenReady(name: string): Promise<Segment> {
 *   for (;;) {
 *     try {
 *       return Segment.open(name);
 *     } catch (e) {
 *       if (!(e instanceof SegmentNotReadyError)) throw e;
 *       await new Promise((r) => setTimeout(r, 10));
 *     }
 *   }
 * }
 * console.assert(typeof openWhenReady === "function");
 * ```
 */
export class SegmentNotReadyError extends Error {
  /**
   * Makes the error for segment `name`.
   *
   * @example
   * ```ts
   * import { SegmentNotReadyError } from "./segment.ts";
   * console.assert(new SegmentNotReadyError("/x").name === "SegmentNotReadyError");
   * ```
   */
  constructor(name: string) {
    super(`Cannot open segment ${name} as it is not initialised yet (magic is 0)`);
    this.name = "SegmentNotReadyError";
  }
}

/**
 * A mapped POSIX shared-memory segment holding a ring of layout v1.
 *
 * @example
 * ```ts
 * import { Segment } from "./segment.ts";
 * const name = `/rpt_doc_${Deno.pid}`;
 * {
 *   using seg = Segment.create(name, { capacity: 16 });
 *   console.assert(seg.info.capacity === 16);
 * }
 * Segment.unlink(name);
 * ```
 */
export class Segment implements Disposable {
  #fd: number;
  #pointer: Deno.PointerObject | null;
  #size: number;
  #buffer: ArrayBuffer;
  #info: HeaderInfo;
  #name: string;
  #created: boolean;
  #ino: bigint;
  /** Start offsets of the lock ranges held through this object's descriptor. */
  #locked = new Set<number>();
  #schema: Schema;

  private constructor(
    fd: number,
    pointer: Deno.PointerObject,
    size: number,
    info: HeaderInfo,
    name: string,
    created: boolean,
    ino: bigint,
    schema: Schema,
  ) {
    this.#schema = schema;
    this.#ino = ino;
    this.#fd = fd;
    this.#pointer = pointer;
    this.#size = size;
    this.#buffer = Deno.UnsafePointerView.getArrayBuffer(pointer, size);
    this.#info = info;
    this.#name = name;
    this.#created = created;
  }

  /**
   * Creates a new segment (fails with EEXIST if one exists), sized, initialised and published
   * with its magic stored last. Its mode is 0600 whatever the umask.
   */
  static create(name: string, options: CreateOptions = {}): Segment {
    validateName(name);
    const capacity = options.capacity ?? DEFAULT_CAPACITY;
    const entrySize = options.entrySize ?? ENTRY_SIZE;
    const problem = ringShapeProblem(capacity, entrySize);
    if (problem !== undefined) throw new RangeError(`Cannot create segment as ${problem}`);
    const f = os();
    const c = libc();
    const schema = options.schema ?? DEFAULT_SCHEMA;
    checkSchemaFits(schema, entrySize);
    const size = segmentSize(capacity, entriesOffsetFor(schema), entrySize);
    const fd = shmOpen(name, f.O_RDWR | f.O_CREAT | f.O_EXCL);
    let pointer: Deno.PointerObject | null = null;
    try {
      check(c.fchmod(fd, 0o600), "fchmod", name);
      check(c.ftruncate(fd, BigInt(size)), "ftruncate", name);
      reserve(fd, size, name);
      pointer = map(fd, size, name);
      const buffer = initRing(
        Deno.UnsafePointerView.getArrayBuffer(pointer, size),
        capacity,
        realtimeNs(),
        schema,
        entrySize,
      );
      const info = validateHeader(buffer, size, name);
      const stored = readSchema(buffer, size, name);
      buffer.transfer(0);
      return new Segment(fd, pointer, size, info, name, true, statFd(fd, name).ino, stored);
    } catch (e) {
      if (pointer) c.munmap(pointer, BigInt(size));
      c.close(fd);
      c.shm_unlink(cString(name));
      throw e;
    }
  }

  /**
   * Opens an existing segment read-write and validates it before trusting anything in it.
   * Throws {@link SegmentNotFoundError}, {@link SegmentNotReadyError} or
   * {@link SegmentInvalidError}.
   */
  static open(name: string, options: OpenOptions = {}): Segment {
    validateName(name);
    const c = libc();
    let fd: number;
    try {
      fd = shmOpen(name, options.readOnly ? os().O_RDONLY : os().O_RDWR);
    } catch (e) {
      if (e instanceof PosixError && e.code === "ENOENT") throw new SegmentNotFoundError(name);
      throw e;
    }
    let pointer: Deno.PointerObject | null = null;
    let size = 0;
    let ino = 0n;
    try {
      const stat = statFd(fd, name);
      size = stat.size;
      ino = stat.ino;
      if (size === 0) throw new SegmentNotReadyError(name);
      const largest = MAX_ENTRIES_OFFSET + MAX_RING_BYTES;
      if (size < HEADER_SIZE || size > largest) {
        throw new SegmentInvalidError(
          `Cannot use segment ${name} as its size must be ${HEADER_SIZE} to ${largest} bytes: current value is ${size}`,
        );
      }
      // create() sizes the object in one ftruncate before writing anything, and entries_offset
      // and every slot are multiples of 64 bytes: any other size is invalid, not "not ready yet".
      if (size % 64 !== 0) {
        throw new SegmentInvalidError(
          `Cannot use segment ${name} as its size must be a multiple of 64 bytes: current value is ${size}`,
        );
      }
      pointer = map(fd, size, name, options.readOnly === true);
      const buffer = Deno.UnsafePointerView.getArrayBuffer(pointer, size);
      if (Atomics.load(new Uint32Array(buffer, 0, HEADER_SIZE / 4), MAGIC_OFFSET / 4) === 0) {
        throw new SegmentNotReadyError(name);
      }
      const info = validateHeader(buffer, size, name);
      // The schema block is validated like the header: in bounds, hashed, every byte checked.
      const schema = readSchema(buffer, size, name);
      buffer.transfer(0);
      return new Segment(fd, pointer, size, info, name, false, ino, schema);
    } catch (e) {
      if (pointer) c.munmap(pointer, BigInt(size));
      c.close(fd);
      throw e;
    }
  }

  /**
   * Opens the segment if it exists, else creates it. A segment still being initialised by another
   * process is waited for up to `readyTimeoutMs`.
   */
  static async openOrCreate(
    name: string,
    options: CreateOptions & { readyTimeoutMs?: number } = {},
  ): Promise<Segment> {
    const deadline = Date.now() + (options.readyTimeoutMs ?? 2000);
    for (;;) {
      try {
        return Segment.create(name, options);
      } catch (e) {
        if (!(e instanceof PosixError && e.code === "EEXIST")) throw e;
      }
      try {
        return Segment.open(name);
      } catch (e) {
        if (e instanceof SegmentNotFoundError) continue; // removed in between: create it
        if (!(e instanceof SegmentNotReadyError)) throw e;
        if (Date.now() > deadline) {
          throw new SegmentInvalidError(
            `Cannot use segment ${name} as it is still not initialised (magic is 0) after ${
              options.readyTimeoutMs ?? 2000
            } ms: its creator died or it is not a segment of ours (use --recreate to replace it)`,
          );
        }
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** Removes the segment name (`shm_unlink`). Mappings that exist stay valid until closed. */
  static unlink(name: string): void {
    validateName(name);
    check(libc().shm_unlink(cString(name)), "shm_unlink", name);
  }

  /** Whether a segment of that name exists. */
  static exists(name: string): boolean {
    validateName(name);
    try {
      libc().close(shmOpen(name, os().O_RDONLY));
      return true;
    } catch (e) {
      if (e instanceof PosixError && e.code === "ENOENT") return false;
      throw e;
    }
  }

  /**
   * Whether the name now refers to another object than this mapping ("replaced": removed and
   * created again, e.g. by `writer --recreate`), to none ("removed"), or still to it ("same").
   */
  identity(): "same" | "replaced" | "removed" {
    let fd: number;
    try {
      fd = shmOpen(this.#name, os().O_RDONLY);
    } catch (e) {
      if (e instanceof PosixError && e.code === "ENOENT") return "removed";
      throw e;
    }
    try {
      return statFd(fd, this.#name).ino === this.#ino ? "same" : "replaced";
    } finally {
      libc().close(fd);
    }
  }

  /** The segment's name. */
  get name(): string {
    return this.#name;
  }
  /** Whether this object created the segment. */
  get created(): boolean {
    return this.#created;
  }
  /** Size of the mapping in bytes. */
  get size(): number {
    return this.#size;
  }
  /** The header as validated when the segment was opened. */
  get info(): HeaderInfo {
    return this.#info;
  }
  /** The payload schema stored in the segment (the default schema when it has no block). */
  get schema(): Schema {
    return this.#schema;
  }
  /** Bytes per slot (the header's `entry_size`): a power of two from 64 to 65,536. */
  get entrySize(): number {
    return this.#info.entrySize;
  }
  /** Whether `close()` has run. */
  get closed(): boolean {
    return this.#pointer === null;
  }

  /** The zero-copy view over the mapping. Detached (length 0) once the segment is closed. */
  get buffer(): ArrayBuffer {
    if (this.#pointer === null) {
      throw new Error(`Cannot use segment ${this.#name} as it is closed`);
    }
    return this.#buffer;
  }

  /**
   * Takes the exclusive open-file-description lock on bytes `[offset, offset + length)` of this
   * segment's descriptor without waiting: true if taken, false if it is held already, through
   * another open file description or through this object (the kernel would grant it again to the
   * same descriptor, and the first unlock would drop it for both holders: a lock is taken once).
   * The lock lasts until {@link unlockRange}, {@link close}, or the death of the process,
   * whichever comes first. Throws where the OS has no such locks (see `ofdLockFacts`).
   */
  tryLockRange(offset: number, length: number): boolean {
    if (this.#locked.has(offset)) return false;
    if (!ofdLock(this.#open(), "try", offset, length, this.#name)) return false;
    this.#locked.add(offset);
    return true;
  }

  /** Whether this object holds the lock taken with {@link tryLockRange} at `offset`. */
  holdsRange(offset: number): boolean {
    return this.#pointer !== null && this.#locked.has(offset);
  }

  /** Releases a lock taken with {@link tryLockRange}; does nothing if this object holds none. */
  unlockRange(offset: number, length: number): void {
    if (!this.#locked.delete(offset) || this.#pointer === null) return;
    ofdLock(this.#fd, "unlock", offset, length, this.#name);
  }

  /**
   * Whether bytes `[offset, offset + length)` are locked, through this object or through any
   * other open file description of the segment (in any process). Works on a read-only segment.
   */
  isRangeLocked(offset: number, length: number): boolean {
    if (this.#locked.has(offset)) return true;
    return ofdLock(this.#open(), "test", offset, length, this.#name);
  }

  #open(): number {
    if (this.#pointer === null) throw new Error(`Cannot use segment ${this.#name} as it is closed`);
    return this.#fd;
  }

  /** Unmaps, then closes the descriptor, which releases every lock it holds. Idempotent. */
  close(): void {
    if (this.#pointer === null) return;
    this.#locked.clear();
    const c = libc();
    // Detach the view first: every typed array over it becomes empty instead of dangling.
    this.#buffer.transfer(0);
    const pointer = this.#pointer;
    this.#pointer = null;
    check(c.munmap(pointer, BigInt(this.#size)), "munmap", this.#name);
    check(c.close(this.#fd), "close", this.#name);
  }

  /** Same as {@link close}: lets `using` unmap and close the segment. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/** `shm_open` with mode 0600 where the OS takes a mode; throws a PosixError on failure. */
function shmOpen(name: string, flags: number): number {
  const c = libc();
  const cname = cString(name);
  const ret = os().shmOpenVariadic
    ? (c.shm_open as unknown as (n: Uint8Array, o: number) => number)(cname, flags)
    : c.shm_open(cname, flags, 0o600);
  return check(ret, "shm_open", name);
}

function map(fd: number, size: number, name: string, readOnly = false): Deno.PointerObject {
  const prot = readOnly ? PROT_READ : PROT_READ | PROT_WRITE;
  // Read-write users (writer, reporter) pre-fault the whole mapping, as Aeron pre-touches its
  // buffers: no page fault on the hot path later. Read-only tools map lazily.
  const flags = MAP_SHARED | (readOnly ? 0 : os().MAP_POPULATE);
  const p = libc().mmap(null, BigInt(size), prot, flags, fd, 0n);
  if (p === null || Deno.UnsafePointer.value(p) === MAP_FAILED) {
    check(-1, "mmap", name);
  }
  return p as Deno.PointerObject;
}

/**
 * Allocates the segment's pages now where the OS can (posix_fallocate), so that a full /dev/shm
 * is a clear ENOSPC at creation rather than a SIGBUS when a page is first touched.
 */
function reserve(fd: number, size: number, name: string): void {
  const fallocate = libc().posix_fallocate;
  if (fallocate === null) return;
  const err = fallocate(fd, 0n, BigInt(size));
  // EOPNOTSUPP/EINVAL: the filesystem cannot preallocate; carry on as before.
  if (err === 0 || err === 95 || err === 22) return;
  throw new PosixError(err, errnoName(err), "posix_fallocate", name);
}

/** `fstat` of `fd`: its size in bytes and its inode number (which identifies the object). */
function statFd(fd: number, name: string): { size: number; ino: bigint } {
  const layout = os().stat[Deno.build.arch];
  if (!layout) throw new Error(`Cannot fstat as this CPU is not supported: ${Deno.build.arch}`);
  const buf = new Uint8Array(layout.size);
  check(libc().fstat(fd, buf), "fstat", name);
  const view = new DataView(buf.buffer);
  return {
    size: Number(view.getBigInt64(layout.sizeOffset, true)),
    ino: view.getBigUint64(layout.inoOffset, true),
  };
}
