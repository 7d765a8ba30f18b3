/**
 * A log-linear latency histogram in the style of HdrHistogram: values below 256 ns are counted
 * exactly, larger ones in 128 linear steps per power of two (at most 0.8% relative error), up to
 * 2^44 ns (about 4.9 hours; larger values are clamped there). The counts live in one
 * preallocated `Float64Array`, so recording allocates nothing: the reporter's `--latency` option
 * records every entry of every batch with it.
 *
 * @module
 */

/** Values below this are counted exactly (one bucket per nanosecond). */
const EXACT = 256;
/** Linear steps per power of two above {@link EXACT}. */
const STEPS = 128;
/** Largest power of two covered: values are clamped to `2^MAX_EXPONENT - 1`. */
const MAX_EXPONENT = 44;
/** Number of buckets. */
export const BUCKETS = EXACT + (MAX_EXPONENT - 8) * STEPS;
/** Largest value recorded as itself. */
export const MAX_VALUE = 2 ** MAX_EXPONENT - 1;
const TWO_32 = 4294967296;

/** Bucket index of a non-negative integer value (clamped to {@link MAX_VALUE}). */
export function bucketOf(value: number): number {
  if (value < EXACT) return value < 0 ? 0 : Math.floor(value);
  const v = value > MAX_VALUE ? MAX_VALUE : Math.floor(value);
  const e = v < TWO_32 ? 31 - Math.clz32(v) : 63 - Math.clz32(Math.floor(v / TWO_32));
  const m = Math.floor(v / 2 ** (e - 7)); // 128..255
  return EXACT + (e - 8) * STEPS + (m - STEPS);
}

/** Smallest value that falls in bucket `index`. */
export function bucketLow(index: number): number {
  if (index < EXACT) return index;
  const k = index - EXACT;
  const e = 8 + Math.floor(k / STEPS);
  return (STEPS + (k % STEPS)) * 2 ** (e - 7);
}

/** Width of bucket `index` (1 below 256). */
export function bucketWidth(index: number): number {
  if (index < EXACT) return 1;
  return 2 ** (Math.floor((index - EXACT) / STEPS) + 1);
}

/** The JSON form of a histogram: sparse `[bucket, count]` pairs plus exact summary values. */
export interface HistogramJson {
  unit: "ns";
  total: number;
  min: number;
  max: number;
  sum: number;
  /** Values below zero, counted as 0 (clock steps between processes). */
  negative: number;
  buckets: [number, number][];
}

/**
 * A latency histogram in nanoseconds.
 *
 * @example
 * ```ts
 * import { Histogram } from "./histogram.ts";
 * const h = new Histogram();
 * for (let v = 1; v <= 100; v++) h.record(v);
 * console.assert(h.percentile(50) === 50);
 * ```
 */
export class Histogram {
  readonly counts: Float64Array = new Float64Array(BUCKETS);
  total = 0;
  min = Infinity;
  max = 0;
  sum = 0;
  negative = 0;

  /** Counts one value (ns). Allocates nothing. */
  record(value: number): void {
    if (value < 0) {
      this.negative++;
      value = 0;
    }
    this.counts[bucketOf(value)]!++;
    this.total++;
    this.sum += value;
    if (value < this.min) this.min = value;
    if (value > this.max) this.max = value;
  }

  /**
   * Records, for each of the `n` entries held contiguously in `entries` (`stride` words each: 16
   * for 64-byte entries), `now - timestamp_ns`, where `now` is the u64 held as (low, high) words in
   * `now[0..1]` and the entry's timestamp is its words 2 and 3. The difference is taken word by
   * word, so it is exact although both instants are above 2^53. Allocates nothing.
   */
  recordBatch(entries: Uint32Array, n: number, now: Uint32Array, stride = 16): void {
    const lo = now[0]!;
    const hi = now[1]!;
    for (let k = 0, w = 2; k < n; k++, w += stride) {
      this.record((hi - entries[w + 1]!) * TWO_32 + (lo - entries[w]!));
    }
  }

  /** Adds every count of `other`. */
  add(other: Histogram): void {
    for (let i = 0; i < BUCKETS; i++) this.counts[i]! += other.counts[i]!;
    this.total += other.total;
    this.sum += other.sum;
    this.negative += other.negative;
    if (other.total > 0) {
      this.min = Math.min(this.min, other.min);
      this.max = Math.max(this.max, other.max);
    }
  }

  /**
   * The value at percentile `p` (0 to 100): the highest value equivalent to the bucket holding
   * the `ceil(p/100 * total)`-th smallest value, clamped to the exact min and max. 0 when empty.
   */
  percentile(p: number): number {
    if (this.total === 0) return 0;
    if (p >= 100) return this.max;
    const rank = Math.max(1, Math.ceil((p / 100) * this.total));
    let seen = 0;
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.counts[i]!;
      if (seen >= rank) {
        const high = bucketLow(i) + bucketWidth(i) - 1;
        return Math.min(Math.max(high, this.min), this.max);
      }
    }
    return this.max;
  }

  /** Mean value, 0 when empty. */
  mean(): number {
    return this.total === 0 ? 0 : this.sum / this.total;
  }

  /** The sparse JSON form. */
  toJSON(): HistogramJson {
    const buckets: [number, number][] = [];
    for (let i = 0; i < BUCKETS; i++) {
      const c = this.counts[i]!;
      if (c !== 0) buckets.push([i, c]);
    }
    return {
      unit: "ns",
      total: this.total,
      min: this.total === 0 ? 0 : this.min,
      max: this.max,
      sum: this.sum,
      negative: this.negative,
      buckets,
    };
  }

  /** Rebuilds a histogram from its JSON form; throws a TypeError when it is not one. */
  static fromJSON(json: unknown): Histogram {
    const j = json as Partial<HistogramJson> | null;
    if (
      j === null || typeof j !== "object" || j.unit !== "ns" || !Array.isArray(j.buckets) ||
      typeof j.total !== "number"
    ) {
      throw new TypeError("Cannot read histogram as it is not a latency histogram JSON object");
    }
    const h = new Histogram();
    for (const pair of j.buckets) {
      const [i, c] = pair as [number, number];
      if (!Number.isInteger(i) || i < 0 || i >= BUCKETS || !(c >= 0)) {
        throw new TypeError(`Cannot read histogram as bucket ${JSON.stringify(pair)} is invalid`);
      }
      h.counts[i] = c;
    }
    h.total = j.total;
    h.min = j.total === 0 ? Infinity : j.min ?? 0;
    h.max = j.max ?? 0;
    h.sum = j.sum ?? 0;
    h.negative = j.negative ?? 0;
    return h;
  }
}
