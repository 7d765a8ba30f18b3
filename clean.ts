/**
 * `deno task clean`: removes a segment with `shm_unlink`. It refuses while any role's lock is held
 * (a live writer or reporter is attached), unless `--force`, and says what it removed. It takes
 * every role's lock before it checks and holds them until after the unlink, so no role can be
 * claimed in between.
 *
 * @module
 */
import { ExitCode, nameFlag, parse, report } from "./cli.ts";
import { ofdLockFacts, OfdLocksUnavailableError } from "./ffi/posix.ts";
import { DEFAULT_NAME, MAX_READERS, ROLE_LOCK_LENGTH, SegmentInvalidError } from "./layout.ts";
import { owner, type Role, roleHolder, roleOffsets } from "./ownership.ts";
import { Segment, SegmentNotFoundError } from "./segment.ts";
import { readStatus } from "./segment_status.ts";

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

/**
 * Takes the lock of every role of `seg` (where the OS has OFD locks), holding those it gets until
 * the segment is closed; returns the roles it could not take, each as `writer pid N` or
 * `reporter ID pid N` (the pid from the holder's owner word). Without OFD locks it judges by the
 * owner word's pid, like `status`.
 */
function lockRoles(seg: Segment): string[] {
  const roles: Role[] = ["writer", ...Array.from({ length: MAX_READERS }, (_, id) => id)];
  const attached: string[] = [];
  for (const role of roles) {
    const { owner: ownerOffset, lock } = roleOffsets(role);
    let held: boolean | undefined;
    if (ofdLockFacts() !== null) {
      try {
        held = !seg.tryLockRange(lock, ROLE_LOCK_LENGTH);
      } catch (e) {
        if (!(e instanceof OfdLocksUnavailableError)) throw e; // said once; by pid from now on
      }
    }
    held ??= roleHolder(seg, role).alive;
    if (!held) continue;
    const { pid } = owner(seg.buffer, ownerOffset);
    attached.push(`${role === "writer" ? "writer" : `reporter ${role}`} pid ${pid}`);
  }
  return attached;
}

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
    // Read-write, so that it can take the roles' locks: it holds all nine while it unlinks, so no
    // writer or reporter can claim a role between the check and the removal (one that was
    // waiting for a lock finds the segment removed).
    let seg: Segment | undefined;
    try {
      try {
        seg = Segment.open(name);
        const attached = lockRoles(seg);
        if (attached.length > 0 && !force) {
          throw new AttachedError(
            `Cannot remove segment ${name} as live processes are attached: ${
              attached.join(", ")
            } (stop them, or use --force)`,
          );
        }
        const s = readStatus(seg);
        what =
          ` (capacity ${s.capacity}, entry size ${s.entry_size}, write_ptr ${s.write_ptr}, epoch ${s.epoch}${
            attached.length ? `; still attached: ${attached.join(", ")}` : ""
          })`;
      } catch (e) {
        if (e instanceof SegmentNotFoundError) throw e;
        if (!force || e instanceof AttachedError) throw e;
        what = ` (damaged: ${(e as Error).message})`;
      }
      Segment.unlink(name);
    } finally {
      seg?.close(); // releases the roles' locks, after the unlink
    }
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
