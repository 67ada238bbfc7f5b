// Argument validation for attention_forward / attention_backward (shared by CPU and CUDA).
#include <cmath>
#include "qn/ops/attention.h"
#include "qn/ops/residual.h"

namespace qn {
namespace {

void expect_like(const Tensor& ref, const Tensor& t, const Shape& s, const char* op, const char* name) {
  QN_CHECK(t.defined(), Arg, std::string(op) + ": " + name + " is missing");
  expect_same_context(ref, t, op);
  QN_CHECK(t.dtype() == ref.dtype(), DType,
           std::string(op) + ": " + name + " must be " + dtype_name(ref.dtype()) + " like q, got " + dtype_name(t.dtype()));
  expect_shape(t, s, op, name);
}

AttentionDims common(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask, float scale, const char* op) {
  QN_CHECK(q.defined() && k.defined() && v.defined(), Arg, std::string(op) + ": q, k and v are required");
  expect_f32_or_bf16(q, op, "q");
  QN_CHECK(q.ndim() == 4 && k.ndim() == 4, Shape,
           std::string(op) + ": q must be [B, T, Hq, D] and k [B, T, Hkv, D], got " + shape_str(q.shape()) + " and " +
               shape_str(k.shape()));
  AttentionDims d{q.dim(0), q.dim(1), q.dim(2), k.dim(2), q.dim(3), scale};
  QN_CHECK(d.d > 0 && d.hkv > 0 && d.hq % d.hkv == 0, Shape,
           std::string(op) + ": q heads (" + std::to_string(d.hq) + ") must be a multiple of kv heads (" +
               std::to_string(d.hkv) + "), q " + shape_str(q.shape()) + ", k " + shape_str(k.shape()));
  expect_like(q, k, {d.b, d.t, d.hkv, d.d}, op, "k");
  expect_like(q, v, {d.b, d.t, d.hkv, d.d}, op, "v");
  if (mask.defined()) {
    expect_same_context(q, mask, op);
    QN_CHECK(mask.dtype() == DType::I32 || mask.dtype() == DType::U8, DType,
             std::string(op) + ": mask must be i32 or u8, got " + dtype_name(mask.dtype()));
    expect_shape(mask, {d.b, d.t}, op, "mask");
  }
  QN_CHECK(std::isfinite(scale) && scale >= 0.f, Arg, std::string(op) + ": scale must be finite and >= 0");
  if (d.scale == 0.f) d.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d.d)));
  return d;
}

}  // namespace

AttentionDims check_attention_forward(const AttentionForwardArgs& a) {
  const char* op = "attention_forward";
  AttentionDims d = common(a.q, a.k, a.v, a.mask, a.scale, op);
  expect_like(a.q, a.out, a.q.shape(), op, "out");
  if (a.lse.defined()) {
    expect_dtype(a.lse, DType::F32, op, "lse");
    expect_same_context(a.q, a.lse, op);
    expect_shape(a.lse, {d.b, d.hq, d.t}, op, "lse");
  }
  return d;
}

AttentionDims check_attention_backward(const AttentionBackwardArgs& a) {
  const char* op = "attention_backward";
  AttentionDims d = common(a.q, a.k, a.v, a.mask, a.scale, op);
  expect_like(a.q, a.out, a.q.shape(), op, "out");
  expect_like(a.q, a.dout, a.q.shape(), op, "dout");
  expect_like(a.q, a.dq, a.q.shape(), op, "dq");
  expect_like(a.q, a.dk, a.k.shape(), op, "dk");
  expect_like(a.q, a.dv, a.k.shape(), op, "dv");
  expect_dtype(a.lse, DType::F32, op, "lse");
  expect_same_context(a.q, a.lse, op);
  expect_shape(a.lse, {d.b, d.hq, d.t}, op, "lse");
  return d;
}

}  // namespace qn
