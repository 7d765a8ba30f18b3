/**
 * How to start the real programs with the exact permission flags of their `deno task` entries
 * (a test pins these to deno.json). Used by the demo, the bench and the process tests.
 *
 * @module
 */
import { fileURLToPath } from "node:url";

/** Permission flags of `deno task writer`: unscoped FFI, and reading `--schema` files under `.`. */
export const WRITER_FLAGS: readonly string[] = ["--allow-ffi", "--allow-read=."];
/** Permission flags of `deno task reporter`: FFI, and read/write of the working directory. */
export const REPORTER_FLAGS: readonly string[] = [
  "--allow-ffi",
  "--allow-read=.",
  "--allow-write=.",
];
/**
 * Permission flags of `status` serving on `address` (`HOST:PORT`, IPv6 in brackets): FFI, and
 * network access to that one address only.
 */
export function statusFlagsFor(address: string): string[] {
  return ["--allow-ffi", `--allow-net=${address}`];
}
/**
 * Permission flags of `deno task status`: FFI, and listening on the default `--serve` address
 * 127.0.0.1:9464 only (it changes nothing).
 */
export const STATUS_FLAGS: readonly string[] = statusFlagsFor("127.0.0.1:9464");
/** Permission flags of `deno task clean`: FFI only. */
export const CLEAN_FLAGS: readonly string[] = ["--allow-ffi"];

/** Absolute path of a program file in this project. */
export function programPath(file: string): string {
  return fileURLToPath(new URL(`./${file}`, import.meta.url));
}

/** Options for {@link spawnProgram}. */
export interface SpawnOptions {
  /** Working directory (the reporter's read/write grant is relative to it). */
  cwd?: string;
  /** Pipe or inherit stdout/stderr (default piped). */
  stdio?: "piped" | "inherit" | "null";
}

/**
 * Starts `deno run <flags> <file> <args>` as a child process.
 *
 * @example
 * ```ts ignore
 * import { spawnProgram, WRITER_FLAGS } from "./programs.ts";
 * const child = spawnProgram("writer.ts", WRITER_FLAGS, ["--count", "10"]);
 * await child.status;
 * ```
 */
export function spawnProgram(
  file: string,
  flags: readonly string[],
  args: readonly string[],
  options: SpawnOptions = {},
): Deno.ChildProcess {
  const stdio = options.stdio ?? "piped";
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "--quiet", ...flags, programPath(file), ...args],
    cwd: options.cwd,
    stdin: "null",
    stdout: stdio,
    stderr: stdio,
  }).spawn();
}
