// Attention: forward (out, lse) and backward (dq, dk, dv) against a float64 loop over the full
// score matrix (transformers' eager attention: repeat_kv, scale, causal + key padding mask,
// softmax, P V), whose gradient is itself checked by central differences; head_dim 16/64/128 and
// odd ones, GQA ratios 1/2/4/8, T not a multiple of the tiles, left/right padding with i32 and u8
// masks, non-causal, fully masked rows (out 0, lse -inf, zero gradients, no NaN), bf16 against
// the f32 path, bad arguments; on CUDA against the CPU (outputs poisoned first).
#include <cmath>
#include "cpu/float_rows.h"
#include "harness.h"
#include "qn/ops/attention.h"

using namespace qn;
using namespace qnt;

namespace {

struct Shape5 {
  int64_t b, t, hq, hkv, d;
};

struct Inputs {
  Shape5 s;
  std::vector<float> q, k, v, dout;
  std::vector<int32_t> mask;  // empty: no mask
  bool causal = true;
};

// Padding: row 0 none, row 1 right-padded, row 2 left-padded, then alternating (when pad > 0).
Inputs make_inputs(Shape5 s, int pad, bool causal, uint64_t salt, bool bf16_exact = false) {
  Inputs in{s};
  in.causal = causal;
  in.q = random_floats(s.b * s.t * s.hq * s.d, -1.5f, 1.5f, salt);
  in.k = random_floats(s.b * s.t * s.hkv * s.d, -1.5f, 1.5f, salt + 1);
  in.v = random_floats(s.b * s.t * s.hkv * s.d, -1, 1, salt + 2);
  in.dout = random_floats(s.b * s.t * s.hq * s.d, -1, 1, salt + 3);
  if (bf16_exact)
    for (auto* vec : {&in.q, &in.k, &in.v, &in.dout})
      for (auto& x : *vec) x = bf16_to_f32(f32_to_bf16(x));
  if (pad > 0) {
    in.mask.assign(s.b * s.t, 1);
    for (int64_t b = 1; b < s.b; ++b)
      for (int64_t j = 0; j < std::min<int64_t>(pad, s.t); ++j) {
        if (b % 2 == 1) in.mask[b * s.t + s.t - 1 - j] = 0;  // right padding
        else in.mask[b * s.t + j] = 0;                       // left padding
      }
  }
  return in;
}

struct Result {
  std::vector<float> out, lse, dq, dk, dv;
};

bool allowed(const Inputs& in, int64_t b, int64_t i, int64_t j) {
  return (!in.causal || j <= i) && (in.mask.empty() || in.mask[b * in.s.t + j] != 0);
}

// float64 reference over the full score matrix.
Result reference(const Inputs& in) {
  const Shape5 s = in.s;
  const int64_t g = s.hq / s.hkv;
  const double scale = 1 / std::sqrt((double)s.d);
  Result r;
  r.out.assign(in.q.size(), 0);
  r.dq.assign(in.q.size(), 0);
  r.lse.assign(s.b * s.hq * s.t, -INFINITY);
  std::vector<double> dk(in.k.size(), 0), dv(in.v.size(), 0);
  auto qi = [&](int64_t b, int64_t i, int64_t h) { return ((b * s.t + i) * s.hq + h) * s.d; };
  auto ki = [&](int64_t b, int64_t j, int64_t h) { return ((b * s.t + j) * s.hkv + h) * s.d; };
  std::vector<double> p(s.t), dp(s.t);
  for (int64_t b = 0; b < s.b; ++b)
    for (int64_t h = 0; h < s.hq; ++h)
      for (int64_t i = 0; i < s.t; ++i) {
        const int64_t kh = h / g;
        double m = -INFINITY;
        for (int64_t j = 0; j < s.t; ++j) {
          p[j] = -INFINITY;
          if (!allowed(in, b, i, j)) continue;
          double dot = 0;
          for (int64_t e = 0; e < s.d; ++e) dot += (double)in.q[qi(b, i, h) + e] * in.k[ki(b, j, kh) + e];
          p[j] = dot * scale;
          m = std::max(m, p[j]);
        }
        if (m == -INFINITY) continue;  // fully masked: out 0, lse -inf, no gradient
        double sum = 0;
        for (int64_t j = 0; j < s.t; ++j) sum += p[j] == -INFINITY ? 0 : std::exp(p[j] - m);
        const double lse = m + std::log(sum);
        r.lse[(b * s.hq + h) * s.t + i] = (float)lse;
        double delta = 0;
        std::vector<double> o(s.d, 0);
        for (int64_t j = 0; j < s.t; ++j) {
          p[j] = p[j] == -INFINITY ? 0 : std::exp(p[j] - lse);
          for (int64_t e = 0; e < s.d; ++e) o[e] += p[j] * in.v[ki(b, j, kh) + e];
        }
        for (int64_t e = 0; e < s.d; ++e) {
          r.out[qi(b, i, h) + e] = (float)o[e];
          delta += o[e] * in.dout[qi(b, i, h) + e];
        }
        for (int64_t j = 0; j < s.t; ++j) {
          if (p[j] == 0) continue;
          double d = 0;
          for (int64_t e = 0; e < s.d; ++e) d += (double)in.dout[qi(b, i, h) + e] * in.v[ki(b, j, kh) + e];
          const double ds = p[j] * (d - delta) * scale;
          for (int64_t e = 0; e < s.d; ++e) {
            dv[ki(b, j, kh) + e] += p[j] * in.dout[qi(b, i, h) + e];
            dk[ki(b, j, kh) + e] += ds * in.q[qi(b, i, h) + e];
            r.dq[qi(b, i, h) + e] += (float)(ds * in.k[ki(b, j, kh) + e]);
          }
        }
      }
  r.dk.assign(dk.begin(), dk.end());
  r.dv.assign(dv.begin(), dv.end());
  return r;
}

Result run(const std::shared_ptr<Context>& ctx, const Inputs& in, DType dt, bool backward, DType mask_dt = DType::I32) {
  const Shape5 s = in.s;
  const Shape qs{s.b, s.t, s.hq, s.d}, ks{s.b, s.t, s.hkv, s.d};
  Tensor q = from_floats(ctx, dt, qs, in.q), k = from_floats(ctx, dt, ks, in.k), v = from_floats(ctx, dt, ks, in.v);
  Tensor mask;
  if (!in.mask.empty()) mask = from_floats(ctx, mask_dt, {s.b, s.t}, std::vector<float>(in.mask.begin(), in.mask.end()));
  Tensor out = poisoned(ctx, dt, qs), lse = poisoned(ctx, DType::F32, {s.b, s.hq, s.t});
  attention_forward(*ctx, AttentionForwardArgs{q, k, v, mask, out, lse, 0.f, in.causal});
  Result r{to_floats(out), to_floats(lse)};
  if (!backward) return r;
  Tensor dout = from_floats(ctx, dt, qs, in.dout);
  Tensor dq = poisoned(ctx, dt, qs), dk = poisoned(ctx, dt, ks), dv = poisoned(ctx, dt, ks);
  attention_backward(*ctx, AttentionBackwardArgs{q, k, v, mask, out, lse, dout, dq, dk, dv, 0.f, in.causal});
  r.dq = to_floats(dq);
  r.dk = to_floats(dk);
  r.dv = to_floats(dv);
  return r;
}

float max_abs(const std::vector<float>& v) {
  float m = 0;
  for (float x : v) m = std::max(m, std::fabs(x));
  return m;
}

std::string name_of(const Shape5& s, const char* what) {
  return std::string("attention ") + what + " B" + std::to_string(s.b) + " T" + std::to_string(s.t) + " Hq" +
         std::to_string(s.hq) + " Hkv" + std::to_string(s.hkv) + " D" + std::to_string(s.d);
}

// Compares a result with another: out/lse always, gradients when both have them. Tolerances are
// relative to the largest magnitude of each tensor, at least 0.05 (f32 reductions over T and D
// terms; a T = 1 gradient is 0 up to rounding).
void compare(const Result& a, const Result& b, float rel, const std::string& w) {
  all_close(a.out, b.out, 0, rel * std::max(max_abs(b.out), 0.05f), w + " out");
  all_close(a.lse, b.lse, rel, rel, w + " lse");
  if (a.dq.empty() || b.dq.empty()) return;
  all_close(a.dq, b.dq, 0, rel * std::max(max_abs(b.dq), 0.05f), w + " dq");
  all_close(a.dk, b.dk, 0, rel * std::max(max_abs(b.dk), 0.05f), w + " dk");
  all_close(a.dv, b.dv, 0, rel * std::max(max_abs(b.dv), 0.05f), w + " dv");
}

}  // namespace

QN_TEST(attention_gradient_finite_differences) {
  // The float64 reference's gradients, and the CPU op's, against central differences of the
  // float64 forward, L = sum(dout * out), on a small padded GQA case.
  Inputs in = make_inputs({3, 5, 4, 2, 16}, 2, true, 11);
  Result r = reference(in);
  auto loss = [&](const Inputs& x) {
    Result o = reference(x);
    double l = 0;
    for (size_t i = 0; i < o.out.size(); ++i) l += (double)o.out[i] * x.dout[i];
    return l;
  };
  // The reference stores f32: perturbations of 1/128 make the quotient error ~1e-5 from the
  // f32 output rounding and ~1e-5 from truncation. The op's own gradients (f32, on the CPU) are
  // held to the same bound against the same quotients.
  const Result op = run(cpu_ctx(), in, DType::F32, true);
  double worst = 0, worst_op = 0;
  for (int which = 0; which < 3; ++which) {
    std::vector<float>& x = which == 0 ? in.q : which == 1 ? in.k : in.v;
    const std::vector<float>& g = which == 0 ? r.dq : which == 1 ? r.dk : r.dv;
    const std::vector<float>& go = which == 0 ? op.dq : which == 1 ? op.dk : op.dv;
    for (size_t i = 0; i < x.size(); i += 13) {
      const float x0 = x[i];
      x[i] = x0 + 1.f / 128;
      const double lp = loss(in);
      x[i] = x0 - 1.f / 128;
      const double lm = loss(in);
      x[i] = x0;
      worst = std::max(worst, std::fabs((lp - lm) * 64 - g[i]));
      worst_op = std::max(worst_op, std::fabs((lp - lm) * 64 - go[i]));
    }
  }
  EXPECT_TRUE(worst < 1e-3);
  EXPECT_TRUE(worst_op < 1e-3);
}

QN_TEST(attention_f32_matches_f64) {
  struct Case { Shape5 s; int pad; bool causal; };
  const Case cases[] = {
      {{1, 1, 1, 1, 16}, 0, true},    {{3, 7, 4, 2, 16}, 3, true},    {{2, 65, 8, 1, 64}, 5, true},
      {{3, 130, 4, 4, 128}, 70, true}, {{1, 100, 8, 2, 128}, 0, false}, {{3, 33, 4, 1, 24}, 4, false},
      {{2, 64, 16, 2, 128}, 0, true},  {{1, 129, 2, 2, 3}, 0, true},
  };
  for (const Case& c : cases) {
    Inputs in = make_inputs(c.s, c.pad, c.causal, 20 + c.s.t);
    Result ref = reference(in);
    // Head dims 24 and 3 exist on the CPU only (CUDA: 16, 32, 64, 80, 96, 128).
    const bool cuda_dim = c.s.d % 16 == 0 && c.s.d <= 128 && c.s.d != 48 && c.s.d != 112;
    Result got = run(cuda_dim ? test_ctx() : cpu_ctx(), in, DType::F32, true);
    // f32 sums of up to T*D products and an exp good to ~2 ulps: 2e-5 of the tensor's scale.
    compare(got, ref, 2e-5f, name_of(c.s, c.causal ? "f32" : "f32 non-causal"));
  }
}

QN_TEST(attention_long_sequence_cpu_tiles) {
  Inputs in = make_inputs({1, 1000, 2, 1, 64}, 0, true, 40);
  Result ref = reference(in);
  compare(run(test_ctx(), in, DType::F32, true), ref, 2e-5f, name_of(in.s, "long"));
}

QN_TEST(attention_fully_masked_rows) {
  // Row 2 is left-padded by 6: its queries 0..5 see no key. u8 mask.
  Inputs in = make_inputs({3, 20, 4, 2, 16}, 6, true, 50);
  for (DType dt : {DType::F32, DType::BF16}) {
    Result got = run(test_ctx(), in, dt, true, DType::U8);
    for (const auto* v : {&got.out, &got.dq, &got.dk, &got.dv})
      for (float x : *v) EXPECT_TRUE(std::isfinite(x));
    const Shape5 s = in.s;
    for (int64_t i = 0; i < 6; ++i)
      for (int64_t h = 0; h < s.hq; ++h) {
        const int64_t o = ((2 * s.t + i) * s.hq + h) * s.d;
        for (int64_t e = 0; e < s.d; ++e) {
          EXPECT_EQ(got.out[o + e], 0.f);
          EXPECT_EQ(got.dq[o + e], 0.f);
        }
        EXPECT_TRUE(got.lse[(2 * s.hq + h) * s.t + i] == -INFINITY);
      }
    // Padded keys get no gradient (nobody attends to them), left and right padding.
    for (int64_t bj : {int64_t(1 * s.t + s.t - 1), int64_t(2 * s.t + 0)})
      for (int64_t e = 0; e < s.hkv * s.d; ++e) {
        EXPECT_EQ(got.dk[bj * s.hkv * s.d + e], 0.f);
        EXPECT_EQ(got.dv[bj * s.hkv * s.d + e], 0.f);
      }
    if (dt == DType::F32) compare(got, reference(in), 2e-5f, "attention fully masked rows");
  }
}

QN_TEST(attention_bf16_vs_f32) {
  for (Shape5 s : {Shape5{2, 77, 8, 2, 64}, Shape5{1, 150, 4, 1, 128}, Shape5{2, 40, 2, 2, 16}, Shape5{1, 70, 4, 2, 48},
                   Shape5{1, 33, 2, 1, 112}}) {  // d = 48, 112: 3 vectors in the tile kernels' last column block
    Inputs in = make_inputs(s, 9, true, 60 + s.d, true);
    // d = 48 and 112 exist on the CPU only (CUDA: 16, 32, 64, 80, 96, 128).
    const bool cuda_dim = s.d != 48 && s.d != 112;
    const auto& ctx = cuda_dim ? test_ctx() : cpu_ctx();
    Result f = run(ctx, in, DType::F32, true), b = run(ctx, in, DType::BF16, true);
    // Same (bf16-exact) inputs, f32 math inside: outputs rounded once to bf16 (2^-8 relative to
    // each value); on the GPU P is also rounded to bf16 before P V and dS before dS K / dS^T Q
    // (another 2^-8 on each term, partly averaging out): 2^-7 of the tensor's scale covers both.
    compare(b, f, 1.f / 128, name_of(s, "bf16 vs f32"));
  }
}

QN_TEST(attention_cuda_matches_cpu) {
  if (!testing_cuda()) return;
  struct Case { Shape5 s; int pad; bool causal; };
  const Case cases[] = {
      {{1, 1, 1, 1, 16}, 0, true},     {{3, 37, 4, 2, 16}, 5, true},    {{2, 300, 8, 1, 64}, 33, true},
      {{2, 200, 8, 8, 128}, 70, true}, {{1, 257, 16, 2, 128}, 0, true}, {{2, 100, 4, 4, 32}, 3, false},
      {{1, 90, 4, 2, 80}, 0, true},    {{1, 190, 8, 4, 96}, 10, true},  {{2, 64, 4, 1, 64}, 0, false},
  };
  for (const Case& c : cases)
    for (DType dt : {DType::F32, DType::BF16}) {
      Inputs in = make_inputs(c.s, c.pad, c.causal, 80 + c.s.t + c.s.d, dt == DType::BF16);
      Result a = run(test_ctx(), in, dt, true), b = run(cpu_ctx(), in, dt, true);
      // f32: both f32 with different summation orders. bf16: twice the bf16-vs-f32 bound.
      compare(a, b, dt == DType::F32 ? 2e-5f : 2.f / 128, name_of(c.s, dt == DType::F32 ? "cuda vs cpu f32" : "cuda vs cpu bf16"));
    }
}

QN_TEST(attention_cpu_simd_levels) {
  // The AVX2 and baseline clones (this machine may run AVX-512 by default) against the reference.
  Inputs in = make_inputs({2, 70, 4, 2, 40}, 5, true, 90);
  const Result ref = reference(in);
  for (auto level : {cpu::xf::Isa::Scalar, cpu::xf::Isa::Avx2}) {
    cpu::xf::isa_cap() = static_cast<int>(level);
    compare(run(cpu_ctx(), in, DType::F32, true), ref, 2e-5f, level == cpu::xf::Isa::Avx2 ? "attention avx2" : "attention scalar");
  }
  cpu::xf::isa_cap() = static_cast<int>(cpu::xf::Isa::Avx512);
}

#ifdef QN_WITH_CUDA
namespace qn {
namespace cuda {
void attention_set_cuda_core_only(bool on);  // cuda/kernels/attention.cu
}
}  // namespace qn
#endif

QN_TEST(attention_cuda_core_kernels_bf16) {
  // bf16 on the CUDA-core kernels (the tensor-core ones take bf16 by default) against the CPU.
  if (!testing_cuda()) return;
#ifdef QN_WITH_CUDA
  qn::cuda::attention_set_cuda_core_only(true);
  for (Shape5 s : {Shape5{2, 100, 8, 2, 64}, Shape5{1, 77, 4, 1, 128}, Shape5{2, 33, 2, 2, 16}}) {
    Inputs in = make_inputs(s, 7, true, 95 + s.d, true);
    compare(run(test_ctx(), in, DType::BF16, true), run(cpu_ctx(), in, DType::BF16, true), 2.f / 128,
            name_of(s, "cuda-core bf16 vs cpu"));
  }
  qn::cuda::attention_set_cuda_core_only(false);
#endif
}

QN_TEST(attention_rejects_bad_args) {
  auto ctx = test_ctx();
  Tensor q = Tensor::empty(ctx, DType::F32, {2, 8, 4, 16}), k = Tensor::empty(ctx, DType::F32, {2, 8, 2, 16});
  Tensor o = Tensor::empty(ctx, DType::F32, {2, 8, 4, 16}), lse = Tensor::empty(ctx, DType::F32, {2, 4, 8});
  EXPECT_THROWS_CODE(attention_forward(*ctx, AttentionForwardArgs{q, Tensor::empty(ctx, DType::F32, {2, 8, 3, 16}), k, Tensor(), o, lse}), Shape);
  EXPECT_THROWS_CODE(attention_forward(*ctx, AttentionForwardArgs{q, k, Tensor::empty(ctx, DType::F32, {2, 7, 2, 16}), Tensor(), o, lse}), Shape);
  EXPECT_THROWS_CODE(attention_forward(*ctx, AttentionForwardArgs{q, k, k, Tensor::empty(ctx, DType::I32, {2, 9}), o, lse}), Shape);
  EXPECT_THROWS_CODE(attention_forward(*ctx, AttentionForwardArgs{q, k, k, Tensor::empty(ctx, DType::F32, {2, 8}), o, lse}), DType);
  EXPECT_THROWS_CODE(attention_forward(*ctx, AttentionForwardArgs{q, Tensor::empty(ctx, DType::BF16, {2, 8, 2, 16}), k, Tensor(), o, lse}), DType);
  EXPECT_THROWS_CODE(attention_forward(*ctx, AttentionForwardArgs{q, k, k, Tensor(), o, Tensor::empty(ctx, DType::F32, {2, 8, 4})}), Shape);
  EXPECT_THROWS_CODE(attention_backward(*ctx, AttentionBackwardArgs{q, k, k, Tensor(), o, lse, o, o, o, k}), Shape);
  if (testing_cuda()) {  // head dims without a CUDA kernel
    Tensor q3 = Tensor::empty(ctx, DType::F32, {1, 4, 2, 24}), k3 = Tensor::empty(ctx, DType::F32, {1, 4, 1, 24});
    EXPECT_THROWS_CODE(attention_forward(*ctx, AttentionForwardArgs{q3, k3, k3, Tensor(), q3}), Arg);
  }
  if (testing_cuda()) EXPECT_THROWS_CODE(attention_forward(*ctx, AttentionForwardArgs{q, k, k, Tensor(), Tensor::empty(cpu_ctx(), DType::F32, {2, 8, 4, 16}), lse}), Device);
}
