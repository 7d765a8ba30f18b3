/**
 * Ownership of the writer role and of reader ids: an owner word (u64) holds the owner's pid in
 * its low 32 bits and a token in its high 32 bits, the low bits of the process start time (in
 * clock ticks since boot) so that a reused pid is not mistaken for the owner. A claim is one
 * compare-and-exchange; a dead owner (`kill(pid, 0)` says ESRCH, or the start time differs) is
 * replaced at once.
 *
 * @module
 */
import { cString, errno, errnoName, libc, os } from "./ffi/posix.ts";
import { HEADER_SIZE } from "./layout.ts";

/**
 * Raised when a role (the writer, or a reader id) is held by another live process.
 *
 * @example
 * ```ts
 * import { claim, OwnershipError } from "./ownership.ts";
 * const header = new ArrayBuffer(384);
 * new BigUint64Array(header)[0xc0 / 8] = 1n; // pid 1 (init) holds reader id 0
 * try {
 *   claim(header, 0xc0, (pid) => `held by live pid ${pid}`);
 * } catch (e) {
 *   console.assert(e instanceof OwnershipError && e.holderPid === 1);
 * }
 * ```
 */
export class OwnershipError extends Error {
  /** The pid of the live holder. */
  readonly holderPid: number;
  /**
   * Makes the error; `holderPid` is the live process holding the role.
   *
   * @example
   * ```ts
   * import { OwnershipError } from "./ownership.ts";
   * console.assert(new OwnershipError("held", 42).holderPid === 42);
   * ```
   */
  constructor(message: string, holderPid: number) {
    super(message);
    this.name = "OwnershipError";
    this.holderPid = holderPid;
  }
}

const statBuf = new Uint8Array(1024);

/**
 * The start-time token of process `pid`: the low 32 bits of field 22 of `/proc/PID/stat`, read
 * through libc (never 0). Returns 0 where it cannot be read (no /proc, or the process is gone).
 */
export function processToken(pid: number): number {
  if (Deno.build.os !== "linux") return 0;
  const c = libc();
  const fd = c.open(cString(`/proc/${pid}/stat`), os().O_RDONLY);
  if (fd < 0) return 0;
  let n: number;
  try {
    n = Number(c.read(fd, statBuf, BigInt(statBuf.length)));
  } finally {
    c.close(fd);
  }
  if (n <= 0) return 0;
  const text = new TextDecoder().decode(statBuf.subarray(0, n));
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  const start = Number(fields[19]);
  if (!Number.isFinite(start)) return 0;
  return (start % 4294967296) || 1;
}

/** Whether a process with this pid exists (`kill(pid, 0)` succeeds or says EPERM). */
export function pidExists(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  if (libc().kill(pid, 0) === 0) return true;
  return errnoName(errno()) === "EPERM";
}

/** Whether the owner `pid` with start-time `token` (0: unknown) is still running. */
export function isAlive(pid: number, token: number): boolean {
  if (!pidExists(pid)) return false;
  if (token === 0) return true;
  const now = processToken(pid);
  return now === 0 || now === token;
}

/** The owner word of this process. */
export function selfOwner(): bigint {
  return (BigInt(processToken(Deno.pid)) << 32n) | BigInt(Deno.pid);
}

/** Splits an owner word into pid and token. */
export function splitOwner(word: bigint): { pid: number; token: number } {
  return { pid: Number(word & 0xffff_ffffn), token: Number(word >> 32n) };
}

/** The outcome of a successful claim. */
export interface Claim {
  /** The pid of a dead owner that was replaced, if any. */
  reclaimedFrom: number | undefined;
}

/**
 * Claims the owner word at byte `offset` of `buffer` for this process with compare-and-exchange.
 * Throws {@link OwnershipError} if a live process holds it; `describe(pid)` makes the message.
 *
 * @example
 * ```ts
 * import { claim, release } from "./ownership.ts";
 * const header = new ArrayBuffer(384);
 * claim(header, 0xc0, (pid) => `held by ${pid}`);
 * release(header, 0xc0);
 * ```
 */
export function claim(
  buffer: ArrayBuffer,
  offset: number,
  describe: (pid: number) => string,
): Claim {
  const wide = new BigUint64Array(buffer, 0, HEADER_SIZE / 8);
  const index = offset >>> 3;
  const mine = selfOwner();
  for (;;) {
    const current = Atomics.load(wide, index);
    if (current === mine) return { reclaimedFrom: undefined };
    let reclaimedFrom: number | undefined;
    if (current !== 0n) {
      const { pid, token } = splitOwner(current);
      if (isAlive(pid, token)) throw new OwnershipError(describe(pid), pid);
      reclaimedFrom = pid;
    }
    if (Atomics.compareExchange(wide, index, current, mine) === current) return { reclaimedFrom };
  }
}

/** Releases the owner word at `offset` if this process holds it. Returns whether it did. */
export function release(buffer: ArrayBuffer, offset: number): boolean {
  if (buffer.byteLength < HEADER_SIZE) return false;
  const wide = new BigUint64Array(buffer, 0, HEADER_SIZE / 8);
  const mine = selfOwner();
  return Atomics.compareExchange(wide, offset >>> 3, mine, 0n) === mine;
}

/** Reads the owner word at `offset`: pid 0 when free. */
export function owner(buffer: ArrayBuffer, offset: number): { pid: number; token: number } {
  return splitOwner(Atomics.load(new BigUint64Array(buffer, 0, HEADER_SIZE / 8), offset >>> 3));
}
