/**
 * The operator tools: `deno task status`, `deno task clean`, live progress on a terminal, and
 * `deno task compile`.
 */
import assert from "node:assert/strict";
import { uniqueName, unlinkQuietly, waitFor, writeU64 } from "./_helpers.ts";
import { BINARIES, compileAll } from "../compile.ts";
import {
  HEADER_SIZE,
  MAGIC_OFFSET,
  READ_PTRS_OFFSET,
  READER_HEARTBEATS_OFFSET,
  slotOffset,
  TIMESTAMP_OFFSET,
} from "../layout.ts";
import {
  CLEAN_FLAGS,
  programPath,
  REPORTER_FLAGS,
  spawnProgram,
  STATUS_FLAGS,
  WRITER_FLAGS,
} from "../programs.ts";
import { loadU64 } from "../ring.ts";
import { Segment } from "../segment.ts";

async function run(
  file: string,
  flags: readonly string[],
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = spawnProgram(file, flags, args);
  const out = await child.output();
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

function readPtr(name: string, id: number): number {
  try {
    using seg = Segment.open(name, { readOnly: true });
    return loadU64(new Uint32Array(seg.buffer), READ_PTRS_OFFSET + id * 8);
  } catch {
    return -1;
  }
}

function snapshot(name: string): Uint8Array {
  using seg = Segment.open(name, { readOnly: true });
  return new Uint8Array(seg.buffer).slice();
}

Deno.test("status --json prints the stable shape with write_ptr and 8 readers, changing nothing", async () => {
  const name = uniqueName("tool");
  const dir = await Deno.makeTempDir();
  try {
    const w = await run("writer.ts", WRITER_FLAGS, [
      "--name",
      name,
      "--count",
      "500",
      "--rate",
      "0",
    ]);
    assert.equal(w.code, 0, w.stderr);
    const reporter = spawnProgram("reporter.ts", REPORTER_FLAGS, ["2", "--name", name], {
      cwd: dir,
    });
    try {
      await waitFor("reporter 2 to read 500", () => readPtr(name, 2) === 500);
      const before = snapshot(name);
      const { code, stdout, stderr } = await run("status.ts", STATUS_FLAGS, [
        "--name",
        name,
        "--json",
      ]);
      assert.equal(code, 0, stderr);
      const s = JSON.parse(stdout);
      assert.equal(s.write_ptr, 500);
      assert.equal(s.version, 1);
      assert.equal(s.capacity, 1024);
      assert.equal(typeof s.epoch, "string");
      assert.equal(s.readers.length, 8);
      s.readers.forEach((r: { id: number }, i: number) => assert.equal(r.id, i));
      const r2 = s.readers[2];
      assert.equal(r2.read_ptr, 500);
      assert.equal(r2.lag, 0);
      assert.equal(r2.owner_pid, reporter.pid);
      assert.equal(r2.alive, true);
      assert.equal(r2.state, "alive");
      assert.equal(s.readers[0].read_ptr, 0);
      assert.equal(s.readers[0].lag, 500);
      assert.equal(s.readers[0].owner_pid, 0);
      assert.equal(s.readers[0].state, "none");
      assert.equal(s.writer.alive, false, "the writer has exited");
      assert.equal(s.schema.default, true, "no block: the default schema");
      assert.deepEqual(
        s.schema.fields.map((f: { name: string }) => f.name),
        ["symbol", "price", "quantity", "side"],
      );
      for (const key of ["lag_ns", "lapped", "lost", "heartbeat_age_ms"]) assert.ok(key in r2, key);
      // Read-only: not a byte of the header changed (the reporter is idle at 500, heartbeat aside).
      const after = snapshot(name);
      const heartbeats = [0x100, 0x140];
      for (let i = 0; i < HEADER_SIZE; i++) {
        if (i >= heartbeats[0]! && i < heartbeats[1]!) continue;
        assert.equal(after[i], before[i], `header byte 0x${i.toString(16)} changed`);
      }
    } finally {
      reporter.kill("SIGTERM");
      await reporter.output();
    }
  } finally {
    unlinkQuietly(name);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("status shows writer, rate, lag, lapped readers and their losses on a terminal table", async () => {
  const name = uniqueName("tool");
  const dir = await Deno.makeTempDir();
  try {
    const w = await run("writer.ts", WRITER_FLAGS, [
      "--name",
      name,
      "--count",
      "5000",
      "--rate",
      "0",
      "--capacity",
      "64",
    ]);
    assert.equal(w.code, 0, w.stderr);
    const reporter = spawnProgram("reporter.ts", REPORTER_FLAGS, ["5", "--name", name], {
      cwd: dir,
    });
    try {
      await waitFor("reporter 5 to catch up", () => readPtr(name, 5) === 5000);
      const { code, stdout, stderr } = await run("status.ts", STATUS_FLAGS, ["--name", name]);
      assert.equal(code, 0, stderr);
      assert.match(
        stdout,
        new RegExp(`segment ${name}  layout v1  capacity 64  entry size 64 bytes  epoch \\d+`),
      );
      assert.match(stdout, /writer {2}pid \d+ {2}dead|writer {2}pid - {2}none/);
      assert.match(stdout, /write_ptr 5000/);
      // Reader 5 lost everything but the last lap of 64 entries.
      assert.match(stdout, new RegExp(`\\n5 +5000 +0 +0 ns +no +4936 +${reporter.pid} +alive`));
      // Reader 0 never attached: unused, not "lapped, gone".
      assert.match(stdout, /\n0 +0 +5000 +- +- +0 +- +unused\n/);
    } finally {
      reporter.kill("SIGTERM");
      await reporter.output();
    }
  } finally {
    unlinkQuietly(name);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("status at entry size 1024: the table and --json give the entry size, lag times come from 1024-byte slots, never-attached ids are unused", async () => {
  const name = uniqueName("tool");
  try {
    const w = await run("writer.ts", WRITER_FLAGS, [
      ...["--name", name, "--count", "300", "--rate", "0"],
      ...["--capacity", "128", "--entry-size", "1024"],
    ]);
    assert.equal(w.code, 0, w.stderr);
    // Reader 3 is 50 behind, within the ring: slot 250 % 128 of 1024 bytes holds entry 250 (at
    // 64-byte slots the same index lands in another entry's payload, so its age would be "gone").
    writeU64(name, READ_PTRS_OFFSET + 3 * 8, 250);
    // Reader 4 beat once and never read: it is used, lapped (300 behind a ring of 128), gone.
    writeU64(name, READER_HEARTBEATS_OFFSET + 4 * 8, Date.now() * 1e6);
    const written = (() => {
      using seg = Segment.open(name, { readOnly: true });
      const at = slotOffset(250, 128, seg.info.entriesOffset, 1024) + TIMESTAMP_OFFSET;
      return Number(new DataView(seg.buffer).getBigUint64(at, true));
    })();
    const json = await run("status.ts", STATUS_FLAGS, ["--name", name, "--json"]);
    assert.equal(json.code, 0, json.stderr);
    const s = JSON.parse(json.stdout);
    assert.equal(s.entry_size, 1024);
    assert.deepEqual(Object.keys(s).slice(0, 5), [
      "name",
      "version",
      "capacity",
      "entry_size",
      "epoch",
    ]);
    const r3 = s.readers[3];
    assert.deepEqual([r3.read_ptr, r3.lag, r3.lapped], [250, 50, false]);
    assert.equal(typeof r3.lag_ns, "number", "entry 250 is in the ring: its age is known");
    const ageNs = Date.now() * 1e6 - written;
    assert.ok(r3.lag_ns > 0 && r3.lag_ns <= ageNs + 1e9, `lag_ns ${r3.lag_ns}, age ${ageNs}`);
    assert.deepEqual([s.readers[4].lapped, s.readers[4].lag_ns], [true, null]);
    const text = await run("status.ts", STATUS_FLAGS, ["--name", name]);
    assert.equal(text.code, 0, text.stderr);
    assert.match(
      text.stdout,
      new RegExp(`^segment ${name}  layout v1  capacity 128  entry size 1024 bytes  epoch \\d+`),
    );
    assert.match(text.stdout, /\n3 +250 +50 +[\d.]+ (ns|us|ms|s) +no +0 +- +none\n/);
    assert.match(text.stdout, /\n4 +0 +300 +gone +yes +0 +- +none\n/);
    for (const id of [0, 1, 2, 5, 6, 7]) {
      assert.match(
        text.stdout,
        new RegExp(`\\n${id} +0 +300 +- +- +0 +- +unused(\\n|$)`),
        `id ${id}`,
      );
    }
  } finally {
    unlinkQuietly(name);
  }
});

Deno.test("status --watch refreshes until SIGINT and exits 0", async () => {
  const name = uniqueName("tool");
  try {
    Segment.create(name, { capacity: 16 }).close();
    const child = spawnProgram("status.ts", STATUS_FLAGS, ["--name", name, "--watch", "--json"]);
    const reader = child.stdout.getReader();
    let text = "";
    const deadline = Date.now() + 30_000;
    while (text.split("\n").filter((l) => l.startsWith("{")).length < 2) {
      const { value, done } = await reader.read();
      if (done || Date.now() > deadline) break;
      text += new TextDecoder().decode(value);
    }
    reader.releaseLock();
    child.kill("SIGINT");
    const { code } = await child.output();
    const lines = text.split("\n").filter((l) => l.startsWith("{"));
    assert.ok(lines.length >= 2, `expected two snapshots, got: ${text}`);
    for (const l of lines) assert.equal(JSON.parse(l).readers.length, 8);
    assert.equal(code, 0);
  } finally {
    unlinkQuietly(name);
  }
});

Deno.test("status of a missing segment exits 4, of a damaged one 3, each with one line", async () => {
  const name = uniqueName("tool");
  try {
    const missing = await run("status.ts", STATUS_FLAGS, ["--name", name]);
    assert.equal(missing.code, 4);
    assert.equal(missing.stderr.trim().split("\n").length, 1);
    assert.match(missing.stderr, /does not exist/);
    {
      using seg = Segment.create(name, { capacity: 16 });
      new DataView(seg.buffer).setUint32(MAGIC_OFFSET + 4, 7, true); // version 7
    }
    const damaged = await run("status.ts", STATUS_FLAGS, ["--name", name]);
    assert.equal(damaged.code, 3);
    assert.equal(damaged.stderr.trim().split("\n").length, 1);
    assert.match(damaged.stderr, /version must be 1: current value is 7/);
    const bad = await run("status.ts", STATUS_FLAGS, ["--name", "no-slash"]);
    assert.equal(bad.code, 2);
    const unknown = await run("status.ts", STATUS_FLAGS, ["--bogus"]);
    assert.equal(unknown.code, 2);
  } finally {
    unlinkQuietly(name);
  }
});

Deno.test("clean refuses while a live reporter is attached, then removes the segment and says so", async () => {
  const name = uniqueName("tool");
  const dir = await Deno.makeTempDir();
  try {
    Segment.create(name, { capacity: 16 }).close();
    const reporter = spawnProgram("reporter.ts", REPORTER_FLAGS, ["1", "--name", name], {
      cwd: dir,
    });
    let stopped = false;
    try {
      await waitFor("reporter 1 to attach", () => {
        const s = (() => {
          using seg = Segment.open(name, { readOnly: true });
          return new BigUint64Array(seg.buffer, 0, HEADER_SIZE / 8)[(0xc0 + 8) / 8];
        })();
        return s !== 0n;
      });
      const refused = await run("clean.ts", CLEAN_FLAGS, ["--name", name]);
      assert.equal(refused.code, 6);
      assert.match(refused.stderr, new RegExp(`reporter 1 pid ${reporter.pid}`));
      assert.ok(Segment.exists(name), "clean must not remove it");
      reporter.kill("SIGTERM");
      await reporter.output();
      stopped = true;
      const removed = await run("clean.ts", CLEAN_FLAGS, ["--name", name]);
      assert.equal(removed.code, 0, removed.stderr);
      assert.match(removed.stdout, new RegExp(`clean: removed segment ${name} \\(capacity 16`));
      assert.equal(Segment.exists(name), false);
      const again = await run("clean.ts", CLEAN_FLAGS, ["--name", name]);
      assert.equal(again.code, 4);
    } finally {
      if (!stopped) {
        reporter.kill("SIGTERM");
        await reporter.output();
      }
    }
  } finally {
    unlinkQuietly(name);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("clean --force removes a segment with a live writer, and a damaged one", async () => {
  const name = uniqueName("tool");
  try {
    const writer = spawnProgram("writer.ts", WRITER_FLAGS, ["--name", name, "--rate", "1000"]);
    try {
      await waitFor("the writer to publish", () => {
        try {
          using seg = Segment.open(name, { readOnly: true });
          return loadU64(new Uint32Array(seg.buffer), 0) > 0;
        } catch {
          return false;
        }
      });
      const refused = await run("clean.ts", CLEAN_FLAGS, ["--name", name]);
      assert.equal(refused.code, 6);
      assert.match(refused.stderr, new RegExp(`writer pid ${writer.pid}`));
      const forced = await run("clean.ts", CLEAN_FLAGS, ["--name", name, "--force"]);
      assert.equal(forced.code, 0, forced.stderr);
      assert.match(forced.stdout, /still attached: writer pid/);
      assert.equal(Segment.exists(name), false);
    } finally {
      writer.kill("SIGTERM");
      await writer.output();
    }
    {
      using seg = Segment.create(name, { capacity: 16 });
      new DataView(seg.buffer).setUint32(MAGIC_OFFSET, 0xdeadbeef, true);
    }
    const refused = await run("clean.ts", CLEAN_FLAGS, ["--name", name]);
    assert.equal(refused.code, 3);
    assert.match(refused.stderr, /magic must be 0x53545052: current value is 0xDEADBEEF/);
    const forced = await run("clean.ts", CLEAN_FLAGS, ["--name", name, "--force"]);
    assert.equal(forced.code, 0, forced.stderr);
    assert.match(forced.stdout, /removed segment .* \(damaged: /);
    assert.equal(Segment.exists(name), false);
  } finally {
    unlinkQuietly(name);
  }
});

/** Runs `command` under a pseudo-terminal (util-linux `script`), returning what it printed. */
async function underTerminal(command: string): Promise<string> {
  const out = await new Deno.Command("script", {
    args: ["-qec", command, "/dev/null"],
    stdin: "null",
  }).output();
  return new TextDecoder().decode(out.stdout);
}

const hasScript = (() => {
  try {
    Deno.statSync("/usr/bin/script");
    return true;
  } catch {
    return false;
  }
})();

Deno.test({
  name:
    "writer and reporter show a live status line on a terminal, and only the summary when piped",
  ignore: !hasScript,
  fn: async () => {
    const name = uniqueName("tool");
    const dir = await Deno.makeTempDir();
    try {
      const deno = Deno.execPath();
      const writerCmd = [deno, "run", "--quiet", ...WRITER_FLAGS, programPath("writer.ts")]
        .join(" ");
      const tty = await underTerminal(
        `${writerCmd} --name ${name} --count 3000 --rate 4000`,
      );
      assert.match(tty, /\rwriter: \d+ entries, \d+\/s, write_ptr \d+/);
      assert.match(tty, /writer: wrote 3000 entries/);
      const reporterCmd = [deno, "run", "--quiet", ...REPORTER_FLAGS, programPath("reporter.ts")]
        .join(" ");
      const child = new Deno.Command("script", {
        args: ["-qec", `cd ${dir} && ${reporterCmd} 0 --name ${name}`, "/dev/null"],
        stdin: "piped",
        stdout: "piped",
      }).spawn();
      await waitFor("the reporter to read 3000", () => readPtr(name, 0) === 3000);
      await new Promise((r) => setTimeout(r, 600)); // let at least one refresh happen
      // Stop the reporter (the child of script) with SIGTERM.
      const pids = new TextDecoder().decode(
        (await new Deno.Command("pgrep", { args: ["-f", `reporter.ts 0 --name ${name}`] }).output())
          .stdout,
      ).trim().split("\n").filter((p) => p !== "");
      for (const pid of pids) Deno.kill(Number(pid), "SIGTERM");
      await child.stdin.close();
      const text = new TextDecoder().decode((await child.output()).stdout);
      assert.match(text, /\rreporter 0: \d+ rows, \d+\/s, lag \d+, lost \d+/);

      const piped = await run("writer.ts", WRITER_FLAGS, [
        "--name",
        name,
        "--count",
        "3000",
        "--rate",
        "4000",
      ]);
      assert.equal(piped.code, 0);
      assert.doesNotMatch(piped.stderr + piped.stdout, /\r/);
      assert.match(
        piped.stdout,
        /^writer: wrote 3000 entries in [\d.]+ s \(\d+ entries\/s\); write_ptr 6000/,
      );
    } finally {
      unlinkQuietly(name);
      await Deno.remove(dir, { recursive: true });
    }
  },
});

/** Whether `deno compile` can get its denort base here (DENORT_BIN, or a download). */
async function denortAvailable(): Promise<string | undefined> {
  if (Deno.env.get("DENORT_BIN")) return undefined;
  const dir = await Deno.makeTempDir();
  try {
    const file = `${dir}/probe.ts`;
    await Deno.writeTextFile(file, "console.log(1);\n");
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["compile", "--quiet", "--output", `${dir}/probe`, file],
      stdout: "null",
      stderr: "piped",
    }).output();
    if (out.success) return undefined;
    return "deno compile cannot download denort here and DENORT_BIN is not set";
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const compileSkip = await denortAvailable();
if (compileSkip) console.log(`skipped: compile test: ${compileSkip}`);

Deno.test({
  name:
    `deno task compile builds writer, reporter, status, clean, bridge and follow with the task permissions${
      compileSkip ? ` (skipped: ${compileSkip})` : ""
    }`,
  ignore: compileSkip !== undefined,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    const name = uniqueName("tool");
    try {
      assert.equal(await compileAll(dir), 0);
      for (const b of BINARIES) Deno.statSync(`${dir}/${b.name}`);
      const w = await new Deno.Command(`${dir}/writer`, {
        args: ["--name", name, "--count", "100", "--rate", "0"],
      }).output();
      assert.equal(w.code, 0, new TextDecoder().decode(w.stderr));
      const s = await new Deno.Command(`${dir}/status`, { args: ["--name", name, "--json"] })
        .output();
      assert.equal(JSON.parse(new TextDecoder().decode(s.stdout)).write_ptr, 100);
      // The reporter's grant is the working directory: writing elsewhere is refused.
      const r = await new Deno.Command(`${dir}/reporter`, {
        args: ["0", "--name", name, "--out", "/tmp/rpt-outside.csv"],
        cwd: dir,
      }).output();
      assert.notEqual(r.code, 0);
    } finally {
      unlinkQuietly(name);
      await Deno.remove(dir, { recursive: true });
    }
  },
});

/** Whether this process may make a private mount namespace (root, unshare present). */
const canUnshare = await (async () => {
  try {
    const out = await new Deno.Command("unshare", { args: ["-m", "true"], stderr: "null" })
      .output();
    return out.success;
  } catch {
    return false;
  }
})();

Deno.test({
  name:
    "writer on a full /dev/shm fails with ENOSPC (exit 7) at creation and leaves nothing behind",
  ignore: !canUnshare,
  fn: async () => {
    const writer = [Deno.execPath(), "run", "--quiet", ...WRITER_FLAGS, programPath("writer.ts")]
      .join(" ");
    // A private /dev/shm of 256 KiB, too small for 65,536 slots (4 MiB).
    const script = `mount -t tmpfs -o size=256k tmpfs /dev/shm && ` +
      `${writer} --name /rpt_t5_full --capacity 65536 --count 10; echo "rc=$?"; ls -A /dev/shm`;
    const out = await new Deno.Command("unshare", { args: ["-m", "sh", "-c", script] }).output();
    const stdout = new TextDecoder().decode(out.stdout);
    const stderr = new TextDecoder().decode(out.stderr);
    assert.match(stdout, /rc=7\n$/, stdout + stderr);
    assert.equal(stderr.trim().split("\n").length, 1, stderr);
    assert.match(stderr, /writer: error: posix_fallocate\(\/rpt_t5_full\) failed: ENOSPC/);
  },
});
