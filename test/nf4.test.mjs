// NF4 known answers (test/fixtures/nf4, produced by nf4_ref.py from the bitsandbytes algorithm)
// through the native ops on the CPU, bit for bit: codes, absmax, double quant (offset, 8-bit codes,
// nested absmax, restored scales), f32/bf16 dequantization; the bnb 4-bit serialization (reading
// the transformers-written fixture, writing and reading back, errors); the JS host reference.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { Checkpoint, SafetensorsFile, toFloat32, writeSafetensors } from "../dist/io/safetensors.js";
import {
  bnbQuantizationConfig,
  bnbTensors,
  dequantizeNf4Host,
  disposeNf4Weight,
  encodeQuantState,
  fixedFloatRepr,
  nf4BlockScales,
  nf4Ops,
  nf4Tables,
  nf4WeightToDevice,
  pyFloatRepr,
  quantStateOf,
  quantizedWeightNames,
  readNf4Weight,
} from "../dist/nf4/index.js";
import { openSession } from "../dist/tensor.js";
import { ROOT, tempDir } from "./assets/data/helpers.mjs";

const NF4 = join(ROOT, "test", "fixtures", "nf4");
const CASES = JSON.parse(readFileSync(join(NF4, "cases.json"), "utf8")).cases;
const ops = () => nf4Ops();

/** Float arrays equal with == (so -0 == 0) and NaN-free, or the first difference. */
function sameFloats(got, want, what) {
  assert.equal(got.length, want.length, `${what}: length`);
  for (let i = 0; i < want.length; i++) {
    if (!(got[i] === want[i])) assert.fail(`${what}: element ${i}: ${got[i]} vs ${want[i]}`);
  }
}

function sameBytes(got, want, what) {
  assert.equal(got.length, want.length, `${what}: length`);
  for (let i = 0; i < want.length; i++) if (got[i] !== want[i]) assert.fail(`${what}: byte ${i}: ${got[i]} vs ${want[i]}`);
}

async function loadCase(name) {
  const st = await SafetensorsFile.open(join(NF4, `${name}.safetensors`));
  const out = {};
  for (const [k, info] of st.tensors) {
    const b = await st.read(k);
    out[k] = info.dtype === "U8" ? new Uint8Array(b) : toFloat32(b, info.dtype);
    if (info.dtype === "BF16") out[k + "_bits"] = new Uint16Array(b.buffer, b.byteOffset, b.byteLength / 2);
  }
  await st.close();
  return out;
}

test("code tables compiled into the addon equal the fixture tables bit for bit", async () => {
  const c = await loadCase("bs64_n4096");
  const t = nf4Tables();
  const bits = (a) => Array.from(new Uint32Array(new Float32Array(a).buffer));
  assert.deepEqual(bits(t.codes), bits(c.nf4_map));
  assert.deepEqual(bits(t.thresholds), bits(c.nf4_midpoints));
  assert.deepEqual(bits(t.dynamicMap), bits(c.dynamic_map));
});

for (const [name, meta] of Object.entries(CASES)) {
  test(`known answers: ${name} (${meta.description})`, async () => {
    const c = await loadCase(name);
    const s = openSession("cpu");
    try {
      const n = meta.n, bs = meta.blocksize, nb = meta.nblocks;
      const src = s.fromHost(c.input, "f32", meta.shape);
      const codes = s.empty("u8", [Math.ceil(n / 2)]);
      const absmax = s.empty("f32", [nb]);
      await ops().nf4Quantize(src, codes, absmax, bs, "input");
      sameBytes(await codes.toHost(), c.packed, "packed codes");
      sameFloats(await absmax.toHost(), c.absmax, "absmax");
      // Double quant.
      const q = s.empty("u8", [nb]);
      const nested = s.empty("f32", [meta.nested_blocks]);
      const offset = await ops().nf4DoubleQuant(absmax, q, nested);
      assert.equal(offset, c.dq_offset[0], "offset");
      sameBytes(await q.toHost(), c.dq_qabsmax, "8-bit absmax codes");
      sameFloats(await nested.toHost(), c.dq_nested_absmax, "nested absmax");
      const restored = s.empty("f32", [nb]);
      const map = s.fromHost(nf4Tables().dynamicMap, "f32", [256]);
      await ops().nf4DoubleDequant(q, nested, map, offset, restored);
      sameFloats(await restored.toHost(), c.dq_absmax_restored, "restored absmax");
      // Dequantize with the exact absmax and with the double-quantized one, to f32 and bf16.
      const [rows, cols] = meta.shape.length === 2 ? meta.shape : [1, n];
      const plain = { rows, cols, blocksize: bs, nested: false, codes, absmax };
      const dq = { rows, cols, blocksize: bs, nested: true, codes, absmaxQ: q, nestedAbsmax: nested, nestedMap: map, nestedOffset: offset, nestedBlocksize: 256 };
      for (const [w, f32Name, bf16Name] of [[plain, "dequant_f32", "dequant_bf16"], [dq, "dequant_dq_f32", "dequant_dq_bf16"]]) {
        const o32 = s.empty("f32", meta.shape);
        const o16 = s.empty("bf16", meta.shape);
        await ops().nf4Dequantize(w, o32);
        await ops().nf4Dequantize(w, o16);
        sameFloats(await o32.toHost(), c[f32Name], f32Name);
        sameBytes(await o16.toHost(), c[bf16Name + "_bits"], bf16Name);
      }
      // The host reference agrees too.
      const host = { shape: meta.shape, blocksize: bs, dtype: "float32", codes: c.packed, nested: true, absmaxQ: c.dq_qabsmax, nestedAbsmax: c.dq_nested_absmax, nestedMap: c.dynamic_map, nestedOffset: c.dq_offset[0], nestedBlocksize: 256 };
      sameFloats(nf4BlockScales(host), c.dq_absmax_restored, "host restored scales");
      sameFloats(dequantizeNf4Host(host, c.nf4_map), c.dequant_dq_f32, "host dequant");
      // One call: nf4QuantizeWeight (bf16 input for the bf16-exact weight case).
      if (name === "bs64_weight_48x80") {
        const bits = new Uint16Array(c.input.length);
        const u = new Uint32Array(c.input.buffer, c.input.byteOffset, c.input.length);
        for (let i = 0; i < u.length; i++) bits[i] = u[i] >>> 16; // exact: the values are bf16
        const wt = s.fromHost(bits, "bf16", meta.shape);
        const w = await ops().nf4QuantizeWeight(wt, 64, true, "w");
        sameBytes(await w.codes.toHost(), c.packed, "nf4QuantizeWeight codes");
        sameBytes(await w.absmaxQ.toHost(), c.dq_qabsmax, "nf4QuantizeWeight absmax_q");
        assert.equal(w.nestedOffset, c.dq_offset[0]);
        disposeNf4Weight(w);
      }
    } finally {
      s.dispose();
    }
  });
}

test("reads the transformers load_in_4bit fixture and writes the same quant state bytes", async () => {
  const c = await loadCase("bs64_weight_48x80");
  const dir = join(NF4, "bnb_linear");
  const ck = await Checkpoint.open(dir);
  const P = "model.layers.0.self_attn.q_proj.weight";
  assert.deepEqual(quantizedWeightNames(ck.names()), [P]);
  const w = await readNf4Weight(ck, P, nf4Tables().codes);
  assert.deepEqual(w.shape, [48, 80]);
  assert.equal(w.blocksize, 64);
  assert.equal(w.dtype, "bfloat16");
  assert.ok(w.nested);
  sameBytes(w.codes, c.packed, "codes");
  sameBytes(w.absmaxQ, c.dq_qabsmax, "absmax_q");
  sameFloats(w.nestedAbsmax, c.dq_nested_absmax, "nested_absmax");
  assert.equal(w.nestedOffset, c.dq_offset[0]);
  // Our quant state encoding reproduces transformers' bytes exactly (python repr of the offset).
  const stored = new Uint8Array(await ck.read(`${P}.quant_state.bitsandbytes__nf4`));
  assert.equal(Buffer.from(encodeQuantState(quantStateOf(w))).toString(), Buffer.from(stored).toString());
  // ... and config.json's quantization_config.
  const cfg = JSON.parse(readFileSync(join(dir, "config.json"), "utf8"));
  assert.deepEqual(bnbQuantizationConfig({ computeDtype: "bfloat16", doubleQuant: true }), cfg.quantization_config);
  assert.deepEqual(Object.keys(bnbQuantizationConfig({ computeDtype: "x", doubleQuant: true })), Object.keys(cfg.quantization_config));
  // Loaded onto a session it dequantizes to the fixture's bf16 (what a QLoRA layer computes with).
  const s = openSession("cpu");
  const dw = nf4WeightToDevice(s, w);
  const out = s.empty("bf16", [48, 80]);
  await ops().nf4Dequantize(dw, out);
  sameBytes(await out.toHost(), c.dequant_dq_bf16_bits, "dequantized bnb weight");
  disposeNf4Weight(dw);
  s.dispose();
  await ck.close();
});

test("serialization round trip (double quant and plain), fixed-width offsets parse back", async (t) => {
  const dir = tempDir(t);
  const s = openSession("cpu");
  const rows = 33, cols = 97; // odd size, blocks across rows
  const x = new Float32Array(rows * cols).map((_, i) => Math.sin(i * 0.37) * (1 + (i % 13)));
  for (const [doubleQuant, fixed] of [[true, true], [true, false], [false, false]]) {
    const q = await ops().nf4QuantizeWeight(s.fromHost(x, "f32", [rows, cols]), 32, doubleQuant, "m.weight");
    const host = {
      shape: [rows, cols], blocksize: 32, dtype: "float32", nested: doubleQuant,
      codes: await q.codes.toHost(),
      ...(doubleQuant
        ? { absmaxQ: await q.absmaxQ.toHost(), nestedAbsmax: await q.nestedAbsmax.toHost(), nestedMap: nf4Tables().dynamicMap, nestedOffset: q.nestedOffset, nestedBlocksize: 256 }
        : { absmax: await q.absmax.toHost() }),
    };
    const file = join(dir, `w-${doubleQuant}-${fixed}.safetensors`);
    await writeSafetensors(file, { ...bnbTensors("model.layers.0.mlp.down_proj.weight", host, nf4Tables().codes, fixed), "model.norm.weight": { dtype: "F32", shape: [2], data: new Uint8Array(8) } });
    const st = await SafetensorsFile.open(file);
    const back = await readNf4Weight(st, "model.layers.0.mlp.down_proj.weight", nf4Tables().codes);
    assert.deepEqual(back.shape, host.shape);
    assert.equal(back.nested, doubleQuant);
    sameBytes(back.codes, host.codes, "codes");
    if (doubleQuant) {
      sameBytes(back.absmaxQ, host.absmaxQ, "absmaxQ");
      sameFloats(back.nestedAbsmax, host.nestedAbsmax, "nested");
      assert.equal(back.nestedOffset, host.nestedOffset);
    } else {
      sameFloats(back.absmax, host.absmax, "absmax");
    }
    assert.equal(st.info("model.layers.0.mlp.down_proj.weight").shape.join(), `${Math.ceil((rows * cols) / 2)},1`);
    // Dequantized through the native op == the host reference.
    const dw = nf4WeightToDevice(s, back);
    const o = s.empty("f32", [rows, cols]);
    await ops().nf4Dequantize(dw, o);
    sameFloats(await o.toHost(), dequantizeNf4Host(back, nf4Tables().codes), "native vs host dequant");
    await st.close();
    disposeNf4Weight(q);
    disposeNf4Weight(dw);
  }
  s.dispose();
});

test("bad 4-bit tensors give E_FORMAT naming the tensor", async (t) => {
  const dir = tempDir(t);
  const P = "model.layers.0.self_attn.k_proj.weight";
  const base = {
    shape: [4, 64], blocksize: 64, dtype: "bfloat16", nested: false,
    codes: new Uint8Array(128).fill(0x77), absmax: new Float32Array([1, 2, 3, 4]),
  };
  const good = bnbTensors(P, base, nf4Tables().codes);
  const state = (obj) => ({ dtype: "U8", shape: [Buffer.byteLength(obj)], data: new Uint8Array(Buffer.from(obj)) });
  const variants = [
    ["fp4", (g) => { const st = g[`${P}.quant_state.bitsandbytes__nf4`]; delete g[`${P}.quant_state.bitsandbytes__nf4`]; g[`${P}.quant_state.bitsandbytes__fp4`] = st; }, /fp4 is not supported/],
    ["bad json", (g) => { g[`${P}.quant_state.bitsandbytes__nf4`] = state("{oops"); }, /quant state is not a JSON object/],
    ["blocksize", (g) => { g[`${P}.quant_state.bitsandbytes__nf4`] = state('{"quant_type": "nf4", "blocksize": 48, "dtype": "bfloat16", "shape": [4, 64]}'); }, /blocksize 48 is not supported/],
    ["quant type", (g) => { g[`${P}.quant_state.bitsandbytes__nf4`] = state('{"quant_type": "int4", "blocksize": 64, "dtype": "bfloat16", "shape": [4, 64]}'); }, /quant_type "int4" is not supported/],
    ["shape", (g) => { g[`${P}.quant_state.bitsandbytes__nf4`] = state('{"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [4, 66]}'); }, /128 code bytes .* do not fit the quant state shape \[4, 66\]/],
    ["absmax dtype", (g) => { g[`${P}.absmax`] = { dtype: "F16", shape: [4], data: new Uint8Array(8) }; }, /absmax': dtype F16, expected F32/],
    ["absmax size", (g) => { g[`${P}.absmax`] = { dtype: "F32", shape: [3], data: new Uint8Array(12) }; }, /absmax': 3 elements .* expected 4/],
    ["codes dtype", (g) => { g[P] = { dtype: "F32", shape: [32], data: new Uint8Array(128) }; }, /must be U8 packed codes, got F32/],
    ["custom map", (g) => { g[`${P}.quant_map`] = { dtype: "F32", shape: [16], data: new Uint8Array(new Float32Array(16).fill(0.5).buffer) }; }, /quant_map is not the NF4 code table/],
    ["missing absmax", (g) => { delete g[`${P}.absmax`]; }, /without its companion tensor '.*absmax'/],
    ["nan absmax", (g) => { g[`${P}.absmax`] = { dtype: "F32", shape: [4], data: new Uint8Array(new Float32Array([1, NaN, 1, 1]).buffer) }; }, /non-finite absmax/],
  ];
  for (const [label, mutate, re] of variants) {
    const g = structuredClone(good);
    mutate(g);
    const file = join(dir, `${label}.safetensors`);
    await writeSafetensors(file, g);
    const st = await SafetensorsFile.open(file);
    await assert.rejects(readNf4Weight(st, P, nf4Tables().codes), (e) => {
      assert.equal(e.code, "E_FORMAT", `${label}: ${e.message}`);
      assert.match(e.message, re, label);
      assert.ok(e.message.includes(file), label);
      return true;
    });
    await st.close();
  }
});

test("non-finite weights: E_NONFINITE naming the tensor and the element", async () => {
  const s = openSession("cpu");
  const x = new Float32Array(6 * 64).fill(0.5);
  x[3 * 64 + 5] = Infinity;
  const t = s.fromHost(x, "f32", [6, 64]);
  await assert.rejects(ops().nf4QuantizeWeight(t, 64, true, "model.layers.7.mlp.gate_proj.weight"), (e) => {
    assert.equal(e.code, "E_NONFINITE");
    assert.match(e.message, /tensor 'model.layers.7.mlp.gate_proj.weight' has a non-finite value \(inf\) at element 197 \[3, 5\]/);
    return true;
  });
  // Bad arguments fail at once (synchronously), before anything is queued.
  assert.throws(() => ops().nf4Quantize(t, s.empty("u8", [192]), s.empty("f32", [6]), 48, "w"), (e) => e.code === "E_ARG" && /blocksize/.test(e.message));
  assert.throws(() => ops().nf4Quantize(t, s.empty("u8", [191]), s.empty("f32", [6]), 64, "w"), (e) => e.code === "E_SHAPE");
  s.dispose();
});

test("float formatting of nested_offset: python repr and fixed width", () => {
  const cases = [
    [0.13218587636947632, "0.13218587636947632"], [1e-5, "1e-05"], [1e16, "1e+16"], [2, "2.0"], [123.456, "123.456"],
    [1.5e-7, "1.5e-07"], [1e15, "1000000000000000.0"], [0.0001, "0.0001"], [12345678901234567, "1.2345678901234568e+16"], [0, "0.0"], [-2.5, "-2.5"],
  ];
  for (const [x, want] of cases) assert.equal(pyFloatRepr(x), want, String(x));
  for (const x of [0, 0.13218587636947632, Math.fround(3e-39), Math.fround(3.4e38), Math.fround(1e-7), 5]) {
    const s = fixedFloatRepr(x);
    assert.equal(s.length, 22, s);
    assert.equal(Number(s), x);
  }
});
