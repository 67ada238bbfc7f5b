// RMSNorm: forward against a float64 loop (f32 path) and against the transformers bf16 order
// (cast before the weight multiply); backward against the float64 analytic gradient, which is
// itself checked by central differences of the float64 forward; dweight and accumulate_dx; bad
// arguments; on CUDA everything against the CPU (outputs poisoned first).
#include <cmath>
#include "harness.h"
#include "qn/ops/rmsnorm.h"

using namespace qn;
using namespace qnt;

namespace {

std::vector<float> bf16_round(std::vector<float> v) {
  for (auto& x : v) x = bf16_to_f32(f32_to_bf16(x));
  return v;
}

// y = w * x / sqrt(mean(x^2) + eps) in float64; rstd too.
void ref_forward(const std::vector<float>& x, const std::vector<float>& w, int64_t n, int64_t h, double eps,
                 std::vector<double>* y, std::vector<double>* rstd) {
  y->assign(x.size(), 0);
  rstd->assign(n, 0);
  for (int64_t r = 0; r < n; ++r) {
    double ss = 0;
    for (int64_t j = 0; j < h; ++j) ss += (double)x[r * h + j] * x[r * h + j];
    const double rs = 1 / std::sqrt(ss / h + eps);
    (*rstd)[r] = rs;
    for (int64_t j = 0; j < h; ++j) (*y)[r * h + j] = (double)w[j] * x[r * h + j] * rs;
  }
}

// dx for loss = sum(G * y) in float64 (closed form).
std::vector<double> ref_dx(const std::vector<float>& x, const std::vector<float>& w, const std::vector<float>& g,
                           int64_t n, int64_t h, double eps) {
  std::vector<double> dx(x.size());
  for (int64_t r = 0; r < n; ++r) {
    double ss = 0, dot = 0;
    for (int64_t j = 0; j < h; ++j) ss += (double)x[r * h + j] * x[r * h + j];
    const double rs = 1 / std::sqrt(ss / h + eps);
    for (int64_t j = 0; j < h; ++j) dot += (double)g[r * h + j] * w[j] * x[r * h + j];
    for (int64_t j = 0; j < h; ++j)
      dx[r * h + j] = rs * g[r * h + j] * w[j] - x[r * h + j] * rs * rs * rs * dot / h;
  }
  return dx;
}

std::vector<float> to_f(const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); }

struct FwdOut {
  std::vector<float> y, rstd;
};
FwdOut run_forward(const std::shared_ptr<Context>& ctx, DType xt, DType wt, DType yt, const std::vector<float>& x,
                   const std::vector<float>& w, int64_t n, int64_t h, float eps) {
  Tensor tx = from_floats(ctx, xt, {n, h}, x), tw = from_floats(ctx, wt, {h}, w);
  Tensor ty = poisoned(ctx, yt, {n, h}), tr = poisoned(ctx, DType::F32, {n});
  rmsnorm_forward(*ctx, RmsNormForwardArgs{tx, tw, ty, tr, eps});
  return {to_floats(ty), to_floats(tr)};
}

}  // namespace

QN_TEST(rmsnorm_forward_f32_matches_f64) {
  for (int64_t h : {1, 16, 97, 2048}) {
    const int64_t n = 37;
    auto x = random_floats(n * h, -3, 3, 1 + h), w = random_floats(h, 0.5f, 1.5f, 2 + h);
    std::vector<double> y, rs;
    ref_forward(x, w, n, h, 1e-6, &y, &rs);
    FwdOut o = run_forward(test_ctx(), DType::F32, DType::F32, DType::F32, x, w, n, h, 1e-6f);
    // f32: a sum of h squares and a few products, each within a few ulps.
    all_close(o.y, to_f(y), 2e-6f, 1e-6f, "rmsnorm y f32 h=" + std::to_string(h));
    all_close(o.rstd, to_f(rs), 2e-6f, 0, "rmsnorm rstd h=" + std::to_string(h));
  }
}

QN_TEST(rmsnorm_forward_bf16_transformers_order) {
  const int64_t n = 29, h = 320;
  auto x = bf16_round(random_floats(n * h, -4, 4, 3)), w = bf16_round(random_floats(h, 0.5f, 1.5f, 4));
  std::vector<double> y, rs;
  ref_forward(x, w, n, h, 1e-6, &y, &rs);
  // transformers: n = bf16(x * rstd), y = bf16(w * n).
  std::vector<float> want(x.size());
  for (int64_t r = 0; r < n; ++r)
    for (int64_t j = 0; j < h; ++j) {
      const float nv = bf16_to_f32(f32_to_bf16((float)(x[r * h + j] * rs[r])));
      want[r * h + j] = bf16_to_f32(f32_to_bf16(w[j] * nv));
    }
  FwdOut o = run_forward(test_ctx(), DType::BF16, DType::BF16, DType::BF16, x, w, n, h, 1e-6f);
  // Equal except where the f32 rstd (a few ulps off the f64 one) moves x * rstd across a bf16
  // rounding boundary: n then differs by one bf16 ulp (<= 2^-7 relative), which carries through
  // w * n and can move y's own rounding by one more half ulp: 3 * 2^-8 relative.
  all_close(o.y, want, 3.f / 256, 0, "rmsnorm y bf16 vs transformers order");
  // bf16 against the f32 path on the same (bf16-exact) inputs: two bf16 roundings, 2^-8 each.
  FwdOut f = run_forward(test_ctx(), DType::F32, DType::F32, DType::F32, x, w, n, h, 1e-6f);
  all_close(o.y, f.y, 2.f / 256, 1e-30f, "rmsnorm y bf16 vs f32");
  // Mixed: bf16 x with f32 weight and f32 output (one rounding of n).
  FwdOut m = run_forward(test_ctx(), DType::BF16, DType::F32, DType::F32, x, w, n, h, 1e-6f);
  all_close(m.y, f.y, 1.f / 256, 1e-30f, "rmsnorm y bf16 x, f32 w/y");
}

QN_TEST(rmsnorm_backward_matches_f64_and_finite_differences) {
  const int64_t n = 5, h = 67;
  const double eps = 1e-6;
  auto x = random_floats(n * h, -2, 2, 5), w = random_floats(h, 0.5f, 1.5f, 6), g = random_floats(n * h, -1, 1, 7);
  const std::vector<double> dx_ref = ref_dx(x, w, g, n, h, eps);
  // The closed form against central differences of the float64 forward (h = 1e-5: truncation
  // ~1e-10, rounding ~1e-11; agreement to 1e-7 proves the formula).
  {
    auto loss = [&](std::vector<float>& xx, int64_t i, double dlt) {
      std::vector<double> xd(xx.begin(), xx.end());
      xd[i] += dlt;
      double l = 0;
      for (int64_t r = 0; r < n; ++r) {
        double ss = 0;
        for (int64_t j = 0; j < h; ++j) ss += xd[r * h + j] * xd[r * h + j];
        const double rs = 1 / std::sqrt(ss / h + eps);
        for (int64_t j = 0; j < h; ++j) l += g[r * h + j] * w[j] * xd[r * h + j] * rs;
      }
      return l;
    };
    double worst = 0;
    for (int64_t i = 0; i < n * h; i += 7) {
      const double fd = (loss(x, i, 1e-5) - loss(x, i, -1e-5)) / 2e-5;
      worst = std::max(worst, std::fabs(fd - dx_ref[i]));
    }
    EXPECT_TRUE(worst < 1e-7);
  }
  auto ctx = test_ctx();
  Tensor tx = from_floats(ctx, DType::F32, {n, h}, x), tw = from_floats(ctx, DType::F32, {h}, w);
  Tensor ty = poisoned(ctx, DType::F32, {n, h}), tr = poisoned(ctx, DType::F32, {n});
  rmsnorm_forward(*ctx, RmsNormForwardArgs{tx, tw, ty, tr, (float)eps});
  Tensor tg = from_floats(ctx, DType::F32, {n, h}, g), tdx = poisoned(ctx, DType::F32, {n, h});
  Tensor tdw = from_floats(ctx, DType::F32, {h}, std::vector<float>(h, 0.25f));
  rmsnorm_backward(*ctx, RmsNormBackwardArgs{tx, tw, tr, tg, tdx, false, tdw});
  // f32: each term within a few ulps of |rstd * g|; the cancellation in g - x*c is bounded by that.
  all_close(to_floats(tdx), to_f(dx_ref), 1e-5f, 1e-6f, "rmsnorm dx");
  std::vector<double> y, rs;
  ref_forward(x, std::vector<float>(h, 1.f), n, h, eps, &y, &rs);
  std::vector<float> dw_ref(h, 0.25f);
  for (int64_t j = 0; j < h; ++j) {
    double s = 0;
    for (int64_t r = 0; r < n; ++r) s += (double)g[r * h + j] * y[r * h + j];
    dw_ref[j] = (float)(0.25 + s);
  }
  all_close(to_floats(tdw), dw_ref, 1e-5f, 1e-6f, "rmsnorm dweight (accumulated)");
  // accumulate_dx adds to what is there.
  Tensor tacc = from_floats(ctx, DType::F32, {n, h}, std::vector<float>(n * h, 1.f));
  rmsnorm_backward(*ctx, RmsNormBackwardArgs{tx, tw, tr, tg, tacc, true, Tensor()});
  std::vector<float> want(n * h);
  for (int64_t i = 0; i < n * h; ++i) want[i] = (float)(1.0 + dx_ref[i]);
  all_close(to_floats(tacc), want, 1e-5f, 1e-6f, "rmsnorm dx accumulated");
}

QN_TEST(rmsnorm_backward_bf16_vs_f32) {
  const int64_t n = 64, h = 2048;
  auto x = bf16_round(random_floats(n * h, -2, 2, 8)), w = bf16_round(random_floats(h, 0.5f, 1.5f, 9));
  auto g = bf16_round(random_floats(n * h, -1, 1, 10));
  std::vector<double> dx_ref = ref_dx(x, w, g, n, h, 1e-6);
  double mx = 0;
  for (double v : dx_ref) mx = std::max(mx, std::fabs(v));
  auto ctx = test_ctx();
  for (DType dt : {DType::F32, DType::BF16}) {
    Tensor tx = from_floats(ctx, dt, {n, h}, x), tw = from_floats(ctx, dt, {h}, w);
    Tensor ty = poisoned(ctx, dt, {n, h}), tr = poisoned(ctx, DType::F32, {n});
    rmsnorm_forward(*ctx, RmsNormForwardArgs{tx, tw, ty, tr, 1e-6f});
    Tensor tg = from_floats(ctx, dt, {n, h}, g), tdx = poisoned(ctx, dt, {n, h});
    rmsnorm_backward(*ctx, RmsNormBackwardArgs{tx, tw, tr, tg, tdx, false, Tensor()});
    // bf16: the f32 result rounded once (2^-8 relative); the atol covers the cancellation in
    // g - x*c where the stored value is near 0 relative to the row's scale.
    if (dt == DType::F32) all_close(to_floats(tdx), to_f(dx_ref), 1e-5f, 1e-6f * (float)mx, "rmsnorm dx f32 h=2048");
    else all_close(to_floats(tdx), to_f(dx_ref), 1.f / 256, 1e-5f * (float)mx, "rmsnorm dx bf16 h=2048");
  }
}

QN_TEST(rmsnorm_cuda_matches_cpu) {
  if (!testing_cuda()) return;
  const int64_t n = 300, h = 2048 + 3;
  auto x = random_floats(n * h, -3, 3, 11), w = random_floats(h, 0.5f, 1.5f, 12), g = random_floats(n * h, -1, 1, 13);
  for (DType dt : {DType::F32, DType::BF16}) {
    FwdOut a = run_forward(test_ctx(), dt, dt, dt, x, w, n, h, 1e-6f);
    FwdOut b = run_forward(cpu_ctx(), dt, dt, dt, x, w, n, h, 1e-6f);
    const float tol = dt == DType::F32 ? 1e-5f : 1.f / 128;
    all_close(a.y, b.y, tol, 1e-6f, std::string("rmsnorm y cuda vs cpu ") + dtype_name(dt));
    all_close(a.rstd, b.rstd, 1e-5f, 0, "rmsnorm rstd cuda vs cpu");
    std::vector<float> dx[2], dw[2];
    int k = 0;
    for (auto ctx : {test_ctx(), cpu_ctx()}) {
      Tensor tx = from_floats(ctx, dt, {n, h}, x), tw = from_floats(ctx, dt, {h}, w);
      Tensor tr = from_floats(ctx, DType::F32, {n}, b.rstd), tg = from_floats(ctx, dt, {n, h}, g);
      Tensor tdx = poisoned(ctx, dt, {n, h}), tdw = from_floats(ctx, DType::F32, {h}, std::vector<float>(h, 0.f));
      rmsnorm_backward(*ctx, RmsNormBackwardArgs{tx, tw, tr, tg, tdx, false, tdw});
      dx[k] = to_floats(tdx);
      dw[k++] = to_floats(tdw);
    }
    all_close(dx[0], dx[1], tol, 1e-5f, std::string("rmsnorm dx cuda vs cpu ") + dtype_name(dt));
    all_close(dw[0], dw[1], 1e-4f, 1e-4f, std::string("rmsnorm dweight cuda vs cpu ") + dtype_name(dt));
  }
}

QN_TEST(rmsnorm_rejects_bad_args) {
  auto ctx = test_ctx();
  Tensor x = Tensor::empty(ctx, DType::F32, {4, 8}), w = Tensor::empty(ctx, DType::F32, {8});
  Tensor y = Tensor::empty(ctx, DType::F32, {4, 8}), r = Tensor::empty(ctx, DType::F32, {4});
  EXPECT_THROWS_CODE(rmsnorm_forward(*ctx, RmsNormForwardArgs{x, Tensor::empty(ctx, DType::F32, {7}), y, r}), Shape);
  EXPECT_THROWS_CODE(rmsnorm_forward(*ctx, RmsNormForwardArgs{x, w, Tensor::empty(ctx, DType::F32, {4, 9}), r}), Shape);
  EXPECT_THROWS_CODE(rmsnorm_forward(*ctx, RmsNormForwardArgs{x, w, y, Tensor::empty(ctx, DType::F32, {5})}), Shape);
  EXPECT_THROWS_CODE(rmsnorm_forward(*ctx, RmsNormForwardArgs{Tensor::empty(ctx, DType::I32, {4, 8}), w, y, r}), DType);
  EXPECT_THROWS_CODE(rmsnorm_forward(*ctx, RmsNormForwardArgs{x, w, y, Tensor::empty(ctx, DType::BF16, {4})}), DType);
  EXPECT_THROWS_CODE(rmsnorm_backward(*ctx, RmsNormBackwardArgs{x, w, r, y, y, false, Tensor::empty(ctx, DType::BF16, {8})}), DType);
  if (testing_cuda()) {
    EXPECT_THROWS_CODE(rmsnorm_forward(*ctx, RmsNormForwardArgs{x, Tensor::empty(cpu_ctx(), DType::F32, {8}), y, r}), Device);
  }
}
