/**
 * Ownership of the writer role and of reader ids.
 *
 * A role is held by an exclusive open-file-description lock (`fcntl` `F_OFD_SETLK`) on its own
 * byte range of the segment's descriptor (layout.ts `WRITER_LOCK_OFFSET`, `READER_LOCKS_OFFSET`).
 * The kernel releases it the instant the holder's descriptor closes: on `close()`, on exit, and on
 * kill -9, before the dead process is reaped, so a supervisor may restart a killed program at
 * once, even where nobody ever reaps it (a container whose PID 1 does not). Locks do not depend
 * on pids, so pid reuse cannot fool them.
 *
 * The owner word of the role (a u64: pid in the low 32 bits, a start-time token in the high 32
 * bits) records who holds it, for messages and `status`; liveness is "the lock is held".
 *
 * Where the OS has no open-file-description locks (macOS), liveness falls back to the owner word:
 * the owner is alive if `kill(pid, 0)` finds it, it is not a zombie, and its start-time token
 * matches; a holder that looks alive is re-checked for up to a second before a claim refuses.
 *
 * @module
 */
import {
  cString,
  errno,
  errnoName,
  libc,
  monotonicMs,
  ofdLockFacts,
  OfdLocksUnavailableError,
  os,
  processBySysctl,
} from "./ffi/posix.ts";
import {
  HEADER_SIZE,
  MAX_READERS,
  READER_LOCKS_OFFSET,
  READER_OWNERS_OFFSET,
  ROLE_LOCK_LENGTH,
  WRITER_LOCK_OFFSET,
  WRITER_OWNER_OFFSET,
} from "./layout.ts";
import type { Segment } from "./segment.ts";

/**
 * Raised when a role (the writer, or a reader id) is held by another live process.
 *
 * @example
 * ```ts
 * import { OwnershipError } from "./ownership.ts";
 * const e = new OwnershipError("Cannot start writer as segment /x is held by live writer pid 1", 1);
 * console.assert(e.holderPid === 1 && e.name === "OwnershipError");
 * ```
 */
export class OwnershipError extends Error {
  /** The pid of the live holder, from its owner word (0 if it has not recorded one). */
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

/**
 * A role in a segment: the writer, or a reader id from 0 to 7.
 *
 * @example
 * ```ts
 * import type { Role } from "./ownership.ts";
 * const roles: Role[] = ["writer", 0, 7];
 * console.assert(roles.length === 3);
 * ```
 */
export type Role = "writer" | number;

/** The owner word's offset and the lock range's start of `role`. */
export function roleOffsets(role: Role): { owner: number; lock: number } {
  if (role === "writer") return { owner: WRITER_OWNER_OFFSET, lock: WRITER_LOCK_OFFSET };
  if (!Number.isInteger(role) || role < 0 || role >= MAX_READERS) {
    throw new RangeError(`Cannot use reader id as it must be 0..7: current value is ${role}`);
  }
  return {
    owner: READER_OWNERS_OFFSET + role * 8,
    lock: READER_LOCKS_OFFSET + role * ROLE_LOCK_LENGTH,
  };
}

const procBuf = new Uint8Array(4096);

/** The text of `/proc/<pid>/<file>` read through libc, or undefined if it cannot be read. */
function readProc(pid: number, file: string): string | undefined {
  if (Deno.build.os !== "linux" || !Number.isInteger(pid) || pid <= 0) return undefined;
  const c = libc();
  const fd = c.open(cString(`/proc/${pid}/${file}`), os().O_RDONLY);
  if (fd < 0) return undefined;
  let n: number;
  try {
    n = Number(c.read(fd, procBuf, BigInt(procBuf.length)));
  } finally {
    c.close(fd);
  }
  return n > 0 ? new TextDecoder().decode(procBuf.subarray(0, n)) : undefined;
}

/** `PF_EXITING` in the flags of `/proc/PID/stat`: the process has begun to exit. */
const PF_EXITING = 0x4;
/** SIGKILL (9) as a bit of the pending-signal masks of `/proc/PID/status`. */
const SIGKILL_BIT = 1n << 8n;

/**
 * What `/proc/PID/stat` (and `status`) say of process `pid`, read through libc: its state letter
 * (`R`, `S`, `T`, `Z`, ...), its start-time token (the low 32 bits of field 22, never 0), and
 * whether it is dying (it has begun to exit, or a SIGKILL is pending: it may still hold its
 * descriptors for a moment, or longer if the kill waits for a disk write). Undefined where it
 * cannot be read (no /proc, or the process is gone).
 */
export function processStat(
  pid: number,
): { state: string; token: number; dying: boolean } | undefined {
  const text = readProc(pid, "stat");
  if (text === undefined) return undefined;
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  const start = Number(fields[19]);
  if (!Number.isFinite(start)) return undefined;
  const state = fields[0] ?? "?";
  let dying = state === "Z" || state === "X" || state === "x" ||
    (Number(fields[6]) & PF_EXITING) !== 0;
  if (!dying) {
    const status = readProc(pid, "status") ?? "";
    for (const key of ["SigPnd", "ShdPnd"]) {
      const mask = new RegExp(`^${key}:\\s*([0-9a-f]+)$`, "m").exec(status)?.[1];
      if (mask !== undefined && (BigInt(`0x${mask}`) & SIGKILL_BIT) !== 0n) dying = true;
    }
  }
  return { state, token: (start % 4294967296) || 1, dying };
}

/**
 * The start-time token of process `pid` (see {@link processStat}; where there is no `/proc`, the
 * low 32 bits of its start time in microseconds from `sysctl`); 0 where it cannot be read.
 */
export function processToken(pid: number): number {
  return processStat(pid)?.token ?? processBySysctl(pid)?.token ?? 0;
}

/** Whether a process with this pid exists (`kill(pid, 0)` succeeds or says EPERM). */
export function pidExists(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  if (libc().kill(pid, 0) === 0) return true;
  return errnoName(errno()) === "EPERM";
}

/**
 * Whether the owner `pid` with start-time `token` (0: unknown) is still running: it exists, it is
 * neither a zombie (dead, only waiting to be reaped) nor dying (see {@link processStat}), and its
 * start time is the token's.
 */
export function isAlive(pid: number, token: number): boolean {
  if (!pidExists(pid)) return false;
  const stat = processStat(pid);
  // No /proc (macOS): sysctl says whether it is a zombie, and its start time.
  const seen = stat ?? processBySysctl(pid);
  if (seen === undefined) return true; // exists, and nothing more can be read
  if ("dying" in seen ? seen.dying : seen.zombie) return false;
  return token === 0 || seen.token === token;
}

/** The owner word of this process. */
export function selfOwner(): bigint {
  return (BigInt(processToken(Deno.pid)) << 32n) | BigInt(Deno.pid);
}

/** Splits an owner word into pid and token. */
export function splitOwner(word: bigint): { pid: number; token: number } {
  return { pid: Number(word & 0xffff_ffffn), token: Number(word >> 32n) };
}

/** Reads the owner word at `offset`: pid 0 when free. */
export function owner(buffer: ArrayBuffer, offset: number): { pid: number; token: number } {
  return splitOwner(Atomics.load(new BigUint64Array(buffer, 0, HEADER_SIZE / 8), offset >>> 3));
}

/**
 * Options of {@link claimRole} and {@link roleHolder}.
 *
 * @example
 * ```ts
 * import type { OwnershipOptions } from "./ownership.ts";
 * const pidFallback: OwnershipOptions = { ofdLocks: false, recheckMs: 1000 };
 * console.assert(pidFallback.ofdLocks === false);
 * ```
 */
export interface OwnershipOptions {
  /**
   * Use open-file-description locks (default: wherever this OS and CPU have them). `false` forces
   * the pid fallback that macOS uses, so that it can be tested on Linux.
   */
  ofdLocks?: boolean;
  /**
   * How long a claim re-checks before refusing, in ms (default 1000): with locks, while the
   * holder's owner word does not yet name a live process; without, while the holder looks alive.
   */
  recheckMs?: number;
}

function useLocks(options: OwnershipOptions): boolean {
  return options.ofdLocks ?? ofdLockFacts() !== null;
}

/**
 * The claims this process holds without locks (the pid fallback), whose owner word alone cannot
 * tell one claim of this process from another.
 */
const fallbackClaims = new Set<RoleClaim>();

/** Whether this process holds `role` of a segment named like `seg` through a live fallback claim. */
function heldHere(seg: Segment, role: Role): boolean {
  for (const claim of fallbackClaims) {
    if (claim.segment.closed) fallbackClaims.delete(claim);
    else if (claim.role === role && claim.segment.name === seg.name) return true;
  }
  return false;
}

/**
 * A held role: its lock and its owner word, released by {@link RoleClaim.release} or `using`.
 * Closing the segment releases the lock too (the kernel drops it with the descriptor), so a claim
 * never outlives its segment, nor its process.
 *
 * @example
 * ```ts
 * import { Segment } from "./segment.ts";
 * import { claimRole, roleHolder } from "./ownership.ts";
 * const name = `/rpt_doc_rc_${Deno.pid}`;
 * try {
 *   using seg = Segment.create(name, { capacity: 8 });
 *   const role = claimRole(seg, "writer", (pid) => `held by live writer pid ${pid}`);
 *   role.release();
 *   console.assert(!roleHolder(seg, "writer").alive);
 * } finally {
 *   Segment.unlink(name);
 * }
 * ```
 */
export class RoleClaim implements Disposable {
  #seg: Segment;
  #role: Role;
  #word: bigint;
  #locked: boolean;
  #released = false;
  /** The pid of a dead holder whose owner word this claim replaced, if any. */
  readonly reclaimedFrom: number | undefined;

  /** Made by {@link claimRole} only. */
  constructor(
    seg: Segment,
    role: Role,
    word: bigint,
    locked: boolean,
    reclaimedFrom: number | undefined,
  ) {
    this.#seg = seg;
    this.#role = role;
    this.#word = word;
    this.#locked = locked;
    this.reclaimedFrom = reclaimedFrom;
    if (!locked) fallbackClaims.add(this);
  }

  /** The role held. */
  get role(): Role {
    return this.#role;
  }

  /** The segment the role is held in. */
  get segment(): Segment {
    return this.#seg;
  }

  /** Clears the owner word (if still this claim's), then releases the lock. Idempotent. */
  release(): void {
    if (this.#released) return;
    this.#released = true;
    fallbackClaims.delete(this);
    if (this.#seg.closed) return; // closing the descriptor already released the lock
    const { owner: ownerOffset, lock } = roleOffsets(this.#role);
    const wide = new BigUint64Array(this.#seg.buffer, 0, HEADER_SIZE / 8);
    Atomics.compareExchange(wide, ownerOffset >>> 3, this.#word, 0n);
    if (this.#locked) this.#seg.unlockRange(lock, ROLE_LOCK_LENGTH);
  }

  /** Same as {@link release}. */
  [Symbol.dispose](): void {
    this.release();
  }
}

/**
 * Claims `role` of `seg` (opened read-write) for this process, or throws an
 * {@link OwnershipError} whose message is `describe(pid)`, `pid` being the holder's from its
 * owner word. With locks: takes the role's lock without waiting, then records this process in the
 * owner word; if the lock is held elsewhere, refuses as soon as the owner word names a running
 * process that is not dying (the holder stores it right after locking; a holder killed a moment
 * ago still holds its lock until the kernel closes its descriptors), at the latest after
 * `recheckMs`. Without
 * locks: replaces the owner word with compare-and-exchange unless a live holder keeps it for
 * `recheckMs`. A role is held once: claiming it again while this process holds it through the same
 * segment object (without locks: through any segment of that name) throws at once, naming
 * `Deno.pid`, so that no second claim's release can drop the lock the first relies on.
 *
 * @example
 * ```ts
 * import { Segment } from "./segment.ts";
 * import { claimRole, roleHolder } from "./ownership.ts";
 * const name = `/rpt_doc_claim_${Deno.pid}`;
 * try {
 *   using seg = Segment.create(name, { capacity: 8 });
 *   using role = claimRole(seg, 0, (pid) => `reader id 0 is held by live pid ${pid}`);
 *   console.assert(role.reclaimedFrom === undefined);
 *   console.assert(roleHolder(seg, 0).pid === Deno.pid && roleHolder(seg, 0).alive);
 * } finally {
 *   Segment.unlink(name);
 * }
 * ```
 */
export function claimRole(
  seg: Segment,
  role: Role,
  describe: (pid: number) => string,
  options: OwnershipOptions = {},
): RoleClaim {
  const { owner: ownerOffset, lock } = roleOffsets(role);
  const wide = new BigUint64Array(seg.buffer, 0, HEADER_SIZE / 8);
  const index = ownerOffset >>> 3;
  const mine = selfOwner();
  let locks = useLocks(options);
  const deadline = monotonicMs() + (options.recheckMs ?? 1000);
  let seenAlive = 0;
  // A role is held once: a second claim through the same segment object (the same descriptor,
  // whose lock the kernel would grant again) would be dropped with the first claim's release.
  if (locks ? seg.holdsRange(lock) : heldHere(seg, role)) {
    throw new OwnershipError(describe(Deno.pid), Deno.pid);
  }
  for (;;) {
    if (locks) {
      let taken: boolean;
      try {
        taken = seg.tryLockRange(lock, ROLE_LOCK_LENGTH);
      } catch (e) {
        if (!(e instanceof OfdLocksUnavailableError)) throw e;
        locks = false; // said once on stderr; the pid check from now on
        continue;
      }
      if (taken) {
        const previous = Atomics.exchange(wide, index, mine);
        const from = previous === 0n || previous === mine ? undefined : splitOwner(previous).pid;
        return new RoleClaim(seg, role, mine, true, from);
      }
      // Held elsewhere. Refuse once the owner word names a running process that is not dying,
      // seen twice 1 ms apart; a dying holder (kill -9 just sent) drops its lock in a moment.
      const held = splitOwner(Atomics.load(wide, index));
      seenAlive = held.pid !== 0 && isAlive(held.pid, held.token) ? seenAlive + 1 : 0;
      if (seenAlive >= 2 || monotonicMs() >= deadline) {
        throw new OwnershipError(describe(held.pid), held.pid);
      }
    } else {
      const current = Atomics.load(wide, index);
      const held = splitOwner(current);
      // Our own word with no live claim of ours behind it (a segment closed without releasing)
      // is free; with one, heldHere refused above.
      if (current === mine || current === 0n || !isAlive(held.pid, held.token)) {
        if (Atomics.compareExchange(wide, index, current, mine) === current) {
          const from = current === 0n || current === mine ? undefined : held.pid;
          return new RoleClaim(seg, role, mine, false, from);
        }
        continue;
      }
      if (monotonicMs() >= deadline) throw new OwnershipError(describe(held.pid), held.pid);
    }
    libc().usleep(1000);
  }
}

/**
 * Who holds a role, and whether it is live.
 *
 * @example
 * ```ts
 * import type { RoleHolder } from "./ownership.ts";
 * const dead: RoleHolder = { pid: 4242, token: 7, alive: false }; // lock free, word left behind
 * console.assert(!dead.alive);
 * ```
 */
export interface RoleHolder {
  /** The pid in the owner word: the holder's if `alive`, else a dead holder's; 0 when none. */
  pid: number;
  /** The start-time token in the owner word. */
  token: number;
  /** Whether the role is held: its lock is held (or, without locks, its owner is running). */
  alive: boolean;
}

/**
 * Who holds `role` of `seg`: the owner word's pid, and whether the role is live. With locks, live
 * means the lock is held, whatever the owner word says; this works on a read-only segment.
 *
 * @example
 * ```ts
 * import { Segment } from "./segment.ts";
 * import { roleHolder } from "./ownership.ts";
 * const name = `/rpt_doc_holder_${Deno.pid}`;
 * Segment.create(name, { capacity: 8 }).close();
 * try {
 *   using seg = Segment.open(name, { readOnly: true });
 *   console.assert(!roleHolder(seg, "writer").alive);
 * } finally {
 *   Segment.unlink(name);
 * }
 * ```
 */
export function roleHolder(seg: Segment, role: Role, options: OwnershipOptions = {}): RoleHolder {
  const { owner: ownerOffset, lock } = roleOffsets(role);
  const { pid, token } = owner(seg.buffer, ownerOffset);
  const byPid = () => pid !== 0 && isAlive(pid, token);
  if (!useLocks(options)) return { pid, token, alive: byPid() };
  try {
    return { pid, token, alive: seg.isRangeLocked(lock, ROLE_LOCK_LENGTH) };
  } catch (e) {
    if (!(e instanceof OfdLocksUnavailableError)) throw e;
    return { pid, token, alive: byPid() }; // said once on stderr
  }
}
