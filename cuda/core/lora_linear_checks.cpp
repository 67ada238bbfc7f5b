// Argument validation for the LoRA linear ops (shared by CPU and CUDA).
#include <cmath>
#include <string>
#include "qn/ops/gemm.h"
#include "qn/ops/lora_linear.h"
#include "qn/ops/nf4.h"

namespace qn {
namespace {

std::string n2s(int64_t v) { return std::to_string(v); }

bool is_float(DType d) { return d == DType::F32 || d == DType::BF16; }

void expect_float(const Tensor& t, const char* op, const char* name) {
  QN_CHECK(t.defined(), Arg, std::string(op) + ": " + name + " is missing");
  QN_CHECK(is_float(t.dtype()), DType,
           std::string(op) + ": " + name + " must be f32 or bf16, got " + dtype_name(t.dtype()));
}

void expect_matrix(const Tensor& t, int64_t rows, int64_t cols, const char* op, const char* name, const char* what) {
  QN_CHECK(t.ndim() >= 1 && matrix_rows(t) == rows && matrix_cols(t) == cols, Shape,
           std::string(op) + ": " + name + " must be " + what + " = " + n2s(rows) + " x " + n2s(cols) + ", got " +
               shape_str(t.shape()));
}

bool overlaps(const Tensor& x, const Tensor& y) {
  if (!x.defined() || !y.defined() || x.storage() != y.storage()) return false;
  const char* xb = static_cast<const char*>(x.raw());
  const char* yb = static_cast<const char*>(y.raw());
  return xb < yb + y.nbytes() && yb < xb + x.nbytes();
}

// The layer against the input x: base weight, bias, adapter. Returns m, in, out, r (r = 0 when
// the adapter is disabled).
LoraLinearDims check_layer(const LoraLinear& L, const Tensor& x, const char* op) {
  expect_float(x, op, "x");
  QN_CHECK(x.ndim() >= 1, Shape, std::string(op) + ": x needs at least one dimension");
  QN_CHECK((L.nf4 != nullptr) != L.weight.defined(), Arg,
           std::string(op) + ": give exactly one base weight (nf4 or weight)");
  LoraLinearDims d;
  d.m = matrix_rows(x);
  if (L.nf4) {
    check_nf4_weight(*L.nf4, op);
    expect_same_context(x, L.nf4->codes, op);
    d.out = L.nf4->rows;
    d.in = L.nf4->cols;
  } else {
    expect_float(L.weight, op, "weight");
    expect_same_context(x, L.weight, op);
    QN_CHECK(L.weight.ndim() == 2, Shape,
             std::string(op) + ": weight must be 2-D [out, in], got " + shape_str(L.weight.shape()));
    d.out = L.weight.dim(0);
    d.in = L.weight.dim(1);
  }
  QN_CHECK(matrix_cols(x) == d.in, Shape,
           std::string(op) + ": x must be [..., in = " + n2s(d.in) + "] to match the weight [" + n2s(d.out) + ", " +
               n2s(d.in) + "], got " + shape_str(x.shape()));
  if (L.bias.defined()) {
    expect_float(L.bias, op, "bias");
    expect_same_context(x, L.bias, op);
    QN_CHECK(L.bias.numel() == d.out, Shape,
             std::string(op) + ": bias must have out = " + n2s(d.out) + " elements, got " + shape_str(L.bias.shape()));
  }
  if (!L.enabled) return d;
  expect_dtype(L.lora_a, DType::F32, op, "lora_a");
  expect_dtype(L.lora_b, DType::F32, op, "lora_b");
  expect_same_context(x, L.lora_a, op);
  expect_same_context(x, L.lora_b, op);
  QN_CHECK(L.lora_a.ndim() == 2 && L.lora_a.dim(0) >= 1 && L.lora_a.dim(1) == d.in, Shape,
           std::string(op) + ": lora_a must be [r, in = " + n2s(d.in) + "] with r >= 1, got " +
               shape_str(L.lora_a.shape()));
  d.r = L.lora_a.dim(0);
  QN_CHECK(L.lora_b.ndim() == 2 && L.lora_b.dim(0) == d.out && L.lora_b.dim(1) == d.r, Shape,
           std::string(op) + ": lora_b must be [out, r] = [" + n2s(d.out) + ", " + n2s(d.r) + "], got " +
               shape_str(L.lora_b.shape()));
  QN_CHECK(std::isfinite(L.scale), Arg, std::string(op) + ": scale must be finite");
  QN_CHECK(L.dropout >= 0.f && L.dropout < 1.f, Arg,
           std::string(op) + ": dropout must be in [0, 1), got " + std::to_string(L.dropout));
  return d;
}

void expect_u(const Tensor& u, const Tensor& x, const LoraLinearDims& d, const char* op) {
  expect_dtype(u, DType::F32, op, "u");
  expect_same_context(x, u, op);
  expect_matrix(u, d.m, d.r, op, "u", "[M, r]");
}

}  // namespace

LoraLinearDims check_lora_linear_forward(const LoraLinearForwardArgs& a) {
  const char* op = "lora_linear_forward";
  const LoraLinearDims d = check_layer(a.layer, a.x, op);
  QN_CHECK(a.y.defined(), Arg, std::string(op) + ": y is missing");
  expect_same_context(a.x, a.y, op);
  QN_CHECK(a.y.dtype() == a.x.dtype(), DType,
           std::string(op) + ": y must have the dtype of x (" + dtype_name(a.x.dtype()) + "), got " +
               dtype_name(a.y.dtype()));
  expect_matrix(a.y, d.m, d.out, op, "y", "[M, out]");
  if (d.lora()) expect_u(a.u, a.x, d, op);
  QN_CHECK(!overlaps(a.y, a.x) && !overlaps(a.y, a.u) && !overlaps(a.u, a.x), Arg,
           std::string(op) + ": y, u and x must not overlap");
  return d;
}

LoraLinearDims check_lora_linear_backward(const LoraLinearBackwardArgs& a) {
  const char* op = "lora_linear_backward";
  const LoraLinearDims d = check_layer(a.layer, a.x, op);
  QN_CHECK(a.dy.defined(), Arg, std::string(op) + ": dy is missing");
  expect_same_context(a.x, a.dy, op);
  QN_CHECK(a.dy.dtype() == a.x.dtype(), DType,
           std::string(op) + ": dy must have the dtype of x (" + dtype_name(a.x.dtype()) + "), got " +
               dtype_name(a.dy.dtype()));
  expect_matrix(a.dy, d.m, d.out, op, "dy", "[M, out]");
  if (a.dx.defined()) {
    expect_same_context(a.x, a.dx, op);
    QN_CHECK(a.dx.dtype() == a.x.dtype(), DType,
             std::string(op) + ": dx must have the dtype of x (" + dtype_name(a.x.dtype()) + "), got " +
                 dtype_name(a.dx.dtype()));
    expect_matrix(a.dx, d.m, d.in, op, "dx", "[M, in]");
    QN_CHECK(!overlaps(a.dx, a.x) && !overlaps(a.dx, a.dy) && !overlaps(a.dx, a.u), Arg,
             std::string(op) + ": dx must not overlap x, dy or u");
  }
  if (d.lora()) {
    expect_u(a.u, a.x, d, op);
    expect_dtype(a.grad_a, DType::F32, op, "grad_a");
    expect_dtype(a.grad_b, DType::F32, op, "grad_b");
    expect_same_context(a.x, a.grad_a, op);
    expect_same_context(a.x, a.grad_b, op);
    expect_matrix(a.grad_a, d.r, d.in, op, "grad_a", "[r, in]");
    expect_matrix(a.grad_b, d.out, d.r, op, "grad_b", "[out, r]");
  }
  return d;
}

}  // namespace qn
