// config.json of an HF model folder: the two supported graphs and a clear E_FORMAT, naming the
// key, for every setting the graph does not implement.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { parseHfConfig } from "../dist/model/hf-config.js";

const models = new URL("./fixtures/models/", import.meta.url).pathname;
const llama = JSON.parse(readFileSync(`${models}llama_hd64/config.json`, "utf8"));
const qwen = JSON.parse(readFileSync(`${models}qwen2_gqa_hd16/config.json`, "utf8"));

test("Qwen2 has q/k/v biases, Llama none; rope_theta from either config style", () => {
  const q = parseHfConfig(qwen);
  assert.equal(q.qkvBias, true);
  const l = parseHfConfig(llama);
  assert.equal(l.qkvBias, false);
  assert.equal(l.ropeTheta, 500000);
  const { rope_parameters, ...legacy } = llama;
  assert.equal(parseHfConfig({ ...legacy, rope_theta: rope_parameters.rope_theta }).ropeTheta, 500000);
});

test("unsupported settings are refused by name", () => {
  for (const [patch, re] of [
    [{ attention_bias: true }, /"attention_bias": true \(biases on q\/k\/v\/o_proj\) is not supported for llama/],
    [{ mlp_bias: true }, /"mlp_bias": true is not supported/],
    [{ hidden_act: "gelu" }, /hidden_act "gelu" is not supported/],
    [{ rope_parameters: { rope_type: "linear", rope_theta: 1e4, factor: 2 } }, /rope_type "linear" is not supported/],
    [{ rope_scaling: "yarn" }, /"rope_scaling" must be an object or null, got "yarn"/],
    [{ rope_scaling: { factor: 4 } }, /rope_scaling has "factor": RoPE scaling is not supported/],
    [{ model_type: "mistral", architectures: ["MistralForCausalLM"] }, /unsupported model_type "mistral"/],
  ]) {
    assert.throws(() => parseHfConfig({ ...llama, ...patch }, "m/config.json"), (e) => e.code === "E_FORMAT" && e.message.startsWith("m/config.json: ") && re.test(e.message), JSON.stringify(patch));
  }
  assert.throws(() => parseHfConfig({ ...qwen, use_sliding_window: true }), (e) => e.code === "E_FORMAT" && /use_sliding_window/.test(e.message));
  // the default rope spelled out is fine
  assert.equal(parseHfConfig({ ...llama, rope_scaling: null, rope_parameters: { rope_type: "default", rope_theta: 5e5 } }).ropeTheta, 5e5);
  assert.equal(parseHfConfig({ ...llama, rope_scaling: { rope_type: "default", factor: 1.0 } }).ropeTheta, parseHfConfig(llama).ropeTheta);
});
