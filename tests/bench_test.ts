/**
 * The bench's own parts: the latency histogram (percentiles of known data, exact differences of
 * timestamps beyond 2^53, JSON round trip), the socket baseline's framing (same bytes as a ring
 * entry, reassembly across any cut of the stream), the summary-line parsers, and one tiny smoke
 * run of `bench/bench.ts --smoke` checking that its JSON has every section. Performance targets
 * are never asserted here.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { BENCH_FLAGS, blobSchema, parseSummary, pow2AtLeast } from "../bench/bench.ts";
import { fill } from "../bench/fill_writer.ts";
import { bucketLow, bucketOf, BUCKETS, bucketWidth, Histogram, MAX_VALUE } from "../histogram.ts";
import { median } from "../bench/report.ts";
import { encodeFrames, FRAME_SIZE, FRAME_WORDS, FrameAssembler } from "../bench/socket_frame.ts";
import { IDLE_STRATEGIES } from "../idle.ts";
import { createRingBuffer, ENTRY_WORDS, RingReader, RingWriter } from "../ring.ts";
import { Segment } from "../segment.ts";
import { uniqueName, unlinkQuietly } from "./_helpers.ts";

const ROOT = new URL("../", import.meta.url);

Deno.test("histogram: values below 256 ns are exact, percentiles of 1..100", () => {
  const h = new Histogram();
  for (let v = 1; v <= 100; v++) h.record(v);
  assert.equal(h.total, 100);
  assert.equal(h.percentile(0), 1);
  assert.equal(h.percentile(1), 1);
  assert.equal(h.percentile(50), 50);
  assert.equal(h.percentile(99), 99);
  assert.equal(h.percentile(99.9), 100);
  assert.equal(h.percentile(100), 100);
  assert.equal(h.min, 1);
  assert.equal(h.max, 100);
  assert.equal(h.mean(), 50.5);
});

Deno.test("histogram: percentiles of 1..1,000,000 ns within 0.8%", () => {
  const h = new Histogram();
  for (let v = 1; v <= 1_000_000; v++) h.record(v);
  for (const [p, exact] of [[50, 500_000], [90, 900_000], [99, 990_000], [99.9, 999_000]]) {
    const got = h.percentile(p!);
    assert.ok(
      got >= exact! && got <= exact! * 1.008,
      `p${p}: ${got} should be within 0.8% above ${exact}`,
    );
  }
  assert.equal(h.percentile(100), 1_000_000);
});

Deno.test("histogram: a skewed distribution (99% at 1 µs, 1% at 1 ms)", () => {
  const h = new Histogram();
  for (let i = 0; i < 9900; i++) h.record(1000);
  for (let i = 0; i < 100; i++) h.record(1_000_000);
  assert.ok(Math.abs(h.percentile(50) - 1000) <= 8);
  assert.ok(Math.abs(h.percentile(99) - 1000) <= 8);
  assert.ok(Math.abs(h.percentile(99.9) - 1_000_000) <= 8000);
  assert.equal(h.max, 1_000_000);
});

Deno.test("histogram: empty, negative and huge values", () => {
  const h = new Histogram();
  assert.equal(h.percentile(50), 0);
  assert.equal(h.mean(), 0);
  h.record(-5);
  assert.equal(h.negative, 1);
  assert.equal(h.percentile(50), 0);
  h.record(2 ** 60);
  assert.equal(h.total, 2);
  assert.equal(bucketOf(2 ** 60), BUCKETS - 1);
});

Deno.test("histogram: every value lies in its bucket; buckets are contiguous", () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: MAX_VALUE }), (v) => {
      const i = bucketOf(v);
      assert.ok(i >= 0 && i < BUCKETS);
      assert.ok(bucketLow(i) <= v && v < bucketLow(i) + bucketWidth(i), `${v} in bucket ${i}`);
      assert.ok(bucketWidth(i) <= Math.max(1, v / 128), "relative width at most 1/128");
    }),
  );
  for (let i = 0; i + 1 < BUCKETS; i++) {
    assert.equal(bucketLow(i) + bucketWidth(i), bucketLow(i + 1), `bucket ${i}`);
  }
});

Deno.test("histogram: recordBatch subtracts timestamps beyond 2^53 exactly", () => {
  const entries = new Uint32Array(3 * ENTRY_WORDS);
  const now = 1_795_000_000_123_456_789n; // above 2^53: a number cannot hold it exactly
  const ages = [0n, 1n, 4_294_967_297n]; // the last one borrows across the word boundary
  ages.forEach((age, k) => {
    const ts = now - age;
    entries[k * ENTRY_WORDS + 2] = Number(ts & 0xffff_ffffn);
    entries[k * ENTRY_WORDS + 3] = Number(ts >> 32n);
  });
  const clock = new Uint32Array([Number(now & 0xffff_ffffn), Number(now >> 32n)]);
  const h = new Histogram();
  h.recordBatch(entries, 3, clock);
  assert.equal(h.min, 0);
  assert.equal(h.max, 4_294_967_297);
  assert.equal(h.percentile(50), 1);
});

Deno.test("histogram: JSON round trip and add", () => {
  const h = new Histogram();
  for (let v = 0; v < 5000; v += 7) h.record(v * 13);
  const back = Histogram.fromJSON(JSON.parse(JSON.stringify(h)));
  for (const p of [0, 10, 50, 90, 99, 99.9, 100]) assert.equal(back.percentile(p), h.percentile(p));
  assert.equal(back.total, h.total);
  back.add(h);
  assert.equal(back.total, 2 * h.total);
  assert.equal(back.percentile(50), h.percentile(50));
  assert.throws(() => Histogram.fromJSON({ unit: "ms" }), TypeError);
  assert.throws(
    () => Histogram.fromJSON({ unit: "ns", total: 1, buckets: [[BUCKETS, 1]] }),
    TypeError,
  );
});

Deno.test("socket framing: frames hold exactly the bytes of ring entries", () => {
  const clock = (out: Uint32Array, at: number) => {
    out[at] = 0x89abcdef;
    out[at + 1] = 0x01234567;
  };
  const n = 20;
  const ring = createRingBuffer(32);
  new RingWriter(ring, { clock }).publishSimulated(n);
  const fromRing = new Uint32Array(n * ENTRY_WORDS);
  assert.equal(new RingReader(ring, 0).readBatch(fromRing, n), n);
  const frames = new Uint32Array(n * FRAME_WORDS);
  encodeFrames(frames, 0, n, clock);
  assert.deepEqual(frames, fromRing);
  // From a later seq too.
  encodeFrames(frames, 5, 1, clock);
  assert.deepEqual(frames.subarray(0, FRAME_WORDS), fromRing.subarray(5 * 16, 6 * 16));
});

Deno.test("socket framing: any cut of the stream gives back every frame in order", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 200 }),
      fc.array(fc.integer({ min: 1, max: 700 }), { minLength: 1, maxLength: 50 }),
      fc.integer({ min: 1, max: 9 }),
      (count, cuts, maxFrames) => {
        const frames = new Uint32Array(count * FRAME_WORDS);
        encodeFrames(frames, 1000, count, (out, at) => {
          out[at] = at;
          out[at + 1] = 0;
        });
        const stream = new Uint8Array(frames.buffer);
        const got: number[] = [];
        const a = new FrameAssembler(maxFrames);
        let at = 0;
        let k = 0;
        while (at < stream.length) {
          const len = Math.min(cuts[k++ % cuts.length]!, stream.length - at);
          a.push(stream.subarray(at, at + len), (f, n) => {
            assert.ok(n >= 1 && n <= maxFrames);
            for (let i = 0; i < n; i++) got.push(f[i * FRAME_WORDS]!);
          });
          at += len;
        }
        assert.equal(a.pending, 0);
        assert.deepEqual(got, Array.from({ length: count }, (_, i) => 1000 + i));
      },
    ),
  );
  const a = new FrameAssembler(2);
  a.push(new Uint8Array(FRAME_SIZE + 10), () => {});
  assert.equal(a.pending, 10);
  assert.throws(() => new FrameAssembler(0), RangeError);
});

Deno.test("bench: summary lines of every program parse", () => {
  assert.deepEqual(
    parseSummary(
      "writer",
      "writer: wrote 5000000 entries in 1.082 s (4622193 entries/s); write_ptr 5000000 on /x\n",
    ),
    { count: 5000000, seconds: 1.082, rate: 4622193 },
  );
  assert.equal(
    parseSummary("rpt_writer", "rpt_writer: wrote 10 entries in 0.001 s (10000 entries/s)")?.rate,
    10000,
  );
  assert.equal(
    parseSummary("rpt_reader", "rpt_reader: read 4 rows in 1.179 s (3556773 rows/s)")?.rate,
    3556773,
  );
  assert.equal(
    parseSummary(
      "socket_writer",
      "socket_writer: wrote 9 entries to 8 readers in 0.5 s (18 entries/s)",
    )?.rate,
    18,
  );
  assert.equal(
    parseSummary("socket_reporter", "socket_reporter: read 9 rows in 0.5 s (18 rows/s)")?.count,
    9,
  );
  const r = parseSummary(
    "reporter",
    "reporter 3: wrote 100 rows to out.csv in 2.000 s; lost 7; read_ptr 107 (SIGTERM)",
  );
  assert.equal(r?.lost, 7);
  assert.equal(r?.count, 100);
  assert.deepEqual(
    parseSummary(
      "fill_writer",
      "fill_writer: wrote 4096 entries of 1024 bytes in 0.002 s (2048000 entries/s)",
    ),
    { count: 4096, seconds: 0.002, rate: 2048000 },
  );
  assert.equal(parseSummary("writer", "nothing"), undefined);
  assert.equal(median([3, 1, 2]), 2);
  assert.equal(median([4, 1, 2, 3]), 2.5);
  assert.equal(pow2AtLeast(5_000_000), 1 << 23);
  assert.equal(pow2AtLeast(1 << 20), 1 << 20);
});

/** Reads `count` entries of a `blobSchema` ring; checks seq, the length word and the bytes. */
function checkBlobs(buffer: ArrayBuffer, count: number, value: Uint8Array): void {
  const r = new RingReader(buffer, 0);
  const dst = new Uint32Array(count * r.entryWords);
  assert.equal(r.readBatch(dst, count), count);
  const bytes = new Uint8Array(dst.buffer);
  const field = blobSchema(r.entrySize).fields[0]!;
  for (let k = 0; k < count; k++) {
    const at = k * r.entrySize;
    assert.equal(dst[k * r.entryWords], k, "seq");
    assert.ok(dst[k * r.entryWords + 2]! !== 0 || dst[k * r.entryWords + 3]! !== 0, "timestamp");
    const view = new DataView(dst.buffer, at + field.offset, 4);
    assert.equal(view.getUint32(0, true), value.length, `entry ${k}: length word`);
    assert.deepEqual(
      bytes.subarray(at + field.offset + 4, at + field.offset + 4 + value.length),
      value,
      `entry ${k}: bytes`,
    );
  }
}

Deno.test("bench: the large-entry writer (fill_writer.ts) publishes the user's buffer through the setters", () => {
  const ring = createRingBuffer(16, 1n, blobSchema(1024), 1024);
  const w = new RingWriter(ring);
  const value = new Uint8Array(1000).map((_, j) => (j * 7 + 31) & 0xff);
  fill(w, w.field("blob"), value, 12);
  assert.equal(w.position, 12);
  checkBlobs(ring, 12, value);
});

Deno.test("bench: the native C baseline (fill_writer.c) writes the same entries as fill_writer.ts", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "rpt_fill_" });
  const bin = `${dir}/fill_writer`;
  const root = new URL(".", ROOT).pathname;
  try {
    let cc: Deno.CommandOutput;
    try {
      cc = await new Deno.Command("cc", {
        args: [
          "-O2",
          "-std=c11",
          "-Wall",
          "-Werror",
          `-I${root}include`,
          `${root}bench/fill_writer.c`,
          "-o",
          bin,
          "-lrt",
        ],
        stdin: "null",
      }).output();
    } catch {
      console.log("skipped: no C compiler (cc)");
      return;
    }
    assert.equal(cc.code, 0, new TextDecoder().decode(cc.stderr));
    const name = uniqueName("fill");
    const schema = blobSchema(1024);
    using seg = Segment.create(name, { capacity: 16, entrySize: 1024, schema });
    try {
      const o = await new Deno.Command(bin, {
        args: [
          "--name",
          name,
          "--count",
          "8",
          "--warmup",
          "4",
          "--field-offset",
          `${schema.fields[0]!.offset}`,
          "--length",
          "1000",
        ],
        stdin: "null",
      }).output();
      const text = new TextDecoder().decode(o.stdout);
      assert.equal(o.code, 0, new TextDecoder().decode(o.stderr));
      assert.equal(parseSummary("fill_writer", text)?.count, 8);
      checkBlobs(seg.buffer, 12, new Uint8Array(1000).map((_, j) => (j * 7 + 31) & 0xff));
    } finally {
      unlinkQuietly(name);
    }
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("bench: deno task bench runs bench.ts with BENCH_FLAGS", () => {
  const config = JSON.parse(Deno.readTextFileSync(new URL("deno.json", ROOT)));
  assert.equal(config.tasks.bench, `deno run ${BENCH_FLAGS.join(" ")} bench/bench.ts`);
});

Deno.test("bench: a smoke run writes JSON with every section and cleans up", async () => {
  const resultsTmp = new URL("bench/results/tmp/", ROOT).pathname;
  Deno.mkdirSync(resultsTmp, { recursive: true });
  const outDir = Deno.makeTempDirSync({ dir: resultsTmp, prefix: "test_" });
  try {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "--quiet", ...BENCH_FLAGS, "bench/bench.ts", "--smoke", "--out-dir", outDir],
      cwd: new URL(".", ROOT).pathname,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const out = await child.output();
    const text = new TextDecoder().decode(out.stdout);
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr) + text);
    assert.match(text, /THROUGHPUT/);
    assert.match(text, /TARGET/);
    const r = JSON.parse(Deno.readTextFileSync(`${outDir}/latest.json`));
    for (
      const key of [
        "machine",
        "config",
        "writer",
        "reporter",
        "latency",
        "socket",
        "native",
        "probes",
      ]
    ) {
      assert.ok(r[key] !== undefined, `section ${key}`);
    }
    for (const key of ["cores", "cpuModel", "deno", "os", "date"]) {
      assert.ok(r.machine[key] !== undefined && r.machine[key] !== "", `machine.${key}`);
    }
    assert.deepEqual(r.writer.map((w: { reporters: number }) => w.reporters), [0, 1, 8]);
    for (const w of r.writer) assert.ok(w.entriesPerSec > 0);
    assert.ok(r.reporter.rowsPerSec > 0);
    for (const idle of IDLE_STRATEGIES) {
      const l = r.latency.filter((x: { idle: string }) => x.idle === idle);
      assert.ok(l.length >= 1, `latency --idle ${idle}`);
      assert.ok(l[0].count > 0 && l[0].p50 <= l[0].p99 && l[0].p99 <= l[0].max);
      assert.ok(l[0].idleCpuPercent === null || l[0].idleCpuPercent >= 0);
    }
    assert.deepEqual(r.socket.writer.map((w: { reporters: number }) => w.reporters), [1, 8]);
    assert.ok(r.socket.reporterRowsPerSec > 0);
    assert.ok(r.socket.latency.length >= 1);
    assert.equal(typeof r.native.available, "boolean");
    if (!r.native.available) assert.ok(r.native.reason);
    assert.equal(typeof r.nats.available, "boolean");
    if (!r.nats.available) assert.ok(r.nats.reason);
    else {
      assert.ok(r.nats.bridgeEntriesPerSec > 0 && r.nats.ceilingEntriesPerSec > 0);
      assert.ok(r.nats.followEntriesPerSec > 0 && r.nats.latency.p50 <= r.nats.latency.p99);
    }
    // Large entries: writer and drain at 1 KiB against native C, spin latency at 1 KiB and 64 KiB.
    assert.equal(r.large.entrySize, 1024);
    assert.equal(r.large.fields, "bytes[1000]");
    assert.ok(r.large.writerEntriesPerSec > 0 && r.large.drainRowsPerSec > 0);
    if (r.large.nativeWriterEntriesPerSec === null || r.large.nativeDrainRowsPerSec === null) {
      assert.ok(r.large.nativeReason, "a missing native figure says why");
    }
    assert.deepEqual(r.large.latency.map((l: { entrySize: number }) => l.entrySize), [1024, 65536]);
    for (const l of r.large.latency) {
      assert.equal(l.idle, "spin");
      assert.ok(l.count > 0 && l.p50 <= l.p99 && l.p99 <= l.max, `latency at ${l.entrySize}`);
    }
    assert.match(text, /writer, 1 KiB entries \(bytes\[1000\] via setBytes\)/);
    assert.match(text, /shm, --idle spin, 64 KiB entries/);
    assert.ok(r.consume.bare > 0 && r.consume.subscriber > 0, "the subscriber row");
    assert.ok(r.sqliteDrain.rowsPerSec > 0 && r.sqliteDrain.lost === 0, "the SQLite drain row");
    assert.match(text, /subscriber: for await \+ batch.number\(i, field\)/);
    assert.match(text, /reporter drain into SQLite/);
    const names = r.targets.map((t: { name: string }) => t.name).join("\n");
    assert.match(names, /subscriber iteration \(one numeric field\) vs a bare readBatch loop/);
    assert.match(names, /reporter drain into SQLite, default schema/);
    assert.match(names, /writer at 1 KiB entries .* vs native C writer, MB\/s/);
    assert.match(names, /drain at 1 KiB entries into CSV \(base64\) vs native C reader/);
    assert.ok(r.targets.length >= 8);
    for (const t of r.targets) assert.ok([true, false, null].includes(t.pass));
    const svg = Deno.readTextFileSync(`${outDir}/latest.svg`);
    assert.match(svg, /^<svg [^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    assert.match(svg, /<polyline /);
    // Nothing left behind: no segment of that bench process, no temporary run directory.
    // (Deno refuses to list /dev/shm without --allow-all: probe the names the bench uses.)
    for (let n = 0; n < 64; n++) {
      assert.equal(Segment.exists(`/rpt_b_${child.pid}_${n}`), false, `segment ${n} left behind`);
    }
    const tmp = /programs in (\S+)/.exec(new TextDecoder().decode(out.stderr))?.[1];
    assert.ok(tmp !== undefined, "the bench names its temporary directory");
    assert.throws(() => Deno.statSync(tmp), Deno.errors.NotFound);
  } finally {
    Deno.removeSync(outDir, { recursive: true });
  }
});
