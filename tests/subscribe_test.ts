/**
 * The subscriber API (`subscribe.ts`): every entry once with every field exact, where it starts
 * (`from`), the reader id held by its lock, losses and epochs between batches, commits, stopping,
 * a responsive event loop while it waits, and the exactly-once recipe across kill -9.
 */
import assert from "node:assert/strict";
import { READ_PTRS_OFFSET } from "../layout.ts";
import { programPath } from "../programs.ts";
import { RingWriter } from "../ring.ts";
import { defineSchema, type Schema } from "../schema.ts";
import { Segment } from "../segment.ts";
import { type Batch, type Loss, subscribe } from "../subscribe.ts";
import {
  delay,
  expectedField,
  positions,
  Proc,
  readU64,
  startReporter,
  tempDir,
  uniqueName,
  unlinkQuietly,
  waitFor,
} from "./_helpers.ts";

/** Every type, scales, and bytes: what the simulated writer fills with its special values. */
const ALL_TYPES = defineSchema([
  { name: "a_u8", type: "u8" },
  { name: "b_i8", type: "i8", scale: 1 },
  { name: "c_u16", type: "u16" },
  { name: "d_i16", type: "i16" },
  { name: "e_u32", type: "u32", scale: 3 },
  { name: "f_i32", type: "i32" },
  { name: "g_u64", type: "u64" },
  { name: "h_i64", type: "i64", scale: 9 },
  { name: "i_f32", type: "f32" },
  { name: "j_f64", type: "f64" },
  { name: "k_text", type: "char[12]" },
  { name: "l_blob", type: "bytes[40]" },
]);

/** A segment for one test, removed afterwards whatever happens. */
async function withSegment(
  tag: string,
  options: { capacity: number; entrySize?: number; schema?: Schema },
  fn: (seg: Segment, writer: RingWriter, name: string) => Promise<void>,
): Promise<void> {
  const name = uniqueName(tag);
  try {
    using seg = Segment.create(name, options);
    await fn(seg, new RingWriter(seg.buffer), name);
  } finally {
    unlinkQuietly(name);
  }
}

/** Iterates until `position` reaches `end`, collecting the seqs and losses seen. */
async function collect(
  sub: AsyncIterable<Batch> & { position: number },
  end: number,
  each: (batch: Batch, i: number) => void = () => {},
): Promise<{ seqs: number[]; losses: Loss[]; epochs: Set<bigint> }> {
  const seqs: number[] = [];
  const losses: Loss[] = [];
  const epochs = new Set<bigint>();
  for await (const batch of sub) {
    losses.push(...batch.losses);
    epochs.add(batch.epoch);
    for (let i = 0; i < batch.length; i++) {
      seqs.push(batch.seq(i));
      each(batch, i);
    }
    if (sub.position >= end) break;
  }
  return { seqs, losses, epochs };
}

const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i);

for (const entrySize of [64, 1024]) {
  Deno.test(`subscribe at ${entrySize}-byte entries: every entry once, every field's text equal to the reporter's CSV column`, async () => {
    const schema = entrySize === 64
      ? defineSchema(
        ALL_TYPES.fields.slice(0, 10).map((f) => ({
          name: f.name,
          type: f.type,
          ...(f.scale ? { scale: f.scale } : {}),
        })),
      )
      : ALL_TYPES;
    await withSegment("suball", { capacity: 4096, entrySize, schema }, async (seg, w, name) => {
      w.publishSimulatedSchema(3000);
      await using sub = await subscribe(name, { reader: 2, idle: "sleep" });
      assert.equal(sub.schema.fingerprint, seg.schema.fingerprint);
      const handles = schema.fields.map((f) => sub.field(f.name));
      let checked = 0;
      const { seqs } = await collect(sub, 3000, (batch, i) => {
        const seq = batch.seq(i);
        assert.equal(batch.epoch, seg.info.epoch);
        assert.ok(batch.timestampNs(i) > 0n);
        handles.forEach((h) => {
          assert.equal(batch.text(i, h), expectedField(h.field, seq), `${h.field.name} of ${seq}`);
          checked++;
        });
      });
      assert.deepEqual(seqs, range(0, 3000));
      assert.equal(checked, 3000 * schema.fields.length);
    });
  });
}

Deno.test("subscribe gives exact values: floats with NaN and -0, u64 beyond 2^53 as bigint, scaled units, bytes", async () => {
  const schema = defineSchema([
    { name: "big", type: "u64" },
    { name: "px", type: "i64", scale: 4 },
    { name: "x", type: "f64" },
    { name: "y", type: "f32" },
    { name: "blob", type: "bytes[8]" },
    { name: "venue", type: "char[4]" },
  ]);
  await withSegment("subexact", { capacity: 16, entrySize: 128, schema }, async (_seg, w, name) => {
    w.publishRecord({
      big: 2n ** 64n - 1n,
      px: -12345678n,
      x: NaN,
      y: -0,
      blob: new Uint8Array([1, 2, 3]),
      venue: "XNAS",
    });
    w.publishRecord({
      big: 2n ** 53n + 1n,
      px: 1.5,
      x: -0,
      y: 0.1,
      blob: new Uint8Array(0),
      venue: "",
    });
    await using sub = await subscribe(name, { reader: 0, idle: "sleep" });
    const [big, px, x, y, blob, venue] = ["big", "px", "x", "y", "blob", "venue"].map((n) =>
      sub.field(n)
    ) as [
      ReturnType<typeof sub.field>,
      ReturnType<typeof sub.field>,
      ReturnType<typeof sub.field>,
      ReturnType<typeof sub.field>,
      ReturnType<typeof sub.field>,
      ReturnType<typeof sub.field>,
    ];
    for await (const b of sub) {
      assert.equal(b.length, 2);
      assert.equal(b.bigint(0, big), 2n ** 64n - 1n);
      assert.equal(b.text(0, big), "18446744073709551615");
      assert.equal(b.bigint(1, big), 2n ** 53n + 1n);
      assert.equal(b.bigint(0, px), -12345678n);
      assert.equal(b.text(0, px), "-1234.5678");
      assert.equal(b.number(1, px), 1.5);
      assert.ok(Number.isNaN(b.number(0, x)));
      assert.ok(Object.is(b.number(1, x), -0));
      assert.ok(Object.is(b.number(0, y), -0));
      assert.equal(b.text(0, y), "-0");
      assert.equal(b.number(1, y), Math.fround(0.1));
      assert.deepEqual([...b.bytes(0, blob)], [1, 2, 3]);
      assert.equal(b.text(0, blob), "AQID");
      assert.equal(b.bytes(1, blob).length, 0);
      assert.equal(b.get(0, "venue"), "XNAS");
      assert.equal(b.text(1, venue), "");
      assert.equal(b.get(0, "big"), 2n ** 64n - 1n);
      const r = b.record(0);
      assert.equal(r.seq, 0);
      assert.deepEqual(r.blob, new Uint8Array([1, 2, 3]));
      assert.throws(() => b.number(0, blob), /use text\(\) or bytes\(\)/);
      assert.throws(() => b.get(0, "nope"), /field nope as it is not in the schema/);
      break;
    }
  });
});

Deno.test("from: persisted, oldest, latest, and a seq the ring no longer holds (the gap reported as lost)", async () => {
  await withSegment("subfrom", { capacity: 64 }, async (_seg, w, name) => {
    w.publishSimulated(200); // the ring holds 136..199
    {
      await using sub = await subscribe(name, { reader: 1, from: "oldest", idle: "sleep" });
      const { seqs, losses } = await collect(sub, 200);
      assert.deepEqual(seqs, range(136, 200));
      assert.deepEqual(losses, []);
    }
    {
      await using sub = await subscribe(name, { reader: 2, from: 100, idle: "sleep" });
      const { seqs, losses } = await collect(sub, 200);
      assert.deepEqual(seqs, range(136, 200));
      assert.deepEqual(losses.map((l) => [l.from, l.to]), [[100, 136]]);
    }
    {
      // A late joiner: nothing before it is counted as lost.
      const lost: Loss[] = [];
      await using sub = await subscribe(name, {
        reader: 3,
        from: "latest",
        idle: "sleep",
        onLoss: (l) => lost.push(l),
      });
      w.publishSimulated(5);
      const { seqs, losses } = await collect(sub, 205);
      assert.deepEqual(seqs, range(200, 205));
      assert.deepEqual([...losses, ...lost], []);
      await sub.close();
      // The batch in hand when the loop broke was not done: read_ptr stops before it.
      assert.equal(readU64(name, READ_PTRS_OFFSET + 3 * 8), 200);
    }
    {
      // persisted: reader 3 stored 200 above, so that batch comes again.
      await using sub = await subscribe(name, { reader: 3, idle: "sleep" });
      w.publishSimulated(2);
      assert.deepEqual((await collect(sub, 207)).seqs, range(200, 207));
    }
    {
      // A seq beyond write_ptr is clamped to it.
      await using sub = await subscribe(name, { reader: 4, from: 10_000, idle: "sleep" });
      w.publishSimulated(1);
      const { seqs, losses } = await collect(sub, 208);
      assert.deepEqual([seqs, losses], [[207], []]);
    }
  });
});

Deno.test("the reader id is held by its lock: a reporter on it refuses a subscriber, naming its pid", async () => {
  const dir = await tempDir();
  const name = uniqueName("subheld");
  const reporter = startReporter(["4", "--name", name], dir);
  try {
    using _seg = Segment.create(name, { capacity: 64 });
    await waitFor("the reporter to attach", () => /reading /.test(reporter.stderr));
    await assert.rejects(
      subscribe(name, { reader: 4, idle: "sleep" }),
      new RegExp(`reader id 4 of segment ${name} is held by live pid ${reporter.child.pid}`),
    );
    await assert.rejects(
      subscribe(name, { reader: 9 }),
      /reader id must be 0..7: current value is 9/,
    );
    // Its own id is refused to a second subscriber of this process while the first holds it.
    await using first = await subscribe(name, { reader: 5, idle: "sleep" });
    await assert.rejects(subscribe(name, { reader: 5, idle: "sleep" }), /reader id 5 .* is held/);
    await first.close();
    await (await subscribe(name, { reader: 5, idle: "sleep" })).close();
  } finally {
    await reporter.close();
    unlinkQuietly(name);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("losses reach the consumer in order between batches: a lapped subscriber's losses are exactly the seqs it never got", async () => {
  await withSegment("sublap", { capacity: 16, entrySize: 4096 }, async (_seg, w, name) => {
    await using sub = await subscribe(name, { reader: 0, idle: "sleep", batch: 4 });
    w.publishSimulated(40);
    const seen: number[] = [];
    const lost: number[] = [];
    let last = -1;
    for await (const batch of sub) {
      for (const l of batch.losses) {
        assert.ok(l.from > last, `loss ${l.from} after seq ${last}`);
        lost.push(...range(l.from, l.to));
        last = l.to - 1;
      }
      for (let i = 0; i < batch.length; i++) {
        assert.ok(batch.seq(i) > last);
        last = batch.seq(i);
        seen.push(last);
      }
      // Lap it: the writer runs 40 entries ahead while the consumer holds this batch.
      if (w.position < 400) w.publishSimulated(40);
      else if (sub.position >= 400) break;
    }
    assert.ok(lost.length > 0, "the subscriber was lapped");
    assert.deepEqual([...seen, ...lost].sort((a, b) => a - b), range(0, 400));
  });
});

Deno.test("a re-created segment: batches carry the new epoch and no batch mixes two epochs", async () => {
  const name = uniqueName("subepoch");
  try {
    let seg = Segment.create(name, { capacity: 64 });
    new RingWriter(seg.buffer).publishSimulated(10);
    const first = seg.info.epoch;
    await using sub = await subscribe(name, { reader: 0, idle: "sleep" });
    const batches: { epoch: bigint; seqs: number[] }[] = [];
    let recreated = false;
    for await (const batch of sub) {
      batches.push({ epoch: batch.epoch, seqs: range(0, batch.length).map((i) => batch.seq(i)) });
      if (!recreated && batches.flatMap((b) => b.seqs).length === 10) {
        seg.close();
        Segment.unlink(name);
        seg = Segment.create(name, { capacity: 64 });
        new RingWriter(seg.buffer).publishSimulated(7);
        recreated = true;
      }
      if (batch.epoch !== first && sub.position === 7) break;
    }
    seg.close();
    assert.notEqual(sub.epoch, first);
    assert.deepEqual(
      batches.filter((b) => b.epoch === first).flatMap((b) => b.seqs),
      range(0, 10),
    );
    assert.deepEqual(batches.filter((b) => b.epoch !== first).flatMap((b) => b.seqs), range(0, 7));
  } finally {
    unlinkQuietly(name);
  }
});

Deno.test("autoCommit stores a batch's position when the next is asked for; a batch left by break is read again", async () => {
  await withSegment("subauto", { capacity: 64 }, async (_seg, w, name) => {
    w.publishSimulated(10);
    {
      await using sub = await subscribe(name, { reader: 6, idle: "sleep", batch: 4 });
      const it = sub[Symbol.asyncIterator]();
      assert.equal((await it.next()).value!.length, 4); // 0..3 held
      assert.equal((await it.next()).value!.length, 4); // 0..3 done, 4..7 held
      await waitFor("read_ptr to cover the first batch", () => positions(name)!.readPtrs[6] === 4);
      await it.return!(); // 4..7 were not done: not covered
    }
    assert.equal(positions(name)!.readPtrs[6], 4);
    {
      await using again = await subscribe(name, { reader: 6, idle: "sleep", batch: 4 });
      for await (const batch of again) {
        assert.equal(batch.seq(0), 4);
        again.commit(); // done with 4..7 before leaving the loop
        break;
      }
    }
    assert.equal(positions(name)!.readPtrs[6], 8);
    await using last = await subscribe(name, { reader: 6, idle: "sleep" });
    assert.deepEqual((await collect(last, 10)).seqs, range(8, 10));
  });
});

Deno.test("autoCommit false: read_ptr moves only when commit() says", async () => {
  await withSegment("submanual", { capacity: 64 }, async (_seg, w, name) => {
    w.publishSimulated(10);
    await using sub = await subscribe(name, {
      reader: 7,
      idle: "sleep",
      autoCommit: false,
      batch: 5,
    });
    const it = sub[Symbol.asyncIterator]();
    await it.next();
    await it.next();
    await delay(50);
    assert.equal(positions(name)!.readPtrs[7], 0, "nothing committed yet");
    sub.commit(); // everything delivered: 0..9
    w.publishSimulated(1); // wake the loop
    await it.next();
    await waitFor("read_ptr to follow commit()", () => positions(name)!.readPtrs[7] === 10);
  });
});

Deno.test("an AbortSignal ends the iteration; close is idempotent", async () => {
  await withSegment("subabort", { capacity: 64 }, async (_seg, _w, name) => {
    const controller = new AbortController();
    const sub = await subscribe(name, { reader: 0, signal: controller.signal });
    setTimeout(() => controller.abort(), 30);
    const t0 = performance.now();
    for await (const _ of sub) assert.fail("nothing was published");
    assert.ok(performance.now() - t0 < 5000);
    await sub.close();
    await sub.close();
  });
});

for (const idle of ["futex", "sleep", "backoff"] as const) {
  Deno.test(`while a subscriber waits with idle ${idle}, a 20 ms timer fires on time`, async () => {
    await withSegment(`subtimer${idle}`, { capacity: 64 }, async (_seg, w, name) => {
      await using sub = await subscribe(name, { reader: 1, idle });
      const lateness: number[] = [];
      const timers = (async () => {
        for (let k = 0; k < 10; k++) {
          const t0 = performance.now();
          await delay(20);
          lateness.push(performance.now() - t0 - 20);
        }
        w.publishSimulated(1);
      })();
      assert.deepEqual((await collect(sub, 1)).seqs, [0]);
      await timers;
      lateness.sort((a, b) => a - b);
      // The median timer is on time within a few ms (the futex wait is off the JS thread).
      assert.ok(lateness[5]! < 10, `timers late by ${lateness.map((l) => l.toFixed(1))} ms`);
    });
  });
}

Deno.test("the exactly-once recipe across kill -9: keep the next seq with the output, reopen from it", async () => {
  const dir = await tempDir();
  const name = uniqueName("subonce");
  const file = `${dir}/out.csv`;
  const procs: Proc[] = [];
  const spawn = () => {
    const p = new Proc(
      "subscriber",
      new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "--allow-ffi",
          "--allow-read",
          "--allow-write",
          programPath("tests/fixtures/exactly_once_subscriber.ts"),
          name,
          "2",
          file,
        ],
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn(),
    );
    procs.push(p);
    return p;
  };
  try {
    using seg = Segment.create(name, { capacity: 1 << 16 });
    const w = new RingWriter(seg.buffer);
    let current = spawn();
    let kills = 0;
    for (; kills < 15; kills++) {
      await waitFor("the subscriber to start", () => /from \d+/.test(current.stdout));
      w.publishSimulated(500 + Math.floor(Math.random() * 2000));
      await delay(Math.random() * 30);
      current.signal("SIGKILL"); // restarted at once; the killed one is not waited for
      current = spawn();
    }
    w.publishSimulated(100);
    const total = w.position;
    await waitFor("the last subscriber to write every entry", () => {
      try {
        return Deno.readTextFileSync(file).endsWith(
          `${total - 1},${1 + ((total - 1) % 1000) * 37 % 1000}\n`,
        );
      } catch {
        return false;
      }
    });
    const seqs = Deno.readTextFileSync(file).trimEnd().split("\n").map((l) =>
      Number(l.split(",")[0])
    );
    assert.deepEqual(seqs, range(0, total), "every seq exactly once, in order");
    console.log(`exactly once: ${total} entries across ${kills} kill -9 of the subscriber`);
  } finally {
    for (const p of procs) await p.close();
    unlinkQuietly(name);
    await Deno.remove(dir, { recursive: true });
  }
});
