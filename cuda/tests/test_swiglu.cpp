// SwiGLU: forward and backward against float64 loops (the backward formula itself checked by
// central differences of the float64 forward), bf16 storage against the f32 path, in-place
// aliasing, bad arguments; on CUDA against the CPU.
#include <cmath>
#include "harness.h"
#include "qn/ops/swiglu.h"

using namespace qn;
using namespace qnt;

namespace {

double silu(double g) { return g / (1 + std::exp(-g)); }

struct Grads {
  std::vector<float> dg, du;
};
Grads ref_backward(const std::vector<float>& g, const std::vector<float>& u, const std::vector<float>& dh) {
  Grads r{std::vector<float>(g.size()), std::vector<float>(g.size())};
  for (size_t i = 0; i < g.size(); ++i) {
    const double s = 1 / (1 + std::exp(-(double)g[i]));
    r.dg[i] = (float)(dh[i] * u[i] * s * (1 + g[i] * (1 - s)));
    r.du[i] = (float)(dh[i] * g[i] * s);
  }
  return r;
}

std::vector<float> run_fwd(const std::shared_ptr<Context>& ctx, DType dt, const std::vector<float>& g,
                           const std::vector<float>& u) {
  const int64_t n = (int64_t)g.size();
  Tensor tg = from_floats(ctx, dt, {n}, g), tu = from_floats(ctx, dt, {n}, u), th = poisoned(ctx, dt, {n});
  swiglu_forward(*ctx, SwigluForwardArgs{tg, tu, th});
  return to_floats(th);
}

Grads run_bwd(const std::shared_ptr<Context>& ctx, DType dt, const std::vector<float>& g, const std::vector<float>& u,
              const std::vector<float>& dh) {
  const int64_t n = (int64_t)g.size();
  Tensor tg = from_floats(ctx, dt, {n}, g), tu = from_floats(ctx, dt, {n}, u), td = from_floats(ctx, dt, {n}, dh);
  Tensor dg = poisoned(ctx, dt, {n}), du = poisoned(ctx, dt, {n});
  swiglu_backward(*ctx, SwigluBackwardArgs{tg, tu, td, dg, du});
  return {to_floats(dg), to_floats(du)};
}

std::vector<float> bf16_round(std::vector<float> v) {
  for (auto& x : v) x = bf16_to_f32(f32_to_bf16(x));
  return v;
}

}  // namespace

QN_TEST(swiglu_forward_backward_match_f64) {
  const int64_t n = 10007;
  auto g = random_floats(n, -12, 12, 1), u = random_floats(n, -2, 2, 2), dh = random_floats(n, -1, 1, 3);
  g[0] = -100.f, g[1] = 100.f, g[2] = 0.f;  // exp saturation on both sides
  std::vector<float> want(n);
  for (int64_t i = 0; i < n; ++i) want[i] = (float)(silu(g[i]) * u[i]);
  // f32 with an exp good to ~2 ulps: a few ulps of each result.
  all_close(run_fwd(test_ctx(), DType::F32, g, u), want, 2e-6f, 1e-7f, "swiglu h f32");
  Grads r = ref_backward(g, u, dh), got = run_bwd(test_ctx(), DType::F32, g, u, dh);
  all_close(got.dg, r.dg, 4e-6f, 1e-7f, "swiglu dgate f32");
  all_close(got.du, r.du, 2e-6f, 1e-7f, "swiglu dup f32");
  // The closed form against central differences of the float64 forward L = sum(dh * h).
  double worst = 0;
  for (int64_t i = 3; i < n; i += 101) {
    const double e = 1e-6;
    const double fdg = (silu(g[i] + e) - silu(g[i] - e)) * u[i] * dh[i] / (2 * e);
    const double fdu = silu(g[i]) * dh[i];  // linear in u: exact
    worst = std::max({worst, std::fabs(fdg - r.dg[i]) / (1 + std::fabs(fdg)), std::fabs(fdu - r.du[i])});
  }
  EXPECT_TRUE(worst < 1e-6);
}

QN_TEST(swiglu_bf16_vs_f32_and_in_place) {
  const int64_t n = 4099;
  auto g = bf16_round(random_floats(n, -6, 6, 4)), u = bf16_round(random_floats(n, -2, 2, 5));
  auto dh = bf16_round(random_floats(n, -1, 1, 6));
  // One bf16 rounding of the f32 result: 2^-8 relative (plus the f32 path's few ulps).
  all_close(run_fwd(test_ctx(), DType::BF16, g, u), run_fwd(test_ctx(), DType::F32, g, u), 1.f / 256, 1e-30f, "swiglu h bf16");
  Grads a = run_bwd(test_ctx(), DType::BF16, g, u, dh), b = run_bwd(test_ctx(), DType::F32, g, u, dh);
  all_close(a.dg, b.dg, 1.f / 256, 1e-30f, "swiglu dgate bf16");
  all_close(a.du, b.du, 1.f / 256, 1e-30f, "swiglu dup bf16");
  // In place: h over gate, dgate over gate and dup over up; mixed dtypes (bf16 in, f32 out).
  auto ctx = test_ctx();
  Tensor tg = from_floats(ctx, DType::BF16, {n}, g), tu = from_floats(ctx, DType::BF16, {n}, u);
  Tensor td = from_floats(ctx, DType::BF16, {n}, dh);
  swiglu_backward(*ctx, SwigluBackwardArgs{tg, tu, td, tg, tu});
  all_close(to_floats(tg), a.dg, 0, 0, "swiglu dgate in place");
  all_close(to_floats(tu), a.du, 0, 0, "swiglu dup in place");
  Tensor tg2 = from_floats(ctx, DType::BF16, {n}, g), tu2 = from_floats(ctx, DType::BF16, {n}, u);
  Tensor th = poisoned(ctx, DType::F32, {n});
  swiglu_forward(*ctx, SwigluForwardArgs{tg2, tu2, th});
  all_close(to_floats(th), run_fwd(test_ctx(), DType::F32, g, u), 0, 0, "swiglu bf16 in, f32 out");
  swiglu_forward(*ctx, SwigluForwardArgs{tg2, tu2, tg2});
  all_close(to_floats(tg2), run_fwd(test_ctx(), DType::BF16, g, u), 0, 0, "swiglu h in place");
}

QN_TEST(swiglu_cuda_matches_cpu) {
  if (!testing_cuda()) return;
  const int64_t n = 3 * 11008 + 5;
  auto g = random_floats(n, -8, 8, 7), u = random_floats(n, -2, 2, 8), dh = random_floats(n, -1, 1, 9);
  for (DType dt : {DType::F32, DType::BF16}) {
    const float tol = dt == DType::F32 ? 4e-6f : 1.f / 128;  // bf16: a one-ulp flip either way
    all_close(run_fwd(test_ctx(), dt, g, u), run_fwd(cpu_ctx(), dt, g, u), tol, 1e-7f, "swiglu h cuda vs cpu");
    Grads a = run_bwd(test_ctx(), dt, g, u, dh), b = run_bwd(cpu_ctx(), dt, g, u, dh);
    all_close(a.dg, b.dg, tol, 1e-7f, "swiglu dgate cuda vs cpu");
    all_close(a.du, b.du, tol, 1e-7f, "swiglu dup cuda vs cpu");
  }
}

QN_TEST(swiglu_rejects_bad_args) {
  auto ctx = test_ctx();
  Tensor a = Tensor::empty(ctx, DType::F32, {4, 8}), b = Tensor::empty(ctx, DType::F32, {4, 8});
  EXPECT_THROWS_CODE(swiglu_forward(*ctx, SwigluForwardArgs{a, b, Tensor::empty(ctx, DType::F32, {4, 7})}), Shape);
  EXPECT_THROWS_CODE(swiglu_forward(*ctx, SwigluForwardArgs{a, Tensor::empty(ctx, DType::F16, {4, 8}), b}), DType);
  EXPECT_THROWS_CODE(swiglu_backward(*ctx, SwigluBackwardArgs{a, b, a, b, Tensor::empty(ctx, DType::F32, {3})}), Shape);
  if (testing_cuda()) EXPECT_THROWS_CODE(swiglu_forward(*ctx, SwigluForwardArgs{a, b, Tensor::empty(cpu_ctx(), DType::F32, {4, 8})}), Device);
}
