// Config schema, loading, validation messages, overrides and saving (ts/config).

import assert from "node:assert/strict";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import {
  closest,
  ConfigError,
  defaultConfig,
  editDistance,
  formatProblem,
  loadConfig,
  parseConfigText,
  parseSetArg,
  renderConfigYaml,
  saveResolvedConfig,
  SCHEMA,
  validateConfig,
} from "../dist/config/index.js";
import { ROOT, tempDir } from "./assets/data/helpers.mjs";

const TOP = "a key of the top level (model, data, lora, training, output, advanced)";

// Each case: YAML text (and --set overrides) -> the exact problem lines, in order.
const BAD = [
  ["misspelled model key", "model:\n  quantisation: nf4\n", [], ['model.quantisation: expected a key of model, found unknown key "quantisation" (did you mean model.quantization?)']],
  ["misspelled section", "trainig:\n  seed: 1\n", [], [`trainig: expected ${TOP}, found unknown key "trainig" (did you mean training?)`]],
  ["key outside its section", "learning_rate: 0.001\n", [], [`learning_rate: expected ${TOP}, found unknown key "learning_rate" (did you mean training.learning_rate?)`]],
  ["unknown key, nothing close", "output:\n  colour: blue\n", [], ['output.colour: expected a key of output, found unknown key "colour"']],
  ["key in the wrong section", "model:\n  max_length: 256\n", [], ['model.max_length: expected a key of model, found unknown key "max_length" (did you mean data.max_length?)']],
  ["misspelled training key", "training:\n  lerning_rate: 1e-4\n", [], ['training.lerning_rate: expected a key of training, found unknown key "lerning_rate" (did you mean training.learning_rate?)']],
  ["quantization not allowed", "model:\n  quantization: int8\n", [], ['model.quantization: expected one of "nf4", "none", found "int8" (a string)']],
  ["quantization misspelled", "model:\n  quantization: nf5\n", [], ['model.quantization: expected one of "nf4", "none", found "nf5" (a string) (did you mean "nf4"?)']],
  ["double_quant as string", "model:\n  double_quant: \"yes\"\n", [], ['model.double_quant: expected true or false, found "yes" (a string)']],
  ["blocksize not a power of two", "model:\n  quant_blocksize: 100\n", [], ["model.quant_blocksize: expected one of 32, 64, 128, 256, 512, 1024, 2048, 4096, found 100"]],
  ["compute dtype float16", "model:\n  compute_dtype: float16\n", [], ['model.compute_dtype: expected one of "bfloat16", "float32", found "float16" (a string) (did you mean "bfloat16"?)']],
  ["empty model name", "model:\n  name_or_path: \"\"\n", [], ['model.name_or_path: expected a non-empty string, found "" (a string)']],
  ["revision as number", "model:\n  revision: 3\n", [], ["model.revision: expected a non-empty string, found 3"]],
  ["max_length too small", "data:\n  max_length: 1\n", [], ["data.max_length: expected an integer in [2, 131072], found 1"]],
  ["max_length fractional", "data:\n  max_length: 512.5\n", [], ["data.max_length: expected an integer in [2, 131072], found 512.5"]],
  ["packing as number", "data:\n  packing: 1\n", [], ["data.packing: expected true or false, found 1"]],
  ["eval split as number", "data:\n  eval_split: 5\n", [], ["data.eval_split: expected a non-empty string or null, found 5"]],
  ["padding side", "data:\n  padding: left\n", [], ['data.padding: expected one of "max_length", "longest", found "left" (a string)']],
  ["max_train_samples zero", "data:\n  max_train_samples: 0\n", [], ["data.max_train_samples: expected an integer >= 1 or null, found 0"]],
  ["section as a list", "data:\n  - a\n  - b\n", [], ['data: expected a mapping of data keys, found ["a","b"] (a list)']],
  ["rank zero", "lora:\n  r: 0\n", [], ["lora.r: expected an integer in [1, 4096], found 0"]],
  ["negative alpha", "lora:\n  alpha: -1\n", [], ["lora.alpha: expected a number > 0, found -1"]],
  ["dropout one", "lora:\n  dropout: 1\n", [], ["lora.dropout: expected a number in [0, 1), found 1"]],
  ["duplicate target module", "lora:\n  target_modules: [q_proj, q_proj]\n", [], ['lora.target_modules: expected a non-empty list of distinct names from q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, or "all-linear", found ["q_proj","q_proj"] (a list)']],
  ["empty target modules", "lora:\n  target_modules: []\n", [], ['lora.target_modules: expected a non-empty list of distinct names from q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, or "all-linear", found [] (a list)']],
  ["target modules word", "lora:\n  target_modules: all\n", [], ['lora.target_modules: expected a non-empty list of distinct names from q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, or "all-linear", found "all" (a string)']],
  ["lm_head as target", "lora:\n  target_modules: [q_proj, lm_head]\n", [], ['lora.target_modules: expected a non-empty list of distinct names from q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, or "all-linear", found ["q_proj","lm_head"] (a list)']],
  ["zero learning rate", "training:\n  learning_rate: 0\n", [], ["training.learning_rate: expected a number in (0, 1], found 0"]],
  ["quoted learning rate", "training:\n  learning_rate: \"2e-4\"\n", [], ['training.learning_rate: expected a number in (0, 1], found "2e-4" (a string)']],
  ["max_steps zero", "training:\n  max_steps: 0\n", [], ["training.max_steps: expected -1 or an integer >= 1, found 0"]],
  ["warmup ratio above one", "training:\n  warmup_ratio: 1.5\n", [], ["training.warmup_ratio: expected a number in [0, 1], found 1.5"]],
  ["eval batch zero", "training:\n  per_device_eval_batch_size: 0\n", [], ["training.per_device_eval_batch_size: expected an integer >= 1, found 0"]],
  ["beta2 one", "training:\n  adam_beta2: 1\n", [], ["training.adam_beta2: expected a number in [0, 1), found 1"]],
  ["unknown scheduler", "training:\n  lr_scheduler_type: cosine_annealing\n", [], ['training.lr_scheduler_type: expected one of "linear", "cosine", "constant", "constant_with_warmup", found "cosine_annealing" (a string)']],
  ["scheduler misspelled", "training:\n  lr_scheduler_type: cosin\n", [], ['training.lr_scheduler_type: expected one of "linear", "cosine", "constant", "constant_with_warmup", found "cosin" (a string) (did you mean "cosine"?)']],
  ["unknown optimizer", "training:\n  optim: sgd\n", [], ['training.optim: expected one of "paged_adamw_32bit", "adamw_32bit", "paged_adamw_8bit", "adamw_torch", found "sgd" (a string)']],
  ["infinite eval steps", "training:\n  eval_steps: .inf\n", [], ["training.eval_steps: expected an integer >= 1, or a fraction of the total steps in (0, 1), found Infinity (not a finite number)"]],
  ["fractional save steps above one", "training:\n  save_steps: 1.5\n", [], ["training.save_steps: expected an integer >= 1, or a fraction of the total steps in (0, 1), found 1.5"]],
  ["zero logging steps", "training:\n  logging_steps: 0\n", [], ["training.logging_steps: expected an integer >= 1, or a fraction of the total steps in (0, 1), found 0"]],
  ["negative seed", "training:\n  seed: -1\n", [], ["training.seed: expected an integer in [0, 4294967295], found -1"]],
  ["resume as number", "training:\n  resume_from_checkpoint: 5\n", [], ["training.resume_from_checkpoint: expected a checkpoint folder path, true, false or null, found 5"]],
  ["bf16 with fp32 compute", "model:\n  compute_dtype: float32\n", [], ['training.bf16: expected false when model.compute_dtype is "float32" (or set compute_dtype to "bfloat16"), found true']],
  ["eval without eval split", "data:\n  eval_split: null\n", [], ['training.eval_strategy: expected "no" when data.eval_split is null, found "steps" (a string)']],
  ["eval on the train split", "data:\n  eval_split: train\n", [], ['data.eval_split: expected a split other than data.train_split ("train"), found "train" (a string)']],
  ["warmup longer than training", "training:\n  max_steps: 100\n  warmup_steps: 200\n", [], ["training.warmup_steps: expected at most training.max_steps (100), found 200"]],
  ["device gpu", "advanced:\n  device: gpu\n", [], ['advanced.device: expected "auto", "cpu", "cuda" or "cuda:N" (N a device index), found "gpu" (a string)']],
  ["device cuda:x", "advanced:\n  device: \"cuda:x\"\n", [], ['advanced.device: expected "auto", "cpu", "cuda" or "cuda:N" (N a device index), found "cuda:x" (a string)']],
  ["several cpu devices", "advanced:\n  device: cpu\n  num_devices: 2\n", [], ['advanced.num_devices: expected 1 when advanced.device is "cpu", found 2']],
  ["several devices, one named", "advanced:\n  device: \"cuda:1\"\n  num_devices: 2\n", [], ['advanced.num_devices: expected 1 when advanced.device names a single device (cuda:1); use "cuda" or "auto" for several, found 2']],
  ["negative threads", "advanced:\n  threads: -1\n", [], ["advanced.threads: expected an integer in [0, 1024], found -1"]],
  ["save limit zero", "output:\n  save_total_limit: 0\n", [], ["output.save_total_limit: expected an integer >= 1 or null, found 0"]],
  ["output dir null", "output:\n  dir: null\n", [], ["output.dir: expected a non-empty string, found null"]],
  ["top level list", "- model\n", [], ['(top level): expected a mapping of sections (model, data, lora, training, output, advanced), found ["model"] (a list)']],
  ["set without value", "", ["training.learning_rate"], ['--set training.learning_rate: expected section.key=value (for example training.learning_rate=1e-4), found "training.learning_rate"']],
  ["set too deep", "", ["training.lr.x=1"], ['--set training.lr.x=1: expected section.key=value (for example training.learning_rate=1e-4), found "training.lr.x=1"']],
  ["set misspelled key", "", ["training.lerning_rate=1e-4"], ['training.lerning_rate: expected a key of training, found unknown key "lerning_rate" (did you mean training.learning_rate?)']],
  ["set bad value", "", ["lora.r=sixteen"], ['lora.r: expected an integer in [1, 4096], found "sixteen" (a string)']],
  [
    "every problem at once",
    "model:\n  quantization: q4\ndata:\n  max_length: 0\nlora:\n  r: 2.5\ntraining:\n  lerning_rate: 1\n",
    ["advanced.device=tpu"],
    [
      'model.quantization: expected one of "nf4", "none", found "q4" (a string)',
      "data.max_length: expected an integer in [2, 131072], found 0",
      "lora.r: expected an integer in [1, 4096], found 2.5",
      'training.lerning_rate: expected a key of training, found unknown key "lerning_rate" (did you mean training.learning_rate?)',
      'advanced.device: expected "auto", "cpu", "cuda" or "cuda:N" (N a device index), found "tpu" (a string)',
    ],
  ],
];

test(`bad config table (${BAD.length} cases): exact messages`, async (t) => {
  assert.ok(BAD.length >= 30);
  const dir = tempDir(t);
  for (const [name, yaml, set, lines] of BAD) {
    const file = join(dir, `${name.replace(/\W+/g, "-")}.yaml`);
    writeFileSync(file, yaml);
    await assert.rejects(loadConfig(file, { set }), (err) => {
      assert.ok(err instanceof ConfigError, `${name}: ${err}`);
      assert.equal(err.code, "E_CONFIG", name);
      assert.deepEqual(err.problems.map(formatProblem), lines, name);
      const head = `Invalid configuration in ${file}: ${lines.length} problem${lines.length === 1 ? "" : "s"}`;
      assert.equal(err.message, [head, ...lines.map((l) => "  - " + l)].join("\n"), name);
      assert.doesNotMatch(err.message, /\n\s+at /, `${name}: no stack trace in the message`);
      for (const p of err.problems) assert.ok(p.path && p.expected && p.found, name);
      return true;
    });
  }
});

test("YAML syntax errors name the line and column", async (t) => {
  const dir = tempDir(t);
  const dup = join(dir, "dup.yaml");
  writeFileSync(dup, "training:\n  seed: 1\n  seed: 2\n");
  await assert.rejects(loadConfig(dup), (err) => {
    assert.equal(err.code, "E_CONFIG");
    assert.deepEqual(err.problems.map(formatProblem), [`${dup}:3:3: expected valid YAML, found Map keys must be unique`]);
    return true;
  });
  const bad = join(dir, "bad.yaml");
  writeFileSync(bad, "model:\n  name_or_path: [unclosed\n");
  await assert.rejects(loadConfig(bad), (err) => err.code === "E_CONFIG" && err.problems.length >= 1 && err.problems[0].path.startsWith(`${bad}:`) && err.problems[0].expected === "valid YAML");
});

test("missing config file is E_NOT_FOUND; a folder is E_CONFIG", async (t) => {
  const dir = tempDir(t);
  await assert.rejects(loadConfig(join(dir, "nope.yaml")), { code: "E_NOT_FOUND", message: `config file not found: ${join(dir, "nope.yaml")}` });
  await assert.rejects(loadConfig(dir), { code: "E_CONFIG" });
});

test("defaults reproduce the flagship job", async () => {
  const c = await loadConfig(undefined);
  assert.deepEqual(c, defaultConfig());
  assert.equal(c.model.name_or_path, "Qwen/Qwen2.5-3B");
  assert.equal(c.model.quantization, "nf4");
  assert.equal(c.model.double_quant, true);
  assert.equal(c.model.quant_blocksize, 64);
  assert.equal(c.model.compute_dtype, "bfloat16");
  assert.equal(c.data.dataset, "wikitext-2-raw-v1");
  assert.deepEqual([c.data.train_split, c.data.eval_split, c.data.test_split, c.data.text_field], ["train", "validation", "test", "text"]);
  assert.equal(c.data.max_length, 512);
  assert.equal(c.data.packing, false);
  assert.deepEqual([c.lora.r, c.lora.alpha, c.lora.dropout, c.lora.use_rslora], [16, 32, 0.05, false]);
  assert.deepEqual(c.lora.target_modules, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]);
  assert.deepEqual(
    [c.training.learning_rate, c.training.weight_decay, c.training.adam_beta1, c.training.adam_beta2, c.training.adam_epsilon, c.training.max_grad_norm],
    [2e-4, 0, 0.9, 0.999, 1e-8, 1.0],
  );
  assert.deepEqual([c.training.lr_scheduler_type, c.training.warmup_ratio, c.training.optim, c.training.bf16, c.training.seed], ["linear", 0.03, "paged_adamw_32bit", true, 42]);
  assert.deepEqual([c.output.dir, c.output.save_total_limit, c.output.plot], ["outputs/qwen2.5-3b-wikitext2", 2, true]);
  assert.deepEqual([c.advanced.device, c.advanced.num_devices, c.advanced.threads, c.advanced.cache_dir, c.advanced.nonfinite_patience], ["auto", 1, 0, null, 5]);
});

test("every schema key has a doc string and a default that validates", () => {
  for (const [section, fields] of Object.entries(SCHEMA)) {
    for (const [key, field] of Object.entries(fields)) {
      assert.ok(field.doc.length >= 10 && field.doc.endsWith("."), `${section}.${key} doc`);
      assert.ok(field.test(field.default), `${section}.${key} default`);
    }
  }
});

test("resolved config is deeply frozen", async () => {
  const c = await loadConfig(undefined);
  assert.ok(Object.isFrozen(c) && Object.isFrozen(c.training) && Object.isFrozen(c.lora.target_modules));
  assert.throws(() => {
    c.training.seed = 1;
  }, TypeError);
});

test("precedence: defaults < base < file < --set", async (t) => {
  const dir = tempDir(t);
  const file = join(dir, "c.yaml");
  writeFileSync(file, "training:\n  seed: 7\n  learning_rate: 1e-4\nlora:\n  r: 8\n");
  const c = await loadConfig(file, {
    base: { training: { seed: 1, logging_steps: 3 }, lora: { alpha: 8 } },
    set: ["training.seed=9", "lora.target_modules=[q_proj, v_proj]", "data.path=/data/wt2", "data.test_split=null", "model.revision=2024", "advanced.device=cuda:0"],
  });
  assert.equal(c.training.seed, 9);
  assert.equal(c.training.learning_rate, 1e-4);
  assert.equal(c.training.logging_steps, 3);
  assert.equal(c.lora.r, 8);
  assert.equal(c.lora.alpha, 8);
  assert.deepEqual(c.lora.target_modules, ["q_proj", "v_proj"]);
  assert.equal(c.data.path, "/data/wt2");
  assert.equal(c.data.test_split, null);
  assert.equal(c.model.revision, "2024", "string keys keep the raw text");
  assert.equal(c.advanced.device, "cuda:0");
});

test("parseSetArg reads YAML values", () => {
  assert.deepEqual(parseSetArg("training.learning_rate=3e-5"), { path: ["training", "learning_rate"], value: 3e-5 });
  assert.deepEqual(parseSetArg("data.packing=true"), { path: ["data", "packing"], value: true });
  assert.deepEqual(parseSetArg("output.dir=runs/a=b"), { path: ["output", "dir"], value: "runs/a=b" });
  assert.deepEqual(parseSetArg("lora.target_modules=all-linear"), { path: ["lora", "target_modules"], value: "all-linear" });
  assert.deepEqual(parseSetArg("data.eval_split="), { path: ["data", "eval_split"], value: null });
});

test("empty file and empty sections give the defaults", async (t) => {
  const dir = tempDir(t);
  const file = join(dir, "empty.yaml");
  writeFileSync(file, "# nothing here\nmodel:\ntraining:\n");
  assert.deepEqual(await loadConfig(file), defaultConfig());
});

test("all-linear and rslora validate", () => {
  const c = validateConfig({ lora: { target_modules: "all-linear", use_rslora: true, r: 64, alpha: 16 } });
  assert.equal(c.lora.target_modules, "all-linear");
});

test("saveResolvedConfig writes config.resolved.yaml atomically and it loads back", async (t) => {
  const dir = tempDir(t);
  const c = await loadConfig(undefined, { set: ["training.learning_rate=1e-5", "lora.target_modules=[q_proj]", "data.path=/x y/z", "training.resume_from_checkpoint=true"] });
  const out = join(dir, "run", "nested");
  const path = await saveResolvedConfig(c, out);
  assert.equal(path, join(out, "config.resolved.yaml"));
  assert.deepEqual(readdirSync(out), ["config.resolved.yaml"], "no temporary files left");
  const back = await loadConfig(path);
  assert.deepEqual(back, c);
  const text = readFileSync(path, "utf8");
  assert.match(text, /^# Resolved qlora-native configuration/);
  assert.match(text, /# Peak learning rate/);
  // Overwrite in place.
  await saveResolvedConfig(await loadConfig(undefined), out);
  assert.deepEqual(await loadConfig(path), defaultConfig());
  assert.deepEqual(readdirSync(out), ["config.resolved.yaml"]);
});

test("renderConfigYaml without comments round-trips", async () => {
  const c = await loadConfig(undefined, { set: ["training.adam_epsilon=1e-10", "lora.dropout=0", "data.path=null"] });
  const text = renderConfigYaml(c, { comments: false });
  assert.doesNotMatch(text, /#/);
  assert.deepEqual(validateConfig(parseConfigText(text, "(rendered)")), c);
});

test("shipped configs validate; the flagship file equals the defaults", async () => {
  const dir = join(ROOT, "configs");
  const files = readdirSync(dir).filter((f) => f.endsWith(".yaml"));
  assert.ok(files.includes("qwen2.5-3b-wikitext2.yaml"));
  for (const f of files) await loadConfig(join(dir, f));
  assert.deepEqual(await loadConfig(join(dir, "qwen2.5-3b-wikitext2.yaml")), defaultConfig());
  const flagship = readFileSync(join(dir, "qwen2.5-3b-wikitext2.yaml"), "utf8");
  for (const [section, fields] of Object.entries(SCHEMA)) {
    for (const [key, field] of Object.entries(fields)) assert.ok(flagship.includes(`# ${field.doc}\n  ${key}:`), `flagship lists ${section}.${key} with its doc`);
  }
});

test("edit distance and suggestions", () => {
  assert.equal(editDistance("kitten", "sitting"), 3);
  assert.equal(editDistance("", "abc"), 3);
  assert.equal(editDistance("same", "same"), 0);
  assert.equal(closest("lerning_rate", ["learning_rate", "seed"]), "learning_rate");
  assert.equal(closest("SEED", ["seed"]), "seed");
  assert.equal(closest("xyz", ["learning_rate", "seed"]), undefined);
  assert.equal(closest("r", ["r", "alpha"]), "r");
});

test("--set and YAML keys named __proto__ / constructor are unknown keys, never prototypes; an alias bomb is E_CONFIG", async (t) => {
  for (const set of [["__proto__.polluted=1"], ["training.__proto__=1"], ["constructor.prototype=1"], ["training.constructor=1"]]) {
    await assert.rejects(loadConfig(undefined, { set }), (e) => e.code === "E_CONFIG" && /unknown key "(__proto__|constructor)"/.test(e.message), set[0]);
  }
  const dir = tempDir(t, "qn-cfg-proto-");
  writeFileSync(join(dir, "proto.yaml"), "__proto__:\n  polluted: 1\ntraining:\n  __proto__: {polluted: 1}\n");
  await assert.rejects(loadConfig(join(dir, "proto.yaml")), (e) => e.code === "E_CONFIG" && e.problems.length === 2);
  assert.equal({}.polluted, undefined);
  const lvl = (name, prev) => `${name}: &${name} [${Array(9).fill(prev ? `*${prev}` : '"x"').join(",")}]\n`;
  writeFileSync(join(dir, "bomb.yaml"), lvl("a") + lvl("b", "a") + lvl("c", "b") + lvl("d", "c") + `e: [${Array(9).fill("*d").join(",")}]\n`);
  await assert.rejects(loadConfig(join(dir, "bomb.yaml")), (e) => e.code === "E_CONFIG" && /valid YAML/.test(e.message) && /alias/.test(e.message));
});
