import assert from "node:assert/strict";
import { ExitCode } from "../cli.ts";
import { OS_FACTS } from "../ffi/posix.ts";
import * as layout from "../layout.ts";
import { MAX_BATCH_BYTES } from "../read_loop.ts";
import { defineSchema, entriesOffsetFor } from "../schema.ts";
import { STALL_AFTER_MS } from "../segment_status.ts";
import { FUTEX_TIMEOUT_MS } from "../idle.ts";

const root = new URL("../", import.meta.url);

async function deno(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), { args, cwd: root, stdin: "null" }).output();
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

Deno.test("every export of mod.ts has JSDoc with an @example", async () => {
  const { code, stdout, stderr } = await deno(["doc", "--json", "mod.ts"]);
  assert.equal(code, 0, stderr);
  const doc = JSON.parse(stdout) as {
    nodes: Record<
      string,
      { symbols: { name: string; declarations: { jsDoc?: { tags?: { kind: string }[] } }[] }[] }
    >;
  };
  const symbols = Object.values(doc.nodes).flatMap((n) => n.symbols);
  assert.ok(symbols.length >= 30, `only ${symbols.length} exports found`);
  const missing = symbols
    .filter((s) => !s.declarations.some((d) => d.jsDoc?.tags?.some((t) => t.kind === "example")))
    .map((s) => s.name);
  assert.deepEqual(missing, [], `exports without an @example: ${missing.join(", ")}`);
});

Deno.test("deno doc --lint mod.ts is clean", async () => {
  const { code, stderr } = await deno(["doc", "--lint", "mod.ts"]);
  assert.equal(code, 0, stderr);
});

// ---- docs/: the specification stays in step with the code ------------------------------------

/** The text of `docs/<file>`. */
function spec(file: string): string {
  return Deno.readTextFileSync(new URL(`docs/${file}`, root));
}

/** The rows of every Markdown table in `text` whose first cell matches `first`, as cells. */
function tableRows(text: string, first: RegExp): string[][] {
  return text.split("\n")
    .map((line) => line.trim())
    .filter((line) => line.startsWith("|"))
    .map((line) => line.split("|").slice(1, -1).map((cell) => cell.trim()))
    .filter((cells) => first.test(cells[0] ?? ""));
}

/** GitHub's anchor of a heading: lower case, punctuation dropped, spaces as dashes. */
function anchor(heading: string): string {
  return heading.toLowerCase().replace(/[^a-z0-9 _-]/g, "").replaceAll(" ", "-");
}

Deno.test("docs/segment.md gives every header field at the offset layout.ts has", () => {
  const offsets: Record<string, number> = {
    write_ptr: layout.WRITE_PTR_OFFSET,
    "read_ptrs[0..7]": layout.READ_PTRS_OFFSET,
    magic: layout.MAGIC_OFFSET,
    version: layout.VERSION_OFFSET,
    capacity: layout.CAPACITY_OFFSET,
    entry_size: layout.ENTRY_SIZE_OFFSET,
    entries_offset: layout.ENTRIES_OFFSET_OFFSET,
    flags: layout.FLAGS_OFFSET,
    epoch: layout.EPOCH_OFFSET,
    writer_owner: layout.WRITER_OWNER_OFFSET,
    writer_heartbeat_ns: layout.WRITER_HEARTBEAT_OFFSET,
    wake_seq: layout.WAKE_SEQ_OFFSET,
    waiters: layout.WAITERS_OFFSET,
    writer_started_ns: layout.WRITER_STARTED_OFFSET,
    writer_start_index: layout.WRITER_START_INDEX_OFFSET,
    schema_fingerprint: layout.SCHEMA_FINGERPRINT_OFFSET,
    schema_offset: layout.SCHEMA_BLOCK_OFFSET_OFFSET,
    schema_length: layout.SCHEMA_BLOCK_LENGTH_OFFSET,
    "reader_owner[0..7]": layout.READER_OWNERS_OFFSET,
    "reader_heartbeat_ns[0..7]": layout.READER_HEARTBEATS_OFFSET,
    "reader_lost[0..7]": layout.READER_LOST_OFFSET,
  };
  const documented = new Map<string, number>();
  for (const [offset, , field] of tableRows(spec("segment.md"), /^0x[01][0-9A-F]{2}$/)) {
    const name = /^`([^`]+)`/.exec(field!)?.[1];
    if (name !== undefined) documented.set(name, Number(offset));
  }
  assert.deepEqual(Object.fromEntries(documented), offsets);
  assert.match(spec("segment.md"), new RegExp(`\\| 0x${layout.HEADER_SIZE.toString(16)} `));
});

Deno.test("docs/segment.md names the block sizes whose end is entries_offset itself, as entriesOffsetFor computes", () => {
  const text = spec("segment.md");
  const ends = (version: 1 | 2, count: number) => {
    const fields = Array.from({ length: count }, (_, i) => ({
      name: `f${i}`,
      type: version === 1 ? "u8" : "bytes[1]",
    }));
    const s = defineSchema(fields);
    assert.equal(s.version, version);
    return entriesOffsetFor(s) === layout.HEADER_SIZE + s.block.length;
  };
  const v1 = Array.from({ length: 48 }, (_, i) => i + 1).filter((n) => ends(1, n));
  assert.deepEqual(v1, [14, 30, 46]);
  assert.match(text, /version-1 block of 14, 30 or 46 fields/);
  assert.ok(ends(2, 10) && ends(2, 26) && !ends(2, 11));
  assert.match(text, /version-2 block of 10, 26, 42, \.\.\./);
});

Deno.test("docs/schema.md gives the record sizes and type codes of schema.ts", () => {
  const text = spec("schema.md");
  assert.match(text, new RegExp(`schema_length = 8 \\+ ${layout.SCHEMA_FIELD_SIZE} × field_count`));
  assert.match(
    text,
    new RegExp(`schema_length = 8 \\+ ${layout.SCHEMA_FIELD_SIZE_V2} × field_count`),
  );
  const codes = tableRows(text, /^`(u|i|f)\d+`$|^`(char|bytes)\[N\]`$/)
    .map(([type, code]) => [type!.replaceAll("`", ""), Number(code)]);
  const scalars = ["u8", "u16", "u32", "u64", "i8", "i16", "i32", "i64", "f32", "f64"];
  assert.deepEqual(codes, [
    ...scalars.map((t, i) => [t, i + 1]),
    ["char[N]", 11],
    ["bytes[N]", layout.SCHEMA_TYPE_BYTES],
  ]);
});

Deno.test("docs/ownership.md gives Linux's fcntl numbers and struct flock as ffi/posix.ts has them", () => {
  const linux = OS_FACTS.linux!.ofdLocks!;
  const text = spec("ownership.md");
  for (const key of ["F_OFD_GETLK", "F_OFD_SETLK", "F_RDLCK", "F_WRLCK", "F_UNLCK", "SEEK_SET"]) {
    const row = tableRows(text, new RegExp(`^\`${key}\`$`))[0];
    assert.equal(Number(row?.[1]), linux[key as keyof typeof linux], key);
  }
  for (const arch of ["x86_64", "aarch64"]) {
    const flock = linux.flock[arch]!;
    const at = (field: string) => Number(tableRows(text, /^\d+$/).find((r) => r[2] === field)?.[0]);
    assert.equal(at("`l_type`"), flock.typeOffset);
    assert.equal(at("`l_whence`"), flock.whenceOffset);
    assert.equal(at("`l_start`"), flock.startOffset);
    assert.equal(at("`l_len`"), flock.lenOffset);
    assert.equal(at("`l_pid`"), flock.pidOffset);
    assert.match(text, new RegExp(`${flock.size} bytes`));
  }
});

Deno.test("docs/operations.md has one row per exit status of cli.ts, and status --serve failing to listen is 19", () => {
  const rows = tableRows(spec("operations.md"), /^\d+$/).map((r) => Number(r[0]));
  const codes = [...new Set([...Object.values(ExitCode), 9, 15])].sort((a, b) => a - b);
  assert.deepEqual(rows, codes);
  const listen = tableRows(spec("operations.md"), /^19$/)[0]!;
  assert.equal(ExitCode.LISTEN, 19);
  assert.match(listen[1]!, /status --serve/);
  assert.match(spec("operations.md"), /not granted is \*\*exit 19\*\*/);
});

Deno.test("docs/stream.md names every stream header of layout.ts", () => {
  const text = spec("stream.md");
  for (
    const header of [
      layout.STREAM_KIND_HEADER,
      layout.STREAM_EPOCH_HEADER,
      layout.STREAM_FIRST_HEADER,
      layout.STREAM_COUNT_HEADER,
      layout.STREAM_SCHEMA_HEADER,
      layout.STREAM_ENTRY_SIZE_HEADER,
    ]
  ) {
    assert.match(text, new RegExp(`\\| \`${header}\` `), header);
  }
  assert.match(text, new RegExp(`min\\(${layout.MAX_STREAM_BATCH.toLocaleString("en")}`));
});

Deno.test("every link between the docs pages and from the README names a file and a heading that exist", () => {
  const dir = new URL("docs/", root);
  const pages = [...Deno.readDirSync(dir)].filter((e) => e.name.endsWith(".md")).map((e) => e.name);
  const headings = new Map(pages.map((p) => [
    p,
    new Set(
      spec(p).split("\n").filter((l) => /^#+ /.test(l)).map((l) => anchor(l.replace(/^#+ /, ""))),
    ),
  ]));
  const readme = Deno.readTextFileSync(new URL("README.md", root))
    .replace(/\]\(docs\//g, "](").replace(
      /\]\(([a-z_.]+\.(?:ts|json|yml)|include\/|examples\/)/g,
      "](../$1",
    );
  const sources: [string, string][] = [...pages.map((p) => [p, spec(p)] as [string, string])];
  sources.push(["../README.md", readme]);
  const broken: string[] = [];
  for (const [page, text] of sources) {
    for (const [, target] of text.matchAll(/\]\(([^)]+)\)/g)) {
      if (/^[a-z]+:/.test(target!)) continue;
      const [file, hash] = target!.split("#") as [string, string | undefined];
      const path = file === "" ? page : file;
      if (page === "../README.md" && file === "") continue;
      if (!path.endsWith(".md")) {
        if (!exists(new URL(path, dir))) broken.push(`${page}: ${target}`);
        continue;
      }
      const known = headings.get(path);
      if (known === undefined || (hash !== undefined && !known.has(hash))) {
        broken.push(`${page}: ${target}`);
      }
    }
  }
  assert.deepEqual(broken, []);
});

function exists(url: URL): boolean {
  try {
    Deno.statSync(url);
    return true;
  } catch {
    return false;
  }
}

// ---- numbers stated in more than one page ------------------------------------------------------

/** Every page of docs/ and the README, as [name, text]. */
function everyPage(): [string, string][] {
  const dir = new URL("docs/", root);
  const pages: [string, string][] = [...Deno.readDirSync(dir)]
    .filter((e) => e.name.endsWith(".md"))
    .map((e) => [`docs/${e.name}`, spec(e.name)]);
  return [...pages, ["README.md", Deno.readTextFileSync(new URL("README.md", root))]];
}

Deno.test("every page naming the entry-size bounds gives layout.ts's: 64 to 65,536, capacity x entry size at most 2^30", () => {
  let seen = 0;
  for (const [page, raw] of everyPage()) {
    const text = raw.replace(/\s+/g, " ");
    const bounds =
      /(?:entry_size`?|entry size|--entry-size`?)[^|]{0,70}?power of two from (\d+)[^0-9]{0,40}? to ([\d,]+)/g;
    for (const [, from, to] of text.matchAll(bounds)) {
      assert.equal(Number(from), layout.ENTRY_SIZE, `${page}: smallest entry size`);
      assert.equal(
        Number(to!.replaceAll(",", "")),
        layout.MAX_ENTRY_SIZE,
        `${page}: largest entry size`,
      );
      seen++;
    }
    for (
      const [, power] of text.matchAll(
        /entry_size` is at most 2\^(\d+)|entry size(?:s)? is at most 2\^(\d+)/g,
      )
    ) {
      assert.equal(2 ** Number(power), layout.MAX_RING_BYTES, page);
    }
  }
  assert.ok(seen >= 2, `only ${seen} statements of the entry-size bounds found`);
  assert.equal(layout.MAX_RING_BYTES, 2 ** 30);
  assert.match(spec("segment.md"), /at most 2\^30 bytes/);
});

Deno.test("every exit status a page names is one of cli.ts's ExitCode (or compile's 9)", () => {
  const known = new Set<number>([...Object.values(ExitCode), 9]);
  const unknown: string[] = [];
  for (const [page, text] of everyPage()) {
    const flat = text.replace(/\s+/g, " ");
    for (const [, code] of flat.matchAll(/\b(?:exits?|exit status|status) (\d+)\b/g)) {
      if (!known.has(Number(code))) unknown.push(`${page}: ${code}`);
    }
  }
  assert.deepEqual(unknown, []);
});

Deno.test("docs/sqlite.md gives the exit statuses of cli.ts for each bad input and for a second reporter", () => {
  const text = spec("sqlite.md");
  const exit = (input: RegExp) => Number(tableRows(text, input)[0]?.[1]);
  assert.equal(exit(/not a SQLite database/), ExitCode.OUTPUT_MISMATCH);
  assert.equal(exit(/`entries` this sink did not make/), ExitCode.OUTPUT_MISMATCH);
  assert.equal(exit(/position past `write_ptr`/), ExitCode.OUTPUT_MISMATCH);
  assert.equal(exit(/read-only file/), ExitCode.OUTPUT);
  assert.match(text.replace(/\s+/g, " "), new RegExp(`A second exits ${ExitCode.OWNERSHIP}`));
});

Deno.test("the docs state the heartbeat intervals, the stall age, the futex timeout and the batch bound of the code", async () => {
  const source = (file: string) => Deno.readTextFile(new URL(file, root));
  const reader = Number(/const HEARTBEAT_MS = (\d+);/.exec(await source("read_loop.ts"))?.[1]);
  const writer = Number(/now - lastBeat >= (\d+)\)/.exec(await source("writer.ts"))?.[1]);
  const protocol = spec("protocol.md").replace(/\s+/g, " ");
  assert.match(protocol, new RegExp(`\\*\\*every ${writer} ms\\*\\* while it runs`));
  assert.match(protocol, new RegExp(`\\*\\*every ${reader} ms\\*\\* while it runs`));
  assert.match(protocol, new RegExp(`older than ${STALL_AFTER_MS / 1000} s _stalled_`));
  for (const [page, text] of everyPage()) {
    const flat = text.replace(/\s+/g, " ");
    for (const [, ms] of flat.matchAll(/writer (?:beats|stores its heartbeat) every (\d+) ms/g)) {
      assert.equal(Number(ms), writer, page);
    }
    for (const [, ms] of flat.matchAll(/(?:reader|reporter) (?:beats )?every (\d+) ms/g)) {
      assert.equal(Number(ms), reader, page);
    }
    assert.doesNotMatch(flat, /heartbeat[^.]*at least once a second/, page);
  }
  const subscriber = spec("subscriber.md").replace(/\s+/g, " ");
  assert.match(subscriber, new RegExp(`at most ${FUTEX_TIMEOUT_MS} ms with \`futex\``));
  assert.equal(MAX_BATCH_BYTES, 4 << 20);
  assert.match(subscriber, /at most 4 MiB of entries/);
});

Deno.test("the README is a front door of at most 300 lines, and docs/performance.md dates every figure section", () => {
  const readme = Deno.readTextFileSync(new URL("README.md", root));
  assert.ok(readme.split("\n").length <= 300, `README.md has ${readme.split("\n").length} lines`);
  const undated = spec("performance.md").split("\n")
    .filter((l) => /^## /.test(l) && !/\(\d{4}-\d{2}-\d{2}\)/.test(l));
  assert.deepEqual(undated, []);
});
