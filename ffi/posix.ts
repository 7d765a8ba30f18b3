/**
 * The libc bindings this project needs, and nothing else.
 *
 * One symbol table binds every call; per-OS facts (library paths, flag values, `struct stat`
 * layout, errno names) live in one record keyed by every `Deno.build.os`. Every failed call goes
 * through {@link check}, which reads errno at once and throws a {@link PosixError}.
 *
 * FFI is full native access: a process that may call these symbols may do anything the user may.
 *
 * @module
 */

/** Per-OS facts: where libc is, and the numbers that differ between kernels. */
export interface OsFacts {
  /** Absolute paths to try, in order, for the C library. */
  readonly libc: readonly string[];
  /** The symbol that returns a pointer to the calling thread's errno. */
  readonly errnoSymbol: "__errno_location" | "__error";
  /** Whether `shm_open` is variadic (macOS): then pass no mode, create, then `fchmod`. */
  readonly shmOpenVariadic: boolean;
  readonly O_RDONLY: number;
  readonly O_RDWR: number;
  readonly O_CREAT: number;
  readonly O_EXCL: number;
  readonly CLOCK_REALTIME: number;
  readonly CLOCK_MONOTONIC: number;
  /** `sizeof(struct stat)`, `offsetof(struct stat, st_size)` and of `st_ino`, per CPU. */
  readonly stat: Readonly<Record<string, { size: number; sizeOffset: number; inoOffset: number }>>;
  /** errno number to its code name. */
  readonly errnoNames: Readonly<Record<number, string>>;
  /** The futex syscall number per architecture, where the kernel has one. */
  readonly futexSyscall: Readonly<Record<string, number>> | null;
  /** `MAP_POPULATE` (pre-fault the page tables at `mmap`), 0 where the OS has none. */
  readonly MAP_POPULATE: number;
  /**
   * Open-file-description byte-range locks (`fcntl` with `F_OFD_SETLK` / `F_OFD_GETLK`), or `null`
   * where the kernel has none (macOS) or where `fcntl`'s variadic third argument cannot be passed
   * as a plain pointer (only Linux x86-64 and arm64 are known to pass it like a fixed argument).
   */
  readonly ofdLocks: OfdLockFacts | null;
  /**
   * Where there is no `/proc`: how to read a process's state with `sysctl` (`CTL_KERN`,
   * `KERN_PROC`, `KERN_PROC_PID`, pid) into a `struct kinfo_proc`. `null` where `/proc` says it.
   */
  readonly kinfoProc: KinfoProcFacts | null;
}

/**
 * The layout of `struct kinfo_proc` that {@link processBySysctl} reads: its size, the offset and
 * value of `kp_proc.p_stat` that mean a zombie (`SZOMB`), and the offsets of
 * `kp_proc.p_starttime` (`struct timeval`: `tv_sec` i64, `tv_usec` i32).
 */
export interface KinfoProcFacts {
  readonly mib: readonly [number, number, number];
  readonly size: number;
  readonly statOffset: number;
  readonly SZOMB: number;
  readonly startSecOffset: number;
  readonly startUsecOffset: number;
}

/** The numbers `fcntl` open-file-description locks need: commands, lock types, `struct flock`. */
export interface OfdLockFacts {
  /** `F_OFD_GETLK`: which lock, if any, would block this one. */
  readonly F_OFD_GETLK: number;
  /** `F_OFD_SETLK`: take or release a lock without waiting (EAGAIN when held elsewhere). */
  readonly F_OFD_SETLK: number;
  readonly F_RDLCK: number;
  readonly F_WRLCK: number;
  readonly F_UNLCK: number;
  /** `SEEK_SET`, for `l_whence`. */
  readonly SEEK_SET: number;
  /** `struct flock` per CPU, only for the CPUs whose variadic `fcntl` takes a plain pointer. */
  readonly flock: Readonly<Record<string, FlockLayout>>;
}

/** `sizeof(struct flock)` and the offsets of its fields (`l_type`, `l_whence`: i16; others i64/i32). */
export interface FlockLayout {
  readonly size: number;
  readonly typeOffset: number;
  readonly whenceOffset: number;
  readonly startOffset: number;
  readonly lenOffset: number;
  readonly pidOffset: number;
}

const LINUX_ERRNO: Record<number, string> = {
  1: "EPERM",
  2: "ENOENT",
  3: "ESRCH",
  4: "EINTR",
  5: "EIO",
  9: "EBADF",
  11: "EAGAIN",
  12: "ENOMEM",
  13: "EACCES",
  16: "EBUSY",
  17: "EEXIST",
  22: "EINVAL",
  23: "ENFILE",
  24: "EMFILE",
  27: "EFBIG",
  28: "ENOSPC",
  30: "EROFS",
  36: "ENAMETOOLONG",
  38: "ENOSYS",
  110: "ETIMEDOUT",
};

const DARWIN_ERRNO: Record<number, string> = {
  1: "EPERM",
  2: "ENOENT",
  3: "ESRCH",
  4: "EINTR",
  5: "EIO",
  9: "EBADF",
  12: "ENOMEM",
  13: "EACCES",
  16: "EBUSY",
  17: "EEXIST",
  22: "EINVAL",
  23: "ENFILE",
  24: "EMFILE",
  27: "EFBIG",
  28: "ENOSPC",
  30: "EROFS",
  35: "EAGAIN",
  60: "ETIMEDOUT",
  63: "ENAMETOOLONG",
  78: "ENOSYS",
};

/**
 * Linux's `struct flock { short l_type; short l_whence; off_t l_start; off_t l_len; pid_t l_pid; }`
 * on the 64-bit CPUs it is bound for (x86-64 and arm64 lay it out alike).
 */
const LINUX_LP64_FLOCK: FlockLayout = {
  size: 32,
  typeOffset: 0,
  whenceOffset: 2,
  startOffset: 8,
  lenOffset: 16,
  pidOffset: 24,
};

const LINUX: OsFacts = {
  libc: [
    `/lib/${Deno.build.arch}-linux-gnu/libc.so.6`,
    `/usr/lib/${Deno.build.arch}-linux-gnu/libc.so.6`,
    "/lib64/libc.so.6",
    "/usr/lib64/libc.so.6",
    "/usr/lib/libc.so.6",
    `/lib/ld-musl-${Deno.build.arch}.so.1`,
  ],
  errnoSymbol: "__errno_location",
  shmOpenVariadic: false,
  O_RDONLY: 0,
  O_RDWR: 2,
  O_CREAT: 0o100,
  O_EXCL: 0o200,
  CLOCK_REALTIME: 0,
  CLOCK_MONOTONIC: 1,
  stat: {
    x86_64: { size: 144, sizeOffset: 48, inoOffset: 8 },
    aarch64: { size: 128, sizeOffset: 48, inoOffset: 8 },
  },
  errnoNames: LINUX_ERRNO,
  futexSyscall: { x86_64: 202, aarch64: 98 },
  MAP_POPULATE: 0x8000,
  ofdLocks: {
    F_OFD_GETLK: 36,
    F_OFD_SETLK: 37,
    F_RDLCK: 0,
    F_WRLCK: 1,
    F_UNLCK: 2,
    SEEK_SET: 0,
    flock: { x86_64: LINUX_LP64_FLOCK, aarch64: LINUX_LP64_FLOCK },
  },
  kinfoProc: null,
};

const DARWIN: OsFacts = {
  libc: ["/usr/lib/libSystem.B.dylib"],
  errnoSymbol: "__error",
  shmOpenVariadic: true,
  O_RDONLY: 0,
  O_RDWR: 2,
  O_CREAT: 0x200,
  O_EXCL: 0x800,
  CLOCK_REALTIME: 0,
  CLOCK_MONOTONIC: 6,
  stat: {
    x86_64: { size: 144, sizeOffset: 96, inoOffset: 8 },
    aarch64: { size: 144, sizeOffset: 96, inoOffset: 8 },
  },
  errnoNames: DARWIN_ERRNO,
  futexSyscall: null,
  MAP_POPULATE: 0,
  // No open-file-description locks; and fcntl is variadic, which arm64 macOS passes on the stack.
  ofdLocks: null,
  // struct kinfo_proc is 648 bytes on both CPUs; kp_proc (struct extern_proc) comes first. Its
  // p_un (16) is p_starttime as the kernel fills it for sysctl (a 64-bit timeval: tv_sec at 0,
  // tv_usec at 8); p_stat (char) follows p_un, p_vmspace (8), p_sigacts (8), p_flag (int): 36.
  kinfoProc: {
    mib: [1, 14, 1],
    size: 648,
    statOffset: 36,
    SZOMB: 5,
    startSecOffset: 0,
    startUsecOffset: 8,
  },
};

/** Facts for every OS Deno runs on; `null` where POSIX shared memory is not supported. */
export const OS_FACTS: Readonly<Record<typeof Deno.build.os, OsFacts | null>> = {
  linux: LINUX,
  darwin: DARWIN,
  // Android's bionic has no shm_open; Windows has no POSIX shared memory.
  android: null,
  windows: null,
  freebsd: null,
  netbsd: null,
  aix: null,
  solaris: null,
  illumos: null,
};

/**
 * long syscall(SYS_futex, u32 *uaddr, int op, u32 val, const struct timespec *t, u32 *uaddr2,
 * u32 val3) for FUTEX_WAIT: the parameters of {@link SYMBOLS}' `futex_wait` and its twin on the
 * blocking thread pool, `futex_wait_async`.
 */
const FUTEX_WAIT_PARAMETERS = [
  "i64", // long number (SYS_futex)
  "pointer", // uint32_t *uaddr
  "i32", // int futex_op (FUTEX_WAIT)
  "u32", // uint32_t val (expected value)
  "buffer", // const struct timespec *timeout (relative)
  "pointer", // uint32_t *uaddr2 (unused)
  "u32", // uint32_t val3 (unused)
] as const;

/** The symbols bound from libc. Each parameter carries its C type in a comment. */
export const SYMBOLS = {
  /** int shm_open(const char *name, int oflag, mode_t mode); */
  shm_open: {
    parameters: [
      "buffer", // const char *name (NUL-terminated)
      "i32", // int oflag
      "u32", // mode_t mode
    ],
    result: "i32",
  },
  /** int shm_unlink(const char *name); */
  shm_unlink: { parameters: ["buffer" /* const char *name */], result: "i32" },
  /** int ftruncate(int fd, off_t length); */
  ftruncate: { parameters: ["i32", /* int fd */ "i64" /* off_t length */], result: "i32" },
  /**
   * int posix_fallocate(int fd, off_t offset, off_t len); returns an errno value, not -1.
   * Reserves the pages up front, so a full /dev/shm fails here with ENOSPC instead of a SIGBUS
   * on first touch. Missing on macOS (optional).
   */
  posix_fallocate: {
    parameters: ["i32", /* int fd */ "i64", /* off_t offset */ "i64" /* off_t len */],
    result: "i32",
    optional: true,
  },
  /** int fstat(int fd, struct stat *buf); */
  fstat: { parameters: ["i32", /* int fd */ "buffer" /* struct stat *buf */], result: "i32" },
  /** int fchmod(int fd, mode_t mode); */
  fchmod: { parameters: ["i32", /* int fd */ "u32" /* mode_t mode */], result: "i32" },
  /** void *mmap(void *addr, size_t length, int prot, int flags, int fd, off_t offset); */
  mmap: {
    parameters: [
      "pointer", // void *addr
      "usize", // size_t length
      "i32", // int prot
      "i32", // int flags
      "i32", // int fd
      "i64", // off_t offset
    ],
    result: "pointer",
  },
  /** int munmap(void *addr, size_t length); */
  munmap: { parameters: ["pointer", /* void *addr */ "usize" /* size_t length */], result: "i32" },
  /** int close(int fd); */
  close: { parameters: ["i32" /* int fd */], result: "i32" },
  /** int open(const char *path, int flags); (never with O_CREAT, so no mode) */
  open: { parameters: ["buffer", /* const char *path */ "i32" /* int flags */], result: "i32" },
  /** ssize_t read(int fd, void *buf, size_t count); */
  read: {
    parameters: ["i32", /* int fd */ "buffer", /* void *buf */ "usize" /* size_t count */],
    result: "isize",
  },
  /** int clock_gettime(clockid_t clk, struct timespec *tp); */
  clock_gettime: {
    parameters: ["i32", /* clockid_t clk */ "buffer" /* struct timespec *tp */],
    result: "i32",
  },
  /** int kill(pid_t pid, int sig); */
  kill: { parameters: ["i32", /* pid_t pid */ "i32" /* int sig */], result: "i32" },
  /**
   * int usleep(useconds_t usec); blocks the JS thread: callers keep it short (at most 1 ms), which
   * costs less than a hop through the blocking thread pool and back through the event loop.
   */
  usleep: { parameters: ["u32" /* useconds_t usec */], result: "i32" },
  /**
   * pid_t getpid(void), run on the blocking thread pool: awaiting it lets the runtime park and
   * poll its I/O driver, which is what delivers signals to `Deno.addSignalListener` listeners.
   */
  park: { name: "getpid", parameters: [], result: "i32", nonblocking: true },
  /**
   * int prctl(int option, unsigned long arg2, ...); used for PR_SET_TIMERSLACK only, so that
   * short sleeps are not stretched by the default 50 us of timer slack. Linux only (optional).
   */
  prctl: {
    parameters: ["i32", /* int option */ "u64" /* unsigned long arg2 */],
    result: "i32",
    optional: true,
  },
  /**
   * int fcntl(int fd, int cmd, struct flock *lock); variadic in C: bound with a fixed pointer
   * third argument, which is how Linux x86-64 and arm64 pass it. Called only for the
   * open-file-description lock commands, and only where {@link OsFacts.ofdLocks} says so.
   */
  fcntl: {
    parameters: ["i32", /* int fd */ "i32", /* int cmd */ "buffer" /* struct flock *lock */],
    result: "i32",
  },
  /**
   * int sysctl(int *name, u_int namelen, void *oldp, size_t *oldlenp, void *newp, size_t newlen);
   * used on macOS only, to tell a zombie from a live process (glibc 2.32+ has none: optional).
   */
  sysctl: {
    parameters: [
      "buffer", // int *name
      "u32", // u_int namelen
      "buffer", // void *oldp
      "buffer", // size_t *oldlenp
      "pointer", // void *newp (unused)
      "usize", // size_t newlen (0)
    ],
    result: "i32",
    optional: true,
  },
  /** int sched_yield(void); */
  sched_yield: { parameters: [], result: "i32" },
  /** long syscall(SYS_futex, u32 *uaddr, int op, u32 val, const struct timespec *t, u32 *uaddr2, u32 val3); */
  futex_wake: {
    name: "syscall",
    parameters: [
      "i64", // long number (SYS_futex)
      "pointer", // uint32_t *uaddr
      "i32", // int futex_op (FUTEX_WAKE)
      "u32", // uint32_t val (how many to wake)
      "pointer", // const struct timespec *timeout (unused)
      "pointer", // uint32_t *uaddr2 (unused)
      "u32", // uint32_t val3 (unused)
    ],
    result: "i64",
  },
  /**
   * The same syscall for FUTEX_WAIT. It blocks the JS thread, always with a timeout (the reader
   * then handles signals and beats its heartbeat); being synchronous, errno is readable after it.
   */
  futex_wait: { name: "syscall", parameters: FUTEX_WAIT_PARAMETERS, result: "i64" },
  /**
   * The same FUTEX_WAIT on the blocking thread pool: the JS thread goes on (timers fire) while
   * it waits. errno is not readable after it (another thread's), only the return value.
   */
  futex_wait_async: {
    name: "syscall",
    parameters: FUTEX_WAIT_PARAMETERS,
    result: "i64",
    nonblocking: true,
  },
} as const satisfies Deno.ForeignLibraryInterface;

/** The errno accessor, bound separately because its name differs per OS. */
const ERRNO_SYMBOL = { parameters: [], result: "pointer" } as const satisfies Deno.ForeignFunction;

/**
 * Raised when a libc call fails. Carries errno, its code name, the syscall and the object.
 *
 * @example
 * ```ts
 * import { PosixError } from "./posix.ts";
 * const e = new PosixError(13, "EACCES", "shm_open", "/rpt_sys_shm");
 * console.assert(e.code === "EACCES" && e.syscall === "shm_open");
 * ```
 */
export class PosixError extends Error {
  /** The errno value read right after the failed call. */
  readonly errno: number;
  /** The errno code name, e.g. `ENOENT`, or `E<number>` when unknown. */
  readonly code: string;
  /** The libc function that failed. */
  readonly syscall: string;
  /** The object it was called on (a segment name or path), when there is one. */
  readonly object: string | undefined;

  /**
   * Makes the error from the errno read right after the failed call.
   *
   * @example
   * ```ts
   * import { PosixError } from "./posix.ts";
   * const e = new PosixError(2, "ENOENT", "shm_open", "/rpt_sys_shm");
   * console.assert(e.message.startsWith("shm_open(/rpt_sys_shm) failed: ENOENT"));
   * ```
   */
  constructor(errno: number, code: string, syscall: string, object?: string) {
    super(
      `${syscall}(${object ?? ""}) failed: ${code} (errno ${errno})`,
    );
    this.name = "PosixError";
    this.errno = errno;
    this.code = code;
    this.syscall = syscall;
    this.object = object;
  }
}

type Lib = Deno.DynamicLibrary<typeof SYMBOLS & { errno: typeof ERRNO_SYMBOL }>;

let lib: Lib | undefined;
let facts: OsFacts | undefined;

/** The per-OS facts for this machine, or a clear error where the OS is unsupported. */
export function os(): OsFacts {
  if (facts) return facts;
  const f = OS_FACTS[Deno.build.os];
  if (!f) {
    throw new Error(
      `Cannot use POSIX shared memory as this OS is not supported: current value is ${Deno.build.os}`,
    );
  }
  facts = f;
  return f;
}

/** Opens libc once, trying each absolute path for this OS in order. */
export function libc(): Lib["symbols"] {
  if (lib) return lib.symbols;
  const f = os();
  let shmOpen: Deno.ForeignFunction = SYMBOLS.shm_open;
  if (f.shmOpenVariadic) shmOpen = { parameters: ["buffer", "i32"], result: "i32" };
  const table = {
    ...SYMBOLS,
    shm_open: shmOpen as typeof SYMBOLS.shm_open,
    errno: { ...ERRNO_SYMBOL, name: f.errnoSymbol },
  };
  const errors: string[] = [];
  for (const path of f.libc) {
    try {
      lib = Deno.dlopen(path, table) as Lib;
      return lib.symbols;
    } catch (e) {
      if (e instanceof Deno.errors.NotCapable) {
        throw new Deno.errors.NotCapable(
          `Cannot open the C library as --allow-ffi is not granted: ${e.message}`,
        );
      }
      errors.push(`${path}: ${(e as Error).message}`);
    }
  }
  throw new Error(`Cannot open the C library: tried ${errors.join("; ")}`);
}

/** Reads the calling thread's errno. Call it right after the failed call, on the same thread. */
export function errno(): number {
  const p = libc().errno();
  return p === null ? 0 : new Deno.UnsafePointerView(p).getInt32(0);
}

/** The code name of an errno value on this OS, e.g. `ENOENT`. */
export function errnoName(n: number): string {
  return os().errnoNames[n] ?? `E${n}`;
}

/**
 * Throws a {@link PosixError} when `ret` is -1, reading errno immediately; returns `ret`.
 *
 * @example
 * ```ts
 * import { check, PosixError } from "./posix.ts";
 * console.assert(check(3, "open") === 3);
 * ```
 */
export function check<T extends number | bigint>(ret: T, syscall: string, object?: string): T {
  // deno-lint-ignore eqeqeq
  if (ret == -1) {
    const n = errno();
    throw new PosixError(n, errnoName(n), syscall, object);
  }
  return ret;
}

/** MAP_FAILED, `(void *) -1`, compared as the all-ones pointer value. */
export const MAP_FAILED = 0xffff_ffff_ffff_ffffn;
export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const MAP_SHARED = 1;
export const FUTEX_WAIT = 0;
export const FUTEX_WAKE = 1;

/** Encodes a string as a NUL-terminated C string. */
export function cString(s: string): Uint8Array<ArrayBuffer> {
  const bytes = new TextEncoder().encode(s);
  const out = new Uint8Array(bytes.length + 1);
  out.set(bytes);
  return out;
}

const timespec = new BigInt64Array(2);
const timespecWords = new Uint32Array(timespec.buffer);

/**
 * Reads CLOCK_REALTIME into `out` as two u32 words (low, high) of nanoseconds since the epoch,
 * without allocating. Returns `out`.
 */
export function realtimeWords(out: Uint32Array, at = 0): Uint32Array {
  libc().clock_gettime(0, timespec);
  // tv_sec as a number (< 2^53), tv_nsec < 1e9; ns = sec * 1e9 + nsec, split exactly.
  const sec = timespecWords[0]! + timespecWords[1]! * 4294967296;
  const nsec = timespecWords[2]!;
  const sh = Math.floor(sec / 65536);
  const sl = sec - sh * 65536;
  const x = sl * 1e9 + nsec; // < 2^53
  const y = sh * 1e9; // exact; value = y * 2^16 + x
  const yHi = Math.floor(y / 65536);
  const lo = (y - yHi * 65536) * 65536 + x; // < 2^53
  const carry = Math.floor(lo / 4294967296);
  out[at] = lo - carry * 4294967296;
  out[at + 1] = yHi + carry;
  return out;
}

/** CLOCK_REALTIME in nanoseconds as a bigint (allocates: not for hot paths). */
export function realtimeNs(): bigint {
  libc().clock_gettime(os().CLOCK_REALTIME, timespec);
  return timespec[0]! * 1_000_000_000n + timespec[1]!;
}

/** CLOCK_MONOTONIC in milliseconds as a number. */
export function monotonicMs(): number {
  libc().clock_gettime(os().CLOCK_MONOTONIC, timespec);
  return (timespecWords[0]! + timespecWords[1]! * 4294967296) * 1e3 + timespecWords[2]! / 1e6;
}

const flockBuf = new Uint8Array(64);

/** Set once the kernel refused an OFD lock command as unknown (EINVAL: Linux before 3.15). */
let ofdLocksRefused = false;

/**
 * Raised by {@link ofdLock} the first time the kernel refuses its command with EINVAL (a Linux
 * kernel older than 3.15 has no OFD locks): from then on {@link ofdLockFacts} is `null`, and
 * callers fall back to checking the owner's pid.
 *
 * @example
 * ```ts
 * import { OfdLocksUnavailableError } from "./posix.ts";
 * console.assert(new OfdLocksUnavailableError("x").name === "OfdLocksUnavailableError");
 * ```
 */
export class OfdLocksUnavailableError extends Error {
  /**
   * Makes the error.
   *
   * @example
   * ```ts
   * import { OfdLocksUnavailableError } from "./posix.ts";
   * console.assert(new OfdLocksUnavailableError("no locks").message === "no locks");
   * ```
   */
  constructor(message: string) {
    super(message);
    this.name = "OfdLocksUnavailableError";
  }
}

/**
 * The open-file-description lock facts of this machine (its OS and its CPU), or `null` where
 * there are none (or the kernel refused them once): then callers fall back to checking the
 * owner's pid.
 */
export function ofdLockFacts(): { facts: OfdLockFacts; flock: FlockLayout } | null {
  if (ofdLocksRefused) return null;
  const facts = os().ofdLocks;
  const flock = facts?.flock[Deno.build.arch];
  return facts && flock ? { facts, flock } : null;
}

/**
 * One open-file-description lock operation on bytes `[start, start + length)` of `fd`:
 * - `"try"` takes an exclusive lock without waiting (`F_OFD_SETLK`, `F_WRLCK`): true if taken,
 *   false if another open file description holds a conflicting lock;
 * - `"unlock"` releases it (`F_OFD_SETLK`, `F_UNLCK`): always true;
 * - `"test"` asks whether another open file description holds a lock there (`F_OFD_GETLK`): true
 *   if one does. A lock held through `fd` itself never counts (the kernel ignores one's own).
 *
 * The kernel drops every such lock when the last descriptor of its open file description closes,
 * which includes the death of the process by any signal, before it is reaped. Throws a
 * {@link PosixError} on any other failure, and an Error where {@link ofdLockFacts} is `null`.
 * A kernel without OFD locks (EINVAL) is said once on stderr and throws
 * {@link OfdLocksUnavailableError}; {@link ofdLockFacts} is `null` from then on.
 */
export function ofdLock(
  fd: number,
  op: "try" | "unlock" | "test",
  start: number,
  length: number,
  object?: string,
): boolean {
  const both = ofdLockFacts();
  if (both === null) {
    throw new Error(
      `Cannot take an open-file-description lock as ${Deno.build.os}/${Deno.build.arch} has none`,
    );
  }
  const { facts: f, flock } = both;
  flockBuf.fill(0);
  const view = new DataView(flockBuf.buffer);
  const type = op === "unlock" ? f.F_UNLCK : f.F_WRLCK;
  view.setInt16(flock.typeOffset, type, true);
  view.setInt16(flock.whenceOffset, f.SEEK_SET, true);
  view.setBigInt64(flock.startOffset, BigInt(start), true);
  view.setBigInt64(flock.lenOffset, BigInt(length), true);
  const c = libc();
  const command = op === "test" ? "F_OFD_GETLK" : "F_OFD_SETLK";
  if (c.fcntl(fd, f[command], flockBuf) === 0) {
    return op !== "test" || view.getInt16(flock.typeOffset, true) !== f.F_UNLCK;
  }
  const n = errno();
  const code = errnoName(n);
  if (op === "try" && (code === "EAGAIN" || code === "EACCES")) return false;
  if (code === "EINVAL" && op !== "unlock") {
    // Our arguments are always valid: EINVAL is a kernel that does not know the command.
    ofdLocksRefused = true;
    const message =
      `Cannot take an open-file-description lock as this kernel has none (fcntl(${command}) on ${
        object ?? `fd ${fd}`
      } failed: EINVAL); roles fall back to checking the holder's pid`;
    console.error(`warning: ${message}`);
    throw new OfdLocksUnavailableError(message);
  }
  throw new PosixError(n, code, `fcntl(${command})`, object);
}

/**
 * What a `struct kinfo_proc` says of a process (see {@link KinfoProcFacts}): whether it is a
 * zombie, and its start-time token (the low 32 bits of its start time in microseconds, never 0).
 *
 * @example
 * ```ts
 * import { OS_FACTS, parseKinfoProc } from "./posix.ts";
 * const k = OS_FACTS.darwin!.kinfoProc!;
 * const info = new Uint8Array(k.size);
 * info[k.statOffset] = k.SZOMB;
 * console.assert(parseKinfoProc(info, k).zombie);
 * ```
 */
export function parseKinfoProc(
  info: Uint8Array,
  k: KinfoProcFacts,
): { zombie: boolean; token: number } {
  const view = new DataView(info.buffer, info.byteOffset, info.byteLength);
  const sec = Number(view.getBigInt64(k.startSecOffset, true));
  const usec = view.getInt32(k.startUsecOffset, true);
  const micros = sec * 1e6 + usec; // < 2^53 until the year 2255
  return { zombie: info[k.statOffset] === k.SZOMB, token: (micros % 4294967296) || 1 };
}

/**
 * Whether process `pid` is a zombie, and its start-time token, asked through `sysctl` where there
 * is no `/proc` (macOS); `undefined` where this OS has no such query or the process cannot be
 * found.
 */
export function processBySysctl(pid: number): { zombie: boolean; token: number } | undefined {
  const k = os().kinfoProc;
  const sysctl = k === null ? null : libc().sysctl;
  if (k === null || sysctl === null) return undefined;
  const mib = new Int32Array([...k.mib, pid]);
  const info = new Uint8Array(k.size);
  const length = new BigUint64Array([BigInt(k.size)]);
  if (
    sysctl(
      new Uint8Array(mib.buffer),
      mib.length,
      info,
      new Uint8Array(length.buffer),
      null,
      0n,
    ) !== 0
  ) {
    return undefined;
  }
  if (length[0] === 0n) return undefined; // no such process
  return parseKinfoProc(info, k);
}
