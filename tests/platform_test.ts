/**
 * The per-CPU and per-OS facts of ffi/posix.ts hold on the machine running the tests: the CPU is
 * the one CI meant to test (RPT_EXPECT_ARCH, set by .ci/arm64 to "aarch64"), `struct stat`
 * offsets, the futex syscall number, and the open flags. Run natively on x86-64 and under qemu
 * user emulation on aarch64.
 */
import assert from "node:assert/strict";
import { uniqueName, unlinkQuietly } from "./_helpers.ts";
import { os, PosixError } from "../ffi/posix.ts";
import { FutexIdle, futexSupported } from "../idle.ts";
import { WAKE_SEQ_OFFSET } from "../layout.ts";
import { DEFAULT_ORDERING } from "../ring.ts";
import { Segment, SegmentNotFoundError } from "../segment.ts";

/**
 * The size of a shared-memory object as the kernel reports it, through coreutils' stat(1) on
 * /dev/shm (Deno's own stat needs --allow-all for /dev paths).
 */
async function kernelSize(name: string): Promise<number> {
  const out = await new Deno.Command("stat", { args: ["-c", "%s", `/dev/shm${name}`] }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  return Number(new TextDecoder().decode(out.stdout).trim());
}

Deno.test("platform: the tests run on the CPU CI meant to test, with its ring ordering", () => {
  const expected = Deno.env.get("RPT_EXPECT_ARCH");
  if (expected !== undefined) assert.equal(Deno.build.arch, expected, "RPT_EXPECT_ARCH");
  assert.ok(
    os().stat[Deno.build.arch] !== undefined,
    `no struct stat facts for ${Deno.build.arch}`,
  );
  assert.equal(DEFAULT_ORDERING, Deno.build.arch === "x86_64" ? "tso" : "atomic");
  console.log(`platform: ${Deno.build.os} ${Deno.build.arch}, ring ordering ${DEFAULT_ORDERING}`);
});

Deno.test({
  name:
    "platform: fstat through this CPU's struct stat offsets gives the size and inode the kernel reports",
  ignore: Deno.build.os !== "linux",
  fn: async () => {
    const name = uniqueName("stat");
    try {
      for (const capacity of [1, 16, 4096]) {
        {
          using created = Segment.create(name, { capacity });
          using opened = Segment.open(name, { readOnly: true }); // sized by fstat's st_size
          assert.equal(opened.size, await kernelSize(name), "st_size");
          assert.equal(opened.size, 0x180 + capacity * 64);
          assert.equal(created.size, opened.size);
          assert.equal(opened.info.capacity, capacity);
        }
        Segment.unlink(name);
      }
      // st_ino: the same object is "same"; one re-created under the name is "replaced".
      using old = Segment.create(name, { capacity: 8 });
      assert.equal(old.identity(), "same");
      Segment.unlink(name);
      assert.equal(old.identity(), "removed");
      using _fresh = Segment.create(name, { capacity: 8 });
      assert.equal(old.identity(), "replaced");
    } finally {
      unlinkQuietly(name);
    }
  },
});

Deno.test({
  name: "platform: O_CREAT|O_EXCL refuses an existing segment with EEXIST; a missing one is ENOENT",
  ignore: Deno.build.os !== "linux",
  fn: () => {
    const name = uniqueName("flags");
    try {
      using _seg = Segment.create(name, { capacity: 8 });
      assert.throws(
        () => Segment.create(name, { capacity: 8 }),
        (e: unknown) => e instanceof PosixError && e.code === "EEXIST" && e.errno === 17,
      );
    } finally {
      unlinkQuietly(name);
    }
    assert.throws(() => Segment.open(name), SegmentNotFoundError);
  },
});

Deno.test({
  name:
    "platform: this CPU's futex syscall number blocks until the timeout, and returns at once when the word moved",
  ignore: !futexSupported(),
  fn: () => {
    const expected: Record<string, number> = { x86_64: 202, aarch64: 98 };
    assert.equal(os().futexSyscall![Deno.build.arch], expected[Deno.build.arch]);
    using seg = Segment.create(uniqueName("futex"), { capacity: 8 });
    Segment.unlink(seg.name);
    const idle = new FutexIdle(seg.buffer, 50);
    // Nothing wakes it: only a real FUTEX_WAIT blocks and then fails with ETIMEDOUT. Any other
    // syscall behind a wrong number returns another errno ("interrupted") or 0 ("woken").
    while (idle.lastWait === "none") idle.idle(() => false);
    assert.equal(idle.lastWait, "timeout");
    // The word moves between the announcement and the wait: FUTEX_WAIT sees it and fails with
    // EAGAIN instead of sleeping.
    const words = new Uint32Array(seg.buffer);
    idle.reset();
    idle.lastWait = "none";
    while (idle.lastWait === "none") {
      idle.idle(() => {
        Atomics.add(words, WAKE_SEQ_OFFSET >>> 2, 1);
        return false;
      });
    }
    assert.equal(idle.lastWait, "changed");
  },
});
