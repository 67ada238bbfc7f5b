// merge() details beyond the CLI run in cli-e2e: the base model's hub revision travels in
// adapter_config.json (as PEFT records it) and merge resolves the same snapshot; every non-weight
// file of the base is carried over; config.json keeps its floats and says bf16 in both keys.
import assert from "node:assert/strict";
import { cpSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { loraConfigFor } from "../dist/api/train.js";
import { merge } from "../dist/api/merge.js";
import { defaultConfig } from "../dist/config/index.js";
import { fromFloat32, SafetensorsFile, toFloat32, writeSafetensors } from "../dist/io/safetensors.js";
import { readAdapterConfig, writeAdapter } from "../dist/train/adapter.js";
import { tempDir } from "./assets/data/helpers.mjs";

const FIXTURE = new URL("./fixtures/models/qwen2_gqa_hd16/", import.meta.url).pathname;
const MAIN = "a".repeat(40);
const V2 = "b".repeat(40);

async function readAll(file) {
  const f = await SafetensorsFile.open(file);
  const out = {};
  for (const [name, info] of f.tensors) out[name] = { dtype: info.dtype, shape: info.shape, data: await f.read(name) };
  await f.close();
  return out;
}

/** A hub cache holding Org/Tiny at main and at v2 (v2: final norm weights x 1.5). */
async function makeCache(root) {
  const repo = join(root, "models--Org--Tiny");
  for (const [hash, ref] of [[MAIN, "main"], [V2, "v2"]]) {
    const snap = join(repo, "snapshots", hash);
    mkdirSync(snap, { recursive: true });
    for (const f of ["config.json", "generation_config.json", "model.safetensors"]) cpSync(join(FIXTURE, f), join(snap, f));
    writeFileSync(join(snap, "chat_template.jinja"), "{{ messages }}");
    mkdirSync(join(repo, "refs"), { recursive: true });
    writeFileSync(join(repo, "refs", ref), hash);
  }
  const file = join(repo, "snapshots", V2, "model.safetensors");
  const t = await readAll(file);
  const norm = toFloat32(t["model.norm.weight"].data, t["model.norm.weight"].dtype).map((x) => x * 1.5);
  t["model.norm.weight"].data = fromFloat32(norm, t["model.norm.weight"].dtype);
  await writeSafetensors(file, t);
  return root;
}

test("the base revision goes into adapter_config.json and merge uses it (or --revision)", async (t) => {
  const cache = await makeCache(tempDir(t));
  const config = defaultConfig();
  const lora = loraConfigFor({ ...config, model: { ...config.model, name_or_path: "Org/Tiny", revision: "v2" } }, "Org/Tiny");
  assert.equal(lora.extra.revision, "v2");
  assert.equal(loraConfigFor(config, "Org/Tiny").extra.revision, null, "main is PEFT's null");

  const work = tempDir(t);
  const adapterDir = join(work, "adapter");
  const fx = await readAll(join(FIXTURE, "adapter", "adapter_model.safetensors"));
  const weights = Object.fromEntries(Object.entries(fx).map(([k, v]) => [k, { shape: v.shape, data: toFloat32(v.data, v.dtype) }]));
  const fxCfg = await readAdapterConfig(join(FIXTURE, "adapter"));
  await writeAdapter(adapterDir, { loraWeights: weights, config: { r: fxCfg.r, alpha: fxCfg.lora_alpha, targets: fxCfg.target_modules, baseModel: "Org/Tiny", extra: { revision: "v2" } } });
  assert.equal((await readAdapterConfig(adapterDir)).revision, "v2");

  const saved = process.env.HF_HUB_CACHE;
  process.env.HF_HUB_CACHE = cache;
  try {
    const normOf = async (dir) => {
      const m = await readAll(join(dir, "model.safetensors"));
      return toFloat32(m["model.norm.weight"].data, m["model.norm.weight"].dtype);
    };
    const base = await readAll(join(FIXTURE, "model.safetensors"));
    const norm0 = toFloat32(base["model.norm.weight"].data, base["model.norm.weight"].dtype);
    const bf16 = (xs) => toFloat32(fromFloat32(Float32Array.from(xs), "BF16"), "BF16");

    const outV2 = join(work, "merged-v2");
    await merge({ adapter: adapterDir, out: outV2 });
    assert.deepEqual(await normOf(outV2), bf16(norm0.map((x) => x * 1.5)), "the adapter's revision (v2)");
    const outMain = join(work, "merged-main");
    await merge({ adapter: adapterDir, out: outMain, revision: "main" });
    assert.deepEqual(await normOf(outMain), bf16(norm0), "--revision main overrides");

    // every non-weight file comes along; config.json: bf16 in both dtype keys, floats kept
    for (const f of ["generation_config.json", "chat_template.jinja"]) assert.ok(existsSync(join(outV2, f)), f);
    const text = readFileSync(join(outV2, "config.json"), "utf8");
    const cfg = JSON.parse(text);
    assert.equal(cfg.torch_dtype, "bfloat16");
    if ("dtype" in cfg) assert.equal(cfg.dtype, "bfloat16");
    assert.equal(cfg.quantization_config, undefined);
  } finally {
    if (saved === undefined) delete process.env.HF_HUB_CACHE;
    else process.env.HF_HUB_CACHE = saved;
  }
});
