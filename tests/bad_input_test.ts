/**
 * Every kind of bad input to the real programs: bad arguments, invalid segments, output files
 * that cannot be opened or do not match, and roles held by a live process. Each fails with its
 * own exit status and a one-line message, and changes nothing.
 */
import assert from "node:assert/strict";
import {
  CAPACITY_OFFSET,
  ENTRY_SIZE_OFFSET,
  MAGIC_OFFSET,
  READER_OWNERS_OFFSET,
  segmentSize,
  slotOffset,
  VERSION_OFFSET,
  WRITER_OWNER_OFFSET,
} from "../layout.ts";
import { RingWriter } from "../ring.ts";
import { defineSchema } from "../schema.ts";
import { Segment } from "../segment.ts";
import {
  closeAll,
  createRawShm,
  positions,
  type Proc,
  readRawShm,
  readU64,
  resizeShm,
  scenario,
  startReporter,
  startWriter,
  tempDir,
  uniqueName,
  unlinkQuietly,
  waitFor,
} from "./_helpers.ts";

/** Asserts that `p` exits with `code` and exactly one stderr line `<program>: error: ...`. */
async function failsWith(p: Proc, code: number, program: string, pattern: RegExp): Promise<void> {
  const actual = await p.waitExit();
  assert.equal(actual, code, `${p.label} exit status\n${p.describe()}`);
  const lines = p.stderr.trimEnd().split("\n");
  assert.equal(lines.length, 1, `one line on stderr\n${p.describe()}`);
  assert.ok(p.stderr.endsWith("\n"));
  assert.match(lines[0]!, new RegExp(`^${program}: error: `));
  assert.match(lines[0]!, pattern);
  assert.equal(p.stdout, "", "nothing on stdout");
}

/** The pid held in an owner word. */
function pidOf(word: number): number {
  return word % 2 ** 32;
}

Deno.test("bad arguments: writer and reporter exit 2 with a one-line message and create nothing", async () => {
  const dir = await tempDir();
  const name = uniqueName("badargs");
  const procs: Proc[] = [];
  try {
    const reporterCases: [string[], RegExp][] = [
      [[], /reader id is missing/],
      [["x", "--name", name], /reader id must be an integer from 0 to 7: current value is "x"/],
      [["8", "--name", name], /current value is "8"/],
      [["1.0", "--name", name], /current value is "1.0"/],
      [["0", "--name", name, "--bogus"], /bogus/],
      [["0", "--name", "bad"], /current value is "bad"/],
      [["0", "--name", name, "--fsync", "always"], /--fsync must be none or batch/],
      [["0", "--name", name, "--idle", "nap"], /--idle must be one of/],
    ];
    const writerCases: [string[], RegExp][] = [
      [["--name", name, "--capacity", "1000"], /power of two.*current value is 1000/],
      [["--name", name, "--capacity", "0"], /--capacity must be an integer/],
      [["--name", "/a/b"], /current value is "\/a\/b"/],
      [["--name", name, "--bogus"], /bogus/],
      [["--name", name, "--count", "ten"], /--count must be an integer.*"ten"/],
      [["--name", name, "--entry-size", "1000"], /--entry-size must be a power of two.*1000/],
      [["--name", name, "--entry-size", "32"], /--entry-size must be an integer.*"32"/],
      [
        ["--name", name, "--entry-size", "65536", "--capacity", "65536"],
        /capacity 65536 and entry size 65536/,
      ],
    ];
    const runs = [
      ...reporterCases.map(([args, pattern]) => {
        const p = startReporter(args, dir);
        procs.push(p);
        return failsWith(p, 2, "reporter", pattern);
      }),
      ...writerCases.map(([args, pattern]) => {
        const p = startWriter(args, dir);
        procs.push(p);
        return failsWith(p, 2, "writer", pattern);
      }),
    ];
    await Promise.all(runs);
    assert.ok(!Segment.exists(name), "no segment was created");
    assert.deepEqual([...Deno.readDirSync(dir)], [], "no file was created");
  } finally {
    await closeAll(...procs);
    unlinkQuietly(name);
    await Deno.remove(dir, { recursive: true });
  }
});

/** Segment corruptions, each with the message part naming the bad value. */
const CORRUPTIONS: { what: string; corrupt: (view: DataView) => void; message: RegExp }[] = [
  {
    what: "magic",
    corrupt: (v) => v.setUint32(MAGIC_OFFSET, 0xdeadbeef, true),
    message: /magic must be 0x53545052: current value is 0xDEADBEEF/,
  },
  {
    what: "version",
    corrupt: (v) => v.setUint32(VERSION_OFFSET, 2, true),
    message: /layout version must be 1: current value is 2/,
  },
  {
    what: "entry size",
    corrupt: (v) => v.setUint32(ENTRY_SIZE_OFFSET, 96, true),
    message: /entry_size must be a power of two from 64 to 65536: current value is 96/,
  },
  {
    what: "entry size for its size",
    corrupt: (v) => v.setUint32(ENTRY_SIZE_OFFSET, 128, true),
    message:
      /size must be entries_offset \+ capacity x entry_size = 2432 bytes: current value is 1408/,
  },
  {
    what: "entry size for its capacity",
    corrupt: (v) => {
      v.setUint32(ENTRY_SIZE_OFFSET, 65536, true);
      v.setUint32(CAPACITY_OFFSET, 1 << 16, true);
    },
    message:
      /capacity x entry_size must be at most 2\^30 bytes: current values are 65536 and 65536/,
  },
];

for (const { what, corrupt, message } of CORRUPTIONS) {
  Deno.test(`a segment with a wrong ${what}: writer and reporter exit 3 naming the value, and nothing changes`, async () => {
    await scenario(`bad${what}`, async (s) => {
      using seg = Segment.create(s.name, { capacity: 16 });
      corrupt(new DataView(seg.buffer));
      const before = new Uint8Array(seg.buffer).slice();
      const w = s.writer(["--count", "10"]);
      const r = s.reporter(0);
      const named = new RegExp(`Cannot use segment ${s.name} as .*${message.source}`);
      await Promise.all([failsWith(w, 3, "writer", named), failsWith(r, 3, "reporter", named)]);
      assert.deepEqual(new Uint8Array(seg.buffer), before, "segment bytes unchanged");
      assert.deepEqual([...Deno.readDirSync(s.dir)], [], "no output file");
    });
  });
}

Deno.test("a segment of the wrong size: writer and reporter exit 3 naming the size, and nothing changes", async () => {
  await scenario("badsize", async (s) => {
    using seg = Segment.create(s.name, { capacity: 16 });
    const size = segmentSize(16);
    resizeShm(s.name, size + 4096);
    const before = readRawShm(s.name);
    assert.equal(before.length, size + 4096);
    const w = s.writer(["--count", "10"]);
    const r = s.reporter(0);
    const named = new RegExp(
      `Cannot use segment ${s.name} as its size must be entries_offset \\+ capacity x entry_size = ${size} bytes: current value is ${
        size + 4096
      }`,
    );
    await Promise.all([failsWith(w, 3, "writer", named), failsWith(r, 3, "reporter", named)]);
    assert.deepEqual(readRawShm(s.name), before, "segment size and bytes unchanged");
    assert.equal(seg.size, size);
    assert.deepEqual([...Deno.readDirSync(s.dir)], [], "no output file");
  });
});

Deno.test("a raw shared-memory object smaller than a header: exit 3 naming its size, and nothing changes", async () => {
  await scenario("rawsmall", async (s) => {
    createRawShm(s.name, 100);
    const w = s.writer(["--count", "10"]);
    const r = s.reporter(0);
    const named = new RegExp(`Cannot use segment ${s.name} as its size .*current value is 100$`);
    await Promise.all([failsWith(w, 3, "writer", named), failsWith(r, 3, "reporter", named)]);
    assert.deepEqual(readRawShm(s.name), new Uint8Array(100), "still 100 zero bytes");
  });
});

Deno.test("writer given a --capacity different from the existing segment's exits 3 and changes nothing", async () => {
  await scenario("capdiff", async (s) => {
    const w1 = s.writer(["--count", "10", "--rate", "0", "--capacity", "64"]);
    assert.equal(await w1.waitExit(), 0);
    const before = positions(s.name)!;
    const w2 = s.writer(["--count", "10", "--capacity", "128"]);
    await failsWith(w2, 3, "writer", /its capacity is 64 but --capacity 128 was given/);
    assert.deepEqual(positions(s.name), before);
    assert.equal(readU64(s.name, WRITER_OWNER_OFFSET), 0, "writer role not left taken");
  });
});

Deno.test("writer given an --entry-size different from the existing segment's exits 3 and changes nothing", async () => {
  await scenario("esdiff", async (s) => {
    const w1 = s.writer(["--count", "10", "--rate", "0", "--entry-size", "256"]);
    assert.equal(await w1.waitExit(), 0);
    const before = positions(s.name)!;
    const w2 = s.writer(["--count", "10", "--entry-size", "1024"]);
    await failsWith(w2, 3, "writer", /its entry size is 256 but --entry-size 1024 was given/);
    assert.deepEqual(positions(s.name), before);
  });
});

Deno.test("a --schema larger than the payload of --entry-size: writer exits 2 naming both, and creates nothing", async () => {
  await scenario("schemabig", async (s) => {
    Deno.writeTextFileSync(
      s.path("s.json"),
      JSON.stringify([{ name: "id", type: "u64" }, { name: "blob", type: "bytes[1000]" }]),
    );
    const w = s.writer(["--schema", "s.json", "--entry-size", "1024"]);
    await failsWith(
      w,
      2,
      "writer",
      /--schema s.json does not fit --entry-size 1024: its fields take 1012 payload bytes .* entry size 1024 holds 1008: use an entry size of at least 2048/,
    );
    assert.ok(!Segment.exists(s.name), "no segment was created");
  });
});

Deno.test("a bytes field whose stored length is above N: the reporter exits 3 naming the seq, field and length, and writes no row past the good ones", async () => {
  await scenario("bytesbad", async (s) => {
    const schema = defineSchema([{ name: "blob", type: "bytes[8]" }]);
    {
      using seg = Segment.create(s.name, { capacity: 16, entrySize: 128, schema });
      const w = new RingWriter(seg.buffer);
      for (let i = 0; i < 5; i++) w.publishRecord({ blob: new Uint8Array(i) });
      // Entry 3's length word claims 9 bytes of an 8-byte field: what a broken writer leaves.
      const at = slotOffset(3, 16, seg.info.entriesOffset, 128) + schema.fields[0]!.offset;
      new DataView(seg.buffer).setUint32(at, 9, true);
    }
    const r = s.reporter(0, ["--quiet"]);
    await failsWith(
      r,
      3,
      "reporter",
      /Cannot use entry 3 as field blob length must be at most 8: current value is 9/,
    );
    assert.equal(s.read("output_0.csv"), "seq,timestamp_ns,blob,epoch\n", "no row of that batch");
    assert.equal(positions(s.name)!.readPtrs[0], 0, "read_ptr did not pass the damaged entry");
  });
});

Deno.test("an output file that cannot be opened: reporter exits 5 and read_ptr does not advance", async () => {
  await scenario("noout", async (s) => {
    const w = s.writer(["--count", "100", "--rate", "0"]);
    assert.equal(await w.waitExit(), 0);
    Deno.mkdirSync(s.path("adir"));
    const outside = `../${uniqueName("outside").slice(1)}.csv`;
    const cases: [number, string, RegExp][] = [
      [0, "missing/output_0.csv", /Cannot open output file missing\/output_0\.csv: /],
      [1, "adir", /Cannot open output file adir: /],
      [2, outside, new RegExp(`Cannot open output file \\.\\./.*\\.csv: `)],
    ];
    await Promise.all(cases.map(([id, out, pattern]) => {
      const r = s.reporter(id, ["--out", out]);
      return failsWith(r, 5, "reporter", pattern);
    }));
    const p = positions(s.name)!;
    assert.equal(p.writePtr, 100);
    assert.deepEqual(p.readPtrs, [0, 0, 0, 0, 0, 0, 0, 0], "no read_ptr advanced");
    for (const [id] of cases) {
      assert.equal(readU64(s.name, READER_OWNERS_OFFSET + id * 8), 0, `reader id ${id} released`);
    }
    assert.deepEqual([...Deno.readDirSync(s.path("adir"))], []);
    assert.deepEqual([...Deno.readDirSync(s.dir)].map((e) => e.name), ["adir"]);
    assert.throws(() => Deno.statSync(`${s.dir}/${outside}`), Deno.errors.NotFound);
  });
});

Deno.test("an output file that is not this reporter's CSV: exit 8, file untouched, read_ptr unchanged", async () => {
  await scenario("foreign", async (s) => {
    const w = s.writer(["--count", "100", "--rate", "0"]);
    assert.equal(await w.waitExit(), 0);
    const epoch = positions(s.name)!.epoch;
    const header = "seq,timestamp_ns,symbol,price,quantity,side,epoch\n";
    const files: [number, string, string, RegExp][] = [
      [
        0,
        "foreign.csv",
        "name,age\nada,36\n",
        /header must be "seq,timestamp_ns,symbol,price,quantity,side,epoch": current value is "name,age"/,
      ],
      [
        1,
        "garbage.csv",
        `${header}0,1,AAPL,100.0000,1,B,${epoch}\nnot a row\n`,
        /last row is not a reporter row: current value is "not a row"/,
      ],
      [
        2,
        "ahead.csv",
        `${header}500,1,AAPL,100.0000,1,B,${epoch}\n`,
        /its last seq is 500 but segment .* has write_ptr 100/,
      ],
    ];
    for (const [, file, text] of files) Deno.writeTextFileSync(s.path(file), text);
    const stats = files.map(([, file]) => Deno.statSync(s.path(file)));
    await Promise.all(files.map(([id, file, , pattern]) => {
      const r = s.reporter(id, ["--out", file]);
      return failsWith(r, 8, "reporter", pattern);
    }));
    files.forEach(([, file, text], i) => {
      assert.equal(s.read(file), text, `${file} untouched`);
      assert.equal(Deno.statSync(s.path(file)).mtime?.getTime(), stats[i]!.mtime?.getTime());
    });
    assert.deepEqual(positions(s.name)!.readPtrs, [0, 0, 0, 0, 0, 0, 0, 0], "read_ptrs unchanged");
  });
});

Deno.test("a second reporter for a live reporter's id exits 6 naming the pid, and the first keeps going", async () => {
  await scenario("dupread", async (s) => {
    const w = s.writer(["--rate", "5000", "--capacity", "131072"]);
    const first = s.reporter(3);
    await waitFor(
      "reporter 3 to hold its id",
      () => positions(s.name) && pidOf(readU64(s.name, READER_OWNERS_OFFSET + 3 * 8)) === first.pid,
    );
    const second = s.reporter(3, ["--out", "second.csv"]);
    await failsWith(
      second,
      6,
      "reporter",
      new RegExp(`reader id 3 of segment ${s.name} is held by live pid ${first.pid}$`),
    );
    assert.ok(!first.exited, "the first reporter still runs");
    assert.equal(pidOf(readU64(s.name, READER_OWNERS_OFFSET + 3 * 8)), first.pid, "still holds");
    const at = positions(s.name)!.writePtr;
    await waitFor("the first reporter to keep copying", () => {
      const p = positions(s.name)!;
      return p.readPtrs[3]! > at;
    });
    assert.throws(() => Deno.statSync(s.path("second.csv")), Deno.errors.NotFound);
    first.signal("SIGTERM");
    w.signal("SIGTERM");
    assert.equal(await first.waitExit(), 0);
    assert.equal(await w.waitExit(), 0);
  });
});

Deno.test("a second writer while one is alive exits 6 naming its pid, and the first keeps going", async () => {
  await scenario("dupwrite", async (s) => {
    const first = s.writer(["--rate", "5000"]);
    await waitFor(
      "the writer to hold its role",
      () => positions(s.name) && pidOf(readU64(s.name, WRITER_OWNER_OFFSET)) === first.pid,
    );
    const second = s.writer(["--count", "10"]);
    await failsWith(
      second,
      6,
      "writer",
      new RegExp(`segment ${s.name} is held by live writer pid ${first.pid}$`),
    );
    assert.equal(pidOf(readU64(s.name, WRITER_OWNER_OFFSET)), first.pid, "still holds the role");
    const at = positions(s.name)!.writePtr;
    await waitFor("the first writer to keep writing", () => positions(s.name)!.writePtr > at);
    assert.ok(!first.exited);
    first.signal("SIGTERM");
    assert.equal(await first.waitExit(), 0);
    assert.equal(readU64(s.name, WRITER_OWNER_OFFSET), 0, "role released on exit");
  });
});
