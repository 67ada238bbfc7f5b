// Optimizer ops through the addon (ops.optimStateCreate / adamwStep / gradNormSq / nonfinite /
// optimStateWrite): AdamW against a float64 torch.optim.AdamW loop, fused clipping, the sum of
// squares and non-finite flag, exact resume through the state bytes, and argument errors.
// Uses the addon ts/native.ts loads ($QN_ADDON_PATH or the package build); skipped, saying so,
// when that addon has no optimizer ops yet. QN_TEST_DEVICE=cuda runs the same on the GPU.
import assert from "node:assert/strict";
import { test } from "node:test";
import { native } from "../dist/native.js";

let skip = false;
try {
  if (typeof native.ops.adamwStep !== "function") skip = "the loaded addon has no optimizer ops (build it, or set QN_ADDON_PATH)";
} catch (e) {
  skip = `no native addon: ${e.message.split("\n")[0]}`;
}
const DEVICE = process.env.QN_TEST_DEVICE ?? "cpu";

// Deterministic pseudo-random numbers (xorshift), gradients over several decades.
function rng(seed) {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 4294967296;
  };
}
function grads(n, seed) {
  const r = rng(seed);
  return Float32Array.from({ length: n }, (_, i) => (i % 97 === 5 ? 0 : (r() * 2 - 1) * 10 ** (-4 + 5 * r())));
}

// torch.optim.AdamW (single-tensor) in float64.
class RefAdamW {
  constructor(p0) {
    this.p = Float64Array.from(p0);
    this.m = new Float64Array(p0.length);
    this.v = new Float64Array(p0.length);
    this.t = 0;
  }
  step(g, { lr, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weightDecay = 0 }, coef = 1) {
    this.t++;
    const bc1 = 1 - beta1 ** this.t, bc2 = 1 - beta2 ** this.t;
    for (let i = 0; i < this.p.length; i++) {
      const gi = g[i] * coef;
      this.p[i] *= 1 - lr * weightDecay;
      this.m[i] = beta1 * this.m[i] + (1 - beta1) * gi;
      this.v[i] = beta2 * this.v[i] + (1 - beta2) * gi * gi;
      this.p[i] -= ((lr / bc1) * this.m[i]) / (Math.sqrt(this.v[i]) / Math.sqrt(bc2) + eps);
    }
  }
}

function assertClose(got, want, rtol, atol, what) {
  let worst = -1, at = -1;
  for (let i = 0; i < want.length; i++) {
    const excess = Math.abs(got[i] - want[i]) - (atol + rtol * Math.abs(want[i]));
    if (!(excess <= 0) && (excess > worst || Number.isNaN(excess))) {
      worst = excess;
      at = i;
    }
  }
  assert.equal(at, -1, `${what}: element ${at}: ${got[at]} vs ${want[at]}`);
}

const opts = (step, lr, extra = {}) => ({ step, lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, ...extra });

test("adamw_32bit matches float64 torch AdamW over several steps", { skip }, async () => {
  const s = new native.Session(DEVICE);
  const n = 1003;
  const p0 = Float32Array.from(grads(n, 1), (x, i) => Math.sin(i));
  const p = s.fromHost(p0, "f32", [n]);
  const st = await native.ops.optimStateCreate(s, n, "adamw_32bit");
  assert.equal(st.kind, "adamw_32bit");
  assert.equal(st.n, n);
  assert.deepEqual(await st.m.toHost(), new Float32Array(n));
  const ref = new RefAdamW(p0);
  const lrs = [0, 1e-2, 8.9e-3, 7.8e-3];
  for (let k = 0; k < lrs.length; k++) {
    const g = grads(n, 10 + k);
    await native.ops.adamwStep(p, s.fromHost(g, "f32", [n]), st, opts(k + 1, lrs[k]));
    ref.step(g, opts(k + 1, lrs[k]));
  }
  assertClose(await p.toHost(), ref.p, 2e-6, 2e-7, "p");
  assertClose(await st.v.toHost(), ref.v, 1e-5, 1e-20, "v");
  s.dispose();
});

test("gradNormSq, nonfinite, and clipping fused into the step", { skip }, async () => {
  const s = new native.Session(DEVICE);
  const n = 5000;
  const g = Float32Array.from(grads(n, 3), (x) => x * 100);
  const gt = s.fromHost(g, "f32", [n]);
  let ss = 0;
  for (const x of g) ss += x * x;
  const out = s.empty("f32", [1]);
  const r = await native.ops.gradNormSq(gt, out);
  assert.ok(Math.abs(r.normSq - ss) <= 1e-7 * ss, `${r.normSq} vs ${ss}`);
  assert.equal(r.nonfinite, false);
  assert.equal(await native.ops.nonfinite(gt), false);
  // Fused: the kernel reads normSq on the device; equals torch clip_grad_norm_ then AdamW.
  const p0 = new Float32Array(n).fill(0.5);
  const p = s.fromHost(p0, "f32", [n]);
  const st = await native.ops.optimStateCreate(s, n, "adamw_32bit");
  await native.ops.adamwStep(p, gt, st, opts(1, 1e-2, { normSq: out, maxGradNorm: 1.0 }));
  const ref = new RefAdamW(p0);
  ref.step(g, opts(1, 1e-2), Math.min(1, 1 / (Math.sqrt(ss) + 1e-6)));
  assertClose(await p.toHost(), ref.p, 2e-6, 2e-7, "clipped p");
  // Non-finite values raise the flags.
  const bad = g.slice();
  bad[n - 1] = Number.NaN;
  const bt = s.fromHost(bad, "f32", [n]);
  assert.equal((await native.ops.gradNormSq(bt)).nonfinite, true);
  assert.equal(await native.ops.nonfinite(bt), true);
  const inf16 = s.fromHost(Uint16Array.from([0x3f80, 0x7f80, 0]), "bf16", [3]);
  assert.equal(await native.ops.nonfinite(inf16), true);
  s.dispose();
});

test("resume is exact: state bytes saved with toHost and restored with optimStateWrite", { skip }, async () => {
  for (const kind of ["adamw_32bit", "adamw_8bit"]) {
    const s = new native.Session(DEVICE);
    const n = 256 * 3 + 17;
    const p0 = Float32Array.from({ length: n }, (_, i) => Math.cos(i) * 0.1);
    const names = kind === "adamw_8bit" ? ["m", "v", "absmaxM", "absmaxV"] : ["m", "v"];
    // Uninterrupted: 4 steps.
    const pa = s.fromHost(p0, "f32", [n]);
    const sa = await native.ops.optimStateCreate(s, n, kind, { paged: true });
    for (let k = 1; k <= 4; k++) await native.ops.adamwStep(pa, s.fromHost(grads(n, k), "f32", [n]), sa, opts(k, 1e-3));
    // Interrupted after 2: save, restore into a fresh state, continue.
    const pb = s.fromHost(p0, "f32", [n]);
    const sb = await native.ops.optimStateCreate(s, n, kind);
    for (let k = 1; k <= 2; k++) await native.ops.adamwStep(pb, s.fromHost(grads(n, k), "f32", [n]), sb, opts(k, 1e-3));
    const saved = {};
    for (const name of names) {
      const h = await sb[name].toHost();
      saved[name] = new Uint8Array(h.buffer, h.byteOffset, h.byteLength).slice();
    }
    const pSaved = await pb.toHost();
    const pc = s.fromHost(pSaved, "f32", [n]);
    const sc = await native.ops.optimStateCreate(s, n, kind);
    for (const name of names) await native.ops.optimStateWrite(sc[name], saved[name]);
    for (let k = 3; k <= 4; k++) await native.ops.adamwStep(pc, s.fromHost(grads(n, k), "f32", [n]), sc, opts(k, 1e-3));
    assert.deepEqual(await pc.toHost(), await pa.toHost(), kind);
    for (const name of names) assert.deepEqual(await sc[name].toHost(), await sa[name].toHost(), `${kind} ${name}`);
    s.dispose();
  }
});

test("argument errors", { skip }, async () => {
  const s = new native.Session(DEVICE);
  const p = s.fromHost(new Float32Array(300), "f32", [300]);
  const g = s.fromHost(new Float32Array(300), "f32", [300]);
  const st = await native.ops.optimStateCreate(s, 300, "adamw_8bit");
  assert.equal(st.kind, "adamw_8bit");
  assert.deepEqual(st.absmaxM.shape, [2]);
  assert.deepEqual(st.qmap.shape, [4, 256]);
  assert.throws(() => native.ops.optimStateCreate(s, 10, "sgd"), { code: "E_ARG" });
  assert.throws(() => native.ops.adamwStep(p, g, st, { step: 0, lr: 1e-3 }), { code: "E_ARG" });
  assert.throws(() => native.ops.adamwStep(p, g, st, { step: 1 }), { code: "E_ARG" });
  assert.throws(() => native.ops.adamwStep(p, g, { kind: "adamw_8bit" }, { step: 1, lr: 1e-3 }), { code: "E_ARG" });
  const small = await native.ops.optimStateCreate(s, 299, "adamw_32bit");
  assert.throws(() => native.ops.adamwStep(p, g, small, { step: 1, lr: 1e-3 }), { code: "E_SHAPE" });
  const other = new native.Session(DEVICE);
  const foreign = await native.ops.optimStateCreate(other, 300, "adamw_32bit");
  assert.throws(() => native.ops.adamwStep(p, g, foreign, { step: 1, lr: 1e-3 }), { code: "E_DEVICE" });
  assert.throws(() => native.ops.optimStateWrite(st.m, new Uint8Array(5)), { code: "E_SHAPE" });
  assert.throws(() => native.ops.adamwStep(p, g, st, { step: 1, lr: 1e-3, normSq: s.empty("f32", [2]), maxGradNorm: 1 }), { code: "E_SHAPE" });
  other.dispose();
  s.dispose();
});
