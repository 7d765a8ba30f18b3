/**
 * Bench-only: the subscriber's iteration against a bare `RingReader.readBatch` loop over the same
 * ring, in one process, each reading one numeric field (`price`) of every entry. Alternates the
 * two `--reps` times on a full ring of `--count` entries and prints one JSON line:
 *
 *   {"bare": [entries/s...], "subscriber": [entries/s...]}
 *
 * `deno run --allow-ffi bench/consume.ts --name /x --count N --reps R`
 *
 * @module
 */
import { intFlag, parse } from "../cli.ts";
import { monotonicMs } from "../ffi/posix.ts";
import { RingReader, RingWriter } from "../ring.ts";
import { Segment } from "../segment.ts";
import { type Batch, subscribe, type Subscription } from "../subscribe.ts";
import { PRICE_OFFSET } from "../layout.ts";

/** Reads `count` entries with a bare readBatch loop, summing each price; entries/s and the sum. */
function bare(reader: RingReader, entries: Uint32Array, count: number) {
  const stride = reader.entryWords;
  const priceWord = PRICE_OFFSET >>> 2;
  const batch = entries.length / stride;
  let sum = 0;
  let read = 0;
  const t0 = monotonicMs();
  while (read < count) {
    const n = reader.readBatch(entries, batch);
    for (let i = 0; i < n; i++) {
      const w = i * stride + priceWord;
      sum += (entries[w + 1]! | 0) * 4294967296 + entries[w]!;
    }
    read += n;
  }
  return { rate: count / ((monotonicMs() - t0) / 1000), sum: sum / 10_000 };
}

/** Reads batches until the subscription reaches `end`, summing `number(i, price)`. */
async function iterate(sub: Subscription, it: AsyncIterator<Batch>, end: number, count: number) {
  const price = sub.field("price");
  let sum = 0;
  const t0 = monotonicMs();
  while (sub.position < end) {
    const { value: batch } = await it.next();
    for (let i = 0; i < batch!.length; i++) sum += batch!.number(i, price);
  }
  return { rate: count / ((monotonicMs() - t0) / 1000), sum };
}

/** Runs the comparison; resolves to the exit status. */
export async function main(args: string[]): Promise<number> {
  const { values } = parse(args, {
    name: { type: "string" },
    count: { type: "string" },
    reps: { type: "string" },
  });
  const count = intFlag("consume", "count", values.count, 1 << 20, 1, 1 << 24);
  const reps = intFlag("consume", "reps", values.reps, 3, 1, 20);
  const name = String(values.name);
  // Each reader has its own mapping, as a separate process would; the first lap (untimed) warms
  // both, then every lap is read in steady state by one and then the other.
  using seg = Segment.create(name, { capacity: count });
  try {
    const writer = new RingWriter(seg.buffer);
    using own = Segment.open(name);
    const reader = new RingReader(own.buffer, 0, { position: 0 });
    const entries = new Uint32Array(4096 * reader.entryWords);
    await using sub = await subscribe(name, { reader: 1, from: "oldest", idle: "spin" });
    const it = sub[Symbol.asyncIterator]();
    const out = { bare: [] as number[], subscriber: [] as number[] };
    for (let r = 0; r <= reps; r++) {
      writer.publishSimulated(count);
      const a = bare(reader, entries, count);
      const b = await iterate(sub, it, (r + 1) * count, count);
      if (Math.abs(a.sum - b.sum) > 1e-6 * Math.abs(a.sum)) {
        throw new Error(`Cannot compare as the sums differ: ${a.sum} and ${b.sum}`);
      }
      if (r === 0) continue;
      out.bare.push(Math.round(a.rate));
      out.subscriber.push(Math.round(b.rate));
    }
    console.log(JSON.stringify(out));
    return 0;
  } finally {
    Segment.unlink(name);
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
