// The Qwen2 / Llama decoder with LoRA adapters over frozen (NF4 or dense) base weights: weights,
// the LoRA parameter layout, forward, backward, per-layer recompute (gradient checkpointing), the
// LM head + cross-entropy over vocabulary chunks (qwen2_head.cpp), the optimizer step and a memory report.
//
// It composes ops only through the qn:: dispatchers, so the same code runs on the CPU and CUDA
// backends. Everything here runs on the calling thread (the binding calls it from the session
// queue); nothing is thread-safe by itself.
//
// Precision (DESIGN.md section 3): compute F32 = the reference: f32 activations, dense f32 base
// weights or NF4 dequantized to f32, f32 embeddings/norms/biases/LM head. compute BF16 = bf16
// activations, weights and GEMM inputs with f32 accumulation, f32 norm statistics, softmax and
// loss. LoRA masters, their gradients and the optimizer state are f32 in both.
//
// LoRA layout: ONE contiguous f32 buffer `params` holding, for layer 0..L-1 and for each targeted
// module in the order q, k, v, o, gate, up, down: A [r, in] then B [out, r], back to back with no
// padding; `grads` has the same layout (one optimizer launch, one all-reduce for data parallel).
#pragma once
#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>
#include "qn/context.h"
#include "qn/nf4_weight.h"
#include "qn/ops/optim.h"
#include "qn/tensor.h"

namespace qn {
namespace model {

enum Module : int { kQ = 0, kK, kV, kO, kGate, kUp, kDown, kNumModules };
const char* module_name(int m);                 // "q_proj" ...
bool parse_module(const std::string& s, int* m);  // inverse of module_name
inline bool module_is_mlp(int m) { return m >= kGate; }

struct LoraOptions {
  int64_t r = 8;
  double alpha = 16;
  float dropout = 0.f;
  uint32_t targets = 0x7f;  // bit m = module m is adapted
  bool rslora = false;      // scale alpha / sqrt(r) instead of alpha / r
  uint64_t seed = 0;
};

struct ModelConfig {
  int64_t hidden = 0, intermediate = 0, layers = 0, heads = 0, kv_heads = 0, head_dim = 0, vocab = 0;
  float rms_eps = 1e-6f;
  double rope_theta = 10000.0;
  bool tie_embeddings = false;
  bool qkv_bias = true;
  DType compute = DType::F32;  // F32 (reference) or BF16
  bool nf4 = true;             // decoder linear weights quantized to NF4
  int blocksize = 64;
  bool double_quant = true;
  bool grad_checkpointing = false;
  LoraOptions lora;
  // Throws E_ARG naming the field.
  void validate() const;
  int64_t q_dim() const { return heads * head_dim; }
  int64_t kv_dim() const { return kv_heads * head_dim; }
  int64_t module_in(int m) const;
  int64_t module_out(int m) const;
  float lora_scale() const;
};

// One batch as the host sees it, row-major [B, T].
struct HostBatch {
  int64_t batch = 0, seq = 0;
  std::vector<int32_t> ids, mask, labels, positions;  // labels/positions may be empty
};

struct LossResult {
  double loss_sum = 0;  // sum of token cross-entropies over the non-ignored shifted targets
  int64_t tokens = 0;
};

struct OptimOptions {
  double lr = 1e-3, weight_decay = 0, beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  float max_grad_norm = 0.f;  // <= 0: no clipping
  OptimKind kind = OptimKind::AdamW32;
  bool paged = false;
};

struct StepResult {
  double grad_norm = 0;  // before clipping
  bool clipped = false, nonfinite = false, skipped = false;
};

struct MemoryReport {
  size_t weights = 0, adapters = 0, optimizer = 0, activations = 0, peak = 0;
};

struct LoraEntry {
  std::string key;  // PEFT key: base_model.model.model.layers.{i}.{self_attn|mlp}.{name}.lora_{A|B}.weight
  Shape shape;
  int64_t offset = 0;  // elements into params/grads
  int layer = 0, module = 0;
  bool is_b = false;
};

struct WeightSpec {
  std::string name;
  Shape shape;
  bool linear = false;  // a decoder linear weight (NF4 candidate)
};

// bitsandbytes 4-bit parts of one weight (already on the host).
struct Nf4HostParts {
  Shape shape;  // [out, in]
  int blocksize = 64;
  std::vector<uint8_t> codes;
  bool nested = true;
  std::vector<float> absmax;      // !nested
  std::vector<uint8_t> absmax_q;  // nested
  std::vector<float> nested_absmax, nested_map, quant_map;
  float nested_offset = 0.f;
  int nested_blocksize = 256;
};

class Qwen2Model {
 public:
  Qwen2Model(std::shared_ptr<Context> ctx, const ModelConfig& cfg);
  ~Qwen2Model();

  const ModelConfig& config() const { return cfg_; }
  Context& ctx() const { return *ctx_; }

  // ---- loading ----
  std::vector<WeightSpec> expected_weights() const;
  // Converts (f32/bf16/f16 host bytes) to the storage dtype, or quantizes to NF4 for decoder linear
  // weights when cfg.nf4. Names the tensor in every error. Returns false when the name is known to
  // be ignorable (rotary inv_freq, a tied lm_head); throws E_ARG for unknown names.
  bool set_weight(const std::string& name, DType src_dtype, const Shape& shape, const void* data);
  void set_nf4_weight(const std::string& name, const Nf4HostParts& parts);
  // Throws E_FORMAT listing every weight that never arrived.
  void finalize_load();
  bool loaded() const { return finalized_; }

  // ---- LoRA ----
  int64_t param_count() const { return param_count_; }
  const std::vector<LoraEntry>& lora_layout() const { return lora_entries_; }
  // PEFT init: A ~ U(-1/sqrt(in), 1/sqrt(in)) (kaiming_uniform with a = sqrt(5)), B = 0.
  // PRNG: element j of the params buffer (global offset) takes
  //   u = (splitmix64(key + j * 0x9E3779B97F4A7C15) >> 40) / 2^24,  key = splitmix64(seed + 0x5EED)
  // and value = (2u - 1) * bound. Deterministic, independent of thread count and device.
  void init_lora(uint64_t seed);
  void set_lora(const std::string& key, const float* data, int64_t n);
  std::vector<float> get_params() const;  // the whole params buffer on the host
  std::vector<float> get_grads() const;
  const Tensor& params() const { return params_; }
  const Tensor& grads() const { return grads_; }

  // ---- compute ----
  void zero_grad();
  // forward + backward adding grad_scale * d(sum of token CE)/dtheta into grads.
  LossResult accumulate(const HostBatch& b, float grad_scale);
  LossResult eval_loss(const HostBatch& b);
  std::vector<float> logits(const HostBatch& b);  // [B*T*V]
  StepResult optimizer_step(const OptimOptions& o);

  // ---- optimizer state (checkpoints) ----
  int64_t optimizer_step_count() const { return step_; }
  bool has_optimizer_state() const { return optim_.m.defined(); }
  // name -> raw bytes: "m", "v" (+ "absmax_m", "absmax_v" for 8-bit)
  std::map<std::string, std::vector<uint8_t>> get_optimizer_state(OptimKind* kind) const;
  void set_optimizer_state(int64_t step, OptimKind kind, const std::map<std::string, std::vector<uint8_t>>& t);
  // Drops the optimizer state (the next step starts a fresh one at t = 1).
  void reset_optimizer();

  MemoryReport memory_report() const;
  // Frees the cached activation workspace (it grows to the largest batch seen).
  void release_workspace();

 private:
  struct Linear {
    bool is_nf4 = false;
    Nf4Weight nf4;
    Tensor dense;
    Tensor bias;
    bool has_weight = false, has_bias = false;
  };
  struct Layer {
    Tensor in_norm, post_norm;
    std::array<Linear, kNumModules> lin;
    bool has_in_norm = false, has_post_norm = false;
  };
  struct Acts;   // one layer's activations (defined in the .cpp)
  struct Ctx;    // per-call tensors: ids, mask, positions, targets
  enum class Slot { Embed, FinalNorm, LmHead, InNorm, PostNorm, LinWeight, LinBias };
  struct SlotRef {
    Slot kind;
    int layer = -1, module = -1;
    Shape shape;
  };

  const SlotRef& find_slot(const std::string& name) const;
  Tensor upload(DType dt, const Shape& shape, const void* data);
  Tensor to_storage(const Tensor& src);  // cast to the storage dtype when needed
  size_t weight_bytes() const;

  // activations workspace: flat tensors by role, grown on demand, viewed with the needed shape.
  Tensor ws(const std::string& role, DType dt, const Shape& shape);
  Acts acts_for(int slot, int64_t m, bool training);

  Ctx make_ctx(const HostBatch& b, bool need_targets);
  void layer_forward(int l, const Ctx& c, const Tensor& x, Acts& a, const Tensor& out, bool training);
  void layer_backward(int l, const Ctx& c, const Tensor& x, Acts& a, const Tensor& dx);
  // final norm + LM head + CE (qwen2_head.cpp). With grad: writes dx (grad wrt the last hidden
  // state). Loss (training, evalLoss): vocabulary chunks with an online softmax, no logits kept;
  // logits_out (logits()): row chunks of full logits copied out (no targets, no gradient).
  LossResult head_loss(const Ctx& c, const Tensor& x, const Tensor& dx, float grad_scale, std::vector<float>* logits_out);
  LossResult head_loss_online(const Ctx& c, const Tensor& hf, const Tensor& dhf, float grad_scale);
  LossResult head_loss_logits(const Ctx& c, const Tensor& hf, const Tensor& dhf, std::vector<float>* logits_out);
  LossResult run(const HostBatch& b, bool training, float grad_scale, std::vector<float>* logits_out);
  uint64_t dropout_seed(int layer, int module) const;

  std::shared_ptr<Context> ctx_;
  ModelConfig cfg_;
  DType wdt_;  // storage dtype of embeddings, norms, biases, LM head, dense base weights
  Tensor embed_, final_norm_, lm_head_;
  bool has_embed_ = false, has_final_norm_ = false, has_lm_head_ = false;
  std::vector<Layer> layers_;
  std::map<std::string, SlotRef> slots_;
  bool finalized_ = false;

  Tensor params_, grads_;
  int64_t param_count_ = 0;
  std::vector<LoraEntry> lora_entries_;
  std::map<std::string, size_t> lora_index_;
  // views: [layer][module] -> A, B, dA, dB
  struct LoraViews {
    Tensor a, b, ga, gb;
  };
  std::vector<std::array<LoraViews, kNumModules>> lora_views_;

  OptimState optim_;
  int64_t step_ = 0;
  uint64_t micro_step_ = 0;  // dropout stream counter (one per accumulate call)

  std::map<std::string, Tensor> workspace_;
  // QN_MODEL_PROFILE
  void tick(const char* name);
  void profile_begin();
  void profile_end(const char* what, int64_t tokens);
  bool profiling_ = false;
  std::chrono::steady_clock::time_point last_tick_;
  std::map<std::string, double> prof_;
  Tensor scalar_f32_, scalar_i32_;  // small device scratch
};

}  // namespace model
}  // namespace qn
