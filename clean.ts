/**
 * `deno task clean`: removes a segment with `shm_unlink`. It refuses while any role's lock is held
 * (a live writer or reporter is attached), unless `--force`, and says what it removed.
 *
 * @module
 */
import { ExitCode, nameFlag, parse, report } from "./cli.ts";
import { DEFAULT_NAME, SegmentInvalidError } from "./layout.ts";
import { Segment, SegmentNotFoundError } from "./segment.ts";
import { readStatus } from "./status.ts";

const HELP = `Usage: deno task clean [options]

Removes a segment (shm_unlink). Refuses while a live writer or reporter is attached.

Options:
  --name NAME   segment name (default ${DEFAULT_NAME})
  --force       remove it even if processes are attached or it is damaged
  -h, --help    show this help

Exit status: 0 removed, 2 bad arguments, 3 damaged segment (without --force), 4 no such
segment, 6 live processes attached (without --force), 7 system error.`;

/** Raised when live processes are attached; exit status 6. */
class AttachedError extends Error {}

/** Runs the clean tool with `args`; resolves to the exit status. */
export function main(args: string[]): number {
  let name: string;
  let force: boolean;
  try {
    const { values } = parse(args, {
      name: { type: "string" },
      force: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    });
    if (values.help) {
      console.log(HELP);
      return ExitCode.OK;
    }
    name = nameFlag("clean", values.name);
    force = values.force === true;
  } catch (e) {
    return report("clean", e);
  }
  try {
    let what = "";
    try {
      using seg = Segment.open(name, { readOnly: true });
      const s = readStatus(seg);
      const attached = [
        ...(s.writer.alive ? [`writer pid ${s.writer.pid}`] : []),
        ...s.readers.filter((r) => r.alive).map((r) => `reporter ${r.id} pid ${r.owner_pid}`),
      ];
      if (attached.length > 0 && !force) {
        throw new AttachedError(
          `Cannot remove segment ${name} as live processes are attached: ${
            attached.join(", ")
          } (stop them, or use --force)`,
        );
      }
      what = ` (capacity ${s.capacity}, write_ptr ${s.write_ptr}, epoch ${s.epoch}${
        attached.length ? `; still attached: ${attached.join(", ")}` : ""
      })`;
    } catch (e) {
      if (e instanceof SegmentNotFoundError) throw e;
      if (!force || e instanceof AttachedError) throw e;
      what = ` (damaged: ${(e as Error).message})`;
    }
    Segment.unlink(name);
    console.log(`clean: removed segment ${name}${what}`);
    return ExitCode.OK;
  } catch (e) {
    if (e instanceof AttachedError) {
      console.error(`clean: error: ${e.message}`);
      return ExitCode.OWNERSHIP;
    }
    if (e instanceof SegmentInvalidError) {
      console.error(`clean: error: ${e.message} (use --force to remove it anyway)`);
      return ExitCode.SEGMENT_INVALID;
    }
    return report("clean", e);
  }
}

if (import.meta.main) Deno.exit(main(Deno.args));
