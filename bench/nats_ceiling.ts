/**
 * The ceiling for the bridge in `deno task bench`: the same NATS client publishing the same bytes
 * (messages of `--batch` 64-byte entries with the bridge's headers, `--inflight` awaiting their
 * acknowledgement, the last-msg-id chain) from a tight loop, with no ring.
 *
 * `deno run --allow-net=127.0.0.1 bench/nats_ceiling.ts URL --subject S --count N --batch B
 * --inflight F [--create]` prints `nats_ceiling: published N entries in T s (R entries/s)`.
 *
 * @module
 */
import { connect, headers } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, type PubAck, StorageType } from "@nats-io/jetstream";
import { intFlag, parse } from "../cli.ts";
import {
  STREAM_COUNT_HEADER,
  STREAM_EPOCH_HEADER,
  STREAM_FIRST_HEADER,
  STREAM_KIND_ENTRIES,
  STREAM_KIND_HEADER,
  streamMsgId,
} from "../layout.ts";
import { parseNatsUrl } from "../nats.ts";

/** Runs the ceiling; resolves to the exit status. */
export async function main(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, {
    subject: { type: "string" },
    count: { type: "string" },
    batch: { type: "string" },
    inflight: { type: "string" },
    create: { type: "boolean" },
  }, true);
  const target = parseNatsUrl(positionals[0] ?? "", "nats_ceiling");
  const subject = values.subject as string;
  const count = intFlag("nats_ceiling", "count", values.count, 1_000_000, 1, 2 ** 40);
  const batch = intFlag("nats_ceiling", "batch", values.batch, 4096, 1, 16_000);
  const inflight = intFlag("nats_ceiling", "inflight", values.inflight, 4, 1, 64);
  const nc = await connect({ servers: `${target.host}:${target.port}` });
  const js = jetstream(nc);
  if (values.create) {
    // Made before timing, as the bridge finds (or makes) its stream before it reads.
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: target.stream, subjects: [subject], storage: StorageType.File });
  }
  const epoch = 1n;
  const entries = new Uint8Array(batch * 64);
  const queue: Promise<PubAck>[] = [];
  let lastSeq = 0;
  let lastId: string | undefined;
  const t0 = performance.now();
  for (let first = 0; first < count; first += batch) {
    const n = Math.min(batch, count - first);
    // A fresh copy per message, as the bridge makes one from the ring.
    const data = entries.slice(0, n * 64);
    const id = streamMsgId(epoch, first);
    const h = headers();
    h.set(STREAM_KIND_HEADER, STREAM_KIND_ENTRIES);
    h.set(STREAM_EPOCH_HEADER, `${epoch}`);
    h.set(STREAM_FIRST_HEADER, `${first}`);
    h.set(STREAM_COUNT_HEADER, `${n}`);
    const expect = lastId === undefined
      ? { lastSubjectSequence: lastSeq }
      : { lastSubjectSequence: lastSeq, lastMsgID: lastId };
    queue.push(js.publish(subject, data, { msgID: id, headers: h, expect, timeout: 5000 }));
    if (lastId === undefined) {
      const ack = await queue.shift()!;
      lastSeq = ack.seq;
    } else {
      lastSeq++;
    }
    lastId = id;
    if (queue.length >= inflight) await queue.shift()!;
  }
  await Promise.all(queue);
  const seconds = (performance.now() - t0) / 1000;
  await nc.close();
  console.log(
    `nats_ceiling: published ${count} entries in ${seconds.toFixed(3)} s (${
      Math.round(count / seconds)
    } entries/s)`,
  );
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
