/**
 * `deno task demo`: the three-terminal walk-through in one command. A writer and reporters 0 and
 * 1 run for a few seconds; reporter 1 is killed with SIGKILL in the middle and restarted; then
 * both CSV files are checked to hold every entry exactly once, field by field.
 *
 * @module
 */
import { parseRow } from "./csv.ts";
import { priceFor, quantityFor, sideFor, symbolFor } from "./layout.ts";
import { REPORTER_FLAGS, spawnProgram, WRITER_FLAGS } from "./programs.ts";
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

async function main(): Promise<number> {
  const name = `/rpt_demo_${Deno.pid}`;
  for (const f of ["output_0.csv", "output_1.csv"]) {
    try {
      Deno.removeSync(f);
      log(`removed ${f} from an earlier run`);
    } catch { /* not there */ }
  }
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
