// The Qwen2 / Llama graph (see qwen2_model.h). Composes ops through the qn:: dispatchers only.
#include "model/qwen2_model.h"
#include "model/masked_rows.h"
#include "model/qwen2_model_ctx.h"
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include "qn/half.h"
#include "qn/memory_stats.h"
#include "qn/ops/attention.h"
#include "qn/ops/elementwise.h"
#include "qn/ops/embedding.h"
#include "qn/ops/gemm.h"
#include "qn/ops/lora_linear.h"
#include "qn/ops/nf4.h"
#include "qn/ops/optim.h"
#include "qn/ops/rmsnorm.h"
#include "qn/ops/rope.h"
#include "qn/ops/swiglu.h"

namespace qn {
namespace model {

namespace {

const char* const kModuleNames[kNumModules] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
const char* const kBwdNames[kNumModules] = {"bwd.q_proj", "bwd.k_proj", "bwd.v_proj", "bwd.o_proj", "bwd.gate_proj", "bwd.up_proj", "bwd.down_proj"};

uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

[[noreturn]] void arg_fail(const std::string& msg) { fail(ErrorCode::Arg, msg); }

std::string layer_prefix(int l) { return "model.layers." + std::to_string(l) + "."; }
std::string module_path(int m) { return std::string(module_is_mlp(m) ? "mlp." : "self_attn.") + kModuleNames[m]; }

size_t tensor_bytes(const Tensor& t) { return t.defined() ? t.storage()->bytes : 0; }

}  // namespace

const char* module_name(int m) { return (m >= 0 && m < kNumModules) ? kModuleNames[m] : "?"; }

bool parse_module(const std::string& s, int* m) {
  for (int i = 0; i < kNumModules; ++i)
    if (s == kModuleNames[i]) {
      *m = i;
      return true;
    }
  return false;
}

// ---------------------------------------------------------------------------------------------
// config

void ModelConfig::validate() const {
  auto pos = [](int64_t v, const char* n) {
    if (v <= 0) arg_fail(std::string("Model: ") + n + " must be a positive integer, got " + std::to_string(v));
  };
  pos(hidden, "hiddenSize");
  pos(intermediate, "intermediateSize");
  pos(layers, "numLayers");
  pos(heads, "numHeads");
  pos(kv_heads, "numKvHeads");
  pos(head_dim, "headDim");
  pos(vocab, "vocabSize");
  if (heads % kv_heads) arg_fail("Model: numHeads must be a multiple of numKvHeads");
  if (head_dim % 2) arg_fail("Model: headDim must be even");
  if (!(rms_eps >= 0.f) || !std::isfinite(rms_eps)) arg_fail("Model: rmsNormEps must be a finite number >= 0");
  if (!(rope_theta > 0) || !std::isfinite(rope_theta)) arg_fail("Model: ropeTheta must be > 0");
  if (compute != DType::F32 && compute != DType::BF16) arg_fail("Model: computeDtype must be \"f32\" or \"bf16\"");
  if (blocksize < 32 || blocksize > 4096 || (blocksize & (blocksize - 1)))
    arg_fail("Model: quantBlocksize must be a power of two in [32, 4096], got " + std::to_string(blocksize));
  if (lora.r <= 0 || lora.r > 4096) arg_fail("Model: lora.r must be in [1, 4096], got " + std::to_string(lora.r));
  if (!std::isfinite(lora.alpha)) arg_fail("Model: lora.alpha must be finite");
  if (!(lora.dropout >= 0.f && lora.dropout < 1.f)) arg_fail("Model: lora.dropout must be in [0, 1)");
  if ((lora.targets & 0x7fu) == 0) arg_fail("Model: lora.targets must name at least one module");
}

int64_t ModelConfig::module_in(int m) const {
  switch (m) {
    case kO: return q_dim();
    case kDown: return intermediate;
    default: return hidden;
  }
}

int64_t ModelConfig::module_out(int m) const {
  switch (m) {
    case kQ: return q_dim();
    case kK:
    case kV: return kv_dim();
    case kGate:
    case kUp: return intermediate;
    default: return hidden;
  }
}

float ModelConfig::lora_scale() const {
  return static_cast<float>(lora.rslora ? lora.alpha / std::sqrt(static_cast<double>(lora.r))
                                        : lora.alpha / static_cast<double>(lora.r));
}

// ---------------------------------------------------------------------------------------------
// per-call state

struct Qwen2Model::Acts {
  Tensor hn1, rstd1, q, k, v, attn, lse, x2, hn2, rstd2, g, up, a;
  std::array<Tensor, kNumModules> u;
};


Qwen2Model::Qwen2Model(std::shared_ptr<Context> ctx, const ModelConfig& cfg) : ctx_(std::move(ctx)), cfg_(cfg) {
  cfg_.validate();
  wdt_ = cfg_.compute;
  layers_.resize(static_cast<size_t>(cfg_.layers));

  // weight slots
  slots_["model.embed_tokens.weight"] = {Slot::Embed, -1, -1, {cfg_.vocab, cfg_.hidden}};
  slots_["model.norm.weight"] = {Slot::FinalNorm, -1, -1, {cfg_.hidden}};
  slots_["lm_head.weight"] = {Slot::LmHead, -1, -1, {cfg_.vocab, cfg_.hidden}};
  for (int l = 0; l < cfg_.layers; ++l) {
    const std::string p = layer_prefix(l);
    slots_[p + "input_layernorm.weight"] = {Slot::InNorm, l, -1, {cfg_.hidden}};
    slots_[p + "post_attention_layernorm.weight"] = {Slot::PostNorm, l, -1, {cfg_.hidden}};
    for (int m = 0; m < kNumModules; ++m) {
      slots_[p + module_path(m) + ".weight"] = {Slot::LinWeight, l, m, {cfg_.module_out(m), cfg_.module_in(m)}};
      if (cfg_.qkv_bias && m <= kV) slots_[p + module_path(m) + ".bias"] = {Slot::LinBias, l, m, {cfg_.module_out(m)}};
    }
  }

  // LoRA layout
  const int64_t r = cfg_.lora.r;
  int64_t off = 0;
  lora_views_.resize(static_cast<size_t>(cfg_.layers));
  for (int l = 0; l < cfg_.layers; ++l)
    for (int m = 0; m < kNumModules; ++m) {
      if (!(cfg_.lora.targets >> m & 1u)) continue;
      const std::string base = "base_model.model." + layer_prefix(l) + module_path(m);
      LoraEntry ea{base + ".lora_A.weight", {r, cfg_.module_in(m)}, off, l, m, false};
      off += r * cfg_.module_in(m);
      LoraEntry eb{base + ".lora_B.weight", {cfg_.module_out(m), r}, off, l, m, true};
      off += r * cfg_.module_out(m);
      lora_index_[ea.key] = lora_entries_.size();
      lora_entries_.push_back(ea);
      lora_index_[eb.key] = lora_entries_.size();
      lora_entries_.push_back(eb);
    }
  param_count_ = off;
  params_ = Tensor::empty(ctx_, DType::F32, {param_count_});
  grads_ = Tensor::empty(ctx_, DType::F32, {param_count_});
  ctx_->memset(params_.raw(), 0, params_.nbytes());
  ctx_->memset(grads_.raw(), 0, grads_.nbytes());
  for (const LoraEntry& e : lora_entries_) {
    const int64_t n = shape_numel(e.shape);
    LoraViews& v = lora_views_[e.layer][e.module];
    Tensor pv = params_.slice_rows(e.offset, e.offset + n).reshape(e.shape);
    Tensor gv = grads_.slice_rows(e.offset, e.offset + n).reshape(e.shape);
    if (e.is_b) {
      v.b = pv;
      v.gb = gv;
    } else {
      v.a = pv;
      v.ga = gv;
    }
  }
  init_lora(cfg_.lora.seed);
  const char* prof = std::getenv("QN_MODEL_PROFILE");
  profiling_ = prof && *prof && std::string(prof) != "0";
  scalar_f32_ = Tensor::empty(ctx_, DType::F32, {1});
  scalar_i32_ = Tensor::empty(ctx_, DType::I32, {1});
}

Qwen2Model::~Qwen2Model() = default;

// ---------------------------------------------------------------------------------------------
// loading

std::vector<WeightSpec> Qwen2Model::expected_weights() const {
  std::vector<WeightSpec> out;
  for (const auto& kv : slots_) {
    if (kv.second.kind == Slot::LmHead && cfg_.tie_embeddings) continue;
    out.push_back({kv.first, kv.second.shape, kv.second.kind == Slot::LinWeight});
  }
  return out;
}

const Qwen2Model::SlotRef& Qwen2Model::find_slot(const std::string& name) const {
  auto it = slots_.find(name);
  if (it == slots_.end()) arg_fail("Model.setWeight: unexpected tensor \"" + name + "\" for this architecture");
  return it->second;
}

Tensor Qwen2Model::upload(DType dt, const Shape& shape, const void* data) {
  Tensor t = Tensor::empty(ctx_, dt, shape);
  if (t.nbytes()) ctx_->copy_from_host(t.raw(), data, t.nbytes());
  return t;
}

Tensor Qwen2Model::to_storage(const Tensor& src) {
  if (src.dtype() == wdt_) return src;
  Tensor dst = Tensor::empty(ctx_, wdt_, src.shape());
  cast(*ctx_, CastArgs{src, dst});
  return dst;
}

static bool ignorable_weight(const std::string& name) {
  return name.find("rotary_emb.inv_freq") != std::string::npos;
}

bool Qwen2Model::set_weight(const std::string& name, DType src_dtype, const Shape& shape, const void* data) {
  if (ignorable_weight(name)) return false;
  if (name == "lm_head.weight" && cfg_.tie_embeddings) return false;  // tied: the embedding is the head
  const SlotRef& s = find_slot(name);
  if (src_dtype != DType::F32 && src_dtype != DType::BF16 && src_dtype != DType::F16)
    fail(ErrorCode::DType, "Model.setWeight: " + name + ": dtype " + dtype_name(src_dtype) + " is not supported (f32, bf16, f16)");
  if (shape != s.shape)
    fail(ErrorCode::Shape, "Model.setWeight: " + name + " has shape " + shape_str(shape) + " but the config implies " +
                               shape_str(s.shape));
  Tensor src = upload(src_dtype, shape, data);
  switch (s.kind) {
    case Slot::Embed:
      embed_ = to_storage(src);
      has_embed_ = true;
      break;
    case Slot::FinalNorm:
      final_norm_ = to_storage(src);
      has_final_norm_ = true;
      break;
    case Slot::LmHead:
      lm_head_ = to_storage(src);
      has_lm_head_ = true;
      break;
    case Slot::InNorm:
      layers_[s.layer].in_norm = to_storage(src);
      layers_[s.layer].has_in_norm = true;
      break;
    case Slot::PostNorm:
      layers_[s.layer].post_norm = to_storage(src);
      layers_[s.layer].has_post_norm = true;
      break;
    case Slot::LinBias:
      layers_[s.layer].lin[s.module].bias = to_storage(src);
      layers_[s.layer].lin[s.module].has_bias = true;
      break;
    case Slot::LinWeight: {
      Linear& L = layers_[s.layer].lin[s.module];
      if (cfg_.nf4) {
        L.nf4 = nf4_quantize_weight(src, cfg_.blocksize, cfg_.double_quant, name);
        L.dense = Tensor();
        L.is_nf4 = true;
      } else {
        L.dense = to_storage(src);
        L.nf4 = Nf4Weight();
        L.is_nf4 = false;
      }
      L.has_weight = true;
      break;
    }
  }
  finalized_ = false;
  return true;
}

void Qwen2Model::set_nf4_weight(const std::string& name, const Nf4HostParts& p) {
  const SlotRef& s = find_slot(name);
  const std::string where = "Model.setNf4Weight: " + name + ": ";
  if (s.kind != Slot::LinWeight) arg_fail(where + "only decoder linear weights can be NF4");
  if (p.shape != s.shape)
    fail(ErrorCode::Shape, where + "shape " + shape_str(p.shape) + " but the config implies " + shape_str(s.shape));
  if (!p.quant_map.empty()) {
    bool same = p.quant_map.size() == 16;
    for (size_t i = 0; same && i < 16; ++i) same = p.quant_map[i] == kNf4Codes[i];
    if (!same) fail(ErrorCode::Format, where + "quant_map is not the NF4 code table (only nf4 is supported)");
  }
  Nf4Weight w;
  w.rows = s.shape[0];
  w.cols = s.shape[1];
  w.blocksize = p.blocksize;
  const int64_t n = w.rows * w.cols;
  const int64_t nb = w.nblocks();
  if ((int64_t)p.codes.size() != (n + 1) / 2)
    fail(ErrorCode::Format, where + "weight holds " + std::to_string(p.codes.size()) + " bytes, expected " +
                                std::to_string((n + 1) / 2) + " (packed 4-bit codes of " + shape_str(s.shape) + ")");
  w.codes = upload(DType::U8, {(n + 1) / 2}, p.codes.data());
  w.nested = p.nested;
  w.nested_blocksize = p.nested_blocksize;
  if (p.nested) {
    const int64_t nn = (nb + p.nested_blocksize - 1) / p.nested_blocksize;
    if ((int64_t)p.absmax_q.size() != nb)
      fail(ErrorCode::Format, where + "absmax has " + std::to_string(p.absmax_q.size()) + " entries, expected " + std::to_string(nb));
    if ((int64_t)p.nested_absmax.size() != nn)
      fail(ErrorCode::Format, where + "nested_absmax has " + std::to_string(p.nested_absmax.size()) + " entries, expected " +
                                  std::to_string(nn));
    if (p.nested_map.size() != 256) fail(ErrorCode::Format, where + "nested_quant_map must have 256 entries");
    w.absmax_q = upload(DType::U8, {nb}, p.absmax_q.data());
    w.nested_absmax = upload(DType::F32, {nn}, p.nested_absmax.data());
    w.nested_map = upload(DType::F32, {256}, p.nested_map.data());
    w.nested_offset = p.nested_offset;
  } else {
    if ((int64_t)p.absmax.size() != nb)
      fail(ErrorCode::Format, where + "absmax has " + std::to_string(p.absmax.size()) + " entries, expected " + std::to_string(nb));
    w.absmax = upload(DType::F32, {nb}, p.absmax.data());
  }
  try {
    check_nf4_weight(w, "Model.setNf4Weight");
  } catch (const Error& e) {
    fail(e.code(), where + e.what());
  }
  Linear& L = layers_[s.layer].lin[s.module];
  if (cfg_.nf4) {
    L.nf4 = std::move(w);
    L.dense = Tensor();
    L.is_nf4 = true;
  } else {  // quantization "none": keep a dense copy of the dequantized weight
    L.dense = Tensor::empty(ctx_, wdt_, s.shape);
    nf4_dequantize(*ctx_, Nf4DequantizeArgs{w, L.dense});
    L.nf4 = Nf4Weight();
    L.is_nf4 = false;
  }
  L.has_weight = true;
  finalized_ = false;
}

void Qwen2Model::finalize_load() {
  std::vector<std::string> missing;
  for (const auto& kv : slots_) {
    const SlotRef& s = kv.second;
    bool have = true;
    switch (s.kind) {
      case Slot::Embed: have = has_embed_; break;
      case Slot::FinalNorm: have = has_final_norm_; break;
      case Slot::LmHead: have = cfg_.tie_embeddings || has_lm_head_; break;
      case Slot::InNorm: have = layers_[s.layer].has_in_norm; break;
      case Slot::PostNorm: have = layers_[s.layer].has_post_norm; break;
      case Slot::LinWeight: have = layers_[s.layer].lin[s.module].has_weight; break;
      case Slot::LinBias: have = layers_[s.layer].lin[s.module].has_bias; break;
    }
    if (!have) missing.push_back(kv.first);
  }
  if (!missing.empty()) {
    std::string msg = "Model.finalizeLoad: " + std::to_string(missing.size()) + " weight(s) never arrived: ";
    for (size_t i = 0; i < missing.size() && i < 20; ++i) msg += (i ? ", " : "") + missing[i];
    if (missing.size() > 20) msg += ", ...";
    fail(ErrorCode::Format, msg);
  }
  finalized_ = true;
}

size_t Qwen2Model::weight_bytes() const {
  size_t n = tensor_bytes(embed_) + tensor_bytes(final_norm_) + tensor_bytes(lm_head_);
  for (const Layer& L : layers_) {
    n += tensor_bytes(L.in_norm) + tensor_bytes(L.post_norm);
    for (const Linear& li : L.lin) {
      n += tensor_bytes(li.dense) + tensor_bytes(li.bias);
      if (li.is_nf4) {
        const Nf4Weight& w = li.nf4;
        n += tensor_bytes(w.codes) + tensor_bytes(w.absmax) + tensor_bytes(w.absmax_q) + tensor_bytes(w.nested_absmax) +
             tensor_bytes(w.nested_map);
      }
    }
  }
  return n;
}

// ---------------------------------------------------------------------------------------------
// LoRA parameters

void Qwen2Model::init_lora(uint64_t seed) {
  std::vector<float> host(static_cast<size_t>(param_count_), 0.f);
  const uint64_t key = mix64(seed + 0x5EEDull);
  for (const LoraEntry& e : lora_entries_) {
    if (e.is_b) continue;  // B = 0
    const double bound = 1.0 / std::sqrt(static_cast<double>(e.shape[1]));
    const int64_t n = shape_numel(e.shape);
    for (int64_t i = 0; i < n; ++i) {
      const uint64_t j = static_cast<uint64_t>(e.offset + i);
      const double u = static_cast<double>(mix64(key + j * 0x9E3779B97F4A7C15ull) >> 40) / 16777216.0;
      host[static_cast<size_t>(e.offset + i)] = static_cast<float>((2.0 * u - 1.0) * bound);
    }
  }
  if (param_count_) ctx_->copy_from_host(params_.raw(), host.data(), params_.nbytes());
}

void Qwen2Model::set_lora(const std::string& key, const float* data, int64_t n) {
  auto it = lora_index_.find(key);
  if (it == lora_index_.end()) arg_fail("Model.setLora: unknown LoRA key \"" + key + "\" (not a target of this model)");
  const LoraEntry& e = lora_entries_[it->second];
  if (n != shape_numel(e.shape))
    fail(ErrorCode::Shape, "Model.setLora: " + key + " needs " + std::to_string(shape_numel(e.shape)) + " values " +
                               shape_str(e.shape) + ", got " + std::to_string(n));
  ctx_->copy_from_host(static_cast<float*>(params_.raw()) + e.offset, data, static_cast<size_t>(n) * 4);
}

std::vector<float> Qwen2Model::get_params() const {
  std::vector<float> h(static_cast<size_t>(param_count_));
  if (param_count_) ctx_->copy_to_host(h.data(), params_.raw(), params_.nbytes());
  return h;
}

std::vector<float> Qwen2Model::get_grads() const {
  std::vector<float> h(static_cast<size_t>(param_count_));
  if (param_count_) ctx_->copy_to_host(h.data(), grads_.raw(), grads_.nbytes());
  return h;
}

void Qwen2Model::zero_grad() {
  if (param_count_) ctx_->memset(grads_.raw(), 0, grads_.nbytes());
}

// ---------------------------------------------------------------------------------------------
// workspace

Tensor Qwen2Model::ws(const std::string& role, DType dt, const Shape& shape) {
  const int64_t n = std::max<int64_t>(shape_numel(shape), 1);
  Tensor& t = workspace_[role];
  if (!t.defined() || t.dtype() != dt || t.numel() < n) {
    t = Tensor();  // free first so peak memory does not hold both
    t = Tensor::empty(ctx_, dt, {n});
  }
  return t.slice_rows(0, shape_numel(shape)).reshape(shape);
}

void Qwen2Model::release_workspace() { workspace_.clear(); }

Qwen2Model::Acts Qwen2Model::acts_for(int slot, int64_t m, bool training) {
  const std::string p = "L" + std::to_string(slot) + ".";
  const DType d = cfg_.compute;
  const int64_t H = cfg_.hidden, I = cfg_.intermediate;
  Acts a;
  a.hn1 = ws(p + "hn1", d, {m, H});
  a.rstd1 = ws(p + "rstd1", DType::F32, {m});
  a.q = ws(p + "q", d, {m, cfg_.q_dim()});
  a.k = ws(p + "k", d, {m, cfg_.kv_dim()});
  a.v = ws(p + "v", d, {m, cfg_.kv_dim()});
  a.attn = ws(p + "attn", d, {m, cfg_.q_dim()});
  a.x2 = ws(p + "x2", d, {m, H});
  a.hn2 = ws(p + "hn2", d, {m, H});
  a.rstd2 = ws(p + "rstd2", DType::F32, {m});
  a.g = ws(p + "g", d, {m, I});
  a.up = ws(p + "up", d, {m, I});
  a.a = ws(p + "a", d, {m, I});
  for (int mod = 0; mod < kNumModules; ++mod)
    if (cfg_.lora.targets >> mod & 1u) a.u[mod] = ws(p + "u" + std::to_string(mod), DType::F32, {m, cfg_.lora.r});
  (void)training;
  return a;
}

// ---------------------------------------------------------------------------------------------
// profiling (QN_MODEL_PROFILE=1: per-op wall time of each call, printed to stderr; on CUDA every
// tick synchronizes, so only use it to see where time goes)

void Qwen2Model::tick(const char* name) {
  if (!profiling_) return;
  if (ctx_->device().type != DeviceType::CPU) ctx_->synchronize();
  const auto now = std::chrono::steady_clock::now();
  prof_[name] += std::chrono::duration<double>(now - last_tick_).count();
  last_tick_ = now;
}

void Qwen2Model::profile_begin() {
  if (!profiling_) return;
  prof_.clear();
  last_tick_ = std::chrono::steady_clock::now();
}

void Qwen2Model::profile_end(const char* what, int64_t tokens) {
  if (!profiling_) return;
  tick("other");
  double total = 0;
  for (const auto& kv : prof_) total += kv.second;
  std::vector<std::pair<double, std::string>> v;
  for (const auto& kv : prof_) v.push_back({kv.second, kv.first});
  std::sort(v.rbegin(), v.rend());
  std::fprintf(stderr, "[qn model profile] %s, %lld tokens: %.3f s\n", what, static_cast<long long>(tokens), total);
  for (const auto& e : v) std::fprintf(stderr, "  %-16s %8.2f ms  %5.1f%%\n", e.second.c_str(), e.first * 1e3, 100 * e.first / total);
}

// ---------------------------------------------------------------------------------------------
// forward / backward

uint64_t Qwen2Model::dropout_seed(int layer, int module) const {
  return mix64(cfg_.lora.seed ^ mix64(micro_step_ * 0x100000001B3ull + static_cast<uint64_t>(layer) * 16 +
                                      static_cast<uint64_t>(module) + 1));
}

Qwen2Model::Ctx Qwen2Model::make_ctx(const HostBatch& b, bool need_targets) {
  Ctx c;
  c.b = b.batch;
  c.t = b.seq;
  c.m = b.batch * b.seq;
  const size_t m = static_cast<size_t>(c.m);
  if (c.m <= 0) arg_fail("Model: the batch is empty");
  if (b.ids.size() != m) fail(ErrorCode::Shape, "Model: inputIds must hold batchSize * seqLen values");
  if (b.mask.size() != m) fail(ErrorCode::Shape, "Model: attentionMask must hold batchSize * seqLen values");
  for (size_t i = 0; i < m; ++i)
    if (b.ids[i] < 0 || b.ids[i] >= cfg_.vocab)
      arg_fail("Model: inputIds[" + std::to_string(i) + "] = " + std::to_string(b.ids[i]) + " is outside [0, " +
               std::to_string(cfg_.vocab) + ")");
  c.ids = ws("in.ids", DType::I32, {c.b, c.t});
  ctx_->copy_from_host(c.ids.raw(), b.ids.data(), m * 4);
  c.mask = ws("in.mask", DType::I32, {c.b, c.t});
  std::vector<int32_t> mk(m);
  for (size_t i = 0; i < m; ++i) mk[i] = b.mask[i] != 0;
  ctx_->copy_from_host(c.mask.raw(), mk.data(), m * 4);
  c.first_real.assign(static_cast<size_t>(c.b), c.t);
  for (int64_t r = 0; r < c.b; ++r) {
    for (int64_t t = 0; t < c.t; ++t)
      if (mk[static_cast<size_t>(r * c.t + t)]) {
        c.first_real[r] = t;
        break;
      }
    if (c.first_real[r] > 0) c.any_masked_rows = true;
  }
  c.pos = ws("in.pos", DType::I32, {c.b, c.t});
  if (!b.positions.empty()) {
    if (b.positions.size() != m) fail(ErrorCode::Shape, "Model: positionIds must hold batchSize * seqLen values");
    ctx_->copy_from_host(c.pos.raw(), b.positions.data(), m * 4);
  } else {
    std::vector<int32_t> p(m);
    for (int64_t r = 0; r < c.b; ++r)
      for (int64_t t = 0; t < c.t; ++t) p[static_cast<size_t>(r * c.t + t)] = static_cast<int32_t>(t);
    ctx_->copy_from_host(c.pos.raw(), p.data(), m * 4);
  }
  if (need_targets) {
    if (b.labels.size() != m) fail(ErrorCode::Shape, "Model: labels must hold batchSize * seqLen values");
    c.host_tgt.assign(m, -100);
    for (int64_t r = 0; r < c.b; ++r)
      for (int64_t t = 0; t + 1 < c.t; ++t) {
        const int32_t y = b.labels[static_cast<size_t>(r * c.t + t + 1)];
        if (y != -100 && (y < 0 || y >= cfg_.vocab))
          arg_fail("Model: labels[" + std::to_string(r * c.t + t + 1) + "] = " + std::to_string(y) +
                   " is neither -100 nor a token id in [0, " + std::to_string(cfg_.vocab) + ")");
        c.host_tgt[static_cast<size_t>(r * c.t + t)] = y;
        if (y != -100) ++c.tokens;
      }
    c.tgt = ws("in.tgt", DType::I32, {c.m});
    ctx_->copy_from_host(c.tgt.raw(), c.host_tgt.data(), m * 4);
  }
  return c;
}

namespace {

LoraLinear make_layer_desc(const Nf4Weight* nf4, const Tensor& dense, const Tensor& bias, const Tensor& a,
                           const Tensor& b, float scale, float dropout, uint64_t seed) {
  LoraLinear L;
  L.nf4 = nf4;
  L.weight = dense;
  L.bias = bias;
  L.enabled = a.defined();
  if (L.enabled) {
    L.lora_a = a;
    L.lora_b = b;
  }
  L.scale = scale;
  L.dropout = dropout;
  L.seed = seed;
  return L;
}

}  // namespace

void Qwen2Model::layer_forward(int l, const Ctx& c, const Tensor& x, Acts& a, const Tensor& out, bool training) {
  Context& cx = *ctx_;
  Layer& L = layers_[l];
  const float s = cfg_.lora_scale();
  const float p = training ? cfg_.lora.dropout : 0.f;
  auto desc = [&](int m) {
    const Linear& li = L.lin[m];
    const LoraViews& v = lora_views_[l][m];
    return make_layer_desc(li.is_nf4 ? &li.nf4 : nullptr, li.dense, li.has_bias ? li.bias : Tensor(), v.a, v.b, s, p,
                           dropout_seed(l, m));
  };
  rmsnorm_forward(cx, RmsNormForwardArgs{x, L.in_norm, a.hn1, a.rstd1, cfg_.rms_eps});
  tick("norm");
  lora_linear_forward(cx, LoraLinearForwardArgs{desc(kQ), a.hn1, a.q, a.u[kQ], false});
  tick("fwd.q_proj");
  lora_linear_forward(cx, LoraLinearForwardArgs{desc(kK), a.hn1, a.k, a.u[kK], false});
  tick("fwd.k_proj");
  lora_linear_forward(cx, LoraLinearForwardArgs{desc(kV), a.hn1, a.v, a.u[kV], false});
  tick("fwd.v_proj");
  const int64_t hd = cfg_.head_dim;
  Tensor q4 = a.q.reshape({c.b, c.t, cfg_.heads, hd});
  Tensor k4 = a.k.reshape({c.b, c.t, cfg_.kv_heads, hd});
  Tensor v4 = a.v.reshape({c.b, c.t, cfg_.kv_heads, hd});
  rope_forward(cx, RopeArgs{q4, k4, c.pos, cfg_.rope_theta});
  tick("rope");
  AttentionForwardArgs at;
  at.q = q4;
  at.k = k4;
  at.v = v4;
  at.mask = c.mask;
  at.out = a.attn.reshape({c.b, c.t, cfg_.heads, hd});
  at.lse = a.lse;
  at.causal = true;
  attention_forward(cx, at);
  tick("attn_fwd");
  if (c.any_masked_rows) hf_masked_rows_forward(cx, v4, at.out, c.first_real);
  tick("masked_rows");
  cx.copy(a.x2.raw(), x.raw(), x.nbytes());
  tick("copy");
  lora_linear_forward(cx, LoraLinearForwardArgs{desc(kO), a.attn, a.x2, a.u[kO], true});
  tick("fwd.o_proj");
  rmsnorm_forward(cx, RmsNormForwardArgs{a.x2, L.post_norm, a.hn2, a.rstd2, cfg_.rms_eps});
  tick("norm");
  lora_linear_forward(cx, LoraLinearForwardArgs{desc(kGate), a.hn2, a.g, a.u[kGate], false});
  tick("fwd.gate_proj");
  lora_linear_forward(cx, LoraLinearForwardArgs{desc(kUp), a.hn2, a.up, a.u[kUp], false});
  tick("fwd.up_proj");
  swiglu_forward(cx, SwigluForwardArgs{a.g, a.up, a.a});
  tick("swiglu");
  cx.copy(out.raw(), a.x2.raw(), out.nbytes());
  tick("copy");
  lora_linear_forward(cx, LoraLinearForwardArgs{desc(kDown), a.a, out, a.u[kDown], true});
  tick("fwd.down_proj");
}

// dx holds the gradient wrt this layer's output on entry and wrt its input on exit (layer 0 stops
// once the LoRA gradients are done: the embedding is frozen).
void Qwen2Model::layer_backward(int l, const Ctx& c, const Tensor& x, Acts& a, const Tensor& dx) {
  Context& cx = *ctx_;
  Layer& L = layers_[l];
  const float s = cfg_.lora_scale();
  const float p = cfg_.lora.dropout;
  const DType d = cfg_.compute;
  const int64_t m = c.m, H = cfg_.hidden, I = cfg_.intermediate, hd = cfg_.head_dim;
  auto bwd = [&](int mod, const Tensor& xin, const Tensor& dy, const Tensor& dxo, bool acc) {
    const Linear& li = L.lin[mod];
    const LoraViews& v = lora_views_[l][mod];
    LoraLinearBackwardArgs b;
    b.layer = make_layer_desc(li.is_nf4 ? &li.nf4 : nullptr, li.dense, li.has_bias ? li.bias : Tensor(), v.a, v.b, s, p,
                              dropout_seed(l, mod));
    b.x = xin;
    b.dy = dy;
    b.u = a.u[mod];
    b.dx = dxo;
    b.accumulate_dx = acc;
    b.grad_a = v.ga;
    b.grad_b = v.gb;
    lora_linear_backward(cx, b);
    tick(kBwdNames[mod]);
  };
  Tensor da = ws("B.da", d, {m, I});
  Tensor dhn = ws("B.dhn", d, {m, H});
  // MLP
  bwd(kDown, a.a, dx, da, false);
  swiglu_backward(cx, SwigluBackwardArgs{a.g, a.up, da, a.g, a.up});  // dgate -> g, dup -> up (in place)
  tick("swiglu");
  bwd(kGate, a.hn2, a.g, dhn, false);
  bwd(kUp, a.hn2, a.up, dhn, true);
  rmsnorm_backward(cx, RmsNormBackwardArgs{a.x2, L.post_norm, a.rstd2, dhn, dx, true, Tensor()});
  tick("norm");
  // attention
  Tensor dattn = ws("B.dattn", d, {m, cfg_.q_dim()});
  bwd(kO, a.attn, dx, dattn, false);
  Tensor dq = ws("B.dq", d, {c.b, c.t, cfg_.heads, hd});
  Tensor dk = ws("B.dk", d, {c.b, c.t, cfg_.kv_heads, hd});
  Tensor dv = ws("B.dv", d, {c.b, c.t, cfg_.kv_heads, hd});
  AttentionBackwardArgs ab;
  ab.q = a.q.reshape({c.b, c.t, cfg_.heads, hd});
  ab.k = a.k.reshape({c.b, c.t, cfg_.kv_heads, hd});
  ab.v = a.v.reshape({c.b, c.t, cfg_.kv_heads, hd});
  ab.mask = c.mask;
  ab.out = a.attn.reshape({c.b, c.t, cfg_.heads, hd});
  ab.lse = a.lse;
  ab.dout = dattn.reshape({c.b, c.t, cfg_.heads, hd});
  ab.dq = dq;
  ab.dk = dk;
  ab.dv = dv;
  ab.causal = true;
  attention_backward(cx, ab);
  tick("attn_bwd");
  if (c.any_masked_rows)
    hf_masked_rows_backward(cx, ab.q, ab.k, ab.v, ab.dout, dq, dk, dv, 1.f / std::sqrt(static_cast<float>(hd)), c.first_real);
  tick("masked_rows");
  rope_backward(cx, RopeArgs{dq, dk, c.pos, cfg_.rope_theta});
  tick("rope");
  const bool need_dx = l > 0;
  Tensor dq2 = dq.reshape({m, cfg_.q_dim()}), dk2 = dk.reshape({m, cfg_.kv_dim()}), dv2 = dv.reshape({m, cfg_.kv_dim()});
  bwd(kQ, a.hn1, dq2, need_dx ? dhn : Tensor(), false);
  bwd(kK, a.hn1, dk2, need_dx ? dhn : Tensor(), true);
  bwd(kV, a.hn1, dv2, need_dx ? dhn : Tensor(), true);
  if (need_dx) rmsnorm_backward(cx, RmsNormBackwardArgs{x, L.in_norm, a.rstd1, dhn, dx, true, Tensor()});
  tick("norm");
}

LossResult Qwen2Model::run(const HostBatch& b, bool training, float grad_scale, std::vector<float>* logits_out) {
  if (!finalized_) fail(ErrorCode::Arg, "Model: weights are not loaded (call finalizeLoad() after the last setWeight)");
  profile_begin();
  Ctx c = make_ctx(b, training || !logits_out);
  c.training = training;
  tick("inputs");
  const int64_t m = c.m, H = cfg_.hidden;
  const DType d = cfg_.compute;
  const int nl = static_cast<int>(cfg_.layers);
  Tensor x0 = ws(training ? "X.0" : "E.x0", d, {m, H});
  embedding(*ctx_, EmbeddingArgs{embed_, c.ids, x0});
  tick("embed");
  if (!training) {
    Tensor xa = x0, xb = ws("E.x1", d, {m, H});
    Acts a = acts_for(0, m, false);
    a.lse = ws("L0.lse", DType::F32, {c.b, cfg_.heads, c.t});
    for (int l = 0; l < nl; ++l) {
      layer_forward(l, c, xa, a, xb, false);
      std::swap(xa, xb);
    }
    LossResult res = head_loss(c, xa, Tensor(), 1.f, logits_out);
    profile_end(logits_out ? "logits" : "evalLoss", c.m);
    return res;
  }
  ++micro_step_;
  const bool ckpt = cfg_.grad_checkpointing;
  std::vector<Tensor> X(static_cast<size_t>(nl + 1));
  X[0] = x0;
  for (int l = 1; l <= nl; ++l) X[l] = ws("X." + std::to_string(l), d, {m, H});
  std::vector<Acts> acts;
  for (int l = 0; l < (ckpt ? 1 : nl); ++l) {
    acts.push_back(acts_for(l, m, true));
    acts.back().lse = ws("L" + std::to_string(l) + ".lse", DType::F32, {c.b, cfg_.heads, c.t});
  }
  for (int l = 0; l < nl; ++l) layer_forward(l, c, X[l], acts[ckpt ? 0 : l], X[l + 1], true);
  Tensor dx = ws("B.dx", d, {m, H});
  LossResult res = head_loss(c, X[nl], dx, grad_scale, logits_out);
  Tensor scratch_out = ckpt ? ws("X.recompute", d, {m, H}) : Tensor();
  for (int l = nl - 1; l >= 0; --l) {
    Acts& a = acts[ckpt ? 0 : l];
    if (ckpt) layer_forward(l, c, X[l], a, scratch_out, true);  // recompute this layer's activations
    layer_backward(l, c, X[l], a, dx);
  }
  profile_end("accumulate", c.m);
  return res;
}

LossResult Qwen2Model::accumulate(const HostBatch& b, float grad_scale) { return run(b, true, grad_scale, nullptr); }

LossResult Qwen2Model::eval_loss(const HostBatch& b) { return run(b, false, 1.f, nullptr); }

std::vector<float> Qwen2Model::logits(const HostBatch& b) {
  std::vector<float> out;
  run(b, false, 1.f, &out);
  return out;
}

// ---------------------------------------------------------------------------------------------
// optimizer

StepResult Qwen2Model::optimizer_step(const OptimOptions& o) {
  StepResult r;
  if (param_count_ == 0) return r;
  if (!optim_.m.defined() || optim_.kind != o.kind || optim_.paged != o.paged) {
    if (optim_.m.defined() && optim_.kind != o.kind)
      arg_fail(std::string("Model.optimizerStep: the optimizer state is ") + optim_kind_name(optim_.kind) +
               "; it cannot continue as " + optim_kind_name(o.kind));
    OptimState fresh = optim_state_create(ctx_, param_count_, o.kind, o.paged);
    if (optim_.m.defined()) {  // same kind, paged changed: move the moments over
      auto mv = [&](const Tensor& from, const Tensor& to) {
        if (from.defined()) ctx_->copy(to.raw(), from.raw(), from.nbytes());
      };
      mv(optim_.m, fresh.m);
      mv(optim_.v, fresh.v);
      mv(optim_.absmax_m, fresh.absmax_m);
      mv(optim_.absmax_v, fresh.absmax_v);
    }
    optim_ = fresh;
  }
  Tensor flag = scalar_i32_;
  grad_norm_sq(*ctx_, GradNormSqArgs{grads_, scalar_f32_, flag});
  float nsq = 0.f;
  int32_t nf = 0;
  ctx_->copy_to_host(&nsq, scalar_f32_.raw(), 4);
  ctx_->copy_to_host(&nf, flag.raw(), 4);
  r.grad_norm = std::sqrt(static_cast<double>(nsq));
  r.nonfinite = nf != 0 || !std::isfinite(nsq);
  if (r.nonfinite) {
    r.skipped = true;
    return r;
  }
  float coef = 1.f;
  if (o.max_grad_norm > 0.f) {
    coef = clip_coef_from_norm_sq(nsq, o.max_grad_norm);
    r.clipped = coef < 1.f;
  }
  AdamWArgs a;
  a.param = params_;
  a.grad = grads_;
  a.state = optim_;
  a.step = ++step_;
  a.lr = o.lr;
  a.beta1 = o.beta1;
  a.beta2 = o.beta2;
  a.eps = o.eps;
  a.weight_decay = o.weight_decay;
  a.grad_scale = coef;
  adamw_step(*ctx_, a);
  return r;
}

std::map<std::string, std::vector<uint8_t>> Qwen2Model::get_optimizer_state(OptimKind* kind) const {
  std::map<std::string, std::vector<uint8_t>> out;
  if (!optim_.m.defined()) return out;
  if (kind) *kind = optim_.kind;
  auto put = [&](const char* name, const Tensor& t) {
    if (!t.defined()) return;
    std::vector<uint8_t> h(t.nbytes());
    if (!h.empty()) ctx_->copy_to_host(h.data(), t.raw(), h.size());
    out[name] = std::move(h);
  };
  put("m", optim_.m);
  put("v", optim_.v);
  put("absmax_m", optim_.absmax_m);
  put("absmax_v", optim_.absmax_v);
  // The dropout stream position travels with the optimizer state, so a resumed run draws the
  // same masks as an uninterrupted one.
  std::vector<uint8_t> counter(8);
  for (int i = 0; i < 8; ++i) counter[i] = static_cast<uint8_t>(micro_step_ >> (8 * i));
  out["dropout_counter"] = std::move(counter);
  return out;
}

void Qwen2Model::set_optimizer_state(int64_t step, OptimKind kind, const std::map<std::string, std::vector<uint8_t>>& t) {
  if (step < 0) arg_fail("Model.setOptimizerState: step must be >= 0");
  OptimState st = optim_state_create(ctx_, param_count_, kind, optim_.m.defined() ? optim_.paged : false);
  auto get = [&](const char* name, const Tensor& dst) {
    if (!dst.defined()) return;
    auto it = t.find(name);
    if (it == t.end()) arg_fail(std::string("Model.setOptimizerState: missing \"") + name + "\"");
    if (it->second.size() != dst.nbytes())
      fail(ErrorCode::Shape, std::string("Model.setOptimizerState: \"") + name + "\" has " + std::to_string(it->second.size()) +
                                 " bytes, expected " + std::to_string(dst.nbytes()) + " (" + optim_kind_name(kind) + ", " +
                                 std::to_string(param_count_) + " parameters)");
    if (dst.nbytes()) ctx_->copy_from_host(dst.raw(), it->second.data(), dst.nbytes());
  };
  get("m", st.m);
  get("v", st.v);
  get("absmax_m", st.absmax_m);
  get("absmax_v", st.absmax_v);
  auto c = t.find("dropout_counter");
  if (c != t.end()) {
    if (c->second.size() != 8) fail(ErrorCode::Shape, "Model.setOptimizerState: \"dropout_counter\" must have 8 bytes");
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(c->second[i]) << (8 * i);
    micro_step_ = v;
  }
  optim_ = st;
  step_ = step;
}

void Qwen2Model::reset_optimizer() {
  optim_ = OptimState();
  step_ = 0;
}

MemoryReport Qwen2Model::memory_report() const {
  MemoryReport r;
  r.weights = weight_bytes();
  r.adapters = tensor_bytes(params_) + tensor_bytes(grads_);
  r.optimizer = tensor_bytes(optim_.m) + tensor_bytes(optim_.v) + tensor_bytes(optim_.absmax_m) +
                tensor_bytes(optim_.absmax_v) + tensor_bytes(optim_.qmap);
  for (const auto& kv : workspace_) r.activations += tensor_bytes(kv.second);
  r.peak = memory_stats(ctx_->device()).peak;
  return r;
}

}  // namespace model
}  // namespace qn
