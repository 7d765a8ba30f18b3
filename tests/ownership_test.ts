/**
 * Ownership of the writer role and of reader ids, with the real programs: refusal while the
 * holder is alive (exit 6 naming its pid), takeover from a kill -9'd holder, a half-written slot
 * left by a dead writer, heartbeats, and two claimants started at the same instant.
 */
import assert from "node:assert/strict";
import { verifyCsv } from "../demo.ts";
import { ExitCode } from "../cli.ts";
import { BUSY_BIT_HI, decodeEntry, simulatedEntry, WRITE_PTR_OFFSET } from "../layout.ts";
import { roleHolder } from "../ownership.ts";
import { ENTRY_WORDS, RingReader } from "../ring.ts";
import {
  delay,
  killAll,
  openWhenReady,
  type Proc,
  readText,
  removeQuietly,
  segName,
  spawnReporter,
  spawnWriter,
  tempDir,
  unlinkQuietly,
  waitFor,
  type Watch,
} from "./_faults.ts";

Deno.test("a second writer refuses while the first is alive: exit 6 naming its pid", async () => {
  const name = segName("own2w");
  const procs: Proc[] = [];
  let watch: Watch | undefined;
  try {
    const first = spawnWriter(name, ["--rate", "1000", "--capacity", "1024"]);
    procs.push(first);
    watch = await openWhenReady(name, [first]);
    const w = watch;
    await waitFor("the first writer to own the segment", () => w.writerPid() === first.pid, {
      alive: [first],
    });
    const second = spawnWriter(name, ["--rate", "1000"]);
    procs.push(second);
    const status = await second.done;
    assert.equal(status.code, ExitCode.OWNERSHIP, second.describe());
    assert.match(second.stderr, new RegExp(`held by live writer pid ${first.pid}\\b`));
    assert.ok(!first.exited, first.describe());
    assert.equal(w.writerPid(), first.pid);
    console.log(`second writer refused: ${second.stderr.trim()}`);
  } finally {
    await killAll(procs);
    watch?.close();
    unlinkQuietly(name);
  }
});

Deno.test("a writer takes over from a kill -9'd writer at once; its half-written slot is never read and is rewritten at the same index", async () => {
  const name = segName("own9w");
  const dir = tempDir("own9w");
  const procs: Proc[] = [];
  let watch: Watch | undefined;
  try {
    const first = spawnWriter(name, ["--rate", "2000", "--capacity", "65536"]);
    procs.push(first);
    watch = await openWhenReady(name, [first]);
    const w = watch;
    await waitFor("the first writer to publish 500 entries", () => w.writePtr() >= 500, {
      alive: [first],
    });
    // kill -9, not awaited: the slot is staged as soon as the kernel has dropped the dead
    // writer's role lock, and the successor below starts while the killed one is not yet reaped.
    first.kill("SIGKILL");
    await waitFor("the kernel to drop the killed writer's role lock", () => {
      const holder = roleHolder(w.seg, "writer");
      return !holder.alive && holder.pid === first.pid;
    });
    const k = w.writePtr();
    assert.equal(w.writerPid(), first.pid, "the dead writer's owner word is left behind");

    // Leave slot k half-written, as a writer killed inside publish would: busy bit set, low word
    // already the new index, payload garbage.
    const base = w.slotOffset(k) >>> 2;
    for (let j = 2; j < ENTRY_WORDS; j++) w.words[base + j] = 0xdead_beef;
    Atomics.store(w.words, base, k >>> 0);
    Atomics.store(w.words, base + 1, BUSY_BIT_HI | Math.floor(k / 2 ** 32));

    // The ring reader refuses it even where write_ptr would claim it is published.
    const copy = w.seg.buffer.slice(0);
    new DataView(copy).setBigUint64(WRITE_PTR_OFFSET, BigInt(k + 1), true);
    const losses: [number, number][] = [];
    const probe = new RingReader(copy, 7, {
      position: k,
      onLoss: (a, b) => losses.push([a, b]),
    });
    assert.equal(probe.readBatch(new Uint32Array(16 * ENTRY_WORDS), 16), 0);
    assert.deepEqual(losses, [[k, k + 1]]);

    // A real reporter copies everything before k and nothing from slot k.
    const reporter = spawnReporter(0, name, dir);
    procs.push(reporter);
    await waitFor(`reporter 0 to reach write_ptr ${k}`, () => w.readPtr(0) === k, {
      alive: [reporter],
    });
    const before = verifyCsv(readText(`${dir}/output_0.csv`), k);
    assert.equal(before, undefined, before);

    const t0 = performance.now();
    const second = spawnWriter(name, ["--count", "1000", "--rate", "0"]);
    procs.push(second);
    const status = await second.done;
    const ms = performance.now() - t0;
    assert.equal(status.code, 0, second.describe());
    assert.equal((await first.done).signal, "SIGKILL", first.describe()); // reaped only now
    assert.match(second.stderr, new RegExp(`re-opened ${name} at write_ptr ${k}\\b`));
    assert.match(second.stderr, new RegExp(`took over from dead writer pid ${first.pid}\\b`));
    assert.equal(w.writePtr(), k + 1000);
    const seq = w.slotSeq(k);
    assert.deepEqual(seq, { lo: k >>> 0, hi: Math.floor(k / 2 ** 32) }, "slot k holds seq k");
    const entry = decodeEntry(new DataView(w.seg.buffer), w.slotOffset(k));
    const { seq: _s, ...payload } = simulatedEntry(k);
    assert.deepEqual(
      {
        symbol: entry.symbol,
        priceE4: entry.priceE4,
        quantity: entry.quantity,
        side: entry.side,
      },
      payload,
    );

    await waitFor("reporter 0 to read the new writer's entries", () => w.readPtr(0) === k + 1000, {
      alive: [reporter],
    });
    assert.equal((await reporter.stop("SIGTERM")).code, 0, reporter.describe());
    const after = verifyCsv(readText(`${dir}/output_0.csv`), k + 1000);
    assert.equal(after, undefined, after);
    console.log(
      `writer takeover: dead pid ${first.pid} at write_ptr ${k}; successor ran 1000 entries and exited in ${
        ms.toFixed(0)
      } ms (Deno start included); slot ${k} rewritten`,
    );
  } finally {
    await killAll(procs);
    watch?.close();
    unlinkQuietly(name);
    removeQuietly(dir);
  }
});

Deno.test("a second reporter for a held id refuses at once naming the holder's pid", async () => {
  const name = segName("own2r");
  const dir = tempDir("own2r");
  const procs: Proc[] = [];
  let watch: Watch | undefined;
  try {
    const writer = spawnWriter(name, ["--rate", "1000", "--capacity", "65536"]);
    procs.push(writer);
    const holder = spawnReporter(0, name, dir);
    procs.push(holder);
    watch = await openWhenReady(name, [writer, holder]);
    const w = watch;
    await waitFor("reporter 0 to hold its id", () => w.readerPid(0) === holder.pid, {
      alive: [writer, holder],
    });
    // Baseline: how long Deno takes to start this program and exit at once.
    const help = spawnReporter(0, name, dir, ["--help"]);
    procs.push(help);
    let t0 = performance.now();
    await help.done;
    const startMs = performance.now() - t0;

    const second = spawnReporter(0, name, dir);
    procs.push(second);
    t0 = performance.now();
    const status = await second.done;
    const refuseMs = performance.now() - t0;
    assert.equal(status.code, ExitCode.OWNERSHIP, second.describe());
    assert.match(second.stderr, new RegExp(`held by live pid ${holder.pid}\\b`));
    assert.ok(!holder.exited, holder.describe());
    assert.equal(w.readerPid(0), holder.pid);
    console.log(
      `second reporter refused in ${refuseMs.toFixed(0)} ms from spawn (Deno start alone: ${
        startMs.toFixed(0)
      } ms): ${second.stderr.trim()}`,
    );
  } finally {
    await killAll(procs);
    watch?.close();
    unlinkQuietly(name);
    removeQuietly(dir);
  }
});

Deno.test("the id of a kill -9'd reporter is reclaimed on restart, nothing lost or doubled", async () => {
  const name = segName("own9r");
  const dir = tempDir("own9r");
  const procs: Proc[] = [];
  let watch: Watch | undefined;
  try {
    const writer = spawnWriter(name, ["--rate", "5000", "--capacity", "262144"]);
    procs.push(writer);
    const first = spawnReporter(0, name, dir);
    procs.push(first);
    watch = await openWhenReady(name, [writer, first]);
    const w = watch;
    await waitFor("reporter 0 to copy some rows", () => w.readPtr(0) > 1000, {
      alive: [writer, first],
    });
    // As a supervisor does: kill -9 and restart at once; the killed one is awaited afterwards.
    first.kill("SIGKILL");
    assert.equal(w.readerPid(0), first.pid, "the killed reporter's owner word is left behind");
    const second = spawnReporter(0, name, dir);
    procs.push(second);
    assert.equal((await first.done).signal, "SIGKILL", first.describe());
    await waitFor("the restarted reporter to hold id 0", () => w.readerPid(0) === second.pid, {
      alive: [writer, second],
    });
    await waitFor(
      "the reclaim notice",
      () => second.stderr.includes(`reclaimed reader id 0 from dead pid ${first.pid}`),
      { alive: [second] },
    );
    assert.equal((await writer.stop("SIGTERM")).code, 0, writer.describe());
    const n = w.writePtr();
    await waitFor(`reporter 0 to reach ${n}`, () => w.readPtr(0) === n, { alive: [second] });
    assert.equal((await second.stop("SIGTERM")).code, 0, second.describe());
    const problem = verifyCsv(readText(`${dir}/output_0.csv`), n);
    assert.equal(problem, undefined, problem);
    console.log(`reader id 0 reclaimed from dead pid ${first.pid}; ${n} rows exact`);
  } finally {
    await killAll(procs);
    watch?.close();
    unlinkQuietly(name);
    removeQuietly(dir);
  }
});

/** Samples a heartbeat for `ms`; returns the distinct values seen and the largest gap between. */
async function sampleHeartbeat(
  read: () => number,
  ms: number,
): Promise<{ advances: number; maxGapMs: number; monotonic: boolean }> {
  const values: number[] = [read()];
  const end = Date.now() + ms;
  while (Date.now() < end) {
    await delay(25);
    const v = read();
    if (v !== values.at(-1)) values.push(v);
  }
  let maxGap = 0;
  let monotonic = true;
  for (let i = 1; i < values.length; i++) {
    const gap = values[i]! - values[i - 1]!;
    if (gap <= 0) monotonic = false;
    maxGap = Math.max(maxGap, gap);
  }
  return { advances: values.length - 1, maxGapMs: maxGap / 1e6, monotonic };
}

Deno.test("heartbeats of the writer and of a reporter advance at least once a second", async () => {
  const name = segName("ownhb");
  const dir = tempDir("ownhb");
  const procs: Proc[] = [];
  let watch: Watch | undefined;
  try {
    const writer = spawnWriter(name, ["--rate", "1000", "--capacity", "65536"]);
    procs.push(writer);
    const reporter = spawnReporter(3, name, dir);
    procs.push(reporter);
    watch = await openWhenReady(name, [writer, reporter]);
    const w = watch;
    await waitFor("both to run", () => w.writerPid() === writer.pid && w.readPtr(3) > 0, {
      alive: [writer, reporter],
    });
    // A heartbeat is a CLOCK_REALTIME stamp: the gap between two successive values is the time
    // between two beats. A loaded machine may stall a process; allow three windows of 3 s.
    for (
      const [who, read] of [
        ["writer", () => w.writerHeartbeat()],
        ["reporter 3", () => w.readerHeartbeat(3)],
      ] as const
    ) {
      let last: Awaited<ReturnType<typeof sampleHeartbeat>> | undefined;
      for (let attempt = 1; attempt <= 3; attempt++) {
        last = await sampleHeartbeat(read, 3000);
        assert.ok(last.monotonic, `${who} heartbeat went backwards`);
        if (last.advances >= 3 && last.maxGapMs <= 1000) break;
        console.log(
          `${who}: ${last.advances} advances, a gap of ${
            last.maxGapMs.toFixed(0)
          } ms in 3 s (machine stalled?); again`,
        );
      }
      assert.ok(
        last!.advances >= 3,
        `${who} heartbeat advanced only ${last!.advances} times in 3 s`,
      );
      assert.ok(last!.maxGapMs <= 1000, `${who} heartbeat gap ${last!.maxGapMs} ms > 1 s`);
      console.log(
        `${who} heartbeat: ${last!.advances} advances in 3 s, largest gap ${
          last!.maxGapMs.toFixed(0)
        } ms`,
      );
    }
    assert.ok(!writer.exited && !reporter.exited);
  } finally {
    await killAll(procs);
    watch?.close();
    unlinkQuietly(name);
    removeQuietly(dir);
  }
});

/**
 * Judges a race between two claimants started at the same instant: the first to exit must be the
 * loser (exit 6 naming the winner's pid); the other must hold the role, then stop cleanly.
 */
async function judge(what: string, pair: Proc[], holderPid: () => number): Promise<void> {
  const first = await Promise.race(pair.map((p, i) => p.done.then(() => i)));
  const loser = pair[first]!;
  const winner = pair[1 - first]!;
  assert.equal(loser.status!.code, ExitCode.OWNERSHIP, `${what}: ${loser.describe()}`);
  assert.match(loser.stderr, new RegExp(`pid ${winner.pid}\\b`), `${what}: ${loser.describe()}`);
  await waitFor(`${what}: the winner to hold the role`, () => holderPid() === winner.pid, {
    alive: [winner],
  });
  assert.equal((await winner.stop("SIGTERM")).code, 0, `${what}: ${winner.describe()}`);
}

Deno.test("race: two reporters started at the same instant for one id, exactly one wins", async () => {
  const name = segName("ownrr");
  const dir = tempDir("ownrr");
  const procs: Proc[] = [];
  const rounds = 6;
  try {
    for (let round = 0; round < rounds; round++) {
      // Even rounds: the segment exists. Odd rounds: both wait for it and see it appear together.
      const absent = round % 2 === 1;
      const cwd = `${dir}/r${round}`;
      Deno.mkdirSync(cwd);
      let writer: Proc | undefined;
      let watch: Watch | undefined;
      try {
        if (!absent) {
          writer = spawnWriter(name, ["--rate", "1000", "--capacity", "65536"]);
          procs.push(writer);
          watch = await openWhenReady(name, [writer]);
        }
        const pair = [spawnReporter(0, name, cwd), spawnReporter(0, name, cwd)];
        procs.push(...pair);
        if (absent) {
          await waitFor(
            "both reporters to wait for the segment",
            () => pair.every((p) => p.stderr.includes("waiting for segment")),
            { alive: pair },
          );
          writer = spawnWriter(name, ["--rate", "1000", "--capacity", "65536"]);
          procs.push(writer);
          watch = await openWhenReady(name, [writer]);
        }
        const wv = watch!;
        await judge(`reporter round ${round}`, pair, () => wv.readerPid(0));
      } finally {
        await writer?.stop("SIGTERM");
        watch?.close();
        unlinkQuietly(name);
      }
    }
    console.log(`reporter race: ${rounds} rounds, exactly one winner in each`);
  } finally {
    await killAll(procs);
    unlinkQuietly(name);
    removeQuietly(dir);
  }
});

Deno.test("race: two writers started at the same instant, exactly one wins", async () => {
  const name = segName("ownrw");
  const procs: Proc[] = [];
  const rounds = 6;
  try {
    for (let round = 0; round < rounds; round++) {
      // Even rounds: no segment yet (both race to create it). Odd rounds: it exists, unowned.
      const absent = round % 2 === 0;
      let watch: Watch | undefined;
      try {
        if (!absent) {
          const init = spawnWriter(name, ["--count", "10", "--capacity", "1024"]);
          procs.push(init);
          assert.equal((await init.done).code, 0, init.describe());
        }
        const pair = [
          spawnWriter(name, ["--rate", "1000", "--capacity", "1024"]),
          spawnWriter(name, ["--rate", "1000", "--capacity", "1024"]),
        ];
        procs.push(...pair);
        watch = await openWhenReady(name, []);
        const wv = watch;
        await judge(`writer round ${round}`, pair, () => wv.writerPid());
      } finally {
        watch?.close();
        unlinkQuietly(name);
      }
    }
    console.log(`writer race: ${rounds} rounds, exactly one winner in each`);
  } finally {
    await killAll(procs);
    unlinkQuietly(name);
  }
});
