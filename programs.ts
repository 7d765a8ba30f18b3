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
/** The NATS servers `deno task bridge` and `deno task follow` may reach: the local default port. */
export const NATS_HOSTS = "127.0.0.1:4222,localhost:4222";
/**
 * Permission flags of `deno task bridge`: FFI for the segment; read of the working directory for
 * `--creds` and `--tls-ca` files; network to the local NATS server only. The NATS client needs
 * nothing else (no environment, no system information, no other hosts).
 */
export const BRIDGE_FLAGS: readonly string[] = [
  "--allow-ffi",
  "--allow-read=.",
  `--allow-net=${NATS_HOSTS}`,
];
/**
 * Permission flags of `deno task follow`: read and write of the working directory (its CSV,
 * `--creds` and `--tls-ca` files) and network to the local NATS server. No FFI: follow never
 * maps a segment, so it runs on hosts without one.
 */
export const FOLLOW_FLAGS: readonly string[] = [
  "--allow-read=.",
  "--allow-write=.",
  `--allow-net=${NATS_HOSTS}`,
];

/**
 * `flags` with the network grant scoped to `hosts` instead of {@link NATS_HOSTS}: how a server on
 * another host or port is reached (the README's `deno run` line; tests with their own servers).
 *
 * @example
 * ```ts
 * import { BRIDGE_FLAGS, withNatsHosts } from "./programs.ts";
 * console.assert(withNatsHosts(BRIDGE_FLAGS, "10.0.0.5:4222").includes("--allow-net=10.0.0.5:4222"));
 * ```
 */
export function withNatsHosts(flags: readonly string[], hosts: string): string[] {
  return flags.map((f) => f.startsWith("--allow-net=") ? `--allow-net=${hosts}` : f);
}

/** Absolute path of a program file in this project. */
export function programPath(file: string): string {
  return fileURLToPath(new URL(`./${file}`, import.meta.url));
}

/** The `nats-server` binary: on PATH or in the sbin folders Debian installs servers into. */
export async function findNatsServer(): Promise<string | undefined> {
  for (const bin of ["nats-server", "/usr/sbin/nats-server", "/usr/local/sbin/nats-server"]) {
    try {
      const out = await new Deno.Command(bin, {
        args: ["--version"],
        stdout: "null",
        stderr: "null",
      })
        .output();
      if (out.success) return bin;
    } catch {
      // not there
    }
  }
  return undefined;
}

/** Options for {@link spawnProgram}. */
export interface SpawnOptions {
  /** Working directory (the reporter's read/write grant is relative to it). */
  cwd?: string;
  /** Pipe or inherit stdout/stderr (default piped). */
  stdio?: "piped" | "inherit" | "null";
  /** Start it in its own process group (so a supervisor can kill the whole group). */
  detached?: boolean;
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
    detached: options.detached ?? false,
    stdin: "null",
    stdout: stdio,
    stderr: stdio,
  }).spawn();
}
