/**
 * Role ownership as a library: open-file-description locks on the segment's descriptor (one
 * byte range per role), the owner word as the record of the holder, `status` and `clean` judging
 * by the lock, and the pid fallback of systems without such locks (forced here with
 * `ofdLocks: false`): a zombie counts as dead, a live holder is re-checked for up to a second.
 */
import assert from "node:assert/strict";
import { ExitCode } from "../cli.ts";
import { ofdLockFacts, OS_FACTS, parseKinfoProc } from "../ffi/posix.ts";
import { READER_OWNERS_OFFSET, ROLE_LOCK_LENGTH, WRITER_OWNER_OFFSET } from "../layout.ts";
import {
  claimRole,
  OwnershipError,
  processStat,
  roleHolder,
  selfOwner,
  splitOwner,
} from "../ownership.ts";
import { CLEAN_FLAGS, spawnProgram, STATUS_FLAGS } from "../programs.ts";
import { Segment } from "../segment.ts";
import { Proc, uniqueName, unlinkQuietly, waitFor } from "./_helpers.ts";

/** Runs `fn` with a fresh segment of 16 slots, removed afterwards. */
async function withSegment(tag: string, fn: (name: string, seg: Segment) => Promise<void> | void) {
  const name = uniqueName(tag);
  const seg = Segment.create(name, { capacity: 16 });
  try {
    await fn(name, seg);
  } finally {
    seg.close();
    unlinkQuietly(name);
  }
}

/** Stores an owner word for `pid` (with its real start-time token unless one is given). */
function setOwner(seg: Segment, offset: number, pid: number, token?: number): void {
  const t = token ?? processStat(pid)?.token ?? 0;
  new BigUint64Array(seg.buffer)[offset / 8] = (BigInt(t) << 32n) | BigInt(pid);
}

/** Starts `sh -c script` whose first stdout line is a pid; returns the shell and that pid. */
async function shellWithPid(script: string): Promise<{ sh: Proc; pid: number }> {
  const sh = new Proc(
    "sh",
    new Deno.Command("sh", { args: ["-c", script], stdout: "piped", stderr: "piped" }).spawn(),
  );
  const line = await waitFor("a pid on stdout", () => sh.stdout.includes("\n") ? sh.stdout : "");
  return { sh, pid: Number(line.split("\n")[0]) };
}

const describe = (pid: number) => `held by live pid ${pid}`;

Deno.test("this machine has open-file-description locks (Linux x86-64 or arm64)", () => {
  if (Deno.build.os !== "linux") return;
  const facts = ofdLockFacts();
  assert.ok(facts !== null, `no OFD lock facts for ${Deno.build.arch}`);
  assert.equal(facts.facts.F_OFD_GETLK, 36);
  assert.equal(facts.facts.F_OFD_SETLK, 37);
  assert.deepEqual(
    [facts.facts.F_RDLCK, facts.facts.F_WRLCK, facts.facts.F_UNLCK, facts.facts.SEEK_SET],
    [0, 1, 2, 0],
  );
  assert.deepEqual(facts.flock, {
    size: 32,
    typeOffset: 0,
    whenceOffset: 2,
    startOffset: 8,
    lenOffset: 16,
    pidOffset: 24,
  });
});

Deno.test("a claimed role is held through its lock: a second descriptor is refused naming the pid, a read-only one sees it live", async () => {
  await withSegment("lock", (name, seg) => {
    using other = Segment.open(name);
    using readOnly = Segment.open(name, { readOnly: true });
    assert.equal(roleHolder(readOnly, "writer").alive, false);
    {
      using role = claimRole(seg, "writer", describe);
      assert.equal(role.reclaimedFrom, undefined);
      assert.deepEqual(roleHolder(readOnly, "writer"), { ...splitOwner(selfOwner()), alive: true });
      assert.ok(readOnly.isRangeLocked(WRITER_OWNER_OFFSET, ROLE_LOCK_LENGTH));
      assert.equal(roleHolder(readOnly, 0).alive, false, "one role's lock is not another's");
      const t0 = performance.now();
      assert.throws(
        () => claimRole(other, "writer", describe),
        (e) => e instanceof OwnershipError && e.holderPid === Deno.pid,
      );
      console.log(`refused in ${(performance.now() - t0).toFixed(1)} ms`);
      // Every reader id is its own role.
      using r3 = claimRole(other, 3, describe);
      assert.ok(roleHolder(readOnly, 3).alive);
      assert.throws(() => claimRole(seg, 3, describe), OwnershipError);
      r3.release();
      assert.equal(roleHolder(readOnly, 3).alive, false);
    }
    // Released: owner word cleared, lock free, the other descriptor takes it.
    assert.deepEqual(roleHolder(readOnly, "writer"), { pid: 0, token: 0, alive: false });
    using _again = claimRole(other, "writer", describe);
    assert.ok(roleHolder(readOnly, "writer").alive);
  });
});

Deno.test("a role is claimed once per segment: a second claim through the same Segment is refused naming this pid, and the first keeps its lock", async () => {
  await withSegment("twice", (name, seg) => {
    using readOnly = Segment.open(name, { readOnly: true });
    for (const role of ["writer", 3] as const) {
      const first = claimRole(seg, role, describe);
      assert.throws(
        () => claimRole(seg, role, describe),
        (e) =>
          e instanceof OwnershipError && e.holderPid === Deno.pid &&
          e.message === describe(Deno.pid),
      );
      assert.ok(roleHolder(readOnly, role).alive, "the refused claim dropped the first's lock");
      first.release();
      assert.equal(roleHolder(readOnly, role).alive, false);
    }
    // The range itself is locked once: a second tryLockRange through the same object says no.
    assert.ok(seg.tryLockRange(100_000, 1));
    assert.equal(seg.tryLockRange(100_000, 1), false);
    seg.unlockRange(100_000, 1);
    assert.ok(seg.tryLockRange(100_000, 1));
    seg.unlockRange(100_000, 1);
  });
});

Deno.test("fallback without OFD locks: a role is claimed once per process, a word of ours left by a closed segment is taken back", async () => {
  await withSegment("fbtwice", (name, seg) => {
    const fallback = { ofdLocks: false };
    const first = claimRole(seg, 2, describe, fallback);
    assert.throws(
      () => claimRole(seg, 2, describe, fallback),
      (e) => e instanceof OwnershipError && e.holderPid === Deno.pid,
    );
    first.release();
    assert.equal(roleHolder(seg, 2, fallback).alive, false, "released once, and free");
    using again = claimRole(seg, 2, describe, fallback);
    // Closed without releasing (as a crash of this claim would): its word is ours, and free.
    const other = Segment.open(name);
    claimRole(other, 4, describe, fallback);
    other.close();
    using taken = claimRole(seg, 4, describe, fallback);
    assert.equal(taken.reclaimedFrom, undefined);
    assert.equal(again.role, 2);
  });
});

Deno.test("closing the segment releases its roles' locks; the owner word left behind is reported dead", async () => {
  await withSegment("close", (name, seg) => {
    using readOnly = Segment.open(name, { readOnly: true });
    const holder = Segment.open(name);
    const role = claimRole(holder, 5, describe);
    holder.close(); // as kill -9 would: the descriptor goes, the owner word stays
    assert.deepEqual(roleHolder(readOnly, 5), { ...splitOwner(selfOwner()), alive: false });
    role.release(); // after close: a no-op, never a touch of the unmapped header
    using next = claimRole(seg, 5, describe);
    assert.equal(next.reclaimedFrom, undefined, "its own word: nothing reclaimed from a stranger");
  });
});

Deno.test("a child process started while a role is held does not keep its lock after the holder lets go", async () => {
  await withSegment("child", async (name, seg) => {
    using readOnly = Segment.open(name, { readOnly: true });
    const holder = Segment.open(name);
    claimRole(holder, 1, describe);
    // A child inheriting the descriptor would share its open file description, and its lock.
    const { sh } = await shellWithPid("echo $$; exec sleep 600");
    try {
      assert.ok(roleHolder(readOnly, 1).alive);
      holder.close();
      assert.equal(roleHolder(readOnly, 1).alive, false, "the child kept the lock alive");
      using _role = claimRole(seg, 1, describe);
    } finally {
      await sh.close();
    }
  });
});

Deno.test("with the lock free, an owner word naming a live process does not hold the role", async () => {
  await withSegment("word", async (_name, seg) => {
    const { sh, pid } = await shellWithPid("echo $$; exec sleep 600");
    try {
      setOwner(seg, READER_OWNERS_OFFSET + 2 * 8, pid);
      assert.deepEqual(roleHolder(seg, 2).alive, false);
      using role = claimRole(seg, 2, describe);
      assert.equal(role.reclaimedFrom, pid);
      assert.equal(roleHolder(seg, 2).pid, Deno.pid);
    } finally {
      await sh.close();
    }
  });
});

Deno.test("status shows a role whose lock is free as dead whatever its owner word says; clean refuses (exit 6) while a lock is held", async () => {
  await withSegment("tools", async (name, seg) => {
    const { sh, pid } = await shellWithPid("echo $$; exec sleep 600");
    try {
      setOwner(seg, WRITER_OWNER_OFFSET, pid);
      setOwner(seg, READER_OWNERS_OFFSET + 4 * 8, pid);
      const run = async (file: string, args: string[]) => {
        // Each tool with its own task's flags: clean has FFI only, no network.
        const flags = file === "clean.ts" ? CLEAN_FLAGS : STATUS_FLAGS;
        const p = new Proc(file, spawnProgram(file, flags, ["--name", name, ...args]));
        return { code: await p.waitExit(), out: p.stdout, err: p.stderr };
      };
      let status = await run("status.ts", ["--json"]);
      assert.equal(status.code, 0, status.err);
      let json = JSON.parse(status.out);
      assert.deepEqual([json.writer.pid, json.writer.alive, json.writer.state], [
        pid,
        false,
        "dead",
      ]);
      assert.deepEqual([json.readers[4].owner_pid, json.readers[4].state], [pid, "dead"]);

      // Held here (another descriptor of this process): live for status, and clean refuses.
      using role = claimRole(seg, 4, describe);
      status = await run("status.ts", ["--json"]);
      json = JSON.parse(status.out);
      assert.deepEqual([json.readers[4].owner_pid, json.readers[4].alive], [Deno.pid, true]);
      assert.equal(json.writer.state, "dead");
      const refused = await run("clean.ts", []);
      assert.equal(refused.code, ExitCode.OWNERSHIP, refused.err);
      assert.match(refused.err, new RegExp(`reporter 4 pid ${Deno.pid}\\b`));
      assert.doesNotMatch(refused.err, /writer pid/, "the writer's lock is free");
      assert.ok(Segment.exists(name));
      role.release();
      const cleaned = await run("clean.ts", []);
      assert.equal(cleaned.code, 0, cleaned.err);
      assert.ok(!Segment.exists(name));
    } finally {
      await sh.close();
    }
  });
});

Deno.test("clean holds every role's lock while it unlinks: a claim racing it makes it refuse (exit 6), or is taken on a segment already removed", async () => {
  // A claimant claims and releases in a tight loop while `clean` runs. A claim that holds the
  // role, with the segment's name still naming its segment, must make clean refuse: clean never
  // removes a segment out from under a claim it did not see.
  let removedUnderClaim = 0;
  let refusals = 0;
  for (let run = 0; run < 40 && removedUnderClaim === 0; run++) {
    const name = uniqueName("cleanrace");
    Segment.create(name, { capacity: 16 }).close();
    try {
      const clean = new Proc("clean.ts", spawnProgram("clean.ts", CLEAN_FLAGS, ["--name", name]));
      // Claim through a fresh descriptor each time, as a starting writer or reporter does.
      const deadline = Date.now() + 30_000;
      // Synchronous, so asked of /proc: gone, or a zombie not yet reaped, once clean has exited.
      const running = () => !["Z", "X", undefined].includes(processStat(clean.pid)?.state);
      while (running() && Segment.exists(name) && Date.now() < deadline) {
        let seg: Segment;
        try {
          seg = Segment.open(name);
        } catch {
          break; // removed between the check and the open
        }
        try {
          const role = claimRole(seg, run % 9 === 8 ? "writer" : run % 9, describe, {
            recheckMs: 0,
          });
          // Held now, with the name still ours: clean must not remove it while we hold it.
          const sameBefore = seg.identity() === "same";
          for (let i = 0; i < 50 && sameBefore; i++) {
            if (seg.identity() !== "same") {
              removedUnderClaim++;
              break;
            }
          }
          role.release();
        } catch (e) {
          if (!(e instanceof OwnershipError)) throw e;
        } finally {
          seg.close();
        }
      }
      const code = await clean.waitExit();
      if (code === ExitCode.OWNERSHIP) refusals++;
      else assert.equal(code, 0, clean.stderr);
    } finally {
      unlinkQuietly(name);
    }
  }
  console.log(`clean refused ${refusals} times while a claim raced it`);
  assert.equal(removedUnderClaim, 0, "clean removed a segment while a role was held in it");
});

Deno.test("a kernel without OFD locks (fcntl says EINVAL) falls back to the pid check once, saying so", async () => {
  // A child process whose fcntl commands are unknown to the kernel, as F_OFD_* are before Linux
  // 3.15: the kernel answers EINVAL, exactly as an old one does.
  const dir = await Deno.makeTempDir({ prefix: "rpt_t2_ofd_" });
  const name = uniqueName("noofd");
  const url = (file: string) => new URL(`../${file}`, import.meta.url).href;
  try {
    Deno.writeTextFileSync(
      `${dir}/old_kernel.ts`,
      `import { os } from "${url("ffi/posix.ts")}";
import { Segment } from "${url("segment.ts")}";
import { claimRole, roleHolder } from "${url("ownership.ts")}";
const facts = os().ofdLocks as unknown as Record<string, number>;
facts.F_OFD_SETLK = 0x7fff0001;
facts.F_OFD_GETLK = 0x7fff0002;
using seg = Segment.create(Deno.args[0]!, { capacity: 16 });
using reader = claimRole(seg, 3, (pid) => "held by " + pid);
using writer = claimRole(seg, "writer", (pid) => "held by " + pid);
const holder = roleHolder(seg, 3);
let refused = "";
try {
  using other = Segment.open(Deno.args[0]!);
  claimRole(other, "writer", (pid) => "held by " + pid, { recheckMs: 0 });
} catch (e) {
  refused = (e as Error).message;
}
console.log(JSON.stringify({ holder, refused, roles: [reader.role, writer.role] }));
`,
    );
    const child = new Proc(
      "old kernel",
      new Deno.Command(Deno.execPath(), {
        args: ["run", "--quiet", "--allow-ffi", `${dir}/old_kernel.ts`, name],
        stdout: "piped",
        stderr: "piped",
      }).spawn(),
    );
    assert.equal(await child.waitExit(), 0, child.stderr);
    const out = JSON.parse(child.stdout);
    assert.deepEqual(
      [out.holder.pid, out.holder.alive],
      [child.pid, true],
      "held, by the pid check",
    );
    assert.equal(out.refused, `held by ${child.pid}`, "the pid check still refuses a live holder");
    const warnings = child.stderr.trim().split("\n");
    assert.equal(warnings.length, 1, `said once: ${child.stderr}`);
    assert.match(
      warnings[0]!,
      /^warning: .*fcntl\(F_OFD_SETLK\).*EINVAL.*fall back to checking the holder's pid$/,
    );
  } finally {
    unlinkQuietly(name);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("macOS fallback: struct kinfo_proc gives the zombie state and a start-time token (a fixture of its layout)", () => {
  const k = OS_FACTS.darwin!.kinfoProc!;
  assert.deepEqual(
    [k.size, k.statOffset, k.SZOMB, k.startSecOffset, k.startUsecOffset],
    [648, 36, 5, 0, 8],
  );
  // kp_proc.p_starttime = { tv_sec: 1764172800, tv_usec: 123456 }, p_stat = SRUN (2).
  const info = new Uint8Array(k.size);
  const view = new DataView(info.buffer);
  view.setBigInt64(0, 1764172800n, true);
  view.setInt32(8, 123456, true);
  info[36] = 2;
  const micros = 1764172800n * 1_000_000n + 123456n;
  const token = Number(micros % 4294967296n);
  assert.deepEqual(parseKinfoProc(info, k), { zombie: false, token });
  info[36] = 5; // SZOMB
  assert.deepEqual(parseKinfoProc(info, k), { zombie: true, token });
  // Another start time (a reused pid) is another token; a start time of 0 is never token 0.
  view.setInt32(8, 123457, true);
  assert.notEqual(parseKinfoProc(info, k).token, token);
  assert.equal(parseKinfoProc(new Uint8Array(k.size), k).token, 1);
});

Deno.test("fallback without OFD locks: a zombie holder counts as dead, its role is taken at once", async () => {
  await withSegment("fbzomb", async (_name, seg) => {
    // `sleep 0` exits at once; its parent became `sleep 600`, which never reaps it.
    const { sh, pid } = await shellWithPid("sleep 0 & echo $!; exec sleep 600");
    try {
      await waitFor(`pid ${pid} to be a zombie`, () => processStat(pid)?.state === "Z");
      setOwner(seg, WRITER_OWNER_OFFSET, pid);
      assert.equal(roleHolder(seg, "writer", { ofdLocks: false }).alive, false);
      // Counted alive, it would be refused after the re-check: the zombie never goes away.
      using role = claimRole(seg, "writer", describe, { ofdLocks: false });
      assert.equal(role.reclaimedFrom, pid);
      assert.equal(processStat(pid)?.state, "Z", "still an unreaped zombie");
    } finally {
      await sh.close();
    }
  });
});

Deno.test("fallback without OFD locks: a live (stopped) holder is re-checked for 1 s, then refused naming its pid", async () => {
  await withSegment("fbstop", async (_name, seg) => {
    const { sh, pid } = await shellWithPid("echo $$; exec sleep 600");
    try {
      sh.signal("SIGSTOP");
      await waitFor(`pid ${pid} to stop`, () => processStat(pid)?.state === "T");
      setOwner(seg, READER_OWNERS_OFFSET, pid);
      assert.equal(roleHolder(seg, 0, { ofdLocks: false }).alive, true);
      const t0 = performance.now();
      assert.throws(
        () => claimRole(seg, 0, describe, { ofdLocks: false }),
        (e) => e instanceof OwnershipError && e.holderPid === pid && e.message === describe(pid),
      );
      const ms = performance.now() - t0;
      assert.ok(ms >= 1000, `refused after ${ms} ms: the holder must be re-checked for 1 s`);
      console.log(`refused after re-checking for ${ms.toFixed(0)} ms`);
    } finally {
      await sh.close();
    }
  });
});

Deno.test("fallback without OFD locks: a holder that exits during the re-check is replaced; a reused pid (other start time) is dead", async () => {
  await withSegment("fbexit", async (_name, seg) => {
    const { sh, pid } = await shellWithPid("echo $$; exec sleep 0.3");
    try {
      setOwner(seg, READER_OWNERS_OFFSET + 7 * 8, pid);
      using role = claimRole(seg, 7, describe, { ofdLocks: false, recheckMs: 30_000 });
      assert.equal(role.reclaimedFrom, pid);
    } finally {
      await sh.close();
    }
    const live = await shellWithPid("echo $$; exec sleep 600");
    try {
      const token = processStat(live.pid)!.token;
      setOwner(seg, READER_OWNERS_OFFSET + 6 * 8, live.pid, token + 1);
      assert.equal(roleHolder(seg, 6, { ofdLocks: false }).alive, false);
      using role = claimRole(seg, 6, describe, { ofdLocks: false });
      assert.equal(role.reclaimedFrom, live.pid);
    } finally {
      await live.sh.close();
    }
  });
});
