/**
 * What the programs share: exit statuses, argument parsing into a clear usage error, and the
 * one-line error report.
 *
 * @module
 */
import { type From, parseFrom } from "./sinks/sink.ts";
import { parseArgs, type ParseArgsConfig } from "node:util";
import { PosixError } from "./ffi/posix.ts";
import { IDLE_STRATEGIES, type IdleName } from "./idle.ts";
import { DEFAULT_NAME, MAX_READERS, SegmentInvalidError } from "./layout.ts";
import { OwnershipError } from "./ownership.ts";
import { SegmentNotFoundError, SegmentNotReadyError, validateName } from "./segment.ts";

/** Exit statuses of every program: each failure has its own. */
export const ExitCode = {
  /** Success. */
  OK: 0,
  /** A bug: an error nobody anticipated. */
  INTERNAL: 1,
  /** Bad arguments: unknown flag, missing or out-of-range value. */
  USAGE: 2,
  /** The segment failed validation (size, magic, version, entry size, ...). */
  SEGMENT_INVALID: 3,
  /** The segment does not exist (or is not initialised). */
  SEGMENT_MISSING: 4,
  /** The output file cannot be opened or written. */
  OUTPUT: 5,
  /** The role (writer, or the reader id) is held by another live process. */
  OWNERSHIP: 6,
  /** A system call on the segment failed (permissions, limits). */
  SYSTEM: 7,
  /** The output file does not match this reader or segment (foreign header, impossible seq). */
  OUTPUT_MISMATCH: 8,
  // 9 is `deno task compile`'s: the denort runtime is unavailable.
  /** A server URL that is not `nats://` or `tls://` (bridge, follow). */
  NATS_URL: 10,
  /** A server URL that names no stream, or an invalid one (bridge, follow). */
  NATS_STREAM_NAME: 11,
  /** The NATS server refused the credentials (user/password, token, creds file). */
  NATS_AUTH: 12,
  /** The stream exists but its subjects do not capture the subject. */
  NATS_SUBJECT: 13,
  /** TLS failed: CA file unreadable, certificate not trusted, or the server does not speak TLS. */
  NATS_TLS: 14,
  /** The stream does not exist (follow waits for it instead of exiting). */
  NATS_STREAM_MISSING: 15,
  /** The server refused a JetStream request (JetStream disabled, not permitted, bad stream). */
  NATS_REFUSED: 16,
  /** The server's host:port is outside the program's `--allow-net` grant. */
  NATS_NOT_PERMITTED: 17,
  /** A Deno permission the program needs was not granted (run it with its task's flags). */
  PERMISSION: 18,
  /** `status --serve` cannot listen: address in use, not on this machine, or not granted. */
  LISTEN: 19,
  /**
   * follow: an epoch's schema is missing from the stream or damaged, or a message's schema
   * fingerprint is not its epoch's.
   */
  STREAM_SCHEMA: 20,
  /**
   * bridge: the server's `max_payload` cannot hold one entry of the segment's entry size, or its
   * schema block, with the message headers (see `streamBatchLimit` in layout.ts).
   */
  NATS_MAX_PAYLOAD: 21,
} as const;

/** Raised for a NATS server, URL or stream that cannot be used; carries its exit status. */
export class NatsError extends Error {
  /** The exit status, one of the `NATS_*` codes of {@link ExitCode}. */
  readonly exitCode: number;
  /**
   * @example
   * ```ts
   * import { ExitCode, NatsError } from "./cli.ts";
   * console.assert(new NatsError("x", ExitCode.NATS_AUTH).exitCode === 12);
   * ```
   */
  constructor(message: string, exitCode: number) {
    super(message);
    this.name = "NatsError";
    this.exitCode = exitCode;
  }
}

/** Raised for bad command-line input; maps to exit status 2. */
export class UsageError extends Error {
  /**
   * @example
   * ```ts
   * import { UsageError } from "./cli.ts";
   * console.assert(new UsageError("bad").name === "UsageError");
   * ```
   */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** Raised when the output file cannot be used; carries its exit status. */
export class OutputError extends Error {
  /**
   * The exit status: {@link ExitCode.OUTPUT}, {@link ExitCode.OUTPUT_MISMATCH}, or
   * {@link ExitCode.OWNERSHIP} when another reporter holds the file's lock.
   */
  readonly exitCode: number;
  /**
   * @example
   * ```ts
   * import { ExitCode, OutputError } from "./cli.ts";
   * console.assert(new OutputError("x", ExitCode.OUTPUT).exitCode === 5);
   * ```
   */
  constructor(message: string, exitCode: number = ExitCode.OUTPUT) {
    super(message);
    this.name = "OutputError";
    this.exitCode = exitCode;
  }
}

/** Raised when the HTTP server cannot listen on its address; maps to exit status 10. */
export class ListenError extends Error {
  /**
   * @example
   * ```ts
   * import { ListenError } from "./cli.ts";
   * console.assert(new ListenError("in use").name === "ListenError");
   * ```
   */
  constructor(message: string) {
    super(message);
    this.name = "ListenError";
  }
}

/** Parses `args` strictly; an unknown flag or a missing value becomes a {@link UsageError}. */
export function parse<T extends ParseArgsConfig["options"]>(
  args: string[],
  options: T,
  allowPositionals = false,
): { values: Record<string, string | boolean | undefined>; positionals: string[] } {
  try {
    const { values, positionals } = parseArgs({
      args,
      options,
      strict: true,
      allowPositionals,
    });
    return { values: values as Record<string, string | boolean | undefined>, positionals };
  } catch (e) {
    throw new UsageError((e as Error).message.split("\n")[0]!);
  }
}

/**
 * The `--name` flag: the default segment name when absent, else a validated name, or a
 * {@link UsageError} whose message starts `Cannot <action> as`.
 */
export function nameFlag(action: string, value: string | boolean | undefined): string {
  const name = typeof value === "string" ? value : DEFAULT_NAME;
  try {
    return validateName(name);
  } catch (e) {
    throw new UsageError((e as Error).message.replace("Cannot use", `Cannot ${action} as`));
  }
}

/** Parses a reader id argument (0 to 7), or throws a {@link UsageError} naming it. */
export function readerIdArg(program: string, raw: string): number {
  const id = /^\d+$/.test(raw) ? Number(raw) : NaN;
  if (!Number.isInteger(id) || id < 0 || id >= MAX_READERS) {
    throw new UsageError(
      `Cannot start ${program} as reader id must be an integer from 0 to 7: current value is ${
        JSON.stringify(raw)
      }`,
    );
  }
  return id;
}

/** The `--idle` flag: `sleep` when absent, else one of the idle strategies, or a {@link UsageError}. */
export function idleFlag(program: string, value: string | boolean | undefined): IdleName {
  const idle = (value as string | undefined) ?? "sleep";
  if (!(IDLE_STRATEGIES as readonly string[]).includes(idle)) {
    throw new UsageError(
      `Cannot start ${program} as --idle must be one of ${
        IDLE_STRATEGIES.join(", ")
      }: current value is ${JSON.stringify(idle)}`,
    );
  }
  return idle as IdleName;
}

/**
 * The `--from` flag of the reporter and the bridge: `persisted`, `oldest`, `latest` or a seq, or a
 * {@link UsageError} naming the value.
 *
 * @example
 * ```ts
 * import { fromFlag } from "./cli.ts";
 * console.assert(fromFlag("reporter", "oldest") === "oldest");
 * ```
 */
export function fromFlag(program: string, value: string | boolean): From {
  try {
    return parseFrom(String(value));
  } catch (e) {
    throw new UsageError(`Cannot start ${program} as ${(e as Error).message}`);
  }
}

/** The `--fsync` flag: `none` when absent, else `none` or `batch`, or a {@link UsageError}. */
export function fsyncFlag(program: string, value: string | boolean | undefined): "none" | "batch" {
  const fsync = (value as string | undefined) ?? "none";
  if (fsync !== "none" && fsync !== "batch") {
    throw new UsageError(
      `Cannot start ${program} as --fsync must be none or batch: current value is ${
        JSON.stringify(fsync)
      }`,
    );
  }
  return fsync;
}

/** The `--out` flag: `fallback` when absent, else a non-empty path, or a {@link UsageError}. */
export function outFlag(
  program: string,
  value: string | boolean | undefined,
  fallback: string,
): string {
  const out = (value as string | undefined) ?? fallback;
  if (out === "") {
    throw new UsageError(
      `Cannot start ${program} as --out must be a file path: current value is ""`,
    );
  }
  return out;
}

/** Parses an integer flag value in `[min, max]`, or throws a {@link UsageError} naming it. */
export function intFlag(
  program: string,
  flag: string,
  value: string | boolean | undefined,
  fallback: number,
  min: number,
  max: number,
): number {
  if (value === undefined) return fallback;
  const n = typeof value === "string" && /^\d+$/.test(value) ? Number(value) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new UsageError(
      `Cannot start ${program} as --${flag} must be an integer from ${min} to ${max}: current value is ${
        JSON.stringify(value)
      }`,
    );
  }
  return n;
}

/**
 * Runs a program's argument parser: the options, or the exit status once the help text is printed
 * (0) or the parse error is reported (its status).
 */
export function parseProgramArgs<T extends object>(
  program: string,
  help: string,
  parseArgs: () => T | "help",
): T | number {
  let options: T | "help";
  try {
    options = parseArgs();
  } catch (e) {
    return report(program, e);
  }
  if (options === "help") {
    console.log(help);
    return ExitCode.OK;
  }
  return options;
}

/** The exit status for an error. */
export function exitCodeFor(e: unknown): number {
  // Only argument validation says "bad arguments": any other TypeError or RangeError is a bug.
  if (e instanceof UsageError) return ExitCode.USAGE;
  if (e instanceof SegmentInvalidError) return ExitCode.SEGMENT_INVALID;
  if (e instanceof SegmentNotFoundError || e instanceof SegmentNotReadyError) {
    return ExitCode.SEGMENT_MISSING;
  }
  if (e instanceof OutputError || e instanceof NatsError) return e.exitCode;
  if (e instanceof ListenError) return ExitCode.LISTEN;
  if (e instanceof OwnershipError) return ExitCode.OWNERSHIP;
  if (e instanceof PosixError) return ExitCode.SYSTEM;
  if (e instanceof Deno.errors.NotCapable) return ExitCode.PERMISSION;
  return ExitCode.INTERNAL;
}

/** Prints `program: error: message` on one line to stderr and returns the exit status. */
export function report(program: string, e: unknown): number {
  const code = exitCodeFor(e);
  const message = e instanceof Error ? e.message : String(e);
  const detail = code === ExitCode.INTERNAL && e instanceof Error ? ` (${e.name})` : "";
  console.error(`${program}: error: ${message.replaceAll("\n", " ")}${detail}`);
  return code;
}

/** Resolves after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Installs SIGINT/SIGTERM listeners that call `onSignal`; returns a function removing them. */
export function onStopSignals(onSignal: (signal: Deno.Signal) => void): () => void {
  if (Deno.build.os === "windows") return () => {};
  const handlers = (["SIGINT", "SIGTERM"] as const).map((signal) => {
    const handler = () => onSignal(signal);
    Deno.addSignalListener(signal, handler);
    return [signal, handler] as const;
  });
  return () => {
    for (const [signal, handler] of handlers) Deno.removeSignalListener(signal, handler);
  };
}
