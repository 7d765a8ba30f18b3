/**
 * `deno task compile`: builds `dist/writer`, `dist/reporter`, `dist/status`, `dist/clean`,
 * `dist/bridge` and `dist/follow` with `deno compile`, baking in the same narrow permissions as the tasks. Relative grants (the
 * reporter's `--allow-read=. --allow-write=.`) are resolved against the working directory when
 * the binary runs.
 *
 * `deno compile` needs the `denort` runtime: it downloads it, or uses the file `DENORT_BIN`
 * points at on machines that cannot download.
 *
 * @module
 */
import {
  BRIDGE_FLAGS,
  CLEAN_FLAGS,
  FOLLOW_FLAGS,
  programPath,
  REPORTER_FLAGS,
  STATUS_FLAGS,
  WRITER_FLAGS,
} from "./programs.ts";

/** What `deno task compile` builds: output name, entry file, baked-in permission flags. */
export const BINARIES: readonly { name: string; file: string; flags: readonly string[] }[] = [
  { name: "writer", file: "writer.ts", flags: WRITER_FLAGS },
  { name: "reporter", file: "reporter.ts", flags: REPORTER_FLAGS },
  { name: "status", file: "status.ts", flags: STATUS_FLAGS },
  { name: "clean", file: "clean.ts", flags: CLEAN_FLAGS },
  { name: "bridge", file: "bridge.ts", flags: BRIDGE_FLAGS },
  { name: "follow", file: "follow.ts", flags: FOLLOW_FLAGS },
];

/** Compiles every binary into `outDir`; returns the exit status (0, or 9 if denort is missing). */
export async function compileAll(outDir: string): Promise<number> {
  const denort = Deno.env.get("DENORT_BIN");
  if (denort !== undefined) {
    try {
      Deno.statSync(denort);
    } catch {
      console.error(
        `compile: error: DENORT_BIN must name a denort binary: current value is ${denort}`,
      );
      return 9;
    }
  }
  for (const b of BINARIES) {
    const output = `${outDir}/${b.name}`;
    const { code, stderr } = await new Deno.Command(Deno.execPath(), {
      args: ["compile", "--quiet", ...b.flags, "--output", output, programPath(b.file)],
      stdout: "inherit",
      stderr: "piped",
    }).output();
    if (code !== 0) {
      // deno-lint-ignore no-control-regex
      const text = new TextDecoder().decode(stderr).replace(/\x1b\[[0-9;]*m/g, "");
      const download = /denort|dns error|download|lookup address/i.test(text);
      const lines = text.split("\n").map((l) => l.trim()).filter((l) => l !== "");
      const first = lines.find((l) => /error sending request|dns error/.test(l)) ?? lines[0] ??
        `exit status ${code}`;
      console.error(
        download
          ? `compile: error: Cannot build ${output} as the denort runtime cannot be downloaded here; set DENORT_BIN to a denort binary of this Deno version (${first.trim()})`
          : `compile: error: Cannot build ${output}: ${first.trim()}`,
      );
      return download ? 9 : 1;
    }
    console.log(`compile: built ${output} (${b.flags.join(" ")})`);
  }
  return 0;
}

if (import.meta.main) Deno.exit(await compileAll(Deno.args[0] ?? "dist"));
