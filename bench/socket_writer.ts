/**
 * Socket baseline, writer side: listens on a Unix domain socket, waits for `--readers N`
 * connections, then fans every entry out to each of them as a 64-byte frame (the bytes of a ring
 * entry), paced like `writer.ts` (`--rate 0` = as fast as the sockets take them). Prints
 * `socket_writer: wrote N entries to K readers in S s (R entries/s)`.
 *
 * Usage: deno run --allow-ffi --allow-net=unix:PATH --allow-read=PATH --allow-write=PATH
 * bench/socket_writer.ts --path PATH --readers N --count C [--rate R] [--batch B]
 *
 * @module
 */
import { intFlag, parse, report, UsageError } from "../cli.ts";
import { Pacer } from "../idle.ts";
import { monotonicMs, realtimeWords } from "../ffi/posix.ts";
import { encodeFrames, FRAME_SIZE, FRAME_WORDS } from "./socket_frame.ts";

/** Parsed socket writer options. */
export interface SocketWriterOptions {
  path: string;
  readers: number;
  count: number;
  rate: number;
  batch: number;
}

/** Parses the socket writer's arguments; throws a UsageError naming a bad value. */
export function parseSocketWriterArgs(args: string[]): SocketWriterOptions {
  const { values } = parse(args, {
    path: { type: "string" },
    readers: { type: "string" },
    count: { type: "string" },
    rate: { type: "string" },
    batch: { type: "string" },
  });
  const path = values.path;
  if (typeof path !== "string" || !path.startsWith("/")) {
    throw new UsageError(
      `Cannot start socket_writer as --path must be an absolute socket path: current value is ${
        JSON.stringify(path)
      }`,
    );
  }
  return {
    path,
    readers: intFlag("socket_writer", "readers", values.readers, 1, 1, 64),
    count: intFlag("socket_writer", "count", values.count, 1_000_000, 1, 2 ** 52 - 1),
    rate: intFlag("socket_writer", "rate", values.rate, 0, 0, 1_000_000_000),
    batch: intFlag("socket_writer", "batch", values.batch, 4096, 1, 65536),
  };
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes.length) done += await conn.write(bytes.subarray(done));
}

/** Runs the socket writer; resolves to the exit status. */
export async function main(args: string[]): Promise<number> {
  let o: SocketWriterOptions;
  try {
    o = parseSocketWriterArgs(args);
  } catch (e) {
    return report("socket_writer", e);
  }
  let listener: Deno.UnixListener | undefined;
  const conns: Deno.Conn[] = [];
  try {
    listener = Deno.listen({ transport: "unix", path: o.path });
    while (conns.length < o.readers) conns.push(await listener.accept());
    const frames = new Uint32Array(o.batch * FRAME_WORDS);
    const bytes = new Uint8Array(frames.buffer);
    const t0 = monotonicMs();
    let written = 0;
    // Paced exactly like writer.ts, so latencies compare like for like.
    const pacer = o.rate === 0 ? undefined : new Pacer(o.rate);
    while (written < o.count) {
      let due = pacer === undefined ? o.batch : pacer.due(written);
      due = Math.min(due, o.count - written);
      while (due > 0) {
        const n = Math.min(due, o.batch);
        encodeFrames(frames, written, n, realtimeWords);
        const chunk = bytes.subarray(0, n * FRAME_SIZE);
        if (conns.length === 1) await writeAll(conns[0]!, chunk);
        else await Promise.all(conns.map((c) => writeAll(c, chunk)));
        written += n;
        due -= n;
      }
      if (pacer !== undefined && written < o.count) await pacer.wait(written);
    }
    const seconds = (monotonicMs() - t0) / 1000;
    console.log(
      `socket_writer: wrote ${written} entries to ${o.readers} readers in ${
        seconds.toFixed(3)
      } s (${Math.round(written / Math.max(seconds, 1e-9))} entries/s)`,
    );
    return 0;
  } catch (e) {
    return report("socket_writer", e);
  } finally {
    for (const c of conns) {
      try {
        c.close();
      } catch { /* already closed by the peer */ }
    }
    listener?.close();
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
