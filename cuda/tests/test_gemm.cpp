// gemm against a float64 reference loop: odd sizes, all transpose combinations, f32/bf16 inputs and
// outputs, alpha/beta/bias, several k blocks, row chunks, the transposed (narrow N) path, every
// CPU kernel ISA; CUDA against the same reference and against the CPU. Bad arguments.
//
// Tolerance: inputs are exact in both precisions (bf16 inputs are compared on their bf16 values,
// whose products are exact in fp32), so the only error is the fp32 summation: per element
// |c - ref| <= 1e-5 * (|alpha| sum_k |a_ik b_kj| + |beta c0| + |bias|) (~80 fp32 ulps of the
// absolute sum; a blocked fp32 sum of <= 1100 terms stays well inside). A bf16 C adds one rounding:
// + 2^-8 |ref| (RNE is within 2^-9).
#include <cmath>
#include <cstdio>
#include <cstring>
#include "cpu/gemm_driver.h"
#include "harness.h"
#include "qn/half.h"
#include "qn/ops/gemm.h"

using namespace qn;
using namespace qnt;

namespace {

struct Case {
  int64_t m, n, k;
  bool ta, tb;
  DType in, out;
  float alpha, beta;
  bool bias;
  DType bias_dt;
};

std::string case_str(const Case& c) {
  char b[200];
  std::snprintf(b, sizeof b, "gemm m=%lld n=%lld k=%lld ta=%d tb=%d in=%s out=%s alpha=%g beta=%g bias=%s",
                (long long)c.m, (long long)c.n, (long long)c.k, c.ta, c.tb, dtype_name(c.in), dtype_name(c.out), c.alpha,
                c.beta, c.bias ? dtype_name(c.bias_dt) : "none");
  return b;
}

// Checks got against the f64 reference with the bound described at the top. Returns false on failure.
bool check_against_reference(const std::vector<float>& got, const std::vector<float>& a, const std::vector<float>& b,
                             const std::vector<float>& c0, const std::vector<float>& bias, const Case& cs,
                             const std::string& what) {
  const int64_t M = cs.m, N = cs.n, K = cs.k;
  size_t bad = 0;
  double worst = 0;
  int64_t wi = -1;
  double wref = 0, wgot = 0;
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double s = 0, sabs = 0;
      for (int64_t k = 0; k < K; ++k) {
        const double av = cs.ta ? a[k * M + i] : a[i * K + k];
        const double bv = cs.tb ? b[j * K + k] : b[k * N + j];
        s += av * bv;
        sabs += std::fabs(av * bv);
      }
      double ref = cs.alpha * s, mag = std::fabs(cs.alpha) * sabs;
      if (cs.beta != 0.f) {
        ref += cs.beta * static_cast<double>(c0[i * N + j]);
        mag += std::fabs(cs.beta * static_cast<double>(c0[i * N + j]));
      }
      if (cs.bias) {
        ref += bias[j];
        mag += std::fabs(bias[j]);
      }
      double bound = 1e-5 * mag + 1e-30;
      if (cs.out == DType::BF16) bound += std::ldexp(std::fabs(ref), -8);
      const double g = got[i * N + j];
      const double err = std::fabs(g - ref);
      if (!(err <= bound)) {
        ++bad;
        const double ex = std::isnan(err) ? 1e30 : err / bound;
        if (ex > worst) {
          worst = ex;
          wi = i * N + j;
          wref = ref;
          wgot = g;
        }
      }
    }
  if (bad) {
    char m[300];
    std::snprintf(m, sizeof m, "%zu/%lld wrong; worst at %lld (row %lld col %lld): %.9g vs ref %.9g (%.3g x bound)", bad,
                  (long long)(M * N), (long long)wi, (long long)(wi / N), (long long)(wi % N), wgot, wref, worst);
    record_failure(what, m);
  }
  return bad == 0;
}

// Runs one case on ctx and checks it; when cpu_result is given, stores the output there.
void run_case(const std::shared_ptr<Context>& ctx, const Case& cs, uint64_t salt, std::vector<float>* out = nullptr) {
  const Shape sa = cs.ta ? Shape{cs.k, cs.m} : Shape{cs.m, cs.k};
  const Shape sb = cs.tb ? Shape{cs.n, cs.k} : Shape{cs.k, cs.n};
  Tensor a = from_floats(ctx, cs.in, sa, random_floats(static_cast<size_t>(cs.m * cs.k), -1, 1, salt * 4 + 1));
  Tensor b = from_floats(ctx, cs.in, sb, random_floats(static_cast<size_t>(cs.k * cs.n), -1, 1, salt * 4 + 2));
  Tensor c = cs.beta != 0.f ? from_floats(ctx, cs.out, {cs.m, cs.n}, random_floats(static_cast<size_t>(cs.m * cs.n), -1, 1, salt * 4 + 3))
                            : poisoned(ctx, cs.out, {cs.m, cs.n});
  Tensor bias;
  if (cs.bias) bias = from_floats(ctx, cs.bias_dt, {cs.n}, random_floats(static_cast<size_t>(cs.n), -1, 1, salt * 4 + 4));
  const std::vector<float> av = to_floats(a), bv = to_floats(b);
  const std::vector<float> c0 = cs.beta != 0.f ? to_floats(c) : std::vector<float>();
  const std::vector<float> biasv = cs.bias ? to_floats(bias) : std::vector<float>();
  GemmArgs g{a, b, c, cs.ta, cs.tb, cs.alpha, cs.beta, bias};
  gemm(*ctx, g);
  const std::vector<float> got = to_floats(c);
  check_against_reference(got, av, bv, c0, biasv, cs, case_str(cs) + " on " + ctx->device().str());
  if (out) *out = got;
}

std::vector<Case> all_cases() {
  const int64_t shapes[][3] = {{1, 1, 1},    {7, 33, 100},  {257, 100, 33}, {33, 257, 7},  {100, 7, 257},
                               {1, 257, 100}, {257, 1, 33},  {64, 64, 64},   {6, 64, 2},    {13, 130, 769},
                               {1100, 65, 17}, {40, 3, 900}, {5, 300, 1}};
  const float ab[][2] = {{1.f, 0.f}, {0.5f, 0.f}, {1.f, 1.f}, {-2.f, 0.25f}};
  std::vector<Case> cases;
  int v = 0;
  for (DType in : {DType::F32, DType::BF16})
    for (DType out : {DType::F32, DType::BF16})
      for (int t = 0; t < 4; ++t)
        for (const auto& s : shapes) {
          const auto& p = ab[v % 4];
          cases.push_back(Case{s[0], s[1], s[2], (t & 1) != 0, (t & 2) != 0, in, out, p[0], p[1], (v % 3) != 0,
                               (v % 2) ? DType::BF16 : DType::F32});
          ++v;
        }
  return cases;
}

}  // namespace

QN_TEST(gemm_matches_f64_reference) {
  auto ctx = test_ctx();
  const std::vector<Case> cases = all_cases();
  for (size_t i = 0; i < cases.size(); ++i) run_case(ctx, cases[i], i);
}

QN_TEST(gemm_cpu_kernels_every_isa) {
  if (testing_cuda()) return;  // CPU kernels only
  const std::vector<Case> cases = all_cases();
  for (const char* isa : {"avx512", "avx2", "scalar"}) {
    cpu::gemm_impl::set_isa_limit(isa);
    for (size_t i = 0; i < cases.size(); i += 3) run_case(cpu_ctx(), cases[i], 1000 + i);
  }
  cpu::gemm_impl::set_isa_limit(nullptr);
}

#ifdef QN_WITH_CUDA
namespace qn {
namespace cuda {
void gemm_set_fallback_only(bool on);  // cuda/kernels/gemm.cu
}
}  // namespace qn
#endif

QN_TEST(gemm_cuda_fallback_kernels) {
  // The CUDA kernels used without cuBLASLt (WMMA bf16, fp32 tiles), against the f64 reference.
  if (!testing_cuda()) return;
#ifdef QN_WITH_CUDA
  qn::cuda::gemm_set_fallback_only(true);
  const std::vector<Case> cases = all_cases();
  for (size_t i = 0; i < cases.size(); i += 2) run_case(test_ctx(), cases[i], 3000 + i);
  qn::cuda::gemm_set_fallback_only(false);
#endif
}

QN_TEST(gemm_cuda_matches_cpu) {
  if (!testing_cuda()) return;
  // The same random inputs on both devices (salts equal), outputs compared with each other.
  const std::vector<Case> cases = all_cases();
  for (size_t i = 0; i < cases.size(); i += 5) {
    std::vector<float> on_cpu, on_gpu;
    run_case(cpu_ctx(), cases[i], 2000 + i, &on_cpu);
    run_case(test_ctx(), cases[i], 2000 + i, &on_gpu);
    const float rt = cases[i].out == DType::BF16 ? 1.f / 64 : 1e-4f;
    all_close(on_gpu, on_cpu, rt, 1e-4f, "cuda vs cpu: " + case_str(cases[i]));
  }
}

// The packers against the panel formats of gemm_driver.h, element by element: f32 and bf16
// sources (k-contiguous or not, ld wider than the rows), 6- and 64-row panels (the A and B panels
// of the 6 x 64 kernels), F32 and BF16Pair formats (f32 -> bf16 rounded as f32_to_bf16, bf16 ->
// f32 exact), partial panels, odd k counts and offsets, and pack_part's [k_begin, k_end) with a
// k shift (the [x | u] concatenations). Exact: packing only moves and converts values.
QN_TEST(gemm_packers_match_panel_format) {
  if (testing_cuda()) return;  // CPU packing only
  using namespace cpu::gemm_impl;
  uint64_t state = 12345;
  auto next = [&](uint64_t n) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<int64_t>((state >> 33) % n);
  };
  std::vector<float> f32src(200 * 300);
  std::vector<uint16_t> bf16src(f32src.size());
  for (size_t i = 0; i < f32src.size(); ++i) {
    f32src[i] = static_cast<float>(next(1u << 20)) / 4096.f - 128.f + static_cast<float>(i % 7) * 1e-3f;
    bf16src[i] = f32_to_bf16(f32src[i]);
  }
  f32src[5] = NAN;  // NaN stays NaN (quiet) through the conversions
  int checked = 0;
  for (int trial = 0; trial < 400; ++trial) {
    const bool src_f32 = next(2) == 0, kcontig = next(2) == 0, bf16_panel = next(2) == 0;
    const int R = next(2) == 0 ? 6 : 64;
    const int rows = next(3) == 0 ? 1 + static_cast<int>(next(R)) : R;
    Panel P;
    P.R = R;
    P.fmt = bf16_panel ? Format::BF16Pair : Format::F32;
    P.k0 = next(40);
    P.kc = 1 + static_cast<int>(next(120));
    P.kc_pad = bf16_panel ? (P.kc + 1) / 2 * 2 : P.kc;
    const int64_t r0 = next(8);
    // pack_part over [kb, ke) (absolute k), reading the source at k - shift.
    const bool part = next(2) == 0;
    int64_t kb = P.k0, ke = P.k0 + P.kc, shift = 0;
    if (part) {
      kb = P.k0 + next(P.kc);
      ke = kb + 1 + next(P.k0 + P.kc - kb);
      shift = next(P.k0 + 1);
    }
    const int64_t kmax = ke - shift, rmax = r0 + rows;  // source extents needed
    const int64_t ld = (kcontig ? kmax : rmax) + next(5);
    MatSrc src{src_f32 ? static_cast<const void*>(f32src.data()) : static_cast<const void*>(bf16src.data()),
               src_f32 ? DType::F32 : DType::BF16, ld, kcontig};
    if ((kcontig ? rmax * ld : kmax * ld) > static_cast<int64_t>(f32src.size())) continue;
    std::vector<uint8_t> got(P.bytes() + 64, 0xAB), want(P.bytes() + 64, 0xAB);
    if (part) {
      pack_part(src, r0, rows, P, kb, ke, shift, got.data());
    } else {
      pack(src, r0, rows, P, got.data());
    }
    // The reference: every element of the panel by the format's definition.
    for (int kk = 0; kk < P.kc_pad; ++kk)
      for (int i = 0; i < R; ++i) {
        const int64_t k = P.k0 + kk;
        const bool inside = i < rows && kk < P.kc && k >= kb && k < ke;
        const bool written = part ? inside : true;  // pack() also zeroes what is outside
        if (part && i >= rows && kk < P.kc && k >= kb && k < ke) {
          // pack_part may write zeros to rows past `rows` in its k range (the panel's zero rows).
          const size_t at = bf16_panel ? 2 * ((kk / 2) * 2 * R + 2 * i + (kk & 1)) : 4 * (kk * R + i);
          const size_t n = bf16_panel ? 2 : 4;
          bool zero = true;
          for (size_t q = 0; q < n; ++q) zero = zero && got[at + q] == 0;
          if (zero) std::memset(want.data() + at, 0, n);
        }
        if (!written) continue;
        float v = 0.f;
        if (inside) {
          const int64_t idx = kcontig ? (r0 + i) * ld + (k - shift) : (k - shift) * ld + (r0 + i);
          v = src_f32 ? f32src[static_cast<size_t>(idx)] : bf16_to_f32(bf16src[static_cast<size_t>(idx)]);
        }
        if (bf16_panel) {
          const uint16_t h = f32_to_bf16(v);
          std::memcpy(want.data() + 2 * ((kk / 2) * 2 * R + 2 * i + (kk & 1)), &h, 2);
        } else {
          std::memcpy(want.data() + 4 * (kk * R + i), &v, 4);
        }
      }
    if (got != want) {
      size_t at = 0;
      while (got[at] == want[at]) ++at;
      char b[300];
      std::snprintf(b, sizeof b,
                    "trial %d: src %s kcontig %d ld %lld, panel R %d %s k0 %lld kc %d, rows %d r0 %lld, part %d "
                    "[%lld, %lld) shift %lld: first differing byte %zu",
                    trial, src_f32 ? "f32" : "bf16", kcontig, (long long)ld, R, bf16_panel ? "bf16pair" : "f32",
                    (long long)P.k0, P.kc, rows, (long long)r0, part, (long long)kb, (long long)ke, (long long)shift, at);
      record_failure("gemm packers", b);
      return;
    }
    ++checked;
  }
  EXPECT_TRUE(checked > 250);
}

// An f32 C larger than the stream threshold (64 MB, the LM head's logits) goes out through
// non-temporal stores on the CPU: every element, the odd tail columns and the bias included.
QN_TEST(gemm_large_f32_output_streamed) {
  auto ctx = test_ctx();
  const int64_t m = 70, n = 245767, k = 3;  // C: 68.8 MB
  const std::vector<float> av = random_floats(m * k, -1, 1, 31), bv = random_floats(n * k, -1, 1, 32),
                           biasv = random_floats(n, -1, 1, 33);
  Tensor a = from_floats(ctx, DType::F32, {m, k}, av), b = from_floats(ctx, DType::F32, {n, k}, bv);
  Tensor bias = from_floats(ctx, DType::F32, {n}, biasv);
  Tensor c = poisoned(ctx, DType::F32, {m, n});
  gemm(*ctx, GemmArgs{a, b, c, false, true, 0.5f, 0.f, bias});
  const std::vector<float> got = to_floats(c);
  size_t bad = 0, first = 0;
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double ref = biasv[j], mag = std::fabs(biasv[j]);
      for (int64_t q = 0; q < k; ++q) {
        ref += 0.5 * double(av[i * k + q]) * bv[j * k + q];
        mag += std::fabs(0.5 * double(av[i * k + q]) * bv[j * k + q]);
      }
      if (!(std::fabs(got[i * n + j] - ref) <= 1e-6 * mag + 1e-30) && bad++ == 0) first = static_cast<size_t>(i * n + j);
    }
  if (bad) record_failure("gemm streamed f32 C", std::to_string(bad) + " wrong, first at " + std::to_string(first));
}

QN_TEST(gemm_leading_dims_and_k_zero) {
  auto ctx = test_ctx();
  // A 3-D a ([2, 3, 5] is a 6 x 5 matrix) times b [5, 4] into c [2, 3, 4].
  Tensor a = from_floats(ctx, DType::F32, {2, 3, 5}, random_floats(30, -1, 1, 7));
  Tensor b = from_floats(ctx, DType::F32, {5, 4}, random_floats(20, -1, 1, 8));
  Tensor c = poisoned(ctx, DType::F32, {2, 3, 4});
  gemm(*ctx, GemmArgs{a, b, c});
  const auto av = to_floats(a), bv = to_floats(b), cv = to_floats(c);
  std::vector<float> want(24);
  for (int i = 0; i < 6; ++i)
    for (int j = 0; j < 4; ++j) {
      double s = 0;
      for (int k = 0; k < 5; ++k) s += double(av[i * 5 + k]) * bv[k * 4 + j];
      want[i * 4 + j] = static_cast<float>(s);
    }
  all_close(cv, want, 1e-5f, 1e-6f, "gemm 3-D a");
  // K = 0: C = beta * C + bias.
  Tensor a0 = Tensor::empty(ctx, DType::F32, {3, 0});
  Tensor b0 = Tensor::empty(ctx, DType::F32, {0, 2});
  Tensor c0 = from_floats(ctx, DType::F32, {3, 2}, {1, 2, 3, 4, 5, 6});
  Tensor bias = from_floats(ctx, DType::F32, {2}, {10, 20});
  gemm(*ctx, GemmArgs{a0, b0, c0, false, false, 1.f, 2.f, bias});
  all_close(to_floats(c0), {12, 24, 16, 28, 20, 32}, 0, 0, "gemm k=0");
}

QN_TEST(gemm_rejects_bad_args) {
  auto ctx = test_ctx();
  Tensor a = Tensor::empty(ctx, DType::F32, {4, 5});
  Tensor b = Tensor::empty(ctx, DType::F32, {6, 3});
  Tensor c = Tensor::empty(ctx, DType::F32, {4, 3});
  EXPECT_THROWS_CODE(gemm(*ctx, GemmArgs{a, b, c}), Shape);                    // K 5 vs 6
  Tensor b2 = Tensor::empty(ctx, DType::F32, {5, 3});
  Tensor c2 = Tensor::empty(ctx, DType::F32, {4, 4});
  EXPECT_THROWS_CODE(gemm(*ctx, GemmArgs{a, b2, c2}), Shape);                  // C shape
  Tensor bh = Tensor::empty(ctx, DType::BF16, {5, 3});
  EXPECT_THROWS_CODE(gemm(*ctx, GemmArgs{a, bh, c}), DType);                   // mixed inputs
  Tensor ci = Tensor::empty(ctx, DType::I32, {4, 3});
  EXPECT_THROWS_CODE(gemm(*ctx, GemmArgs{a, b2, ci}), DType);                  // int C
  Tensor bias = Tensor::empty(ctx, DType::F32, {4});
  EXPECT_THROWS_CODE(gemm(*ctx, GemmArgs{a, b2, c, false, false, 1.f, 0.f, bias}), Shape);
  Tensor sq = Tensor::empty(ctx, DType::F32, {4, 4});
  EXPECT_THROWS_CODE(gemm(*ctx, GemmArgs{sq, sq, sq}), Arg);                   // c aliases a
  EXPECT_THROWS_CODE(gemm(*ctx, GemmArgs{a, Tensor(), c}), Arg);               // missing b
  try {
    gemm(*ctx, GemmArgs{a, b, c});
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_TRUE(m.find("gemm: inner dimensions differ") != std::string::npos);
  }
  if (testing_cuda()) {
    Tensor h = Tensor::empty(cpu_ctx(), DType::F32, {5, 3});
    EXPECT_THROWS_CODE(gemm(*ctx, GemmArgs{a, h, c}), Device);
  }
}
