/**
 * Framing of the socket baseline: each entry travels as one 64-byte frame with exactly the bytes
 * of a ring entry (seq, timestamp_ns, symbol, price_e4, quantity, side, zero padding), so the
 * reporter on the other end formats it with the same `formatRows` as the shared-memory reporter.
 * A stream socket cuts the byte stream anywhere: {@link FrameAssembler} puts frames back
 * together across reads.
 *
 * @module
 */
import { priceFor, quantityFor, SYMBOLS } from "../layout.ts";

/** Bytes per frame: one entry. */
export const FRAME_SIZE = 64;
/** Words per frame. */
export const FRAME_WORDS = FRAME_SIZE / 4;
const TWO_32 = 4294967296;

const SYMBOL_WORDS = (() => {
  const out = new Uint32Array(SYMBOLS.length * 2);
  const bytes = new Uint8Array(out.buffer);
  SYMBOLS.forEach((s, i) => bytes.set(new TextEncoder().encode(s), i * 8));
  return out;
})();

/** Reads CLOCK_REALTIME ns into `out[at]` (low word) and `out[at + 1]` (high word). */
export type FrameClock = (out: Uint32Array, at: number) => unknown;

/**
 * Encodes `count` frames of the simulated engine, seq `first` onwards, into `dst` from frame 0,
 * each stamped with `clock` as it is written (as the ring writer does). Allocates nothing.
 *
 * @example
 * ```ts
 * import { encodeFrames, FRAME_WORDS } from "./socket_frame.ts";
 * const dst = new Uint32Array(2 * FRAME_WORDS);
 * encodeFrames(dst, 7, 2, (out, at) => { out[at] = 1; out[at + 1] = 0; });
 * console.assert(dst[FRAME_WORDS] === 8);
 * ```
 */
export function encodeFrames(
  dst: Uint32Array,
  first: number,
  count: number,
  clock: FrameClock,
): void {
  for (let k = 0, w = 0; k < count; k++, w += FRAME_WORDS) {
    const i = first + k;
    const lo = i >>> 0;
    dst[w] = lo;
    dst[w + 1] = (i - lo) / TWO_32;
    clock(dst, w + 2);
    const s = (i % 8) * 2;
    dst[w + 4] = SYMBOL_WORDS[s]!;
    dst[w + 5] = SYMBOL_WORDS[s + 1]!;
    dst[w + 6] = priceFor(i);
    dst[w + 7] = 0;
    dst[w + 8] = quantityFor(i);
    dst[w + 9] = i % 2 === 0 ? 0x42 : 0x53;
    for (let j = 10; j < FRAME_WORDS; j++) dst[w + j] = 0;
  }
}

/** Receives whole frames: `frames` holds `count` of them from word 0 (valid during the call). */
export type FrameSink = (frames: Uint32Array, count: number) => void;

/**
 * Reassembles 64-byte frames from arbitrary chunks of a byte stream. Holds at most
 * `maxFrames` frames; a partial frame is kept for the next chunk.
 *
 * @example
 * ```ts
 * import { FrameAssembler } from "./socket_frame.ts";
 * const a = new FrameAssembler(4);
 * let got = 0;
 * a.push(new Uint8Array(100), (_f, n) => (got += n));
 * a.push(new Uint8Array(28), (_f, n) => (got += n));
 * console.assert(got === 2 && a.pending === 0);
 * ```
 */
export class FrameAssembler {
  #bytes: Uint8Array;
  #words: Uint32Array;
  #fill = 0;

  constructor(maxFrames: number) {
    if (!Number.isInteger(maxFrames) || maxFrames < 1) {
      throw new RangeError(
        `Cannot make a frame assembler as maxFrames must be a positive integer: current value is ${maxFrames}`,
      );
    }
    this.#words = new Uint32Array(maxFrames * FRAME_WORDS);
    this.#bytes = new Uint8Array(this.#words.buffer);
  }

  /** Bytes of an incomplete frame held back. */
  get pending(): number {
    return this.#fill;
  }

  /**
   * Appends `chunk`; calls `sink` with the whole frames it completes (possibly several times for
   * a chunk larger than the buffer). Returns the number of frames delivered.
   */
  push(chunk: Uint8Array, sink: FrameSink): number {
    const bytes = this.#bytes;
    let at = 0;
    let delivered = 0;
    while (at < chunk.length) {
      const take = Math.min(chunk.length - at, bytes.length - this.#fill);
      bytes.set(chunk.subarray(at, at + take), this.#fill);
      this.#fill += take;
      at += take;
      const frames = (this.#fill / FRAME_SIZE) | 0;
      if (frames > 0) {
        sink(this.#words, frames);
        delivered += frames;
        const used = frames * FRAME_SIZE;
        bytes.copyWithin(0, used, this.#fill);
        this.#fill -= used;
      }
    }
    return delivered;
  }
}
