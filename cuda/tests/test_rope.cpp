// RoPE: forward against a float64 loop with transformers' float32 inv_freq and angles (f32), the
// bf16 path against an emulation of transformers' bf16 ops (cos/sin and every product rounded to
// bf16), backward as the exact transpose (inner-product identity and central differences of the
// float64 forward) and inverse, head_dim 16/64/128, GQA head counts, large positions (no table),
// bad arguments; on CUDA against the CPU.
#include <cmath>
#include "harness.h"
#include "qn/ops/rope.h"

using namespace qn;
using namespace qnt;

namespace {

float bf(float x) { return bf16_to_f32(f32_to_bf16(x)); }

// transformers' float32 angle for (pos, i) given inv_freq, then cos/sin in double.
void angle_cs(const std::vector<float>& inv, int32_t pos, int64_t i, double* c, double* s) {
  const float ang = (float)pos * inv[i];
  *c = std::cos((double)ang);
  *s = std::sin((double)ang);
}

// Rotation of x [rows, heads, d] by +angle (sign = 1) or -angle (sign = -1) in float64. With
// bf16_emulate, c/s and each product and sum are rounded to bf16 as torch's bf16 ops do.
std::vector<float> ref_rope(const std::vector<float>& x, int64_t rows, int64_t heads, int64_t d,
                            const std::vector<int32_t>& pos, double theta, int sign, bool bf16_emulate) {
  std::vector<float> y(x.size());
  const int64_t half = d / 2;
  std::vector<float> inv(half);
  rope_inv_freq(theta, d, inv.data());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < half; ++i) {
      double c, s;
      angle_cs(inv, pos[r], i, &c, &s);
      s *= sign;
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t o = (r * heads + h) * d;
        const double a = x[o + i], b = x[o + half + i];
        if (bf16_emulate) {
          const float cb = bf((float)c), sb = bf((float)s);
          y[o + i] = bf(bf((float)a * cb) - bf((float)b * sb));
          y[o + half + i] = bf(bf((float)b * cb) + bf((float)a * sb));
        } else {
          y[o + i] = (float)(a * c - b * s);
          y[o + half + i] = (float)(b * c + a * s);
        }
      }
    }
  return y;
}

std::vector<int32_t> positions(int64_t rows, int64_t period, int32_t base) {
  std::vector<int32_t> p(rows);
  for (int64_t r = 0; r < rows; ++r) p[r] = base + (int32_t)(r % period);
  return p;
}

Tensor pos_tensor(const std::shared_ptr<Context>& ctx, const std::vector<int32_t>& p) {
  return from_bytes(ctx, DType::I32, {(int64_t)p.size()}, p.data());
}

// Runs rope on q and k (copies) and returns them.
std::pair<std::vector<float>, std::vector<float>> run(const std::shared_ptr<Context>& ctx, DType dt,
                                                     const std::vector<float>& q, const std::vector<float>& k,
                                                     int64_t rows, int64_t hq, int64_t hkv, int64_t d,
                                                     const std::vector<int32_t>& p, double theta, bool backward) {
  Tensor tq = from_floats(ctx, dt, {rows, hq, d}, q), tk = from_floats(ctx, dt, {rows, hkv, d}, k);
  RopeArgs a{tq, tk, pos_tensor(ctx, p), theta};
  if (backward) rope_backward(*ctx, a);
  else rope_forward(*ctx, a);
  return {to_floats(tq), to_floats(tk)};
}

}  // namespace

QN_TEST(rope_forward_f32_matches_f64) {
  struct Case { int64_t rows, hq, hkv, d; double theta; int32_t base; };
  for (Case c : {Case{37, 4, 2, 16, 50000, 0}, Case{70, 16, 2, 128, 1e6, 0}, Case{33, 8, 1, 64, 500000, 0},
                 Case{9, 2, 2, 128, 1e6, 30000}}) {
    auto p = positions(c.rows, 23, c.base);
    auto q = random_floats(c.rows * c.hq * c.d, -2, 2, 1), k = random_floats(c.rows * c.hkv * c.d, -2, 2, 2);
    auto got = run(test_ctx(), DType::F32, q, k, c.rows, c.hq, c.hkv, c.d, p, c.theta, false);
    // f32: two products and a sum of |x| <= 2 values (f32 ulps, plus an FMA on the GPU).
    const std::string w = "rope f32 d=" + std::to_string(c.d) + " base=" + std::to_string(c.base);
    all_close(got.first, ref_rope(q, c.rows, c.hq, c.d, p, c.theta, 1, false), 1e-6f, 1e-6f, w + " q");
    all_close(got.second, ref_rope(k, c.rows, c.hkv, c.d, p, c.theta, 1, false), 1e-6f, 1e-6f, w + " k");
  }
}

QN_TEST(rope_bf16_matches_transformers_bf16_ops) {
  const int64_t rows = 50, hq = 4, hkv = 2, d = 64;
  auto p = positions(rows, 50, 0);
  std::vector<float> q = random_floats(rows * hq * d, -3, 3, 3), k = random_floats(rows * hkv * d, -3, 3, 4);
  for (auto& v : q) v = bf(v);
  for (auto& v : k) v = bf(v);
  auto got = run(test_ctx(), DType::BF16, q, k, rows, hq, hkv, d, p, 1e6, false);
  // Same roundings in the same order: equal, unless cos/sin of the f32 angle (double on both
  // sides, CUDA's double cos within an ulp) lands on a bf16 rounding boundary: one bf16 ulp.
  all_close(got.first, ref_rope(q, rows, hq, d, p, 1e6, 1, true), 1.f / 128, 1e-30f, "rope bf16 q");
  all_close(got.second, ref_rope(k, rows, hkv, d, p, 1e6, 1, true), 1.f / 128, 1e-30f, "rope bf16 k");
  // Against the f32 path on the same inputs (|x| <= 3): bf16 rounding (unit roundoff 2^-8) of
  // cos and sin, of the two products and of the sum, each bounded by |a c| + |b s| <= 3 sqrt 2:
  // atol 3 * 4.25 * 2^-8.
  auto f = run(test_ctx(), DType::F32, q, k, rows, hq, hkv, d, p, 1e6, false);
  all_close(got.first, f.first, 0, 12.75f / 256, "rope bf16 vs f32 q");
  auto gb = run(test_ctx(), DType::BF16, q, k, rows, hq, hkv, d, p, 1e6, true);
  all_close(gb.first, ref_rope(q, rows, hq, d, p, 1e6, -1, true), 1.f / 128, 1e-30f, "rope bf16 backward q");
}

QN_TEST(rope_backward_is_transpose_and_inverse) {
  const int64_t rows = 41, hq = 8, hkv = 2, d = 128;
  auto p = positions(rows, 41, 5);
  auto q = random_floats(rows * hq * d, -1, 1, 5), k = random_floats(rows * hkv * d, -1, 1, 6);
  auto g = random_floats(rows * hq * d, -1, 1, 7);
  auto fwd = run(test_ctx(), DType::F32, q, k, rows, hq, hkv, d, p, 1e6, false);
  auto back = run(test_ctx(), DType::F32, fwd.first, fwd.second, rows, hq, hkv, d, p, 1e6, true);
  all_close(back.first, q, 0, 2e-6f, "rope backward(forward(q)) == q");
  all_close(back.second, k, 0, 2e-6f, "rope backward(forward(k)) == k");
  // <R q, g> == <q, R^T g> (the backward is the adjoint), in double over the f32 results.
  auto bg = run(test_ctx(), DType::F32, g, k, rows, hq, hkv, d, p, 1e6, true);
  double l = 0, r = 0, scale = 0;
  for (size_t i = 0; i < q.size(); ++i) {
    l += (double)fwd.first[i] * g[i];
    r += (double)q[i] * bg.first[i];
    scale += std::fabs((double)q[i] * g[i]);
  }
  EXPECT_TRUE(std::fabs(l - r) <= 1e-6 * scale);
  // Central differences of L(q) = <R q, g> on the float64 forward at a few coordinates agree
  // with the backward (L is linear: the difference quotient is exact up to rounding, ~1e-10).
  std::vector<float> q1 = q;
  double worst = 0;
  for (size_t i = 0; i < q.size(); i += 997) {
    auto L = [&](float dl) {
      q1[i] = q[i] + dl;
      auto y = ref_rope(q1, rows, hq, d, p, 1e6, 1, false);
      q1[i] = q[i];
      double s = 0;
      for (size_t j = 0; j < y.size(); ++j) s += (double)y[j] * g[j];
      return s;
    };
    const double fd = (L(0.25f) - L(-0.25f)) / 0.5;
    worst = std::max(worst, std::fabs(fd - bg.first[i]));
  }
  EXPECT_TRUE(worst < 1e-5);
}

QN_TEST(rope_large_positions_and_q_only) {
  const int64_t rows = 6, hq = 2, d = 16;
  std::vector<int32_t> p = {0, 131071, 7, 100000, 3, 65536};  // too sparse for the table
  auto q = random_floats(rows * hq * d, -1, 1, 8);
  auto ctx = test_ctx();
  Tensor tq = from_floats(ctx, DType::F32, {rows, hq, d}, q);
  rope_forward(*ctx, RopeArgs{tq, Tensor(), pos_tensor(ctx, p), 1e4});
  // Angles up to 1.3e5 rad: cos/sin of the f32 angle in double, so only f32 product rounding.
  all_close(to_floats(tq), ref_rope(q, rows, hq, d, p, 1e4, 1, false), 1e-6f, 1e-6f, "rope sparse positions");
}

QN_TEST(rope_cuda_matches_cpu) {
  if (!testing_cuda()) return;
  const int64_t rows = 2 * 333, hq = 16, hkv = 2, d = 128;
  auto p = positions(rows, 333, 0);
  auto q = random_floats(rows * hq * d, -2, 2, 9), k = random_floats(rows * hkv * d, -2, 2, 10);
  for (DType dt : {DType::F32, DType::BF16}) {
    for (bool bw : {false, true}) {
      auto a = run(test_ctx(), dt, q, k, rows, hq, hkv, d, p, 1e6, bw);
      auto b = run(cpu_ctx(), dt, q, k, rows, hq, hkv, d, p, 1e6, bw);
      const float tol = dt == DType::F32 ? 2e-6f : 2.f / 256;
      all_close(a.first, b.first, tol, 2e-6f, std::string("rope q cuda vs cpu ") + dtype_name(dt));
      all_close(a.second, b.second, tol, 2e-6f, std::string("rope k cuda vs cpu ") + dtype_name(dt));
    }
  }
}

QN_TEST(rope_rejects_bad_args) {
  auto ctx = test_ctx();
  Tensor q = Tensor::empty(ctx, DType::F32, {4, 2, 8}), k = Tensor::empty(ctx, DType::F32, {4, 1, 8});
  Tensor p = Tensor::empty(ctx, DType::I32, {4});
  EXPECT_THROWS_CODE(rope_forward(*ctx, RopeArgs{q, k, Tensor::empty(ctx, DType::I32, {5}), 1e4}), Shape);
  EXPECT_THROWS_CODE(rope_forward(*ctx, RopeArgs{q, Tensor::empty(ctx, DType::F32, {4, 1, 6}), p, 1e4}), Shape);
  EXPECT_THROWS_CODE(rope_forward(*ctx, RopeArgs{Tensor::empty(ctx, DType::F32, {4, 2, 7}), Tensor(), p, 1e4}), Shape);
  EXPECT_THROWS_CODE(rope_forward(*ctx, RopeArgs{q, k, Tensor::empty(ctx, DType::F32, {4}), 1e4}), DType);
  EXPECT_THROWS_CODE(rope_forward(*ctx, RopeArgs{q, Tensor::empty(ctx, DType::BF16, {4, 1, 8}), p, 1e4}), DType);
  if (testing_cuda()) EXPECT_THROWS_CODE(rope_forward(*ctx, RopeArgs{q, k, Tensor::empty(cpu_ctx(), DType::I32, {4}), 1e4}), Device);
}
