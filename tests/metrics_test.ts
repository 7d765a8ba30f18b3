/**
 * `deno task status --serve`: the Prometheus endpoint, checked by a real Prometheus scraping it
 * and evaluating examples/prometheus/rules.yml, under 200 concurrent scrapes, with segments
 * missing, damaged and re-created, and with bad addresses.
 */
import assert from "node:assert/strict";
import {
  createRawShm,
  DEADLINE_MS,
  delay,
  positions,
  Proc,
  requireTool,
  scenario,
  tempDir,
  uniqueName,
  unlinkQuietly,
  waitFor,
} from "./_helpers.ts";
import {
  DEFAULT_LISTEN,
  formatMetrics,
  METRIC_NAMES,
  parseListenAddress,
  type SegmentLook,
} from "../metrics.ts";
import {
  CLEAN_FLAGS,
  REPORTER_FLAGS,
  spawnProgram,
  STATUS_FLAGS,
  statusFlagsFor,
  WRITER_FLAGS,
} from "../programs.ts";
import { ExitCode } from "../cli.ts";
import { DEFAULT_SCHEMA, schemaToJson } from "../schema.ts";
import { Segment } from "../segment.ts";
import type { ReaderStatus, Status } from "../segment_status.ts";
import { formatStatus } from "../status.ts";

const PROMETHEUS_INSTALL = "apt-get install prometheus";
const RULES = new URL("../examples/prometheus/rules.yml", import.meta.url);

// ---------------------------------------------------------------------------------------------
// A strict parser of the text exposition format 0.0.4: what every response must satisfy.

interface ParsedFamily {
  type: string;
  help: string;
  samples: { labels: Record<string, string>; value: number }[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const FLOAT = /^(?:[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]?Inf|NaN)$/;

function parseLabels(text: string, line: string): Record<string, string> {
  const labels: Record<string, string> = {};
  let i = 0;
  while (i < text.length) {
    const eq = text.indexOf("=", i);
    if (eq < 0) throw new Error(`label without "=": ${line}`);
    const name = text.slice(i, eq);
    if (!LABEL_NAME.test(name)) throw new Error(`bad label name ${name}: ${line}`);
    if (text[eq + 1] !== '"') throw new Error(`label value not quoted: ${line}`);
    let value = "";
    let j = eq + 2;
    for (;; j++) {
      const c = text[j];
      if (c === undefined) throw new Error(`unterminated label value: ${line}`);
      if (c === '"') break;
      if (c === "\\") {
        const next = text[++j];
        if (next === "n") value += "\n";
        else if (next === "\\" || next === '"') value += next;
        else throw new Error(`bad escape \\${next}: ${line}`);
      } else value += c;
    }
    if (name in labels) throw new Error(`duplicate label ${name}: ${line}`);
    labels[name] = value;
    i = j + 1;
    if (i < text.length) {
      if (text[i] !== ",") throw new Error(`expected "," after a label: ${line}`);
      i++;
    }
  }
  return labels;
}

/** Parses an exposition text, throwing on anything a Prometheus scrape would reject or warn on. */
function parseExposition(text: string): Map<string, ParsedFamily> {
  if (!text.endsWith("\n")) throw new Error("the text does not end with a newline");
  const families = new Map<string, ParsedFamily>();
  const finished = new Set<string>();
  const series = new Set<string>();
  let current: string | undefined;
  const family = (name: string) => {
    let f = families.get(name);
    if (f === undefined) families.set(name, f = { type: "", help: "", samples: [] });
    return f;
  };
  for (const line of text.slice(0, -1).split("\n")) {
    if (line === "") continue;
    const meta = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line);
    if (meta !== null) {
      const [, kind, name, rest] = meta;
      if (!NAME.test(name!)) throw new Error(`bad metric name: ${line}`);
      const f = family(name!);
      if (f.samples.length > 0) throw new Error(`${kind} after samples: ${line}`);
      if (kind === "TYPE") {
        if (f.type !== "") throw new Error(`second TYPE: ${line}`);
        if (!["counter", "gauge", "histogram", "summary", "untyped"].includes(rest!)) {
          throw new Error(`bad type: ${line}`);
        }
        f.type = rest!;
      } else {
        if (f.help !== "") throw new Error(`second HELP: ${line}`);
        f.help = rest!;
      }
      continue;
    }
    if (line.startsWith("#")) continue; // a comment
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)(?: (-?\d+))?$/.exec(line);
    if (m === null) throw new Error(`not a sample line: ${line}`);
    const [, name, labelText, valueText] = m;
    if (!FLOAT.test(valueText!)) throw new Error(`bad value: ${line}`);
    if (current !== name) {
      if (finished.has(name!)) throw new Error(`samples of ${name} are not together: ${line}`);
      if (current !== undefined) finished.add(current);
      current = name;
    }
    const labels = parseLabels(labelText ?? "", line);
    const key = `${name}${JSON.stringify(Object.entries(labels).sort())}`;
    if (series.has(key)) throw new Error(`duplicate series: ${line}`);
    series.add(key);
    const f = family(name!);
    if (f.type === "") throw new Error(`sample before its TYPE: ${line}`);
    const value = valueText === "+Inf"
      ? Infinity
      : valueText === "-Inf"
      ? -Infinity
      : Number(valueText);
    if (f.type === "counter" && !(value >= 0)) throw new Error(`negative counter: ${line}`);
    f.samples.push({ labels, value });
  }
  for (const [name, f] of families) {
    if (f.type === "" || f.help === "") throw new Error(`${name} lacks HELP or TYPE`);
    if (f.type === "counter" && !name.endsWith("_total")) {
      throw new Error(`counter ${name} does not end in _total`);
    }
  }
  return families;
}

/** The value of `metric` for the sample whose labels include `match`, or undefined. */
function valueOf(
  families: Map<string, ParsedFamily>,
  metric: string,
  match: Record<string, string>,
): number | undefined {
  return families.get(metric)?.samples.find((s) =>
    Object.entries(match).every(([k, v]) => s.labels[k] === v)
  )?.value;
}

// ---------------------------------------------------------------------------------------------
// Running things.

/** A loopback TCP port nobody listens on right now. */
function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** Starts `status --serve address` with `flags` (by default the grant for that address). */
function startServer(address: string, names: string[], flags = statusFlagsFor(address)): Proc {
  const args = ["--serve", address, ...names.flatMap((n) => ["--name", n])];
  return new Proc(`status --serve ${address}`, spawnProgram("status.ts", flags, args));
}

/** Starts the status server on a free loopback port; resolves once it listens. */
async function startServerOnFreePort(names: string[]): Promise<{ proc: Proc; base: string }> {
  const address = `127.0.0.1:${freePort()}`;
  const proc = startServer(address, names);
  await waitFor(`status --serve ${address} to listen`, () => {
    if (proc.exited) throw new Error(`status --serve exited\n${proc.describe()}`);
    return proc.stdout.includes("status: serving");
  });
  return { proc, base: `http://${address}` };
}

async function scrape(base: string): Promise<string> {
  const response = await fetch(`${base}/metrics`);
  const text = await response.text();
  assert.equal(response.status, 200, text);
  assert.equal(response.headers.get("content-type"), "text/plain; version=0.0.4; charset=utf-8");
  return text;
}

async function run(
  file: string,
  flags: readonly string[],
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await spawnProgram(file, flags, args).output();
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

/** `deno task status --json` (the task's exact flags) for segment `name`. */
async function statusJson(name: string): Promise<Status> {
  const out = await run("status.ts", STATUS_FLAGS, ["--name", name, "--json"]);
  assert.equal(out.code, 0, out.stderr);
  return JSON.parse(out.stdout);
}

/** `promtool check metrics` on `text`: its exit code and output. */
async function promtoolCheckMetrics(promtool: string, text: string): Promise<string> {
  const child = new Deno.Command(promtool, {
    args: ["check", "metrics"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(text));
  await writer.close();
  const out = await child.output();
  const said = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, `promtool check metrics failed:\n${said}\n--- input ---\n${text}`);
  return said;
}

// ---------------------------------------------------------------------------------------------
// Arguments, format and configuration.

Deno.test("deno.json's status and clean tasks use the flags of programs.ts; status may listen on the default address only", () => {
  const config = JSON.parse(Deno.readTextFileSync(new URL("../deno.json", import.meta.url)));
  assert.equal(config.tasks.status, `deno run ${STATUS_FLAGS.join(" ")} status.ts`);
  assert.equal(config.tasks.clean, `deno run ${CLEAN_FLAGS.join(" ")} clean.ts`);
  assert.equal(config.tasks.writer, `deno run ${WRITER_FLAGS.join(" ")} writer.ts`);
  assert.equal(config.tasks.reporter, `deno run ${REPORTER_FLAGS.join(" ")} reporter.ts`);
  assert.deepEqual(STATUS_FLAGS, ["--allow-ffi", `--allow-net=${DEFAULT_LISTEN}`]);
  assert.equal(DEFAULT_LISTEN, "127.0.0.1:9464");
});

Deno.test("--serve addresses: a port alone is loopback; hosts, [IPv6] and bad values", () => {
  assert.deepEqual(parseListenAddress("9464"), { hostname: "127.0.0.1", port: 9464 });
  assert.deepEqual(parseListenAddress("0.0.0.0:80"), { hostname: "0.0.0.0", port: 80 });
  assert.deepEqual(parseListenAddress("[::1]:9100"), { hostname: "::1", port: 9100 });
  assert.deepEqual(parseListenAddress("localhost:9100"), { hostname: "localhost", port: 9100 });
  const bad: [string, RegExp][] = [
    ["", /port must be an integer from 1 to 65535/],
    ["0", /port must be an integer from 1 to 65535/],
    ["65536", /port must be an integer from 1 to 65535: current value is "65536"/],
    ["127.0.0.1:", /port must be/],
    ["127.0.0.1:http", /port must be/],
    ["256.0.0.1:9464", /IPv4 address must have four numbers from 0 to 255/],
    ["1.2.3:9464", /host must be an IPv4 address/],
    ["::1:9464", /IPv6 address must be written in brackets/],
    ["[zz]:9464", /IPv6 address is not valid/],
    ["bad host:9464", /host must be/],
    [":9464", /host must be/],
  ];
  for (const [value, message] of bad) {
    assert.throws(() => parseListenAddress(value), message, value);
  }
});

function fakeStatus(name: string): Status {
  const reader = (id: number): ReaderStatus => ({
    id,
    read_ptr: 0,
    lag: 900,
    lag_ns: null,
    lapped: false,
    lost: 0,
    owner_pid: 0,
    alive: false,
    state: "none",
    heartbeat_age_ms: null,
  });
  const readers = Array.from({ length: 8 }, (_, id) => reader(id));
  readers[3] = {
    ...reader(3),
    read_ptr: 400,
    lag: 500,
    lag_ns: 1_500_000,
    lost: 7,
    owner_pid: 42,
    alive: true,
    state: "alive",
    heartbeat_age_ms: 250,
  };
  readers[5] = { ...reader(5), read_ptr: 100, lag: 800, heartbeat_age_ms: 9000 };
  return {
    name,
    version: 1,
    capacity: 1024,
    entry_size: 4096,
    epoch: "18446744073709551615",
    write_ptr: 900,
    rate: 0,
    writer: { pid: 41, alive: true, state: "alive", heartbeat_age_ms: 12.5 },
    readers,
    schema: schemaToJson(DEFAULT_SCHEMA),
  };
}

Deno.test("formatMetrics: every family has HELP and TYPE, values come from the status object, unused reader ids are left out", () => {
  const looks: SegmentLook[] = [
    { name: "/a", status: fakeStatus("/a") },
    { name: '/we"ird\\', error: "SegmentInvalidError: bad magic\nsecond line" },
  ];
  const text = formatMetrics(looks);
  const m = parseExposition(text);
  assert.deepEqual([...m.keys()].sort(), [...METRIC_NAMES].sort());
  assert.match(text, /^# segment \/we"ird\\ is down: SegmentInvalidError: bad magic second line$/m);
  assert.equal(valueOf(m, "rpt_segment_up", { segment: "/a" }), 1);
  assert.equal(valueOf(m, "rpt_segment_up", { segment: '/we"ird\\' }), 0);
  assert.deepEqual(m.get("rpt_segment_info")!.samples[0]!.labels, {
    segment: "/a",
    version: "1",
    capacity: "1024",
    entry_size: "4096",
    epoch: "18446744073709551615",
    schema_fingerprint: schemaToJson(DEFAULT_SCHEMA).fingerprint,
  });
  assert.equal(valueOf(m, "rpt_writer_entries_total", { segment: "/a" }), 900);
  assert.equal(valueOf(m, "rpt_writer_up", { segment: "/a" }), 1);
  assert.equal(valueOf(m, "rpt_writer_heartbeat_age_seconds", { segment: "/a" }), 0.0125);
  assert.deepEqual(m.get("rpt_reader_up")!.samples.map((s) => [s.labels.reader, s.value]), [
    ["3", 1],
    ["5", 0],
  ]);
  const r3 = { segment: "/a", reader: "3" };
  assert.equal(valueOf(m, "rpt_reader_entries_total", r3), 400);
  assert.equal(valueOf(m, "rpt_reader_lag_entries", r3), 500);
  assert.equal(valueOf(m, "rpt_reader_lag_seconds", r3), 0.0015);
  assert.equal(valueOf(m, "rpt_reader_lost_entries_total", r3), 7);
  assert.equal(valueOf(m, "rpt_reader_heartbeat_age_seconds", r3), 0.25);
  // A lag whose oldest entry was overwritten has no age: no sample rather than a made-up one.
  assert.equal(valueOf(m, "rpt_reader_lag_seconds", { reader: "5" }), undefined);
  assert.equal(m.get("rpt_segment_capacity_entries")!.samples[0]!.value, 1024);
});

Deno.test("the status table and /metrics agree on which reader ids are unused: owner, heartbeat, read_ptr and lost all zero, lock free", () => {
  const base = fakeStatus("/u").readers[0]!;
  const readers: ReaderStatus[] = [
    base, // never attached
    { ...base, id: 1, owner_pid: 77, state: "dead" },
    { ...base, id: 2, heartbeat_age_ms: 5 },
    { ...base, id: 3, read_ptr: 1, lag: 899 },
    { ...base, id: 4, lost: 3 },
    { ...base, id: 5, alive: true, state: "alive" },
    { ...base, id: 6, lapped: true }, // lapped by 900 > capacity yet never attached
    { ...base, id: 7, lag_ns: 12 },
  ];
  const status = { ...fakeStatus("/u"), capacity: 64, readers };
  const served = new Set(
    parseExposition(formatMetrics([{ name: "/u", status }])).get("rpt_reader_up")!.samples.map((
      s,
    ) => Number(s.labels.reader)),
  );
  const table = formatStatus(status).split("\n").filter((l) => /^\d /.test(l));
  const unusedRows = new Set(
    table.filter((l) => / unused$/.test(l)).map((l) => Number(l.split(" ")[0])),
  );
  assert.deepEqual([...served].sort(), [1, 2, 3, 4, 5]);
  assert.deepEqual([...unusedRows].sort(), [0, 6, 7]);
  for (const l of table.filter((l) => / unused$/.test(l))) {
    assert.match(l, /^\d +0 +900 +- +- +0 +- +unused$/, "no lag time and no lapped flag");
  }
  assert.match(table[1]!, / dead$/);
});

Deno.test("examples/prometheus/rules.yml passes promtool check rules and has the operator's alerts", async () => {
  const promtool = requireTool("promtool", PROMETHEUS_INSTALL);
  if (promtool === undefined) return;
  const out = await new Deno.Command(promtool, {
    args: ["check", "rules", RULES.pathname],
  }).output();
  const said = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, said);
  assert.match(said, /SUCCESS: \d+ rules found/);
  const rules = Deno.readTextFileSync(RULES);
  for (
    const alert of [
      "RptWriterDown",
      "RptReaderDown",
      "RptReaderLagging",
      "RptReaderLosingEntries",
      "RptWriterHeartbeatStale",
      "RptReaderHeartbeatStale",
    ]
  ) assert.match(rules, new RegExp(`alert: ${alert}\\n`), alert);
});

// ---------------------------------------------------------------------------------------------
// The server.

Deno.test("status --serve with the task's exact flags listens on 127.0.0.1:9464: /metrics, /status.json, 404 and 405, SIGINT exits 0", async () => {
  await scenario("srvdefault", async (s) => {
    const w = s.writer(["--count", "300", "--rate", "0"]);
    assert.equal(await w.waitExit(), 0, w.describe());
    const child = spawnProgram("status.ts", STATUS_FLAGS, ["--serve", "--name", s.name]);
    const server = new Proc("status --serve", child);
    try {
      await waitFor("status --serve to listen on the default address", () => {
        if (server.exited) throw new Error(`status --serve exited\n${server.describe()}`);
        return server.stdout.includes("serving http://127.0.0.1:9464/metrics");
      });
      const base = "http://127.0.0.1:9464";
      const m = parseExposition(await scrape(base));
      assert.equal(valueOf(m, "rpt_segment_up", { segment: s.name }), 1);
      assert.equal(valueOf(m, "rpt_writer_entries_total", { segment: s.name }), 300);
      const json = await (await fetch(`${base}/status.json`)).json();
      const expected = await statusJson(s.name);
      assert.equal(json.length, 1);
      assert.deepEqual(Object.keys(json[0]), Object.keys(expected));
      assert.equal(json[0].write_ptr, expected.write_ptr);
      assert.equal(json[0].epoch, expected.epoch);
      assert.deepEqual(json[0].readers.map((r: { read_ptr: number }) => r.read_ptr), [
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
      ]);
      for (const path of ["/", "/metric", "/metrics/x", "/status"]) {
        const r = await fetch(`${base}${path}`);
        await r.body?.cancel();
        assert.equal(r.status, 404, path);
      }
      const post = await fetch(`${base}/metrics`, { method: "POST", body: "x" });
      await post.body?.cancel();
      assert.equal(post.status, 405);
      server.signal("SIGINT");
      assert.equal(await server.waitExit(), 0, server.describe());
    } finally {
      await server.close();
    }
  });
});

Deno.test("a missing, a damaged and a re-created segment are served as down or up, and the server keeps serving", async () => {
  const missing = uniqueName("missing");
  const damaged = uniqueName("damaged");
  createRawShm(damaged, 100);
  const { proc, base } = await startServerOnFreePort([missing, damaged]);
  try {
    const down = (text: string, name: string, error: RegExp) => {
      const m = parseExposition(text);
      assert.equal(valueOf(m, "rpt_segment_up", { segment: name }), 0, text);
      assert.equal(valueOf(m, "rpt_writer_entries_total", { segment: name }), undefined, text);
      const comment = text.split("\n").find((l) => l.startsWith(`# segment ${name} is down: `));
      assert.match(comment ?? "", error, text);
    };
    const first = await scrape(base);
    down(first, missing, /SegmentNotFoundError: .*does not exist/);
    down(first, damaged, /SegmentInvalidError: .*100/);
    const json = await (await fetch(`${base}/status.json`)).json();
    assert.deepEqual(json.map((j: { name: string; up: boolean }) => [j.name, j.up]), [
      [missing, false],
      [damaged, false],
    ]);

    // Created by the real writer: up, with its counter and epoch.
    const w = new Proc(
      "writer",
      spawnProgram("writer.ts", WRITER_FLAGS, ["--name", missing, "--count", "10", "--rate", "0"]),
    );
    assert.equal(await w.waitExit(), 0, w.describe());
    let m = parseExposition(await scrape(base));
    assert.equal(valueOf(m, "rpt_segment_up", { segment: missing }), 1);
    assert.equal(valueOf(m, "rpt_writer_entries_total", { segment: missing }), 10);
    const epochOf = (p: Map<string, ParsedFamily>) =>
      p.get("rpt_segment_info")!.samples.find((x) => x.labels.segment === missing)!.labels.epoch!;
    const firstEpoch = epochOf(m);

    // Removed and re-created over and over while scrapes run back to back: every scrape is
    // served, parses, and shows the segment either down (with a comment) or up with an epoch.
    let stop = false;
    let sawDown = 0;
    const epochs = new Set<string>();
    let failure: unknown;
    const scraper = (async () => {
      while (!stop && failure === undefined) {
        const text = await scrape(base);
        const p = parseExposition(text);
        const up = valueOf(p, "rpt_segment_up", { segment: missing });
        if (up === 0) {
          sawDown++;
          assert.match(text, new RegExp(`^# segment ${missing} is down: `, "m"));
        } else {
          assert.equal(up, 1, text);
          epochs.add(epochOf(p));
        }
        assert.equal(valueOf(p, "rpt_segment_up", { segment: damaged }), 0, text);
      }
    })().catch((e) => (failure = e));
    const deadline = Date.now() + DEADLINE_MS;
    for (let i = 0; i < 40 || sawDown === 0 || epochs.size < 2; i++) {
      if (failure !== undefined) throw failure;
      if (Date.now() > deadline) {
        throw new Error(`scrapes saw the segment down ${sawDown} times, epochs ${[...epochs]}`);
      }
      Segment.unlink(missing);
      await delay(5);
      Segment.create(missing, { capacity: 64 }).close();
      await delay(5);
    }
    stop = true;
    await scraper;
    if (failure !== undefined) throw failure;
    assert.ok(![...epochs].every((e) => e === firstEpoch));

    // Removed: down; re-created once more: up with the new epoch.
    Segment.unlink(missing);
    down(await scrape(base), missing, /SegmentNotFoundError/);
    {
      using seg = Segment.create(missing, { capacity: 64, entrySize: 2048 });
      m = parseExposition(await scrape(base));
      assert.equal(valueOf(m, "rpt_segment_up", { segment: missing }), 1);
      const info = m.get("rpt_segment_info")!.samples.find((s) => s.labels.segment === missing)!;
      assert.equal(info.labels.epoch, seg.info.epoch.toString());
      assert.equal(info.labels.capacity, "64");
      assert.equal(info.labels.entry_size, "2048");
      assert.equal(valueOf(m, "rpt_writer_entries_total", { segment: missing }), 0);
    }
    assert.ok(!proc.exited, proc.describe());
  } catch (e) {
    console.error(proc.describe());
    throw e;
  } finally {
    await proc.close();
    unlinkQuietly(missing);
    unlinkQuietly(damaged);
  }
});

Deno.test("status --serve: a bad address or port exits 2, a port in use or not granted exits 19, each with one line naming the value", async () => {
  const oneLine = (stderr: string) => {
    assert.equal(stderr.trim().split("\n").length, 1, stderr);
    assert.match(stderr, /^status: error: Cannot serve metrics as /);
  };
  for (
    const [address, message] of [
      [
        "127.0.0.1:99999",
        /port must be an integer from 1 to 65535: current value is "127.0.0.1:99999"/,
      ],
      ["300.1.1.1:9464", /IPv4 address .* current value is "300.1.1.1:9464"/],
      ["::1:9464", /IPv6 address must be written in brackets/],
      ["no_such host:9464", /host must be/],
      ["http", /port must be/],
    ] as const
  ) {
    const out = await run("status.ts", STATUS_FLAGS, ["--serve", address]);
    assert.equal(out.code, 2, `${address}: ${out.stderr}`);
    oneLine(out.stderr);
    assert.match(out.stderr, message);
  }
  const combined = await run("status.ts", STATUS_FLAGS, ["--serve", "--json"]);
  assert.equal(combined.code, 2, combined.stderr);
  assert.match(combined.stderr, /--serve cannot be combined with --json/);
  const twoNames = await run("status.ts", STATUS_FLAGS, ["--name", "/a", "--name", "/b"]);
  assert.equal(twoNames.code, 2, twoNames.stderr);
  assert.match(twoNames.stderr, /--name may be given once without --serve/);

  // A port in use.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const address = `127.0.0.1:${(listener.addr as Deno.NetAddr).port}`;
    const out = await run("status.ts", statusFlagsFor(address), ["--serve", address]);
    assert.equal(out.code, ExitCode.LISTEN, out.stderr);
    oneLine(out.stderr);
    assert.match(out.stderr, new RegExp(`already in use: ${address}\\n$`));
  } finally {
    listener.close();
  }

  // Another address than the task grants: refused, saying which grant it needs.
  const other = `127.0.0.1:${freePort()}`;
  const refused = await run("status.ts", STATUS_FLAGS, ["--serve", other]);
  assert.equal(refused.code, ExitCode.LISTEN, refused.stderr);
  oneLine(refused.stderr);
  assert.match(refused.stderr, new RegExp(`not granted \\(run deno with --allow-net=${other}\\)`));
});

// ---------------------------------------------------------------------------------------------
// Against a real Prometheus.

/** A Prometheus server scraping `target` every second and evaluating `rules` every second. */
async function startPrometheus(
  prometheus: string,
  target: string,
  rules: string,
): Promise<{ proc: Proc; api: string; dir: string }> {
  const dir = await tempDir();
  const port = freePort();
  // The shipped rules wait `for:` minutes; this copy waits one second so the test is quick.
  Deno.writeTextFileSync(`${dir}/rules.yml`, rules.replace(/\bfor: \S+/g, "for: 1s"));
  Deno.writeTextFileSync(
    `${dir}/prometheus.yml`,
    [
      "global:",
      "  scrape_interval: 1s",
      "  scrape_timeout: 1s",
      "  evaluation_interval: 1s",
      "rule_files:",
      `  - ${dir}/rules.yml`,
      "scrape_configs:",
      "  - job_name: rpt",
      "    static_configs:",
      `      - targets: ["${target}"]`,
      "",
    ].join("\n"),
  );
  const proc = new Proc(
    "prometheus",
    new Deno.Command(prometheus, {
      args: [
        `--config.file=${dir}/prometheus.yml`,
        `--storage.tsdb.path=${dir}/data`,
        `--web.listen-address=127.0.0.1:${port}`,
        "--log.level=warn",
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn(),
  );
  const api = `http://127.0.0.1:${port}`;
  await waitFor("prometheus to be ready", async () => {
    if (proc.exited) throw new Error(`prometheus exited\n${proc.describe()}`);
    try {
      const r = await fetch(`${api}/-/ready`);
      await r.body?.cancel();
      return r.status === 200;
    } catch {
      return false;
    }
  }, 60_000);
  return { proc, api, dir };
}

/** The value of a PromQL instant query with one result, or undefined. */
async function query(api: string, promql: string): Promise<number | undefined> {
  const r = await fetch(`${api}/api/v1/query?query=${encodeURIComponent(promql)}`);
  const body = await r.json();
  assert.equal(body.status, "success", JSON.stringify(body));
  const result = body.data.result as { value: [number, string] }[];
  return result.length === 1 ? Number(result[0]!.value[1]) : undefined;
}

/** Firing alerts as "name reader" strings. */
async function firing(api: string, segment: string): Promise<Set<string>> {
  const r = await fetch(`${api}/api/v1/alerts`);
  const body = await r.json();
  const alerts = body.data.alerts as { labels: Record<string, string>; state: string }[];
  return new Set(
    alerts.filter((a) => a.state === "firing" && a.labels.segment === segment).map((a) =>
      `${a.labels.alertname}${a.labels.reader === undefined ? "" : ` ${a.labels.reader}`}`
    ),
  );
}

Deno.test("a real Prometheus scrapes status --serve: write_ptr, a paused reader's lag and losses as status --json shows them, and rules.yml's alerts fire", async () => {
  const prometheus = requireTool("prometheus", PROMETHEUS_INSTALL);
  const promtool = requireTool("promtool", PROMETHEUS_INSTALL);
  if (prometheus === undefined || promtool === undefined) return;
  await scenario("prom", async (s) => {
    const { proc: server, base } = await startServerOnFreePort([s.name]);
    let prom: { proc: Proc; api: string; dir: string } | undefined;
    try {
      prom = await startPrometheus(
        prometheus,
        base.replace("http://", ""),
        Deno.readTextFileSync(RULES),
      );
      const { api } = prom;
      const writer = s.writer(["--rate", "2000", "--capacity", "1024"]);
      const r0 = s.reporter(0);
      const r1 = s.reporter(1);
      await waitFor("both reporters to read", () => {
        const p = positions(s.name);
        return p !== undefined && p.readPtrs[0]! > 0 && p.readPtrs[1]! > 0;
      });
      r1.signal("SIGSTOP");
      // Let Prometheus see reader 1 with no losses, then lap it (more than 1024 behind).
      await waitFor(
        "Prometheus to scrape reader 1",
        async () =>
          (await query(api, `rpt_reader_lost_entries_total{segment="${s.name}",reader="1"}`)) ===
            0,
      );
      await waitFor("the writer to lap paused reader 1", () => {
        const p = positions(s.name)!;
        return p.writePtr - p.readPtrs[1]! > 2000;
      });
      writer.signal("SIGTERM");
      assert.equal(await writer.waitExit(), 0, writer.describe());
      const writePtr = positions(s.name)!.writePtr;
      await waitFor("reporter 0 to catch up", () => positions(s.name)!.readPtrs[0] === writePtr);
      // kill -9, not reaped before status is asked: reader 0 is down as soon as the kernel drops
      // its role lock, whether or not anyone has awaited the killed process.
      r0.signal("SIGKILL");

      const json = await statusJson(s.name);
      assert.equal(json.write_ptr, writePtr);
      assert.ok(json.readers[1]!.lag > 1024, JSON.stringify(json.readers[1]));
      assert.equal(json.readers[0]!.alive, false);
      assert.equal(json.readers[1]!.alive, true);
      await r0.wait(); // reaped only now
      assert.equal((await r0.child.status).signal, "SIGKILL");
      const seg = `segment="${s.name}"`;
      await waitFor(
        "Prometheus to hold write_ptr and reader 1's lag as status --json",
        async () =>
          (await query(api, `rpt_writer_entries_total{${seg}}`)) === json.write_ptr &&
          (await query(api, `rpt_reader_lag_entries{${seg},reader="1"}`)) ===
            json.readers[1]!.lag &&
          (await query(api, `rpt_reader_entries_total{${seg},reader="1"}`)) ===
            json.readers[1]!.read_ptr &&
          (await query(api, `rpt_reader_up{${seg},reader="0"}`)) === 0 &&
          (await query(api, `rpt_reader_up{${seg},reader="1"}`)) === 1,
        60_000,
      );
      const expected = [
        "RptWriterDown",
        "RptReaderDown 0",
        "RptReaderLagging 1",
        "RptReaderHeartbeatStale 1",
      ];
      let seen = new Set<string>();
      await waitFor(`alerts ${expected.join(", ")} to fire`, async () => {
        seen = await firing(api, s.name);
        return expected.every((a) => seen.has(a));
      }, 90_000).catch((e) => {
        throw new Error(`${e.message}; firing: ${[...seen].join(", ")}`);
      });
      assert.ok(!seen.has("RptReaderDown 1"), "a paused reader still holds its id");
      assert.ok(!seen.has("RptReaderLagging 0"), "reader 0 had caught up");

      // Resumed, reader 1 finds it was lapped and counts its losses: the losing alert fires.
      r1.signal("SIGCONT");
      const lost = await waitFor("reader 1 to count its losses", async () => {
        const j = await statusJson(s.name);
        return j.readers[1]!.lag === 0 && j.readers[1]!.lost > 0 ? j.readers[1]!.lost : 0;
      });
      await waitFor(
        "Prometheus to hold reader 1's losses",
        async () => (await query(api, `rpt_reader_lost_entries_total{${seg},reader="1"}`)) === lost,
        60_000,
      );
      await waitFor(
        "RptReaderLosingEntries 1 to fire",
        async () => (await firing(api, s.name)).has("RptReaderLosingEntries 1"),
        60_000,
      );

      // promtool's linter (naming, HELP, units) accepts a real response with readers in it.
      const text = await scrape(base);
      assert.match(text, /rpt_reader_up\{segment="[^"]+",reader="1"\} 1/);
      await promtoolCheckMetrics(promtool, text);
    } catch (e) {
      console.error(server.describe());
      if (prom) console.error(prom.proc.describe());
      throw e;
    } finally {
      await server.close();
      if (prom) {
        prom.proc.signal("SIGTERM");
        await prom.proc.waitExit().catch(() => prom!.proc.close());
        await Deno.remove(prom.dir, { recursive: true });
      }
    }
  });
});

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]!;
}

Deno.test("200 concurrent scrapes while the writer runs at full speed: every response is valid exposition text; the writer keeps its pace", async () => {
  await scenario("load", async (s) => {
    const writer = s.writer(["--rate", "0", "--quiet"]);
    await waitFor("the writer to publish", () => (positions(s.name)?.writePtr ?? 0) > 0);
    const { proc: server, base } = await startServerOnFreePort([s.name]);
    try {
      await scrape(base); // warm up (first request compiles the handler paths)
      const rateOver = async (ms: number) => {
        const a = positions(s.name)!.writePtr;
        const t0 = performance.now();
        await delay(ms); // a measurement window, not a wait for correctness
        return ((positions(s.name)!.writePtr - a) * 1000) / (performance.now() - t0);
      };
      // CPU time (ms) the server has used so far, from /proc (Linux; USER_HZ is 100). Deno
      // lets only --allow-all read /proc/PID, so through cat.
      const serverCpuMs = async () => {
        if (Deno.build.os !== "linux") return NaN;
        const out = await new Deno.Command("cat", { args: [`/proc/${server.pid}/stat`] }).output();
        const f = new TextDecoder().decode(out.stdout).split(") ")[1]!.split(" ");
        return (Number(f[11]) + Number(f[12])) * 10;
      };
      const before = await rateOver(2000);
      const cpu0 = await serverCpuMs();
      const latencies: number[] = [];
      let responses = 0;
      let last = 0;
      const a = positions(s.name)!.writePtr;
      const t0 = performance.now();
      do {
        await Promise.all(Array.from({ length: 200 }, async () => {
          const started = performance.now();
          const text = await scrape(base);
          latencies.push(performance.now() - started);
          const m = parseExposition(text);
          assert.equal(valueOf(m, "rpt_segment_up", { segment: s.name }), 1);
          const written = valueOf(m, "rpt_writer_entries_total", { segment: s.name })!;
          assert.ok(written > 0);
          last = Math.max(last, written);
          responses++;
        }));
      } while (performance.now() - t0 < 2000);
      const during = ((positions(s.name)!.writePtr - a) * 1000) / (performance.now() - t0);
      const cpuPerScrape = ((await serverCpuMs()) - cpu0) / responses;
      const after = await rateOver(2000);
      latencies.sort((x, y) => x - y);
      const alone: number[] = [];
      for (let i = 0; i < 50; i++) {
        const started = performance.now();
        parseExposition(await scrape(base));
        alone.push(performance.now() - started);
      }
      alone.sort((x, y) => x - y);
      console.log(
        `load: writer ${Math.round(before)}/s before, ${
          Math.round(during)
        }/s during ${responses} ` +
          `scrapes (200 concurrent), ${Math.round(after)}/s after (${
            Math.round((during / ((before + after) / 2)) * 100)
          }%); scrape latency p50 ${percentile(latencies, 0.5).toFixed(1)} ms, p99 ${
            percentile(latencies, 0.99).toFixed(1)
          } ms, max ${latencies.at(-1)!.toFixed(1)} ms; one at a time p50 ${
            percentile(alone, 0.5).toFixed(2)
          } ms; server CPU ${cpuPerScrape.toFixed(3)} ms per scrape`,
      );
      assert.ok(responses >= 200);
      assert.ok(last > a, "responses show the writer moving");
      // Generous: scraping maps the segment read-only and never waits on the writer, so only a
      // bug (a lock, a write to the segment) could slow the writer by a factor of ten.
      assert.ok(
        during > Math.min(before, after) / 10,
        `writer rate ${during}/s during scrapes vs ${before}/s and ${after}/s without`,
      );
      assert.ok(!server.exited, server.describe());
      writer.signal("SIGTERM");
      assert.equal(await writer.waitExit(), 0, writer.describe());
    } finally {
      await server.close();
    }
  });
});
