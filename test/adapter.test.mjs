// PEFT adapter files: reading the adapters PEFT itself saved (test/fixtures/models/*/adapter),
// writing our own with PEFT's config field set and key layout, round trips, bf16 / ".default"
// keys, and the errors for broken adapters.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { test } from "node:test";
import { adapterTargets, readAdapter, writeAdapter, normalizeLoraKey, loraScaling } from "../dist/train/adapter.js";
import { fromFloat32, SafetensorsFile, writeSafetensors } from "../dist/io/safetensors.js";

const models = new URL("./fixtures/models/", import.meta.url).pathname;
const FIXTURES = ["qwen2_gqa_hd16", "llama_hd64", "qwen2_mqa_untied"];
const MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

const tmp = () => mkdtempSync(path.join(tmpdir(), "qn-adapter-"));

test("reads the PEFT-saved fixtures: 28 keys, A [r, in], B [out, r], config", async () => {
  for (const name of FIXTURES) {
    const dir = path.join(models, name, "adapter");
    const cfg = JSON.parse(readFileSync(path.join(models, name, "config.json"), "utf8"));
    const { config, loraWeights } = await readAdapter(dir);
    assert.equal(config.peft_type, "LORA");
    assert.equal(config.r, 4);
    assert.equal(config.lora_alpha, 8);
    assert.equal(loraScaling(config), 2);
    assert.deepEqual(config.target_modules, [...MODULES].sort());
    assert.equal(loraWeights.size, 2 * 7 * cfg.num_hidden_layers);
    const H = cfg.hidden_size, F = cfg.intermediate_size;
    const hd = cfg.head_dim ?? H / cfg.num_attention_heads;
    const dims = { q_proj: [H, cfg.num_attention_heads * hd], k_proj: [H, cfg.num_key_value_heads * hd], v_proj: [H, cfg.num_key_value_heads * hd], o_proj: [cfg.num_attention_heads * hd, H], gate_proj: [H, F], up_proj: [H, F], down_proj: [F, H] };
    for (let l = 0; l < cfg.num_hidden_layers; l++) {
      for (const m of MODULES) {
        const part = m.endsWith("_proj") && ["gate_proj", "up_proj", "down_proj"].includes(m) ? "mlp" : "self_attn";
        const base = `base_model.model.model.layers.${l}.${part}.${m}`;
        const A = loraWeights.get(`${base}.lora_A.weight`), B = loraWeights.get(`${base}.lora_B.weight`);
        assert.ok(A && B, `${name}: ${base}`);
        assert.deepEqual(A.shape, [4, dims[m][0]]);
        assert.deepEqual(B.shape, [dims[m][1], 4]);
        assert.equal(A.dtype, "F32");
        assert.equal(A.data.length, 4 * dims[m][0]);
      }
    }
  }
});

test("writes PEFT's layout: same keys, shapes, bytes and config field set as the fixture", async () => {
  const src = path.join(models, "qwen2_gqa_hd16", "adapter");
  const { loraWeights } = await readAdapter(src);
  const dir = tmp();
  try {
    // The lead's loraConfigFor() names (alpha, targets, ...), weights as a plain record.
    const record = Object.fromEntries([...loraWeights].map(([k, w]) => [k, { shape: w.shape, data: w.data }]));
    await writeAdapter(dir, { loraWeights: record, config: { r: 4, alpha: 8, dropout: 0, targets: MODULES, useRslora: false, baseModel: "Qwen/Qwen2.5-3B" } });
    assert.deepEqual(readdirSync(dir).sort(), ["adapter_config.json", "adapter_model.safetensors"]);
    const ours = JSON.parse(readFileSync(path.join(dir, "adapter_config.json"), "utf8"));
    const peft = JSON.parse(readFileSync(path.join(src, "adapter_config.json"), "utf8"));
    assert.deepEqual(Object.keys(ours), Object.keys(peft)); // same fields, sorted as PEFT writes them
    for (const k of Object.keys(peft)) {
      if (k === "task_type") assert.equal(ours[k], "CAUSAL_LM");
      else if (k === "auto_mapping") assert.equal(ours[k], null); // PEFT: only when task_type is null
      else if (k === "base_model_name_or_path") assert.equal(ours[k], "Qwen/Qwen2.5-3B");
      else assert.deepEqual(ours[k], peft[k], k);
    }
    // Same tensor names, dtypes, shapes and bytes; same metadata.
    const a = await SafetensorsFile.open(path.join(src, "adapter_model.safetensors"));
    const b = await SafetensorsFile.open(path.join(dir, "adapter_model.safetensors"));
    try {
      assert.deepEqual(b.metadata, a.metadata);
      assert.deepEqual([...b.tensors.keys()], [...a.tensors.keys()]);
      for (const [name, info] of a.tensors) {
        assert.equal(b.tensors.get(name).dtype, info.dtype);
        assert.deepEqual(b.tensors.get(name).shape, info.shape);
        assert.ok(Buffer.compare(await a.read(name), await b.read(name)) === 0, name);
      }
    } finally {
      await a.close();
      await b.close();
    }
    // And back again, with PEFT's names in the config input and a Map.
    const again = tmp();
    try {
      const back = await readAdapter(dir);
      await writeAdapter(again, { loraWeights: back.loraWeights, config: { r: 4, lora_alpha: 8, lora_dropout: 0.05, target_modules: ["v_proj", "q_proj"], use_rslora: true } });
      const c2 = JSON.parse(readFileSync(path.join(again, "adapter_config.json"), "utf8"));
      assert.deepEqual(c2.target_modules, ["q_proj", "v_proj"]);
      assert.equal(c2.lora_dropout, 0.05);
      assert.equal(c2.use_rslora, true);
      assert.equal(loraScaling(c2), 4);
      const r2 = await readAdapter(again);
      for (const [k, w] of back.loraWeights) assert.deepEqual(r2.loraWeights.get(k).data, w.data);
    } finally {
      rmSync(again, { recursive: true, force: true });
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("reads bf16 / f16 tensors and keys with the '.default' adapter name", async () => {
  const dir = tmp();
  try {
    const A = new Float32Array([1.5, -2.25, 0.125, 3]), B = new Float32Array([0.5, -1, 2, 4, 8, -16]);
    await writeSafetensors(path.join(dir, "adapter_model.safetensors"), {
      "base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight": { dtype: "BF16", shape: [2, 2], data: fromFloat32(A, "BF16") },
      "base_model.model.model.layers.0.self_attn.q_proj.lora_B.default.weight": { dtype: "F16", shape: [3, 2], data: fromFloat32(B, "F16") },
    });
    writeFileSync(path.join(dir, "adapter_config.json"), JSON.stringify({ peft_type: "LORA", r: 2, lora_alpha: 16, lora_dropout: 0, target_modules: ["q_proj"], task_type: "CAUSAL_LM" }));
    const { loraWeights } = await readAdapter(dir);
    assert.deepEqual([...loraWeights.keys()], ["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"]);
    assert.deepEqual([...loraWeights.values()].map((w) => w.dtype), ["BF16", "F16"]);
    assert.deepEqual(loraWeights.get("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight").data, A); // exact in bf16
    assert.deepEqual(loraWeights.get("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight").data, B);
    assert.equal(normalizeLoraKey("x.q_proj.lora_B.my-adapter.weight"), "x.q_proj.lora_B.weight");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("errors: missing files, wrong peft_type, unpaired or mis-shaped weights", async () => {
  const dir = tmp();
  try {
    await assert.rejects(readAdapter(dir), { code: "E_NOT_FOUND" });
    const A = { shape: [4, 8], data: new Float32Array(32) };
    const B = { shape: [16, 4], data: new Float32Array(64) };
    const base = "base_model.model.model.layers.0.self_attn.q_proj";
    const cfg = { r: 4, alpha: 8, targets: ["q_proj"] };
    await assert.rejects(writeAdapter(dir, { loraWeights: { [`${base}.lora_A.weight`]: A }, config: cfg }), { code: "E_FORMAT" });
    await assert.rejects(writeAdapter(dir, { loraWeights: { [`${base}.lora_A.weight`]: A, [`${base}.lora_B.weight`]: { shape: [16, 3], data: new Float32Array(48) } }, config: cfg }), { code: "E_SHAPE" });
    await assert.rejects(writeAdapter(dir, { loraWeights: { [`${base}.lora_A.weight`]: { shape: [4, 8], data: new Float32Array(31) }, [`${base}.lora_B.weight`]: B }, config: cfg }), { code: "E_SHAPE" });
    await assert.rejects(writeAdapter(dir, { loraWeights: { [`${base}.weight`]: A }, config: cfg }), { code: "E_FORMAT" });
    await assert.rejects(writeAdapter(dir, { loraWeights: { [`${base}.lora_A.weight`]: A, [`${base}.lora_B.weight`]: B }, config: { r: 8, alpha: 8, targets: ["q_proj"] } }), { code: "E_SHAPE" });
    await assert.rejects(writeAdapter(dir, { loraWeights: { [`${base}.lora_A.weight`]: A, [`${base}.lora_B.weight`]: B }, config: { r: 4, targets: ["q_proj"] } }), { code: "E_ARG" });
    await writeAdapter(dir, { loraWeights: { [`${base}.lora_A.weight`]: A, [`${base}.lora_B.weight`]: B }, config: cfg });
    const cfgPath = path.join(dir, "adapter_config.json");
    const good = readFileSync(cfgPath, "utf8");
    writeFileSync(cfgPath, JSON.stringify({ ...JSON.parse(good), peft_type: "IA3" }));
    await assert.rejects(readAdapter(dir), { code: "E_FORMAT" });
    // 1e400 parses to Infinity: merge would write infinite weights
    writeFileSync(cfgPath, good.replace(/"lora_alpha": *[0-9.e+-]+/, '"lora_alpha": 1e400'));
    await assert.rejects(readAdapter(dir), (e) => e.code === "E_FORMAT" && /lora_alpha must be a finite number, got Infinity/.test(e.message));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("PEFT variants that are not plain LoRA are refused by name; targets come from the tensors", async () => {
  const dir = tmp();
  try {
    const base = "base_model.model.model.layers.0";
    const A = { shape: [2, 4], data: new Float32Array(8).fill(0.5) };
    const B = { shape: [4, 2], data: new Float32Array(8).fill(0.25) };
    await writeAdapter(dir, {
      loraWeights: { [`${base}.self_attn.q_proj.lora_A.weight`]: A, [`${base}.self_attn.q_proj.lora_B.weight`]: B, [`${base}.mlp.down_proj.lora_A.weight`]: A, [`${base}.mlp.down_proj.lora_B.weight`]: B },
      config: { r: 2, alpha: 4, targets: ["self_attn.q_proj", "mlp.down_proj"] },
    });
    // PEFT's suffix spellings (and regexes) in target_modules: the modules come from the keys
    assert.deepEqual(adapterTargets(await readAdapter(dir), dir), ["down_proj", "q_proj"]);
    const cfgPath = path.join(dir, "adapter_config.json");
    const plain = JSON.parse(readFileSync(cfgPath, "utf8"));
    for (const [patch, what] of [
      [{ use_dora: true }, /use_dora: true/],
      [{ bias: "lora_only" }, /bias: "lora_only"/],
      [{ lora_bias: true }, /lora_bias: true/],
      [{ alpha_pattern: { q_proj: 32 } }, /alpha_pattern/],
      [{ rank_pattern: { q_proj: 8 } }, /rank_pattern/],
      [{ modules_to_save: ["lm_head"] }, /modules_to_save/],
    ]) {
      writeFileSync(cfgPath, JSON.stringify({ ...plain, ...patch }));
      await assert.rejects(readAdapter(dir), (e) => e.code === "E_FORMAT" && what.test(e.message) && /wrong results/.test(e.message), JSON.stringify(patch));
    }
    writeFileSync(cfgPath, JSON.stringify(plain));
    // extra tensors (DoRA magnitudes, modules_to_save copies, embedding LoRA) are named
    const st = path.join(dir, "adapter_model.safetensors");
    const f = await SafetensorsFile.open(st);
    const t = {};
    for (const [name, info] of f.tensors) t[name] = { dtype: info.dtype, shape: info.shape, data: await f.read(name) };
    await f.close();
    await writeSafetensors(st, { ...t, [`${base}.self_attn.q_proj.lora_magnitude_vector`]: { dtype: "F32", shape: [4], data: fromFloat32(new Float32Array(4), "F32") } });
    await assert.rejects(readAdapter(dir), (e) => e.code === "E_FORMAT" && /lora_magnitude_vector/.test(e.message));
    // LoRA on the LM head: a plain LoRA pair (merge folds it), but the model cannot apply it
    assert.throws(() => adapterTargets({ loraWeights: new Map([["base_model.model.lm_head.lora_A.weight", A]]) }, dir), (e) => e.code === "E_FORMAT" && /decoder projections only/.test(e.message));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
