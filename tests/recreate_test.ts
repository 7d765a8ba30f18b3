/**
 * A segment re-created (new epoch) never loses the new entries nor mixes them with the old ones:
 * whether the reporter was stopped or running at the time.
 */
import assert from "node:assert/strict";
import { uniqueName, unlinkQuietly, waitFor } from "./_helpers.ts";
import { verifyCsv } from "../demo.ts";
import { READ_PTRS_OFFSET } from "../layout.ts";
import { REPORTER_FLAGS, spawnProgram, WRITER_FLAGS } from "../programs.ts";
import { loadU64 } from "../ring.ts";
import { Segment } from "../segment.ts";

function readPtr(name: string): number {
  try {
    using seg = Segment.open(name, { readOnly: true });
    return loadU64(new Uint32Array(seg.buffer), READ_PTRS_OFFSET);
  } catch {
    return -1;
  }
}

function epochOf(name: string): bigint {
  using seg = Segment.open(name, { readOnly: true });
  return seg.info.epoch;
}

async function writer(name: string, args: string[]): Promise<void> {
  const out = await spawnProgram("writer.ts", WRITER_FLAGS, ["--name", name, ...args]).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
}

for (const running of [true, false]) {
  Deno.test(
    `a re-created segment goes to a fresh CSV and the old rows are moved aside (reporter ${
      running ? "running" : "restarted"
    })`,
    async () => {
      const name = uniqueName("recr");
      const dir = await Deno.makeTempDir();
      let reporter: Deno.ChildProcess | undefined;
      const start = () =>
        spawnProgram("reporter.ts", REPORTER_FLAGS, ["0", "--name", name], { cwd: dir });
      try {
        await writer(name, ["--count", "1000", "--rate", "0"]);
        const oldEpoch = epochOf(name);
        reporter = start();
        await waitFor("1000 rows", () => readPtr(name) === 1000);
        if (!running) {
          reporter.kill("SIGTERM");
          assert.equal((await reporter.output()).code, 0);
          reporter = undefined;
        }
        await writer(name, ["--count", "500", "--rate", "0", "--recreate"]);
        const newEpoch = epochOf(name);
        assert.notEqual(newEpoch, oldEpoch);
        if (!running) reporter = start();
        await waitFor("500 rows of the new segment", () => readPtr(name) === 500);
        reporter!.kill("SIGTERM");
        const out = await reporter!.output();
        reporter = undefined;
        assert.equal(out.code, 0);
        const stderr = new TextDecoder().decode(out.stderr);
        assert.match(stderr, /was re-created \(epoch \d+ -> \d+\); moved the old rows to/);
        const current = await Deno.readTextFile(`${dir}/output_0.csv`);
        assert.equal(verifyCsv(current, 500), undefined);
        for (const line of current.trim().split("\n").slice(1)) {
          assert.ok(line.endsWith(`,${newEpoch}`), line);
        }
        const aside = await Deno.readTextFile(`${dir}/output_0.epoch-${oldEpoch}.csv`);
        assert.equal(verifyCsv(aside, 1000), undefined);
        for (const line of aside.trim().split("\n").slice(1)) {
          assert.ok(line.endsWith(`,${oldEpoch}`), line);
        }
      } finally {
        if (reporter) {
          reporter.kill("SIGKILL");
          await reporter.output();
        }
        unlinkQuietly(name);
        await Deno.remove(dir, { recursive: true });
      }
    },
  );
}

Deno.test("writer --recreate refuses (exit 6) while the segment's writer is alive, and removes nothing", async () => {
  const name = uniqueName("recr");
  const live = spawnProgram("writer.ts", WRITER_FLAGS, ["--name", name, "--rate", "1000"]);
  try {
    await waitFor("the live writer to publish", () => {
      try {
        using seg = Segment.open(name, { readOnly: true });
        return loadU64(new Uint32Array(seg.buffer), 0) > 0;
      } catch {
        return false;
      }
    });
    const epoch = epochOf(name);
    const out = await spawnProgram("writer.ts", WRITER_FLAGS, [
      "--name",
      name,
      "--count",
      "1",
      "--recreate",
    ]).output();
    assert.equal(out.code, 6);
    const stderr = new TextDecoder().decode(out.stderr);
    assert.match(stderr, new RegExp(`writer pid ${live.pid} is alive`));
    assert.equal(epochOf(name), epoch, "the segment must still be the same incarnation");
  } finally {
    live.kill("SIGTERM");
    await live.output();
    unlinkQuietly(name);
  }
});
