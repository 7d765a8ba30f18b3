/**
 * Idle strategies: what a reader does when a poll finds nothing new.
 *
 * - `sleep`: a 1 ms pause between empty polls (the default).
 * - `spin`: busy-poll; lowest latency, one core at 100%.
 * - `backoff`: spin a little, then yield the CPU, then sleep with a growing pause up to 1 ms
 *   (Agrona's BackoffIdleStrategy).
 * - `futex`: announce a waiter and block on the wake word in the header (Linux FUTEX_WAIT on
 *   shared memory, with a timeout, off the JS thread); the writer calls FUTEX_WAKE only when a
 *   waiter is announced. Where futex is missing it falls back to `backoff`.
 *
 * @module
 */
import { errno, errnoName, FUTEX_WAIT, FUTEX_WAKE, libc, monotonicMs, os } from "./ffi/posix.ts";
import { WAITERS_OFFSET, WAKE_SEQ_OFFSET } from "./layout.ts";

/**
 * Names of the idle strategies.
 *
 * @example
 * ```ts
 * import { IDLE_STRATEGIES } from "./idle.ts";
 * console.assert(IDLE_STRATEGIES.includes("futex"));
 * ```
 */
export const IDLE_STRATEGIES = ["sleep", "spin", "backoff", "futex"] as const;
/**
 * One of {@link IDLE_STRATEGIES}.
 *
 * @example
 * ```ts
 * import type { IdleName } from "./idle.ts";
 * const idle: IdleName = "backoff";
 * console.assert(idle === "backoff");
 * ```
 */
export type IdleName = typeof IDLE_STRATEGIES[number];

/**
 * Lets the event loop run (signals, timers) for a few tens of microseconds, unlike
 * `setTimeout(0)`, which waits a millisecond or more. It awaits a no-op FFI call on the blocking
 * thread pool, so the runtime parks and polls its I/O driver: a microtask or a MessagePort message
 * would not, and a signal could then wait for seconds behind a busy loop.
 *
 * @example
 * ```ts
 * import { EventLoopYield } from "./idle.ts";
 * using loop = new EventLoopYield();
 * await loop.yield();
 * ```
 */
export class EventLoopYield implements Disposable {
  /** Resolves on a later turn of the event loop, after the runtime has polled for events. */
  async yield(): Promise<void> {
    await libc().park();
  }

  /** Nothing to release; kept so callers can scope it with `using`. */
  close(): void {}

  /** Same as {@link close}. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * What a reader loop calls when a poll finds nothing.
 *
 * @example
 * ```ts
 * import { createIdleStrategy } from "./idle.ts";
 * const { strategy } = createIdleStrategy("backoff", new ArrayBuffer(1024));
 * const wait = strategy.idle(() => false); // spins first: no promise yet
 * console.assert(wait === undefined);
 * strategy.reset();
 * ```
 */
export interface IdleStrategy {
  /** The strategy actually in use (futex falls back to backoff where unsupported). */
  readonly name: IdleName;
  /**
   * Idles once. `hasWork()` is re-checked after announcing a waiter, so a wake-up is never lost.
   * The built-in strategies wait synchronously and briefly (at most a millisecond, or the futex
   * timeout); a custom strategy may return a promise instead.
   */
  idle(hasWork: () => boolean): Promise<void> | undefined;
  /** Called after a poll found work: the next idle starts from the shortest pause. */
  reset(): void;
}

/** Longest single futex wait; the reader re-checks and refreshes its heartbeat after it. */
export const FUTEX_TIMEOUT_MS = 50;

/**
 * Whether this machine has futex (Linux on x86_64 or aarch64).
 *
 * @example
 * ```ts
 * import { futexSupported } from "./idle.ts";
 * console.log(futexSupported() ? "futex" : "backoff");
 * ```
 */
export function futexSupported(): boolean {
  const table = os().futexSyscall;
  return table !== null && table[Deno.build.arch] !== undefined;
}

function pointerAt(buffer: ArrayBuffer, offset: number): Deno.PointerObject {
  const base = Deno.UnsafePointer.of(buffer);
  if (base === null) throw new Error("Cannot take the address of an empty buffer");
  return Deno.UnsafePointer.offset(base, offset) as Deno.PointerObject;
}

/**
 * The writer's side of `futex`: returns a function that wakes every waiter on the wake word of
 * `buffer`, or `undefined` where futex is missing. The ring writer calls it only when the header
 * announces a waiter.
 *
 * @example
 * ```ts
 * import { futexWaker } from "./idle.ts";
 * import { createRingBuffer, RingWriter } from "./ring.ts";
 * const buffer = createRingBuffer(8);
 * new RingWriter(buffer, { wake: futexWaker(buffer) }).publishSimulated(1);
 * ```
 */
export function futexWaker(buffer: ArrayBuffer): (() => void) | undefined {
  if (!futexSupported()) return undefined;
  const nr = BigInt(os().futexSyscall![Deno.build.arch]!);
  const word = pointerAt(buffer, WAKE_SEQ_OFFSET);
  const c = libc();
  return () => {
    c.futex_wake(nr, word, FUTEX_WAKE, 0x7fff_ffff, null, null, 0);
  };
}

/** A pause of `us` microseconds off the JS thread: a timer, so other timers fire meanwhile. */
function pauseAsync(us: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, Math.max(1, Math.round(us / 1000))));
}

class Sleep implements IdleStrategy {
  readonly name = "sleep" as const;
  readonly #async: boolean;
  constructor(async: boolean) {
    this.#async = async;
  }
  idle(): Promise<void> | undefined {
    if (this.#async) return pauseAsync(1000);
    libc().usleep(1000);
    return undefined;
  }
  reset(): void {}
}

class Spin implements IdleStrategy {
  readonly name = "spin" as const;
  idle(): undefined {
    return undefined;
  }
  reset(): void {}
}

class Backoff implements IdleStrategy {
  readonly name: IdleName = "backoff";
  #spins = 0;
  #yields = 0;
  #pauseUs = 1;
  static readonly MAX_SPINS = 200;
  static readonly MAX_YIELDS = 50;
  static readonly MAX_PAUSE_US = 1000;
  readonly #async: boolean;
  constructor(async: boolean) {
    this.#async = async;
  }

  idle(): Promise<void> | undefined {
    if (this.#spins < Backoff.MAX_SPINS) {
      this.#spins++;
    } else if (this.#yields < Backoff.MAX_YIELDS) {
      this.#yields++;
      libc().sched_yield();
    } else {
      const pause = this.#pauseUs;
      this.#pauseUs = Math.min(pause * 2, Backoff.MAX_PAUSE_US);
      // Off the JS thread the pause is a timer: at least a millisecond.
      if (this.#async) return pauseAsync(pause);
      libc().usleep(pause);
    }
    return undefined;
  }

  reset(): void {
    this.#spins = 0;
    this.#yields = 0;
    this.#pauseUs = 1;
  }
}

/**
 * How the last futex wait ended.
 *
 * @example
 * ```ts
 * import type { FutexOutcome } from "./idle.ts";
 * function describe(outcome: FutexOutcome): string {
 *   return outcome === "timeout" ? "nothing arrived" : outcome;
 * }
 * console.assert(describe("woken") === "woken");
 * ```
 */
export type FutexOutcome =
  | "none"
  | "woken"
  | "changed"
  | "timeout"
  | "interrupted"
  | "not woken";

/**
 * The `futex` strategy. Besides {@link IdleStrategy} it tells how its last wait ended, so a test
 * can tell a real wake-up from a timeout without timing anything.
 *
 * @example
 * ```ts
 * import { FutexIdle, futexSupported } from "./idle.ts";
 * import { createRingBuffer } from "./ring.ts";
 * if (futexSupported()) {
 *   const idle = new FutexIdle(createRingBuffer(8), 5);
 *   for (let i = 0; i < 60; i++) idle.idle(() => false); // spins, then waits 5 ms
 *   console.assert(idle.lastWait === "timeout");
 * }
 * ```
 */
export class FutexIdle implements IdleStrategy {
  /** The strategy's name. */
  readonly name = "futex" as const;
  /** How the last wait ended: woken by FUTEX_WAKE, value already changed, timeout, signal. */
  lastWait: FutexOutcome = "none";
  #words: Uint32Array;
  #word: Deno.PointerObject;
  #nr: bigint;
  #timeout: BigInt64Array;
  #spins = 0;
  #async: boolean;

  /**
   * Blocks on the wake word of the ring in `buffer`, each wait at most `timeoutMs`. With `async`,
   * each wait runs on the blocking thread pool and {@link idle} returns its promise: the JS
   * thread goes on meanwhile (a timer fires on time); `lastWait` is then "woken" or "not woken"
   * (errno cannot be read after a call on another thread).
   */
  constructor(buffer: ArrayBuffer, timeoutMs: number = FUTEX_TIMEOUT_MS, async = false) {
    this.#async = async;
    const ns = BigInt(Math.round(timeoutMs * 1e6));
    this.#timeout = new BigInt64Array([ns / 1_000_000_000n, ns % 1_000_000_000n]);
    this.#words = new Uint32Array(buffer, 0, (WAITERS_OFFSET >>> 2) + 1);
    this.#word = pointerAt(buffer, WAKE_SEQ_OFFSET);
    this.#nr = BigInt(os().futexSyscall![Deno.build.arch]!);
  }

  /** Spins briefly, then announces a waiter, re-checks `hasWork`, and blocks until woken. */
  idle(hasWork: () => boolean): Promise<void> | undefined {
    // A short spin first: a burst in progress is cheaper to catch than to sleep through.
    if (this.#spins < 50) {
      this.#spins++;
      return undefined;
    }
    const words = this.#words;
    Atomics.add(words, WAITERS_OFFSET >>> 2, 1);
    let waiting: Promise<void> | undefined;
    try {
      const seq = Atomics.load(words, WAKE_SEQ_OFFSET >>> 2);
      if (hasWork()) return undefined;
      // The kernel returns at once if wake_seq moved since we read it: no lost wake-up.
      const args = [this.#nr, this.#word, FUTEX_WAIT, seq, this.#timeout, null, 0] as const;
      if (!this.#async) {
        this.#ended(libc().futex_wait(...args), errnoName(errno()));
        return undefined;
      }
      // Off the JS thread: withdrawn when the wait ends (errno is another thread's there).
      waiting = libc().futex_wait_async(...args)
        .then((ret) => this.#ended(ret, undefined))
        .finally(() => Atomics.sub(words, WAITERS_OFFSET >>> 2, 1));
      return waiting;
    } finally {
      // Withdrawn even when hasWork() throws (the reporter storing its position failed).
      if (waiting === undefined) Atomics.sub(words, WAITERS_OFFSET >>> 2, 1);
    }
  }

  /** Records how a wait ended: its return value, and errno's name when it can be read. */
  #ended(ret: bigint, code: string | undefined): void {
    if (ret === 0n) this.lastWait = "woken";
    else if (code === undefined) this.lastWait = "not woken";
    else {
      this.lastWait = code === "EAGAIN"
        ? "changed"
        : code === "ETIMEDOUT"
        ? "timeout"
        : "interrupted";
    }
  }

  /** Starts the next idle period with the short spin again. */
  reset(): void {
    this.#spins = 0;
  }
}

/**
 * Makes the idle strategy `name` for the ring in `buffer`. `futex` falls back to `backoff` where
 * the OS has no futex; `fellBack` says so. `options.async` makes every wait but `spin`'s leave
 * the JS thread free (the futex wait on the thread pool, pauses as timers): a timer of the caller
 * then fires on time (the subscriber). `options.futexTimeoutMs` bounds each futex wait
 * (default {@link FUTEX_TIMEOUT_MS}): the reader re-checks and beats its heartbeat after it.
 *
 * @example
 * ```ts
 * import { createIdleStrategy } from "./idle.ts";
 * const { strategy } = createIdleStrategy("spin", new ArrayBuffer(1024));
 * console.assert(strategy.name === "spin");
 * ```
 */
export function createIdleStrategy(
  name: IdleName,
  buffer: ArrayBuffer,
  options: { futexTimeoutMs?: number; async?: boolean } = {},
): { strategy: IdleStrategy; fellBack: boolean } {
  switch (name) {
    case "sleep":
      return { strategy: new Sleep(options.async === true), fellBack: false };
    case "spin":
      return { strategy: new Spin(), fellBack: false };
    case "backoff":
      return { strategy: new Backoff(options.async === true), fellBack: false };
    case "futex":
      if (!futexSupported()) {
        return { strategy: new Backoff(options.async === true), fellBack: true };
      }
      return {
        strategy: new FutexIdle(
          buffer,
          options.futexTimeoutMs ?? FUTEX_TIMEOUT_MS,
          options.async === true,
        ),
        fellBack: false,
      };
  }
}

/**
 * Paces a producer at `rate` entries per second, evenly, as an engine publishing events as they
 * happen would: a timer while the next entry is milliseconds away, a short blocking sleep (with
 * the timer slack lowered to 1 us) when it is closer, and a spin for the last stretch. Signals
 * get in at least every 5 ms.
 *
 * @example
 * ```ts
 * import { Pacer } from "./idle.ts";
 * const pacer = new Pacer(1000);
 * let written = 0;
 * while (written < 5) {
 *   written += pacer.due(written); // publish that many entries here
 *   await pacer.wait(written);
 * }
 * ```
 */
export class Pacer {
  #t0: number;
  #rate: number;
  #lastYield: number;
  #loop = new EventLoopYield();

  /** Starts pacing now at `rate` entries/s (greater than 0). */
  constructor(rate: number) {
    if (!(rate > 0)) {
      throw new RangeError(`Cannot pace as rate must be greater than 0: current value is ${rate}`);
    }
    this.#rate = rate;
    this.#t0 = monotonicMs();
    this.#lastYield = this.#t0;
    // PR_SET_TIMERSLACK (29) to 1 us: short sleeps end when asked, not up to 50 us late.
    libc().prctl?.(29, 1000n);
  }

  /** How many entries are due now, given `written` so far (0 if ahead of schedule). */
  due(written: number): number {
    return Math.max(0, Math.floor(((monotonicMs() - this.#t0) / 1000) * this.#rate) - written);
  }

  /** Waits until entry `written` (0-based) is due, letting the event loop run now and then. */
  async wait(written: number): Promise<void> {
    const wait = this.#t0 + ((written + 1) * 1000) / this.#rate - monotonicMs();
    if (wait > 2) await new Promise((r) => setTimeout(r, 1));
    else if (wait > 0.03) libc().usleep(Math.floor((wait - 0.02) * 1000));
    if (monotonicMs() - this.#lastYield >= 5) {
      await this.#loop.yield();
      this.#lastYield = monotonicMs();
    }
  }
}
