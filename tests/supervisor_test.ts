/**
 * Roles under a supervisor, as the world runs them: `deno task writer` and `deno task reporter`
 * killed with kill -9 of their whole process group (the task process and its `deno run` child,
 * which is left a zombie nobody reaps) and restarted at once without waiting for anything; a
 * holder that is a zombie; a holder that is stopped (SIGSTOP); two reporters given one output
 * file.
 */
import assert from "node:assert/strict";
import { ExitCode } from "../cli.ts";
import { libc } from "../ffi/posix.ts";
import { WRITER_OWNER_OFFSET } from "../layout.ts";
import { CSV_HEADER } from "../csv.ts";
import { OutputFile } from "../output.ts";
import { processStat } from "../ownership.ts";
import { programPath, WRITER_FLAGS } from "../programs.ts";
import { defineSchema } from "../schema.ts";
import {
  checkRows,
  checkSchemaRows,
  positions,
  Proc,
  readU64,
  reporterKillCampaign,
  requireTool,
  restartTask,
  scenario,
  signalGroup,
  specOf,
  waitFor,
  waitForReadPtr,
  writeTaskConfig,
} from "./_helpers.ts";

const SIGKILL = 9;

/** The state letter of a process (`R`, `S`, `T`, `Z`, ...), or undefined once it is gone. */
function procState(pid: number): string | undefined {
  return processStat(pid)?.state; // through libc: Deno's own file API needs --allow-all for /proc
}

Deno.test("supervisor: kill -9 of the `deno task writer` group, restarted at once 30 times: never refused", async () => {
  if (requireTool("setsid", "apt-get install util-linux") === undefined) return;
  await scenario("supw", async (s) => {
    writeTaskConfig(s.dir);
    const restarts = 30;
    const procs: Proc[] = [];
    const refusals: string[] = [];
    let refused = 0; // restarts refused at least once
    const held = /writer: (created|re-opened) /;
    try {
      const args = ["--name", s.name, "--rate", "1000"];
      let current = await restartTask(s.dir, "writer", args, held, procs, []);
      const t0 = performance.now();
      for (let i = 1; i <= restarts; i++) {
        signalGroup(current.pid, SIGKILL);
        // No wait, no reaping: the killed `deno run` is an orphan, a zombie until init reaps it.
        const before = refusals.length;
        current = await restartTask(s.dir, "writer", args, held, procs, refusals);
        if (refusals.length > before) refused++;
      }
      const ms = performance.now() - t0;
      signalGroup(current.pid, SIGKILL);
      console.log(
        `writer: ${
          restarts - refused
        } of ${restarts} restarts right after kill -9 of the task group accepted at once (${refusals.length} refusals in all; ${
          (ms / restarts).toFixed(0)
        } ms per cycle, Deno start included)`,
      );
      assert.equal(
        refused,
        0,
        `${refused} of ${restarts} restarts refused: ${refusals.join("; ")}`,
      );
    } finally {
      for (const p of procs) if (!p.exited) signalGroup(p.pid, SIGKILL);
      await Promise.all(procs.map((p) => p.close()));
    }
  });
});

Deno.test("supervisor: kill -9 of the `deno task reporter 0` group mid-copy, restarted at once 30 times: never refused, every seq exactly once", async () => {
  if (requireTool("setsid", "apt-get install util-linux") === undefined) return;
  await scenario("supr", async (s) => {
    const writerArgs = ["--rate", "2000", "--capacity", "1048576"];
    const seqs = (epoch: bigint) => checkRows(s.read("output_0.csv"), epoch);
    console.log(`reporter: ${await reporterKillCampaign(s, { restarts: 30, writerArgs, seqs })}`);
  });
});

/**
 * Kills of the 1 KiB campaign: 20, or 8 under aarch64 emulation, where each restart of Deno takes
 * about ten seconds (the arm64 job's time is a budget).
 */
const KILLS_1K = Deno.build.arch === "aarch64" ? 8 : 20;

Deno.test(`supervisor: at 1 KiB entries with a bytes[900] field, kill -9 of the reporter group ${KILLS_1K} times: every seq exactly once, every byte of every row as published`, async () => {
  if (requireTool("setsid", "apt-get install util-linux") === undefined) return;
  await scenario("sup1k", async (s) => {
    const schema = defineSchema([
      { name: "id", type: "u64" },
      { name: "blob", type: "bytes[900]" },
      { name: "px", type: "f64" },
      { name: "venue", type: "char[16]" },
    ]);
    Deno.writeTextFileSync(s.path("s.json"), JSON.stringify(schema.fields.map(specOf)));
    // 150 entries/s into 65,536 slots: no lap for 7 minutes, longer than the campaign takes
    // even under emulation (a lapped reporter would lose entries: not what this test is about).
    const writerArgs = [
      "--rate",
      "150",
      "--capacity",
      "65536",
      "--entry-size",
      "1024",
      "--schema",
      "s.json",
    ];
    const seqs = (epoch: bigint) => checkSchemaRows(s.read("output_0.csv"), schema, epoch);
    console.log(
      `reporter at 1 KiB: ${await reporterKillCampaign(s, {
        restarts: KILLS_1K,
        writerArgs,
        seqs,
      })}`,
    );
  });
});

/**
 * Starts `writer.ts` (the task's flags) under a parent that never waits for it: `sh` starts it
 * in the background, prints its pid, then becomes `sleep`, which reaps nothing. Returns the
 * parent and the writer's pid.
 */
async function writerUnderNonReapingParent(
  dir: string,
  args: string[],
): Promise<{ parent: Proc; pid: number }> {
  const command = [Deno.execPath(), "run", "--quiet", ...WRITER_FLAGS, programPath("writer.ts")]
    .concat(args).map((a) => `'${a}'`).join(" ");
  const parent = new Proc(
    "non-reaping parent",
    new Deno.Command("sh", {
      args: ["-c", `${command} 2>/dev/null >/dev/null & echo $!; exec sleep 600`],
      cwd: dir,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn(),
  );
  const pid = Number(await waitFor("the writer's pid", () => parent.stdout.split("\n")[0]));
  return { parent, pid };
}

Deno.test("a writer whose holder is a zombie (its parent never reaps it) takes the role at once", async () => {
  await scenario("zomb", async (s) => {
    const { parent, pid } = await writerUnderNonReapingParent(s.dir, [
      "--name",
      s.name,
      "--rate",
      "1000",
    ]);
    try {
      await waitFor(
        "the writer to hold the role",
        () => positions(s.name) !== undefined && readU64(s.name, WRITER_OWNER_OFFSET) % 2 ** 32,
      );
      assert.equal(readU64(s.name, WRITER_OWNER_OFFSET) % 2 ** 32, pid);
      libc().kill(pid, SIGKILL);
      await waitFor(`pid ${pid} to be a zombie`, () => procState(pid) === "Z");
      const t0 = performance.now();
      const next = s.writer(["--count", "100", "--rate", "0"]);
      assert.equal(await next.waitExit(), 0, next.describe());
      const ms = performance.now() - t0;
      assert.match(next.stderr, new RegExp(`took over from dead writer pid ${pid}\\b`));
      assert.equal(procState(pid), "Z", "the holder is still an unreaped zombie");
      console.log(
        `zombie writer pid ${pid}: successor took the role and wrote 100 entries in ${
          ms.toFixed(0)
        } ms (Deno start included)`,
      );
    } finally {
      await parent.close(); // the zombie goes to init with its parent, and is reaped there
    }
  });
});

Deno.test("a SIGSTOPped holder keeps its role: a second writer and a second reporter refuse, naming its pid", async () => {
  await scenario("stop", async (s) => {
    const writer = s.writer(["--rate", "1000"]);
    const reporter = s.reporter(0);
    await waitFor(
      "both to hold their roles",
      () => /writer: created/.test(writer.stderr) && /reporter 0: reading/.test(reporter.stderr),
    );
    writer.signal("SIGSTOP");
    reporter.signal("SIGSTOP");
    await waitFor(
      "both to be stopped",
      () => procState(writer.pid) === "T" && procState(reporter.pid) === "T",
    );
    try {
      const t0 = performance.now();
      const w2 = s.writer(["--count", "10"]);
      assert.equal(await w2.waitExit(), ExitCode.OWNERSHIP, w2.describe());
      const wMs = performance.now() - t0;
      assert.match(w2.stderr, new RegExp(`held by live writer pid ${writer.pid}\\b`));
      const t1 = performance.now();
      const r2 = s.reporter(0, ["--out", "other.csv"]);
      assert.equal(await r2.waitExit(), ExitCode.OWNERSHIP, r2.describe());
      const rMs = performance.now() - t1;
      assert.match(r2.stderr, new RegExp(`held by live pid ${reporter.pid}\\b`));
      assert.equal(w2.stderr.trim().split("\n").length, 1, "one line");
      console.log(
        `stopped holders kept their roles: second writer refused in ${
          wMs.toFixed(0)
        } ms, second reporter in ${rMs.toFixed(0)} ms (Deno start included)`,
      );
    } finally {
      writer.signal("SIGCONT");
      reporter.signal("SIGCONT");
    }
    writer.signal("SIGTERM");
    assert.equal(await writer.waitExit(), 0, writer.describe());
    reporter.signal("SIGTERM");
    assert.equal(await reporter.waitExit(), 0, reporter.describe());
  });
});

Deno.test("two reporters on one output file: the second exits 6 naming the file, the first's CSV is exact", async () => {
  await scenario("same", async (s) => {
    const writer = s.writer(["--rate", "2000", "--capacity", "262144"]);
    const first = s.reporter(0, ["--out", "shared.csv"]);
    await waitForReadPtr(s.name, 0, 200);
    const before = Deno.statSync(s.path("shared.csv"));
    const second = s.reporter(1, ["--out", "shared.csv"]);
    assert.equal(await second.waitExit(), ExitCode.OWNERSHIP, second.describe());
    assert.equal(second.stderr.trim().split("\n").length, 1, second.describe());
    assert.match(
      second.stderr,
      /output file shared\.csv as another process holds its lock \(one reporter per file\)/,
    );
    assert.equal(Deno.statSync(s.path("shared.csv")).ino, before.ino, "still the first's file");
    assert.equal(positions(s.name)!.readPtrs[1], 0, "reader id 1 never moved");
    // The first goes on writing past the refusal, so the final check covers that too.
    await waitForReadPtr(s.name, 0, positions(s.name)!.readPtrs[0]! + 200);
    writer.signal("SIGTERM");
    assert.equal(await writer.waitExit(), 0, writer.describe());
    const end = positions(s.name)!;
    await waitForReadPtr(s.name, 0, end.writePtr);
    first.signal("SIGTERM");
    assert.equal(await first.waitExit(), 0, first.describe());
    const seqs = checkRows(s.read("shared.csv"), end.epoch);
    assert.equal(seqs.length, end.writePtr, "every entry once");
    assert.equal(seqs[0], 0);
    console.log(
      `second reporter refused: ${second.stderr.trim()}; first wrote ${seqs.length} rows exactly`,
    );
  });
});

Deno.test("a reporter whose output file is locked by another process exits 6 within a second, before waiting for its segment, and leaves the file untouched", async () => {
  await scenario("lockfirst", async (s) => {
    Deno.writeTextFileSync(
      s.path("shared.csv"),
      "seq,timestamp_ns,symbol,price,quantity,side,epoch\n",
    );
    using holder = Deno.openSync(s.path("shared.csv"), { read: true, write: true });
    holder.lockSync(true);
    const before = Deno.readTextFileSync(s.path("shared.csv"));
    // No segment, and none will come: refused up front, it never waits for one.
    const t0 = performance.now();
    const second = s.reporter(1, ["--out", "shared.csv"]);
    assert.equal(await second.waitExit(), ExitCode.OWNERSHIP, second.describe());
    console.log(`refused in ${(performance.now() - t0).toFixed(0)} ms (Deno start included)`);
    assert.equal(second.stderr.trim().split("\n").length, 1, second.describe());
    assert.match(
      second.stderr,
      /output file shared\.csv as another process holds its lock \(one reporter per file\)/,
    );
    assert.doesNotMatch(second.stderr, /waiting for segment/);
    assert.equal(Deno.readTextFileSync(s.path("shared.csv")), before);
    // Unlocked, the probe lets go of it again: the reporter waits for its segment as usual.
    holder.unlockSync();
    const third = s.reporter(1, ["--out", "shared.csv"]);
    await waitFor(
      "the reporter to wait for its segment",
      () => /waiting for segment/.test(third.stderr),
    );
    // It holds no lock while it waits: the file can be locked by someone else.
    assert.ok(holder.tryLockSync(true), "the probe kept the file locked");
    holder.unlockSync();
    third.signal("SIGTERM");
    assert.equal(await third.waitExit(), 0, third.describe());
  });
});

Deno.test("rotation races a second opener: the path always names a file the first holds locked, so the second is refused every time and nothing is overwritten", async () => {
  const dir = await Deno.makeTempDir({ prefix: "rpt_t2_rot_" });
  const path = `${dir}/shared.csv`;
  // The second opener runs OutputFile.open in a tight loop on its own thread (flock is per open
  // file, so two threads conflict as two processes do) while this thread rotates the file.
  Deno.writeTextFileSync(
    `${dir}/opener.ts`,
    `import { OutputFile } from "${new URL("../output.ts", import.meta.url).href}";
self.onmessage = (m: MessageEvent) => {
  const [path, stop] = m.data as [string, Int32Array];
  let opened = 0, refused = 0;
  const other: string[] = [];
  while (Atomics.load(stop, 0) === 0) {
    Atomics.add(stop, 1, 1);
    try {
      OutputFile.open(path).close();
      opened++;
    } catch (e) {
      if ((e as { exitCode?: number }).exitCode === 6) refused++;
      else if (other.length < 5) other.push(String(e));
    }
  }
  self.postMessage({ opened, refused, other });
};
`,
  );
  Deno.writeTextFileSync(path, `${CSV_HEADER}\n0,1,AAPL,1,1,B,1\n`);
  const first = OutputFile.open(path);
  const stop = new Int32Array(new SharedArrayBuffer(8)); // [stop, attempts]
  const worker = new Worker(new URL(`file://${dir}/opener.ts`), { type: "module" });
  const done = new Promise<{ opened: number; refused: number; other: string[] }>((resolve) => {
    worker.onmessage = (m) => resolve(m.data);
  });
  try {
    worker.postMessage([path, stop]);
    await waitFor("the opener to start", () => Atomics.load(stop, 1) > 0);
    const rotations = 300;
    const asides: string[] = [];
    let failed = "";
    for (let i = 0; i < rotations && failed === ""; i++) {
      try {
        asides.push(first.rotate(BigInt(i % 5)));
        first.append(new TextEncoder().encode(`${i},1,AAPL,1,1,B,${i % 5}\n`));
      } catch (e) {
        failed = String(e);
      }
    }
    Atomics.store(stop, 0, 1);
    const result = await done;
    console.log(
      `${asides.length} rotations: the racing opener was refused ${result.refused} times, opened ${result.opened}`,
    );
    assert.equal(failed, "", "a rotation failed while another opener raced it");
    assert.equal(result.opened, 0, "the second opener locked a file of the first");
    assert.deepEqual(result.other, []);
    assert.ok(result.refused > 0, "the opener never raced");
    // Every aside name is its own file; each keeps exactly what it had: no rows lost.
    assert.equal(new Set(asides).size, asides.length, "an aside name was used twice");
    first.close();
    const rows = asides.map((a) => Deno.readTextFileSync(a).split("\n").filter((l) => l).length);
    assert.deepEqual(rows, asides.map(() => 2), "each aside file: its header and its one row");
  } finally {
    Atomics.store(stop, 0, 1);
    worker.terminate();
    first.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("rotation never overwrites an aside file: an earlier one is kept (the next is numbered), one linked before a crash is reused", async () => {
  const dir = await Deno.makeTempDir({ prefix: "rpt_t2_rot_" });
  const path = `${dir}/out.csv`;
  try {
    Deno.writeTextFileSync(path, `${CSV_HEADER}\n0,1,AAPL,1,1,B,7\n`);
    Deno.writeTextFileSync(`${dir}/out.epoch-7.csv`, "an earlier rotation's rows\n");
    using out = OutputFile.open(path);
    assert.equal(out.rotate(7n), `${dir}/out.epoch-7.1.csv`);
    assert.equal(Deno.readTextFileSync(`${dir}/out.epoch-7.csv`), "an earlier rotation's rows\n");
    assert.equal(
      Deno.readTextFileSync(`${dir}/out.epoch-7.1.csv`),
      `${CSV_HEADER}\n0,1,AAPL,1,1,B,7\n`,
    );
    assert.equal(Deno.readTextFileSync(path), `${CSV_HEADER}\n`);
    // A crash between the link and the rename leaves the file under both names: reused, not
    // copied to a third name.
    out.append(new TextEncoder().encode("0,1,AAPL,1,1,B,8\n"));
    Deno.linkSync(path, `${dir}/out.epoch-8.csv`);
    assert.equal(out.rotate(8n), `${dir}/out.epoch-8.csv`);
    assert.deepEqual(
      [...Deno.readDirSync(dir)].map((e) => e.name).sort(),
      ["out.csv", "out.epoch-7.1.csv", "out.epoch-7.csv", "out.epoch-8.csv"],
      "no temporary file left, no extra aside",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a reporter keeps its output file locked across a re-created segment: the rotated file is locked before it is written, a second reporter on it exits 6", async () => {
  await scenario("rotl", async (s) => {
    const oneShot = async (args: string[]) => {
      const w = s.writer([...args, "--rate", "0"]);
      assert.equal(await w.waitExit(), 0, w.describe());
    };
    await oneShot(["--count", "300"]);
    const oldEpoch = positions(s.name)!.epoch;
    const first = s.reporter(0, ["--out", "shared.csv"]);
    await waitForReadPtr(s.name, 0, 300);
    await oneShot(["--count", "200", "--recreate"]);
    const newEpoch = positions(s.name)!.epoch;
    assert.notEqual(newEpoch, oldEpoch);
    await waitFor("the reporter to copy the new segment", () => {
      const p = positions(s.name);
      return p !== undefined && p.epoch === newEpoch && p.readPtrs[0] === 200;
    });
    const aside = `shared.epoch-${oldEpoch}.csv`;
    const second = s.reporter(1, ["--out", "shared.csv"]);
    assert.equal(await second.waitExit(), ExitCode.OWNERSHIP, second.describe());
    assert.match(
      second.stderr,
      /output file shared\.csv as another process holds its lock \(one reporter per file\)/,
    );
    first.signal("SIGTERM");
    assert.equal(await first.waitExit(), 0, first.describe());
    assert.deepEqual(checkRows(s.read(aside), oldEpoch), Array.from({ length: 300 }, (_, i) => i));
    assert.deepEqual(
      checkRows(s.read("shared.csv"), newEpoch),
      Array.from({ length: 200 }, (_, i) => i),
    );
  });
});
