// The raw addon against hostile arguments (QA fuzz findings): objects of one class passed as
// another, typed arrays whose buffer a getter detaches, an error class that throws, sizes that
// overflow, values an integer dtype cannot hold. Each case runs in a child process (the addon as
// the tests load it, $QN_ADDON_PATH passed through), so a crash shows as a signal, a hang as a
// timeout; every case must end in an error with a code and the child must exit 0 by itself.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";

const index = new URL("../dist/index.js", import.meta.url).href;
const PRE = `const m = await import(${JSON.stringify(index)}); const n = m.native; n.setNumThreads(1); const s = m.openSession("cpu");
const out = (x) => console.log("@@" + JSON.stringify(x));
const err = (e) => ({ name: e?.constructor?.name, code: e?.code, message: String(e?.message ?? e) });
const attempt = async (f) => { try { return { ok: true, value: await f() }; } catch (e) { return err(e); } };
const MO = { hiddenSize: 8, intermediateSize: 16, numLayers: 1, numHeads: 2, numKvHeads: 1, headDim: 4, vocabSize: 16,
  rmsNormEps: 1e-6, ropeTheta: 10000, tieWordEmbeddings: true, qkvBias: true, computeDtype: "f32", quantization: "none",
  lora: { r: 2, alpha: 4, dropout: 0, targets: ["q_proj"] } };
`;

// Runs `body` (module code; it reports with out(...)) in a child and returns what it reported.
function child(body, timeout = 30_000) {
  const r = spawnSync(process.execPath, ["--input-type=module", "-e", PRE + body], { encoding: "utf8", env: process.env, timeout });
  assert.equal(r.error?.code, undefined, `the child did not finish (${r.error?.code}): ${r.stderr}`);
  assert.equal(r.signal, null, `the child was killed by ${r.signal}: ${r.stderr}`);
  assert.equal(r.status, 0, `the child exited with ${r.status}: ${r.stderr}`);
  return r.stdout.split("\n").filter((l) => l.startsWith("@@")).map((l) => JSON.parse(l.slice(2)));
}

// One child per case: `expr` is awaited inside attempt(); returns its outcome.
const outcome = (setup, expr) => child(`${setup}\nout(await attempt(async () => ${expr}));`)[0];

function assertCoded(r, code, name, pattern) {
  assert.ok(r && !r.ok, `expected an error, got ${JSON.stringify(r)}`);
  assert.equal(r.code, code, r.message);
  if (name) assert.equal(r.name, name, r.message);
  if (pattern) assert.match(r.message, pattern);
}

test("an object of another addon class, or without a native part, is a TypeError E_ARG (type tags, not instanceof)", () => {
  const cases = [
    ["session re-prototyped as a Tensor -> ops.fill",
      `const x = m.openSession("cpu"); Object.setPrototypeOf(x, n.Tensor.prototype);`, `n.ops.fill(x, 1)`],
    ["tensor re-prototyped as a Session -> optimStateCreate",
      `const t = s.empty("f32", [1]); Object.setPrototypeOf(t, n.Session.prototype);`, `n.ops.optimStateCreate(t, 4)`],
    ["tensor re-prototyped as a Session -> new Model",
      `const t = s.empty("f32", [1]); Object.setPrototypeOf(t, n.Session.prototype);`, `new n.Model(t, MO)`],
    ["model re-prototyped as a Tensor -> ops.fill",
      `const M = new n.Model(s, MO); Object.setPrototypeOf(M, n.Tensor.prototype);`, `n.ops.fill(M, 1)`],
    ["session as a Tensor inside an nf4 weight",
      `const x = m.openSession("cpu"); Object.setPrototypeOf(x, n.Tensor.prototype);`,
      `n.ops.nf4Dequantize({ rows: 1, cols: 64, codes: x, absmax: x }, s.empty("f32", [64]))`],
    ["session as a Tensor in an optimizer state field",
      `const x = m.openSession("cpu"); Object.setPrototypeOf(x, n.Tensor.prototype); const p = s.empty("f32", [4]); const st = await n.ops.optimStateCreate(s, 4); st.m = x;`,
      `n.ops.adamwStep(p, s.empty("f32", [4]), st, { step: 1, lr: 1e-3 })`],
    ["a Tensor accessor on a session re-prototyped as a Tensor",
      `const x = m.openSession("cpu"); Object.setPrototypeOf(x, n.Tensor.prototype);`, `x.dtype`],
    ["Object.create(Tensor.prototype) -> ops.fill", ``, `n.ops.fill(Object.create(n.Tensor.prototype), 1)`],
    ["Object.create(Session.prototype) -> optimStateCreate", ``, `n.ops.optimStateCreate(Object.create(n.Session.prototype), 4)`],
    ["a Tensor accessor on Tensor.prototype itself", ``, `n.Tensor.prototype.shape`],
  ];
  for (const [name, setup, expr] of cases) {
    const r = outcome(setup, expr);
    assertCoded(r, "E_ARG", "TypeError", undefined);
    assert.ok(r.message.length > 0, name);
  }
  // a method called on an object of another class: a TypeError too (V8 or the tag), never a crash
  const r = outcome(`const t = s.empty("f32", [1]); Object.setPrototypeOf(t, n.Session.prototype);`, `t.fromHost(new Float32Array(1), "f32", [1])`);
  assert.equal(r.name, "TypeError", r.message);
  // plain objects keep their QloraError E_ARG
  assertCoded(outcome(``, `n.ops.fill({}, 1)`), "E_ARG", "QloraError", /must be a Tensor/);
  assertCoded(outcome(``, `n.ops.optimStateCreate({}, 4)`), "E_ARG", "QloraError", /expected a Session/);
});

test("a tensor's own 'session' property cannot redirect an op: the native session is used", () => {
  const r = outcome(
    `const t = s.empty("f32", [2]); const u = s.empty("f32", [2]); Object.setPrototypeOf(u, n.Session.prototype);
     Object.defineProperty(t, "session", { value: u }); await n.ops.fill(t, 3);`,
    `Array.from(await t.toHost())`);
  assert.deepEqual(r, { ok: true, value: [3, 3] });
});

test("fromHost reads the typed array after the shape: a getter that detaches or shrinks the buffer gives E_SHAPE", () => {
  const detach = outcome(
    `const ab = new ArrayBuffer(1 << 20); const fa = new Float32Array(ab); const shape = [1 << 18];
     Object.defineProperty(shape, 0, { get() { structuredClone(ab, { transfer: [ab] }); return 1 << 18; } });`,
    `s.fromHost(fa, "f32", shape)`);
  assertCoded(detach, "E_SHAPE", undefined, /holds 262144 elements but the array has 0/);
  const shrink = outcome(
    `const ab = new ArrayBuffer(1 << 20, { maxByteLength: 1 << 20 }); const fa = new Float32Array(ab); const shape = [1 << 18];
     Object.defineProperty(shape, 0, { get() { ab.resize(0); return 1 << 18; } });`,
    `s.fromHost(fa, "f32", shape)`);
  assertCoded(shrink, "E_SHAPE", undefined, /the array has 0/);
  // a getter that leaves the buffer alone still works; an element count that overflows is E_SHAPE
  const fine = outcome(`const shape = [4]; Object.defineProperty(shape, 0, { get() { return 4; } });`,
    `Array.from(await s.fromHost(new Float32Array([1, 2, 3, 4]), "f32", shape).toHost())`);
  assert.deepEqual(fine, { ok: true, value: [1, 2, 3, 4] });
  assertCoded(outcome(``, `s.fromHost(new Float32Array(4), "f32", [2 ** 40, 2 ** 40, 2 ** 40])`), "E_SHAPE", undefined, /too many elements/);
});

test("a getter that disposes the session or model in the middle of a call gives E_DISPOSED", () => {
  const cases = [
    `const shape = [4]; Object.defineProperty(shape, 0, { get() { s.dispose(); return 4; } });
     out(await attempt(() => s.fromHost(new Float32Array(4), "f32", shape)));`,
    `const shape = [4]; Object.defineProperty(shape, 0, { get() { s.dispose(); return 4; } });
     out(await attempt(() => s.empty("f32", shape)));`,
    `const M = new n.Model(s, MO); const b = { batchSize: 1, seqLen: 1, inputIds: new Int32Array(1), attentionMask: new Int32Array([1]) };
     Object.defineProperty(b, "positionIds", { get() { M.dispose(); return undefined; } });
     out(await attempt(() => M.logits(b)));`,
    `const M = new n.Model(s, MO); const st = { tensors: {} }; Object.defineProperty(st, "step", { get() { M.dispose(); return 0; } });
     out(await attempt(() => M.setOptimizerState(st)));`,
    `const o = { ...MO }; Object.defineProperty(o, "hiddenSize", { get() { s.dispose(); return 8; } });
     out(await attempt(() => new n.Model(s, o)));`,
  ];
  for (const body of cases) assertCoded(child(body)[0], "E_DISPOSED", undefined, /disposed/);
});

test("typed arrays on a SharedArrayBuffer are accepted (fromHost, optimStateWrite)", () => {
  const r = outcome(
    `const fa = new Float32Array(new SharedArrayBuffer(24)).subarray(1, 5); fa.set([1, 2, 3, 4]);
     const t = s.fromHost(fa, "f32", [4]); const u = s.empty("u8", [4]);
     await n.ops.optimStateWrite(u, new Uint8Array(new SharedArrayBuffer(4)).fill(7));`,
    `[Array.from(await t.toHost()), Array.from(await u.toHost())]`);
  assert.deepEqual(r, { ok: true, value: [[1, 2, 3, 4], [7, 7, 7, 7]] });
});

test("an error class that throws: errors fall back to a plain Error with .code, promises settle, the process exits", () => {
  const failing = `const a = s.fromHost(new Float32Array([NaN, 1]), "f32", [2]);
    out(await attempt(() => n.ops.nf4Quantize(a, s.empty("u8", [1]), s.empty("f32", [1]), 64)));
    out(await attempt(() => s.empty("f32", [-1])));`;
  for (const cls of [
    `class { constructor() { throw new Error("boom"); } }`,
    `class { constructor() { throw 1; } }`,
    `new Proxy(class {}, { construct() { throw new Error("trap"); } })`,
  ]) {
    const [queued, sync] = child(`n.setErrorClass(${cls});\n${failing}`);
    assertCoded(queued, "E_NONFINITE", "Error", /non-finite/);
    assertCoded(sync, "E_SHAPE", "Error");
  }
});

test("setErrorClass takes only a constructor (TypeError E_ARG)", () => {
  const rs = child(`for (const v of [() => {}, 42, undefined, { a: 1 }, ({ m() {} }).m]) out(await attempt(() => n.setErrorClass(v)));
    out(await attempt(() => s.empty("f32", [-1])));`);
  for (const r of rs.slice(0, 5)) assertCoded(r, "E_ARG", "TypeError", /must be a constructor/);
  assertCoded(rs[5], "E_SHAPE", "QloraError"); // the class set by the library is still in place
});

test("minor native checks: size overflow, integer fills, non-finite absmax, memoryStats of a missing device", () => {
  const rs = child(`
    const wd = (rows, cols) => ({ rows, cols, codes: s.empty("u8", [0]), absmax: s.empty("f32", [0]) });
    out(await attempt(() => n.ops.nf4Dequantize(wd(2 ** 33, 2 ** 31), s.empty("f32", [0]))));
    out(await attempt(() => n.ops.nf4Dequantize(wd(2 ** 32 + 1, 2 ** 32 - 1), s.empty("f32", [0]))));
    out(await attempt(() => n.ops.nf4Dequantize({ ...wd(1, 64), blocksize: 2 ** 40 }, s.empty("f32", [64]))));
    for (const [dt, v] of [["i32", NaN], ["u8", 1e10], ["u8", 1.5], ["u8", -1], ["i32", 2 ** 31], ["i32", Infinity]])
      out(await attempt(() => n.ops.fill(s.empty(dt, [2]), v)));
    const ok = [];
    for (const [dt, v] of [["i32", -(2 ** 31)], ["u8", 255], ["f32", Infinity]]) {
      const t = s.empty(dt, [2]); await n.ops.fill(t, v); ok.push(Array.from(await t.toHost(), String));
    }
    out(ok);
    for (const bad of [Infinity, NaN])
      out(await attempt(() => n.ops.nf4DoubleQuant(s.fromHost(new Float32Array([1, bad, 2]), "f32", [3]), s.empty("u8", [3]), s.empty("f32", [1]))));
    out(await attempt(() => n.memoryStats("cuda:9999")));
    out(await attempt(() => new n.Session("cuda:9999")));
  `);
  assertCoded(rs[0], "E_SHAPE", undefined, /too many elements/);
  assertCoded(rs[1], "E_SHAPE", undefined, /too many elements/);
  assertCoded(rs[2], "E_ARG", undefined, /blocksize/);
  for (const r of rs.slice(3, 9)) assertCoded(r, "E_ARG", undefined, /fill: value .* does not fit/);
  assert.deepEqual(rs[9], [["-2147483648", "-2147483648"], ["255", "255"], ["Infinity", "Infinity"]]);
  assertCoded(rs[10], "E_NONFINITE", undefined, /absmax has a non-finite value \(inf\) at element 1/);
  assertCoded(rs[11], "E_NONFINITE", undefined, /\(nan\) at element 1/);
  assertCoded(rs[12], "E_NO_DEVICE");
  assertCoded(rs[13], "E_NO_DEVICE");
  assert.equal(rs[12].message, rs[13].message);
});

test("sessions dropped without dispose() are collected before their threads pile up", () => {
  // each open session is reported to V8 as external memory, so GC runs and the finalizers end
  // the threads; without that, 1,500 dropped sessions left ~1,000 threads alive
  const [r] = child(`const fs = await import("node:fs"); let max = 0;
    for (let i = 0; i < 1500; i++) { m.openSession("cpu"); await new Promise((r) => setImmediate(r));
      if (i % 50 === 0) max = Math.max(max, fs.readdirSync("/proc/self/task").length); }
    out({ max });`, 120_000);
  assert.ok(r.max < 400, `${r.max} threads alive at once`);
});
