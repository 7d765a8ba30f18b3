/**
 * The bridge into a 3-node JetStream cluster on loopback, a stream of 3 replicas, the stream
 * leader killed -9 mid-run: every seq is still in the stream exactly once, and follow's CSV
 * equals a local reporter's.
 *
 * @module
 */
import assert from "node:assert/strict";
import { connect } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { defaultSubject } from "../nats.ts";
import {
  addStream,
  checkExactlyOnce,
  closeAll,
  delay,
  epochOf,
  freePort,
  killGroup,
  NATS_INSTALL,
  NatsServer,
  positions,
  type Proc,
  requireTool,
  scenario,
  startBridge,
  startFollow,
  waitFor,
  waitForLastSeq,
  waitForReadPtr,
} from "./_helpers.ts";

Deno.test({
  name:
    "cluster: 3 nodes, a stream of 3 replicas, the stream leader killed -9 mid-run; every seq once, follow's CSV equals the reporter's",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const bin = requireTool("nats-server", NATS_INSTALL);
    if (bin === undefined) return;
    await scenario("brclu", async (s) => {
      const ports = [freePort(), freePort(), freePort()];
      const routes = [freePort(), freePort(), freePort()];
      const servers: NatsServer[] = [];
      const procs: Proc[] = [];
      const hosts = ports.map((p) => `127.0.0.1:${p}`).join(",");
      const nc = { close: () => Promise.resolve() } as { close(): Promise<void> };
      let client = nc;
      try {
        for (let i = 0; i < 3; i++) {
          const config = `server_name: n${i}
cluster {
  name: rpt
  listen: 127.0.0.1:${routes[i]}
  routes: [${routes.map((r) => `nats-route://127.0.0.1:${r}`).join(", ")}]
}
`;
          servers.push(await NatsServer.start(bin, s.dir, { config, port: ports[i], tag: `${i}` }));
        }
        const conn = await connect({ servers: ports.map((p) => `127.0.0.1:${p}`) });
        client = conn;
        const jsm = await jetstreamManager(conn, { checkAPI: false });
        const subject = defaultSubject(s.name);
        await waitFor("the cluster's JetStream", async () => {
          try {
            await addStream(jsm, "CLU", subject, 2000, 3);
            return true;
          } catch {
            return false;
          }
        });
        const COUNT = 100_000;
        const url = `nats://127.0.0.1:${ports[0]}/CLU`;
        const w = s.writer(["--count", String(COUNT), "--rate", "20000", "--capacity", "131072"]);
        await waitFor("the segment", () => positions(s.name));
        const reporter = s.reporter(1, ["--out", "local.csv", "--quiet"]);
        const bridge = startBridge(["0", url, "--name", s.name], s.dir, hosts);
        const follow = startFollow(
          [`nats://127.0.0.1:${ports[1]}/CLU`, "--name", s.name, "--out", "remote.csv"],
          s.dir,
          hosts,
        );
        procs.push(bridge, follow, reporter);
        await waitFor(
          "20,000 entries bridged",
          () => (positions(s.name)?.readPtrs[0] ?? 0) > 20_000,
        );
        const leader = (await jsm.streams.info("CLU")).cluster?.leader ?? "";
        const index = Number(leader.replace("n", ""));
        assert.ok(index >= 0 && index < 3, `leader ${leader}`);
        servers[index]!.kill9();
        console.log(
          `killed the stream leader ${leader} at read_ptr ${positions(s.name)?.readPtrs[0]}`,
        );
        await delay(1000);
        await servers[index]!.restart();
        assert.equal(await w.waitExit(), 0);
        await waitForReadPtr(s.name, 0, COUNT);
        await waitForLastSeq("follow's last row", s, "remote.csv", COUNT - 1);
        for (const p of procs) p.signal("SIGTERM");
        for (const p of procs) assert.equal(await p.waitExit(), 0, p.describe());
        const { messages } = await checkExactlyOnce(jsm, "CLU", epochOf(s.name), COUNT);
        assert.equal(s.read("remote.csv"), s.read("local.csv"));
        const rewinds = bridge.stderr.split("\n").filter((l) => l.includes("reading again"));
        console.log(
          `${COUNT} entries in ${messages} messages, each seq once after the leader's kill -9; the bridge re-read the stream ${rewinds.length} times: ${
            rewinds.join(" | ")
          }`,
        );
      } catch (e) {
        for (const p of procs) console.error(p.describe());
        for (const server of servers) console.error(server.describe());
        throw e;
      } finally {
        for (const p of procs) killGroup(p);
        await closeAll(...procs);
        await client.close().catch(() => {});
        await Promise.all(servers.map((x) => x.close()));
      }
    });
  },
});
