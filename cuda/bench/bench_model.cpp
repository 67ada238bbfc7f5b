// Whole-model training throughput without Node (qn_bench --filter model): a random Qwen2.5-shaped
// model (preset shapes as ts/bench/random-model.ts) is built in memory, its decoder linear weights
// quantized to NF4 (blocksize 64, double quant) on the device while loading, LoRA on all seven
// projections (alpha = 2r, no dropout), then full training steps (zero grad, forward, backward,
// grad norm + clipping, AdamW) are timed on one batch of B x T tokens (every label counted).
//
// Reports tokens/s (median step, best step), model FLOPs per token by the method of
// ts/bench/e2e.ts (E2E_FLOP_METHOD, repeated below), the model-FLOP rate, MFU against the device's
// peak (CPU: the in-register vdpbf16ps loop on every pool thread, measured in this run; CUDA: the
// datasheet dense bf16 rate when the GPU is known, else "n/a") and against a bf16 GEMM measured in
// this run, plus the memory report (weights, adapters, optimizer, activations, device peak).
// Sanity: the first step's loss per token must be finite and near ln(vocab): with std-0.02 weights
// and tied embeddings after RMSNorm the logits have variance about 4e-4 H, so the expected loss is
// about ln V + 2e-4 H (0.41 above ln V at the 3B shape); the case fails beyond 1 + 4e-4 H.
//
//   qn_bench --filter model [--device cuda] [--preset qwen2.5-3b] [--batch 1] [--seq 2048]
//            [--steps 5] [--warmup 1] [--r 16] [--ckpt 0|1] [--compute bf16|f32] [--optim adamw|paged|8bit]
// Defaults: CPU qwen2.5-0.5b, 1 x 256, 2 steps; CUDA qwen2.5-3b, 1 x 2048, 5 steps.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>
#include "bench.h"
#include "model/qwen2_model.h"
#include "qn/device.h"
#include "qn/error.h"
#include "qn/half.h"
#include "qn/memory_stats.h"
#include "qn/parallel.h"

namespace {

using qn::model::ModelConfig;
using qn::model::Qwen2Model;

struct Preset {
  const char* name;
  int64_t hidden, intermediate, layers, heads, kv_heads, vocab;
  double rope_theta;
};
const Preset kPresets[] = {
    {"qwen2.5-0.5b", 896, 4864, 24, 14, 2, 151936, 1e6},
    {"qwen2.5-3b", 2048, 11008, 36, 16, 2, 151936, 1e6},
    {"tiny", 64, 160, 2, 4, 2, 256, 1e4},
};

// FLOPs per trained token (ts/bench/e2e.ts, modelFlopsPerToken): forward = 2 x non-embedding
// linear params + causal attention 2 x L x q_dim x (T + 1) + LM head 2 x H x V; backward of the
// frozen base (input gradients only) = the forward again; LoRA extra = 6 r (in + out) per adapted
// linear. Recompute (gradient checkpointing) and the optimizer are not counted.
double flops_per_token(const Preset& p, int64_t T, int64_t r) {
  const double H = p.hidden, I = p.intermediate, L = p.layers, hd = H / p.heads;
  const double q = p.heads * hd, kv = p.kv_heads * hd;
  const double io[7][2] = {{H, q}, {H, kv}, {H, kv}, {q, H}, {H, I}, {H, I}, {I, H}};
  double params = 0, lora = 0;
  for (const auto& x : io) {
    params += x[0] * x[1];
    lora += 6.0 * r * (x[0] + x[1]);
  }
  const double fwd = 2 * L * params + 2 * L * q * (T + 1) + 2 * H * p.vocab;
  return 2 * fwd + L * lora;
}

// Random bf16 weights, fast: one pool of U(-a, a) values (std 0.02, as transformers'
// initializer_range) copied out from a per-tensor offset. Norms are 1, biases 0.
class WeightSource {
 public:
  WeightSource() : pool_(size_t(1) << 22) {
    uint64_t s = 0x1234567ull;
    const float a = 0.02f * std::sqrt(3.f);
    for (auto& v : pool_) {
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      const float u = static_cast<float>(s >> 40) / 16777216.f;
      v = qn::f32_to_bf16((2.f * u - 1.f) * a);
    }
  }
  const std::vector<uint16_t>& fill(const qn::model::WeightSpec& w) {
    const size_t n = static_cast<size_t>(qn::shape_numel(w.shape));
    buf_.resize(n);
    const bool norm = w.name.find("norm") != std::string::npos, bias = w.name.find(".bias") != std::string::npos;
    if (norm || bias) {
      std::fill(buf_.begin(), buf_.end(), norm ? qn::f32_to_bf16(1.f) : uint16_t(0));
      return buf_;
    }
    size_t off = std::hash<std::string>()(w.name) % pool_.size();
    for (size_t i = 0; i < n;) {
      const size_t c = std::min(n - i, pool_.size() - off);
      std::memcpy(buf_.data() + i, pool_.data() + off, c * 2);
      i += c;
      off = 0;
    }
    return buf_;
  }

 private:
  std::vector<uint16_t> pool_, buf_;
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

QN_BENCH_EXPLICIT(model) {
  auto ctx = qn::open_context(qn::parse_device(opt.device));
  const bool cuda = ctx->device().type == qn::DeviceType::CUDA;
  const std::string preset_name = opt.get("preset", cuda ? "qwen2.5-3b" : "qwen2.5-0.5b");
  const Preset* p = nullptr;
  for (const auto& x : kPresets)
    if (preset_name == x.name) p = &x;
  if (!p) qn::fail(qn::ErrorCode::Arg, "qn_bench model: unknown --preset '" + preset_name + "' (qwen2.5-0.5b, qwen2.5-3b, tiny)");
  const int64_t B = std::stoll(opt.get("batch", "1")), T = std::stoll(opt.get("seq", cuda ? "2048" : "256"));
  const int steps = std::stoi(opt.get("steps", cuda ? "5" : "2")), warmup = std::stoi(opt.get("warmup", "1"));
  const int64_t r = std::stoll(opt.get("r", "16"));
  const std::string compute = opt.get("compute", "bf16"), optim = opt.get("optim", "adamw");
  if (B < 1 || T < 2 || steps < 1 || warmup < 0 || r < 1) qn::fail(qn::ErrorCode::Arg, "qn_bench model: --batch, --steps, --r >= 1, --seq >= 2, --warmup >= 0");
  if (compute != "bf16" && compute != "f32") qn::fail(qn::ErrorCode::Arg, "qn_bench model: --compute bf16 or f32");
  if (optim != "adamw" && optim != "paged" && optim != "8bit") qn::fail(qn::ErrorCode::Arg, "qn_bench model: --optim adamw, paged or 8bit");

  ModelConfig c;
  c.hidden = p->hidden;
  c.intermediate = p->intermediate;
  c.layers = p->layers;
  c.heads = p->heads;
  c.kv_heads = p->kv_heads;
  c.head_dim = p->hidden / p->heads;
  c.vocab = p->vocab;
  c.rope_theta = p->rope_theta;
  c.tie_embeddings = true;
  c.qkv_bias = true;
  c.compute = compute == "bf16" ? qn::DType::BF16 : qn::DType::F32;
  c.nf4 = true;
  c.blocksize = 64;
  c.double_quant = true;
  c.grad_checkpointing = opt.get("ckpt", "0") == "1";
  c.lora.r = r;
  c.lora.alpha = 2.0 * r;
  c.lora.targets = 0x7f;
  c.lora.seed = 1;
  const std::string dev = ctx->device().str() + (cuda ? " (" + qnbench::device_name(*ctx) + ")" : "");
  std::printf("model bench on %s: %s, batch %lld x %lld, NF4 (64, double quant) + LoRA r=%lld on all 7 modules, %s compute, "
              "%s, gradient checkpointing %s, %d threads\n",
              dev.c_str(), p->name, (long long)B, (long long)T, (long long)r, compute.c_str(),
              optim == "adamw" ? "AdamW 32-bit" : optim == "paged" ? "paged AdamW 32-bit" : "paged AdamW 8-bit",
              c.grad_checkpointing ? "on" : "off", qn::num_threads());
  std::fflush(stdout);

  qn::memory_reset_peak(ctx->device());
  auto t0 = std::chrono::steady_clock::now();
  double loss0 = 0, gnorm0 = 0;
  std::vector<double> times;
  qn::model::MemoryReport mem;
  {
    Qwen2Model m(ctx, c);
    WeightSource src;
    for (const auto& w : m.expected_weights()) m.set_weight(w.name, qn::DType::BF16, w.shape, src.fill(w).data());
    m.finalize_load();
    m.init_lora(1);
    ctx->synchronize();
    std::printf("  load (random bf16 -> NF4 on the device): %.1f s\n", seconds_since(t0));
    std::fflush(stdout);

    qn::model::HostBatch b;
    b.batch = B;
    b.seq = T;
    b.ids.resize(static_cast<size_t>(B * T));
    for (int64_t i = 0; i < B * T; ++i) b.ids[i] = static_cast<int32_t>((i * 7919 + 13) % p->vocab);
    b.mask.assign(b.ids.size(), 1);
    b.labels = b.ids;
    qn::model::OptimOptions o;
    o.lr = 1e-4;
    o.max_grad_norm = 1.f;
    o.kind = optim == "8bit" ? qn::OptimKind::AdamW8 : qn::OptimKind::AdamW32;
    o.paged = optim != "adamw";
    for (int i = 0; i < warmup + steps; ++i) {
      const auto s0 = std::chrono::steady_clock::now();
      m.zero_grad();
      const qn::model::LossResult lr = m.accumulate(b, 1.f / static_cast<float>(B * (T - 1)));
      const qn::model::StepResult sr = m.optimizer_step(o);
      ctx->synchronize();
      const double sec = seconds_since(s0);
      if (i == 0) {
        loss0 = lr.tokens ? lr.loss_sum / static_cast<double>(lr.tokens) : NAN;
        gnorm0 = sr.grad_norm;
      }
      std::printf("  step %d%s: %.3f s, loss %.4f, grad norm %.3e\n", i + 1, i < warmup ? " (warm-up)" : "", sec,
                  lr.tokens ? lr.loss_sum / static_cast<double>(lr.tokens) : NAN, sr.grad_norm);
      std::fflush(stdout);
      if (i >= warmup) times.push_back(sec);
    }
    mem = m.memory_report();
  }
  std::sort(times.begin(), times.end());
  const double med = times.size() % 2 ? times[times.size() / 2] : 0.5 * (times[times.size() / 2 - 1] + times[times.size() / 2]);
  const double tokens = static_cast<double>(B * T), tps = tokens / med, best = tokens / times.front();
  const double fpt = flops_per_token(*p, T, r), rate = tps * fpt;
  const double gemm = qnbench::gemm_rate_bf16(ctx);
  const double peak = cuda ? qnbench::datasheet_bf16_flops(*ctx) : qnbench::cpu_peak_bf16();
  const double MB = 1024.0 * 1024.0;
  char mfu[96] = "n/a (unknown GPU)";
  if (peak > 0)
    std::snprintf(mfu, sizeof mfu, "%.1f%% of %.1f %s", 100.0 * rate / peak, peak / (cuda ? 1e12 : 1e9),
                  cuda ? "TFLOP/s (datasheet dense bf16)" : "GFLOP/s (vdpbf16ps loop, this run)");
  std::printf("  tokens/s: %.1f (median step %.3f s), best %.1f\n", tps, med, best);
  std::printf("  model FLOPs/token %.3f GFLOP (fwd + bwd of the frozen base + LoRA; recompute not counted); "
              "model FLOP rate %.2f %s\n",
              fpt / 1e9, rate / (cuda ? 1e12 : 1e9), cuda ? "TFLOP/s" : "GFLOP/s");
  std::printf("  MFU %s; %.1f%% of a bf16 GEMM measured in this run (%.2f %s, %s)\n", mfu, 100.0 * rate / gemm,
              gemm / (cuda ? 1e12 : 1e9), cuda ? "TFLOP/s" : "GFLOP/s", cuda ? "8192^3" : "1024x2048x2048");
  std::printf("  memory: weights %.0f MB, adapters+grads %.0f MB, optimizer %.0f MB, activations %.0f MB, device peak %.0f MB\n",
              mem.weights / MB, mem.adapters / MB, mem.optimizer / MB, mem.activations / MB, mem.peak / MB);
  const double ln_v = std::log(static_cast<double>(p->vocab));
  const bool sane = std::isfinite(loss0) && std::isfinite(gnorm0) && std::fabs(loss0 - ln_v) < 1.0 + 4e-4 * static_cast<double>(p->hidden);
  std::printf("  check: first loss %.4f vs ln(vocab) %.4f, grad norm %.3e: %s\n", loss0, ln_v, gnorm0, sane ? "ok" : "FAILED");
  std::fflush(stdout);
  return sane ? 0 : 1;
}
