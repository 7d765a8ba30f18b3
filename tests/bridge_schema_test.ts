/**
 * The payload schema through the bridge (real `nats-server`): the stream carries each epoch's
 * schema block and every message its fingerprint, so `follow` writes a custom schema's CSV byte
 * for byte like a local reporter, rotates on a re-created segment of another schema, refuses a
 * message of another schema, and still reads a stream written before schemas. Entries of 64,
 * 1,024 and 65,536 bytes (`bytes[N]` fields) travel with `Rpt-Entry-Size`, in messages bounded
 * by the server's `max_payload`; a stream written before entry sizes still reads.
 *
 * @module
 */
import assert from "node:assert/strict";
import { headers } from "@nats-io/transport-node";
import { jetstream } from "@nats-io/jetstream";
import { ExitCode } from "../cli.ts";
import {
  STREAM_ENTRY_SIZE_HEADER,
  STREAM_HEADER_ROOM,
  STREAM_KIND_ENTRIES,
  STREAM_KIND_SCHEMA,
  STREAM_SCHEMA_HEADER,
  streamBatchLimit,
  streamFingerprint,
} from "../layout.ts";
import { defaultSubject } from "../nats.ts";
import { csvHeader } from "../csv.ts";
import { decodeSchemaBlock, DEFAULT_SCHEMA, defineSchema } from "../schema.ts";
import {
  addStream,
  checkExactlyOnce,
  checkRows,
  checkSchemaRows,
  epochOf,
  killGroup,
  natsScenario,
  positions,
  specOf,
  streamMessages,
  waitFor,
  waitForReadPtr,
} from "./_helpers.ts";

/** Fields of every kind the issue names: char, scaled i64, u64, f32, f64, and more. */
const SCHEMA_A = defineSchema([
  { name: "venue", type: "char[6]" },
  { name: "px", type: "i64", scale: 4 },
  { name: "big", type: "u64" },
  { name: "r", type: "f32" },
  { name: "d", type: "f64" },
  { name: "q", type: "i32", scale: 2 },
  { name: "flag", type: "u8" },
]);
/** Another custom schema, for the re-created segment. */
const SCHEMA_B = defineSchema([
  { name: "id", type: "u64" },
  { name: "tag", type: "char[3]" },
  { name: "w", type: "f64" },
  { name: "n", type: "i16", scale: 1 },
]);

/** A 1 KiB entry: a bytes[900] field between a u64 and a char[8]. */
const SCHEMA_1K = defineSchema([
  { name: "id", type: "u64" },
  { name: "blob", type: "bytes[900]" },
  { name: "tag", type: "char[8]" },
]);
/** A 64 KiB entry: a scaled i64, then a bytes[65000] field. */
const SCHEMA_64K = defineSchema([
  { name: "px", type: "i64", scale: 4 },
  { name: "blob", type: "bytes[65000]" },
]);

/** The last row's seq of a file in the scenario's directory (-1 while it does not exist). */
function lastRowIn(s: { read(file: string): string }, file: string): number {
  try {
    return lastRowSeq(s.read(file));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return -1;
    throw e;
  }
}

/** The seq of the last complete row of any schema's CSV (seq is the first column), or -1. */
function lastRowSeq(text: string): number {
  const end = text.lastIndexOf("\n");
  const start = text.lastIndexOf("\n", end - 1) + 1;
  const seq = text.slice(start, text.indexOf(",", start));
  return /^\d+$/.test(seq) ? Number(seq) : -1;
}

Deno.test({
  name:
    "follow with a custom schema writes the reporter's CSV byte for byte (restarted mid-epoch too); a re-created segment of another schema rotates follow's file as the reporter's",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () =>
    natsScenario("brschema", async (s) => {
      const t0 = performance.now();
      const { jsm } = await s.client();
      await addStream(jsm, "SCH", defaultSubject(s.name));
      Deno.writeTextFileSync(s.path("a.json"), JSON.stringify(SCHEMA_A.fields.map(specOf)));
      Deno.writeTextFileSync(s.path("b.json"), JSON.stringify(SCHEMA_B.fields.map(specOf)));
      const args = ["--rate", "0", "--capacity", "8192"];
      const w1 = s.writer(["--schema", "a.json", "--count", "3000", ...args]);
      assert.equal(await w1.waitExit(), 0, w1.describe());
      const oldEpoch = epochOf(s.name);
      const reporter = s.reporter(1, ["--out", "local.csv"]);
      const bridge = s.bridge(0, s.url("SCH"), ["--batch", "256"]);
      let follow = s.follow(s.url("SCH"), ["--out", "remote.csv"]);
      await waitForReadPtr(s.name, 0, 3000);
      await waitFor("follow's 3000 rows", () => lastRowIn(s, "remote.csv") === 2999);
      // Restarted mid-epoch: its first message is not the schema message; it finds it.
      killGroup(follow);
      const w1b = s.writer(["--schema", "a.json", "--count", "2000", ...args]);
      assert.equal(await w1b.waitExit(), 0, w1b.describe());
      await waitForReadPtr(s.name, 0, 5000);
      follow = s.follow(s.url("SCH"), ["--out", "remote.csv"]);
      await waitFor("follow's 5000 rows", () => lastRowIn(s, "remote.csv") === 4999);
      assert.match(follow.stderr, /from stream seq [1-9]\d* .*it ends at seq 2999/);
      const { schemas } = await checkExactlyOnce(jsm, "SCH", oldEpoch, 5000);
      assert.equal(schemas, 1, "one schema message for the epoch");

      const w2 = s.writer(["--schema", "b.json", "--recreate", "--count", "1500", ...args]);
      assert.equal(await w2.waitExit(), 0, w2.describe());
      const newEpoch = epochOf(s.name);
      assert.notEqual(newEpoch, oldEpoch);
      await waitForReadPtr(s.name, 0, 1500);
      await waitForReadPtr(s.name, 1, 1500);
      await waitFor("follow's rows of the new epoch", () => {
        const text = s.read("remote.csv");
        return text.startsWith("seq,timestamp_ns,id,") && lastRowSeq(text) === 1499;
      });
      for (const p of [bridge, reporter, follow]) p.signal("SIGTERM");
      for (const p of [bridge, reporter, follow]) assert.equal(await p.waitExit(), 0, p.describe());
      const oldFile = `remote.epoch-${oldEpoch}.csv`;
      assert.equal(s.read(oldFile), s.read(`local.epoch-${oldEpoch}.csv`));
      assert.equal(s.read("remote.csv"), s.read("local.csv"));
      const oldSeqs = checkSchemaRows(s.read(oldFile), SCHEMA_A, oldEpoch);
      assert.deepEqual(oldSeqs, Array.from({ length: 5000 }, (_, i) => i));
      assert.equal(checkSchemaRows(s.read("remote.csv"), SCHEMA_B, newEpoch).length, 1500);
      // The stream: each epoch opens with its schema message, every message names its schema.
      const messages = await streamMessages(jsm, "SCH");
      const want = new Map([[oldEpoch, SCHEMA_A], [newEpoch, SCHEMA_B]]);
      const seen = new Set<bigint>();
      for (const { at, data } of messages) {
        const schema = want.get(at.epoch)!;
        assert.equal(at.schema, streamFingerprint(schema.fingerprint), `stream seq ${at.seq}`);
        if (!seen.has(at.epoch)) {
          assert.equal(at.kind, STREAM_KIND_SCHEMA, `the first message of epoch ${at.epoch}`);
          assert.deepEqual(data, schema.block);
          assert.equal(decodeSchemaBlock(data).fingerprint, schema.fingerprint);
          seen.add(at.epoch);
        }
      }
      assert.deepEqual([...seen], [oldEpoch, newEpoch]);
      console.log(
        `${messages.length} messages, 6500 rows equal byte for byte in ${
          ((performance.now() - t0) / 1000).toFixed(1)
        } s`,
      );
    }),
});

Deno.test({
  name:
    "follow refuses a message whose fingerprint is not its epoch's schema, a damaged schema message, and a bad, changing or inconsistent Rpt-Entry-Size, with exit 20 and nothing of them written; a stream from before schemas and entry sizes (no Rpt-Entry-Size) reads as the default schema at 64 bytes, also once a bridge resumed it",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () =>
    natsScenario("brschbad", async (s) => {
      const { nc, jsm } = await s.client();
      const js = jetstream(nc);
      const subject = defaultSubject(s.name);
      await addStream(jsm, "GOOD", subject);
      const w = s.writer(["--count", "300", "--rate", "0", "--capacity", "1024"]);
      assert.equal(await w.waitExit(), 0, w.describe());
      const epoch = epochOf(s.name);
      await waitFor("the segment", () => positions(s.name));
      const bridge = s.bridge(0, s.url("GOOD"), ["--batch", "100"]);
      await waitForReadPtr(s.name, 0, 300);
      bridge.signal("SIGTERM");
      assert.equal(await bridge.waitExit(), 0, bridge.describe());
      const good = await streamMessages(jsm, "GOOD");
      assert.equal(good[0]!.at.kind, STREAM_KIND_SCHEMA);
      assert.deepEqual(good[0]!.data, DEFAULT_SCHEMA.block, "the default schema is stored too");
      const reference = s.follow(s.url("GOOD"), ["--out", "good.csv"]);
      await waitFor("300 rows", () => lastRowIn(s, "good.csv") === 299);
      reference.signal("SIGTERM");
      assert.equal(await reference.waitExit(), 0, reference.describe());
      assert.equal(checkRows(s.read("good.csv"), epoch).length, 300);

      // Copies of the bridge's messages on other streams, edited on the way.
      const copy = async (
        stream: string,
        edit: (h: ReturnType<typeof headers>, kind: string, i: number) => Uint8Array | null,
      ) => {
        const subj = `copy.${stream.toLowerCase()}`;
        await addStream(jsm, stream, subj);
        let i = 0;
        for (const { at, data } of good) {
          const h = headers();
          h.set("Rpt-Kind", at.kind);
          h.set("Rpt-Epoch", `${at.epoch}`);
          h.set("Rpt-First-Seq", `${at.first}`);
          h.set("Rpt-Count", `${at.count}`);
          h.set(STREAM_SCHEMA_HEADER, at.schema!);
          const body = edit(h, at.kind, i++);
          if (body !== null) {
            await js.publish(subj, body.length === 0 ? data : body, { headers: h });
          }
        }
        return subj;
      };
      const none = new Uint8Array(0);

      // A message of another schema in the middle of the epoch.
      const wrong = "0123456789abcdef";
      const badSubject = await copy("BADFP", (h, _kind, i) => {
        if (i === 2) h.set(STREAM_SCHEMA_HEADER, wrong);
        return none;
      });
      const f1 = s.follow(s.url("BADFP"), ["--subject", badSubject, "--out", "badfp.csv"]);
      assert.equal(await f1.waitExit(), ExitCode.STREAM_SCHEMA, f1.describe());
      const line = f1.stderr.trim().split("\n").at(-1)!;
      assert.match(
        line,
        new RegExp(
          `^follow: error: Cannot follow stream BADFP subject ${badSubject} as stream seq 3 carries schema fingerprint ${wrong} but epoch ${epoch} has schema ${
            streamFingerprint(DEFAULT_SCHEMA.fingerprint)
          }$`,
        ),
      );
      // Only the message before it was written; nothing of the refused one.
      const before = good[1]!.at.first + good[1]!.at.count;
      assert.equal(good[2]!.at.first, before);
      assert.equal(
        s.read("badfp.csv"),
        s.read("good.csv").split("\n").slice(0, before + 1).join("\n") + "\n",
      );

      // A damaged schema message: nothing written.
      const damagedSubject = await copy("DAMAGED", (_h, kind) => {
        if (kind !== STREAM_KIND_SCHEMA) return none;
        const block = DEFAULT_SCHEMA.block.slice();
        block[8 + 32] = 99; // type code of field 0
        return block;
      });
      const f2 = s.follow(s.url("DAMAGED"), ["--subject", damagedSubject, "--out", "damaged.csv"]);
      assert.equal(await f2.waitExit(), ExitCode.STREAM_SCHEMA, f2.describe());
      assert.match(
        f2.stderr,
        /follow: error: Cannot follow stream DAMAGED .* as the schema message at stream seq 1 is damaged: schema block field 0 type code must be 1\.\.11: current value is 99\n$/,
      );
      assert.equal(lastRowIn(s, "damaged.csv"), -1);

      // No schema message although the messages carry a fingerprint: missing, on a restart too.
      const missingSubject = await copy(
        "MISSING",
        (_h, kind) => kind === STREAM_KIND_SCHEMA ? null : none,
      );
      const f3 = s.follow(s.url("MISSING"), ["--subject", missingSubject, "--out", "missing.csv"]);
      assert.equal(await f3.waitExit(), ExitCode.STREAM_SCHEMA, f3.describe());
      assert.match(
        f3.stderr,
        /as the schema message of epoch \d+ \(fingerprint [0-9a-f]{16}\) is missing/,
      );
      assert.equal(lastRowIn(s, "missing.csv"), -1);

      // A stream written before schemas: no schema message, no Rpt-Schema: the default schema.
      const oldSubject = await copy("OLD", (h, kind) => {
        h.delete(STREAM_SCHEMA_HEADER);
        return kind === STREAM_KIND_SCHEMA ? null : none;
      });
      const f4 = s.follow(s.url("OLD"), ["--subject", oldSubject, "--out", "old.csv"]);
      await waitFor("300 rows", () => lastRowIn(s, "old.csv") === 299);
      f4.signal("SIGTERM");
      assert.equal(await f4.waitExit(), 0, f4.describe());
      assert.equal(s.read("old.csv"), s.read("good.csv"));

      // The entry size: the bridge says 64 on every message; the copies are written the old way,
      // without it (read as 64 above). A bad value, one that changes within the epoch, data not
      // count x entry size, or an entry size too small for the schema: exit 20, one line.
      const raw = async (stream: string) => (await jsm.streams.getMessage(stream, { seq: 1 }))!;
      assert.equal((await raw("GOOD")).header.get(STREAM_ENTRY_SIZE_HEADER), "64");
      assert.ok(good.every((m) => m.at.entrySize === 64));
      assert.equal((await raw("OLD")).header.has(STREAM_ENTRY_SIZE_HEADER), false);
      const sizeRefused = async (stream: string, subject: string, what: RegExp) => {
        const out = `${stream.toLowerCase()}.csv`;
        const f = s.follow(s.url(stream), ["--subject", subject, "--out", out]);
        assert.equal(await f.waitExit(), ExitCode.STREAM_SCHEMA, f.describe());
        const lines = f.stderr.trim().split("\n").filter((l) => l.includes("error"));
        assert.equal(lines.length, 1, f.stderr);
        assert.match(lines[0]!, new RegExp(`^follow: error: Cannot follow stream ${stream} `));
        assert.match(lines[0]!, what);
        return lastRowIn(s, out);
      };
      const badSize = await copy("SIZEBAD", (h) => {
        h.set(STREAM_ENTRY_SIZE_HEADER, "96");
        return none;
      });
      assert.equal(
        await sizeRefused(
          "SIZEBAD",
          badSize,
          /as the Rpt-Entry-Size of stream seq 1 must be a power of two from 64 to 65536: current value is "96"$/,
        ),
        -1,
        "nothing written",
      );
      const mixed = await copy("SIZEMIX", (h, _kind, i) => {
        if (i === 2) h.set(STREAM_ENTRY_SIZE_HEADER, "128");
        return none;
      });
      assert.equal(
        await sizeRefused(
          "SIZEMIX",
          mixed,
          new RegExp(
            `as stream seq 3 has Rpt-Entry-Size "128" but epoch ${epoch} has entry size 64$`,
          ),
        ),
        before - 1,
        "only the message before it written",
      );
      const longer = await copy("SIZELEN", (_h, _kind, i) => {
        if (i !== 2) return none;
        const body = new Uint8Array(good[2]!.data.length + 64);
        body.set(good[2]!.data);
        return body;
      });
      const bytes = good[2]!.data.length + 64;
      assert.equal(
        await sizeRefused(
          "SIZELEN",
          longer,
          new RegExp(
            `as stream seq 3 holds ${bytes} bytes for ${
              good[2]!.at.count
            } entries of 64 bytes \\(no Rpt-Entry-Size, which means 64\\)$`,
          ),
        ),
        before - 1,
        "only the message before it written",
      );
      const tooSmall = await copy("SIZEFIT", (h, _kind, i) => {
        if (i > 0) return null;
        h.set(STREAM_SCHEMA_HEADER, streamFingerprint(SCHEMA_1K.fingerprint));
        return SCHEMA_1K.block;
      });
      assert.equal(
        await sizeRefused(
          "SIZEFIT",
          tooSmall,
          /as the schema of epoch \d+ does not fit entry size 64 \(stream seq 1 has no Rpt-Entry-Size, which means 64\): its fields take \d+ payload bytes .* use an entry size of at least 1024$/,
        ),
        -1,
        "nothing written",
      );

      // A bridge resuming such a stream says the schema mid-epoch; follow reads it from the start
      // and resumes in the middle (its file cut after 150 rows) to the same CSV.
      const upgSubject = await copy("UPG", (h, kind, i) => {
        h.delete(STREAM_SCHEMA_HEADER);
        return kind === STREAM_KIND_SCHEMA || i > 1 ? null : none;
      });
      const upgrade = s.bridge(2, s.url("UPG"), ["--subject", upgSubject]);
      await waitForReadPtr(s.name, 2, 300);
      upgrade.signal("SIGTERM");
      assert.equal(await upgrade.waitExit(), 0, upgrade.describe());
      const upg = await streamMessages(jsm, "UPG");
      assert.equal(upg[0]!.at.schema, undefined);
      assert.equal(upg[1]!.at.kind, STREAM_KIND_SCHEMA);
      assert.equal(upg[1]!.at.first, good[1]!.at.count);
      const goodLines = s.read("good.csv").split("\n");
      Deno.writeTextFileSync(s.path("upg_cut.csv"), goodLines.slice(0, 151).join("\n") + "\n");
      for (const out of ["upg.csv", "upg_cut.csv"]) {
        const f = s.follow(s.url("UPG"), ["--subject", upgSubject, "--out", out]);
        await waitFor(`300 rows in ${out}`, () => lastRowIn(s, out) === 299);
        f.signal("SIGTERM");
        assert.equal(await f.waitExit(), 0, f.describe());
        assert.equal(s.read(out), s.read("good.csv"), out);
      }
    }),
});

Deno.test({
  name:
    "bridge -> follow at entry sizes 64, 1,024 and 65,536 (bytes[N] fields; the segment re-created at each): follow's CSV equals the reporter's byte for byte, rotated per epoch; every message says its Rpt-Entry-Size, holds count x entry size bytes and stays within the server's max_payload of 256 KiB",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () => {
    const MAX_PAYLOAD = 256 * 1024;
    return natsScenario("brsize", async (s) => {
      const t0 = performance.now();
      const { jsm } = await s.client();
      await addStream(jsm, "SIZE", defaultSubject(s.name));
      Deno.writeTextFileSync(s.path("1k.json"), JSON.stringify(SCHEMA_1K.fields.map(specOf)));
      Deno.writeTextFileSync(s.path("64k.json"), JSON.stringify(SCHEMA_64K.fields.map(specOf)));
      // 5000 x 64 bytes pass the limit of 4080 per message (below --batch 4096) too.
      const stages = [
        { entrySize: 64, count: 5000, schema: DEFAULT_SCHEMA, args: [] as string[] },
        { entrySize: 1024, count: 2000, schema: SCHEMA_1K, args: ["--schema", "1k.json"] },
        { entrySize: 65536, count: 200, schema: SCHEMA_64K, args: ["--schema", "64k.json"] },
      ];
      const epochs: bigint[] = [];
      let reporter, bridge, follow;
      for (const [i, st] of stages.entries()) {
        // Paused while the writer fills the new segment, so that its messages come out full.
        bridge?.signal("SIGSTOP");
        const w = s.writer([
          ...st.args,
          ...(i === 0 ? [] : ["--recreate"]),
          ...["--entry-size", String(st.entrySize), "--count", String(st.count)],
          ...["--rate", "0", "--capacity", "8192"],
        ]);
        assert.equal(await w.waitExit(), 0, w.describe());
        epochs.push(epochOf(s.name));
        bridge?.signal("SIGCONT");
        reporter ??= s.reporter(1, ["--out", "local.csv"]);
        bridge ??= s.bridge(0, s.url("SIZE"));
        follow ??= s.follow(s.url("SIZE"), ["--out", "remote.csv"]);
        await waitForReadPtr(s.name, 0, st.count);
        await waitForReadPtr(s.name, 1, st.count);
        const header = csvHeader(st.schema);
        await waitFor(`follow's ${st.count} rows of ${st.entrySize}-byte entries`, () => {
          return lastRowIn(s, "remote.csv") === st.count - 1 &&
            s.read("remote.csv").startsWith(`${header}\n`);
        });
      }
      for (const p of [bridge!, reporter!, follow!]) p.signal("SIGTERM");
      for (const p of [bridge!, reporter!, follow!]) {
        assert.equal(await p.waitExit(), 0, p.describe());
      }
      let csvBytes = 0;
      for (const [i, st] of stages.entries()) {
        const file = i === stages.length - 1 ? "" : `.epoch-${epochs[i]}`;
        const remote = s.read(`remote${file}.csv`);
        assert.ok(remote === s.read(`local${file}.csv`), `${st.entrySize}: byte for byte`);
        // The default schema's entries are the writer's built-in ones, not the simulated formula.
        const seqs = st.schema === DEFAULT_SCHEMA
          ? checkRows(remote, epochs[i]!)
          : checkSchemaRows(remote, st.schema, epochs[i]!);
        assert.deepEqual(seqs, Array.from({ length: st.count }, (_, k) => k));
        csvBytes += remote.length;
      }
      // The stream: each epoch's entry size on every message, messages within max_payload.
      const messages = await streamMessages(jsm, "SIZE");
      const sizes: string[] = [];
      for (const [i, st] of stages.entries()) {
        const mine = messages.filter((m) => m.at.epoch === epochs[i]);
        const limit = streamBatchLimit(st.entrySize, MAX_PAYLOAD);
        let entries = 0;
        let most = 0;
        for (const { at, data } of mine) {
          assert.equal(
            at.entrySize,
            st.entrySize,
            `stream seq ${at.seq}: ${STREAM_ENTRY_SIZE_HEADER}`,
          );
          if (at.kind !== STREAM_KIND_ENTRIES) continue;
          assert.equal(data.length, at.count * st.entrySize, `stream seq ${at.seq}: data size`);
          assert.ok(data.length <= MAX_PAYLOAD - STREAM_HEADER_ROOM, `stream seq ${at.seq}`);
          entries += at.count;
          most = Math.max(most, at.count);
        }
        assert.equal(entries, st.count, `${st.entrySize}: every entry once`);
        assert.equal(most, limit, `${st.entrySize}: messages filled up to max_payload`);
        sizes.push(`${st.entrySize} B: ${mine.length} messages of at most ${most} entries`);
      }
      console.log(
        `${sizes.join("; ")}; ${csvBytes} CSV bytes equal in ${
          ((performance.now() - t0) / 1000).toFixed(1)
        } s`,
      );
    }, { config: `max_payload: ${MAX_PAYLOAD}\n` });
  },
});
