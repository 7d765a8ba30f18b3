/**
 * Socket baseline, reporter side: connects to the socket writer's Unix domain socket and writes
 * every 64-byte frame it receives as a CSV row with the reporter's `formatRows`, until the writer
 * closes the connection. With `--latency FILE` it records, once per read, CLOCK_REALTIME minus
 * each received frame's timestamp, as the shared-memory reporter does. Prints
 * `socket_reporter: read N rows in S s (R rows/s)`, timed from the first byte to end of stream.
 *
 * Usage: deno run --allow-ffi --allow-net=unix:PATH --allow-read=. --allow-write=.
 * bench/socket_reporter.ts --path PATH --out FILE [--latency FILE] [--batch N]
 *
 * @module
 */
import { intFlag, parse, report, sleep, UsageError } from "../cli.ts";
import { CSV_HEADER, formatRows, MAX_ROW_BYTES } from "../csv.ts";
import { monotonicMs, realtimeWords } from "../ffi/posix.ts";
import { Histogram } from "../histogram.ts";
import { FrameAssembler } from "./socket_frame.ts";

/** Epoch written in the CSV rows of the socket baseline (there is no segment). */
export const SOCKET_EPOCH = 1;

/** Parsed socket reporter options. */
export interface SocketReporterOptions {
  path: string;
  out: string;
  latency: string | undefined;
  batch: number;
}

/** Parses the socket reporter's arguments; throws a UsageError naming a bad value. */
export function parseSocketReporterArgs(args: string[]): SocketReporterOptions {
  const { values } = parse(args, {
    path: { type: "string" },
    out: { type: "string" },
    latency: { type: "string" },
    batch: { type: "string" },
  });
  const path = values.path;
  if (typeof path !== "string" || !path.startsWith("/")) {
    throw new UsageError(
      `Cannot start socket_reporter as --path must be an absolute socket path: current value is ${
        JSON.stringify(path)
      }`,
    );
  }
  if (typeof values.out !== "string" || values.out === "") {
    throw new UsageError("Cannot start socket_reporter as --out FILE is missing");
  }
  return {
    path,
    out: values.out,
    latency: values.latency as string | undefined,
    batch: intFlag("socket_reporter", "batch", values.batch, 4096, 1, 65536),
  };
}

async function connect(path: string): Promise<Deno.UnixConn> {
  const deadline = monotonicMs() + 10_000;
  for (;;) {
    try {
      return await Deno.connect({ transport: "unix", path });
    } catch (e) {
      if (monotonicMs() > deadline) throw e;
      await sleep(10);
    }
  }
}

/** Runs the socket reporter; resolves to the exit status. */
export async function main(args: string[]): Promise<number> {
  let o: SocketReporterOptions;
  try {
    o = parseSocketReporterArgs(args);
  } catch (e) {
    return report("socket_reporter", e);
  }
  try {
    using file = Deno.openSync(o.out, { write: true, create: true, truncate: true });
    const writeAll = (bytes: Uint8Array) => {
      let done = 0;
      while (done < bytes.length) done += file.writeSync(bytes.subarray(done));
    };
    writeAll(new TextEncoder().encode(CSV_HEADER + "\n"));
    const epochTail = new TextEncoder().encode(`,${SOCKET_EPOCH}\n`);
    const text = new Uint8Array(o.batch * (MAX_ROW_BYTES + epochTail.length));
    const latency = o.latency === undefined ? undefined : new Histogram();
    const clock = new Uint32Array(2);
    let rows = 0;
    const sink = (frames: Uint32Array, n: number) => {
      latency?.recordBatch(frames, n, clock);
      writeAll(text.subarray(0, formatRows(frames, n, text, 0, epochTail)));
      rows += n;
    };
    const assembler = new FrameAssembler(o.batch);
    const buf = new Uint8Array(256 * 1024);
    const conn = await connect(o.path);
    let t0 = 0;
    try {
      for (;;) {
        const n = await conn.read(buf);
        if (n === null) break;
        realtimeWords(clock);
        if (t0 === 0) t0 = monotonicMs();
        assembler.push(buf.subarray(0, n), sink);
      }
    } finally {
      conn.close();
    }
    const seconds = t0 === 0 ? 0 : (monotonicMs() - t0) / 1000;
    if (assembler.pending !== 0) {
      console.error(`socket_reporter: ${assembler.pending} bytes of a partial frame at the end`);
    }
    console.log(
      `socket_reporter: read ${rows} rows in ${seconds.toFixed(3)} s (${
        Math.round(rows / Math.max(seconds, 1e-9))
      } rows/s)`,
    );
    if (latency !== undefined && o.latency !== undefined) {
      Deno.writeTextFileSync(o.latency, JSON.stringify(latency));
    }
    return 0;
  } catch (e) {
    return report("socket_reporter", e);
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
