/**
 * The permission flags of the programs: `programs.ts` matches the tasks of `deno.json`, and the
 * bridge's and follow's grants are minimal: each one is needed (taking it away breaks the
 * program) and nothing else is (the programs run with exactly these).
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  BRIDGE_FLAGS,
  FOLLOW_FLAGS,
  NATS_HOSTS,
  REPORTER_FLAGS,
  spawnProgram,
  STATUS_FLAGS,
  withNatsHosts,
  WRITER_FLAGS,
} from "../programs.ts";
import { addStream, natsScenario, Proc, waitForReadPtr } from "./_helpers.ts";
import { defaultSubject } from "../nats.ts";
import { ExitCode } from "../cli.ts";

const ROOT = new URL("../", import.meta.url);

Deno.test("programs.ts holds the exact flags of every deno.json task", () => {
  const tasks = JSON.parse(Deno.readTextFileSync(new URL("deno.json", ROOT))).tasks;
  assert.equal(tasks.writer, `deno run ${WRITER_FLAGS.join(" ")} writer.ts`);
  assert.equal(tasks.reporter, `deno run ${REPORTER_FLAGS.join(" ")} reporter.ts`);
  assert.equal(tasks.status, `deno run ${STATUS_FLAGS.join(" ")} status.ts`);
  assert.equal(tasks.bridge, `deno run ${BRIDGE_FLAGS.join(" ")} bridge.ts`);
  assert.equal(tasks.follow, `deno run ${FOLLOW_FLAGS.join(" ")} follow.ts`);
  assert.equal(NATS_HOSTS, "127.0.0.1:4222,localhost:4222");
  assert.ok(!FOLLOW_FLAGS.includes("--allow-ffi"), "follow runs where there is no segment");
});

Deno.test({
  name: "bridge and follow need each flag they are given: without one they fail with one line",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () =>
    natsScenario("brperm", async (s) => {
      const { jsm } = await s.client();
      await addStream(jsm, "PERM", defaultSubject(s.name));
      const w = s.writer(["--count", "100"]);
      assert.equal(await w.waitExit(), 0);
      Deno.writeTextFileSync(s.path("user.creds"), "not a creds file\n");
      const url = s.url("PERM");
      const hp = s.server.hostPort;
      const run = async (file: string, flags: string[], args: string[]) => {
        const p = new Proc(file, spawnProgram(file, flags, args, { cwd: s.dir }));
        const code = await p.waitExit();
        return { code, stderr: p.stderr };
      };
      const without = (flags: readonly string[], flag: string) =>
        withNatsHosts(flags, hp).filter((f) => !f.startsWith(flag));
      const P = ExitCode.PERMISSION;
      const cases: [string, string[], string[], number, RegExp][] = [
        [
          "bridge.ts",
          without(BRIDGE_FLAGS, "--allow-ffi"),
          ["0", url, "--name", s.name],
          P,
          /ffi/i,
        ],
        [
          "bridge.ts",
          without(BRIDGE_FLAGS, "--allow-net"),
          ["0", url, "--name", s.name],
          ExitCode.NATS_NOT_PERMITTED,
          /net/,
        ],
        [
          "bridge.ts",
          without(BRIDGE_FLAGS, "--allow-read"),
          ["0", url, "--name", s.name, "--creds", "user.creds"],
          ExitCode.NATS_AUTH,
          /read/,
        ],
        [
          "follow.ts",
          without(FOLLOW_FLAGS, "--allow-net"),
          [url, "--name", s.name],
          ExitCode.NATS_NOT_PERMITTED,
          /net/,
        ],
        [
          "follow.ts",
          without(FOLLOW_FLAGS, "--allow-write"),
          [url, "--name", s.name],
          ExitCode.OUTPUT,
          /write/,
        ],
        [
          "follow.ts",
          without(FOLLOW_FLAGS, "--allow-read"),
          [url, "--name", s.name],
          ExitCode.OUTPUT,
          /read/,
        ],
      ];
      for (const [file, flags, args, status, what] of cases) {
        const { code, stderr } = await run(file, flags, args);
        assert.equal(code, status, `${file} ${flags.join(" ")}: ${stderr}`);
        const lines = stderr.trim().split("\n");
        assert.equal(lines.length, 1, `${file} ${flags.join(" ")}: one line\n${stderr}`);
        assert.match(lines[0]!, what, `${file} ${flags.join(" ")}`);
      }
      // With exactly the task flags (network scoped to the test's server) both work.
      const bridge = s.bridge(0, url);
      await waitForReadPtr(s.name, 0, 100);
      bridge.signal("SIGTERM");
      assert.equal(await bridge.waitExit(), 0, bridge.describe());
    }),
});
