/**
 * The NATS rows of `deno task bench`, side by side in one run against one local single-node
 * `nats-server` (file storage, every publish acknowledged):
 * - the bridge's sustained entries/s draining a full ring into a stream;
 * - the ceiling: the same client publishing the same bytes from a tight loop, no ring
 *   (`nats_ceiling.ts`);
 * - follow's entries/s from the stream into CSV;
 * - the latency from publication to follow holding the entry, p50 and p99;
 * - in full mode, a sweep of entries per message and publishes in flight (how the defaults were
 *   chosen).
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import { sleep } from "../cli.ts";
import { monotonicMs } from "../ffi/posix.ts";
import { Histogram } from "../histogram.ts";
import { DEFAULT_BRIDGE_BATCH, DEFAULT_INFLIGHT } from "../bridge.ts";
import { READ_PTRS_OFFSET, READER_HEARTBEATS_OFFSET } from "../layout.ts";
import {
  BRIDGE_FLAGS,
  findNatsServer,
  FOLLOW_FLAGS,
  spawnProgram,
  withNatsHosts,
} from "../programs.ts";
import { loadU64 } from "../ring.ts";
import type { Proc, ProcOutput, Resources } from "./procs.ts";
import { waitUntil } from "./procs.ts";

/** One bridge-vs-ceiling measurement. */
export interface NatsPoint {
  /** Entries per message. */
  batch: number;
  /** Publishes awaiting acknowledgement. */
  inflight: number;
  /** The bridge draining a full ring. */
  bridgeEntriesPerSec: number;
  /** The tight loop with the same client and bytes. */
  ceilingEntriesPerSec: number;
}

/** The NATS figures of a bench run. */
export interface NatsResult {
  /** False when `nats-server` is not installed (then `reason` says so). */
  available: boolean;
  reason?: string;
  /** Entries per measured run. */
  entries: number;
  /** The defaults of `deno task bridge`, measured below. */
  batch: number;
  inflight: number;
  bridgeEntriesPerSec: number;
  bridgeRuns: number[];
  ceilingEntriesPerSec: number;
  ceilingRuns: number[];
  followEntriesPerSec: number;
  /** Publication to follow holding the entry, in ns, at `rate` entries/s. */
  latency: { rate: number; entries: number; p50: number; p99: number } | null;
  /** Full mode: other batch sizes and in-flight counts. */
  sweep: NatsPoint[];
}

/** What the NATS bench needs from the bench run. */
export interface NatsBenchHost {
  readonly res: Resources;
  readonly tmp: string;

  segmentName(): string;
  writer(name: string, count: number, rate: number, capacity: number): Proc;
  drainRun(
    fill: (name: string, capacity: number) => Proc,
    drain: (name: string) => Proc,
    capacity: number,
  ): Promise<{ rowsPerSec: number; output: ProcOutput }>;
}

/** Sizes of the NATS bench per mode. */
export interface NatsConfig {
  entries: number;
  reps: number;
  latencyRate: number;
  latencySeconds: number;
  sweep: [number, number][];
}

const CEILING = fileURLToPath(new URL("./nats_ceiling.ts", import.meta.url));
const TIMEOUT_MS = 120_000;

async function freePort(): Promise<number> {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  await sleep(1);
  return port;
}

/** Runs the NATS rows; `step` reports progress. */
export async function natsBench(
  host: NatsBenchHost,
  cfg: NatsConfig,
  step: (what: string) => void,
): Promise<NatsResult> {
  const empty: NatsResult = {
    available: false,
    entries: cfg.entries,
    batch: DEFAULT_BRIDGE_BATCH,
    inflight: DEFAULT_INFLIGHT,
    bridgeEntriesPerSec: NaN,
    bridgeRuns: [],
    ceilingEntriesPerSec: NaN,
    ceilingRuns: [],
    followEntriesPerSec: NaN,
    latency: null,
    sweep: [],
  };
  const bin = await findNatsServer();
  if (bin === undefined) {
    return { ...empty, reason: "nats-server is not installed (apt-get install nats-server)" };
  }
  const port = await freePort();
  const hostPort = `127.0.0.1:${port}`;
  const server = host.res.track(
    "nats-server",
    new Deno.Command(bin, {
      args: ["-a", "127.0.0.1", "-p", String(port), "-js", "-sd", `${host.tmp}/nats`],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn(),
  );
  let streams = 0;
  const url = () => `nats://${hostPort}/B${streams++}`;
  const bridge = (name: string, u: string, batch: number, inflight: number) =>
    host.res.track(
      `bridge on ${name}`,
      spawnProgram(
        "bridge.ts",
        withNatsHosts(BRIDGE_FLAGS, hostPort),
        [
          "0",
          u,
          "--name",
          name,
          "--batch",
          String(batch),
          "--inflight",
          String(inflight),
          "--quiet",
        ],
        { cwd: host.tmp },
      ),
    );
  const follow = (u: string, name: string, out: string, latency?: string) =>
    host.res.track(
      `follow ${u}`,
      spawnProgram(
        "follow.ts",
        withNatsHosts(FOLLOW_FLAGS, hostPort),
        [u, "--name", name, "--out", out, "--quiet", ...(latency ? ["--latency", latency] : [])],
        { cwd: host.tmp },
      ),
    );
  try {
    const ready = monotonicMs() + 30_000;
    for (;;) {
      try {
        (await Deno.connect({ hostname: "127.0.0.1", port })).close();
        break;
      } catch {
        if (server.exited || monotonicMs() > ready) {
          throw new Error(`Cannot finish the bench as nats-server did not start on port ${port}`);
        }
        await sleep(20);
      }
    }

    /** The bridge draining a full ring of `cfg.entries`; returns entries/s, the URL and name. */
    const bridgeRun = async (batch: number, inflight: number) => {
      const u = url();
      let segment = "";
      const r = await host.drainRun(
        (name, capacity) => host.writer(name, capacity, 0, capacity),
        (name) => {
          segment = name;
          return bridge(name, u, batch, inflight);
        },
        cfg.entries,
      );
      return { rate: Math.round(r.rowsPerSec), url: u, segment };
    };
    const ceilingRun = async (batch: number, inflight: number) => {
      const u = url();
      const subject = `ceiling.${streams}`;
      const p = host.res.track(
        `nats_ceiling batch ${batch}`,
        new Deno.Command(Deno.execPath(), {
          args: [
            "run",
            "--quiet",
            `--allow-net=${hostPort}`,
            CEILING,
            u,
            "--subject",
            subject,
            "--count",
            String(cfg.entries),
            "--batch",
            String(batch),
            "--inflight",
            String(inflight),
            "--create",
          ],
          cwd: host.tmp,
          stdin: "null",
          stdout: "piped",
          stderr: "piped",
        }).spawn(),
      );
      const out = await p.wait(TIMEOUT_MS);
      const m = /\((\d+) entries\/s\)/.exec(out.stdout);
      if (out.code !== 0 || m === null) {
        throw new Error(`Cannot finish the bench as nats_ceiling failed: ${out.stderr.trim()}`);
      }
      return Number(m[1]);
    };

    const result: NatsResult = { ...empty, available: true, entries: cfg.entries };
    let lastBridge = { rate: 0, url: "", segment: "" };
    for (let i = 0; i < cfg.reps; i++) {
      step(`NATS: bridge drain, ${DEFAULT_BRIDGE_BATCH} entries/message, run ${i + 1}/${cfg.reps}`);
      lastBridge = await bridgeRun(DEFAULT_BRIDGE_BATCH, DEFAULT_INFLIGHT);
      result.bridgeRuns.push(lastBridge.rate);
      step(`NATS: ceiling, run ${i + 1}/${cfg.reps}`);
      result.ceilingRuns.push(await ceilingRun(DEFAULT_BRIDGE_BATCH, DEFAULT_INFLIGHT));
    }
    result.bridgeEntriesPerSec = median(result.bridgeRuns);
    result.ceilingEntriesPerSec = median(result.ceilingRuns);

    step("NATS: follow from the stream into CSV");
    result.followEntriesPerSec = await followRun(
      follow(lastBridge.url, lastBridge.segment, "follow_bench.csv"),
      `${host.tmp}/follow_bench.csv`,
      cfg.entries,
    );

    step(`NATS: latency publication -> follow at ${cfg.latencyRate}/s`);
    result.latency = await latencyRun(host, cfg, bridge, follow, url());

    for (const [batch, inflight] of cfg.sweep) {
      step(`NATS: sweep, ${batch} entries/message, ${inflight} in flight`);
      result.sweep.push({
        batch,
        inflight,
        bridgeEntriesPerSec: (await bridgeRun(batch, inflight)).rate,
        ceilingEntriesPerSec: await ceilingRun(batch, inflight),
      });
    }
    return result;
  } finally {
    await server.stop();
  }
}

/** Times follow writing `count` rows: from its first row to its last, by polling the file's tail. */
async function followRun(
  p: Proc,
  path: string,
  count: number,
): Promise<number> {
  let t1 = 0;
  let first = -1;
  const deadline = monotonicMs() + TIMEOUT_MS;
  for (;;) {
    const last = tailSeq(path);
    const now = monotonicMs();
    if (first < 0 && last >= 0) {
      first = last;
      t1 = now;
    }
    if (last === count - 1) {
      await p.stop();
      return t1 === now ? NaN : Math.round((count - 1 - first) / ((now - t1) / 1000));
    }
    if (p.exited || now > deadline) {
      const out = await p.stop();
      throw new Error(`Cannot finish the bench as follow stopped at seq ${last}: ${out.stderr}`);
    }
    await sleep(2);
  }
}

/** The seq of the last complete row of a CSV, -1 if none (or no file yet). */
function tailSeq(path: string): number {
  let f: Deno.FsFile;
  try {
    f = Deno.openSync(path);
  } catch {
    return -1;
  }
  try {
    const size = f.statSync().size;
    const n = Math.min(size, 256);
    const buf = new Uint8Array(n);
    f.seekSync(size - n, Deno.SeekMode.Start);
    let done = 0;
    while (done < n) done += f.readSync(buf.subarray(done)) ?? n;
    const text = new TextDecoder().decode(buf);
    const lines = text.split("\n");
    const line = lines.at(-2) ?? "";
    const seq = /^(\d+),/.exec(line)?.[1];
    return seq === undefined ? -1 : Number(seq);
  } finally {
    f.close();
  }
}

async function latencyRun(
  host: NatsBenchHost,
  cfg: NatsConfig,
  bridge: (name: string, u: string, batch: number, inflight: number) => Proc,
  follow: (u: string, name: string, out: string, latency?: string) => Proc,
  u: string,
): Promise<NatsResult["latency"]> {
  const name = host.segmentName();
  const capacity = 1 << 16;
  const seg = host.res.createSegment(name, capacity);
  const words = new Uint32Array(seg.buffer, 0, 128);
  const count = Math.round(cfg.latencyRate * cfg.latencySeconds);
  const b = bridge(name, u, DEFAULT_BRIDGE_BATCH, DEFAULT_INFLIGHT);
  let f: Proc | undefined;
  try {
    await waitUntil(() => loadU64(words, READER_HEARTBEATS_OFFSET) !== 0, 60_000, "bridge", 5);
    f = follow(u, name, "lat_follow.csv", "lat_follow.json");
    // follow is ready once the stream exists and it reads: give it one entry and wait for it.
    const w0 = host.writer(name, 1, 0, capacity);
    await w0.wait(TIMEOUT_MS);
    await waitUntil(() => tailSeq(`${host.tmp}/lat_follow.csv`) === 0, 60_000, "follow", 5);
    const w = host.writer(name, count, cfg.latencyRate, capacity);
    await w.wait(TIMEOUT_MS);
    await waitUntil(() => loadU64(words, READ_PTRS_OFFSET) >= count + 1, 60_000, "bridge", 5);
    await waitUntil(
      () => tailSeq(`${host.tmp}/lat_follow.csv`) === count,
      60_000,
      "follow catching up",
      5,
    );
    await f.stop();
    const h = Histogram.fromJSON(JSON.parse(Deno.readTextFileSync(`${host.tmp}/lat_follow.json`)));
    return {
      rate: cfg.latencyRate,
      entries: count,
      p50: h.percentile(50),
      p99: h.percentile(99),
    };
  } finally {
    await f?.stop();
    await b.stop();
    host.res.dropSegment(name);
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s[Math.floor((s.length - 1) / 2)]!;
}
