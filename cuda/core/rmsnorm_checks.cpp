// Argument validation for rmsnorm_forward / rmsnorm_backward (shared by CPU and CUDA).
#include "qn/ops/rmsnorm.h"
#include "qn/ops/residual.h"

namespace qn {
namespace {

// x-like tensors: same shape as x, same session.
void expect_like_x(const Tensor& x, const Tensor& t, const char* op, const char* name) {
  expect_f32_or_bf16(t, op, name);
  expect_same_context(x, t, op);
  QN_CHECK(t.shape() == x.shape(), Shape,
           std::string(op) + ": " + name + " " + shape_str(t.shape()) + " must match x " + shape_str(x.shape()));
}

RmsNormDims common(const Tensor& x, const Tensor& w, const Tensor& rstd, bool need_rstd, const char* op) {
  expect_f32_or_bf16(x, op, "x");
  QN_CHECK(x.ndim() >= 1 && x.dim(-1) > 0, Shape, std::string(op) + ": x must be [..., H], got " + shape_str(x.shape()));
  RmsNormDims d{x.numel() / x.dim(-1), x.dim(-1)};
  expect_f32_or_bf16(w, op, "weight");
  expect_same_context(x, w, op);
  expect_shape(w, {d.h}, op, "weight");
  if (need_rstd || rstd.defined()) {
    expect_dtype(rstd, DType::F32, op, "rstd");
    expect_same_context(x, rstd, op);
    QN_CHECK(rstd.numel() == d.n, Shape,
             std::string(op) + ": rstd " + shape_str(rstd.shape()) + " must hold one value per row (" + std::to_string(d.n) + ")");
  }
  return d;
}

}  // namespace

RmsNormDims check_rmsnorm_forward(const RmsNormForwardArgs& a) {
  const char* op = "rmsnorm_forward";
  RmsNormDims d = common(a.x, a.weight, a.rstd, false, op);
  expect_like_x(a.x, a.y, op, "y");
  QN_CHECK(a.eps >= 0.f, Arg, std::string(op) + ": eps must be >= 0");
  return d;
}

RmsNormDims check_rmsnorm_backward(const RmsNormBackwardArgs& a) {
  const char* op = "rmsnorm_backward";
  RmsNormDims d = common(a.x, a.weight, a.rstd, true, op);
  expect_like_x(a.x, a.dy, op, "dy");
  expect_like_x(a.x, a.dx, op, "dx");
  if (a.dweight.defined()) {
    expect_dtype(a.dweight, DType::F32, op, "dweight");
    expect_same_context(a.x, a.dweight, op);
    expect_shape(a.dweight, {d.h}, op, "dweight");
  }
  return d;
}

}  // namespace qn
