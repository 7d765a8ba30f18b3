/**
 * Idle strategies: every strategy delivers every entry, and `futex` never loses a wake-up.
 */
import assert from "node:assert/strict";
import { uniqueName, unlinkQuietly, waitFor } from "./_helpers.ts";
import { FutexIdle, futexSupported, futexWaker, IDLE_STRATEGIES } from "../idle.ts";
import { READ_PTRS_OFFSET, WAITERS_OFFSET } from "../layout.ts";
import { programPath, REPORTER_FLAGS, spawnProgram, WRITER_FLAGS } from "../programs.ts";
import { createRingBuffer, ENTRY_WORDS, loadU64, RingReader, RingWriter } from "../ring.ts";
import { Segment } from "../segment.ts";
import { verifyCsv } from "../demo.ts";

function header(name: string): Uint32Array | undefined {
  try {
    using seg = Segment.open(name, { readOnly: true });
    return new Uint32Array(seg.buffer.slice(0, 0x180));
  } catch {
    return undefined;
  }
}

Deno.test({
  name: "futex: a reader blocked for a long idle period wakes for a single entry (no lost wake-up)",
  ignore: !futexSupported(),
  fn: async () => {
    const name = uniqueName("idle");
    try {
      using seg = Segment.create(name, { capacity: 64 });
      const reader = new RingReader(seg.buffer, 0);
      // Each wait may last 60 s: only a real FUTEX_WAKE from the writer process ends it early,
      // and the outcome says which it was (no timing involved).
      const idle = new FutexIdle(seg.buffer, 60_000);
      const words = new Uint32Array(seg.buffer);
      for (let round = 0; round < 2; round++) {
        // The writer starts in a second and publishes one entry while we are blocked.
        const writer = new Deno.Command("sh", {
          args: [
            "-c",
            `sleep 1 && exec "${Deno.execPath()}" run --quiet ${WRITER_FLAGS.join(" ")} "${
              programPath("writer.ts")
            }" --name ${name} --count 1`,
          ],
          stdout: "null",
          stderr: "null",
        }).spawn();
        idle.reset();
        idle.lastWait = "none";
        while (reader.available() === 0) {
          idle.idle(() => reader.available() > 0);
          assert.notEqual(idle.lastWait as string, "timeout", "the wake-up was lost");
        }
        const outcome: string = idle.lastWait;
        assert.ok(outcome === "woken" || outcome === "changed", `outcome ${outcome}`);
        assert.equal(Atomics.load(words, WAITERS_OFFSET >>> 2), 0, "waiter withdrawn");
        assert.equal((await writer.status).code, 0);
        assert.equal(reader.readBatch(new Uint32Array(4 * ENTRY_WORDS), 4), 1);
      }
    } finally {
      unlinkQuietly(name);
    }
  },
});

Deno.test({
  name: "futex: an entry published between the announcement and the wait is not slept through",
  ignore: !futexSupported(),
  fn: () => {
    const buffer = createRingBuffer(64);
    const writer = new RingWriter(buffer, { wake: futexWaker(buffer) });
    const reader = new RingReader(buffer, 0);
    const idle = new FutexIdle(buffer, 60_000);
    // hasWork() runs after the waiter is announced: publish right there, the worst moment. The
    // strategy must see it and not block (a block would last 60 s and end as "timeout").
    let published = false;
    while (!published) {
      idle.idle(() => {
        writer.publishSimulated(1);
        published = true;
        return reader.available() > 0;
      });
    }
    assert.equal(idle.lastWait, "none");
    assert.equal(reader.available(), 1);
  },
});

for (const idle of IDLE_STRATEGIES) {
  Deno.test(`reporter --idle ${idle} delivers every entry, including one after a long idle period`, async () => {
    const name = uniqueName("idle");
    const dir = await Deno.makeTempDir();
    const reporter = spawnProgram("reporter.ts", REPORTER_FLAGS, [
      "0",
      "--name",
      name,
      "--idle",
      idle,
    ], {
      cwd: dir,
    });
    try {
      const w1 = await spawnProgram("writer.ts", WRITER_FLAGS, [
        "--name",
        name,
        "--count",
        "5000",
        "--rate",
        "20000",
        "--capacity",
        "65536",
      ]).output();
      assert.equal(w1.code, 0);
      const readPtr = () => {
        const h = header(name);
        return h ? loadU64(h, READ_PTRS_OFFSET) : -1;
      };
      await waitFor("5000 entries", () => readPtr() === 5000);
      if (idle === "futex") {
        await waitFor("the reporter to block on the wake word", () => {
          const h = header(name);
          return h !== undefined && h[WAITERS_OFFSET >>> 2] === 1;
        });
      }
      await new Promise((r) => setTimeout(r, 1500)); // long idle
      const w2 = await spawnProgram("writer.ts", WRITER_FLAGS, ["--name", name, "--count", "1"])
        .output();
      assert.equal(w2.code, 0);
      await waitFor("the single entry", () => readPtr() === 5001);
      reporter.kill("SIGTERM");
      const { code, stdout } = await reporter.output();
      assert.equal(code, 0);
      assert.match(new TextDecoder().decode(stdout), /wrote 5001 rows/);
      assert.equal(verifyCsv(await Deno.readTextFile(`${dir}/output_0.csv`), 5001), undefined);
    } finally {
      try {
        reporter.kill("SIGKILL");
        await reporter.output();
      } catch { /* already exited */ }
      unlinkQuietly(name);
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test({
  name: "futex: the waiter is withdrawn even when storing the position before the wait fails",
  ignore: !futexSupported(),
  fn: () => {
    const buffer = createRingBuffer(64);
    const idle = new FutexIdle(buffer, 60_000);
    const words = new Uint32Array(buffer);
    assert.throws(() => {
      for (let i = 0; i < 100; i++) {
        idle.idle(() => {
          throw new Error("Cannot write output file: No space left on device");
        });
      }
    }, /No space left/);
    assert.equal(Atomics.load(words, WAITERS_OFFSET >>> 2), 0);
  },
});
