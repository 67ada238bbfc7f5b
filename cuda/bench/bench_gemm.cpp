// GEMM and LoRA-linear benchmarks (qn_bench --filter gemm / --filter lora_linear).
//
// gemm: GFLOP/s of the Qwen2.5-0.5B and -3B linear shapes (M tokens x K in -> N out) as the model
// runs them: forward y = x W^T ("NT") and input gradient dx = dy W ("NN"), f32 and bf16, against a
// peak measured in the same run: on the CPU an in-register FMA / vdpbf16ps loop on every pool
// thread; on CUDA a large square cuBLASLt bf16 GEMM (8192^3) and the copy bandwidth.
// lora_linear: forward and backward (dx, dA, dB) with an NF4 base (blocksize 64, double quant),
// r = 16, bf16 activations, next to a plain bf16 GEMM of the same shape, so the cost of NF4
// dequantization and the LoRA terms shows as the ratio.
// Defaults: M = 256 tokens on the CPU, 8192 on CUDA (--n M overrides); best of a few repetitions
// because the CPU figures come from a shared machine.
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

Tensor random_tensor(const std::shared_ptr<qn::Context>& ctx, DType dt, const qn::Shape& s, float scale, uint64_t seed) {
  const int64_t n = qn::shape_numel(s);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> d(-scale, scale);
  Tensor t = Tensor::empty(ctx, dt, s);
  if (dt == DType::F32) {
    std::vector<float> h(static_cast<size_t>(n));
    for (auto& v : h) v = d(rng);
    ctx->copy_from_host(t.raw(), h.data(), h.size() * 4);
  } else {
    std::vector<uint16_t> h(static_cast<size_t>(n));
    for (auto& v : h) v = qn::f32_to_bf16(d(rng));
    ctx->copy_from_host(t.raw(), h.data(), h.size() * 2);
  }
  return t;
}

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

void print_header(const char* title) {
  std::printf("\n%s\n  %-34s %6s %6s %6s %10s %10s %8s\n", title, "case", "M", "K", "N", "ms/call", "GFLOP/s", "of peak");
}

void print_line(const std::string& name, int64_t m, int64_t k, int64_t n, double sec, double flops, double peak) {
  const double gf = flops / sec / 1e9;
  std::printf("  %-34s %6lld %6lld %6lld %10.3f %10.1f %7.0f%%\n", name.c_str(), (long long)m, (long long)k, (long long)n,
              sec * 1e3, gf, peak > 0 ? 100.0 * gf / peak : 0.0);
  std::fflush(stdout);
}

}  // namespace

QN_BENCH(gemm) {
  auto ctx = qn::open_context(qn::parse_device(opt.device));
  const bool cuda = ctx->device().type == qn::DeviceType::CUDA;
  const int64_t m = opt.n > 0 ? opt.n : cuda ? 8192 : 256;
  const int iters = opt.iters > 0 ? opt.iters : cuda ? 20 : 3;
  const int reps = cuda ? 3 : 5;
  double peak32 = 0, peak16 = 0;
  std::printf("gemm bench on %s, M = %lld tokens", ctx->device().str().c_str(), (long long)m);
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
    const int64_t s = 8192;
    Tensor a = random_tensor(ctx, DType::BF16, {s, s}, 1.f, 1), b = random_tensor(ctx, DType::BF16, {s, s}, 1.f, 2);
    Tensor c = Tensor::empty(ctx, DType::BF16, {s, s});
    const double sec = qnbench::time_best(*ctx, reps, 10, [&] { qn::gemm(*ctx, qn::GemmArgs{a, b, c, false, true}); });
    peak16 = 2.0 * s * s * s / sec / 1e9;
    Tensor a32 = random_tensor(ctx, DType::F32, {4096, 4096}, 1.f, 3), b32 = random_tensor(ctx, DType::F32, {4096, 4096}, 1.f, 4);
    Tensor c32 = Tensor::empty(ctx, DType::F32, {4096, 4096});
    const double sec32 = qnbench::time_best(*ctx, reps, 5, [&] { qn::gemm(*ctx, qn::GemmArgs{a32, b32, c32, false, true}); });
    peak32 = 2.0 * 4096.0 * 4096 * 4096 / sec32 / 1e9;
    std::printf("\n  reference: copy %.0f GB/s; gemm bf16 8192^3 %.1f TFLOP/s; gemm f32 4096^3 %.1f TFLOP/s\n", copy / 1e9,
                peak16 / 1e3, peak32 / 1e3);
  }
  for (DType dt : {DType::F32, DType::BF16}) {
    print_header((std::string("gemm ") + qn::dtype_name(dt) + " (C in the input dtype)").c_str());
    const double peak = dt == DType::F32 ? peak32 : peak16;
    for (const auto& sh : kShapes) {
      Tensor x = random_tensor(ctx, dt, {m, sh.in}, 1.f, 10), w = random_tensor(ctx, dt, {sh.out, sh.in}, 0.05f, 11);
      Tensor y = Tensor::empty(ctx, dt, {m, sh.out}), dx = Tensor::empty(ctx, dt, {m, sh.in});
      const double flops = 2.0 * m * sh.in * sh.out;
      const double fwd = qnbench::time_best(*ctx, reps, iters, [&] { qn::gemm(*ctx, qn::GemmArgs{x, w, y, false, true}); });
      print_line(std::string(sh.model) + " " + sh.name + " y=xW^T", m, sh.in, sh.out, fwd, flops, peak);
      const double bwd = qnbench::time_best(*ctx, reps, iters, [&] { qn::gemm(*ctx, qn::GemmArgs{y, w, dx}); });
      print_line(std::string(sh.model) + " " + sh.name + " dx=dyW", m, sh.out, sh.in, bwd, flops, peak);
    }
  }
  return 0;
}

QN_BENCH(lora_linear) {
  auto ctx = qn::open_context(qn::parse_device(opt.device));
  const bool cuda = ctx->device().type == qn::DeviceType::CUDA;
  const int64_t m = opt.n > 0 ? opt.n : cuda ? 8192 : 256;
  const int iters = opt.iters > 0 ? opt.iters : cuda ? 20 : 3;
  const int reps = cuda ? 3 : 5;
  const int64_t r = 16;
  std::printf("\nlora_linear bench on %s: NF4 base (bs 64, double quant), r = %lld, bf16 x, M = %lld tokens\n",
              ctx->device().str().c_str(), (long long)r, (long long)m);
  std::printf("  %-22s %6s %6s %10s %10s %10s %10s %9s %9s\n", "case", "in", "out", "gemm ms", "fwd ms", "bwd ms",
              "bwd p=.1", "fwd/gemm", "bwd/gemm");
  for (const auto& sh : kShapes) {
    Tensor w = random_tensor(ctx, DType::BF16, {sh.out, sh.in}, 0.05f, 20);
    qn::Nf4Weight nf4 = qn::nf4_quantize_weight(w, 64, true, "bench");
    qn::LoraLinear L;
    L.nf4 = &nf4;
    L.lora_a = random_tensor(ctx, DType::F32, {r, sh.in}, 0.05f, 21);
    L.lora_b = random_tensor(ctx, DType::F32, {sh.out, r}, 0.05f, 22);
    L.scale = 2.f;
    Tensor x = random_tensor(ctx, DType::BF16, {m, sh.in}, 1.f, 23), dy = random_tensor(ctx, DType::BF16, {m, sh.out}, 1.f, 24);
    Tensor y = Tensor::empty(ctx, DType::BF16, {m, sh.out}), u = Tensor::empty(ctx, DType::F32, {m, r});
    Tensor dx = Tensor::empty(ctx, DType::BF16, {m, sh.in});
    Tensor ga = Tensor::empty(ctx, DType::F32, {r, sh.in}), gb = Tensor::empty(ctx, DType::F32, {sh.out, r});
    ctx->memset(ga.raw(), 0, ga.nbytes());
    ctx->memset(gb.raw(), 0, gb.nbytes());
    const double g = qnbench::time_best(*ctx, reps, iters, [&] { qn::gemm(*ctx, qn::GemmArgs{x, w, y, false, true}); });
    const double f = qnbench::time_best(*ctx, reps, iters, [&] {
      qn::lora_linear_forward(*ctx, qn::LoraLinearForwardArgs{L, x, y, u});
    });
    const double b = qnbench::time_best(*ctx, reps, iters, [&] {
      qn::lora_linear_backward(*ctx, qn::LoraLinearBackwardArgs{L, x, dy, u, dx, false, ga, gb});
    });
    qn::LoraLinear Ld = L;
    Ld.dropout = 0.1f;
    Ld.seed = 7;
    const double bd = qnbench::time_best(*ctx, reps, iters, [&] {
      qn::lora_linear_backward(*ctx, qn::LoraLinearBackwardArgs{Ld, x, dy, u, dx, false, ga, gb});
    });
    std::printf("  %-22s %6lld %6lld %10.3f %10.3f %10.3f %10.3f %8.2fx %8.2fx\n",
                (std::string(sh.model) + " " + sh.name).c_str(), (long long)sh.in, (long long)sh.out, g * 1e3, f * 1e3,
                b * 1e3, bd * 1e3, f / g, b / g);
    std::fflush(stdout);
  }
  return 0;
}

// The reference rates alone (qn_bench --filter peak), for `qlora-native bench e2e`'s MFU: on the CPU
// the in-register f32 FMA and bf16 (vdpbf16ps) loops on every pool thread; on both devices a bf16
// GEMM through our own gemm op (qnbench::gemm_rate_bf16).
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
  std::printf("peak on %s, %d CPU threads: f32 %.1f GFLOP/s, bf16 %.1f GFLOP/s (in-register loop), gemm bf16 %.1f GFLOP/s (%s)\n",
              ctx->device().str().c_str(), qn::num_threads(), cuda ? 0.0 : peak32, cuda ? 0.0 : peak16, g,
              cuda ? "8192^3" : "1024x2048x2048");
  return 0;
}
