/**
 * Ring logic on a plain ArrayBuffer: wraparound, lapping, busy and stale slots, 64-bit counters
 * across the 2^32 boundary, and read_ptr commits; at 64-byte entries (byte for byte as before
 * entry sizes existed) and at 4 KiB and 64 KiB, where a torn copy is far more likely. No processes;
 * the race tests share memory with a writer thread.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { isDeepStrictEqual } from "node:util";
import { waitFor } from "./_helpers.ts";
import {
  BUSY_BIT_HI,
  decodeEntry,
  encodeEntry,
  type Entry,
  MAX_ENTRY_SIZE,
  READ_PTRS_OFFSET,
  READER_LOST_OFFSET,
  ringShapeProblem,
  SegmentInvalidError,
  segmentSize,
  simulatedEntry,
  slotOffset,
  WRITE_PTR_OFFSET,
} from "../layout.ts";
import {
  createRingBuffer,
  DEFAULT_ORDERING,
  ENTRY_WORDS,
  initRing,
  loadU64,
  type MemoryOrdering,
  ringBytes,
  RingReader,
  RingWriter,
  storeU64,
  storeU64Monotonic,
  type WordClock,
} from "../ring.ts";
import { DEFAULT_SCHEMA, defineSchema } from "../schema.ts";
import { buildSegments, FIXTURES } from "./fixtures/segments_v1.ts";

const TWO_32 = 2 ** 32;

/** Every ordering this CPU accepts: both on x86-64, so the aarch64 path is tested there too. */
const ORDERINGS: readonly MemoryOrdering[] = Deno.build.arch === "x86_64"
  ? ["tso", "atomic"]
  : ["atomic"];

/** Registers `fn` once per ordering in {@link ORDERINGS}, as `ring [<ordering>]: <name>`. */
function ringTest(name: string, fn: (ordering: MemoryOrdering) => void): void {
  for (const ordering of ORDERINGS) Deno.test(`ring [${ordering}]: ${name}`, () => fn(ordering));
}

/** A clock that always reads `ns`. */
function fixedClock(ns: number): WordClock {
  return (out, at) => {
    out[at] = ns >>> 0;
    out[at + 1] = Math.floor(ns / TWO_32);
  };
}

/** Reads everything available in batches of `batch`, returning the decoded entries. */
function drain(reader: RingReader, batch = 64): { entries: Entry[] } {
  const entries: Entry[] = [];
  const dst = new Uint32Array(batch * ENTRY_WORDS);
  const view = new DataView(dst.buffer);
  for (;;) {
    const n = reader.readBatch(dst, batch);
    for (let k = 0; k < n; k++) entries.push(decodeEntry(view, k * 64));
    if (reader.available() === 0) break;
  }
  return { entries };
}

/** A reader whose losses are collected. */
function reader(buffer: ArrayBuffer, ordering: MemoryOrdering, id = 0, position?: number) {
  const losses: [number, number][] = [];
  const r = new RingReader(buffer, id, {
    ordering,
    onLoss: (from, to) => losses.push([from, to]),
    ...(position === undefined ? {} : { position }),
  });
  return { r, losses };
}

/** Asserts `entries` are exactly `from..to-1` with the simulated payload. */
function assertRun(entries: Entry[], from: number, to: number): void {
  assert.deepEqual(
    entries.map((e) => e.seq),
    Array.from({ length: to - from }, (_, i) => from + i),
  );
  for (const e of entries) {
    const { timestampNs: _, ...payload } = e;
    assert.deepEqual(payload, simulatedEntry(e.seq), `payload of ${e.seq}`);
  }
}

/**
 * How a test fills entries of one size and recognises a whole one: the simulated engine in
 * 64-byte entries, or at any size a pattern where every payload word is the entry's seq, so that a
 * copy mixing two entries (a torn copy, or two laps of one slot) shows.
 */
interface Feed {
  /** Shown in test names. */
  label: string;
  /** Bytes per entry of the ring. */
  entrySize: number;
  /** Publishes `count` entries. */
  publish(w: RingWriter, count: number): void;
  /** Why the payload copied at word `at` of `dst` is not entry `seq`'s, or undefined. */
  payloadFlaw(dst: Uint32Array, at: number, seq: number): string | undefined;
}

/** The simulated engine's entries (publishSimulated), 64 bytes. */
const SIMULATED_64: Feed = {
  label: "64 B simulated",
  entrySize: 64,
  publish: (w, count) => w.publishSimulated(count),
  payloadFlaw(dst, at, seq) {
    const view = new DataView(dst.buffer, dst.byteOffset + at * 4, 64);
    const { timestampNs: _, ...payload } = decodeEntry(view, 0);
    const zeros = dst.subarray(at + 10, at + 16).every((w) => w === 0) &&
      view.getUint8(0x25) === 0 && view.getUint16(0x26, true) === 0;
    if (isDeepStrictEqual(payload, simulatedEntry(seq)) && zeros) return undefined;
    return `payload ${JSON.stringify(payload)}, reserved zero: ${zeros}`;
  },
};

/** Entries of `entrySize` bytes whose every payload word is the low word of their seq. */
function patternFeed(entrySize: number): Feed {
  const payload = new Uint32Array((entrySize - 16) / 4);
  const bytes = new Uint8Array(payload.buffer);
  return {
    label: `${entrySize / 1024} KiB pattern`,
    entrySize,
    publish(w, count) {
      for (let k = 0; k < count; k++) {
        payload.fill(w.position >>> 0);
        w.publish(bytes);
      }
    },
    payloadFlaw(dst, at, seq) {
      const end = at + entrySize / 4;
      for (let k = at + 4; k < end; k++) {
        if (dst[k] !== seq >>> 0) return `payload word ${k - at - 4} is ${dst[k]}`;
      }
      return undefined;
    },
  };
}

/** The sizes the lapping tests run at: 64 bytes as before, and 4 KiB. */
const LAP_FEEDS: readonly Feed[] = [SIMULATED_64, patternFeed(4096)];

/** The seq of the entry copied at word `at` of `dst`. */
function seqAt(dst: Uint32Array, at: number): number {
  return dst[at]! + dst[at + 1]! * TWO_32;
}

/** Why the copy at word `at` of `dst` is not entry `seq` whole (seq and payload), or undefined. */
function flawOf(feed: Feed, dst: Uint32Array, at: number, seq: number): string | undefined {
  if (seqAt(dst, at) !== seq) return `seq is ${seqAt(dst, at)}`;
  return feed.payloadFlaw(dst, at, seq);
}

/** Reads everything available in batches of `batch`, checking each entry whole; returns the seqs. */
function readAll(r: RingReader, feed: Feed, batch = 4): number[] {
  const seqs: number[] = [];
  const dst = new Uint32Array(batch * r.entryWords);
  while (r.available() > 0) {
    const n = r.readBatch(dst, batch);
    for (let k = 0; k < n; k++) {
      const at = k * r.entryWords;
      const seq = seqAt(dst, at);
      assert.equal(flawOf(feed, dst, at, seq), undefined, `entry ${seq} is torn`);
      seqs.push(seq);
    }
  }
  return seqs;
}

/** The integers from..to-1. */
function range(from: number, to: number): number[] {
  return Array.from({ length: to - from }, (_, i) => from + i);
}

ringTest("a reader sees every entry in order across many wraparounds", (ordering) => {
  const buffer = createRingBuffer(8);
  const w = new RingWriter(buffer, { ordering, clock: fixedClock(1) });
  const { r, losses } = reader(buffer, ordering);
  const seen: Entry[] = [];
  for (let round = 0; round < 20; round++) {
    w.publishSimulated(1 + (round % 8)); // 1..8 entries: never more than one lap ahead
    seen.push(...drain(r, 3).entries);
  }
  const total = w.position;
  assert.ok(total > 8 * 5, "wrapped several times");
  assertRun(seen, 0, total);
  assert.deepEqual(losses, []);
  assert.equal(r.lost, 0);
});

ringTest("a full lap unread is still readable; readBatch honours max and dst size", (ordering) => {
  const buffer = createRingBuffer(8);
  const w = new RingWriter(buffer, { ordering });
  w.publishSimulated(5);
  const { r, losses } = reader(buffer, ordering);
  assertRun(drain(r).entries, 0, 5);
  w.publishSimulated(8); // exactly one lap ahead of the reader at 5
  const dst = new Uint32Array(3 * ENTRY_WORDS);
  assert.equal(r.readBatch(dst, 100), 3, "limited by dst");
  assert.equal(r.position, 8);
  assert.equal(r.readBatch(new Uint32Array(64 * ENTRY_WORDS), 2), 2, "limited by max");
  assert.equal(r.position, 10);
  assertRun(drain(r).entries, 10, 13);
  assert.deepEqual(losses, []);
});

for (const feed of LAP_FEEDS) {
  ringTest(
    `${feed.label}: a lapped reader reports the exact lost range and returns only current entries`,
    (ordering) => {
      const buffer = createRingBuffer(8, 1n, DEFAULT_SCHEMA, feed.entrySize);
      const w = new RingWriter(buffer, { ordering });
      const { r, losses } = reader(buffer, ordering, 2);
      feed.publish(w, 3);
      assert.deepEqual(readAll(r, feed), range(0, 3));
      r.commit();
      feed.publish(w, 13); // write_ptr 16: entries 3..7 are overwritten
      assert.deepEqual(readAll(r, feed), range(8, 16));
      assert.deepEqual(losses, [[3, 8]], "one range, [from, to)");
      assert.equal(r.lost, 5);
      r.commit();
      const view = new DataView(buffer);
      assert.equal(view.getBigUint64(READ_PTRS_OFFSET + 2 * 8, true), 16n);
      assert.equal(view.getBigUint64(READER_LOST_OFFSET + 2 * 8, true), 5n, "lost counter stored");
      assert.equal(view.getBigUint64(READER_LOST_OFFSET, true), 0n, "other readers untouched");
      // Lapped by exactly one entry, then by many laps at once: each loss is exactly what the
      // writer overwrote, and every row returned is whole.
      feed.publish(w, 9); // write_ptr 25: entry 16 is overwritten
      assert.deepEqual(readAll(r, feed, 3), range(17, 25));
      feed.publish(w, 8 * 5 + 2); // write_ptr 67: 25..58 are overwritten
      assert.deepEqual(readAll(r, feed, 5), range(59, 67));
      assert.deepEqual(losses, [[3, 8], [16, 17], [25, 59]]);
      assert.equal(r.lost, 5 + 1 + 34);
    },
  );

  ringTest(
    `${feed.label}: any write/read interleaving loses exactly the overwritten entries`,
    (ordering) => {
      // Property: whatever the writer's bursts and the reader's batch sizes, each readBatch skips
      // exactly the entries older than one lap behind write_ptr (one range, reported once) and
      // returns the next current ones, whole, in order; returned + lost = everything.
      fc.assert(
        fc.property(
          fc.constantFrom(1, 2, 4, 8, 16),
          fc.array(fc.tuple(fc.integer({ min: 0, max: 40 }), fc.integer({ min: 1, max: 20 })), {
            minLength: 1,
            maxLength: 30,
          }),
          (capacity, steps) => {
            const buffer = createRingBuffer(capacity, 1n, DEFAULT_SCHEMA, feed.entrySize);
            const w = new RingWriter(buffer, { ordering, clock: fixedClock(9) });
            const { r, losses } = reader(buffer, ordering);
            const got: number[] = [];
            const overwritten: [number, number][] = [];
            const dst = new Uint32Array(20 * r.entryWords);
            const step = (burst: number, batch: number) => {
              feed.publish(w, burst);
              let first = r.position;
              if (w.position - first > capacity) {
                overwritten.push([first, w.position - capacity]);
                first = w.position - capacity;
              }
              const n = r.readBatch(dst, batch);
              assert.equal(n, Math.min(w.position - first, batch, 20), "a full batch or all");
              for (let k = 0; k < n; k++) {
                const at = k * r.entryWords;
                assert.equal(flawOf(feed, dst, at, first + k), undefined, `entry ${first + k}`);
                assert.ok(seqAt(dst, at) >= w.position - capacity, "never a stale entry");
                got.push(seqAt(dst, at));
              }
              assert.equal(r.position, first + n);
            };
            for (const [burst, batch] of steps) step(burst, batch);
            while (r.available() > 0) step(0, 20);
            assert.deepEqual(losses, overwritten, "the loss ranges are what the writer overwrote");
            const lost = new Set<number>();
            for (const [from, to] of losses) {
              assert.ok(from < to, "non-empty range");
              for (let i = from; i < to; i++) {
                assert.ok(!lost.has(i), `${i} reported lost twice`);
                lost.add(i);
              }
            }
            for (let k = 1; k < got.length; k++) assert.ok(got[k]! > got[k - 1]!);
            for (const s of got) assert.ok(!lost.has(s), `${s} both read and lost`);
            assert.equal(got.length + lost.size, w.position);
            assert.equal(r.lost, lost.size);
          },
        ),
        { numRuns: feed.entrySize === 64 ? 300 : 40 },
      );
    },
  );
}

ringTest("a slot left busy by a writer killed mid-entry is never returned as valid", (ordering) => {
  const buffer = createRingBuffer(8);
  const w = new RingWriter(buffer, { ordering });
  w.publishSimulated(8);
  const { r, losses } = reader(buffer, ordering);
  // The writer starts entry 8 in slot 0 and dies before committing: bit 63 stays set.
  w.claim();
  const words = new Uint32Array(buffer);
  const seqWord = slotOffset(0, 8) >>> 2;
  assert.equal((words[seqWord + 1]! & BUSY_BIT_HI) >>> 0, BUSY_BIT_HI, "busy bit set");
  assert.equal(loadU64(words, WRITE_PTR_OFFSET), 8, "write_ptr not advanced");
  const { entries } = drain(r);
  assertRun(entries, 1, 8);
  assert.deepEqual(losses, [[0, 1]], "the slot being rewritten is lost, not returned");
});

ringTest("a published slot whose seq has the busy bit or a stale index is skipped", (ordering) => {
  const buffer = createRingBuffer(8);
  const w = new RingWriter(buffer, { ordering });
  w.publishSimulated(6);
  const words = new Uint32Array(buffer);
  // Entry 2: busy bit set over the right index (a writer mid-rewrite).
  words[(slotOffset(2, 8) >>> 2) + 1]! |= BUSY_BIT_HI;
  // Entry 4: holds an index from another lap (12 instead of 4).
  words[slotOffset(4, 8) >>> 2] = 12;
  const { r, losses } = reader(buffer, ordering);
  const { entries } = drain(r);
  assert.deepEqual(entries.map((e) => e.seq), [0, 1, 3, 5]);
  assert.deepEqual(losses, [[2, 3], [4, 5]]);
  assert.equal(r.position, 6);
});

ringTest("a never-written slot (seq all ones) is never returned", (ordering) => {
  const buffer = createRingBuffer(4);
  const words = new Uint32Array(buffer);
  storeU64(words, WRITE_PTR_OFFSET, 2); // write_ptr claims 2 entries that were never written
  const { r, losses } = reader(buffer, ordering);
  assert.equal(r.readBatch(new Uint32Array(4 * ENTRY_WORDS), 4), 0);
  assert.deepEqual(losses, [[0, 2]]);
});

Deno.test("ring: u64 load/store are exact across the 2^32 boundary", () => {
  const words = new Uint32Array(4);
  for (const v of [0, 1, TWO_32 - 1, TWO_32, TWO_32 + 1, 2 ** 40 + 5, 2 ** 52 - 1, 2 ** 53 - 1]) {
    storeU64(words, 8, v);
    assert.equal(loadU64(words, 8), v);
    assert.equal(words[2], v >>> 0, "low word first (little-endian)");
    assert.equal(words[3], Math.floor(v / TWO_32));
  }
  storeU64(words, 0, TWO_32 - 1);
  let hi = storeU64Monotonic(words, 0, TWO_32 - 1, 0);
  assert.equal(hi, 0);
  hi = storeU64Monotonic(words, 0, TWO_32, hi);
  assert.equal(hi, 1);
  assert.deepEqual([words[0], words[1]], [0, 1]);
  assert.equal(loadU64(words, 0), TWO_32);
  hi = storeU64Monotonic(words, 0, TWO_32 + 7, hi);
  assert.deepEqual([words[0], words[1], hi], [7, 1, 1]);
});

ringTest("writer and reader cross index 2^32 with exact seqs and pointers", (ordering) => {
  const buffer = createRingBuffer(8);
  const words = new Uint32Array(buffer);
  const start = TWO_32 - 3;
  storeU64(words, WRITE_PTR_OFFSET, start);
  storeU64(words, READ_PTRS_OFFSET + 5 * 8, start);
  const w = new RingWriter(buffer, { ordering });
  assert.equal(w.position, start);
  assert.equal(w.publishSimulated(6), TWO_32 + 3);
  assert.equal(loadU64(words, WRITE_PTR_OFFSET), TWO_32 + 3);
  assert.deepEqual([words[0], words[1]], [3, 1]);
  const view = new DataView(buffer);
  assert.equal(view.getBigUint64(slotOffset(TWO_32, 8), true), 1n << 32n);
  const { r, losses } = reader(buffer, ordering, 5);
  assert.equal(r.position, start);
  assertRun(drain(r, 4).entries, start, TWO_32 + 3);
  assert.deepEqual(losses, []);
  r.commit();
  assert.equal(view.getBigUint64(READ_PTRS_OFFSET + 5 * 8, true), BigInt(TWO_32 + 3));
  // A lap across the boundary reports the exact range.
  w.publishSimulated(20);
  assertRun(drain(r).entries, TWO_32 + 15, TWO_32 + 23);
  assert.deepEqual(losses, [[TWO_32 + 3, TWO_32 + 15]]);
});

ringTest("commit stores read_ptr only when called, and only for its own id", (ordering) => {
  const buffer = createRingBuffer(16);
  const w = new RingWriter(buffer, { ordering });
  w.publishSimulated(10);
  const view = new DataView(buffer);
  const ptr = (id: number) => view.getBigUint64(READ_PTRS_OFFSET + id * 8, true);
  const { r } = reader(buffer, ordering, 3);
  assert.equal(r.readBatch(new Uint32Array(4 * ENTRY_WORDS), 4), 4);
  assert.equal(ptr(3), 0n, "reading alone does not move read_ptr");
  r.commit();
  assert.equal(ptr(3), 4n);
  drain(r);
  r.commit();
  assert.equal(ptr(3), 10n);
  for (const id of [0, 1, 2, 4, 5, 6, 7]) assert.equal(ptr(id), 0n, `read_ptrs[${id}]`);
  // A new reader of the same id resumes from the stored read_ptr.
  w.publishSimulated(2);
  assertRun(drain(reader(buffer, ordering, 3).r).entries, 10, 12);
  // commitPosition moves both cursor and read_ptr.
  r.commitPosition(11);
  assert.equal(ptr(3), 11n);
  assert.equal(r.position, 11);
  assert.throws(() => r.commitPosition(13), /position must be 0..write_ptr: current value is 13/);
});

Deno.test("ring: a reader id outside 0..7 or an invalid buffer is refused", () => {
  const buffer = createRingBuffer(8);
  assert.throws(() => new RingReader(buffer, 8), /reader id must be 0..7: current value is 8/);
  assert.throws(() => new RingReader(buffer, -1), RangeError);
  assert.throws(() => new RingReader(new ArrayBuffer(1024), 0), SegmentInvalidError);
  assert.throws(() => new RingWriter(new ArrayBuffer(1024)), SegmentInvalidError);
  assert.throws(() => createRingBuffer(12), /power of two.*current value is 12/);
  assert.throws(() => createRingBuffer(8, 0n), /epoch must be non-zero/);
});

ringTest("publish copies a raw payload to 0x10 and zeroes the rest of the slot", (ordering) => {
  const buffer = createRingBuffer(4);
  const w = new RingWriter(buffer, { ordering, clock: fixedClock(TWO_32 + 9) });
  const payload = new Uint8Array([1, 2, 3]);
  new Uint8Array(buffer, slotOffset(0, 4), 64).fill(0xee);
  assert.equal(w.publish(payload), 0);
  const slot = new Uint8Array(buffer, slotOffset(0, 4), 64);
  const view = new DataView(buffer, slotOffset(0, 4));
  assert.equal(view.getBigUint64(0, true), 0n);
  assert.equal(view.getBigUint64(8, true), BigInt(TWO_32 + 9));
  assert.deepEqual([...slot.subarray(16, 19)], [1, 2, 3]);
  assert.ok(slot.subarray(19).every((b) => b === 0));
  assert.throws(
    () => w.publish(new Uint8Array(49)),
    /at most 48 bytes \(entry size 64\): current length is 49/,
  );
});

Deno.test("ring: the default ordering is tso on x86_64 and atomic elsewhere; tso only on x86_64", () => {
  const x86 = Deno.build.arch === "x86_64";
  assert.equal(DEFAULT_ORDERING, x86 ? "tso" : "atomic");
  const buffer = createRingBuffer(8);
  assert.equal(new RingWriter(buffer).ordering, DEFAULT_ORDERING);
  assert.equal(new RingReader(buffer, 0).ordering, DEFAULT_ORDERING);
  assert.equal(new RingWriter(buffer, { ordering: "atomic" }).ordering, "atomic");
  assert.equal(new RingReader(buffer, 0, { ordering: "atomic" }).ordering, "atomic");
  if (x86) {
    assert.equal(new RingWriter(buffer, { ordering: "tso" }).ordering, "tso");
    assert.equal(new RingReader(buffer, 0, { ordering: "tso" }).ordering, "tso");
  } else {
    const refused = new RegExp(
      `"tso" as it is correct on x86_64 only: current CPU is ${Deno.build.arch}`,
    );
    assert.throws(() => new RingWriter(buffer, { ordering: "tso" }), refused);
    assert.throws(() => new RingReader(buffer, 0, { ordering: "tso" }), refused);
  }
  const bad = { ordering: "relaxed" as MemoryOrdering };
  assert.throws(() => new RingWriter(buffer, bad), /"tso" or "atomic": current value is relaxed/);
  assert.throws(
    () => new RingReader(buffer, 0, bad),
    /"tso" or "atomic": current value is relaxed/,
  );
});

ringTest("every slot the writer leaves holds exactly the bytes encodeEntry gives", (ordering) => {
  // The two orderings have separate publish loops: both must write layout v1 byte for byte.
  const capacity = 8;
  const buffer = createRingBuffer(capacity);
  let ns = TWO_32 - 2; // the timestamp crosses 2^32 too
  const w = new RingWriter(buffer, {
    ordering,
    clock: (out, at) => {
      ns++;
      out[at] = ns >>> 0;
      out[at + 1] = Math.floor(ns / TWO_32);
    },
  });
  const expected = new DataView(new ArrayBuffer(64));
  const slot = (seq: number) => new Uint8Array(buffer, slotOffset(seq, capacity), 64);
  for (const burst of [3, 8, 13]) {
    const first = w.position;
    w.publishSimulated(burst);
    for (let seq = Math.max(first, w.position - capacity); seq < w.position; seq++) {
      const timestampNs = BigInt(TWO_32 - 2 + seq + 1);
      encodeEntry(expected, 0, { ...simulatedEntry(seq), timestampNs });
      assert.deepEqual(slot(seq), new Uint8Array(expected.buffer), `slot of ${seq}`);
    }
  }
  // publish(): a raw payload, padded with zeros, over a slot full of an older entry.
  const seq = w.publish(new TextEncoder().encode("RAW-PAYLOAD"));
  const raw = new Uint8Array(64);
  new DataView(raw.buffer).setBigUint64(0, BigInt(seq), true);
  new DataView(raw.buffer).setBigUint64(8, BigInt(ns), true);
  raw.set(new TextEncoder().encode("RAW-PAYLOAD"), 16);
  assert.deepEqual(slot(seq), raw);
});

Deno.test("ring: a 64-byte segment is byte for byte what the code before entry sizes wrote", async () => {
  // tests/fixtures/segments_v1.ts builds a ring of the default schema and one of a custom
  // version-1 schema (its last field ends at 0x40): simulated entries over more than a lap,
  // publishRecord, the typed setters, a raw publish, readers that commit, are lapped and beat, all
  // with a fixed fake clock, so every byte (header words, schema block, slots) is deterministic.
  // The fixtures are that script's output under the code before entry sizes (commit e967f4a):
  // see the script for the command. Here the same script runs on the current code, both orderings.
  const built = await buildSegments(new URL("../", import.meta.url));
  for (const [name, file] of Object.entries(FIXTURES)) {
    const pinned = Deno.readFileSync(new URL(`./fixtures/${file}`, import.meta.url));
    const bytes = built[name as keyof typeof FIXTURES];
    assert.equal(bytes.length, pinned.length, `${name}: length`);
    const at = bytes.findIndex((b, i) => b !== pinned[i]);
    assert.equal(at, -1, `${name}: byte 0x${at.toString(16)} is ${bytes[at]}, was ${pinned[at]}`);
    const view = new DataView(pinned.buffer);
    assert.equal(view.getUint32(0x54, true), 64, `${name}: entry_size`);
    assert.equal(view.getBigUint64(WRITE_PTR_OFFSET, true), 37n, `${name}: entries published`);
    assert.equal(
      view.getBigUint64(READER_LOST_OFFSET + 3 * 8, true),
      12n,
      `${name}: reader 3 lost`,
    );
  }
  const custom = new DataView(
    Deno.readFileSync(new URL("./fixtures/" + FIXTURES.custom, import.meta.url)).buffer,
  );
  assert.equal(custom.getUint16(0x180 + 4, true), 1, "the custom schema's block is version 1");
});

Deno.test("ring: an entry size that is not a power of two from 64 to 65,536 is a RangeError naming it", () => {
  for (const size of [0, 1, 32, 63, 65, 96, 100, 1000, 65_535, 131_072, 2 ** 20, -64, 1.5, NaN]) {
    const problem = `entry size must be a power of two from 64 to 65536: current value is ${size}`;
    const refused = { name: "RangeError", message: `Cannot create ring as ${problem}` };
    assert.equal(ringShapeProblem(8, size), problem);
    assert.throws(() => ringBytes(8, DEFAULT_SCHEMA, size), refused);
    assert.throws(() => createRingBuffer(8, 1n, DEFAULT_SCHEMA, size), refused);
    const buffer = new ArrayBuffer(segmentSize(8));
    assert.throws(() => initRing(buffer, 8, 1n, DEFAULT_SCHEMA, size), refused);
    assert.ok(new Uint8Array(buffer).every((b) => b === 0), "initRing wrote nothing");
  }
  for (let size = 64; size <= MAX_ENTRY_SIZE; size *= 2) {
    assert.equal(ringShapeProblem(8, size), undefined, `${size}`);
    assert.equal(ringBytes(8, DEFAULT_SCHEMA, size), 0x180 + 8 * size);
    const r = new RingReader(createRingBuffer(8, 1n, DEFAULT_SCHEMA, size), 0);
    assert.deepEqual([r.entrySize, r.entryWords], [size, size / 4]);
  }
});

Deno.test("ring: capacity x entry size over 2^30 is a RangeError naming both", () => {
  const over: [number, number][] = [[2 ** 15, 65_536], [2 ** 24, 128], [2 ** 21, 1024]];
  for (const [capacity, size] of over) {
    const problem =
      `capacity x entry size must be at most 2^30 bytes (1 GiB): current values are capacity ${capacity} and entry size ${size} (${
        capacity * size
      } bytes)`;
    assert.equal(ringShapeProblem(capacity, size), problem);
    assert.throws(() => ringBytes(capacity, DEFAULT_SCHEMA, size), {
      name: "RangeError",
      message: `Cannot create ring as ${problem}`,
    });
  }
  // Exactly 2^30 is accepted (sized, not allocated here).
  assert.equal(ringBytes(2 ** 14, DEFAULT_SCHEMA, 65_536), 0x180 + 2 ** 30);
  assert.equal(ringBytes(2 ** 24, DEFAULT_SCHEMA, 64), 0x180 + 2 ** 30);
  assert.equal(
    ringShapeProblem(12, 64),
    "capacity must be a power of two from 1 to 16777216: current value is 12",
  );
});

ringTest(
  "a bytes value longer than N is a RangeError naming the field, N and the length",
  (ordering) => {
    const schema = defineSchema([{ name: "id", type: "u32" }, { name: "blob", type: "bytes[40]" }]);
    assert.equal(schema.end, 64, "the blob ends at the entry's end");
    const buffer = createRingBuffer(8, 1n, schema);
    const w = new RingWriter(buffer, { ordering, clock: fixedClock(5) });
    w.publishRecord({ id: 1, blob: new Uint8Array(40).fill(9) });
    const refused = {
      name: "RangeError",
      message:
        "Cannot publish as field blob must be at most 40 bytes (bytes[40]): current length is 41",
    };
    // publishRecord checks every value before it claims the slot: the ring is unchanged.
    const before = new Uint8Array(buffer).slice();
    assert.throws(() => w.publishRecord({ id: 2, blob: new Uint8Array(41) }), refused);
    assert.deepEqual(new Uint8Array(buffer), before, "publishRecord left the ring as it was");
    assert.equal(w.position, 1);
    // setBytes: the slot stays claimed (busy, write_ptr not moved) until a valid value is committed.
    const [id, blob] = [w.field("id"), w.field("blob")];
    const slot = w.claimRecord();
    assert.throws(() => w.setBytes(slot, blob, new Uint8Array(41)), refused);
    assert.throws(() => w.setBytes(slot, blob, new Uint8Array(65_536)), /current length is 65536$/);
    const words = new Uint32Array(buffer);
    assert.equal(words[(slot >>> 2) + 1]! & BUSY_BIT_HI, BUSY_BIT_HI >> 0, "the slot is busy");
    assert.equal(loadU64(words, WRITE_PTR_OFFSET), 1, "write_ptr not advanced");
    assert.throws(() => w.setBytes(slot, id, Uint8Array.of(1)), /field id is u32, not bytes\[N\]/);
    assert.throws(
      () => w.setNumber(slot, blob, 1),
      /field blob must be a Uint8Array \(bytes\[40\]\): current value is 1/,
    );
    w.setBytes(slot, blob, Uint8Array.of(7, 8, 9));
    w.setNumber(slot, id, 2);
    assert.equal(w.commit(), 1);
    const { r } = reader(buffer, ordering);
    const dst = new Uint32Array(2 * r.entryWords);
    assert.equal(r.readBatch(dst, 2), 2);
    const entry = new Uint8Array(dst.buffer, 64, 64);
    assert.deepEqual([...entry.subarray(16, 27)], [2, 0, 0, 0, 3, 0, 0, 0, 7, 8, 9]);
    assert.ok(entry.subarray(27).every((b) => b === 0), "the rest of the value is zero");
  },
);

Deno.test("ring [atomic]: the writer's clock never writes into the ring itself", () => {
  // With the atomic ordering the timestamp reaches the slot through Atomics.store, never as the
  // plain stores a clock makes: the clock is handed a scratch array, not the ring's memory.
  const buffer = createRingBuffer(8);
  const targets = new Set<ArrayBufferLike>();
  const clock: WordClock = (out, at) => {
    targets.add(out.buffer);
    out[at] = 7;
    out[at + 1] = 0;
  };
  const w = new RingWriter(buffer, { ordering: "atomic", clock });
  w.publishSimulated(10);
  w.publish(new Uint8Array([1]));
  w.claim();
  w.commit();
  assert.equal(w.position, 12);
  assert.ok(!targets.has(buffer), "the clock wrote into the ring");
  assert.equal(new DataView(buffer).getBigUint64(slotOffset(11, 8) + 8, true), 7n);
});

/**
 * A worker that publishes entries into the shared ring `buffer` until the reader raises the stop
 * word, staying about one lap ahead of reader 0's committed `read_ptr`: so the slots the reader
 * copies are being rewritten while it copies them. Simulated entries, or with `pattern` entries
 * whose every payload word is their seq (as {@link patternFeed}'s). Its clock stamps entry i with
 * i (so a reader can check the timestamp too). Posts its final position.
 */
const WRITER_WORKER = `
import { loadU64, RingWriter } from ${JSON.stringify(new URL("../ring.ts", import.meta.url).href)};
self.onmessage = ({ data: { buffer, stop, ordering, pattern } }) => {
  let n = 0;
  const clock = (out, at) => { out[at] = n++; out[at + 1] = 0; };
  const w = new RingWriter(buffer, { ordering, clock });
  const words = new Uint32Array(buffer);
  const flag = new Int32Array(stop);
  const payload = new Uint32Array((w.entrySize - 16) / 4);
  const bytes = new Uint8Array(payload.buffer);
  while (Atomics.load(flag, 0) === 0) {
    if (w.position - loadU64(words, ${READ_PTRS_OFFSET}) < w.capacity + 4) {
      const burst = 1 + (w.position % 5);
      if (!pattern) w.publishSimulated(burst);
      else {
        for (let k = 0; k < burst; k++) {
          payload.fill(w.position >>> 0);
          w.publish(bytes);
        }
      }
    }
  }
  self.postMessage(w.position);
};
`;

/** How long each race test reads while the writer thread laps it (ms). */
const RACE_MS = 1000;

/**
 * Starts {@link WRITER_WORKER} on the ring in `shared`. `stop()` raises the stop word and resolves
 * with the writer's final position; disposing terminates the worker.
 */
function writerThread(shared: SharedArrayBuffer, ordering: MemoryOrdering, pattern: boolean) {
  const stop = new SharedArrayBuffer(4);
  const url = URL.createObjectURL(new Blob([WRITER_WORKER], { type: "text/javascript" }));
  const worker = new Worker(url, { type: "module" });
  const done = new Promise<number>((resolve, reject) => {
    worker.onmessage = (e) => resolve(e.data);
    worker.onerror = (e) => {
      e.preventDefault();
      reject(new Error(`writer worker failed: ${e.message}`));
    };
  });
  worker.postMessage({ buffer: shared, stop, ordering, pattern });
  return {
    stop(): Promise<number> {
      Atomics.store(new Int32Array(stop), 0, 1);
      return done;
    },
    [Symbol.dispose](): void {
      worker.terminate();
      URL.revokeObjectURL(url);
    },
  };
}

/** Why the entry copied at word `at` of `dst` is not whole and after `last`, or undefined. */
function raceFlaw(feed: Feed, dst: Uint32Array, at: number, last: number): string | undefined {
  const seq = seqAt(dst, at);
  if (dst[at + 1]! >= BUSY_BIT_HI) return "its seq has the busy bit";
  if (seq <= last) return `out of order after ${last}`;
  if (dst[at + 2] !== seq || dst[at + 3] !== 0) return `timestamp ${dst[at + 2]}`;
  return flawOf(feed, dst, at, seq);
}

for (const ordering of ORDERINGS) {
  for (const feed of [SIMULATED_64, patternFeed(4096), patternFeed(MAX_ENTRY_SIZE)]) {
    Deno.test(`ring [${ordering}, ${feed.label}]: a reader racing a writer thread returns only whole entries`, async () => {
      // A real race on shared memory: a writer thread laps a small ring for as long as this
      // thread makes its reads (at most RACE_MS). Whatever the interleaving, every entry returned
      // is whole (seq, timestamp and payload agree), in order, losses are reported, and returned
      // + lost = published. The bigger the entry, the longer its copy and the likelier a torn one.
      const capacity = 16;
      const shared = new SharedArrayBuffer(segmentSize(capacity, 0x180, feed.entrySize));
      const buffer = initRing(
        shared as unknown as ArrayBuffer,
        capacity,
        1n,
        DEFAULT_SCHEMA,
        feed.entrySize,
      );
      const { r, losses } = reader(buffer, ordering);
      const dst = new Uint32Array(8 * r.entryWords);
      let got = 0;
      let last = -1;
      const check = (n: number) => {
        for (let k = 0; k < n; k++) {
          const flaw = raceFlaw(feed, dst, k * r.entryWords, last);
          if (flaw !== undefined) {
            assert.fail(`torn entry ${seqAt(dst, k * r.entryWords)}: ${flaw}`);
          }
          last = seqAt(dst, k * r.entryWords);
        }
        got += n;
      };
      using writer = writerThread(shared, ordering, feed !== SIMULATED_64);
      await waitFor("the writer thread to start", () => r.available() > 0);
      const deadline = performance.now() + RACE_MS;
      // Under emulation a 64 KiB writer publishes a few dozen entries a second and the reader
      // keeps up: until it has been lapped once, it falls behind now and then (at most 30 s).
      const lapped = () => losses.length > 0;
      const hard = performance.now() + 30_000;
      const minReads = feed === SIMULATED_64 ? 10_000 : 0; // as many as before at 64 bytes
      for (
        let i = 0;
        i < minReads || performance.now() < deadline || (!lapped() && performance.now() < hard);
        i++
      ) {
        if (i % 64 === 63 && !lapped()) {
          while (r.available() <= capacity && performance.now() < hard) {
            // Busy: the writer thread gets ahead by more than a lap.
          }
        }
        check(r.readBatch(dst, 1 + (i % 8)));
        r.commit();
      }
      const published = await writer.stop();
      while (r.position < published) check(r.readBatch(dst, 8));
      const lost = losses.reduce((sum, [from, to]) => sum + to - from, 0);
      assert.equal(got + lost, published, `returned ${got} + lost ${lost}`);
      assert.equal(r.lost, lost);
      assert.ok(got > 0 && lost > 0, `the writer lapped the reader: ${got} read, ${lost} lost`);
    });
  }
}
