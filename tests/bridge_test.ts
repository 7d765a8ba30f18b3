/**
 * The bridge and follow against real `nats-server`s started by the tests (free loopback ports,
 * temporary stores): byte-for-byte equality with a local reporter, kill -9 campaigns of the
 * bridge, the server and follow, the server's refusals and losses recorded in the stream, and
 * the exactly-once machinery at 1 KiB entries.
 *
 * @module
 */
import assert from "node:assert/strict";
import { jetstream } from "@nats-io/jetstream";
import {
  READ_PTRS_OFFSET,
  READER_HEARTBEATS_OFFSET,
  STREAM_KIND_ENTRIES,
  STREAM_KIND_SCHEMA,
} from "../layout.ts";
import { defaultSubject } from "../nats.ts";
import { programPath } from "../programs.ts";
import { defineSchema } from "../schema.ts";
import { streamPosition } from "../sinks/jetstream.ts";
import {
  addStream,
  checkExactlyOnce,
  checkRows,
  checkSchemaRows,
  DEADLINE_MS,
  delay,
  epochOf,
  killGroup,
  NATS_INSTALL,
  natsScenario,
  positions,
  random,
  readU64,
  requireTool,
  specOf,
  streamMessages,
  waitFor,
  waitForLastSeq,
  waitForReadPtr,
} from "./_helpers.ts";

Deno.test({
  name:
    "bridge campaign: 20 kill -9 of the bridge, one of nats-server, one pause past the duplicate window; follow's CSV equals the reporter's byte for byte, every seq in the stream once",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () =>
    natsScenario("brcamp", async (s) => {
      const seed = Date.now() % 1_000_000;
      const rnd = random(seed);
      const COUNT = 300_000;
      const subject = defaultSubject(s.name);
      const { jsm } = await s.client();
      await addStream(jsm, "CAMP", subject, 1000);
      const w = s.writer(["--count", String(COUNT), "--rate", "20000", "--capacity", "524288"]);
      await waitFor("the segment", () => positions(s.name));
      const reporter = s.reporter(1, ["--out", "local.csv", "--quiet"]);
      const follow = s.follow(s.url("CAMP"), ["--out", "remote.csv", "--quiet"]);
      let bridge = s.bridge(0, s.url("CAMP"));
      let kills = 0;
      let serverKilled = false;
      let paused = false;
      while (kills < 20) {
        await delay(150 + rnd() * 450);
        if (kills === 8 && !serverKilled) {
          s.server.kill9();
          await s.server.restart();
          serverKilled = true;
          continue;
        }
        if (kills === 14 && !paused) {
          // Longer than the duplicate window (1 s) and the bridge's ack timeout (5 s).
          bridge.signal("SIGSTOP");
          await delay(6000);
          bridge.signal("SIGCONT");
          paused = true;
          continue;
        }
        killGroup(bridge); // not awaited: restarted at once, as a supervisor does
        bridge = s.bridge(0, s.url("CAMP"));
        kills++;
      }
      assert.equal(await w.waitExit(), 0, w.describe());
      const epoch = epochOf(s.name);
      await waitForReadPtr(s.name, 0, COUNT);
      await waitForReadPtr(s.name, 1, COUNT);
      await waitForLastSeq("follow's last row", s, "remote.csv", COUNT - 1, DEADLINE_MS * 2);
      // The last bridge may have started after its predecessor finished the work: SIGTERM only
      // once it is in its loop (a signal during Deno's start-up is the default action).
      await waitFor("the last bridge in its loop", () => bridge.stderr.includes("reading "));
      for (const p of [bridge, reporter, follow]) p.signal("SIGTERM");
      for (const p of [bridge, reporter, follow]) assert.equal(await p.waitExit(), 0, p.describe());
      const local = Deno.readFileSync(s.path("local.csv"));
      const remote = Deno.readFileSync(s.path("remote.csv"));
      assert.equal(checkRows(s.read("local.csv"), epoch).length, COUNT);
      assert.ok(
        local.length === remote.length && local.every((b, i) => b === remote[i]),
        "byte for byte",
      );
      const { messages, lost } = await checkExactlyOnce(jsm, "CAMP", epoch, COUNT);
      assert.equal(lost, 0);
      console.log(
        `seed ${seed}: ${kills} bridge kills, 1 server kill, 1 pause of 6 s; ${COUNT} entries in ${messages} messages, each seq once; ${local.length} CSV bytes equal`,
      );
    }),
});

Deno.test({
  name: "follow killed -9 and restarted 10 times mid-stream writes the reporter's CSV exactly",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () =>
    natsScenario("brfol", async (s) => {
      const rnd = random(Date.now() % 1_000_000);
      const COUNT = 100_000;
      const { jsm } = await s.client();
      await addStream(jsm, "FOL", defaultSubject(s.name));
      const w = s.writer(["--count", String(COUNT), "--rate", "20000", "--capacity", "131072"]);
      await waitFor("the segment", () => positions(s.name));
      const reporter = s.reporter(1, ["--out", "local.csv", "--quiet"]);
      const bridge = s.bridge(0, s.url("FOL"), ["--quiet", "--batch", "512"]);
      let follow = s.follow(s.url("FOL"), ["--out", "remote.csv", "--quiet"]);
      for (let k = 0; k < 10; k++) {
        await delay(200 + rnd() * 300);
        killGroup(follow);
        follow = s.follow(s.url("FOL"), ["--out", "remote.csv"]);
      }
      assert.equal(await w.waitExit(), 0);
      await waitForReadPtr(s.name, 1, COUNT);
      await waitForLastSeq("follow's last row", s, "remote.csv", COUNT - 1);
      await waitFor("the last follow in its loop", () => follow.stderr.includes("reading stream"));
      for (const p of [bridge, reporter, follow]) p.signal("SIGTERM");
      for (const p of [bridge, reporter, follow]) assert.equal(await p.waitExit(), 0, p.describe());
      assert.equal(s.read("remote.csv"), s.read("local.csv"));
      assert.equal(checkRows(s.read("remote.csv"), epochOf(s.name)).length, COUNT);
    }),
});

Deno.test({
  name:
    "negative checks: a repeated msg-id is acknowledged as a duplicate and stored once; a stale expected sequence is refused, and the bridge recovers from one",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () =>
    natsScenario("brneg", async (s) => {
      const { nc, jsm } = await s.client();
      const js = jetstream(nc);
      await addStream(jsm, "NEG", "neg.x", 60_000);
      const first = await js.publish("neg.x", new Uint8Array(64), { msgID: "1:0" });
      const again = await js.publish("neg.x", new Uint8Array(64), { msgID: "1:0" });
      assert.equal(again.duplicate, true);
      assert.equal(again.seq, first.seq);
      assert.equal((await jsm.streams.info("NEG")).state.messages, 1);
      await js.publish("neg.x", new Uint8Array(64), {
        msgID: "1:1",
        expect: { lastSubjectSequence: first.seq },
      });
      await assert.rejects(
        js.publish("neg.x", new Uint8Array(64), {
          msgID: "1:2",
          expect: { lastSubjectSequence: first.seq },
        }),
        (e: Error & { code?: number }) => e.code === 10071 && /wrong last sequence/.test(e.message),
      );
      assert.equal((await jsm.streams.info("NEG")).state.messages, 2);

      // The bridge: another message lands on its subject mid-run, so the bridge's predicted
      // sequence goes stale; the server refuses its next publish and it re-reads the stream.
      const COUNT = 60_000;
      const subject = defaultSubject(s.name);
      await addStream(jsm, "NEGB", subject);
      const w = s.writer(["--count", String(COUNT), "--rate", "20000", "--capacity", "65536"]);
      await waitFor("the segment", () => positions(s.name));
      const bridge = s.bridge(0, s.url("NEGB"), ["--batch", "256"]);
      await waitFor("a few messages", async () =>
        (await jsm.streams.info("NEGB")).state.messages > 10);
      let injected = false;
      while (!injected) {
        const last = await jsm.streams.getMessage("NEGB", { last_by_subj: subject });
        const at = streamPosition(last!.seq, last!.header)!;
        const h = last!.header;
        h.set("Rpt-First-Seq", String(at.first + at.count));
        h.set("Rpt-Count", "0");
        h.delete("Nats-Msg-Id");
        h.delete("Nats-Expected-Last-Msg-Id");
        h.delete("Nats-Expected-Last-Subject-Sequence");
        try {
          await js.publish(subject, new Uint8Array(0), {
            headers: h,
            expect: { lastSubjectSequence: at.seq },
          });
          injected = true;
        } catch {
          // the bridge published in between: try again
        }
      }
      assert.equal(await w.waitExit(), 0);
      await waitForReadPtr(s.name, 0, COUNT);
      await waitFor("the refusal notice", () =>
        /wrong last|reading again/.test(bridge.stderr));
      bridge.signal("SIGTERM");
      assert.equal(await bridge.waitExit(), 0, bridge.describe());
      await checkExactlyOnce(jsm, "NEGB", epochOf(s.name), COUNT);
    }),
});

Deno.test({
  name: "entries lost to lapping are recorded in the stream as a loss message; follow reports them",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () =>
    natsScenario("brlap", async (s) => {
      const { jsm } = await s.client();
      await addStream(jsm, "LAP", defaultSubject(s.name));
      const w0 = s.writer(["--count", "10", "--capacity", "1024"]);
      assert.equal(await w0.waitExit(), 0);
      const bridge = s.bridge(0, s.url("LAP"));
      await waitForReadPtr(s.name, 0, 10);
      bridge.signal("SIGSTOP");
      const w = s.writer(["--count", "20000", "--rate", "0"]);
      assert.equal(await w.waitExit(), 0);
      bridge.signal("SIGCONT");
      const COUNT = 20_010;
      await waitForReadPtr(s.name, 0, COUNT);
      await waitFor("the loss notice", () => bridge.stderr.includes("lost entries"));
      const { lost } = await checkExactlyOnce(jsm, "LAP", epochOf(s.name), COUNT);
      assert.ok(lost > 0 && lost <= COUNT - 1024);
      assert.equal(readU64(s.name, READ_PTRS_OFFSET), COUNT);
      const follow = s.follow(s.url("LAP"), ["--out", "remote.csv"]);
      await waitForLastSeq("follow's last row", s, "remote.csv", COUNT - 1);
      follow.signal("SIGTERM");
      bridge.signal("SIGTERM");
      assert.equal(await follow.waitExit(), 0);
      assert.match(follow.stderr, /follow: lost entries 10\.\./);
      assert.equal(checkRows(s.read("remote.csv"), epochOf(s.name)).length, COUNT - lost);
    }),
});

Deno.test({
  name:
    "server down: the bridge says so once, keeps its position, reconnects, records what the writer lapped meanwhile",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () =>
    natsScenario("brdown", async (s) => {
      const { jsm } = await s.client();
      await addStream(jsm, "DOWN", defaultSubject(s.name));
      const w0 = s.writer(["--count", "100", "--capacity", "1024"]);
      assert.equal(await w0.waitExit(), 0);
      const bridge = s.bridge(0, s.url("DOWN"));
      await waitForReadPtr(s.name, 0, 100);
      s.server.kill9();
      const w = s.writer(["--count", "5000", "--rate", "2000"]);
      assert.equal(await w.waitExit(), 0);
      await waitFor("the notice", () => bridge.stderr.includes("retrying with backoff"));
      assert.equal(
        readU64(s.name, READ_PTRS_OFFSET),
        100,
        "read_ptr kept while the server is down",
      );
      const beat = readU64(s.name, READER_HEARTBEATS_OFFSET);
      await waitFor("a heartbeat while the server is down", () =>
        readU64(s.name, READER_HEARTBEATS_OFFSET) > beat);
      await s.server.restart();
      await waitForReadPtr(s.name, 0, 5100);
      bridge.signal("SIGTERM");
      assert.equal(await bridge.waitExit(), 0, bridge.describe());
      const notices = bridge.stderr.split("\n").filter((l) =>
        l.includes("retrying with backoff")
      );
      assert.equal(notices.length, 1, bridge.stderr);
      await waitFor("the test's own client to reconnect", async () => {
        try {
          return (await jsm.streams.info("DOWN")).state.messages > 0;
        } catch {
          return false;
        }
      });
      const { lost } = await checkExactlyOnce(jsm, "DOWN", epochOf(s.name), 5100);
      assert.ok(lost > 0, "the writer lapped the bridge while the server was down");
      assert.match(bridge.stderr, /lost entries 100\.\./);
    }),
});

Deno.test({
  name:
    "deno task demo --nats: follow.csv equals output_0.csv after the bridge and follow are killed",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    if (requireTool("nats-server", NATS_INSTALL) === undefined) return;
    const task: string = JSON.parse(
      Deno.readTextFileSync(new URL("../deno.json", import.meta.url)),
    ).tasks.demo;
    const flags = task.split(" ").filter((f) => f.startsWith("--"));
    const dir = await Deno.makeTempDir({ prefix: "rpt_t2_demo_" });
    try {
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["run", "--quiet", ...flags, programPath("demo.ts"), "--nats"],
        cwd: dir,
        stdin: "null",
      }).output();
      const text = new TextDecoder().decode(out.stdout);
      assert.equal(out.code, 0, text + new TextDecoder().decode(out.stderr));
      assert.match(text, /follow\.csv equals output_0\.csv byte for byte/);
      assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name).sort(), [
        "follow.csv",
        "output_0.csv",
      ]);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "a re-created segment (new epoch): the bridge starts the new epoch in the stream and follow rotates its file exactly as the reporter does, byte for byte",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () =>
    natsScenario("brepoch", async (s) => {
      const { jsm } = await s.client();
      await addStream(jsm, "EPOCH", defaultSubject(s.name));
      const w1 = s.writer(["--count", "1000", "--rate", "0", "--capacity", "4096"]);
      assert.equal(await w1.waitExit(), 0);
      const oldEpoch = epochOf(s.name);
      const reporter = s.reporter(1, ["--out", "local.csv"]);
      const bridge = s.bridge(0, s.url("EPOCH"));
      let follow = s.follow(s.url("EPOCH"), ["--out", "remote.csv"]);
      await waitForReadPtr(s.name, 0, 1000);
      await waitForReadPtr(s.name, 1, 1000);
      await waitForLastSeq("follow's 1000 rows", s, "remote.csv", 999);
      // follow is restarted across the re-creation, so its start-up path sees the old file too.
      killGroup(follow);
      const w2 = s.writer(["--count", "700", "--rate", "0", "--recreate"]);
      assert.equal(await w2.waitExit(), 0);
      const newEpoch = epochOf(s.name);
      assert.notEqual(newEpoch, oldEpoch);
      follow = s.follow(s.url("EPOCH"), ["--out", "remote.csv"]);
      await waitForReadPtr(s.name, 0, 700);
      await waitForReadPtr(s.name, 1, 700);
      await waitForLastSeq("follow's rows of the new epoch", s, "remote.csv", 699);
      for (const p of [bridge, reporter, follow]) p.signal("SIGTERM");
      for (const p of [bridge, reporter, follow]) assert.equal(await p.waitExit(), 0, p.describe());
      assert.equal(s.read(`remote.epoch-${oldEpoch}.csv`), s.read(`local.epoch-${oldEpoch}.csv`));
      assert.equal(s.read("remote.csv"), s.read("local.csv"));
      assert.equal(checkRows(s.read("remote.csv"), newEpoch).length, 700);
      assert.equal(checkRows(s.read(`remote.epoch-${oldEpoch}.csv`), oldEpoch).length, 1000);
      const epochs = new Set((await streamMessages(jsm, "EPOCH")).map((m) => m.at.epoch));
      assert.deepEqual([...epochs], [oldEpoch, newEpoch]);
    }),
});

Deno.test({
  name:
    "exactly once at 1 KiB entries (a bytes[960] field): the bridge's process group killed -9 mid-copy and restarted at once, nothing reaped; every entry in the stream once at 1024 bytes, follow's CSV equals the reporter's byte for byte",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () =>
    natsScenario("brkill1k", async (s) => {
      const COUNT = 6000;
      const ENTRY = 1024;
      const schema = defineSchema([
        { name: "id", type: "u64" },
        { name: "blob", type: "bytes[960]" },
      ]);
      Deno.writeTextFileSync(s.path("k.json"), JSON.stringify(schema.fields.map(specOf)));
      const { jsm } = await s.client();
      await addStream(jsm, "K1K", defaultSubject(s.name));
      const w = s.writer([
        ...["--schema", "k.json", "--entry-size", String(ENTRY), "--capacity", "8192"],
        ...["--count", String(COUNT), "--rate", "2000"],
      ]);
      await waitFor("the segment", () => positions(s.name));
      const reporter = s.reporter(1, ["--out", "local.csv", "--quiet"]);
      const follow = s.follow(s.url("K1K"), ["--out", "remote.csv", "--quiet"]);
      let bridge = s.bridge(0, s.url("K1K"), ["--batch", "64", "--quiet"]);
      let kills = 0;
      while (kills < 2) {
        // Mid-copy: once this bridge has moved read_ptr, while the writer still publishes.
        const from = positions(s.name)!.readPtrs[0]!;
        if (from >= COUNT - 1000) break;
        await waitForReadPtr(s.name, 0, from + 1);
        killGroup(bridge); // not awaited: restarted at once
        bridge = s.bridge(0, s.url("K1K"), ["--batch", "64"]);
        kills++;
      }
      assert.equal(await w.waitExit(), 0, w.describe());
      await waitForReadPtr(s.name, 0, COUNT);
      await waitForReadPtr(s.name, 1, COUNT);
      const local = s.read("local.csv");
      await waitFor("follow's CSV to equal the reporter's", () => {
        try {
          return s.read("remote.csv") === local;
        } catch {
          return false;
        }
      });
      await waitFor("the last bridge in its loop", () => bridge.stderr.includes("reading "));
      for (const p of [bridge, reporter, follow]) p.signal("SIGTERM");
      for (const p of [bridge, reporter, follow]) assert.equal(await p.waitExit(), 0, p.describe());
      assert.ok(kills >= 1, "killed at least once mid-copy");
      const epoch = epochOf(s.name);
      assert.equal(checkSchemaRows(s.read("remote.csv"), schema, epoch).length, COUNT);
      // The stream: contiguous, each entry once, every message at 1024 bytes per entry.
      const messages = await streamMessages(jsm, "K1K");
      let next = 0;
      for (const { at, data } of messages) {
        assert.equal(at.epoch, epoch);
        assert.equal(at.entrySize, ENTRY, `stream seq ${at.seq}: Rpt-Entry-Size`);
        assert.equal(at.first, next, `stream seq ${at.seq}: first seq`);
        if (at.kind === STREAM_KIND_SCHEMA) continue;
        assert.equal(at.kind, STREAM_KIND_ENTRIES, `stream seq ${at.seq}: nothing lost`);
        assert.equal(data.length, at.count * ENTRY, `stream seq ${at.seq}: data size`);
        const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
        for (let k = 0; k < at.count; k++) {
          assert.equal(Number(view.getBigUint64(k * ENTRY, true)), at.first + k, "entry seq");
        }
        next += at.count;
      }
      assert.equal(next, COUNT, "every entry once");
      console.log(
        `${kills} kill -9 of the bridge mid-copy; ${COUNT} entries of ${ENTRY} bytes once in ${messages.length} messages; ${local.length} CSV bytes equal`,
      );
    }),
});
