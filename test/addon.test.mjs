// Issue 2: the addon, sessions, tensors, error codes, memory accounting, async ops.
import { test } from "node:test";
import assert from "node:assert/strict";
import { openSession, tensorFrom, memoryStats, native, QloraError, resolveDevice } from "../dist/index.js";

const f32ToBf16 = (x) => {
  const u = new Uint32Array(new Float32Array([x]).buffer)[0];
  return (u + 0x7fff + ((u >>> 16) & 1)) >>> 16;
};

function expectCode(fn, code, pattern) {
  assert.throws(fn, (e) => {
    assert.ok(e instanceof QloraError, `expected QloraError, got ${e?.constructor?.name}: ${e?.message}`);
    assert.equal(e.code, code, e.message);
    if (pattern) assert.match(e.message, pattern);
    return true;
  });
}

test("the addon loads; auto picks the GPU when one is usable, else the CPU with a notice", () => {
  const info = native.systemInfo(false);
  assert.equal(typeof info.cpu.threads, "number");
  assert.ok(info.cpu.threads >= 1);
  const notices = [];
  const dev = resolveDevice("auto", (m) => notices.push(m));
  if (info.cuda.available) {
    assert.equal(dev, "cuda:0");
  } else {
    assert.equal(dev, "cpu");
    assert.match(notices[0], /no usable GPU .*running on the CPU/);
  }
  assert.equal(resolveDevice("cpu"), "cpu");
});

test("tensor round trip for every dtype", async () => {
  const s = openSession("cpu");
  const cases = [
    ["f32", new Float32Array([1.5, -2.25, 3e-8, 1e30, 0, -0])],
    ["bf16", new Uint16Array([0x3fc0, 0xc010, 0x7f80, 0x0001, 0, 0x8000])],
    ["f16", new Uint16Array([0x3c00, 0xbc00, 0x7bff, 0x0001, 0, 0x8000])],
    ["u8", new Uint8Array([0, 1, 127, 128, 255, 7])],
    ["i32", new Int32Array([0, -1, 2147483647, -2147483648, 42, 7])],
  ];
  for (const [dtype, data] of cases) {
    const t = s.fromHost(data, dtype, [2, 3]);
    assert.equal(t.dtype, dtype);
    assert.deepEqual(t.shape, [2, 3]);
    assert.equal(t.device, "cpu");
    assert.equal(t.nbytes, data.byteLength);
    const back = await t.toHost();
    assert.equal(back.constructor, data.constructor);
    assert.deepEqual(Array.from(back), Array.from(data), dtype);
    t.dispose();
  }
  s.dispose();
});

test("typed arrays with an offset copy only their view", async () => {
  const s = openSession("cpu");
  const buf = new Float32Array([9, 1, 2, 3, 9]);
  const t = tensorFrom(s, buf.subarray(1, 4));
  assert.deepEqual(Array.from(await t.toHost()), [1, 2, 3]);
  s.dispose();
});

test("bad calls throw QloraError with a code", async () => {
  const s = openSession("cpu");
  expectCode(() => s.fromHost(new Float32Array(4), "f32", [2, 3]), "E_SHAPE", /holds 6 elements but the array has 4/);
  expectCode(() => s.fromHost(new Float32Array(4), "bf16", [4]), "E_DTYPE", /Uint16Array/);
  expectCode(() => s.fromHost(new Float32Array(4), "f64", [4]), "E_DTYPE", /unknown dtype 'f64'/);
  expectCode(() => s.fromHost([1, 2], "f32", [2]), "E_ARG", /typed array/);
  expectCode(() => s.empty("f32", [2, -1]), "E_SHAPE", /non-negative integer/);
  expectCode(() => s.empty("f32", [1.5]), "E_SHAPE");
  expectCode(() => s.empty("f32", "4"), "E_SHAPE");
  expectCode(() => new native.Session("gpu"), "E_ARG", /expected cpu, cuda or cuda:N/);
  expectCode(() => new native.Session("cuda:7"), "E_NO_DEVICE");
  expectCode(() => resolveDevice("cuda:1"), "E_NO_DEVICE");
  expectCode(() => resolveDevice("tpu"), "E_ARG");
  expectCode(() => new native.Tensor(), "E_ARG", /cannot be constructed directly/);

  const a = s.fromHost(new Float32Array(4), "f32", [4]);
  const b = s.empty("bf16", [5]);
  expectCode(() => native.ops.cast(a, b), "E_SHAPE", /differ in size/);
  expectCode(() => native.ops.cast(a, s.empty("i32", [4])), "E_DTYPE");
  expectCode(() => native.ops.cast(a, {}), "E_ARG", /must be a Tensor/);
  expectCode(() => native.ops.axpby(a, a, "x", 1), "E_ARG", /must be a number/);

  const other = openSession("cpu");
  const c = other.empty("f32", [4]);
  expectCode(() => native.ops.axpby(a, c, 1, 1), "E_DEVICE", /different sessions/);

  a.dispose();
  assert.equal(a.disposed, true);
  a.dispose(); // idempotent
  await assert.rejects(async () => a.toHost(), (e) => e.code === "E_DISPOSED");
  expectCode(() => native.ops.fill(a, 1), "E_DISPOSED", /disposed tensor/);

  s.dispose();
  expectCode(() => s.empty("f32", [1]), "E_DISPOSED");
  await assert.rejects(async () => b.toHost(), (e) => e.code === "E_DISPOSED");
  other.dispose();
});

test("dispose loops leave the allocated-bytes counter where it started", () => {
  const s = openSession("cpu");
  const before = memoryStats("cpu").allocated;
  for (let i = 0; i < 2000; i++) {
    const t = s.empty("f32", [256, 17]);
    t[Symbol.dispose]();
  }
  for (let i = 0; i < 200; i++) s.fromHost(new Int32Array(1000), "i32", [1000]).dispose();
  assert.equal(memoryStats("cpu").allocated, before);
  const big = s.empty("u8", [1 << 20]);
  assert.equal(memoryStats("cpu").allocated, before + (1 << 20));
  assert.ok(s.memory().peak >= before + (1 << 20));
  big.dispose();
  assert.equal(s.memory().allocated, before);
  s[Symbol.dispose]();
});

test("ops run off the JS thread, in order, and keep disposed inputs alive until done", async () => {
  const s = openSession("cpu");
  const n = 1 << 20;
  const x = s.fromHost(new Float32Array(n).fill(2), "f32", [n]);
  const y = s.empty("f32", [n]);
  const h = s.empty("bf16", [n]);
  const p1 = native.ops.fill(y, 1);
  const p2 = native.ops.axpby(x, y, 3, 2); // y = 3*2 + 2*1 = 8
  x.dispose(); // queued op still holds it
  const p3 = native.ops.cast(y, h);
  await Promise.all([p1, p2, p3]);
  await s.synchronize();
  const back = await h.toHost();
  assert.equal(back[0], f32ToBf16(8));
  assert.equal(back[n - 1], f32ToBf16(8));
  s.dispose();
});

test("the event loop keeps turning while a long native job runs", async () => {
  const s = openSession("cpu");
  const big = s.empty("f32", [1 << 23]);
  let done = false;
  const jobs = Promise.all(Array.from({ length: 30 }, (_, i) => native.ops.fill(big, i))).then(() => (done = true));
  const tickedBeforeDone = await new Promise((resolve) => setImmediate(() => resolve(!done)));
  await jobs;
  assert.equal(tickedBeforeDone, true, "a setImmediate callback ran while the queued work was still running");
  assert.equal((await big.toHost())[12345], 29);
  s.dispose();
});

test("sessions never disposed (several, used, also in a worker thread) let the process exit cleanly", async () => {
  // (an unref'd thread-safe function that Node freed at teardown was released again by the
  // sessions' destructors: SIGABRT, exit 134, after the script itself had finished)
  const { spawnSync } = await import("node:child_process");
  const index = new URL("../dist/index.js", import.meta.url).href;
  const body = `const m = await import(${JSON.stringify(index)}); const a = m.openSession("cpu"), b = m.openSession("cpu"), c = m.openSession("cpu");` +
    ` await a.synchronize(); await b.synchronize(); await c.synchronize(); console.log("done");`;
  const worker = `const { Worker } = require("node:worker_threads");` +
    ` const w = new Worker(${JSON.stringify(`(async () => { ${body} })()`)}, { eval: true });` +
    ` w.on("exit", (code) => console.log("worker exit " + code));`;
  for (const [args, want] of [[["--input-type=module", "-e", body], /done/], [["-e", worker], /done\nworker exit 0/]]) {
    const r = spawnSync(process.execPath, args, { encoding: "utf8", env: process.env, timeout: 60_000 });
    assert.equal(r.status, 0, `exit ${r.status} signal ${r.signal}: ${r.stderr}`);
    assert.match(r.stdout, want);
  }
});
