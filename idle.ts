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
import { FUTEX_WAIT, FUTEX_WAKE, libc, os } from "./ffi/posix.ts";
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
 * Lets the event loop run (signals, timers) at the cost of a few microseconds, unlike
 * `setTimeout(0)`, which waits a millisecond or more.
 */
export class EventLoopYield implements Disposable {
  #channel = new MessageChannel();
  #resolve: (() => void) | undefined;

  constructor() {
    this.#channel.port1.onmessage = () => {
      const r = this.#resolve;
      this.#resolve = undefined;
      r?.();
    };
  }

  /** Resolves on a later turn of the event loop. */
  yield(): Promise<void> {
    return new Promise((resolve) => {
      this.#resolve = resolve;
      this.#channel.port2.postMessage(0);
    });
  }

  /** Closes the channel so it no longer keeps the process alive. */
  close(): void {
    this.#channel.port1.close();
    this.#channel.port2.close();
  }

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
   * Returns a promise when it waits off the JS thread or on a timer.
   */
  idle(hasWork: () => boolean): Promise<void> | undefined;
  /** Called after a poll found work: the next idle starts from the shortest pause. */
  reset(): void;
}

/** Longest single futex wait; the reader re-checks and refreshes its heartbeat after it. */
export const FUTEX_TIMEOUT_MS = 100;

/** Whether this machine has futex (Linux on x86_64 or aarch64). */
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

class Sleep implements IdleStrategy {
  readonly name = "sleep" as const;
  idle(): Promise<void> {
    return libc().usleep(1000).then(() => {});
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

  idle(): Promise<void> | undefined {
    if (this.#spins < Backoff.MAX_SPINS) {
      this.#spins++;
      return undefined;
    }
    if (this.#yields < Backoff.MAX_YIELDS) {
      this.#yields++;
      libc().sched_yield();
      return undefined;
    }
    const pause = this.#pauseUs;
    this.#pauseUs = Math.min(pause * 2, Backoff.MAX_PAUSE_US);
    return libc().usleep(pause).then(() => {});
  }

  reset(): void {
    this.#spins = 0;
    this.#yields = 0;
    this.#pauseUs = 1;
  }
}

class Futex implements IdleStrategy {
  readonly name = "futex" as const;
  #words: Uint32Array;
  #word: Deno.PointerObject;
  #nr: bigint;
  #timeout: BigInt64Array;
  #spins = 0;

  constructor(buffer: ArrayBuffer, timeoutMs: number) {
    const ns = BigInt(Math.round(timeoutMs * 1e6));
    this.#timeout = new BigInt64Array([ns / 1_000_000_000n, ns % 1_000_000_000n]);
    this.#words = new Uint32Array(buffer, 0, (WAITERS_OFFSET >>> 2) + 1);
    this.#word = pointerAt(buffer, WAKE_SEQ_OFFSET);
    this.#nr = BigInt(os().futexSyscall![Deno.build.arch]!);
  }

  idle(hasWork: () => boolean): Promise<void> | undefined {
    // A short spin first: a burst in progress is cheaper to catch than to sleep through.
    if (this.#spins < 50) {
      this.#spins++;
      return undefined;
    }
    const words = this.#words;
    Atomics.add(words, WAITERS_OFFSET >>> 2, 1);
    const seq = Atomics.load(words, WAKE_SEQ_OFFSET >>> 2);
    if (hasWork()) {
      Atomics.sub(words, WAITERS_OFFSET >>> 2, 1);
      return undefined;
    }
    // The kernel returns at once if wake_seq moved since we read it: no lost wake-up.
    return libc()
      .futex_wait(this.#nr, this.#word, FUTEX_WAIT, seq, this.#timeout, null, 0)
      .then(() => {
        Atomics.sub(words, WAITERS_OFFSET >>> 2, 1);
      });
  }

  reset(): void {
    this.#spins = 0;
  }
}

/**
 * Makes the idle strategy `name` for the ring in `buffer`. `futex` falls back to `backoff` where
 * the OS has no futex; `fellBack` says so. `options.futexTimeoutMs` bounds each futex wait
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
  options: { futexTimeoutMs?: number } = {},
): { strategy: IdleStrategy; fellBack: boolean } {
  switch (name) {
    case "sleep":
      return { strategy: new Sleep(), fellBack: false };
    case "spin":
      return { strategy: new Spin(), fellBack: false };
    case "backoff":
      return { strategy: new Backoff(), fellBack: false };
    case "futex":
      if (!futexSupported()) return { strategy: new Backoff(), fellBack: true };
      return {
        strategy: new Futex(buffer, options.futexTimeoutMs ?? FUTEX_TIMEOUT_MS),
        fellBack: false,
      };
  }
}
