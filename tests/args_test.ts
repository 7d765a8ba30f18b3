/**
 * Command-line validation of the writer and the reporter, in process: the parsers' results and
 * errors, and main()'s exit status and one-line message. No segment is touched.
 */
import assert from "node:assert/strict";
import { ExitCode, UsageError } from "../cli.ts";
import { main as reporterMain, parseReporterArgs } from "../reporter.ts";
import { main as writerMain, parseWriterArgs } from "../writer.ts";

/** Runs `fn` with console.error captured; returns its result and the captured lines. */
async function captureErrors<T>(fn: () => Promise<T>): Promise<{ value: T; lines: string[] }> {
  const lines: string[] = [];
  const original = console.error;
  console.error = (...args: unknown[]) => lines.push(args.map(String).join(" "));
  try {
    return { value: await fn(), lines };
  } finally {
    console.error = original;
  }
}

/** Asserts that `parse(args)` throws a UsageError whose message matches `pattern`. */
function usage(parse: (args: string[]) => unknown, args: string[], pattern: RegExp): void {
  assert.throws(
    () => parse(args),
    (e: Error) => {
      assert.ok(e instanceof UsageError, `${JSON.stringify(args)}: ${e}`);
      assert.match(e.message, pattern, JSON.stringify(args));
      return true;
    },
  );
}

Deno.test("reporter args: an id alone gives the documented defaults", () => {
  assert.deepEqual(parseReporterArgs(["3"]), {
    id: 3,
    name: "/rpt_sys_shm",
    out: "output_3.csv",
    fsync: "none",
    idle: "sleep",
    batch: 4096,
    quiet: false,
  });
  assert.deepEqual(
    parseReporterArgs([
      "7",
      "--name",
      "/rpt_t2_x",
      "--out",
      "a.csv",
      "--fsync",
      "batch",
      "--idle",
      "spin",
      "--batch",
      "1",
      "--quiet",
    ]),
    {
      id: 7,
      name: "/rpt_t2_x",
      out: "a.csv",
      fsync: "batch",
      idle: "spin",
      batch: 1,
      quiet: true,
    },
  );
  assert.equal(parseReporterArgs(["--help"]), "help");
  assert.equal(parseReporterArgs(["-h"]), "help");
});

Deno.test("reporter args: a missing id is a usage error", () => {
  usage(parseReporterArgs, [], /reader id is missing/);
  usage(parseReporterArgs, ["--name", "/rpt_t2_x"], /reader id is missing/);
});

Deno.test("reporter args: a non-integer id is a usage error naming it", () => {
  usage(parseReporterArgs, ["x"], /integer from 0 to 7: current value is "x"/);
  usage(parseReporterArgs, ["1.5"], /current value is "1.5"/);
  usage(parseReporterArgs, ["1e0"], /current value is "1e0"/);
  usage(parseReporterArgs, [""], /current value is ""/);
  usage(parseReporterArgs, [" 1"], /current value is " 1"/);
  usage(parseReporterArgs, ["0x1"], /current value is "0x1"/);
  usage(parseReporterArgs, ["-1"], /-1/);
});

Deno.test("reporter args: id 8 and above are usage errors", () => {
  usage(parseReporterArgs, ["8"], /integer from 0 to 7: current value is "8"/);
  usage(parseReporterArgs, ["99999999999999999999"], /current value is "99999999999999999999"/);
});

Deno.test("reporter args: two ids, unknown flags and missing values are usage errors", () => {
  usage(parseReporterArgs, ["1", "2"], /one reader id: current value is 1 2/);
  usage(parseReporterArgs, ["1", "--bogus"], /bogus/);
  usage(parseReporterArgs, ["1", "--name"], /name/);
  usage(parseReporterArgs, ["1", "--capacity", "16"], /capacity/);
});

Deno.test("reporter args: a bad --name is a usage error naming it", () => {
  usage(parseReporterArgs, ["1", "--name", "noslash"], /current value is "noslash"/);
  usage(parseReporterArgs, ["1", "--name", "/a/b"], /current value is "\/a\/b"/);
  usage(parseReporterArgs, ["1", "--name", "/"], /current value is "\/"/);
  usage(parseReporterArgs, ["1", "--name", "/" + "a".repeat(31)], /a{31}/);
  usage(parseReporterArgs, ["1", "--name", "/sp ace"], /Cannot start reporter as/);
  assert.equal(
    (parseReporterArgs(["1", "--name", "/" + "a".repeat(30)]) as { name: string }).name.length,
    31,
  );
});

Deno.test("reporter args: bad --fsync, --idle, --batch and --out are usage errors naming them", () => {
  usage(parseReporterArgs, ["1", "--fsync", "always"], /--fsync must be none or batch.*"always"/);
  usage(parseReporterArgs, ["1", "--idle", "nap"], /--idle must be one of sleep, spin.*"nap"/);
  usage(parseReporterArgs, ["1", "--batch", "0"], /--batch must be an integer from 1 to 65536/);
  usage(parseReporterArgs, ["1", "--batch", "65537"], /"65537"/);
  usage(parseReporterArgs, ["1", "--batch", "ten"], /"ten"/);
  usage(parseReporterArgs, ["1", "--out", ""], /--out must be a file path/);
  for (const idle of ["sleep", "spin", "backoff", "futex"]) {
    assert.equal((parseReporterArgs(["1", "--idle", idle]) as { idle: string }).idle, idle);
  }
});

Deno.test("writer args: no flags give the documented defaults", () => {
  assert.deepEqual(parseWriterArgs([]), {
    name: "/rpt_sys_shm",
    count: undefined,
    rate: 10_000,
    capacity: 1024,
    capacityGiven: false,
    entrySize: 64,
    entrySizeGiven: false,
    recreate: false,
    unlinkOnExit: false,
    quiet: false,
  });
  assert.deepEqual(
    parseWriterArgs([
      "--name",
      "/rpt_t2_w",
      "--count",
      "0",
      "--rate",
      "0",
      "--capacity",
      "16777216",
      "--entry-size",
      "64",
      "--recreate",
      "--unlink-on-exit",
      "--quiet",
    ]),
    {
      name: "/rpt_t2_w",
      count: 0,
      rate: 0,
      capacity: 16_777_216,
      capacityGiven: true,
      entrySize: 64,
      entrySizeGiven: true,
      recreate: true,
      unlinkOnExit: true,
      quiet: true,
    },
  );
  assert.equal(parseWriterArgs(["-h"]), "help");
});

Deno.test("writer args: a capacity that is not a power of two is a usage error naming it", () => {
  usage(parseWriterArgs, ["--capacity", "1000"], /power of two.*current value is 1000/);
  usage(parseWriterArgs, ["--capacity", "3"], /current value is 3/);
  usage(parseWriterArgs, ["--capacity", "0"], /--capacity must be an integer from 1.*"0"/);
  usage(parseWriterArgs, ["--capacity", "33554432"], /"33554432"/);
  usage(parseWriterArgs, ["--capacity", "1.5"], /"1.5"/);
  assert.equal((parseWriterArgs(["--capacity", "1"]) as { capacity: number }).capacity, 1);
});

Deno.test("writer args: an entry size that is not a power of two from 64 to 65536, or too large for the capacity, is a usage error naming the values", () => {
  usage(
    parseWriterArgs,
    ["--entry-size", "100"],
    /--entry-size must be a power of two.*current value is 100$/,
  );
  usage(
    parseWriterArgs,
    ["--entry-size", "32"],
    /--entry-size must be an integer from 64 to 65536.*"32"/,
  );
  usage(parseWriterArgs, ["--entry-size", "131072"], /from 64 to 65536.*"131072"/);
  usage(parseWriterArgs, ["--entry-size", "1k"], /"1k"/);
  usage(
    parseWriterArgs,
    ["--entry-size", "65536", "--capacity", "32768"],
    /at most 2\^30 bytes.*capacity 32768 and entry size 65536/,
  );
  const o = parseWriterArgs(["--entry-size", "65536", "--capacity", "16384"]);
  assert.ok(o !== "help" && o.entrySize === 65536 && o.entrySizeGiven);
});

Deno.test("writer args: bad --name, --count, --rate, unknown flags and positionals are usage errors", () => {
  usage(parseWriterArgs, ["--name", "rpt"], /Cannot start writer as .*current value is "rpt"/);
  usage(parseWriterArgs, ["--name", "/x/y"], /"\/x\/y"/);
  usage(parseWriterArgs, ["--count", "-5"], /count/);
  usage(parseWriterArgs, ["--count", "1e3"], /--count must be an integer.*"1e3"/);
  usage(parseWriterArgs, ["--rate", "fast"], /--rate must be an integer.*"fast"/);
  usage(parseWriterArgs, ["--bogus"], /bogus/);
  usage(parseWriterArgs, ["extra"], /extra/);
});

Deno.test("reporter main exits 2 with one line for each bad argument", async () => {
  const cases = [
    [],
    ["x"],
    ["8"],
    ["1", "--bogus"],
    ["1", "--name", "bad"],
    ["1", "--fsync", "sometimes"],
    ["1", "--idle", "doze"],
  ];
  for (const args of cases) {
    const { value, lines } = await captureErrors(() => reporterMain(args));
    assert.equal(value, ExitCode.USAGE, JSON.stringify(args));
    assert.equal(lines.length, 1, `one line for ${JSON.stringify(args)}: ${lines}`);
    assert.match(lines[0]!, /^reporter: error: \S/);
    assert.ok(!lines[0]!.includes("\n"));
  }
});

Deno.test("writer main exits 2 with one line for each bad argument", async () => {
  const cases = [
    ["--capacity", "1000"],
    ["--capacity", "0"],
    ["--entry-size", "100"],
    ["--entry-size", "65536", "--capacity", "1048576"],
    ["--name", "no-slash"],
    ["--rate", "-"],
    ["--bogus"],
    ["positional"],
  ];
  for (const args of cases) {
    const { value, lines } = await captureErrors(() => writerMain(args));
    assert.equal(value, ExitCode.USAGE, JSON.stringify(args));
    assert.equal(lines.length, 1, `one line for ${JSON.stringify(args)}: ${lines}`);
    assert.match(lines[0]!, /^writer: error: \S/);
  }
});
