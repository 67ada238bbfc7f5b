// GEMM and LoRA-linear benchmarks (qn_bench --filter gemm / --filter lora_linear).
//
// gemm: GFLOP/s of the Qwen2.5-0.5B and -3B linear shapes (M tokens x K in -> N out) as the model
// runs them: forward y = x W^T ("NT") and input gradient dx = dy W ("NN"), f32 and bf16, against a
// peak measured in the same run: on the CPU an in-register FMA / vdpbf16ps loop on every pool
// thread; on CUDA a large square cuBLASLt bf16 GEMM (8192^3) and the copy bandwidth.
// lora_linear: forward and backward (dx, dA, dB) with an NF4 base (blocksize 64, double quant),
// r = 16, bf16 activations, next to a plain bf16 GEMM of the same shape, so the cost of NF4
// dequantization and the LoRA terms shows as the ratio.
// Defaults: M = 256 tokens on the CPU, 8192 on CUDA (--n M overrides); the median of a few
// repetitions because the CPU figures come from a shared machine.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include "bench.h"
#include "cpu/gemm_driver.h"
#include "qn/cpu_features.h"
#include "qn/half.h"
#include "qn/ops/gemm.h"
#include "qn/ops/lora_linear.h"
#include "qn/ops/nf4.h"
#include "qn/parallel.h"
#if defined(__x86_64__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#endif

namespace {

using qn::DType;
using qn::Tensor;

struct LinearShape {
  const char* model;
  const char* name;
  int64_t in, out;
};

const LinearShape kShapes[] = {
    {"0.5B", "q/o_proj", 896, 896},   {"0.5B", "k/v_proj", 896, 128},   {"0.5B", "gate/up", 896, 4864},
    {"0.5B", "down", 4864, 896},      {"3B", "q/o_proj", 2048, 2048},   {"3B", "k/v_proj", 2048, 256},
    {"3B", "gate/up", 2048, 11008},   {"3B", "down", 11008, 2048},
};

// ---- CPU peak: independent FMA chains in registers, on every pool thread ----------------------
#if defined(__x86_64__)
__attribute__((target("avx512f"))) float fma_chains(long iters) {
  __m512 c[12];
  for (int i = 0; i < 12; ++i) c[i] = _mm512_set1_ps(0.f);
  const __m512 a = _mm512_set1_ps(0.9999999f), b = _mm512_set1_ps(1e-7f);
  for (long it = 0; it < iters; ++it)
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) c[i] = _mm512_fmadd_ps(a, c[i], b);
  float s = 0;
  for (int i = 0; i < 12; ++i) s += _mm512_reduce_add_ps(c[i]);
  return s;
}
__attribute__((target("avx512f,avx512bf16"))) float dpbf16_chains(long iters) {
  __m512 c[12];
  for (int i = 0; i < 12; ++i) c[i] = _mm512_set1_ps(0.f);
  const __m512bh a = (__m512bh)_mm512_set1_epi32(0x3f803f80), b = (__m512bh)_mm512_set1_epi32(0x33d633d6);
  for (long it = 0; it < iters; ++it)
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) c[i] = _mm512_dpbf16_ps(c[i], a, b);
  float s = 0;
  for (int i = 0; i < 12; ++i) s += _mm512_reduce_add_ps(c[i]);
  return s;
}
__attribute__((target("avx2,fma"))) float fma_chains_avx2(long iters) {
  __m256 c[12];
  for (int i = 0; i < 12; ++i) c[i] = _mm256_set1_ps(0.f);
  const __m256 a = _mm256_set1_ps(0.9999999f), b = _mm256_set1_ps(1e-7f);
  for (long it = 0; it < iters; ++it)
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) c[i] = _mm256_fmadd_ps(a, c[i], b);
  float s = 0;
  for (int i = 0; i < 12; ++i) {
    float t[8];
    _mm256_storeu_ps(t, c[i]);
    s += t[0];
  }
  return s;
}
#endif

// Peak GFLOP/s of all pool threads running `chains` (flops per iteration given), best of 5.
double cpu_peak(float (*chains)(long), double flops_per_iter) {
  const int threads = qn::num_threads();
  const long iters = 20000000;
  double best = 0;
  volatile float sink = 0;
  for (int r = 0; r < 5; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    qn::parallel_for(threads, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) sink = sink + chains(iters);
    });
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, flops_per_iter * iters * threads / s / 1e9);
  }
  return best;
}

std::string dims(int64_t m, int64_t k, int64_t n) {
  return " " + std::to_string(m) + "x" + std::to_string(k) + "x" + std::to_string(n);
}

// The first rows of y = x W^T (nt) or y = x W (nn) in float64, from host copies.
std::vector<double> gemm_rows_f64(const std::vector<float>& x, const std::vector<float>& w, int64_t rows, int64_t k, int64_t n, bool nt) {
  std::vector<double> y(static_cast<size_t>(rows * n));
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t kk = 0; kk < k; ++kk) {
      const double xv = x[i * k + kk];
      if (nt)
        for (int64_t j = 0; j < n; ++j) y[i * n + j] += xv * w[j * k + kk];
      else
        for (int64_t j = 0; j < n; ++j) y[i * n + j] += xv * w[kk * n + j];
    }
  return y;
}

}  // namespace

QN_BENCH(gemm) {
  auto ctx = qn::open_context(qn::parse_device(opt.device));
  const bool cuda = ctx->device().type == qn::DeviceType::CUDA;
  const int64_t m = opt.n > 0 ? opt.n : cuda ? 8192 : 256;
  const int iters = opt.iters > 0 ? opt.iters : cuda ? 20 : 3;
  const int reps = cuda ? 5 : 3;
  double peak32 = 0, peak16 = 0;
  std::printf("gemm bench on %s, M = %lld tokens, median of %d x %d calls", ctx->device().str().c_str(), (long long)m, reps, iters);
  if (!cuda) {
    const auto& f = qn::cpu_features();
    std::printf(", %d threads, %s; kernels: f32 %s, bf16 %s\n", qn::num_threads(), f.brand.c_str(),
                qn::cpu::gemm_impl::kernel_name(false), qn::cpu::gemm_impl::kernel_name(true));
#if defined(__x86_64__)
    if (f.avx512f) peak32 = cpu_peak(fma_chains, 12 * 16 * 2);
    else if (f.avx2 && f.fma) peak32 = cpu_peak(fma_chains_avx2, 12 * 8 * 2);
    peak16 = f.avx512_bf16 ? cpu_peak(dpbf16_chains, 12 * 16 * 4) : peak32;
#endif
    std::printf("  peak (in-register loop, all threads): f32 FMA %.1f GFLOP/s, bf16 %s %.1f GFLOP/s\n", peak32,
                f.avx512_bf16 ? "vdpbf16ps" : "(as f32)", peak16);
  } else {
    const double copy = qnbench::copy_bandwidth(ctx, size_t(1) << 30, 10, 3);
    peak16 = qnbench::gemm_rate_bf16(ctx) / 1e9;
    Tensor a32 = qnbench::random(ctx, DType::F32, {4096, 4096}, 1.f, 3), b32 = qnbench::random(ctx, DType::F32, {4096, 4096}, 1.f, 4);
    Tensor c32 = Tensor::empty(ctx, DType::F32, {4096, 4096});
    const double sec32 = qnbench::time_median(*ctx, reps, 5, [&] { qn::gemm(*ctx, qn::GemmArgs{a32, b32, c32, false, true}); });
    peak32 = 2.0 * 4096.0 * 4096 * 4096 / sec32 / 1e9;
    std::printf("\n  reference: copy %.0f GB/s; gemm bf16 8192^3 %.1f TFLOP/s; gemm f32 4096^3 %.1f TFLOP/s\n", copy / 1e9,
                peak16 / 1e3, peak32 / 1e3);
  }
  // Check rows: on CUDA 64 rows against the CPU backend; on the CPU 4 rows against float64.
  const int64_t cm = std::min<int64_t>(m, cuda ? 64 : 4);
  for (DType dt : {DType::F32, DType::BF16}) {
    std::vector<qnbench::Row> rows;
    const double peak = (dt == DType::F32 ? peak32 : peak16) * 1e9;
    for (const auto& sh : kShapes) {
      Tensor x = qnbench::random(ctx, dt, {m, sh.in}, 1.f, 10), w = qnbench::random(ctx, dt, {sh.out, sh.in}, 0.05f, 11);
      Tensor y = Tensor::empty(ctx, dt, {m, sh.out}), dx = Tensor::empty(ctx, dt, {m, sh.in});
      qnbench::Err ef, eb;
      {
        Tensor xs = qnbench::random(ctx, dt, {cm, sh.in}, 1.f, 12), dys = qnbench::random(ctx, dt, {cm, sh.out}, 1.f, 13);
        Tensor ys = Tensor::empty(ctx, dt, {cm, sh.out}), dxs = Tensor::empty(ctx, dt, {cm, sh.in});
        qn::gemm(*ctx, qn::GemmArgs{xs, w, ys, false, true});
        qn::gemm(*ctx, qn::GemmArgs{dys, w, dxs});
        if (cuda) {
          auto rc = qnbench::cpu_context();
          Tensor X = qnbench::convert(rc, xs, dt), W = qnbench::convert(rc, w, dt), DY = qnbench::convert(rc, dys, dt);
          Tensor Y = Tensor::empty(rc, dt, {cm, sh.out}), DX = Tensor::empty(rc, dt, {cm, sh.in});
          qn::gemm(*rc, qn::GemmArgs{X, W, Y, false, true});
          qn::gemm(*rc, qn::GemmArgs{DY, W, DX});
          ef = qnbench::compare(ys, Y);
          eb = qnbench::compare(dxs, DX);
        } else {
          const auto wh = qnbench::to_floats(w);
          ef = qnbench::compare(qnbench::to_floats(ys), gemm_rows_f64(qnbench::to_floats(xs), wh, cm, sh.in, sh.out, true));
          eb = qnbench::compare(qnbench::to_floats(dxs), gemm_rows_f64(qnbench::to_floats(dys), wh, cm, sh.out, sh.in, false));
        }
      }
      const double flops = 2.0 * m * sh.in * sh.out;
      const double fwd = qnbench::time_median(*ctx, reps, iters, [&] { qn::gemm(*ctx, qn::GemmArgs{x, w, y, false, true}); });
      qnbench::Row rf = qnbench::row(std::string(sh.model) + " " + sh.name + " y=xW^T" + dims(m, sh.in, sh.out), 0, fwd, ef);
      rf.flops = flops;
      rows.push_back(rf);
      const double bwd = qnbench::time_median(*ctx, reps, iters, [&] { qn::gemm(*ctx, qn::GemmArgs{y, w, dx}); });
      qnbench::Row rb = qnbench::row(std::string(sh.model) + " " + sh.name + " dx=dyW" + dims(m, sh.out, sh.in), 0, bwd, eb);
      rb.flops = flops;
      rows.push_back(rb);
    }
    qnbench::print_flop_rows(std::string("gemm ") + qn::dtype_name(dt) + " (C in the input dtype; MxKxN; of peak: " +
                                 (cuda ? "our gemm at 8192^3 bf16 / 4096^3 f32" : "in-register loop") + "; check " +
                                 (cuda ? "vs CPU backend, 64 rows)" : "vs float64, 4 rows)"),
                             rows, peak, "of peak");
  }
  return 0;
}

QN_BENCH(lora_linear) {
  auto ctx = qn::open_context(qn::parse_device(opt.device));
  const bool cuda = ctx->device().type == qn::DeviceType::CUDA;
  const int64_t m = opt.n > 0 ? opt.n : cuda ? 8192 : 256;
  const int iters = opt.iters > 0 ? opt.iters : cuda ? 20 : 3;
  const int reps = cuda ? 5 : 3;
  const int64_t r = 16;
  std::printf("\nlora_linear bench on %s: NF4 base (bs 64, double quant), r = %lld, bf16 x, M = %lld tokens, median of %d x %d calls\n",
              ctx->device().str().c_str(), (long long)r, (long long)m, reps, iters);
  const double gemm_rate = qnbench::gemm_rate_bf16(ctx);
  const int64_t cm = std::min<int64_t>(m, 64);
  std::vector<qnbench::Row> rows;
  for (const auto& sh : kShapes) {
    Tensor w = qnbench::random(ctx, DType::BF16, {sh.out, sh.in}, 0.05f, 20);
    qn::Nf4Weight nf4 = qn::nf4_quantize_weight(w, 64, true, "bench");
    qn::LoraLinear L;
    L.nf4 = &nf4;
    L.lora_a = qnbench::random(ctx, DType::F32, {r, sh.in}, 0.05f, 21);
    L.lora_b = qnbench::random(ctx, DType::F32, {sh.out, r}, 0.05f, 22);
    L.scale = 2.f;
    // ---- check (cm rows): y, dx, dA, dB; CUDA against the CPU backend (bf16, the NF4 weight
    // quantized again on the CPU: codes are bit-identical), the CPU against its f32 path ----
    qnbench::Err ef, eb;
    {
      struct Out {
        Tensor y, u, dx, ga, gb;
      };
      auto run = [&](const std::shared_ptr<qn::Context>& c, const qn::LoraLinear& layer, const Tensor& x, const Tensor& dy) {
        const DType dt = x.dtype();
        Out o{Tensor::empty(c, dt, {cm, sh.out}), Tensor::empty(c, DType::F32, {cm, r}), Tensor::empty(c, dt, {cm, sh.in}),
              Tensor::empty(c, DType::F32, {r, sh.in}), Tensor::empty(c, DType::F32, {sh.out, r})};
        c->memset(o.ga.raw(), 0, o.ga.nbytes());
        c->memset(o.gb.raw(), 0, o.gb.nbytes());
        qn::lora_linear_forward(*c, qn::LoraLinearForwardArgs{layer, x, o.y, o.u});
        qn::lora_linear_backward(*c, qn::LoraLinearBackwardArgs{layer, x, dy, o.u, o.dx, false, o.ga, o.gb});
        return o;
      };
      Tensor xs = qnbench::random(ctx, DType::BF16, {cm, sh.in}, 1.f, 25), dys = qnbench::random(ctx, DType::BF16, {cm, sh.out}, 1.f, 26);
      const Out got = run(ctx, L, xs, dys);
      auto rc = cuda ? qnbench::cpu_context() : ctx;
      const DType rdt = cuda ? DType::BF16 : DType::F32;
      qn::Nf4Weight rn = cuda ? qn::nf4_quantize_weight(qnbench::convert(rc, w, DType::BF16), 64, true, "bench") : nf4;
      qn::LoraLinear RL = L;
      RL.nf4 = &rn;
      RL.lora_a = qnbench::convert(rc, L.lora_a, DType::F32);
      RL.lora_b = qnbench::convert(rc, L.lora_b, DType::F32);
      const Out ref = run(rc, RL, qnbench::convert(rc, xs, rdt), qnbench::convert(rc, dys, rdt));
      ef = qnbench::compare(got.y, ref.y);
      eb = qnbench::compare(got.dx, ref.dx);
      eb.merge(qnbench::compare(got.ga, ref.ga));
      eb.merge(qnbench::compare(got.gb, ref.gb));
    }
    // ---- timing ----
    Tensor x = qnbench::random(ctx, DType::BF16, {m, sh.in}, 1.f, 23), dy = qnbench::random(ctx, DType::BF16, {m, sh.out}, 1.f, 24);
    Tensor y = Tensor::empty(ctx, DType::BF16, {m, sh.out}), u = Tensor::empty(ctx, DType::F32, {m, r});
    Tensor dx = Tensor::empty(ctx, DType::BF16, {m, sh.in});
    Tensor ga = Tensor::empty(ctx, DType::F32, {r, sh.in}), gb = Tensor::empty(ctx, DType::F32, {sh.out, r});
    ctx->memset(ga.raw(), 0, ga.nbytes());
    ctx->memset(gb.raw(), 0, gb.nbytes());
    const double g = qnbench::time_median(*ctx, reps, iters, [&] { qn::gemm(*ctx, qn::GemmArgs{x, w, y, false, true}); });
    const double f = qnbench::time_median(*ctx, reps, iters, [&] {
      qn::lora_linear_forward(*ctx, qn::LoraLinearForwardArgs{L, x, y, u});
    });
    const double b = qnbench::time_median(*ctx, reps, iters, [&] {
      qn::lora_linear_backward(*ctx, qn::LoraLinearBackwardArgs{L, x, dy, u, dx, false, ga, gb});
    });
    qn::LoraLinear Ld = L;
    Ld.dropout = 0.1f;
    Ld.seed = 7;
    const double bd = qnbench::time_median(*ctx, reps, iters, [&] {
      qn::lora_linear_backward(*ctx, qn::LoraLinearBackwardArgs{Ld, x, dy, u, dx, false, ga, gb});
    });
    // Model FLOPs: forward x W^T plus the LoRA terms u = x A^T, y += s u B^T; backward dx = dy W
    // plus (dy B) A, dA, dB.
    const double base = 2.0 * m * sh.in * sh.out, lora = 2.0 * m * r * (sh.in + sh.out);
    const std::string name = std::string(sh.model) + " " + sh.name + dims(m, sh.in, sh.out);
    char note[64];
    qnbench::Row rg = qnbench::row(name + " bf16 gemm", 0, g, {}, "");
    rg.checked = false;
    rg.flops = base;
    std::snprintf(note, sizeof note, "%.2fx gemm", f / g);
    qnbench::Row rf = qnbench::row(name + " fwd", 0, f, ef, note);
    rf.flops = base + lora;
    std::snprintf(note, sizeof note, "%.2fx gemm", b / g);
    qnbench::Row rb = qnbench::row(name + " bwd", 0, b, eb, note);
    rb.flops = base + 2 * lora;
    std::snprintf(note, sizeof note, "%.2fx gemm (dropout 0.1; check: none)", bd / g);
    qnbench::Row rd{name + " bwd p=.1", 0, bd, note};
    rd.flops = base + 2 * lora;
    for (auto* x2 : {&rg, &rf, &rb, &rd}) rows.push_back(*x2);
  }
  char title[200];
  std::snprintf(title, sizeof title, "lora_linear (MxKxN; of gemm: bf16 GEMM %s at %.3f TFLOP/s, same run; check %s, %lld rows)",
                cuda ? "8192^3" : "1024x2048x2048", gemm_rate / 1e12, cuda ? "vs CPU backend" : "vs CPU f32 path", (long long)cm);
  qnbench::print_flop_rows(title, rows, gemm_rate);
  return 0;
}

// The reference rates alone (qn_bench --filter peak), for `qlora-native bench e2e`'s MFU: on the CPU
// the in-register f32 FMA and bf16 (vdpbf16ps) loops on every pool thread; on both devices a bf16
// GEMM through our own gemm op (qnbench::gemm_rate_bf16).
double qnbench::cpu_peak_bf16() {
#if defined(__x86_64__)
  const auto& f = qn::cpu_features();
  if (f.avx512_bf16) return cpu_peak(dpbf16_chains, 12 * 16 * 4) * 1e9;
  if (f.avx512f) return cpu_peak(fma_chains, 12 * 16 * 2) * 1e9;
  if (f.avx2 && f.fma) return cpu_peak(fma_chains_avx2, 12 * 8 * 2) * 1e9;
#endif
  return 0;
}

QN_BENCH(peak) {
  auto ctx = qn::open_context(qn::parse_device(opt.device));
  const bool cuda = ctx->device().type == qn::DeviceType::CUDA;
  double peak32 = 0, peak16 = 0;
  if (!cuda) {
#if defined(__x86_64__)
    const auto& f = qn::cpu_features();
    if (f.avx512f) peak32 = cpu_peak(fma_chains, 12 * 16 * 2);
    else if (f.avx2 && f.fma) peak32 = cpu_peak(fma_chains_avx2, 12 * 8 * 2);
    peak16 = f.avx512_bf16 ? cpu_peak(dpbf16_chains, 12 * 16 * 4) : peak32;
#endif
  }
  const double g = qnbench::gemm_rate_bf16(ctx) / 1e9;
  std::printf("peak on %s, %d CPU threads: f32 %.1f GFLOP/s, bf16 %.1f GFLOP/s (in-register loop), gemm bf16 %.1f GFLOP/s (%s)",
              ctx->device().str().c_str(), qn::num_threads(), cuda ? 0.0 : peak32, cuda ? 0.0 : peak16, g,
              cuda ? "8192^3" : "1024x2048x2048");
  const double sheet = qnbench::datasheet_bf16_flops(*ctx);
  if (sheet > 0) std::printf("; datasheet bf16 %.1f GFLOP/s (%s)", sheet / 1e9, qnbench::device_name(*ctx).c_str());
  std::printf("\n");
  return 0;
}
