/**
 * The bridge and follow in real deployments and against bad input: user/password and token in
 * the URL, a credentials file (operator, account and user JWTs signed here with nkeys, the
 * server in operator mode), TLS with a CA made here with `openssl`, and every bad input with its
 * own exit status, one line on stderr, and nothing changed (a server whose `max_payload` cannot
 * hold one entry too).
 *
 * @module
 */
import assert from "node:assert/strict";
import { createAccount, createOperator, createUser, type KeyPair } from "@nats-io/nkeys";
import { ExitCode } from "../cli.ts";
import { READ_PTRS_OFFSET, READER_OWNERS_OFFSET } from "../layout.ts";
import { defaultSubject } from "../nats.ts";
import { DEFAULT_SCHEMA } from "../schema.ts";
import {
  addStream,
  checkExactlyOnce,
  checkRows,
  epochOf,
  freePort,
  type NatsScenario,
  natsScenario,
  Proc,
  readU64,
  requireTool,
  startFollow,
  streamMessages,
  waitFor,
  waitForLastSeq,
  waitForReadPtr,
} from "./_helpers.ts";

const COUNT = 2000;

/** Runs the bridge and follow through `url` and checks the stream and follow's CSV. */
async function roundTrip(s: NatsScenario, url: string, args: string[] = []) {
  const w = s.writer(["--count", String(COUNT), "--capacity", "4096"]);
  assert.equal(await w.waitExit(), 0);
  const bridge = s.bridge(0, url, args);
  await waitForReadPtr(s.name, 0, COUNT);
  const follow = s.follow(url, ["--out", "remote.csv", ...args]);
  await waitForLastSeq("follow's last row", s, "remote.csv", COUNT - 1);
  bridge.signal("SIGTERM");
  follow.signal("SIGTERM");
  assert.equal(await bridge.waitExit(), 0, bridge.describe());
  assert.equal(await follow.waitExit(), 0, follow.describe());
  assert.equal(checkRows(s.read("remote.csv"), epochOf(s.name)).length, COUNT);
  return bridge;
}

/** Expects `program` to exit with `code` and one line `<program>: error: Cannot ...`. */
async function refused(
  p: { waitExit(): Promise<number>; stderr: string; label: string },
  code: number,
  what: RegExp,
) {
  const status = await p.waitExit();
  const lines = p.stderr.trim().split("\n");
  assert.equal(status, code, `${p.label}: exit status\n${p.stderr}`);
  assert.equal(lines.length, 1, `${p.label}: one line\n${p.stderr}`);
  assert.match(lines[0]!, /^(bridge|follow): error: Cannot /);
  assert.match(lines[0]!, what);
}

Deno.test({
  name:
    "user/password and token given in the URL are accepted; wrong ones exit 12 and change nothing",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    await natsScenario("brpass", async (s) => {
      const base = `nats://alice:s3cret@${s.server.hostPort}`;
      await roundTrip(s, `${base}/PASS`);
      const { jsm } = await s.client({ user: "alice", pass: "s3cret" });
      await checkExactlyOnce(jsm, "PASS", epochOf(s.name), COUNT);
      const bad = `nats://alice:wrong@${s.server.hostPort}/PASS`;
      await refused(s.bridge(0, bad), ExitCode.NATS_AUTH, /refused the credentials/);
      await refused(
        s.follow(bad, ["--out", "x.csv"]),
        ExitCode.NATS_AUTH,
        /refused the credentials/,
      );
      assert.equal(readU64(s.name, READ_PTRS_OFFSET), COUNT);
      assert.throws(() => Deno.statSync(s.path("x.csv")));
    }, { config: 'authorization { user: alice, password: "s3cret" }\n' });
    await natsScenario("brtoken", async (s) => {
      await roundTrip(s, `nats://t0ken@${s.server.hostPort}/TOKEN`);
      const bad = `nats://nope@${s.server.hostPort}/TOKEN`;
      await refused(s.bridge(0, bad), ExitCode.NATS_AUTH, /refused the credentials/);
      await refused(s.follow(bad), ExitCode.NATS_AUTH, /refused the credentials/);
      assert.equal(readU64(s.name, READ_PTRS_OFFSET), COUNT);
    }, { config: 'authorization { token: "t0ken" }\n' });
  },
});

/** A NATS JWT (`ed25519-nkey`) with `claims.nats`, signed by `issuer`. */
function natsJwt(issuer: KeyPair, subject: string, name: string, nats: object): string {
  const b64 = (b: Uint8Array) =>
    btoa(String.fromCharCode(...b)).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
  const text = (o: object) => b64(new TextEncoder().encode(JSON.stringify(o)));
  const header = text({ typ: "JWT", alg: "ed25519-nkey" });
  const jti = Array.from(
    crypto.getRandomValues(new Uint8Array(26)),
    (x) => "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"[x % 32],
  )
    .join("");
  const payload = text({
    jti,
    iat: Math.floor(Date.now() / 1000),
    iss: issuer.getPublicKey(),
    name,
    sub: subject,
    nats: { ...nats, version: 2 },
  });
  return `${header}.${payload}.${
    b64(issuer.sign(new TextEncoder().encode(`${header}.${payload}`)))
  }`;
}

/**
 * An operator-mode server configuration (memory resolver: a system account and one account with
 * JetStream) and a credentials file text for a user of that account, made without `nsc`.
 */
function operatorSetup(): { config: string; creds: string; strangerCreds: string } {
  const operator = createOperator();
  const system = createAccount();
  const account = createAccount();
  const unlimited = { subs: -1, data: -1, payload: -1, imports: -1, exports: -1, wildcards: true };
  const limits = { ...unlimited, conn: -1, leaf: -1 };
  const jetStream = { ...limits, mem_storage: -1, disk_storage: -1, streams: -1, consumer: -1 };
  const accountJwt = (a: KeyPair, name: string, l: object) =>
    natsJwt(operator, a.getPublicKey(), name, {
      type: "account",
      limits: l,
      default_permissions: { pub: {}, sub: {} },
    });
  const config = `operator: "${
    natsJwt(operator, operator.getPublicKey(), "rpt", { type: "operator" })
  }"
system_account: ${system.getPublicKey()}
resolver: MEMORY
resolver_preload: {
  ${system.getPublicKey()}: "${accountJwt(system, "SYS", limits)}"
  ${account.getPublicKey()}: "${accountJwt(account, "RPT", jetStream)}"
}
`;
  const credsOf = (issuer: KeyPair) => {
    const user = createUser();
    const jwt = natsJwt(issuer, user.getPublicKey(), "bridge", {
      type: "user",
      pub: {},
      sub: {},
      subs: -1,
      data: -1,
      payload: -1,
    });
    return `-----BEGIN NATS USER JWT-----\n${jwt}\n------END NATS USER JWT------\n\n` +
      `-----BEGIN USER NKEY SEED-----\n${
        new TextDecoder().decode(user.getSeed())
      }\n------END USER NKEY SEED------\n`;
  };
  // A user of an account the server does not know: a well-formed file the server must refuse.
  return { config, creds: credsOf(account), strangerCreds: credsOf(createAccount()) };
}

Deno.test({
  name: "a NATS credentials file (--creds) is accepted; a foreign or malformed one exits 12",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const setup = operatorSetup();
    await natsScenario("brcreds", async (s) => {
      Deno.writeTextFileSync(s.path("user.creds"), setup.creds);
      Deno.writeTextFileSync(s.path("stranger.creds"), setup.strangerCreds);
      Deno.writeTextFileSync(s.path("bad.creds"), "not a credentials file\n");
      const url = `nats://${s.server.hostPort}/CREDS`;
      await roundTrip(s, url, ["--creds", "user.creds"]);
      await refused(s.bridge(0, url), ExitCode.NATS_AUTH, /refused the credentials/);
      await refused(s.bridge(0, url, ["--creds", "stranger.creds"]), ExitCode.NATS_AUTH, /refused/);
      await refused(s.follow(url, ["--creds", "stranger.creds"]), ExitCode.NATS_AUTH, /refused/);
      await refused(
        s.bridge(0, url, ["--creds", "bad.creds"]),
        ExitCode.NATS_AUTH,
        /no NATS user JWT/,
      );
      await refused(
        s.follow(url, ["--creds", "missing.creds"]),
        ExitCode.NATS_AUTH,
        /missing\.creds/,
      );
      assert.equal(readU64(s.name, READ_PTRS_OFFSET), COUNT);
    }, { config: setup.config });
  },
});

/** Makes a CA and a server certificate for 127.0.0.1 and localhost in `dir` with openssl. */
async function makeCertificates(openssl: string, dir: string): Promise<void> {
  const run = async (...args: string[]) => {
    const out = await new Deno.Command(openssl, { args, cwd: dir, stdout: "null", stderr: "piped" })
      .output();
    assert.ok(out.success, `openssl ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  };
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  await run(
    "req",
    "-x509",
    ...ec,
    "-keyout",
    "ca.key",
    "-out",
    "ca.pem",
    "-days",
    "2",
    "-subj",
    "/CN=rpt test CA",
  );
  await run("req", ...ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost");
  Deno.writeTextFileSync(`${dir}/san.ext`, "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
  await run(
    "x509",
    "-req",
    "-in",
    "server.csr",
    "-CA",
    "ca.pem",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-out",
    "server.pem",
    "-days",
    "2",
    "-extfile",
    "san.ext",
  );
}

Deno.test({
  name: "TLS with a CA file: tls:// with --tls-ca works; an untrusted server certificate exits 14",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const openssl = requireTool("openssl", "apt-get install openssl");
    if (openssl === undefined) return;
    const certs = await Deno.makeTempDir({ prefix: "rpt_t2_tls_" });
    try {
      await makeCertificates(openssl, certs);
      const config = `tls { cert_file: "${certs}/server.pem", key_file: "${certs}/server.key" }\n`;
      await natsScenario("brtls", async (s) => {
        Deno.copyFileSync(`${certs}/ca.pem`, s.path("ca.pem"));
        const url = `tls://${s.server.hostPort}/TLS`;
        await roundTrip(s, url, ["--tls-ca", "ca.pem"]);
        await refused(s.bridge(0, url), ExitCode.NATS_TLS, /TLS/);
        await refused(s.follow(url), ExitCode.NATS_TLS, /TLS/);
        await refused(
          s.bridge(0, url, ["--tls-ca", "missing.pem"]),
          ExitCode.NATS_TLS,
          /missing\.pem/,
        );
        assert.equal(readU64(s.name, READ_PTRS_OFFSET), COUNT);
      }, { config });
    } finally {
      await Deno.remove(certs, { recursive: true });
    }
  },
});

Deno.test({
  name: "every bad input to bridge and follow exits with its own status, one line, nothing changed",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () =>
    natsScenario("brbad", async (s) => {
      const w = s.writer(["--count", "100"]);
      assert.equal(await w.waitExit(), 0);
      const { jsm } = await s.client();
      await addStream(jsm, "OTHER", "other.>");
      const hp = s.server.hostPort;
      const cases: [string, string[], number, RegExp][] = [
        ["not nats://", [`http://${hp}/S`], ExitCode.NATS_URL, /nats:\/\/ or tls:\/\/.*"http:/],
        ["no stream", [`nats://${hp}`], ExitCode.NATS_STREAM_NAME, /names no stream/],
        ["empty stream", [`nats://${hp}/`], ExitCode.NATS_STREAM_NAME, /names no stream/],
        ["bad stream", [`nats://${hp}/a.b`], ExitCode.NATS_STREAM_NAME, /"a\.b"/],
        [
          "subject not captured",
          [`nats://${hp}/OTHER`],
          ExitCode.NATS_SUBJECT,
          /do not capture rpt\./,
        ],
        [
          "host outside the grant",
          [`nats://127.0.0.1:${freePort()}/S`],
          ExitCode.NATS_NOT_PERMITTED,
          /--allow-net/,
        ],
        ["bad subject", [`nats://${hp}/S`, "--subject", "a..b"], ExitCode.USAGE, /--subject/],
      ];
      for (const [what, args, code, message] of cases) {
        await refused(s.bridge(0, args[0]!, args.slice(1)), code, message).catch((e) => {
          throw new Error(`bridge, ${what}: ${e.message}`);
        });
        await refused(s.follow(args[0]!, args.slice(1)), code, message).catch((e) => {
          throw new Error(`follow, ${what}: ${e.message}`);
        });
      }
      // A stream the bridge has not made yet is waited for, said once; SIGTERM ends the wait.
      const waiting = s.follow(`nats://${hp}/NOPE`, ["--out", "nope.csv"]);
      await waitFor("the waiting notice", () => waiting.stderr.includes("waiting for stream NOPE"));
      waiting.signal("SIGTERM");
      assert.equal(await waiting.waitExit(), 0, waiting.describe());
      assert.match(waiting.stdout, /stopped \(SIGTERM\) before stream NOPE appeared/);
      await refused(s.bridge(9, `nats://${hp}/S`), ExitCode.USAGE, /reader id/);
      // Reader id 1 held by a live reporter: the bridge claims ids like any reporter.
      const holder = s.reporter(1, ["--out", "held.csv"]);
      await waitFor("reporter 1 attached", () => holder.stderr.includes("reading "));
      await refused(
        s.bridge(1, `nats://${hp}/HELD`),
        ExitCode.OWNERSHIP,
        new RegExp(`reader id 1 of segment .* is held by live pid ${holder.pid}`),
      );
      holder.signal("SIGTERM");
      assert.equal(await holder.waitExit(), 0);
      // Nothing changed: no position, no owner, no stream, the other stream as it was.
      assert.equal(readU64(s.name, READ_PTRS_OFFSET), 0);
      assert.equal(readU64(s.name, READER_OWNERS_OFFSET), 0);
      const names = [];
      for await (const info of jsm.streams.list()) names.push(info.config.name);
      assert.deepEqual(names, ["OTHER"]);
      assert.deepEqual((await jsm.streams.info("OTHER")).config.subjects, ["other.>"]);
      assert.equal((await jsm.streams.info("OTHER")).state.messages, 0);
      assert.equal(defaultSubject(s.name).startsWith("rpt."), true);
    }),
});

Deno.test({
  name:
    "a server whose max_payload (64 KiB) cannot hold one 64 KiB entry, or a schema block of 66,008 bytes, with the headers: the bridge exits 21 naming both values, nothing published or stored; 32 KiB entries go one per message",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () =>
    natsScenario("brmaxp", async (s) => {
      const url = s.url("MAXP");
      const w = s.writer(["--entry-size", "65536", "--count", "5", "--capacity", "16"]);
      assert.equal(await w.waitExit(), 0, w.describe());
      await refused(
        s.bridge(0, url),
        ExitCode.NATS_MAX_PAYLOAD,
        new RegExp(
          `^bridge: error: Cannot publish segment ${s.name} into stream MAXP subject ${
            defaultSubject(s.name)
          } as the server's max_payload must hold one entry and 1024 bytes of headers: current values are max_payload 65536 and entry size 65536$`,
        ),
      );
      // A schema block that does not fit either: 1500 u8 fields, 8 + 44 x 1500 bytes (version 2).
      const fields = Array.from({ length: 1500 }, (_, i) => ({ name: `f${i}`, type: "u8" }));
      Deno.writeTextFileSync(s.path("many.json"), JSON.stringify(fields));
      const wMany = s.writer(
        ["--recreate", "--schema", "many.json", "--entry-size", "2048", "--count", "5"],
      );
      assert.equal(await wMany.waitExit(), 0, wMany.describe());
      await refused(
        s.bridge(0, url),
        ExitCode.NATS_MAX_PAYLOAD,
        /max_payload must hold the schema block and 1024 bytes of headers: current values are max_payload 65536 and schema block 66008 bytes$/,
      );
      assert.equal(readU64(s.name, READ_PTRS_OFFSET), 0);
      assert.equal(readU64(s.name, READER_OWNERS_OFFSET), 0);
      const { jsm } = await s.client();
      const names = [];
      for await (const info of jsm.streams.list()) names.push(info.config.name);
      assert.deepEqual(names, [], "no stream created");
      // Half the size fits once (65536 - 1024 bytes hold one entry of 32 KiB): one per message.
      const w2 = s.writer([
        "--recreate",
        "--entry-size",
        "32768",
        "--count",
        "20",
        "--capacity",
        "32",
      ]);
      assert.equal(await w2.waitExit(), 0, w2.describe());
      const bridge = s.bridge(0, url);
      await waitForReadPtr(s.name, 0, 20);
      bridge.signal("SIGTERM");
      assert.equal(await bridge.waitExit(), 0, bridge.describe());
      const messages = await streamMessages(jsm, "MAXP");
      assert.deepEqual(
        messages.map((m) => [m.at.kind, m.at.count, m.at.entrySize, m.data.length]),
        [
          ["schema", 0, 32768, DEFAULT_SCHEMA.block.length],
          ...Array.from({ length: 20 }, () => ["entries", 1, 32768, 32768]),
        ],
      );
    }, { config: "max_payload: 65536\n" }),
});

Deno.test({
  name:
    "follow with neither --name nor --subject follows the stream's one bridge subject; a stream holding several subjects is exit 2 listing them",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () =>
    natsScenario("brsubj", async (s) => {
      const started: Proc[] = [];
      try {
        await followsItsSubject(s, started);
      } finally {
        await Promise.all(started.map((p) => p.close()));
      }
    }),
});

/** The body of the test above: `started` collects the follows it starts without the scenario. */
async function followsItsSubject(s: NatsScenario, started: Proc[]): Promise<void> {
  const w = s.writer(["--count", "300", "--capacity", "1024"]);
  assert.equal(await w.waitExit(), 0);
  const hp = s.server.hostPort;
  // The segment's own name (not the default): the bridge publishes on rpt.<that name>.
  const bridge = s.bridge(0, `nats://${hp}/ONE`);
  await waitForReadPtr(s.name, 0, 300);
  // As a user on another host types it: no --name, no --subject.
  const bare = (stream: string, out: string) => {
    const p = startFollow([`nats://${hp}/${stream}`, "--out", out], s.dir, hp);
    started.push(p);
    return p;
  };
  const follow = bare("ONE", "one.csv");
  await waitForLastSeq("follow's last row", s, "one.csv", 299);
  follow.signal("SIGTERM");
  assert.equal(await follow.waitExit(), 0, follow.describe());
  assert.match(
    follow.stderr,
    new RegExp(`following subject ${defaultSubject(s.name)} of stream ONE`),
  );
  assert.equal(checkRows(s.read("one.csv"), epochOf(s.name)).length, 300);
  bridge.signal("SIGTERM");
  assert.equal(await bridge.waitExit(), 0, bridge.describe());
  // Two bridges into one stream, on two subjects: follow cannot choose.
  const { jsm } = await s.client();
  await addStream(jsm, "MULTI", "multi.>");
  for (const [id, subject] of [[1, "multi.a"], [2, "multi.b"]] as const) {
    const b = s.bridge(id, `nats://${hp}/MULTI`, ["--subject", subject]);
    await waitForReadPtr(s.name, id, 300);
    b.signal("SIGTERM");
    assert.equal(await b.waitExit(), 0, b.describe());
  }
  await refused(
    bare("MULTI", "multi.csv"),
    ExitCode.USAGE,
    /stream MULTI holds the messages of several subjects.*current value is multi\.a, multi\.b$/,
  );
  const chosen = s.follow(`nats://${hp}/MULTI`, ["--subject", "multi.b", "--out", "b.csv"]);
  await waitForLastSeq("follow's last row on multi.b", s, "b.csv", 299);
  chosen.signal("SIGTERM");
  assert.equal(await chosen.waitExit(), 0, chosen.describe());
}

Deno.test({
  name:
    "bridge --from latest starts a stream at write_ptr (nothing reported lost); a stream holding the epoch's messages wins over --from, saying so",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () =>
    natsScenario("brfrom", async (s) => {
      const w = s.writer(["--count", "5000", "--capacity", "1024", "--rate", "0"]);
      assert.equal(await w.waitExit(), 0);
      const hp = s.server.hostPort;
      const late = s.bridge(0, `nats://${hp}/LATE`, ["--from", "latest"]);
      await waitFor("the bridge to start", () => /reading .* from seq 5000/.test(late.stderr));
      const more = s.writer(["--count", "100", "--rate", "0"]);
      assert.equal(await more.waitExit(), 0);
      await waitForReadPtr(s.name, 0, 5100);
      late.signal("SIGTERM");
      assert.equal(await late.waitExit(), 0, late.describe());
      assert.doesNotMatch(late.stderr, /lost entries/);
      const { jsm } = await s.client();
      const entries = (await streamMessages(jsm, "LATE")).filter((m) => m.at.kind === "entries");
      assert.equal(entries[0]!.at.first, 5000);
      assert.equal(entries.reduce((n, m) => n + m.at.count, 0), 100);
      // Again with --from oldest: the stream's own position wins.
      const again = s.bridge(0, `nats://${hp}/LATE`, ["--from", "oldest"]);
      await waitFor("the bridge to say its position wins", () =>
        /--from oldest applies/.test(again.stderr));
      again.signal("SIGTERM");
      assert.equal(await again.waitExit(), 0, again.describe());
      await refused(
        s.bridge(0, `nats://${hp}/LATE`, ["--from", "soon"]),
        ExitCode.USAGE,
        /--from must be oldest, latest, persisted or a seq.*"soon"/,
      );
    }),
});
