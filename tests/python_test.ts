/**
 * The Python reader of `examples/python/rpt_shm.py`, written from docs/ alone, against the real
 * writer and reporter: the same segment read by both gives the same CSV, byte for byte.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { READ_PTRS_OFFSET, READER_LOST_OFFSET } from "../layout.ts";
import type { FieldSpec } from "../schema.ts";
import {
  positions,
  readU64,
  requireTool,
  type Scenario,
  scenario,
  waitFor,
  waitForReadPtr,
  writeU64,
} from "./_helpers.ts";

const SCRIPT = fileURLToPath(new URL("../examples/python/rpt_shm.py", import.meta.url));
/** The reporter reads as id 0, the Python reader as id 1, side by side. */
const PYTHON_ID = 1;

/** python3, or undefined after saying "skipped" (a failure under CI=true). */
function python3(): string | undefined {
  return requireTool("python3", "apt-get install python3");
}

/** Runs the writer to completion with `args` (`--rate 0 --quiet` added). */
async function publish(s: Scenario, args: string[]): Promise<void> {
  const w = s.writer([...args, "--rate", "0", "--quiet"]);
  assert.equal(await w.waitExit(), 0, w.describe());
}

/** Runs the Python reader until it has caught up; returns its stderr. */
async function runPython(python: string, s: Scenario, out = "py.csv"): Promise<string> {
  const args = [SCRIPT, "report", `${PYTHON_ID}`, "--name", s.name, "--out", out];
  const result = await new Deno.Command(python, {
    args: [...args, "--until-caught-up"],
    cwd: s.dir,
    stdin: "null",
  }).output();
  const stderr = new TextDecoder().decode(result.stderr);
  assert.equal(result.code, 0, `rpt_shm.py failed:\n${stderr}`);
  return stderr;
}

/** Runs the reporter (id 0) until its read_ptr reaches write_ptr, then stops it with SIGTERM. */
async function runReporter(s: Scenario, out = "ts.csv"): Promise<void> {
  const writePtr = positions(s.name)!.writePtr;
  const r = s.reporter(0, ["--out", out, "--quiet"]);
  await waitForReadPtr(s.name, 0, writePtr);
  r.signal("SIGTERM");
  assert.equal(await r.waitExit(), 0, r.describe());
}

/** Both files, compared as bytes (a failure shows the first line that differs). */
function assertSameBytes(s: Scenario, python = "py.csv", reporter = "ts.csv"): void {
  const a = Deno.readFileSync(s.path(python));
  const b = Deno.readFileSync(s.path(reporter));
  if (a.length === b.length && a.every((x, i) => x === b[i])) return;
  const la = new TextDecoder().decode(a).split("\n");
  const lb = new TextDecoder().decode(b).split("\n");
  const at = la.findIndex((line, i) => line !== lb[i]);
  assert.fail(
    `${python} differs from ${reporter} at line ${at + 1}:\n  python:   ${la[at]}\n  reporter: ${
      lb[at]
    }`,
  );
}

/** Publishes `count` entries with `writerArgs` (a schema written to the working directory). */
async function sameCsv(
  s: Scenario,
  python: string,
  count: number,
  writerArgs: string[],
  schema?: FieldSpec[],
): Promise<void> {
  if (schema !== undefined) {
    Deno.writeTextFileSync(s.path("schema.json"), JSON.stringify(schema));
    writerArgs = [...writerArgs, "--schema", "schema.json"];
  }
  await publish(s, ["--count", `${count}`, ...writerArgs]);
  await runPython(python, s);
  await runReporter(s);
  assertSameBytes(s);
  assert.equal(readU64(s.name, READ_PTRS_OFFSET + PYTHON_ID * 8), count);
}

/** Every scalar type, with scales on the integers (0, small, above 9), in 48 payload bytes. */
const EVERY_TYPE_64: FieldSpec[] = [
  { name: "f64", type: "f64" },
  { name: "u64", type: "u64", scale: 18 },
  { name: "i64", type: "i64", scale: 9 },
  { name: "f32", type: "f32" },
  { name: "i32", type: "i32", scale: 10 },
  { name: "u32", type: "u32" },
  { name: "i16", type: "i16", scale: 3 },
  { name: "u16", type: "u16" },
  { name: "i8", type: "i8", scale: 1 },
  { name: "u8", type: "u8", scale: 2 },
  { name: "text", type: "char[6]" },
];

/** Every type and scale path, char[N] of several lengths and bytes[N], for 1,024-byte entries. */
const EVERY_TYPE_1024: FieldSpec[] = [
  ...["u8", "u16", "u32", "u64", "i8", "i16", "i32", "i64"].flatMap((type) => [
    { name: `${type}_plain`, type },
    { name: `${type}_scaled`, type, scale: 2 },
    { name: `${type}_wide`, type, scale: 12 },
  ]),
  { name: "f32_a", type: "f32" },
  { name: "f64_a", type: "f64" },
  { name: "c1", type: "char[1]" },
  { name: "c9", type: "char[9]" },
  { name: "c40", type: "char[40]" },
  { name: "b1", type: "bytes[1]" },
  { name: "b5", type: "bytes[5]" },
  { name: "b300", type: "bytes[300]" },
  { name: "f32_b", type: "f32" },
  { name: "f64_b", type: "f64" },
];

/** A 65,536-byte entry: a bytes field of 65,000 bytes, and fields after it near the entry's end. */
const LARGE_65536: FieldSpec[] = [
  { name: "id", type: "u64" },
  { name: "label", type: "char[100]" },
  { name: "blob", type: "bytes[65000]" },
  { name: "px", type: "i32", scale: 3 },
  { name: "ratio", type: "f64" },
];

Deno.test("the Python reader writes the reporter's CSV byte for byte for the default schema", async () => {
  const python = python3();
  if (python === undefined) return;
  await scenario("py_default", (s) => sameCsv(s, python, 3000, ["--capacity", "4096"]));
});

Deno.test("the Python reader writes every type, scale and float special of a 64-byte entry as the reporter does", async () => {
  const python = python3();
  if (python === undefined) return;
  await scenario(
    "py_types64",
    (s) => sameCsv(s, python, 2100, ["--capacity", "4096"], EVERY_TYPE_64),
  );
});

Deno.test("the Python reader writes every type, char[N] and bytes[N] of 1,024-byte entries as the reporter does", async () => {
  const python = python3();
  if (python === undefined) return;
  await scenario(
    "py_types1k",
    (s) =>
      sameCsv(s, python, 2100, ["--capacity", "4096", "--entry-size", "1024"], EVERY_TYPE_1024),
  );
});

Deno.test("the Python reader writes 65,536-byte entries with a bytes[65000] field as the reporter does", async () => {
  const python = python3();
  if (python === undefined) return;
  await scenario(
    "py_64k",
    (s) => sameCsv(s, python, 64, ["--capacity", "64", "--entry-size", "65536"], LARGE_65536),
  );
});

Deno.test("a lapped Python reader resumes at write_ptr - capacity, loses the same range as the reporter and counts it in reader_lost", async () => {
  const python = python3();
  if (python === undefined) return;
  await scenario("py_lapped", async (s) => {
    // 1,000 entries into 16 slots before either reader starts: both resume at read_ptr 0, one
    // lap behind, so both lose 0..983 and read 984..999.
    await publish(s, ["--count", "1000", "--capacity", "16"]);
    const stderr = await runPython(python, s);
    assert.match(stderr, /lost entries 0\.\.983 \(984\): overwritten before they were read/);
    await runReporter(s);
    assertSameBytes(s);
    assert.equal(readU64(s.name, READER_LOST_OFFSET + PYTHON_ID * 8), 984);
    assert.equal(readU64(s.name, READ_PTRS_OFFSET + PYTHON_ID * 8), 1000);
    assert.equal(s.read("py.csv").split("\n")[1]!.split(",")[0], "984");
  });
});

Deno.test("the Python reader repairs a torn last row and resumes after the last complete one, ending with the reporter's bytes", async () => {
  const python = python3();
  if (python === undefined) return;
  await scenario("py_torn", async (s) => {
    await publish(s, ["--count", "150", "--capacity", "1024"]);
    await runPython(python, s);
    // A crash mid-row: the file ends inside the row of seq 100, and read_ptr lags it (60).
    const bytes = Deno.readFileSync(s.path("py.csv"));
    const text = new TextDecoder().decode(bytes);
    const row100 = text.indexOf("\n100,") + 1;
    Deno.writeFileSync(s.path("py.csv"), bytes.subarray(0, row100 + 12));
    writeU64(s.name, READ_PTRS_OFFSET + PYTHON_ID * 8, 60);
    await publish(s, ["--count", "50"]);
    const stderr = await runPython(python, s);
    assert.match(stderr, /removed a partial last line \(12 bytes\)/);
    assert.match(stderr, /reading \S+ from seq 100 /);
    await runReporter(s);
    assertSameBytes(s);
  });
});

Deno.test("the Python reader moves a file of another epoch aside under the reporter's name for it", async () => {
  const python = python3();
  if (python === undefined) return;
  await scenario("py_epoch", async (s) => {
    await publish(s, ["--count", "20"]);
    await runPython(python, s, "py.csv");
    await runReporter(s, "ts.csv");
    const old = positions(s.name)!.epoch;
    // The aside name is taken already: the next one is numbered.
    Deno.writeTextFileSync(s.path(`py.epoch-${old}.csv`), "taken\n");
    Deno.writeTextFileSync(s.path(`ts.epoch-${old}.csv`), "taken\n");
    await publish(s, ["--count", "30", "--recreate"]);
    const stderr = await runPython(python, s, "py.csv");
    assert.match(stderr, new RegExp(`moved the old rows to \\S*py\\.epoch-${old}\\.1\\.csv`));
    await runReporter(s, "ts.csv");
    assertSameBytes(s);
    assertSameBytes(s, `py.epoch-${old}.1.csv`, `ts.epoch-${old}.1.csv`);
  });
});

Deno.test("the Python reader and the reporter hold a reader id by the same lock: each refuses the other's id with exit 6", async () => {
  const python = python3();
  if (python === undefined) return;
  await scenario("py_lock", async (s) => {
    await publish(s, ["--count", "10"]);
    // The Python reader holds id 1 while it runs (no --until-caught-up): the reporter is refused.
    const held = new Deno.Command(python, {
      args: [SCRIPT, "report", `${PYTHON_ID}`, "--name", s.name, "--out", "py.csv"],
      cwd: s.dir,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    try {
      await waitForReadPtr(s.name, PYTHON_ID, 10);
      const refused = s.reporter(PYTHON_ID, ["--out", "ts.csv"]);
      assert.equal(await refused.waitExit(), 6, refused.describe());
      assert.match(refused.stderr, new RegExp(`held by live pid ${held.pid}`));
    } finally {
      held.kill("SIGTERM");
    }
    const out = await held.output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    // And the other way round.
    const reporter = s.reporter(PYTHON_ID, ["--out", "ts.csv"]);
    await waitFor("the reporter to hold reader id 1", () => reporter.stderr.includes("reading "));
    const result = await new Deno.Command(python, {
      args: [SCRIPT, "report", `${PYTHON_ID}`, "--name", s.name, "--out", "py2.csv"],
      cwd: s.dir,
      stdin: "null",
    }).output();
    const stderr = new TextDecoder().decode(result.stderr);
    assert.equal(result.code, 6, stderr);
    assert.match(stderr, new RegExp(`is held by live pid ${reporter.pid}`));
    reporter.signal("SIGTERM");
    assert.equal(await reporter.waitExit(), 0, reporter.describe());
  });
});
