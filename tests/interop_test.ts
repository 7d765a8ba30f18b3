/**
 * Native interop: the C header `include/rpt_shm.h` and the C programs `examples/c/rpt_writer.c`
 * and `examples/c/rpt_reader.c` against the Deno writer and reporter, over real shared memory.
 *
 * The C sources are compiled with `cc` into a fresh temporary directory per test. Without a C
 * compiler every test here is reported as ignored, with the reason in its name.
 *
 * @module
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { CSV_HEADER, csvHeader, formatRows, MAX_ROW_BYTES, parseRow, splitRow } from "../csv.ts";
import { verifyCsv } from "../demo.ts";
import * as layout from "../layout.ts";
import { REPORTER_FLAGS, spawnProgram, WRITER_FLAGS } from "../programs.ts";
import { claimRole, roleHolder, selfOwner } from "../ownership.ts";
import { ENTRY_WORDS, loadU64, RingReader, storeU64 } from "../ring.ts";
import { Segment } from "../segment.ts";
import {
  DEFAULT_SCHEMA,
  defineSchema,
  type FieldSpec,
  fingerprint64,
  SIMULATION_PERIOD,
  simulatedPayloads,
} from "../schema.ts";
import { checkSchemaRows } from "./_helpers.ts";

const INCLUDE_DIR = fileURLToPath(new URL("../include/", import.meta.url));
const C_DIR = fileURLToPath(new URL("../examples/c/", import.meta.url));
const CFLAGS = ["-O2", "-std=c11", "-Wall", "-Wextra", "-Werror", "-pthread"];
const LIBS = Deno.build.os === "linux" ? ["-lrt"] : [];
/** Generous bound for any condition to come true: never asserted on, only a hang guard. */
const DEADLINE_MS = 60_000;

/** The C compiler to use, or why the tests cannot run. */
async function probeCompiler(): Promise<{ cc: string } | { reason: string }> {
  if (Deno.build.os !== "linux" && Deno.build.os !== "darwin") {
    return { reason: `POSIX shared memory is not supported on ${Deno.build.os}` };
  }
  let cc = "cc";
  try {
    cc = Deno.env.get("CC") || "cc";
  } catch {
    // no --allow-env: the default compiler
  }
  try {
    const out = await new Deno.Command(cc, { args: ["--version"], stdout: "null", stderr: "null" })
      .output();
    return out.success ? { cc } : { reason: `"${cc} --version" failed` };
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return { reason: `no C compiler ("${cc}" not found)` };
    return { reason: `cannot run "${cc}": ${(e as Error).message}` };
  }
}

const compiler = await probeCompiler();
const skipReason = "reason" in compiler ? compiler.reason : undefined;

/** Registers an interop test, ignored (reason in its name) when no C compiler is present. */
function interopTest(name: string, fn: (cc: string) => Promise<void>): void {
  Deno.test({
    name: skipReason === undefined
      ? `interop: ${name}`
      : `interop: ${name} (ignored: ${skipReason})`,
    ignore: skipReason !== undefined,
    fn: () => fn((compiler as { cc: string }).cc),
  });
}

/** Compiles `source` (a path) into `out`; throws with the compiler's output on failure. */
async function compile(cc: string, source: string, out: string, includeDir = INCLUDE_DIR) {
  const result = await new Deno.Command(cc, {
    args: [...CFLAGS, `-I${includeDir}`, source, "-o", out, ...LIBS],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!result.success) {
    const text = new TextDecoder().decode(result.stderr) + new TextDecoder().decode(result.stdout);
    throw new Error(`Cannot compile ${source}:\n${text}`);
  }
}

interface Binaries {
  writer: string;
  reader: string;
}

/** Builds rpt_writer and rpt_reader into `dir`. */
async function buildPrograms(cc: string, dir: string): Promise<Binaries> {
  const writer = `${dir}/rpt_writer`;
  const reader = `${dir}/rpt_reader`;
  await Promise.all([
    compile(cc, `${C_DIR}rpt_writer.c`, writer),
    compile(cc, `${C_DIR}rpt_reader.c`, reader),
  ]);
  return { writer, reader };
}

let counter = 0;
/** `/rpt_ti_` + pid + counter + tag: unique per test process and call, at most 31 bytes. */
function uniqueName(tag: string): string {
  counter++;
  return `/rpt_ti_${Deno.pid.toString(36)}_${counter.toString(36)}${tag}`.slice(0, 31);
}

function unlinkQuietly(name: string): void {
  try {
    if (Segment.exists(name)) Segment.unlink(name);
  } catch {
    // already gone
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `condition` every 20 ms; throws naming `what` after the deadline. */
async function waitFor(what: string, condition: () => boolean): Promise<void> {
  const deadline = Date.now() + DEADLINE_MS;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`Timed out after ${DEADLINE_MS} ms: ${what}`);
    await delay(20);
  }
}

/** The outcome of a finished child process. */
interface Ran {
  label: string;
  code: number;
  signal: Deno.Signal | null;
  stdout: string;
  stderr: string;
}

/** Runs a program to completion, collecting its output. Killed after the deadline. */
async function run(path: string, args: string[], cwd?: string): Promise<Ran> {
  const child = new Deno.Command(path, {
    args,
    cwd,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  return await collect(child, `${path} ${args.join(" ")}`);
}

/** Children not yet awaited: a failing test kills and awaits them before it ends. */
const running = new Map<Deno.ChildProcess, Promise<unknown>>();

function kill(child: Deno.ChildProcess, signal: Deno.Signal): void {
  try {
    child.kill(signal);
  } catch {
    // exited in between
  }
}

/** Awaits a child's exit and output; SIGKILLs it if it outlives the deadline. */
async function collect(child: Deno.ChildProcess, label: string): Promise<Ran> {
  const timer = setTimeout(() => kill(child, "SIGKILL"), DEADLINE_MS);
  const output = child.output();
  running.set(child, output);
  try {
    const out = await output;
    // Never rejects, so a child left running by a failed test raises no uncaught error: a child
    // killed at the deadline has a non-zero code, which the caller's assertion reports.
    return {
      label,
      code: out.code,
      signal: out.signal,
      stdout: new TextDecoder().decode(out.stdout),
      stderr: new TextDecoder().decode(out.stderr),
    };
  } finally {
    clearTimeout(timer);
    running.delete(child);
  }
}

function show(r: Ran): string {
  const how = r.signal === null ? `exit ${r.code}` : `killed by ${r.signal}`;
  return `${r.label}: ${how}\n--- stdout ---\n${r.stdout}--- stderr ---\n${r.stderr}`;
}

/** Runs the Deno writer to completion with the flags of `deno task writer`. */
async function denoWriter(args: string[], cwd: string): Promise<Ran> {
  const r = await collect(
    spawnProgram("writer.ts", WRITER_FLAGS, [...args, "--quiet"], { cwd }),
    "writer.ts",
  );
  assert.equal(r.code, 0, `Deno writer failed\n${show(r)}`);
  return r;
}

/** Runs the C writer to completion and checks its summary line. */
async function cWriter(bin: Binaries, args: string[]): Promise<Ran> {
  const r = await run(bin.writer, args);
  assert.equal(r.code, 0, `rpt_writer failed\n${show(r)}`);
  assert.match(r.stdout, /^rpt_writer: wrote \d+ entries in \d+\.\d{3} s \(\d+ entries\/s\)\n$/);
  return r;
}

/** Reads `read_ptrs[id]` of segment `name` (undefined while it cannot be opened). */
function readPtr(name: string, id: number): number | undefined {
  try {
    using seg = Segment.open(name);
    return loadU64(new Uint32Array(seg.buffer), layout.READ_PTRS_OFFSET + id * 8);
  } catch {
    return undefined;
  }
}

/**
 * Runs the Deno reporter `id` in `cwd` until `read_ptrs[id]` reaches `count`, stops it with
 * SIGTERM, and returns its CSV (`output_<id>.csv` in `cwd`).
 */
async function denoReporter(name: string, id: number, count: number, cwd: string) {
  const child = spawnProgram("reporter.ts", REPORTER_FLAGS, [String(id), "--name", name], { cwd });
  const done = collect(child, "reporter.ts");
  let exited = false;
  done.then(() => (exited = true));
  try {
    await waitFor(
      `reporter ${id} to reach read_ptr ${count}`,
      () => exited || (readPtr(name, id) ?? 0) >= count,
    );
  } finally {
    kill(child, "SIGTERM");
  }
  const r = await done;
  assert.equal(r.code, 0, `reporter failed\n${show(r)}`);
  assert.equal(readPtr(name, id), count, `reporter stopped early\n${show(r)}`);
  return Deno.readFileSync(`${cwd}/output_${id}.csv`);
}

/** A clear message for two CSVs that differ: the first differing line. */
function firstDifference(a: string, b: string): string {
  const la = a.split("\n");
  const lb = b.split("\n");
  for (let i = 0; i < Math.max(la.length, lb.length); i++) {
    if (la[i] !== lb[i]) {
      return `line ${i + 1}: ${JSON.stringify(la[i])} != ${JSON.stringify(lb[i])}`;
    }
  }
  return "no line differs";
}

/** Runs `body` with a fresh temp dir (removed after) and segment names it may use (unlinked). */
async function withScratch(
  body: (dir: string, names: string[]) => Promise<void>,
  tags: string[] = ["s"],
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "rpt_interop_" });
  const names = tags.map(uniqueName);
  try {
    await body(dir, names);
  } finally {
    for (const [child, output] of running) {
      kill(child, "SIGKILL");
      await output.catch(() => {});
    }
    names.forEach(unlinkQuietly);
    await Deno.remove(dir, { recursive: true });
  }
}

// ---- (a) C reader over a segment written by the Deno writer --------------------------------

interopTest(
  "rpt_reader's CSV equals the Deno reporter's byte for byte (Deno writer)",
  (cc) =>
    withScratch(async (dir, [name]) => {
      const bin = await buildPrograms(cc, dir);
      const count = 30_000;
      await denoWriter([
        "--name",
        name!,
        "--count",
        String(count),
        "--rate",
        "0",
        "--capacity",
        "32768",
      ], dir);
      const cOut = `${dir}/c.csv`;
      const r = await run(bin.reader, ["--name", name!, "--id", "0", "--out", cOut]);
      assert.equal(r.code, 0, show(r));
      assert.match(
        r.stdout,
        new RegExp(`^rpt_reader: read ${count} rows in \\d+\\.\\d{3} s \\(\\d+ rows/s\\)\\n$`),
      );
      assert.equal(r.stderr, "", "no loss and no notice expected");
      {
        using seg = Segment.open(name!);
        const words = new Uint32Array(seg.buffer);
        assert.equal(loadU64(words, layout.READ_PTRS_OFFSET), count, "read_ptrs[0] stored");
        assert.equal(loadU64(words, layout.READER_OWNERS_OFFSET), 0, "reader id 0 released");
        assert.equal(loadU64(words, layout.READER_LOST_OFFSET), 0, "nothing lost");
      }
      // The Deno reporter (reader id 1, its own cwd) over the very same entries.
      const reporterDir = `${dir}/reporter`;
      await Deno.mkdir(reporterDir);
      const denoCsv = await denoReporter(name!, 1, count, reporterDir);
      const cCsv = Deno.readFileSync(cOut);
      const decode = (b: Uint8Array) => new TextDecoder().decode(b);
      assert.ok(
        cCsv.length === denoCsv.length && cCsv.every((b, i) => b === denoCsv[i]),
        `CSV differs: ${firstDifference(decode(cCsv), decode(denoCsv))}`,
      );
      assert.equal(verifyCsv(decode(cCsv), count), undefined);
    }),
);

/** Two custom schemas that together hold every type, scales and the 64-bit extremes. */
const CUSTOM_SCHEMAS: FieldSpec[][] = [
  [
    { name: "venue", type: "char[5]" },
    { name: "px", type: "i64", scale: 4 },
    { name: "qty", type: "u16" },
    { name: "r", type: "f32" },
    { name: "d", type: "f64" },
    { name: "n", type: "i8", scale: 1 },
    { name: "b", type: "u8" },
    { name: "s", type: "i16", scale: 2 },
    { name: "m", type: "i32", scale: 3 },
    { name: "k", type: "u32", scale: 9 },
  ],
  [
    { name: "id", type: "u64" },
    { name: "big", type: "i64", scale: 18 },
    { name: "note", type: "char[16]" },
    { name: "x", type: "f64" },
    { name: "t", type: "i32", scale: 5 },
    { name: "v", type: "u16", scale: 1 },
  ],
];

interopTest(
  "rpt_reader reads the schema block and prints a custom schema like the reporter (floats by value)",
  (cc) =>
    withScratch(async (dir, names) => {
      const bin = await buildPrograms(cc, dir);
      const count = 3000;
      for (const [k, specs] of CUSTOM_SCHEMAS.entries()) {
        const name = names[k]!;
        const schema = defineSchema(specs);
        Deno.writeTextFileSync(`${dir}/s${k}.json`, JSON.stringify(specs));
        await denoWriter(
          ["--name", name, "--schema", `s${k}.json`, "--count", `${count}`, "--rate", "0"]
            .concat(["--capacity", "4096"]),
          dir,
        );
        const cOut = `${dir}/c${k}.csv`;
        const r = await run(bin.reader, ["--name", name, "--id", "0", "--out", cOut]);
        assert.equal(r.code, 0, show(r));
        const reporterDir = `${dir}/reporter${k}`;
        await Deno.mkdir(reporterDir);
        const deno = new TextDecoder().decode(await denoReporter(name, 1, count, reporterDir));
        const c = Deno.readTextFileSync(cOut);
        const dl = deno.trimEnd().split("\n");
        const cl = c.trimEnd().split("\n");
        assert.equal(cl[0], csvHeader(schema), "the C reader's header comes from the block");
        assert.equal(cl[0], dl[0]);
        assert.equal(cl.length, count + 1);
        assert.equal(dl.length, count + 1);
        const floats = new Set(
          schema.fields.filter((f) => f.kind === "float").map((f) => f.index + 2),
        );
        let floatDigitsDiffer = 0;
        for (let i = 1; i <= count; i++) {
          const a = splitRow(cl[i]!)!;
          const b = splitRow(dl[i]!)!;
          assert.equal(a.length, b.length, `line ${i + 1}`);
          a.forEach((x, col) => {
            if (!floats.has(col)) {
              assert.equal(x, b[col], `line ${i + 1} column ${col}: ${cl[i]} | ${dl[i]}`);
              return;
            }
            if (x !== b[col]) floatDigitsDiffer++;
            assert.ok(
              Object.is(Number(x), Number(b[col])),
              `line ${i + 1} float column ${col}: C ${x}, Deno ${b[col]}`,
            );
          });
        }
        if (floats.size > 0) assert.ok(floatDigitsDiffer > 0, "%.17g is exercised");
        checkSchemaRows(deno, schema, Segment.open(name, { readOnly: true }).info.epoch);
      }
    }, ["a", "b"]),
);

interopTest(
  "rpt_reader refuses a damaged schema block with exit 3 and a message",
  (cc) =>
    withScratch(async (dir, [name]) => {
      const bin = await buildPrograms(cc, dir);
      Deno.writeTextFileSync(`${dir}/s.json`, JSON.stringify(CUSTOM_SCHEMAS[1]));
      const cases: [string, (v: DataView) => void, RegExp][] = [
        ["a block byte", (v) => v.setUint8(0x180 + 8, 0x41), /fingerprint must be the hash/],
        ["the length", (v) => v.setUint32(0x9c, 0xffff_fff0, true), /block must be at 0x180/],
        ["a field byte with its hash", (v) => {
          v.setUint8(0x180 + 8 + 32, 99);
          const block = new Uint8Array(v.buffer, 0x180, v.getUint32(0x9c, true));
          v.setBigUint64(0x90, fingerprint64(block), true);
        }, /a field of its schema block breaks a rule of schema.ts: field 0/],
      ];
      for (const [what, hurt, message] of cases) {
        // A fresh segment per case, then the damage.
        await denoWriter(
          ["--name", name!, "--schema", "s.json", "--count", "10", "--recreate"],
          dir,
        );
        {
          using seg = Segment.open(name!);
          hurt(new DataView(seg.buffer));
        }
        const r = await run(bin.reader, ["--name", name!, "--id", "0", "--out", `${dir}/x.csv`]);
        assert.equal(r.code, 3, `${what}: ${show(r)}`);
        assert.match(r.stderr, message, what);
        assert.equal(r.stderr.trim().split("\n").length, 1);
      }
    }),
);

interopTest(
  "rpt_reader --count waits for a live Deno writer and resumes from read_ptr",
  (cc) =>
    withScratch(async (dir, [name]) => {
      const bin = await buildPrograms(cc, dir);
      const count = 20_000;
      await denoWriter(["--name", name!, "--count", "0", "--capacity", "65536"], dir);
      // The reader starts first and waits; the writer publishes at a modest rate meanwhile.
      const reader = run(bin.reader, [
        "--name",
        name!,
        "--id",
        "2",
        "--out",
        `${dir}/1.csv`,
        "--count",
        String(count / 2),
      ]);
      await denoWriter(["--name", name!, "--count", String(count), "--rate", "50000"], dir);
      const first = await reader;
      assert.equal(first.code, 0, show(first));
      assert.equal(readPtr(name!, 2), count / 2);
      // Without --from-start the next run continues at read_ptrs[2] and drains to write_ptr.
      const second = await run(bin.reader, ["--name", name!, "--id", "2", "--out", `${dir}/2.csv`]);
      assert.equal(second.code, 0, show(second));
      assert.equal(readPtr(name!, 2), count);
      const a = Deno.readTextFileSync(`${dir}/1.csv`);
      const b = Deno.readTextFileSync(`${dir}/2.csv`);
      const [header, ...rest] = b.split("\n");
      assert.equal(header, "seq,timestamp_ns,symbol,price,quantity,side,epoch");
      assert.equal(verifyCsv(a + rest.join("\n"), count), undefined);
    }),
);

interopTest(
  "rpt_reader formats edge-case entries exactly like csv.ts formatRows",
  (cc) =>
    withScratch(async (dir, [name]) => {
      const bin = await buildPrograms(cc, dir);
      const symbols = ["A,B", 'Q"T', "FULL8BYT", "", "LF\nX", "CR\rX", "\u00e9t\u00e9", '"', ","];
      const sides = ["B", "S", ",", '"', "\n", "\0"];
      const prices = [0n, 1n, -1n, 9999n, -10000n, 123456789n, 2n ** 63n - 1n, -(2n ** 63n)];
      const stamps = [0n, 1n, 2n ** 53n + 1n, 2n ** 64n - 1n, 1_700_000_000_123_456_789n];
      const quantities = [0, 1, 2 ** 32 - 1, 1000];
      const count = 40;
      {
        using seg = Segment.create(name!, { capacity: 64 });
        const view = new DataView(seg.buffer);
        for (let i = 0; i < count; i++) {
          const at = layout.slotOffset(i, 64);
          layout.encodeEntry(view, at, {
            seq: i,
            timestampNs: stamps[i % stamps.length]!,
            symbol: symbols[i % symbols.length]!,
            priceE4: 0,
            quantity: quantities[i % quantities.length]!,
            side: sides[i % sides.length]!,
          });
          view.setBigInt64(at + layout.PRICE_OFFSET, prices[i % prices.length]!, true);
        }
        storeU64(new Uint32Array(seg.buffer), layout.WRITE_PTR_OFFSET, count);
      }
      const r = await run(bin.reader, ["--name", name!, "--id", "4", "--out", `${dir}/e.csv`]);
      assert.equal(r.code, 0, show(r));
      // The reporter's formatting, in process, over the same entries.
      using seg = Segment.open(name!);
      const reader = new RingReader(seg.buffer, 7, { position: 0 });
      const entries = new Uint32Array(count * ENTRY_WORDS);
      assert.equal(reader.readBatch(entries, count), count);
      const tail = new TextEncoder().encode(`,${seg.info.epoch}\n`);
      const text = new Uint8Array(count * (MAX_ROW_BYTES + tail.length));
      const rows = text.subarray(0, formatRows(entries, count, text, 0, tail));
      const expected = CSV_HEADER + "\n" + new TextDecoder().decode(rows);
      const actual = Deno.readTextFileSync(`${dir}/e.csv`);
      assert.ok(actual === expected, `CSV differs: ${firstDifference(actual, expected)}`);
      assert.ok(
        actual.includes('"A,B"') && actual.includes('"Q""T"') && actual.includes(",-0.0001,"),
      );
      assert.ok(
        actual.includes(",18446744073709551615,") && actual.includes(",-922337203685477.5808,"),
      );
    }),
);

// ---- Lapping: every row whole and correct, every gap reported exactly -----------------------

/** Checks rows (any subset, ascending) and the reported losses against the simulated payload. */
function checkLapped(
  csv: string,
  stderr: string,
  count: number,
  epoch: bigint,
): string | undefined {
  const covered = new Uint8Array(count);
  const lines = csv.split("\n");
  if (lines.at(-1) === "") lines.pop();
  if (lines[0] !== "seq,timestamp_ns,symbol,price,quantity,side,epoch") return "bad header";
  let previous = -1;
  for (const line of lines.slice(1)) {
    const row = parseRow(line);
    if (!row) return `not a row: ${line}`;
    if (row.seq <= previous || row.seq >= count) return `seq out of order or range: ${line}`;
    previous = row.seq;
    const e = layout.simulatedEntry(row.seq);
    const price = `${Math.floor(e.priceE4 / 10000)}.${String(e.priceE4 % 10000).padStart(4, "0")}`;
    if (
      row.symbol !== e.symbol || row.price !== price || row.quantity !== e.quantity ||
      row.side !== e.side || row.epoch !== epoch || row.timestampNs === 0n
    ) return `torn or wrong row: ${line}`;
    covered[row.seq] = covered[row.seq]! + 1;
  }
  for (const line of stderr.split("\n").filter((l) => l !== "")) {
    const m = /^rpt_reader: lost entries (\d+)\.\.(\d+) \((\d+)\)$/.exec(line);
    if (!m) return `unexpected stderr line: ${line}`;
    const [a, b, n] = [Number(m[1]), Number(m[2]), Number(m[3])];
    if (b < a || n !== b - a + 1 || b >= count) return `bad loss line: ${line}`;
    for (let s = a; s <= b; s++) covered[s] = covered[s]! + 1;
  }
  const wrong = covered.findIndex((c) => c !== 1);
  if (wrong >= 0) {
    return `seq ${wrong} is ${covered[wrong] ? "both read and lost" : "neither read nor lost"}`;
  }
  return undefined;
}

for (const writerKind of ["deno", "c"] as const) {
  interopTest(
    `rpt_reader lapped by the ${
      writerKind === "c" ? "C" : "Deno"
    } writer (capacity 64): rows whole, losses exact`,
    (cc) =>
      withScratch(async (dir, [name]) => {
        const bin = await buildPrograms(cc, dir);
        const count = 300_000;
        const base = ["--name", name!, "--capacity", "64"];
        if (writerKind === "c") await cWriter(bin, [...base, "--count", "0"]);
        else await denoWriter([...base, "--count", "0"], dir);
        const reader = run(bin.reader, [
          "--name",
          name!,
          "--id",
          "5",
          "--out",
          `${dir}/l.csv`,
          "--from-start",
          "--count",
          String(count),
        ]);
        if (writerKind === "c") await cWriter(bin, [...base, "--count", String(count)]);
        else await denoWriter([...base, "--count", String(count), "--rate", "0"], dir);
        const r = await reader;
        assert.equal(r.code, 0, show(r));
        using seg = Segment.open(name!);
        const words = new Uint32Array(seg.buffer);
        const rows = Number(/read (\d+) rows/.exec(r.stdout)?.[1]);
        const lostInSegment = loadU64(words, layout.READER_LOST_OFFSET + 5 * 8);
        assert.equal(
          rows + lostInSegment,
          count,
          `rows + reader_lost[5] must be ${count}\n${show(r)}`,
        );
        assert.equal(loadU64(words, layout.READ_PTRS_OFFSET + 5 * 8), count);
        const problem = checkLapped(
          Deno.readTextFileSync(`${dir}/l.csv`),
          r.stderr,
          count,
          seg.info.epoch,
        );
        assert.equal(problem, undefined, problem);
      }),
  );
}

// ---- (b) Deno reporter over a segment written by the C writer -------------------------------

interopTest(
  "the Deno reporter reads what rpt_writer wrote; C and Deno writers continue each other",
  (cc) =>
    withScratch(async (dir, [name]) => {
      const bin = await buildPrograms(cc, dir);
      const n = 15_000;
      const capacity = 65_536;
      await cWriter(bin, ["--name", name!, "--count", String(n), "--capacity", String(capacity)]);
      await denoWriter(["--name", name!, "--count", String(n), "--rate", "0"], dir);
      await cWriter(bin, ["--name", name!, "--count", String(n), "--rate", "1000000"]);
      const total = 3 * n;
      let epoch: bigint;
      {
        using seg = Segment.open(name!); // validated the Deno way
        const view = new DataView(seg.buffer);
        const words = new Uint32Array(seg.buffer);
        epoch = seg.info.epoch;
        assert.equal(seg.info.capacity, capacity);
        assert.equal(seg.info.entriesOffset, layout.HEADER_SIZE);
        assert.equal(seg.info.writePtr, total);
        assert.equal(seg.size, layout.segmentSize(capacity));
        assert.equal(view.getUint32(layout.FLAGS_OFFSET, true), 0);
        assert.equal(loadU64(words, layout.WRITER_OWNER_OFFSET), 0, "writer role released");
        assert.equal(loadU64(words, layout.WRITER_START_INDEX_OFFSET), 2 * n);
        assert.ok(loadU64(words, layout.WRITER_HEARTBEAT_OFFSET) > 0);
        // Creation time in ns, the clock the timestamps come from: within a day of them.
        const ts0 = view.getBigUint64(
          layout.slotOffset(0, capacity) + layout.TIMESTAMP_OFFSET,
          true,
        );
        assert.ok(
          epoch > 0n && ts0 >= epoch - 86_400_000_000_000n && ts0 <= epoch + 86_400_000_000_000n,
        );
        // Slots never written still hold seq = all ones; written ones decode to the payload.
        for (const i of [total, total + 1, capacity - 1]) {
          assert.equal(
            view.getBigUint64(layout.slotOffset(i, capacity), true),
            0xffff_ffff_ffff_ffffn,
          );
        }
        for (const i of [0, 1, n - 1, n, 2 * n, total - 1]) {
          const e = layout.decodeEntry(view, layout.slotOffset(i, capacity));
          const { timestampNs: _, ...payload } = e;
          assert.deepEqual(payload, layout.simulatedEntry(i));
          const reserved = new Uint8Array(
            seg.buffer,
            layout.slotOffset(i, capacity) + layout.ENTRY_RESERVED_OFFSET,
            64 - layout.ENTRY_RESERVED_OFFSET,
          );
          assert.ok(reserved.every((b) => b === 0), `reserved bytes of entry ${i} are zero`);
        }
      }
      if (Deno.build.os === "linux") {
        // Mode 0600 whatever the umask (Deno grants /dev paths only with --allow-all: ask stat).
        const mode = await run("stat", ["-c", "%a", `/dev/shm${name}`]);
        assert.equal(mode.stdout.trim(), "600", show(mode));
      }
      const csv = new TextDecoder().decode(await denoReporter(name!, 0, total, dir));
      assert.equal(verifyCsv(csv, total), undefined);
      const lines = csv.trimEnd().split("\n").slice(1);
      assert.equal(lines.length, total);
      assert.ok(lines.every((l) => parseRow(l)?.epoch === epoch), "every row carries the epoch");
    }),
);

// ---- (c) Drift between layout.ts and the header ----------------------------------------------

/** A schema of every type, bytes[N] and char[N] included, that the dump builds in C. */
const SIM_SPECS: FieldSpec[] = [
  { name: "a", type: "u8" },
  { name: "b", type: "u16", scale: 1 },
  { name: "c", type: "u32" },
  { name: "d", type: "u64" },
  { name: "e", type: "i8", scale: 2 },
  { name: "f", type: "i16" },
  { name: "g", type: "i32", scale: 3 },
  { name: "h", type: "i64", scale: 18 },
  { name: "x", type: "f32" },
  { name: "y", type: "f64" },
  { name: "t", type: "char[7]" },
  { name: "blob", type: "bytes[40]" },
  { name: "one", type: "bytes[1]" },
  { name: "z", type: "f64" },
];
/** The seqs whose simulated payloads the dump prints (one period wraps at 1024). */
const SIM_SEQS = [...Array(40).keys(), 511, 1000, 1023, 1024, 1025, 4097, 123_456_789];

/** The C lines that build SIM_SPECS with rpt_schema_add. */
function simSchemaC(): string {
  return SIM_SPECS.map((f) => {
    const sized = /^(char|bytes)\[(\d+)\]$/.exec(f.type);
    const type = sized ? `RPT_T_${sized[1]!.toUpperCase()}` : `RPT_T_${f.type.toUpperCase()}`;
    return `  rpt_schema_add(&sim, "${f.name}", ${type}, ${sized ? sized[2] : 0}, ${f.scale ?? 0});`;
  }).join("\n");
}

const DUMP_C = String.raw`
#include <stdio.h>
#include "rpt_shm.h"
static int first = 1;
static void sep(void) { if (!first) printf(", "); first = 0; }
#define NUM(name, value) sep(); printf("\"%s\": %llu", #name, (unsigned long long)(value));
#define STR(name, value) sep(); printf("\"%s\": \"%s\"", #name, value);
#define FIELD(type, field) sep(); printf("{\"struct\": \"%s\", \"field\": \"%s\", \"offset\": %llu, \"size\": %llu}", #type, #field, (unsigned long long)offsetof(type, field), (unsigned long long)RPT_FIELD_SIZE(type, field));
int main(void) {
  static const uint64_t probes[] = {0, 1, 2, 7, 8, 999, 1000, 1001, 999999, 1000000, 1000001, 123456789, 4503599627370495ull};
  printf("{\"numbers\": {");
  RPT_LAYOUT_NUMBERS(NUM)
  printf("}, \"strings\": {");
  first = 1;
  RPT_LAYOUT_STRINGS(STR)
  printf("}, \"symbols\": [");
  for (int i = 0; i < 8; i++) printf("%s\"%.8s\"", i ? ", " : "", rpt_sim_symbol((uint64_t)i));
  static rpt_schema def, sim;
  rpt_schema_default(&def);
  printf("], \"default_fingerprint\": \"%016llx\"", (unsigned long long)def.fingerprint);
  printf(", \"sizes\": {\"rpt_header\": %zu, \"rpt_entry\": %zu, \"rpt_schema_head\": %zu, \"rpt_schema_field\": %zu, \"rpt_schema_field_v2\": %zu}, \"fields\": [", sizeof(rpt_header), sizeof(rpt_entry), sizeof(rpt_schema_head), sizeof(rpt_schema_field), sizeof(rpt_schema_field_v2));
  first = 1;
  RPT_LAYOUT_FIELDS(FIELD)
  printf("], \"sim\": [");
  for (size_t i = 0; i < sizeof probes / sizeof *probes; i++) {
    uint64_t s = probes[i];
    printf("%s[%llu, \"%.8s\", %lld, %u, \"%c\"]", i ? ", " : "", (unsigned long long)s, rpt_sim_symbol(s), (long long)rpt_sim_price(s), rpt_sim_quantity(s), rpt_sim_side(s));
  }
  rpt_schema_begin(&sim);
@SIM_SCHEMA@
  rpt_schema_finish(&sim);
  printf("], \"sim_schema\": {\"version\": %u, \"end\": %u, \"fingerprint\": \"%016llx\"}, \"sim_payloads\": [", sim.version, sim.end, (unsigned long long)sim.fingerprint);
  static const uint64_t seqs[] = {@SIM_SEQS@};
  static unsigned char image[4096];
  for (size_t i = 0; i < sizeof seqs / sizeof *seqs; i++) {
    for (uint32_t f = 0; f < sim.field_count; f++) rpt_sim_field(&sim.fields[f], f, seqs[i], image);
    printf("%s\"", i ? ", " : "");
    for (uint32_t b = RPT_PAYLOAD_OFFSET; b < sim.end; b++) printf("%02x", image[b]);
    printf("\"");
  }
  printf("]}\n");
  return 0;
}
`;

interface Dump {
  numbers: Record<string, number>;
  strings: Record<string, string>;
  symbols: string[];
  sizes: Record<string, number>;
  default_fingerprint: string;
  fields: { struct: string; field: string; offset: number; size: number }[];
  sim: [number, string, number, number, string][];
  sim_schema: { version: number; end: number; fingerprint: string };
  sim_payloads: string[];
}

/** Every difference between the header's dump and layout.ts; empty when they agree. */
function layoutDrift(dump: Dump): string[] {
  const problems: string[] = [];
  const exports = layout as unknown as Record<string, unknown>;
  // Header -> layout.ts: every number the header states matches the export of the same name.
  for (const [key, value] of Object.entries(dump.numbers)) {
    if (typeof exports[key] !== "number") {
      problems.push(`${key}: in the header, not exported by layout.ts`);
    } else if (exports[key] !== value) {
      problems.push(`${key}: header ${value}, layout.ts ${exports[key]}`);
    }
  }
  for (const [key, value] of Object.entries(dump.strings)) {
    if (exports[key] !== value) problems.push(`${key}: header ${value}, layout.ts ${exports[key]}`);
  }
  // layout.ts -> header: every exported number and string (every *_OFFSET first of all) appears.
  for (const [key, value] of Object.entries(exports)) {
    if (typeof value === "number" && !(key in dump.numbers)) {
      problems.push(
        `${key}${
          key.endsWith("_OFFSET") ? " (an offset)" : ""
        }: exported by layout.ts, missing from the header`,
      );
    }
    if (typeof value === "string" && !(key in dump.strings)) {
      problems.push(`${key}: missing from the header`);
    }
  }
  if (JSON.stringify(dump.symbols) !== JSON.stringify(layout.SYMBOLS)) {
    problems.push(`SYMBOLS: header ${dump.symbols}, layout.ts ${layout.SYMBOLS}`);
  }
  // The fields tile each struct exactly: no gap, no overlap, ending at its size.
  const sizes: Record<string, number> = {
    rpt_header: layout.HEADER_SIZE,
    rpt_entry: layout.ENTRY_SIZE,
    rpt_schema_head: layout.SCHEMA_FIELDS_OFFSET,
    rpt_schema_field: layout.SCHEMA_FIELD_SIZE,
    rpt_schema_field_v2: layout.SCHEMA_FIELD_SIZE_V2,
  };
  problems.push(...simDrift(dump));
  // The default schema's block, encoded by the C header, hashes like schema.ts's.
  const fingerprint = DEFAULT_SCHEMA.fingerprint.toString(16).padStart(16, "0");
  if (dump.default_fingerprint !== fingerprint) {
    problems.push(
      `default schema block: header fingerprint ${dump.default_fingerprint}, schema.ts ${fingerprint}`,
    );
  }
  for (const [struct, size] of Object.entries(sizes)) {
    if (dump.sizes[struct] !== size) {
      problems.push(`sizeof(${struct}): header ${dump.sizes[struct]}, layout.ts ${size}`);
    }
    let end = 0;
    for (
      const f of dump.fields.filter((f) => f.struct === struct).sort((a, b) => a.offset - b.offset)
    ) {
      if (f.offset !== end) problems.push(`${struct}.${f.field} at ${f.offset}: expected ${end}`);
      end = f.offset + f.size;
    }
    if (end !== size) problems.push(`${struct} fields end at ${end}: expected ${size}`);
  }
  for (const [seq, symbol, price, quantity, side] of dump.sim) {
    const e = layout.simulatedEntry(seq);
    if (symbol !== e.symbol || price !== e.priceE4 || quantity !== e.quantity || side !== e.side) {
      problems.push(
        `simulated entry ${seq}: header ${[symbol, price, quantity, side]}, layout.ts ${[
          e.symbol,
          e.priceE4,
          e.quantity,
          e.side,
        ]}`,
      );
    }
  }
  return problems;
}

/** Differences between the C schema builder and simulated values, and schema.ts's. */
function simDrift(dump: Dump): string[] {
  const problems: string[] = [];
  const schema = defineSchema(SIM_SPECS);
  const ts = {
    version: schema.version,
    end: schema.end,
    fingerprint: schema.fingerprint.toString(16).padStart(16, "0"),
  };
  if (JSON.stringify(dump.sim_schema) !== JSON.stringify(ts)) {
    problems.push(`schema built in C: ${JSON.stringify(dump.sim_schema)}, schema.ts ${JSON.stringify(ts)}`);
  }
  const rows = new Uint8Array(simulatedPayloads(schema, 256).buffer);
  const rowBytes = 256 - layout.PAYLOAD_OFFSET;
  SIM_SEQS.forEach((seq, i) => {
    const at = (seq % SIMULATION_PERIOD) * rowBytes;
    const want = [...rows.subarray(at, at + schema.end - layout.PAYLOAD_OFFSET)]
      .map((b) => b.toString(16).padStart(2, "0")).join("");
    if (dump.sim_payloads[i] !== want) {
      problems.push(`simulated payload of seq ${seq}: C ${dump.sim_payloads[i]}, schema.ts ${want}`);
    }
  });
  return problems;
}

async function dumpLayout(cc: string, dir: string, includeDir = INCLUDE_DIR): Promise<Dump> {
  const source = DUMP_C.replace("@SIM_SCHEMA@", simSchemaC())
    .replace("@SIM_SEQS@", SIM_SEQS.map((s) => `${s}ull`).join(", "));
  await Deno.writeTextFile(`${dir}/dump.c`, source);
  await compile(cc, `${dir}/dump.c`, `${dir}/dump`, includeDir);
  const r = await run(`${dir}/dump`, []);
  assert.equal(r.code, 0, show(r));
  return JSON.parse(r.stdout) as Dump;
}

interopTest(
  "rpt_shm.h states every offset, size and constant of layout.ts, and nothing else",
  (cc) =>
    withScratch(async (dir) => {
      const dump = await dumpLayout(cc, dir);
      assert.deepEqual(layoutDrift(dump), []);
      // Every field of both structs appears, so the tiling check above covers them all.
      assert.equal(dump.fields.filter((f) => f.struct === "rpt_header").length, 22);
      assert.equal(dump.fields.filter((f) => f.struct === "rpt_entry").length, 7);
      assert.equal(dump.fields.filter((f) => f.struct === "rpt_schema_head").length, 3);
      assert.equal(dump.fields.filter((f) => f.struct === "rpt_schema_field").length, 5);
      assert.equal(dump.fields.filter((f) => f.struct === "rpt_schema_field_v2").length, 6);
      assert.equal(dump.sim_schema.version, 2, "the simulated schema has bytes fields: version 2");
    }),
);

interopTest(
  "the drift check catches drift in either direction",
  (cc) =>
    withScratch(async (dir) => {
      const dump = await dumpLayout(cc, dir);
      const copy = (): Dump => structuredClone(dump);
      const moved = copy();
      moved.numbers.EPOCH_OFFSET! += 8;
      assert.ok(layoutDrift(moved).some((p) => p.startsWith("EPOCH_OFFSET: header")));
      const missing = copy();
      delete missing.numbers.WAITERS_OFFSET;
      assert.ok(layoutDrift(missing).some((p) => p.startsWith("WAITERS_OFFSET (an offset)")));
      const extra = copy();
      extra.numbers.NEW_FIELD_OFFSET = 0x90;
      assert.ok(layoutDrift(extra).some((p) => p.startsWith("NEW_FIELD_OFFSET: in the header")));
      const simmed = copy();
      simmed.sim_payloads[3] = "00";
      assert.ok(layoutDrift(simmed).some((p) => p.startsWith("simulated payload of seq 3:")));
      const rebuilt = copy();
      rebuilt.sim_schema.end += 4;
      assert.ok(layoutDrift(rebuilt).some((p) => p.startsWith("schema built in C")));
      const wider = copy();
      wider.fields.find((f) => f.field === "waiters")!.size = 8;
      assert.ok(layoutDrift(wider).some((p) => p.includes("writer_started_ns")));
      // A header whose struct disagrees with its own constants does not even compile.
      const header = Deno.readTextFileSync(`${INCLUDE_DIR}rpt_shm.h`);
      const broken = header.replace("uint32_t waiters;", "uint64_t waiters;");
      assert.notEqual(broken, header);
      await Deno.mkdir(`${dir}/broken`);
      Deno.writeTextFileSync(`${dir}/broken/rpt_shm.h`, broken);
      await assert.rejects(
        dumpLayout(cc, dir, `${dir}/broken`),
        /waiters|static assert|_Static_assert/i,
      );
    }),
);

// ---- Errors: one clear line and the documented exit status -----------------------------------

interopTest(
  "rpt_writer and rpt_reader fail with one line and the documented status",
  (cc) =>
    withScratch(async (dir, [name, other]) => {
      const bin = await buildPrograms(cc, dir);
      const expectFailure = async (path: string, args: string[], code: number, pattern: RegExp) => {
        const r = await run(path, args, dir);
        assert.equal(r.code, code, show(r));
        assert.equal(r.stdout, "");
        assert.match(r.stderr, pattern);
        assert.equal(r.stderr.trimEnd().split("\n").length, 1, `one line: ${r.stderr}`);
      };
      const out = ["--out", `${dir}/x.csv`];
      await expectFailure(bin.writer, ["--name", name!], 2, /--count N is required/);
      await expectFailure(bin.writer, ["--name", name!, "--count", "-1"], 2, /--count must be/);
      await expectFailure(
        bin.writer,
        ["--name", name!, "--count", "1", "--capacity", "3"],
        2,
        /power of two/,
      );
      await expectFailure(bin.writer, ["--name", "no_slash", "--count", "1"], 2, /segment name/);
      await expectFailure(
        bin.writer,
        ["--name", name!, "--count", "1", "--bogus"],
        2,
        /unknown argument/,
      );
      await expectFailure(bin.reader, ["--name", name!, ...out], 2, /--id K/);
      await expectFailure(bin.reader, ["--name", name!, "--id", "8", ...out], 2, /--id must be/);
      await expectFailure(bin.reader, ["--name", name!, "--id", "0"], 2, /--out FILE/);
      await expectFailure(bin.reader, ["--name", name!, "--id", "0", ...out], 4, /does not exist/);
      // A segment of another layout version is refused by both.
      await cWriter(bin, ["--name", name!, "--count", "10", "--capacity", "16"]);
      {
        using seg = Segment.open(name!);
        new DataView(seg.buffer).setUint32(layout.VERSION_OFFSET, 2, true);
      }
      await expectFailure(
        bin.reader,
        ["--name", name!, "--id", "0", ...out],
        3,
        /layout version must be 1: current value is 2/,
      );
      await expectFailure(
        bin.writer,
        ["--name", name!, "--count", "1"],
        3,
        /layout version must be 1/,
      );
      // A reader id or the writer role held by a live process (this one) is refused.
      await cWriter(bin, ["--name", other!, "--count", "10", "--capacity", "16"]);
      {
        using seg = Segment.open(other!);
        using _reader = claimRole(seg, 3, () => "held");
        using _writer = claimRole(seg, "writer", () => "held");
        {
          await expectFailure(
            bin.reader,
            ["--name", other!, "--id", "3", ...out],
            6,
            new RegExp(`held by live pid ${Deno.pid}`),
          );
          await expectFailure(
            bin.writer,
            ["--name", other!, "--count", "1"],
            6,
            new RegExp(`live writer pid ${Deno.pid}`),
          );
          await expectFailure(
            bin.writer,
            ["--name", other!, "--count", "1", "--capacity", "32"],
            3,
            /capacity is 16/,
          );
        }
      }
      await expectFailure(
        bin.reader,
        ["--name", other!, "--id", "3", "--out", `${dir}/missing/x.csv`],
        5,
        /cannot open output file/,
      );
    }, ["e1", "e2"]),
);

// ---- Roles: the C programs take the same open-file-description locks ----------------------

interopTest(
  "rpt_writer and rpt_reader hold their roles by the same locks as the Deno programs",
  (cc) =>
    withScratch(async (dir, [name]) => {
      const bin = await buildPrograms(cc, dir);
      await cWriter(bin, ["--name", name!, "--count", "10", "--capacity", "16"]);
      // Owner words naming a live process (this one) without its locks hold nothing.
      {
        using seg = Segment.open(name!);
        const words = new BigUint64Array(seg.buffer);
        words[layout.WRITER_OWNER_OFFSET / 8] = selfOwner();
        words[(layout.READER_OWNERS_OFFSET + 8) / 8] = selfOwner();
      }
      const w = await cWriter(bin, ["--name", name!, "--count", "10"]);
      assert.match(w.stderr, /took over from a dead writer/);
      const r = await run(bin.reader, ["--name", name!, "--id", "1", "--out", `${dir}/1.csv`]);
      assert.equal(r.code, 0, show(r));

      // A running rpt_writer holds the writer lock: status sees it, the Deno writer is refused.
      const child = new Deno.Command(bin.writer, {
        args: ["--name", name!, "--count", "100000000", "--rate", "1000"],
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const done = collect(child, "rpt_writer");
      {
        using ro = Segment.open(name!, { readOnly: true });
        try {
          await waitFor("rpt_writer to hold the writer role", () => {
            const h = roleHolder(ro, "writer");
            return h.alive && h.pid === child.pid;
          });
          const refused = await collect(
            spawnProgram("writer.ts", WRITER_FLAGS, ["--name", name!, "--count", "1"]),
            "writer.ts",
          );
          assert.equal(refused.code, 6, show(refused));
          assert.match(refused.stderr, new RegExp(`held by live writer pid ${child.pid}\\b`));
        } finally {
          kill(child, "SIGKILL");
        }
        assert.equal((await done).signal, "SIGKILL");
        // Killed: the lock went with its descriptors; the owner word is left as a record.
        const h = roleHolder(ro, "writer");
        assert.deepEqual([h.pid, h.alive], [child.pid, false]);
      }
      await denoWriter(["--name", name!, "--count", "10"], dir);
    }),
);
