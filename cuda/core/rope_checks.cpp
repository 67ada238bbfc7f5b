// Argument validation for rope_forward / rope_backward, and transformers' inv_freq (both backends).
#include <cmath>
#include "qn/ops/residual.h"
#include "qn/ops/rope.h"

namespace qn {

void rope_inv_freq(double theta, int64_t d, float* out) {
  // torch: 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim)), all float32.
  const float base = static_cast<float>(theta);
  for (int64_t i = 0; i < d / 2; ++i) {
    const float e = static_cast<float>(2 * i) / static_cast<float>(d);
    const float p = static_cast<float>(std::pow(static_cast<double>(base), static_cast<double>(e)));
    out[i] = 1.0f / p;
  }
}

RopeDims check_rope(const RopeArgs& a, const char* op) {
  QN_CHECK(a.q.defined() || a.k.defined(), Arg, std::string(op) + ": neither q nor k given");
  expect_dtype(a.positions, DType::I32, op, "positions");
  QN_CHECK(a.theta > 0, Arg, std::string(op) + ": theta must be > 0");
  RopeDims d;
  d.rows = -1;
  auto take = [&](const Tensor& t, const char* name, int64_t* heads) {
    if (!t.defined()) return;
    expect_f32_or_bf16(t, op, name);
    expect_same_context(a.positions, t, op);
    QN_CHECK(t.ndim() >= 3 && t.dim(-1) % 2 == 0 && t.dim(-1) > 0, Shape,
             std::string(op) + ": " + name + " must be [..., heads, head_dim] with an even head_dim, got " + shape_str(t.shape()));
    const int64_t rows = t.numel() == 0 ? 0 : t.numel() / (t.dim(-1) * t.dim(-2));
    QN_CHECK(d.rows < 0 || (rows == d.rows && t.dim(-1) == d.d), Shape,
             std::string(op) + ": q and k disagree in tokens or head_dim (" + shape_str(a.q.shape()) + " vs " +
                 shape_str(a.k.shape()) + ")");
    d.rows = rows;
    d.d = t.dim(-1);
    *heads = t.dim(-2);
  };
  take(a.q, "q", &d.hq);
  take(a.k, "k", &d.hkv);
  QN_CHECK(!a.q.defined() || !a.k.defined() || a.q.dtype() == a.k.dtype(), DType,
           std::string(op) + ": q and k must have the same dtype");
  QN_CHECK(a.positions.numel() == d.rows, Shape,
           std::string(op) + ": positions " + shape_str(a.positions.shape()) + " must hold one entry per token (" +
               std::to_string(d.rows) + ")");
  return d;
}

}  // namespace qn
