/**
 * Bench-only: the library's RingWriter publishing large entries from a user's buffer through the
 * allocation-free setters (`claimRecord()`, `setBytes(slot, field, buf)`, `commit()`), into an
 * existing segment made by the bench. Twin of `bench/fill_writer.c`: writes `--warmup` entries
 * untimed (JIT, page faults), then times `--count` entries and prints
 *
 *   fill_writer: wrote N entries of E bytes in S s (R entries/s)
 *
 * `deno run --allow-ffi bench/fill_writer.ts --name /x --count N --field F --length L [--warmup W]`
 *
 * @module
 */
import { intFlag, parse } from "../cli.ts";
import { monotonicMs } from "../ffi/posix.ts";
import type { Field } from "../schema.ts";
import { RingWriter } from "../ring.ts";
import { Segment } from "../segment.ts";

/** Publishes `n` entries whose `field` holds `buf`. Allocates nothing per entry. */
export function fill(w: RingWriter, field: Field, buf: Uint8Array, n: number): void {
  for (let i = 0; i < n; i++) {
    const slot = w.claimRecord();
    w.setBytes(slot, field, buf);
    w.commit();
  }
}

/** Runs the fill; resolves to the exit status. */
export function main(args: string[]): number {
  const { values } = parse(args, {
    name: { type: "string" },
    count: { type: "string" },
    warmup: { type: "string" },
    field: { type: "string" },
    length: { type: "string" },
  });
  const int = (flag: string) => intFlag("fill_writer", flag, values[flag], 0, 0, 2 ** 52);
  const count = int("count");
  const warmup = int("warmup");
  const length = int("length");
  const seg = Segment.open(String(values.name));
  try {
    const w = new RingWriter(seg.buffer);
    const field = w.field(String(values.field));
    const buf = new Uint8Array(length);
    for (let j = 0; j < length; j++) buf[j] = (j * 7 + 31) & 0xff;
    fill(w, field, buf, warmup);
    const t0 = monotonicMs();
    fill(w, field, buf, count);
    const seconds = (monotonicMs() - t0) / 1000;
    console.log(
      `fill_writer: wrote ${count} entries of ${w.entrySize} bytes in ${seconds.toFixed(3)} s (${
        Math.round(count / Math.max(seconds, 1e-9))
      } entries/s)`,
    );
    return 0;
  } finally {
    seg.close();
  }
}

if (import.meta.main) Deno.exit(main(Deno.args));
