import assert from "node:assert/strict";

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
