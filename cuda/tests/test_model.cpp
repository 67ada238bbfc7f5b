// The whole Qwen2 graph (cuda/model): LoRA gradients of a tiny random model against central finite
// differences of its own loss in the fp32 reference mode (dense and NF4 base weights, tied and
// untied, with q/k/v biases, GQA, padding), gradient checkpointing on/off and dropout recompute
// giving identical gradients, accumulation linearity, loading errors, the optimizer step
// (skip on non-finite), optimizer state round trip; on CUDA, the CUDA model against the CPU model.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include "harness.h"
#include "model/qwen2_model.h"

using namespace qn;
using namespace qn::model;
using namespace qnt;

namespace {

ModelConfig tiny_config(bool tied, bool nf4, DType compute = DType::F32) {
  ModelConfig c;
  c.hidden = 32;
  c.intermediate = 40;
  c.layers = 2;
  c.heads = 4;
  c.kv_heads = 2;
  c.head_dim = 8;
  c.vocab = 24;
  c.rms_eps = 1e-6f;
  c.rope_theta = 10000.0;
  c.tie_embeddings = tied;
  c.qkv_bias = true;
  c.compute = compute;
  c.nf4 = nf4;
  c.blocksize = 32;
  c.double_quant = true;
  c.lora.r = 4;
  c.lora.alpha = 8;
  c.lora.targets = 0x7f;
  c.lora.seed = 7;
  return c;
}

// Random weights drawn wide (as the fixtures do) so every op matters; deterministic per name.
void load_random(Qwen2Model& m, uint64_t salt) {
  for (const WeightSpec& w : m.expected_weights()) {
    const int64_t n = shape_numel(w.shape);
    uint64_t h = salt;
    for (char ch : w.name) h = h * 131 + static_cast<unsigned char>(ch);
    std::mt19937_64 rng(h);
    std::normal_distribution<float> nd(0.f, 1.f);
    std::vector<float> v(static_cast<size_t>(n));
    const bool norm = w.name.find("norm") != std::string::npos;
    const bool bias = w.name.find(".bias") != std::string::npos;
    const float sd = norm ? 0.1f : bias ? 0.1f : w.name.find("embed") != std::string::npos ? 0.5f : 0.25f;
    for (auto& x : v) x = (norm ? 1.f : 0.f) + sd * nd(rng);
    m.set_weight(w.name, DType::F32, w.shape, v.data());
  }
  m.finalize_load();
}

// LoRA with B non-zero so every gradient is non-trivial.
void randomize_lora(Qwen2Model& m, uint64_t salt) {
  std::mt19937_64 rng(salt);
  std::normal_distribution<float> nd(0.f, 1.f);
  for (const LoraEntry& e : m.lora_layout()) {
    std::vector<float> v(static_cast<size_t>(shape_numel(e.shape)));
    const float sd = e.is_b ? 0.1f : 0.2f;
    for (auto& x : v) x = sd * nd(rng);
    m.set_lora(e.key, v.data(), static_cast<int64_t>(v.size()));
  }
}

// B = 3, T = 7: row 0 full, row 1 right padding (2), row 2 left padding (2) (or right padding with
// left_pad false).
HostBatch tiny_batch(int64_t vocab, bool left_pad = true) {
  HostBatch b;
  b.batch = 3;
  b.seq = 7;
  std::mt19937_64 rng(99);
  for (int64_t r = 0; r < b.batch; ++r)
    for (int64_t t = 0; t < b.seq; ++t) {
      const bool pad = (r == 1 && t >= 5) || (r == 2 && (left_pad ? t < 2 : t >= 6));
      const int32_t id = pad ? 0 : static_cast<int32_t>(1 + rng() % (vocab - 1));
      b.ids.push_back(id);
      b.mask.push_back(pad ? 0 : 1);
      b.labels.push_back(pad ? -100 : id);
    }
  return b;
}

// A model with random weights (loaded) and random LoRA.
std::unique_ptr<Qwen2Model> make_model(const std::shared_ptr<Context>& ctx, const ModelConfig& c, uint64_t seed) {
  auto m = std::make_unique<Qwen2Model>(ctx, c);
  load_random(*m, seed);
  randomize_lora(*m, seed + 1);
  return m;
}

double rel_l2(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

void set_params(Qwen2Model& m, const std::vector<float>& p) {
  for (const LoraEntry& e : m.lora_layout()) m.set_lora(e.key, p.data() + e.offset, shape_numel(e.shape));
}

// Directional finite differences: for each LoRA tensor, a random direction d restricted to it;
// compare g.d with (L(p + h d) - L(p - h d)) / 2h (L = loss sum, computed in fp32).
// skip_qk: with left padding, transformers' gradient (which we reproduce, model/masked_rows.h)
// passes through the additive mask of fully masked query rows into q and k although the forward
// does not depend on them there (and on, through the residual stream, into every earlier layer),
// so only the last layer's other modules are checked against finite differences.
void fd_check(Qwen2Model& m, const HostBatch& b, double tol, const char* what, bool skip_qk = false) {
  m.zero_grad();
  LossResult base = m.accumulate(b, 1.f);
  EXPECT_TRUE(base.tokens > 0);
  EXPECT_TRUE(std::isfinite(base.loss_sum));
  const std::vector<float> g = m.get_grads();
  const std::vector<float> p0 = m.get_params();
  std::mt19937_64 rng(1234);
  std::normal_distribution<double> nd(0.0, 1.0);
  double worst = 0;
  std::string worst_key;
  for (const LoraEntry& e : m.lora_layout()) {
    if (skip_qk && (e.module == kQ || e.module == kK || e.layer + 1 < m.config().layers)) continue;
    const int64_t n = shape_numel(e.shape);
    std::vector<double> d(static_cast<size_t>(n));
    double dn = 0;
    for (auto& x : d) {
      x = nd(rng);
      dn += x * x;
    }
    dn = std::sqrt(dn);
    double gd = 0;
    for (int64_t i = 0; i < n; ++i) {
      d[i] /= dn;
      gd += double(g[e.offset + i]) * d[i];
    }
    const double h = 2e-3;
    std::vector<float> p = p0;
    for (int64_t i = 0; i < n; ++i) p[e.offset + i] = static_cast<float>(p0[e.offset + i] + h * d[i]);
    set_params(m, p);
    const double lp = m.eval_loss(b).loss_sum;
    for (int64_t i = 0; i < n; ++i) p[e.offset + i] = static_cast<float>(p0[e.offset + i] - h * d[i]);
    set_params(m, p);
    const double lm = m.eval_loss(b).loss_sum;
    set_params(m, p0);
    const double fd = (lp - lm) / (2 * h);
    // relative to the gradient's own scale (|g| restricted to the tensor) so tiny projections do not blow up
    double gn = 0;
    for (int64_t i = 0; i < n; ++i) gn += double(g[e.offset + i]) * g[e.offset + i];
    gn = std::sqrt(gn);
    const double err = std::fabs(fd - gd) / std::max(gn, 1e-6);
    if (err > worst) {
      worst = err;
      worst_key = e.key;
    }
  }
  std::printf("    %s: worst directional FD error %.2e (%s)\n", what, worst, worst_key.c_str());
  if (!(worst <= tol)) record_failure(what, "finite-difference mismatch " + std::to_string(worst) + " at " + worst_key);
}

}  // namespace

QN_TEST(model_lora_layout_and_init) {
  auto ctx = test_ctx();
  ModelConfig c = tiny_config(true, false);
  c.lora.targets = (1u << kQ) | (1u << kV) | (1u << kDown);
  Qwen2Model m(ctx, c);
  // per layer: q A[4,32] B[32,4], v A[4,32] B[16,4], down A[4,40] B[32,4]
  const int64_t per = 4 * 32 + 32 * 4 + 4 * 32 + 16 * 4 + 4 * 40 + 32 * 4;
  EXPECT_EQ(m.param_count(), 2 * per);
  EXPECT_EQ(m.lora_layout().size(), size_t(12));
  EXPECT_EQ(m.lora_layout()[0].key, std::string("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"));
  EXPECT_EQ(m.lora_layout().back().key, std::string("base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"));
  const std::vector<float> p = m.get_params();
  for (const LoraEntry& e : m.lora_layout()) {
    const double bound = 1.0 / std::sqrt(double(e.shape[1]));
    double mx = 0, mean = 0;
    for (int64_t i = 0; i < shape_numel(e.shape); ++i) {
      mx = std::max(mx, std::fabs(double(p[e.offset + i])));
      mean += p[e.offset + i];
    }
    if (e.is_b) EXPECT_TRUE(mx == 0);
    else EXPECT_TRUE(mx <= bound && mx > 0.8 * bound);
  }
  Qwen2Model m2(ctx, c);
  m2.init_lora(7);
  EXPECT_TRUE(m2.get_params() == p);  // same seed, same values
  m2.init_lora(8);
  EXPECT_TRUE(m2.get_params() != p);
}

QN_TEST(model_load_errors) {
  auto ctx = test_ctx();
  Qwen2Model m(ctx, tiny_config(false, false));
  std::vector<float> v(24 * 32, 0.f);
  EXPECT_THROWS_CODE(m.set_weight("model.embed_tokens.weight", DType::F32, {32, 24}, v.data()), Shape);
  EXPECT_THROWS_CODE(m.set_weight("model.layers.9.mlp.up_proj.weight", DType::F32, {40, 32}, v.data()), Arg);
  EXPECT_TRUE(!m.set_weight("model.layers.0.self_attn.rotary_emb.inv_freq", DType::F32, {4}, v.data()));
  m.set_weight("model.embed_tokens.weight", DType::F32, {24, 32}, v.data());
  bool threw = false;
  try {
    m.finalize_load();
  } catch (const Error& e) {
    threw = e.code() == ErrorCode::Format && std::string(e.what()).find("lm_head.weight") != std::string::npos &&
            std::string(e.what()).find("model.layers.1.mlp.down_proj.weight") != std::string::npos;
  }
  EXPECT_TRUE(threw);
  HostBatch b = tiny_batch(24);
  EXPECT_THROWS_CODE(m.eval_loss(b), Arg);  // not loaded
}

// A fresh model with random weights and LoRA, checked against finite differences.
static void fd_case(const ModelConfig& c, uint64_t seed, const char* what, bool also_left_pad = false) {
  auto mp = make_model(cpu_ctx(), c, seed);
  Qwen2Model& m = *mp;
  fd_check(m, tiny_batch(c.vocab, false), 2e-3, what);
  // left padding: the last layer's v/o/MLP gradients are upstream of no q/k artifact
  if (also_left_pad) fd_check(m, tiny_batch(c.vocab, true), 2e-3, "left padding (last layer v/o/mlp)", true);
}

QN_TEST(model_grad_fd_fp32_dense_untied) { fd_case(tiny_config(false, false), 1, "dense untied", true); }

QN_TEST(model_grad_fd_fp32_nf4_tied) { fd_case(tiny_config(true, true), 3, "nf4 tied"); }

QN_TEST(model_grad_fd_fp32_llama_mqa) {
  ModelConfig c = tiny_config(false, false);
  c.qkv_bias = false;
  c.kv_heads = 1;
  c.lora.rslora = true;
  c.lora.targets = (1u << kK) | (1u << kO) | (1u << kUp);
  fd_case(c, 5, "llama-style mqa, rslora, 3 targets");
}

QN_TEST(model_checkpointing_and_dropout_identical) {
  auto ctx = test_ctx();
  for (float p : {0.f, 0.25f}) {
    std::vector<float> grads[2];
    double loss[2];
    for (int ck = 0; ck < 2; ++ck) {
      ModelConfig c = tiny_config(false, true);
      c.grad_checkpointing = ck == 1;
      c.lora.dropout = p;
      auto mp = make_model(ctx, c, 11);
      Qwen2Model& m = *mp;
      HostBatch b = tiny_batch(24);
      loss[ck] = m.accumulate(b, 0.5f).loss_sum;
      m.accumulate(b, 0.5f);  // second micro-batch: a different dropout stream
      grads[ck] = m.get_grads();
    }
    EXPECT_EQ(loss[0], loss[1]);
    EXPECT_TRUE(grads[0] == grads[1]);
  }
}

QN_TEST(model_accumulate_linearity_and_eval) {
  auto ctx = test_ctx();
  auto mp = make_model(ctx, tiny_config(true, false), 21);
  Qwen2Model& m = *mp;
  HostBatch b = tiny_batch(24);
  m.zero_grad();
  LossResult r1 = m.accumulate(b, 1.f);
  std::vector<float> g1 = m.get_grads();
  m.zero_grad();
  m.accumulate(b, 0.25f);
  m.accumulate(b, 0.75f);
  std::vector<float> g2 = m.get_grads();
  EXPECT_TRUE(rel_l2(g2, g1) < 1e-6);
  LossResult e = m.eval_loss(b);
  EXPECT_EQ(e.tokens, r1.tokens);
  // HF counts every shifted label != -100: the left pad just before row 2's first token predicts it
  EXPECT_EQ(e.tokens, int64_t(6 + 4 + 5));
  EXPECT_TRUE(std::fabs(e.loss_sum - r1.loss_sum) <= 1e-5 * std::fabs(r1.loss_sum));
  // logits -> loss by hand
  std::vector<float> lg = m.logits(b);
  double sum = 0;
  for (int64_t r = 0; r < b.batch; ++r)
    for (int64_t t = 0; t + 1 < b.seq; ++t) {
      const int32_t y = b.labels[r * b.seq + t + 1];
      if (y == -100) continue;
      const float* z = lg.data() + (r * b.seq + t) * 24;
      double mx = z[0], s = 0;
      for (int j = 1; j < 24; ++j) mx = std::max(mx, double(z[j]));
      for (int j = 0; j < 24; ++j) s += std::exp(z[j] - mx);
      sum += mx + std::log(s) - z[y];
    }
  EXPECT_TRUE(std::fabs(sum - e.loss_sum) <= 1e-5 * std::fabs(sum));
}

QN_TEST(model_optimizer_step_and_state) {
  auto ctx = test_ctx();
  auto mp = make_model(ctx, tiny_config(true, true), 31);
  Qwen2Model& m = *mp;
  HostBatch b = tiny_batch(24);
  OptimOptions o;
  o.lr = 1e-2;
  o.weight_decay = 0.01;
  o.max_grad_norm = 1e-3f;  // forces clipping
  m.zero_grad();
  m.accumulate(b, 1.f / 14);
  const std::vector<float> p0 = m.get_params();
  StepResult s = m.optimizer_step(o);
  EXPECT_TRUE(s.grad_norm > 0 && s.clipped && !s.nonfinite && !s.skipped);
  const std::vector<float> p1 = m.get_params();
  EXPECT_TRUE(p1 != p0);
  EXPECT_EQ(m.optimizer_step_count(), int64_t(1));
  OptimKind kind;
  auto st = m.get_optimizer_state(&kind);
  EXPECT_TRUE(kind == OptimKind::AdamW32);
  EXPECT_EQ(st["m"].size(), size_t(m.param_count() * 4));
  // a second model restored from the state continues identically
  Qwen2Model m2(ctx, tiny_config(true, true));
  load_random(m2, 31);
  set_params(m2, p1);
  m2.set_optimizer_state(1, kind, st);
  m.zero_grad();
  m.accumulate(b, 1.f / 14);
  m2.zero_grad();
  m2.accumulate(b, 1.f / 14);
  m.optimizer_step(o);
  m2.optimizer_step(o);
  EXPECT_TRUE(m.get_params() == m2.get_params());
  // non-finite gradients: skipped, parameters unchanged
  std::vector<float> bad = m.get_params();
  bad[0] = NAN;
  set_params(m, bad);
  m.zero_grad();
  m.accumulate(b, 1.f);
  std::vector<float> before = m.get_params();
  StepResult s2 = m.optimizer_step(o);
  EXPECT_TRUE(s2.nonfinite && s2.skipped);
  std::vector<float> after = m.get_params();
  EXPECT_TRUE(std::equal(before.begin() + 1, before.end(), after.begin() + 1));
  EXPECT_EQ(m.optimizer_step_count(), int64_t(2));
  MemoryReport mr = m.memory_report();
  EXPECT_TRUE(mr.weights > 0 && mr.adapters == size_t(m.param_count()) * 8 && mr.optimizer >= size_t(m.param_count()) * 8);
  EXPECT_TRUE(mr.activations > 0 && mr.peak > 0);
}

QN_TEST(model_bf16_close_to_fp32) {
  auto ctx = test_ctx();
  std::vector<float> g[2], lg[2];
  double loss[2];
  for (int i = 0; i < 2; ++i) {
    auto mp = make_model(ctx, tiny_config(false, false, i ? DType::BF16 : DType::F32), 41);
    Qwen2Model& m = *mp;
    HostBatch b = tiny_batch(24);
    loss[i] = m.accumulate(b, 1.f).loss_sum;
    g[i] = m.get_grads();
    lg[i] = m.logits(b);
  }
  const double eg = rel_l2(g[1], g[0]), el = rel_l2(lg[1], lg[0]);
  std::printf("    bf16 vs fp32: logits rel L2 %.2e, grads rel L2 %.2e, loss rel %.2e\n", el, eg,
              std::fabs(loss[1] - loss[0]) / loss[0]);
  EXPECT_TRUE(el < 5e-2);
  EXPECT_TRUE(eg < 1.5e-1);
  EXPECT_TRUE(std::fabs(loss[1] - loss[0]) < 2e-2 * loss[0]);
}

QN_TEST(model_cuda_matches_cpu) {
  if (!testing_cuda()) return;
  for (DType dt : {DType::F32, DType::BF16}) {
    std::vector<float> g[2];
    double loss[2];
    for (int i = 0; i < 2; ++i) {
      auto mp = make_model(i ? test_ctx() : cpu_ctx(), tiny_config(true, true, dt), 51);
      Qwen2Model& m = *mp;
      loss[i] = m.accumulate(tiny_batch(24), 1.f).loss_sum;
      g[i] = m.get_grads();
    }
    const double e = rel_l2(g[1], g[0]);
    std::printf("    cuda vs cpu (%s): grads rel L2 %.2e, loss %.9g vs %.9g\n", dtype_name(dt), e, loss[1], loss[0]);
    EXPECT_TRUE(e < (dt == DType::F32 ? 1e-4 : 5e-2));
    EXPECT_TRUE(std::fabs(loss[1] - loss[0]) < (dt == DType::F32 ? 1e-5 : 1e-2) * loss[0]);
  }
}
