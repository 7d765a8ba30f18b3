/**
 * `deno task demo`: the three-terminal walk-through in one command. A writer and reporters 0 and
 * 1 run for a few seconds; reporter 1 is killed with SIGKILL in the middle and restarted; then
 * both CSV files are checked to hold every entry exactly once, field by field.
 *
 * `deno task demo --nats`: the same through a local `nats-server` (started here on port 4222, or
 * a free port if 4222 is taken, with a temporary store): reporter 0 writes `output_0.csv`, the
 * bridge (reader id 1) streams into JetStream, `follow` writes `follow.csv`; the bridge and
 * follow are each killed with SIGKILL mid-stream and restarted; then `follow.csv` must equal
 * `output_0.csv` byte for byte.
 *
 * @module
 */
import { parseRow } from "./csv.ts";
import { priceFor, quantityFor, sideFor, symbolFor } from "./layout.ts";
import {
  BRIDGE_FLAGS,
  findNatsServer,
  FOLLOW_FLAGS,
  REPORTER_FLAGS,
  spawnProgram,
  withNatsHosts,
  WRITER_FLAGS,
} from "./programs.ts";
import { loadU64 } from "./ring.ts";
import { Segment } from "./segment.ts";
import { READ_PTRS_OFFSET } from "./layout.ts";

const COUNT = 60_000;
const RATE = 20_000;

function log(line: string): void {
  console.log(`demo: ${line}`);
}

/** Checks that `path` holds seq 0..count-1 exactly once with the simulated payload. */
export function verifyCsv(text: string, count: number): string | undefined {
  const lines = text.split("\n");
  if (lines.at(-1) === "") lines.pop();
  const seen = new Uint8Array(count);
  for (let i = 1; i < lines.length; i++) {
    const row = parseRow(lines[i]!);
    if (!row) return `line ${i + 1} is not a row: ${lines[i]}`;
    if (row.seq >= count) return `seq ${row.seq} is beyond ${count - 1}`;
    if (seen[row.seq]) return `seq ${row.seq} appears twice`;
    seen[row.seq] = 1;
    const price = priceFor(row.seq);
    const expected = `${Math.floor(price / 10000)}.${String(price % 10000).padStart(4, "0")}`;
    if (
      row.symbol !== symbolFor(row.seq) || row.price !== expected ||
      row.quantity !== quantityFor(row.seq) || row.side !== sideFor(row.seq)
    ) return `seq ${row.seq} has a wrong field: ${lines[i]}`;
  }
  const missing = seen.indexOf(0);
  return missing >= 0 ? `seq ${missing} is missing` : undefined;
}

/** Port 4222 when it is free (the bridge's and follow's default grant), else a free one. */
function natsPort(): number {
  for (const port of [4222, 0]) {
    try {
      const l = Deno.listen({ hostname: "127.0.0.1", port });
      const chosen = (l.addr as Deno.NetAddr).port;
      l.close();
      return chosen;
    } catch {
      // taken
    }
  }
  throw new Error("no free port on 127.0.0.1");
}

/** Removes the CSV files an earlier run left in the working directory, saying which. */
function removeEarlierRuns(files: string[]): void {
  for (const f of files) {
    try {
      Deno.removeSync(f);
      log(`removed ${f} from an earlier run`);
    } catch { /* not there */ }
  }
}

function sleepMs(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** The walk-through through a local nats-server: bridge and follow, each killed once. */
async function mainNats(): Promise<number> {
  const bin = await findNatsServer();
  if (bin === undefined) {
    console.error(
      "demo: error: Cannot run the NATS demo as nats-server is not installed: apt-get install nats-server",
    );
    return 4;
  }
  const name = `/rpt_demo_${Deno.pid}`;
  removeEarlierRuns(["output_0.csv", "follow.csv"]);
  const port = natsPort();
  const hosts = port === 4222 ? undefined : `127.0.0.1:${port},localhost:${port}`;
  const store = `.rpt_demo_nats_${Deno.pid}`;
  const url = `nats://127.0.0.1:${port}/DEMO`;
  log(`nats-server on 127.0.0.1:${port} (JetStream store ${store})`);
  const server = new Deno.Command(bin, {
    args: ["-a", "127.0.0.1", "-p", String(port), "-js", "-sd", store],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  const flags = (f: readonly string[]) => hosts === undefined ? f : withNatsHosts(f, hosts);
  const bridge = () =>
    spawnProgram("bridge.ts", flags(BRIDGE_FLAGS), ["1", url, "--name", name], {
      stdio: "inherit",
    });
  const follow = () =>
    spawnProgram("follow.ts", flags(FOLLOW_FLAGS), [url, "--name", name], { stdio: "inherit" });
  const children: Deno.ChildProcess[] = [];
  try {
    for (let i = 0;; i++) {
      try {
        (await Deno.connect({ hostname: "127.0.0.1", port })).close();
        break;
      } catch {
        if (i > 500) throw new Error(`nats-server did not start on port ${port}`);
        await sleepMs(20);
      }
    }
    log(
      `writer publishes ${COUNT} entries at ${RATE}/s; reporter 0 writes output_0.csv; the bridge (reader id 1) streams into ${url}; follow writes follow.csv`,
    );
    const writer = spawnProgram(
      "writer.ts",
      WRITER_FLAGS,
      ["--name", name, "--count", String(COUNT), "--rate", String(RATE), "--capacity", "131072"],
      { stdio: "inherit" },
    );
    const r0 = spawnProgram("reporter.ts", REPORTER_FLAGS, ["0", "--name", name], {
      stdio: "inherit",
    });
    let b = bridge();
    let f = follow();
    children.push(writer, r0);
    await sleepMs(1200);
    log(`kill -9 the bridge (pid ${b.pid}) mid-stream and restart it at once`);
    b.kill("SIGKILL");
    b = bridge();
    await sleepMs(800);
    log(`kill -9 follow (pid ${f.pid}) mid-stream and restart it at once`);
    f.kill("SIGKILL");
    f = follow();
    children.push(b, f);
    const ws = await writer.status;
    if (!ws.success) throw new Error(`writer exited with status ${ws.code}`);
    const deadline = Date.now() + 60_000;
    for (;;) {
      let done = false;
      try {
        using seg = Segment.open(name);
        const words = new Uint32Array(seg.buffer);
        const text = Deno.readTextFileSync("follow.csv");
        done = [0, 1].every((id) => loadU64(words, READ_PTRS_OFFSET + id * 8) >= COUNT) &&
          text.endsWith("\n") && text.split("\n").length - 2 === COUNT;
      } catch { /* not there yet */ }
      if (done) break;
      if (Date.now() > deadline) {
        throw new Error("the bridge and follow did not catch up within 60 s");
      }
      await sleepMs(50);
    }
    for (const c of [r0, b, f]) c.kill("SIGTERM");
    await Promise.all([r0.status, b.status, f.status]);
    const local = Deno.readFileSync("output_0.csv");
    const remote = Deno.readFileSync("follow.csv");
    const problem = verifyCsv(new TextDecoder().decode(remote), COUNT);
    const same = local.length === remote.length && local.every((x, i) => x === remote[i]);
    log(
      `follow.csv: ${problem ?? `every entry 0..${COUNT - 1} exactly once, every field correct`}`,
    );
    log(
      `follow.csv ${
        same ? "equals" : "DIFFERS FROM"
      } output_0.csv byte for byte (${remote.length} bytes)`,
    );
    return problem === undefined && same ? 0 : 1;
  } finally {
    for (const c of children) {
      try {
        c.kill("SIGKILL");
      } catch { /* exited */ }
    }
    try {
      server.kill("SIGTERM");
    } catch { /* exited */ }
    await server.status;
    Deno.removeSync(store, { recursive: true });
    try {
      Segment.unlink(name);
    } catch { /* removed already */ }
  }
}

async function main(): Promise<number> {
  if (Deno.args.includes("--nats")) return await mainNats();
  if (Deno.args.length > 0) {
    console.error(
      `demo: error: Cannot start the demo as it takes only --nats: current value is ${
        JSON.stringify(Deno.args.join(" "))
      }`,
    );
    return 2;
  }
  const name = `/rpt_demo_${Deno.pid}`;
  removeEarlierRuns(["output_0.csv", "output_1.csv"]);
  log(
    `segment ${name}: writer publishes ${COUNT} entries at ${RATE}/s; reporters 0 and 1 copy them`,
  );
  const reporter = (id: number) =>
    spawnProgram("reporter.ts", REPORTER_FLAGS, [String(id), "--name", name], {
      stdio: "inherit",
    });
  const r0 = reporter(0);
  let r1 = reporter(1);
  const writer = spawnProgram(
    "writer.ts",
    WRITER_FLAGS,
    ["--name", name, "--count", String(COUNT), "--rate", String(RATE), "--capacity", "131072"],
    { stdio: "inherit" },
  );
  await new Promise((r) => setTimeout(r, 1500));
  log(`kill -9 reporter 1 (pid ${r1.pid}) in the middle of the stream`);
  r1.kill("SIGKILL");
  await r1.status;
  await new Promise((r) => setTimeout(r, 300));
  log("restart reporter 1: it repairs its CSV and resumes where the file ends");
  r1 = reporter(1);
  const ws = await writer.status;
  if (!ws.success) throw new Error(`writer exited with status ${ws.code}`);
  // Wait until both reporters hold everything.
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      using seg = Segment.open(name);
      const words = new Uint32Array(seg.buffer);
      if ([0, 1].every((id) => loadU64(words, READ_PTRS_OFFSET + id * 8) >= COUNT)) break;
    } catch { /* not there yet */ }
    if (Date.now() > deadline) throw new Error("reporters did not catch up within 30 s");
    await new Promise((r) => setTimeout(r, 50));
  }
  r0.kill("SIGTERM");
  r1.kill("SIGTERM");
  await Promise.all([r0.status, r1.status]);
  Segment.unlink(name);
  let ok = true;
  for (const f of ["output_0.csv", "output_1.csv"]) {
    const problem = verifyCsv(Deno.readTextFileSync(f), COUNT);
    log(`${f}: ${problem ?? `every entry 0..${COUNT - 1} exactly once, every field correct`}`);
    if (problem) ok = false;
  }
  return ok ? 0 : 1;
}

if (import.meta.main) Deno.exit(await main());
