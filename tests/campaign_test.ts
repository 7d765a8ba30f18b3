/**
 * Fault campaigns with the real programs, each bounded to about a minute:
 *
 * (a) reporters 0 and 1 each killed -9 at random instants at least 50 times while the writer
 *     streams, restarted each time: both CSVs end with every entry exactly once;
 * (b) the writer killed -9 mid-run and restarted several times: seq continues from write_ptr with
 *     no reuse and no hole, in the ring and in the reporters' CSVs;
 * (c) lapping stress: a 64-slot ring, the writer at full speed, reporters throttled so they are
 *     lapped constantly: every row they write is whole, and the losses they report are exactly
 *     the entries missing from their CSVs.
 *
 * In (a) and (b) each successor is started at once after the kill, as a supervisor does, and the
 * killed process is awaited only afterwards: no restart waits for a kill to be reaped.
 *
 * The figures (kills survived, rows checked) are printed for the record.
 */
import assert from "node:assert/strict";
import { verifyCsv } from "../demo.ts";
import { decodeEntry, simulatedEntry } from "../layout.ts";
import { roleHolder } from "../ownership.ts";
import {
  delay,
  killAll,
  lastCompleteSeq,
  lostRanges,
  monitor,
  openWhenReady,
  type Proc,
  randInt,
  readText,
  removeQuietly,
  reporterSummary,
  scanCsv,
  segName,
  spawnReporter,
  spawnWriter,
  tempDir,
  unlinkQuietly,
  waitFor,
  type Watch,
} from "./_faults.ts";

const BIG_CAPACITY = 1 << 22; // 4,194,304 slots: nobody is lapped

Deno.test("campaign (a): reporters 0 and 1 killed -9 at random instants 50+ times each; both CSVs exact", async () => {
  const COUNT = 400_000;
  const RATE = 20_000;
  const MIN_KILLS = 50;
  const name = segName("campa");
  const dir = tempDir("campa");
  const procs: Proc[] = [];
  let watch: Watch | undefined;
  const monitors: ReturnType<typeof monitor>[] = [];
  const t0 = performance.now();
  try {
    const writer = spawnWriter(name, [
      "--count",
      String(COUNT),
      "--rate",
      String(RATE),
      "--capacity",
      String(BIG_CAPACITY),
    ]);
    procs.push(writer);
    watch = await openWhenReady(name, [writer]);
    const w = watch;

    const campaign = async (id: number) => {
      const csv = `${dir}/output_${id}.csv`;
      monitors.push(monitor(w, id, () => csv));
      const tally = {
        kills: 0,
        beforeClaim: 0,
        aheadOfReadPtr: 0,
        tornTail: 0,
        repaired: 0,
        successorFirst: 0,
      };
      let proc = spawnReporter(id, name, dir, ["--quiet"]);
      procs.push(proc);
      while (tally.kills < MIN_KILLS || !writer.exited) {
        const p = proc;
        if (Math.random() < 0.15) {
          // Now and then, kill it while Deno is still starting or attaching.
          await delay(randInt(0, 80));
        } else {
          await waitFor(`reporter ${id} pid ${p.pid} to attach`, () => w.readerPid(id) === p.pid, {
            alive: [p],
          });
          await delay(randInt(0, 100));
        }
        if (w.readerPid(id) !== p.pid) tally.beforeClaim++;
        // As a supervisor does: kill -9, restart at once, and only then learn how it died. The
        // successor starts while the killed one may still be tearing down (its role lock held).
        p.kill("SIGKILL");
        proc = spawnReporter(id, name, dir, ["--quiet"]);
        procs.push(proc);
        assert.equal((await p.done).signal, "SIGKILL", p.describe());
        tally.kills++;
        if (p.stderr.includes("removed a partial last line")) tally.repaired++;
        // The rows on disk are never behind read_ptr: true of the dead reporter's state and of
        // any moment of its successor's (read_ptr only grows; a complete row is never cut).
        const rp = w.readPtr(id);
        const last = lastCompleteSeq(csv);
        if (last >= 0 || rp > 0) {
          assert.ok(rp <= last + 1, `reporter ${id}: read_ptr ${rp} passed the last row ${last}`);
        }
        const size = (() => {
          try {
            return Deno.statSync(csv).size;
          } catch {
            return 0;
          }
        })();
        let torn = false;
        if (size > 0) {
          const f = Deno.openSync(csv);
          const b = new Uint8Array(1);
          f.seekSync(size - 1, Deno.SeekMode.Start);
          f.readSync(b);
          f.close();
          torn = b[0] !== 0x0a;
        }
        // Tallied as the dead reporter's state only while its successor has not yet claimed the
        // id (it reconciles the file and read_ptr right after); otherwise counted as raced.
        if (w.readerPid(id) === proc.pid) tally.successorFirst++;
        else {
          if (last + 1 > rp) tally.aheadOfReadPtr++; // killed between the write and the commit
          if (torn) tally.tornTail++; // killed inside the write itself
        }
      }
      const p = proc;
      // read_ptr may already be COUNT from the last killed reporter: also wait until this one has
      // attached (its signal handlers are installed by then), or SIGTERM would find a process
      // still starting up, which the default action simply terminates.
      await waitFor(
        `reporter ${id} pid ${p.pid} to attach and reach ${COUNT}`,
        () => w.readerPid(id) === p.pid && w.readPtr(id) === COUNT,
        { alive: [p], timeoutMs: 120_000 },
      );
      assert.equal((await p.stop("SIGTERM")).code, 0, p.describe());
      return tally;
    };

    const [t0Tally, t1Tally] = await Promise.all([campaign(0), campaign(1)]);
    assert.equal((await writer.done).code, 0, writer.describe());
    assert.equal(w.writePtr(), COUNT);
    for (const m of monitors.splice(0)) {
      const seen = await m.end();
      assert.deepEqual(seen.violations, [], "read_ptr passed rows not on disk");
    }
    let rows = 0;
    for (const id of [0, 1]) {
      const problem = verifyCsv(readText(`${dir}/output_${id}.csv`), COUNT);
      assert.equal(problem, undefined, `output_${id}.csv: ${problem}`);
      rows += COUNT;
    }
    for (const [id, t] of [[0, t0Tally], [1, t1Tally]] as const) {
      assert.ok(t.kills >= MIN_KILLS);
      console.log(
        `campaign (a) reporter ${id}: ${t.kills} kill -9 survived (each restarted at once, the killed one awaited only afterwards; ${t.beforeClaim} before it attached, ${t.aheadOfReadPtr} between the CSV write and the read_ptr commit, ${t.tornTail} inside a write leaving a torn last row; the successor already held the id when the dead one's state was read ${t.successorFirst} times, those not tallied)`,
      );
    }
    console.log(
      `campaign (a): ${COUNT} entries at ${RATE}/s; ${
        t0Tally.kills + t1Tally.kills
      } kills survived; ${rows} rows checked field by field, each seq exactly once; ${
        ((performance.now() - t0) / 1000).toFixed(1)
      } s`,
    );
  } finally {
    for (const m of monitors) await m.end();
    await killAll(procs);
    watch?.close();
    unlinkQuietly(name);
    removeQuietly(dir);
  }
});

Deno.test("campaign (b): the writer killed -9 mid-run and restarted 8 times; seq continues with no reuse and no hole", async () => {
  const KILLS = 8;
  const name = segName("campb");
  const dir = tempDir("campb");
  const procs: Proc[] = [];
  let watch: Watch | undefined;
  const t0 = performance.now();
  try {
    const reporters = [
      spawnReporter(0, name, dir, ["--quiet"]),
      spawnReporter(1, name, dir, ["--quiet"]),
    ];
    procs.push(...reporters);
    let busyLeft = 0;
    const handovers: string[] = [];
    let raced = 0; // kills whose successor claimed the role before the dead state was read
    let previous: { pid: number; at: number | undefined; min: number; max: number } | undefined;
    // Alternate full speed (a kill then lands inside publishSimulated) and a paced rate.
    const argsOf = (k: number) => [
      "--capacity",
      String(BIG_CAPACITY),
      "--rate",
      k % 2 === 0 ? "0" : "20000",
      ...(k === KILLS ? ["--count", "20000"] : []),
    ];
    let writer = spawnWriter(name, argsOf(0));
    procs.push(writer);
    for (let k = 0; k <= KILLS; k++) {
      const last = k === KILLS;
      const fast = k % 2 === 0;
      const current = writer;
      if (watch === undefined) watch = await openWhenReady(name, [current]);
      const w = watch;
      await waitFor(
        `writer ${k} to take the segment`,
        () => w.writerPid() === current.pid || current.exited,
        {
          alive: last ? [] : [current],
        },
      );
      if (previous) {
        const prev = previous;
        const notice = new RegExp(
          `re-opened ${name} at write_ptr (\\d+), took over from dead writer pid ${prev.pid}\\b`,
        );
        await waitFor(
          `writer ${k} to say it took over from dead writer pid ${prev.pid}`,
          () => notice.test(current.stderr) || current.exited,
        );
        const at = Number(notice.exec(current.stderr)?.[1]);
        assert.ok(at >= prev.min && at <= prev.max, `handover at ${at}: ${current.describe()}`);
        if (prev.at !== undefined) assert.equal(at, prev.at, current.describe());
        handovers.push(`${at}`);
      }
      if (last) {
        assert.equal((await current.done).code, 0, current.describe());
        break;
      }
      const start = w.writePtr();
      await waitFor(`writer ${k} to publish`, () => w.writePtr() > start, { alive: [current] });
      await delay(fast ? randInt(0, 40) : randInt(50, 800));
      // As a supervisor does: kill -9, restart at once, and only then learn how it died. The
      // successor waits for the role until the kernel drops the dead writer's lock.
      const beforeKill = w.writePtr();
      current.kill("SIGKILL");
      writer = spawnWriter(name, argsOf(k + 1));
      procs.push(writer);
      // The dead writer's state can be read only between the kernel dropping its lock and its
      // successor claiming the role: watched without yielding, so that window is rarely missed.
      const dead = deadWriterState(w, current.pid, beforeKill);
      assert.equal((await current.done).signal, "SIGKILL", current.describe());
      if (dead.at === undefined) raced++; // the successor claimed first: bounds are checked
      else {
        if (dead.halfWritten) busyLeft++;
        assert.equal(dead.pid, current.pid, "the dead writer's owner word is left behind");
      }
      previous = { pid: current.pid, at: dead.at, min: dead.min, max: dead.max };
    }
    const w = watch!;
    const n = w.writePtr();
    assert.ok(n < BIG_CAPACITY);
    // The ring: every index 0..n-1 sits in its own slot, whole, with its own payload.
    const view = new DataView(w.seg.buffer);
    for (let i = 0; i < n; i++) {
      const e = decodeEntry(view, w.slotOffset(i));
      const want = simulatedEntry(i);
      if (
        e.seq !== i || e.symbol !== want.symbol || e.priceE4 !== want.priceE4 ||
        e.quantity !== want.quantity || e.side !== want.side
      ) {
        assert.fail(
          `slot of index ${i} holds ${JSON.stringify({ ...e, timestampNs: `${e.timestampNs}` })}`,
        );
      }
    }
    assert.equal(
      decodeEntry(view, w.slotOffset(n)).seq,
      Number(0xffff_ffff_ffff_ffffn),
      "slot n unwritten",
    );
    await waitFor(`reporters to reach ${n}`, () => w.readPtr(0) === n && w.readPtr(1) === n, {
      alive: reporters,
      timeoutMs: 120_000,
    });
    for (const r of reporters) {
      const s = await r.stop("SIGTERM");
      assert.equal(s.code, 0, r.describe());
      assert.equal(reporterSummary(r.stdout)?.lost, 0, r.describe());
    }
    for (const id of [0, 1]) {
      const problem = verifyCsv(readText(`${dir}/output_${id}.csv`), n);
      assert.equal(problem, undefined, `output_${id}.csv: ${problem}`);
    }
    console.log(
      `campaign (b): ${KILLS} writer kill -9 survived, each restarted at once (${busyLeft} left a partly written slot at write_ptr, busy bit set; ${raced} handovers where the successor claimed the role before the dead writer's state was read, checked within bounds); handovers at write_ptr ${
        handovers.join(", ")
      }; ${n} ring slots and ${2 * n} CSV rows checked, no reuse, no hole; ${
        ((performance.now() - t0) / 1000).toFixed(1)
      } s`,
    );
  } finally {
    await killAll(procs);
    watch?.close();
    unlinkQuietly(name);
    removeQuietly(dir);
  }
});

/**
 * The state a kill -9'd writer left, read in the window between the kernel dropping its role lock
 * and a successor claiming the role: polled without yielding (a successor spinning for the role
 * retries every millisecond). If the successor claimed first, `at` is undefined and the handover
 * point is bounded instead: at least the last write_ptr seen while the killed writer held the role,
 * at most the write_ptr seen when its successor was first seen holding it.
 */
function deadWriterState(
  w: Watch,
  pid: number,
  beforeKill: number,
): { pid: number; at: number | undefined; halfWritten: boolean; min: number; max: number } {
  const deadline = performance.now() + 30_000;
  let min = beforeKill;
  for (;;) {
    const ptr = w.writePtr();
    const holder = roleHolder(w.seg, "writer");
    if (!holder.alive) {
      const at = w.writePtr();
      const halfWritten = w.slotHalfWritten(at);
      if (!roleHolder(w.seg, "writer").alive) {
        return { pid: holder.pid, at, halfWritten, min: at, max: at };
      }
    } else if (holder.pid !== pid) {
      return { pid: holder.pid, at: undefined, halfWritten: false, min, max: w.writePtr() };
    } else min = ptr; // read before the holder was seen still the killed writer
    if (performance.now() > deadline) throw new Error(`writer pid ${pid} still holds its lock`);
  }
}

/** Checks one lapped reporter's CSV against what it said it lost; returns the rows checked. */
function checkLapped(label: string, csvText: string, proc: Proc, lostInSegment: number): {
  rows: number;
  lost: number;
  lines: number;
  readPtr: number;
} {
  const summary = reporterSummary(proc.stdout);
  assert.ok(summary, `${label}: no summary line: ${proc.describe()}`);
  const scan = scanCsv(csvText);
  assert.equal(scan.problem, undefined, `${label}: ${scan.problem}`);
  assert.equal(scan.partialBytes, 0, `${label}: partial last row`);
  assert.equal(scan.seqs.length, summary.rows, `${label}: rows in file vs summary`);
  const end = summary.readPtr;
  const state = new Uint8Array(end); // 1 = in the CSV, 2 = reported lost
  for (const s of scan.seqs) {
    assert.ok(s < end, `${label}: seq ${s} at or past read_ptr ${end}`);
    state[s] = 1;
  }
  const ranges = lostRanges(proc.stderr);
  let reported = 0;
  let prevTo = -1;
  for (const r of ranges) {
    assert.equal(r.to - r.from + 1, r.n, `${label}: range ${r.from}..${r.to} says ${r.n}`);
    assert.ok(r.from > prevTo, `${label}: lost ranges overlap or go back at ${r.from}`);
    prevTo = r.to;
    assert.ok(r.to < end, `${label}: lost ${r.to} at or past read_ptr ${end}`);
    const span = state.subarray(r.from, r.to + 1);
    const both = span.indexOf(1);
    assert.equal(both, -1, `${label}: seq ${r.from + both} both written and reported lost`);
    span.fill(2);
    reported += r.n;
  }
  const missing = state.indexOf(0);
  assert.equal(missing, -1, `${label}: seq ${missing} neither written nor reported lost`);
  assert.equal(reported, summary.lost, `${label}: sum of "lost entries" lines vs summary`);
  assert.equal(end - scan.seqs.length, summary.lost, `${label}: missing from CSV vs summary`);
  assert.equal(lostInSegment, summary.lost, `${label}: reader_lost in the segment vs summary`);
  return { rows: scan.seqs.length, lost: summary.lost, lines: ranges.length, readPtr: end };
}

Deno.test("campaign (c): lapping stress on a 64-slot ring: every row whole, losses reported exactly", async () => {
  const SECONDS = 6;
  const name = segName("campc");
  const dir = tempDir("campc");
  const procs: Proc[] = [];
  let watch: Watch | undefined;
  const t0 = performance.now();
  try {
    const writer = spawnWriter(name, ["--capacity", "64", "--rate", "0"]);
    procs.push(writer);
    watch = await openWhenReady(name, [writer]);
    const w = watch;
    assert.equal(w.seg.info.capacity, 64);
    // Reporter 0 is frozen and thawed at random (SIGSTOP/SIGCONT); reporter 1 takes one entry
    // per batch. Both are lapped all the time.
    const stopped = spawnReporter(0, name, dir, ["--quiet"]);
    const slow = spawnReporter(1, name, dir, ["--quiet", "--batch", "1"]);
    procs.push(stopped, slow);
    await waitFor(
      "both reporters to attach",
      () => w.readerPid(0) === stopped.pid && w.readerPid(1) === slow.pid,
      {
        alive: [writer, stopped, slow],
      },
    );
    let freezes = 0;
    const end = Date.now() + SECONDS * 1000;
    while (Date.now() < end) {
      stopped.kill("SIGSTOP");
      freezes++;
      await delay(randInt(1, 40));
      stopped.kill("SIGCONT");
      await delay(randInt(1, 40));
    }
    stopped.kill("SIGCONT");
    assert.ok(!writer.exited && !stopped.exited && !slow.exited, writer.describe());
    assert.equal((await writer.stop("SIGTERM")).code, 0, writer.describe());
    const n = w.writePtr();
    await waitFor(`both reporters to reach ${n}`, () => w.readPtr(0) === n && w.readPtr(1) === n, {
      alive: [stopped, slow],
    });
    let rows = 0;
    const lines: string[] = [];
    for (const [id, proc] of [[0, stopped], [1, slow]] as const) {
      assert.equal((await proc.stop("SIGTERM")).code, 0, proc.describe());
      const r = checkLapped(
        `reporter ${id}`,
        readText(`${dir}/output_${id}.csv`),
        proc,
        w.readerLost(id),
      );
      assert.equal(r.readPtr, n);
      assert.ok(r.lost > 0, `reporter ${id} was never lapped`);
      rows += r.rows;
      lines.push(
        `reporter ${id}: ${r.rows} rows whole, ${r.lost} lost in ${r.lines} reported ranges = exactly the ${r.lost} seqs missing from its CSV`,
      );
    }
    console.log(
      `campaign (c): writer published ${n} entries into 64 slots in ~${SECONDS} s; ${freezes} SIGSTOP/SIGCONT cycles on reporter 0, --batch 1 on reporter 1`,
    );
    for (const l of lines) console.log(`  ${l}`);
    console.log(
      `campaign (c): ${rows} lapped rows checked field by field, 0 torn; ${
        ((performance.now() - t0) / 1000).toFixed(1)
      } s`,
    );
  } finally {
    await killAll(procs);
    watch?.close();
    unlinkQuietly(name);
    removeQuietly(dir);
  }
});
