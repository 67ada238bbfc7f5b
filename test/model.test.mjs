// Issue 4: the Qwen2 / Llama model against the transformers + PEFT golden fixtures
// (test/fixtures/README.md section 2): logits, loss and every LoRA gradient in the fp32 reference
// mode, bf16 mode within 2x torch-bf16's own error, NF4 (quantized while loading, and from the bnb
// 4-bit checkpoint), gradient checkpointing, and a 10-step training trajectory through trainStep.
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { openSession, setNumThreads } from "../dist/index.js";
import { loadModel } from "../dist/model/index.js";
import { SafetensorsFile } from "../dist/io/safetensors.js";

const FIX = path.join(path.dirname(fileURLToPath(import.meta.url)), "fixtures");
const MODELS = ["qwen2_gqa_hd16", "llama_hd64", "qwen2_mqa_untied"];

async function readAll(file) {
  const st = await SafetensorsFile.open(file);
  const out = {};
  try {
    for (const [name, info] of st.tensors) {
      const buf = await st.read(name);
      const ab = buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength);
      out[name] =
        info.dtype === "F32" ? new Float32Array(ab)
        : info.dtype === "F64" ? new Float64Array(ab)
        : info.dtype === "I32" ? new Int32Array(ab)
        : new Uint8Array(ab);
    }
  } finally {
    await st.close();
  }
  return out;
}

const fixtureCache = new Map();
async function fixture(name) {
  if (!fixtureCache.has(name)) {
    const dir = path.join(FIX, "models", name);
    const expected = await readAll(path.join(dir, "expected.safetensors"));
    const nf4 = await readAll(path.join(dir, "expected_nf4.safetensors"));
    const adapter = await readAll(path.join(dir, "adapter", "adapter_model.safetensors"));
    const adapterConfig = JSON.parse(readFileSync(path.join(dir, "adapter", "adapter_config.json"), "utf8"));
    const meta = JSON.parse(readFileSync(path.join(dir, "meta.json"), "utf8"));
    const config = JSON.parse(readFileSync(path.join(dir, "config.json"), "utf8"));
    fixtureCache.set(name, { dir, expected, nf4, adapter, adapterConfig, meta, config });
  }
  return fixtureCache.get(name);
}

function batchOf(e) {
  return {
    inputIds: e.input_ids,
    attentionMask: e.attention_mask,
    labels: e.labels,
    positionIds: e.position_ids,
    batchSize: 3,
    seqLen: 12,
  };
}

async function open(fx, opts, dir = fx.dir) {
  const session = openSession("cpu");
  const ac = fx.adapterConfig;
  const model = await loadModel(dir, {
    session,
    computeDtype: opts.computeDtype ?? "f32",
    quantization: opts.quantization ?? "none",
    quantBlocksize: 64,
    doubleQuant: true,
    gradientCheckpointing: opts.gradientCheckpointing ?? false,
    lora: { r: ac.r, alpha: ac.lora_alpha, dropout: 0, targets: ac.target_modules, useRslora: false, seed: 1 },
  });
  for (const [k, v] of Object.entries(fx.adapter)) await model.setLora(k, v);
  return { model, session };
}

// logits, loss, grads of one run (grads of loss = sum CE / tokens).
async function runAll(model, batch) {
  const logits = await model.logits(batch);
  const ev = await model.evalLoss(batch);
  await model.zeroGrad();
  const acc = await model.accumulate(batch, 1 / ev.tokens);
  const grads = await model.getLoraGrads();
  return { logits, loss: ev.lossSum / ev.tokens, tokens: ev.tokens, accLoss: acc.lossSum / acc.tokens, grads };
}

// masked positions only (attention_mask == 1)
function logitErrors(got, want, mask, V) {
  let maxErr = 0, maxRef = 0, num = 0, den = 0;
  for (let p = 0; p < mask.length; p++) {
    if (!mask[p]) continue;
    for (let j = 0; j < V; j++) {
      const g = got[p * V + j], w = want[p * V + j];
      maxErr = Math.max(maxErr, Math.abs(g - w));
      maxRef = Math.max(maxRef, Math.abs(w));
      num += (g - w) ** 2;
      den += w * w;
    }
  }
  return { maxOverMax: maxErr / maxRef, relL2: Math.sqrt(num / den) };
}

function relL2(got, want) {
  let num = 0, den = 0;
  for (let i = 0; i < want.length; i++) {
    num += (got[i] - want[i]) ** 2;
    den += want[i] * want[i];
  }
  return Math.sqrt(num / den);
}

function gradErrors(grads, exp, prefix) {
  let worst = 0, worstKey = "", num = 0, den = 0, count = 0;
  for (const [key, t] of Object.entries(grads)) {
    const want = exp[prefix + key];
    assert.ok(want, `fixture has no ${prefix}${key}`);
    assert.equal(t.data.length, want.length, key);
    const e = relL2(t.data, want);
    if (e > worst) [worst, worstKey] = [e, key];
    for (let i = 0; i < want.length; i++) {
      num += (t.data[i] - want[i]) ** 2;
      den += want[i] * want[i];
    }
    count++;
  }
  return { worst, worstKey, global: Math.sqrt(num / den), count };
}

const fmt = (x) => x.toExponential(2);

setNumThreads(2);

for (const name of MODELS) {
  test(`${name}: fp32 reference mode matches transformers (f64 references)`, async () => {
    const fx = await fixture(name);
    const { model, session } = await open(fx, {});
    try {
      const V = fx.config.vocab_size;
      const r = await runAll(model, batchOf(fx.expected));
      assert.equal(r.tokens, fx.meta.batch.target_tokens);
      const le = logitErrors(r.logits, fx.expected["f64.logits"], fx.expected.attention_mask, V);
      const lossErr = Math.abs(r.loss - fx.expected["f64.loss"][0]) / Math.abs(fx.expected["f64.loss"][0]);
      const ge = gradErrors(r.grads, fx.expected, "f64.grad.");
      console.log(`  ${name} fp32: logits max/max ${fmt(le.maxOverMax)}, loss rel ${fmt(lossErr)}, grads worst ${fmt(ge.worst)} (${ge.count} tensors), global ${fmt(ge.global)}`);
      assert.equal(ge.count, 28);
      assert.equal(model.paramCount, fx.meta.lora_param_count);
      assert.ok(le.maxOverMax <= 1e-5, `logits ${le.maxOverMax}`);
      assert.ok(lossErr <= 1e-5, `loss ${lossErr}`);
      assert.ok(Math.abs(r.accLoss - r.loss) <= 1e-6 * r.loss, "accumulate and evalLoss agree");
      assert.ok(ge.worst <= 1e-4, `grad ${ge.worstKey} ${ge.worst}`);
    } finally {
      model.dispose();
      session.dispose();
    }
  });

  test(`${name}: bf16 mode within 2x torch-bf16's error`, async () => {
    const fx = await fixture(name);
    const { model, session } = await open(fx, { computeDtype: "bf16" });
    try {
      const V = fx.config.vocab_size;
      const tb = fx.meta.errors_bf16_vs_fp32;
      const r = await runAll(model, batchOf(fx.expected));
      const le = logitErrors(r.logits, fx.expected.logits, fx.expected.attention_mask, V);
      const lossErr = Math.abs(r.loss - fx.expected.loss[0]) / fx.expected.loss[0];
      const ge = gradErrors(r.grads, fx.expected, "grad.");
      console.log(
        `  ${name} bf16: logits rel L2 ${fmt(le.relL2)} (torch ${fmt(tb.logits_rel_l2)}), loss rel ${fmt(lossErr)} (bound ${fmt(0.25 * tb.logits_rel_l2)}), ` +
          `grads rel L2 ${fmt(ge.global)} (torch ${fmt(tb.grads_rel_l2_global)}), worst tensor ${fmt(ge.worst)}`,
      );
      assert.ok(le.relL2 <= 2 * tb.logits_rel_l2, `logits ${le.relL2}`);
      assert.ok(ge.global <= 2 * tb.grads_rel_l2_global, `grads ${ge.global}`);
      assert.ok(lossErr <= 0.25 * tb.logits_rel_l2, `loss ${lossErr}`);
    } finally {
      model.dispose();
      session.dispose();
    }
  });

  test(`${name}: NF4 (quantized while loading) matches the NF4 round-trip model`, async () => {
    const fx = await fixture(name);
    const { model, session } = await open(fx, { quantization: "nf4" });
    try {
      const V = fx.config.vocab_size;
      const r = await runAll(model, batchOf(fx.expected));
      const le = logitErrors(r.logits, fx.nf4.logits, fx.expected.attention_mask, V);
      const lossErr = Math.abs(r.loss - fx.nf4.loss[0]) / fx.nf4.loss[0];
      const ge = gradErrors(r.grads, fx.nf4, "grad.");
      console.log(`  ${name} nf4 fp32: logits max/max ${fmt(le.maxOverMax)}, loss rel ${fmt(lossErr)}, grads worst ${fmt(ge.worst)}`);
      assert.ok(le.maxOverMax <= 1e-5, `logits ${le.maxOverMax}`);
      assert.ok(lossErr <= 1e-5, `loss ${lossErr}`);
      assert.ok(ge.worst <= 1e-4, `grad ${ge.worstKey} ${ge.worst}`);
      const mr = model.memoryReport();
      assert.ok(mr.weights > 0 && mr.adapters === model.paramCount * 8 && mr.activations > 0 && mr.peak > 0);
    } finally {
      model.dispose();
      session.dispose();
    }
  });
}

for (const name of MODELS) {
  test(`${name}: NF4 with bf16 compute within 2x torch-bf16's error of the NF4 round-trip model`, async () => {
    const fx = await fixture(name);
    const { model, session } = await open(fx, { quantization: "nf4", computeDtype: "bf16" });
    try {
      const tb = fx.meta.errors_bf16_vs_fp32;
      const r = await runAll(model, batchOf(fx.expected));
      const le = logitErrors(r.logits, fx.nf4.logits, fx.expected.attention_mask, fx.config.vocab_size);
      const lossErr = Math.abs(r.loss - fx.nf4.loss[0]) / fx.nf4.loss[0];
      const ge = gradErrors(r.grads, fx.nf4, "grad.");
      console.log(`  ${name} nf4 bf16: logits rel L2 ${fmt(le.relL2)}, loss rel ${fmt(lossErr)}, grads rel L2 ${fmt(ge.global)}`);
      assert.ok(le.relL2 <= 2 * tb.logits_rel_l2, `logits ${le.relL2}`);
      assert.ok(ge.global <= 2 * tb.grads_rel_l2_global, `grads ${ge.global}`);
      assert.ok(lossErr <= 0.25 * tb.logits_rel_l2, `loss ${lossErr}`);
    } finally {
      model.dispose();
      session.dispose();
    }
  });
}

// The loss path walks the vocabulary in chunks with an online softmax; the fixtures' vocabularies
// (64-128) fit one default chunk, so force several (uneven last one) and check the same bounds.
for (const name of ["qwen2_gqa_hd16", "qwen2_mqa_untied"]) {
  test(`${name}: loss and gradients with the LM head split into vocabulary chunks`, async () => {
    const fx = await fixture(name);
    const { model, session } = await open(fx, {});
    process.env.QN_MODEL_HEAD_VOCAB_CHUNK = "24"; // 128 = 5 x 24 + 8
    try {
      const batch = batchOf(fx.expected);
      const ev = await model.evalLoss(batch);
      await model.zeroGrad();
      const acc = await model.accumulate(batch, 1 / ev.tokens);
      const grads = await model.getLoraGrads();
      const want = fx.expected["f64.loss"][0];
      const lossErr = Math.abs(ev.lossSum / ev.tokens - want) / Math.abs(want);
      const ge = gradErrors(grads, fx.expected, "f64.grad.");
      console.log(`  ${name} fp32, vocabulary chunks of 24: loss rel ${fmt(lossErr)}, grads worst ${fmt(ge.worst)}`);
      assert.ok(lossErr <= 1e-5, `loss ${lossErr}`);
      assert.ok(Math.abs(acc.lossSum - ev.lossSum) <= 1e-6 * ev.lossSum, "accumulate and evalLoss agree");
      assert.ok(ge.worst <= 1e-4, `grad ${ge.worstKey} ${ge.worst}`);
    } finally {
      delete process.env.QN_MODEL_HEAD_VOCAB_CHUNK;
      model.dispose();
      session.dispose();
    }
  });
}

test("qwen2_gqa_hd16: the bnb 4-bit checkpoint gives the same as NF4 quantized while loading", async () => {
  const fx = await fixture("qwen2_gqa_hd16");
  const a = await open(fx, { quantization: "nf4" });
  const b = await open(fx, { quantization: "nf4" }, path.join(fx.dir, "nf4"));
  try {
    const batch = batchOf(fx.expected);
    const ra = await runAll(a.model, batch);
    const rb = await runAll(b.model, batch);
    assert.deepEqual(rb.logits, ra.logits);
    assert.equal(rb.loss, ra.loss);
    for (const k of Object.keys(ra.grads)) assert.deepEqual(rb.grads[k].data, ra.grads[k].data, k);
    const le = logitErrors(rb.logits, fx.nf4.logits, fx.expected.attention_mask, 128);
    assert.ok(le.maxOverMax <= 1e-5);
  } finally {
    a.model.dispose();
    b.model.dispose();
    a.session.dispose();
    b.session.dispose();
  }
});

test("qwen2_gqa_hd16: bnb 4-bit checkpoint with quantization none is dequantized to dense weights", async () => {
  const fx = await fixture("qwen2_gqa_hd16");
  const { model, session } = await open(fx, { quantization: "none" }, path.join(fx.dir, "nf4"));
  try {
    const r = await runAll(model, batchOf(fx.expected));
    const le = logitErrors(r.logits, fx.nf4.logits, fx.expected.attention_mask, 128);
    const ge = gradErrors(r.grads, fx.nf4, "grad.");
    assert.ok(le.maxOverMax <= 1e-5 && ge.worst <= 1e-4, `${le.maxOverMax} ${ge.worst}`);
  } finally {
    model.dispose();
    session.dispose();
  }
});

for (const computeDtype of ["f32", "bf16"]) {
  test(`gradient checkpointing on and off give identical gradients (${computeDtype}, NF4)`, async () => {
    const fx = await fixture("qwen2_gqa_hd16");
    const batch = batchOf(fx.expected);
    const res = [];
    for (const gradientCheckpointing of [false, true]) {
      const { model, session } = await open(fx, { quantization: "nf4", computeDtype, gradientCheckpointing });
      try {
        await model.zeroGrad();
        const l = await model.accumulate(batch, 1 / 27);
        res.push({ l, g: await model.getGrads() });
      } finally {
        model.dispose();
        session.dispose();
      }
    }
    assert.equal(res[1].l.lossSum, res[0].l.lossSum);
    assert.deepEqual(res[1].g, res[0].g);
  });
}

test("trainStep reproduces the transformers + PEFT 10-step trajectory (trainer fixture)", async () => {
  const tf = await readAll(path.join(FIX, "trainer", "trajectory.safetensors"));
  const meta = JSON.parse(readFileSync(path.join(FIX, "trainer", "meta.json"), "utf8"));
  const fx = await fixture("qwen2_gqa_hd16");
  const session = openSession("cpu");
  const model = await loadModel(fx.dir, {
    session,
    computeDtype: "f32",
    quantization: "none",
    lora: { r: 4, alpha: 8, dropout: 0, targets: "all-linear", seed: 0 },
  });
  try {
    for (const k of Object.keys(fx.adapter)) await model.setLora(k, tf[`init.${k}`]);
    const [B, T] = [2, 10];
    const micro = (i) => ({
      inputIds: tf.input_ids.subarray(i * B * T, (i + 1) * B * T),
      attentionMask: tf.attention_mask.subarray(i * B * T, (i + 1) * B * T),
      labels: tf.labels.subarray(i * B * T, (i + 1) * B * T),
      batchSize: B,
      seqLen: T,
    });
    let worstLoss = 0, worstNorm = 0;
    for (let s = 0; s < 10; s++) {
      const N = meta.log.window_tokens[s];
      const r = await model.trainStep([micro(2 * s), micro(2 * s + 1)], 1 / N, {
        lr: tf["log.learning_rate"][s],
        weightDecay: 0.01,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        maxGradNorm: 1.0,
        optim: "adamw_32bit",
      });
      assert.equal(r.tokens, N);
      assert.equal(r.skipped, false);
      assert.equal(r.clipped, true);
      worstLoss = Math.max(worstLoss, Math.abs(r.lossSum / N - tf["log.loss"][s]) / tf["log.loss"][s]);
      worstNorm = Math.max(worstNorm, Math.abs(r.gradNorm - tf["log.grad_norm"][s]) / tf["log.grad_norm"][s]);
      if (s === 1) {
        const lora = await model.getLora();
        let num = 0, den = 0;
        for (const [k, t] of Object.entries(lora)) {
          const w = tf[`after_step1.${k}`];
          for (let i = 0; i < w.length; i++) [num, den] = [num + (t.data[i] - w[i]) ** 2, den + w[i] ** 2];
        }
        assert.ok(Math.sqrt(num / den) <= 1e-4, `after step 1: ${Math.sqrt(num / den)}`);
      }
    }
    const lora = await model.getLora();
    let num = 0, den = 0, maxAbs = 0;
    for (const [k, t] of Object.entries(lora)) {
      const w = tf[`final.${k}`];
      for (let i = 0; i < w.length; i++) {
        num += (t.data[i] - w[i]) ** 2;
        den += w[i] ** 2;
        maxAbs = Math.max(maxAbs, Math.abs(t.data[i] - w[i]));
      }
    }
    const finalErr = Math.sqrt(num / den);
    console.log(`  trajectory: loss rel ${fmt(worstLoss)}, grad_norm rel ${fmt(worstNorm)}, final LoRA rel L2 ${fmt(finalErr)}, max abs ${fmt(maxAbs)}`);
    assert.ok(worstLoss <= 1e-5 && worstNorm <= 1e-5, `${worstLoss} ${worstNorm}`);
    assert.ok(finalErr <= 1e-4 && maxAbs <= 1e-3, `${finalErr} ${maxAbs}`);
    const st = await model.getOptimizerState();
    assert.equal(st.step, 10);
    assert.equal(st.tensors.m.length, model.paramCount * 4);
  } finally {
    model.dispose();
    session.dispose();
  }
});
