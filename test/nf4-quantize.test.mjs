// quantizeCheckpoint / `qlora-native quantize`: the tiny Qwen2 fixture quantized by us equals the
// transformers + bitsandbytes checkpoint of the same model (models/qwen2_gqa_hd16/nf4) tensor for
// tensor; our output reloads to the same codes; sharded bf16 input; --no-double-quant; errors
// (NaN weight, truncated shard, wrong dtype, existing output, already quantized) leave nothing behind.

import assert from "node:assert/strict";
import { cpSync, existsSync, readdirSync, readFileSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import yargs from "yargs";
import { quantizeCommand } from "../dist/cli/quantize.js";
import { Checkpoint, fromFloat32, toFloat32, writeSafetensors } from "../dist/io/safetensors.js";
import { dequantizeNf4Host, nf4Tables, quantizeCheckpoint, quantizedWeightNames, readNf4Weight } from "../dist/nf4/index.js";
import { ROOT, tempDir } from "./assets/data/helpers.mjs";

const MODEL = join(ROOT, "test", "fixtures", "models", "qwen2_gqa_hd16");
const LINEAR = /^model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)\.weight$/;

function expectCode(code, re) {
  return (e) => {
    assert.equal(e.code, code, `${e.code}: ${e.message}`);
    if (re) assert.match(e.message, re);
    return true;
  };
}

/** A copy of the fixture model (config, generation config, weights) we may modify. */
function modelCopy(t) {
  const dir = join(tempDir(t), "model");
  cpSync(MODEL, dir, { recursive: true, filter: (p) => !/adapter|expected|meta\.json|\/nf4/.test(p.slice(MODEL.length)) });
  return dir;
}

test("quantizing the tiny Qwen2 model reproduces the transformers/bitsandbytes checkpoint", async (t) => {
  const out = join(tempDir(t), "out");
  const seen = [];
  const r = await quantizeCheckpoint({ model: MODEL, out, device: "cpu", onProgress: (p) => seen.push(p.action) });
  assert.equal(r.quantizedTensors, 14);
  // Everything stored counts (quant_map, the 1 KiB nested map, the JSON): tiny tensors pay for them.
  assert.ok(r.bitsPerParam > 4.127 && r.bitsPerParam < 7, `bits/param ${r.bitsPerParam}`);
  assert.equal(seen.filter((a) => a === "quantize").length, 14);
  const files = readdirSync(out).sort();
  assert.ok(files.includes("config.json") && files.includes("model.safetensors") && files.includes("generation_config.json"), files.join());
  assert.ok(!files.some((f) => /adapter|expected|index/.test(f)), files.join());
  assert.ok(!readdirSync(join(out, "..")).some((f) => f.includes(".tmp-")), "no temporary folder left");

  const ours = await Checkpoint.open(out);
  const ref = await Checkpoint.open(join(MODEL, "nf4"));
  assert.deepEqual(ours.names().slice().sort(), ref.names().slice().sort());
  const codes = nf4Tables().codes;
  for (const name of quantizedWeightNames(ref.names())) {
    const a = await readNf4Weight(ours, name, codes);
    const b = await readNf4Weight(ref, name, codes);
    assert.deepEqual(a.shape, b.shape, name);
    assert.equal(a.dtype, "float32");
    assert.deepEqual(Buffer.compare(Buffer.from(a.codes), Buffer.from(b.codes)), 0, `${name} codes`);
    assert.deepEqual(Buffer.compare(Buffer.from(a.absmaxQ), Buffer.from(b.absmaxQ)), 0, `${name} absmax`);
    assert.deepEqual(Array.from(a.nestedAbsmax), Array.from(b.nestedAbsmax), `${name} nested`);
    assert.equal(a.nestedOffset, b.nestedOffset, `${name} offset`);
  }
  for (const name of ref.names().filter((n) => !quantizedWeightNames(ref.names()).includes(n) && !/\.weight\./.test(n))) {
    assert.equal(Buffer.compare(await ours.read(name), await ref.read(name)), 0, `${name} copied unchanged`);
    assert.equal(ours.info(name).dtype, ref.info(name).dtype);
  }
  const cfg = JSON.parse(readFileSync(join(out, "config.json"), "utf8"));
  const refCfg = JSON.parse(readFileSync(join(MODEL, "nf4", "config.json"), "utf8"));
  assert.deepEqual(cfg.quantization_config, refCfg.quantization_config);
  // as text too: transformers' BitsAndBytesConfig rejects an int llm_int8_threshold ("6" instead of
  // "6.0": JSON.parse cannot tell them apart)
  const cfgText = readFileSync(join(out, "config.json"), "utf8");
  assert.match(cfgText, /"llm_int8_threshold": 6\.0,/);
  for (const key of ["rope_theta", "rms_norm_eps"]) {
    const m = new RegExp(`"${key}": ([^,\n]+)`).exec(cfgText);
    if (m && Number.isInteger(Number(m[1]))) assert.match(m[1], /\./, `${key} stays a float`);
  }
  assert.equal(cfg.hidden_size, 64);
  await ours.close();
  await ref.close();
});

test("sharded bf16 input, blocksize 32 without double quant: sharded output that reloads to the same codes", async (t) => {
  const src = await Checkpoint.open(MODEL);
  const dir = join(tempDir(t), "sharded");
  const names = src.names();
  const half = Math.ceil(names.length / 2);
  const shard = async (list, file) => {
    const tensors = {};
    for (const n of list) {
      const info = src.info(n);
      tensors[n] = { dtype: "BF16", shape: info.shape, data: fromFloat32(toFloat32(await src.read(n), "F32"), "BF16") };
    }
    await writeSafetensors(join(dir, file), tensors);
  };
  cpSync(join(MODEL, "config.json"), join(dir, "config.json"));
  writeFileSync(join(dir, "tokenizer.json"), '{"fake": true}');
  await shard(names.slice(0, half), "model-00001-of-00002.safetensors");
  await shard(names.slice(half), "model-00002-of-00002.safetensors");
  const wm = {};
  names.forEach((n, i) => (wm[n] = i < half ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors"));
  writeFileSync(join(dir, "model.safetensors.index.json"), JSON.stringify({ metadata: { total_size: 0 }, weight_map: wm }));

  const out = join(tempDir(t), "q");
  const r = await quantizeCheckpoint({ model: dir, out, blocksize: 32, doubleQuant: false, device: "cpu" });
  assert.equal(r.quantizedTensors, 14);
  const files = readdirSync(out).sort();
  assert.deepEqual(files, ["config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json", "tokenizer.json"]);
  const ck = await Checkpoint.open(out);
  const index = JSON.parse(readFileSync(join(out, "model.safetensors.index.json"), "utf8"));
  assert.ok(index.metadata.total_size > 0);
  assert.deepEqual(Object.keys(index.weight_map).sort(), ck.names().slice().sort());
  const q = quantizedWeightNames(ck.names());
  assert.deepEqual(q.sort(), names.filter((n) => LINEAR.test(n)).sort());
  // Reload and compare with a fresh quantization of the same bf16 tensor; the round-trip error is NF4-sized.
  const orig = await Checkpoint.open(dir);
  for (const name of q) {
    const w = await readNf4Weight(ck, name, nf4Tables().codes);
    assert.equal(w.nested, false);
    assert.equal(w.blocksize, 32);
    assert.equal(w.dtype, "bfloat16");
    const x = toFloat32(await orig.read(name), "BF16");
    const y = dequantizeNf4Host(w, nf4Tables().codes);
    let se = 0, ss = 0;
    for (let i = 0; i < x.length; i++) {
      se += (x[i] - y[i]) ** 2;
      ss += x[i] ** 2;
    }
    assert.ok(Math.sqrt(se / ss) < 0.12, `${name}: relative RMS error ${Math.sqrt(se / ss)}`);
  }
  const cfg = JSON.parse(readFileSync(join(out, "config.json"), "utf8"));
  assert.equal(cfg.quantization_config.bnb_4bit_use_double_quant, false);
  await Promise.all([ck.close(), orig.close(), src.close()]);
});

test("bits per parameter of a Qwen2.5-sized weight: 4.127 (+ 0.001 for the maps)", async (t) => {
  const dir = tempDir(t);
  const rows = 2048, cols = 4096;
  const x = new Float32Array(rows * cols);
  let seed = 12345;
  for (let i = 0; i < x.length; i++) {
    seed = (seed * 1103515245 + 12345) >>> 0;
    x[i] = ((seed / 2 ** 32) - 0.5) * 0.04;
  }
  await writeSafetensors(join(dir, "model.safetensors"), {
    "model.layers.0.mlp.up_proj.weight": { dtype: "BF16", shape: [rows, cols], data: fromFloat32(x, "BF16") },
    "model.norm.weight": { dtype: "BF16", shape: [cols], data: fromFloat32(new Float32Array(cols).fill(1), "BF16") },
  });
  writeFileSync(join(dir, "config.json"), JSON.stringify({ model_type: "qwen2", torch_dtype: "bfloat16" }));
  const r = await quantizeCheckpoint({ model: dir, out: join(tempDir(t), "o"), device: "cpu" });
  assert.equal(r.quantizedParams, rows * cols);
  assert.ok(r.bitsPerParam > 4.1269 && r.bitsPerParam < 4.1285, `bits/param ${r.bitsPerParam}`);
});

test("bad input: clear errors, nothing half-written", async (t) => {
  const base = tempDir(t);
  // NaN in a weight: E_NONFINITE naming the tensor; no output and no temporary folder.
  const nanModel = modelCopy(t);
  {
    const ck = await Checkpoint.open(nanModel);
    const tensors = {};
    for (const n of ck.names()) {
      const info = ck.info(n);
      const data = new Uint8Array(await ck.read(n));
      if (n === "model.layers.1.mlp.up_proj.weight") new Float32Array(data.buffer)[130] = NaN;
      tensors[n] = { dtype: info.dtype, shape: info.shape, data };
    }
    await ck.close();
    await writeSafetensors(join(nanModel, "model.safetensors"), tensors);
  }
  const out = join(base, "out");
  await assert.rejects(quantizeCheckpoint({ model: nanModel, out, device: "cpu" }), expectCode("E_NONFINITE", /tensor 'model.layers.1.mlp.up_proj.weight' has a non-finite value \(nan\) at element 130 \[2, 2\]/));
  assert.deepEqual(readdirSync(base).filter((f) => f.startsWith("out")), [], "nothing left behind");

  // A truncated file.
  const cut = modelCopy(t);
  const st = join(cut, "model.safetensors");
  truncateSync(st, readFileSync(st).length - 7);
  await assert.rejects(quantizeCheckpoint({ model: cut, out, device: "cpu" }), expectCode("E_FORMAT", /model.safetensors: .*truncated/));
  assert.ok(!existsSync(out));

  // A linear weight of the wrong dtype.
  const ints = modelCopy(t);
  {
    const ck = await Checkpoint.open(ints);
    const tensors = {};
    for (const n of ck.names()) {
      const info = ck.info(n);
      tensors[n] = { dtype: n === "model.layers.0.self_attn.v_proj.weight" ? "I32" : info.dtype, shape: info.shape, data: new Uint8Array(await ck.read(n)) };
    }
    await ck.close();
    await writeSafetensors(join(ints, "model.safetensors"), tensors);
  }
  await assert.rejects(quantizeCheckpoint({ model: ints, out, device: "cpu" }), expectCode("E_FORMAT", /'model.layers.0.self_attn.v_proj.weight' has dtype I32/));

  await assert.rejects(quantizeCheckpoint({ model: MODEL, out, blocksize: 48, device: "cpu" }), expectCode("E_ARG", /blocksize must be a power of two in 32..4096, got 48/));
  await assert.rejects(quantizeCheckpoint({ model: join(MODEL, "nf4"), out, device: "cpu" }), expectCode("E_FORMAT", /already quantized/));
  writeFileSync(join(base, "occupied"), "x");
  await assert.rejects(quantizeCheckpoint({ model: MODEL, out: base, device: "cpu" }), expectCode("E_ARG", /already exists and is not an empty folder/));
  await assert.rejects(quantizeCheckpoint({ model: join(base, "nope"), out, device: "cpu" }), expectCode("E_IO", /config.json: no such file/));
  assert.ok(!existsSync(out));
});

test("the quantize command prints bits/param", async (t) => {
  const out = join(tempDir(t), "cli-out");
  const lines = [];
  const write = process.stdout.write;
  // Capture, and pass through: the test runner reports through the same stream.
  process.stdout.write = (s, ...rest) => (lines.push(String(s)), write.call(process.stdout, s, ...rest));
  try {
    await yargs([]).command(quantizeCommand).strict().parseAsync(["quantize", "--model", MODEL, "--out", out, "--device", "cpu", "--no-double-quant", "--blocksize", "128"]);
  } finally {
    process.stdout.write = write;
  }
  const text = lines.join("");
  assert.match(text, /quantized 14 linear weights \(0\.\d+M parameters\) to NF4 \(blocksize 128\) on cpu/);
  assert.match(text, /\d\.\d{3} bits\/param for the quantized weights/);
  assert.ok(existsSync(join(out, "model.safetensors")));
  const cfg = JSON.parse(readFileSync(join(out, "config.json"), "utf8"));
  assert.equal(cfg.quantization_config.bnb_4bit_use_double_quant, false);
});
