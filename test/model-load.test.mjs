// Issue 4: loading HF folders (sharded index, bf16 weights, errors that name the file and tensor)
// and the native Model's argument checks, disposal and optimizer state round trip.
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import os from "node:os";
import { cpSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync, statSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { openSession, QloraError, native } from "../dist/index.js";
import { loadModel } from "../dist/model/index.js";
import { Checkpoint, SafetensorsFile, writeSafetensors, toFloat32, fromFloat32 } from "../dist/io/safetensors.js";

const FIX = path.join(path.dirname(fileURLToPath(import.meta.url)), "fixtures", "models");
const SRC = path.join(FIX, "qwen2_gqa_hd16");
const LORA = { r: 4, alpha: 8, dropout: 0, targets: "all-linear", seed: 3 };

function tmpCopy() {
  const dir = mkdtempSync(path.join(os.tmpdir(), "qn-model-"));
  cpSync(path.join(SRC, "config.json"), path.join(dir, "config.json"));
  cpSync(path.join(SRC, "model.safetensors"), path.join(dir, "model.safetensors"));
  return dir;
}

async function expectReject(p, code, ...patterns) {
  await assert.rejects(p, (e) => {
    assert.ok(e instanceof QloraError, `expected QloraError, got ${e?.constructor?.name}: ${e?.message}`);
    assert.equal(e.code, code, e.message);
    for (const re of patterns) assert.match(e.message, re);
    return true;
  });
}

function expectThrow(fn, code, ...patterns) {
  assert.throws(fn, (e) => {
    assert.ok(e instanceof QloraError, `expected QloraError, got ${e?.constructor?.name}: ${e?.message}`);
    assert.equal(e.code, code, e.message);
    for (const re of patterns) assert.match(e.message, re);
    return true;
  });
}

async function allTensors(file) {
  const st = await SafetensorsFile.open(file);
  const out = {};
  for (const [name, info] of st.tensors) out[name] = { dtype: info.dtype, shape: info.shape, data: new Uint8Array(await st.read(name)) };
  await st.close();
  return out;
}

const batch = (() => {
  const ids = new Int32Array(2 * 6).map((_, i) => 3 + ((i * 7) % 100));
  return { inputIds: ids, attentionMask: new Int32Array(12).fill(1), labels: ids.slice(), batchSize: 2, seqLen: 6 };
})();

async function withModel(dir, opts, fn) {
  const session = openSession("cpu");
  const model = await loadModel(dir, { session, computeDtype: "f32", quantization: "none", lora: LORA, ...opts });
  try {
    return await fn(model);
  } finally {
    model.dispose();
    session.dispose();
  }
}

test("sharded index and bf16 weights load; shards give the same logits", async () => {
  const tensors = await allTensors(path.join(SRC, "model.safetensors"));
  const names = Object.keys(tensors);
  const dir = mkdtempSync(path.join(os.tmpdir(), "qn-model-"));
  try {
    cpSync(path.join(SRC, "config.json"), path.join(dir, "config.json"));
    const half = Math.ceil(names.length / 2);
    const shards = [names.slice(0, half), names.slice(half)];
    const weightMap = {};
    for (let s = 0; s < 2; s++) {
      const file = `model-0000${s + 1}-of-00002.safetensors`;
      await writeSafetensors(path.join(dir, file), Object.fromEntries(shards[s].map((n) => [n, tensors[n]])));
      for (const n of shards[s]) weightMap[n] = file;
    }
    writeFileSync(path.join(dir, "model.safetensors.index.json"), JSON.stringify({ metadata: {}, weight_map: weightMap }));
    const ref = await withModel(SRC, {}, (m) => m.logits(batch));
    const sharded = await withModel(dir, {}, (m) => m.logits(batch));
    assert.deepEqual(sharded, ref);

    // the same weights stored as bf16: loads, and equals the f32 model built from the bf16-rounded values
    const bf = {};
    for (const [n, t] of Object.entries(tensors)) bf[n] = { dtype: "BF16", shape: t.shape, data: fromFloat32(toFloat32(t.data, "F32"), "BF16") };
    const rounded = {};
    for (const [n, t] of Object.entries(bf)) rounded[n] = { dtype: "F32", shape: t.shape, data: fromFloat32(toFloat32(t.data, "BF16"), "F32") };
    rmSync(path.join(dir, "model.safetensors.index.json"));
    for (const f of Object.values(weightMap)) rmSync(path.join(dir, f), { force: true });
    await writeSafetensors(path.join(dir, "model.safetensors"), bf);
    const fromBf16 = await withModel(dir, {}, (m) => m.logits(batch));
    await writeSafetensors(path.join(dir, "model.safetensors"), rounded);
    const fromRounded = await withModel(dir, {}, (m) => m.logits(batch));
    assert.deepEqual(fromBf16, fromRounded);
    // and in bf16 compute with NF4 the bf16 checkpoint runs too
    const r = await withModel(dir, { computeDtype: "bf16", quantization: "nf4" }, (m) => m.evalLoss(batch));
    assert.ok(Number.isFinite(r.lossSum) && r.tokens === 10);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("loading errors name the file and the tensor", async () => {
  const session = openSession("cpu");
  const load = (dir, extra = {}) => loadModel(dir, { session, computeDtype: "f32", quantization: "none", lora: LORA, ...extra });
  const dirs = [];
  const fresh = () => {
    const d = tmpCopy();
    dirs.push(d);
    return d;
  };
  try {
    // no config.json / no weights
    const empty = mkdtempSync(path.join(os.tmpdir(), "qn-model-"));
    dirs.push(empty);
    await expectReject(load(empty), "E_NOT_FOUND", /config\.json/);
    cpSync(path.join(SRC, "config.json"), path.join(empty, "config.json"));
    await expectReject(load(empty), "E_NOT_FOUND", /model\.safetensors/);

    // config problems
    let d = fresh();
    const cfg = JSON.parse(readFileSync(path.join(SRC, "config.json"), "utf8"));
    writeFileSync(path.join(d, "config.json"), JSON.stringify({ ...cfg, model_type: "gpt2" }));
    await expectReject(load(d), "E_FORMAT", /config\.json/, /model_type "gpt2"/);
    writeFileSync(path.join(d, "config.json"), JSON.stringify({ ...cfg, rope_parameters: { rope_type: "yarn", rope_theta: 1e4 } }));
    await expectReject(load(d), "E_FORMAT", /rope_type "yarn"/);
    writeFileSync(path.join(d, "config.json"), "{ not json");
    await expectReject(load(d), "E_FORMAT", /config\.json.*invalid JSON/);

    // wrong shape in config: intermediate_size 97 -> 96
    writeFileSync(path.join(d, "config.json"), JSON.stringify({ ...cfg, intermediate_size: 96 }));
    await expectReject(load(d), "E_FORMAT", /model\.safetensors/, /model\.layers\.0\.mlp\.(gate|up|down)_proj\.weight/, /\[97, 64\]|\[64, 97\]/, /config\.json/);
    // more layers in the config than in the file: the missing tensors are listed
    writeFileSync(path.join(d, "config.json"), JSON.stringify({ ...cfg, num_hidden_layers: 3 }));
    await expectReject(load(d), "E_FORMAT", /model\.safetensors/, /missing/, /model\.layers\.2\.input_layernorm\.weight/);

    // truncated file
    d = fresh();
    const f = path.join(d, "model.safetensors");
    truncateSync(f, statSync(f).size - 100);
    await expectReject(load(d), "E_FORMAT", /model\.safetensors/, /truncated/);

    // a missing tensor, an unexpected one, a wrong dtype
    d = fresh();
    const tensors = await allTensors(path.join(SRC, "model.safetensors"));
    const { ["model.layers.1.self_attn.k_proj.bias"]: _gone, ...rest } = tensors;
    await writeSafetensors(path.join(d, "model.safetensors"), rest);
    await expectReject(load(d), "E_FORMAT", /model\.safetensors/, /model\.layers\.1\.self_attn\.k_proj\.bias/);
    await writeSafetensors(path.join(d, "model.safetensors"), { ...tensors, "model.layers.0.mlp.extra.weight": tensors["model.norm.weight"] });
    await expectReject(load(d), "E_FORMAT", /unexpected tensor 'model\.layers\.0\.mlp\.extra\.weight'/);
    const i32 = { ...tensors, "model.norm.weight": { ...tensors["model.norm.weight"], dtype: "I32" } };
    await writeSafetensors(path.join(d, "model.safetensors"), i32);
    await expectReject(load(d), "E_FORMAT", /model\.norm\.weight/, /I32/);
    // a tied model may carry lm_head.weight: ignored
    await writeSafetensors(path.join(d, "model.safetensors"), { ...tensors, "lm_head.weight": tensors["model.embed_tokens.weight"] });
    const m = await load(d);
    m.dispose();

    // option errors
    await expectReject(load(SRC, { computeDtype: "fp8" }), "E_ARG", /computeDtype/);
    await expectReject(load(SRC, { lora: { ...LORA, targets: ["qkv_proj"] } }), "E_ARG", /qkv_proj/);
    await expectReject(load(SRC, { quantBlocksize: 48 }), "E_ARG", /quantBlocksize/);
  } finally {
    session.dispose();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  }
});

test("native Model: synchronous argument checks, async errors, disposal", async () => {
  await withModel(SRC, {}, async (m) => {
    const nm = m.native;
    expectThrow(() => nm.setLora("base_model.model.model.layers.0.self_attn.q_proj.lora_C.weight", new Float32Array(4)), "E_ARG", /unknown LoRA key/);
    expectThrow(() => nm.setLora("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", new Float32Array(5)), "E_SHAPE", /needs 256 values/);
    expectThrow(() => nm.setLora("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", [1, 2]), "E_ARG", /Float32Array/);
    expectThrow(() => nm.accumulate({ ...batch, seqLen: 5 }, 1), "E_SHAPE", /inputIds/);
    expectThrow(() => nm.accumulate({ ...batch, labels: undefined }, 1), "E_ARG", /labels/);
    expectThrow(() => nm.accumulate(batch, NaN), "E_ARG", /gradScale/);
    // no batches: only a data-parallel step ({allreduce: true}, a rank whose shard ran out) may
    expectThrow(() => nm.trainStep([], 1, { lr: 1e-3, weightDecay: 0, beta1: 0.9, beta2: 0.999, eps: 1e-8, maxGradNorm: 1 }), "E_ARG", /microBatches is empty/);
    expectThrow(() => nm.optimizerStep({ lr: 1e-3, weightDecay: 0, beta1: 0.9, beta2: 0.999, eps: 1e-8, maxGradNorm: 1, optim: "sgd" }), "E_ARG", /optim/);
    expectThrow(() => nm.optimizerStep({ lr: 1e-3, weightDecay: -0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, maxGradNorm: 1 }), "E_ARG", /weightDecay/);
    // a data-parallel step without MPI started: refused before the forward pass, not after
    expectThrow(() => nm.trainStep([batch], 1, { lr: 1e-3, weightDecay: 0, beta1: 0.9, beta2: 0.999, eps: 1e-8, maxGradNorm: 1 }, { allreduce: true }), "E_ARG", /dist\.init/);
    expectThrow(() => nm.setWeight("model.norm.weight", "i32", [64], new Uint8Array(256)), "E_DTYPE");
    expectThrow(() => nm.setWeight("model.norm.weight", "f32", [64], new Uint8Array(255)), "E_SHAPE", /255 bytes/);
    await expectReject(nm.setWeight("model.norm.weight", "f32", [65], new Uint8Array(260)), "E_SHAPE", /model\.norm\.weight/, /\[65\]/);
    await expectReject(nm.evalLoss({ ...batch, inputIds: batch.inputIds.map(() => 500) }), "E_ARG", /outside \[0, 128\)/);
    await expectReject(nm.evalLoss({ ...batch, labels: batch.labels.map(() => 200) }), "E_ARG", /labels/);
    // logits do not need labels; positionIds optional
    const lg = await nm.logits({ ...batch, labels: undefined });
    assert.equal(lg.length, 12 * 128);
    const layout = nm.loraLayout();
    assert.equal(layout.length, 28);
    assert.equal(layout.at(-1).offset + layout.at(-1).shape.reduce((a, b) => a * b, 1), m.paramCount);
    const w = nm.expectedWeights();
    assert.ok(w.some((x) => x.name === "model.layers.1.mlp.down_proj.weight" && x.linear && x.shape[0] === 64 && x.shape[1] === 97));
    assert.ok(!w.some((x) => x.name === "lm_head.weight"), "tied");
  });
  // disposal
  const session = openSession("cpu");
  const m = await loadModel(SRC, { session, computeDtype: "f32", quantization: "nf4", lora: LORA });
  const pending = m.evalLoss(batch);  // queued work keeps the model alive
  m.dispose();
  m.dispose();
  assert.ok((await pending).tokens === 10);
  expectThrow(() => m.evalLoss(batch), "E_DISPOSED");
  session.dispose();
  // a model on a disposed session
  const s2 = openSession("cpu");
  const m2 = await loadModel(SRC, { session: s2, computeDtype: "f32", quantization: "none", lora: LORA });
  s2.dispose();
  expectThrow(() => m2.native.zeroGrad(), "E_DISPOSED");
  m2.dispose();
  expectThrow(() => new native.Model(openSession("cpu"), {}), "E_ARG", /hiddenSize/);
  await expectReject(loadModel(SRC), "E_ARG", /options are required/);
  await expectReject(loadModel(SRC, { lora: { r: 4, alpha: 8, targets: "q_proj" } }), "E_ARG", /"all-linear" or an array/);
});

test("setLoraAll takes a Map (readAdapter's) or a record; a huge shape is E_SHAPE", async () => {
  await withModel(SRC, {}, async (m) => {
    const before = (await m.evalLoss(batch)).lossSum;
    const { readAdapter } = await import("../dist/train/adapter.js");
    const a = await readAdapter(new URL("./fixtures/models/qwen2_gqa_hd16/adapter/", import.meta.url).pathname);
    await m.setLoraAll(a.loraWeights);
    const withMap = (await m.evalLoss(batch)).lossSum;
    assert.notEqual(withMap, before, "the adapter changed the loss");
    await m.setLoraAll(Object.fromEntries(a.loraWeights));
    assert.equal((await m.evalLoss(batch)).lossSum, withMap);
  });
  const s = openSession("cpu");
  expectThrow(() => s.empty("f32", [2 ** 32, 2 ** 32]), "E_SHAPE", /too many elements/);
  s.dispose();
});

test("initLora, optimizer state round trip, paged 8-bit optimizer", async () => {
  const opt = { lr: 1e-2, weightDecay: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, maxGradNorm: 1.0 };
  await withModel(SRC, { quantization: "nf4" }, async (m) => {
    await m.initLora(5);
    const lora = await m.getLora();
    const a = lora["base_model.model.model.layers.0.mlp.down_proj.lora_A.weight"];
    assert.deepEqual(a.shape, [4, 97]);
    const bound = 1 / Math.sqrt(97);
    assert.ok(a.data.every((x) => Math.abs(x) <= bound) && a.data.some((x) => Math.abs(x) > 0.9 * bound));
    assert.ok(lora["base_model.model.model.layers.0.mlp.down_proj.lora_B.weight"].data.every((x) => x === 0));
    for (const optim of ["adamw_32bit", "paged_adamw_8bit"]) {
      await m.initLora(5);
      const r1 = await m.trainStep([batch], 1 / 10, { ...opt, optim });
      assert.ok(r1.gradNorm > 0 && !r1.skipped && r1.tokens === 10);
      const st = await m.getOptimizerState();
      assert.equal(st.step, 1);
      assert.equal(st.optim, optim === "adamw_32bit" ? "adamw_32bit" : "adamw_8bit");
      const after1 = await m.getLora();
      const r2 = await m.trainStep([batch], 1 / 10, { ...opt, optim });
      const after2 = await m.getLora();
      // restore step-1 state into a second model and repeat step 2: identical
      await withModel(SRC, { quantization: "nf4" }, async (m2) => {
        for (const [k, t] of Object.entries(after1)) await m2.setLora(k, t.data);
        await m2.setOptimizerState(st);
        const r2b = await m2.trainStep([batch], 1 / 10, { ...opt, optim });
        assert.equal(r2b.gradNorm, r2.gradNorm);
        assert.deepEqual(await m2.getLora(), after2);
      });
      if (optim === "adamw_32bit") {
        // switching kinds mid-run is refused
        await expectReject(m.optimizerStep({ ...opt, optim: "paged_adamw_8bit" }), "E_ARG", /adamw_32bit/);
        // a fresh state for the 8-bit run
        await m.setOptimizerState({ step: 0, tensors: {} });
      }
    }
    const mr = m.memoryReport();
    assert.ok(mr.optimizer > 0 && mr.weights > 0 && mr.activations > 0);
  });
});
