/**
 * The real programs end to end: `writer.ts` and `reporter.ts` started with the flags of their
 * `deno task` entries, each test on its own segment and in its own working directory. Every wait
 * polls a condition with a generous deadline; nothing asserts on timing.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { verifyCsv } from "../demo.ts";
import {
  decodeEntry,
  READ_PTRS_OFFSET,
  READER_LOST_OFFSET,
  READER_OWNERS_OFFSET,
  simulatedEntry,
  slotOffset,
  WRITER_OWNER_OFFSET,
  WRITER_START_INDEX_OFFSET,
} from "../layout.ts";
import { roleHolder } from "../ownership.ts";
import { RingWriter } from "../ring.ts";
import { defineSchema } from "../schema.ts";
import { Segment } from "../segment.ts";
import {
  checkRows,
  delay,
  lastSeq,
  positions,
  readU64,
  scenario,
  waitFor,
  waitForReadPtr,
  writeU64,
} from "./_helpers.ts";

/** The segment's write_ptr, which must exist. */
function writePtr(name: string): number {
  const p = positions(name);
  assert.ok(p, `segment ${name} exists`);
  return p.writePtr;
}

Deno.test("writer plus two reporters: both CSVs hold every entry once, every field correct", async () => {
  await scenario("two", async (s) => {
    const COUNT = 20_000;
    const r0 = s.reporter(0);
    const r1 = s.reporter(1);
    const w = s.writer(["--count", String(COUNT), "--rate", "20000", "--capacity", "32768"]);
    assert.equal(await w.waitExit(), 0);
    assert.match(w.stdout, new RegExp(`wrote ${COUNT} entries .*write_ptr ${COUNT} on ${s.name}`));
    await waitForReadPtr(s.name, 0, COUNT);
    await waitForReadPtr(s.name, 1, COUNT);
    const epoch = positions(s.name)!.epoch;
    r0.signal("SIGTERM");
    r1.signal("SIGTERM");
    assert.equal(await r0.waitExit(), 0);
    assert.equal(await r1.waitExit(), 0);
    for (const [id, r] of [[0, r0], [1, r1]] as const) {
      const text = s.read(`output_${id}.csv`);
      assert.equal(verifyCsv(text, COUNT), undefined, `output_${id}.csv`);
      assert.equal(checkRows(text, epoch).length, COUNT);
      assert.ok(text.startsWith("seq,timestamp_ns,symbol,price,quantity,side,epoch\n"));
      assert.match(
        r.stdout,
        new RegExp(`wrote ${COUNT} rows to output_${id}.csv .*lost 0; read_ptr ${COUNT}`),
      );
    }
    const p = positions(s.name)!;
    assert.deepEqual(p.readPtrs, [COUNT, COUNT, 0, 0, 0, 0, 0, 0]);
    assert.equal(readU64(s.name, WRITER_OWNER_OFFSET), 0, "writer role released");
    assert.equal(readU64(s.name, READER_OWNERS_OFFSET), 0, "reader id 0 released");
    assert.equal(readU64(s.name, READER_OWNERS_OFFSET + 8), 0, "reader id 1 released");
  });
});

Deno.test("reporter resumes after kill -9 mid-stream without duplicating or losing rows", async () => {
  await scenario("kill9", async (s) => {
    // Capacity far above what is written while the reporter is down, and a rate any reporter
    // outruns, even one emulated on a busy machine (about 3,700 rows/s seen under qemu): nobody
    // is lapped.
    const w = s.writer(["--rate", "2000", "--capacity", "131072"]);
    const first = s.reporter(0);
    await waitForReadPtr(s.name, 0, 2_000);
    // As a supervisor does: kill -9 and restart at once; the killed one is awaited afterwards.
    first.signal("SIGKILL");
    const atKill = positions(s.name)!;
    const second = s.reporter(0);
    await first.waitExit();
    assert.equal((await first.child.status).signal, "SIGKILL");
    assert.ok(!first.stdout.includes("wrote"), "killed -9: no summary");
    // The restarted reporter takes over the dead one's id and copies new entries.
    await waitForReadPtr(s.name, 0, atKill.writePtr + 2_000);
    // Its stderr may reach this process after its progress does: wait for the line, then match.
    await waitFor("the reclaim notice", () => second.stderr.includes("reclaimed reader id 0"));
    assert.match(second.stderr, new RegExp(`reclaimed reader id 0 from dead pid ${first.pid}`));
    w.signal("SIGTERM");
    assert.equal(await w.waitExit(), 0);
    const total = writePtr(s.name);
    await waitForReadPtr(s.name, 0, total);
    second.signal("SIGTERM");
    assert.equal(await second.waitExit(), 0);
    const text = s.read("output_0.csv");
    assert.equal(verifyCsv(text, total), undefined);
    assert.equal(checkRows(text, atKill.epoch).length, total);
    assert.equal(readU64(s.name, READER_LOST_OFFSET), 0, "nothing lost");
  });
});

Deno.test("reporter restarted after a crash between writing rows and storing read_ptr writes no row twice and repairs a torn last line", async () => {
  await scenario("crashwin", async (s) => {
    const w1 = s.writer(["--count", "5000", "--rate", "0", "--capacity", "8192"]);
    assert.equal(await w1.waitExit(), 0);
    const first = s.reporter(0);
    await waitForReadPtr(s.name, 0, 5000);
    // kill -9, not awaited: the crash state is staged once the kernel has dropped the killed
    // reporter's hold on reader id 0, and its successor starts before it is awaited.
    first.signal("SIGKILL");
    await waitFor("the kernel to drop the killed reporter's reader id 0", () => {
      using seg = Segment.open(s.name, { readOnly: true });
      const holder = roleHolder(seg, 0);
      return !holder.alive && holder.pid === first.pid;
    });
    // The state a crash leaves between append and commit: rows 3000..4999 are in the file but
    // read_ptr still says 3000, and the last write was cut in the middle of a line.
    writeU64(s.name, 0x08, 3000);
    const torn = "5000,1795692687";
    Deno.writeTextFileSync(s.path("output_0.csv"), torn, { append: true });
    const w2 = s.writer(["--count", "1000", "--rate", "0"]);
    assert.equal(await w2.waitExit(), 0);
    const second = s.reporter(0);
    await waitForReadPtr(s.name, 0, 6000);
    second.signal("SIGINT");
    assert.equal(await second.waitExit(), 0);
    await first.waitExit(); // reaped only now
    assert.equal((await first.child.status).signal, "SIGKILL");
    assert.match(
      second.stderr,
      new RegExp(`removed a partial last line \\(${torn.length} bytes\\)`),
    );
    assert.match(second.stderr, /output_0\.csv ends at seq 4999; read_ptr 3000 -> 5000/);
    assert.match(second.stderr, /reading .* from seq 5000/);
    assert.match(second.stdout, /wrote 1000 rows/);
    assert.equal(verifyCsv(s.read("output_0.csv"), 6000), undefined);
  });
});

Deno.test("reporter started before the writer says once that it waits, then copies everything", async () => {
  await scenario("early", async (s) => {
    const r = s.reporter(0);
    await waitFor("the waiting notice", () => r.stderr.includes("waiting for segment"));
    assert.ok(!r.exited, "it waits instead of exiting");
    // Let it poll for the segment several more times (it polls every 50 ms); not asserted on.
    await delay(300);
    const w = s.writer(["--count", "2000", "--rate", "0", "--capacity", "4096"]);
    assert.equal(await w.waitExit(), 0);
    await waitForReadPtr(s.name, 0, 2000);
    r.signal("SIGTERM");
    assert.equal(await r.waitExit(), 0);
    const notices = r.stderr.split("\n").filter((l) => l.includes("waiting for segment"));
    assert.deepEqual(notices, [
      `reporter 0: waiting for segment ${s.name} (start the writer)`,
    ]);
    assert.equal(verifyCsv(s.read("output_0.csv"), 2000), undefined);
  });
});

Deno.test("reporter stopped before the segment appears exits 0 without creating its CSV", async () => {
  await scenario("nevers", async (s) => {
    const r = s.reporter(4);
    await waitFor("the waiting notice", () => r.stderr.includes("waiting for segment"));
    r.signal("SIGTERM");
    assert.equal(await r.waitExit(), 0);
    assert.match(r.stdout, /stopped \(SIGTERM\) before segment/);
    assert.ok(!Segment.exists(s.name), "the reporter never creates the segment");
    assert.deepEqual([...Deno.readDirSync(s.dir)], []);
  });
});

Deno.test("writer restarted on an existing segment continues from write_ptr and leaves readers' positions alone", async () => {
  await scenario("restart", async (s) => {
    const w1 = s.writer(["--count", "1000", "--rate", "0", "--capacity", "4096"]);
    assert.equal(await w1.waitExit(), 0);
    assert.match(w1.stderr, new RegExp(`created ${s.name} \\(capacity 4096, entry size 64\\)`));
    // Readers somewhere in the stream.
    writeU64(s.name, 0x08 + 2 * 8, 500);
    writeU64(s.name, 0x08 + 5 * 8, 1000);
    const before = positions(s.name)!;
    assert.equal(before.writePtr, 1000);

    const w2 = s.writer(["--count", "500", "--rate", "0"]);
    assert.equal(await w2.waitExit(), 0);
    assert.match(w2.stderr, new RegExp(`re-opened ${s.name} at write_ptr 1000`));
    assert.match(w2.stdout, new RegExp(`wrote 500 entries .*write_ptr 1500 on ${s.name}`));
    const after = positions(s.name)!;
    assert.equal(after.writePtr, 1500);
    assert.deepEqual(after.readPtrs, before.readPtrs, "read_ptrs untouched");
    assert.deepEqual(after.readPtrs, [0, 0, 500, 0, 0, 1000, 0, 0]);
    assert.equal(after.epoch, before.epoch, "same incarnation");
    assert.equal(readU64(s.name, WRITER_START_INDEX_OFFSET), 1000);
    {
      using seg = Segment.open(s.name);
      const view = new DataView(seg.buffer);
      for (const seq of [0, 999, 1000, 1499]) {
        const { timestampNs, ...payload } = decodeEntry(view, slotOffset(seq, 4096));
        assert.deepEqual(payload, simulatedEntry(seq), `entry ${seq}`);
        assert.ok(timestampNs > 0n);
      }
    }
    // A reporter sees one seamless stream 0..1499.
    const r = s.reporter(0);
    await waitForReadPtr(s.name, 0, 1500);
    r.signal("SIGTERM");
    assert.equal(await r.waitExit(), 0);
    assert.equal(verifyCsv(s.read("output_0.csv"), 1500), undefined);
  });
});

Deno.test("a lapped reporter reports exactly the entries missing from its CSV, and every row present is correct", async () => {
  await scenario("lapped", async (s) => {
    const CAPACITY = 64;
    const r = s.reporter(0);
    await waitFor("the waiting notice", () => r.stderr.includes("waiting for segment"));
    const w = s.writer(["--rate", "20000", "--capacity", String(CAPACITY)]);
    await waitForReadPtr(s.name, 0, 1000);
    r.signal("SIGSTOP");
    // Once stopped its read_ptr no longer moves; let the writer lap it several times over.
    const paused = positions(s.name)!.readPtrs[0]!;
    await waitFor("the writer to lap the stopped reporter", () => {
      const p = positions(s.name)!;
      return p.writePtr >= p.readPtrs[0]! + 4 * CAPACITY && p.writePtr >= paused + 4 * CAPACITY;
    });
    r.signal("SIGCONT");
    const resumed = writePtr(s.name);
    await waitForReadPtr(s.name, 0, resumed + 1000);
    w.signal("SIGTERM");
    assert.equal(await w.waitExit(), 0);
    const total = writePtr(s.name);
    await waitForReadPtr(s.name, 0, total);
    r.signal("SIGTERM");
    assert.equal(await r.waitExit(), 0);

    const lost = new Set<number>();
    const ranges = [...r.stderr.matchAll(/^reporter 0: lost entries (\d+)\.\.(\d+) \((\d+)\)/gm)];
    assert.ok(ranges.length > 0, "the lap was reported");
    for (const [, a, b, n] of ranges) {
      const from = Number(a);
      const to = Number(b);
      assert.equal(to - from + 1, Number(n), `count of ${from}..${to}`);
      for (let i = from; i <= to; i++) {
        assert.ok(!lost.has(i), `${i} reported twice`);
        lost.add(i);
      }
    }
    const seqs = checkRows(s.read("output_0.csv"), positions(s.name)!.epoch);
    const present = new Set(seqs);
    const missing: number[] = [];
    for (let i = 0; i < total; i++) if (!present.has(i)) missing.push(i);
    assert.deepEqual(missing, [...lost].sort((x, y) => x - y), "missing rows = reported losses");
    assert.ok(
      [...lost].some((i) => i >= paused && i < resumed),
      "entries written while it was stopped were lost",
    );
    assert.equal(readU64(s.name, READER_LOST_OFFSET), lost.size, "reader_lost[0]");
    assert.match(r.stdout, new RegExp(`lost ${lost.size}; read_ptr ${total}`));
  });
});

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  Deno.test(`${signal} stops the reporter with exit 0 and read_ptr equal to its CSV's last seq + 1`, async () => {
    await scenario(signal, async (s) => {
      const w = s.writer(["--rate", "10000", "--capacity", "131072"]);
      const r = s.reporter(0);
      await waitForReadPtr(s.name, 0, 1000);
      r.signal(signal);
      assert.equal(await r.waitExit(), 0);
      assert.match(r.stdout, new RegExp(`\\(${signal}\\)\\n$`));
      const text = s.read("output_0.csv");
      const last = lastSeq(text);
      const stored = positions(s.name)!.readPtrs[0]!;
      assert.equal(stored, last + 1);
      assert.equal(verifyCsv(text, last + 1), undefined);
      assert.match(r.stdout, new RegExp(`read_ptr ${stored} `));
      assert.equal(readU64(s.name, READER_OWNERS_OFFSET), 0, "reader id released");
      assert.ok(!w.exited, "the writer is not affected");
      w.signal("SIGTERM");
      assert.equal(await w.waitExit(), 0);
    });
  });
}

Deno.test("a reporter restarts on a file whose last rows are longer than 64 KiB (64 KiB entries, 60,000-byte values), after a torn one, without losing or repeating a row", async () => {
  await scenario("longrow", async (s) => {
    const schema = defineSchema([{ name: "id", type: "u32" }, {
      name: "blob",
      type: "bytes[65000]",
    }]);
    using seg = Segment.create(s.name, { capacity: 16, entrySize: 65536, schema });
    const w = new RingWriter(seg.buffer);
    const value = (seq: number) => new Uint8Array(60_000).fill(seq & 0xff);
    for (let i = 0; i < 3; i++) w.publishRecord({ id: i, blob: value(i) });
    const r1 = s.reporter(0, ["--quiet"]);
    await waitForReadPtr(s.name, 0, 3);
    r1.signal("SIGTERM");
    assert.equal(await r1.waitExit(), 0, r1.describe());
    // Tear the last row in half, as a crash mid-write would.
    const size = Deno.statSync(s.path("output_0.csv")).size;
    Deno.truncateSync(s.path("output_0.csv"), size - 40_000);
    positionsReset(s.name, 2);
    for (let i = 3; i < 5; i++) w.publishRecord({ id: i, blob: value(i) });
    const r2 = s.reporter(0);
    await waitForReadPtr(s.name, 0, 5);
    r2.signal("SIGTERM");
    assert.equal(await r2.waitExit(), 0, r2.describe());
    assert.match(r2.stderr, /removed a partial last line \(\d+ bytes\)/);
    const rows = s.read("output_0.csv").trimEnd().split("\n").slice(1).map((l) => l.split(","));
    assert.deepEqual(rows.map((r) => Number(r[0])), [0, 1, 2, 3, 4]);
    rows.forEach((r) => {
      const want = Buffer.from(value(Number(r[0]))).toString("base64");
      assert.ok(r[3] === want && r[3].length === 80_000, `row ${r[0]} holds its whole value`);
    });
  });
});

/** Stores `position` as read_ptrs[0], as a reporter killed before its last commit leaves it. */
function positionsReset(name: string, position: number): void {
  writeU64(name, READ_PTRS_OFFSET, position);
}

Deno.test("reporter --from: latest starts a new file at write_ptr with nothing lost, oldest and a seq where the ring says, and a file holding rows wins, saying so", async () => {
  await scenario("from", async (s) => {
    const w = s.writer(["--count", "5000", "--rate", "0", "--capacity", "1024"]);
    assert.equal(await w.waitExit(), 0);
    const run = async (id: number, args: string[], until: number) => {
      const r = s.reporter(id, args);
      await waitFor("the reporter to attach", () => /reading /.test(r.stderr));
      await waitForReadPtr(s.name, id, until);
      r.signal("SIGTERM");
      assert.equal(await r.waitExit(), 0, r.describe());
      return r;
    };
    // latest: only what is published from now on; no loss is reported.
    const late = s.reporter(0, ["--from", "latest"]);
    await waitFor("the reporter to start", () => /from seq 5000 /.test(late.stderr));
    const more = s.writer(["--count", "10", "--rate", "0"]);
    assert.equal(await more.waitExit(), 0);
    await waitForReadPtr(s.name, 0, 5010);
    late.signal("SIGTERM");
    assert.equal(await late.waitExit(), 0, late.describe());
    assert.doesNotMatch(late.stderr, /lost entries/);
    assert.deepEqual(
      checkRows(s.read("output_0.csv"), positions(s.name)!.epoch),
      range(5000, 5010),
    );
    // oldest: the ring's 1024 most recent entries, nothing reported lost.
    const oldest = await run(1, ["--from", "oldest"], 5010);
    assert.doesNotMatch(oldest.stderr, /lost entries/);
    assert.deepEqual(
      checkRows(s.read("output_1.csv"), positions(s.name)!.epoch),
      range(3986, 5010),
    );
    // A seq the ring no longer holds: the gap is reported lost.
    const seq = await run(2, ["--from", "1000"], 5010);
    assert.match(seq.stderr, /lost entries 1000\.\.3985 \(2986\)/);
    // A file holding rows of this epoch wins over --from, and says so in one line.
    const again = await run(0, ["--from", "oldest"], 5010);
    assert.match(
      again.stderr,
      /output_0\.csv holds rows up to seq 5009: resuming after them \(--from oldest applies/,
    );
    assert.equal(checkRows(s.read("output_0.csv"), positions(s.name)!.epoch).length, 10);
  });
});

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from }, (_, i) => from + i);
}
