// Argument validation for gemm (shared by CPU and CUDA).
#include <string>
#include "qn/ops/gemm.h"

namespace qn {

int64_t matrix_rows(const Tensor& t) {
  int64_t r = 1;
  for (int i = 0; i + 1 < t.ndim(); ++i) r *= t.dim(i);
  return r;
}

int64_t matrix_cols(const Tensor& t) { return t.ndim() == 0 ? 1 : t.dim(-1); }

namespace {

std::string mat_str(const Tensor& t) {
  return shape_str(t.shape()) + " (" + std::to_string(matrix_rows(t)) + " x " + std::to_string(matrix_cols(t)) + ")";
}

bool overlaps(const Tensor& x, const Tensor& y) {
  if (!x.defined() || !y.defined() || x.storage() != y.storage()) return false;
  const char* xb = static_cast<const char*>(x.raw());
  const char* yb = static_cast<const char*>(y.raw());
  return xb < yb + y.nbytes() && yb < xb + x.nbytes();
}

bool is_float(DType d) { return d == DType::F32 || d == DType::BF16; }

}  // namespace

GemmDims check_gemm(const GemmArgs& g) {
  QN_CHECK(g.a.defined(), Arg, "gemm: a is missing");
  QN_CHECK(g.b.defined(), Arg, "gemm: b is missing");
  QN_CHECK(g.c.defined(), Arg, "gemm: c is missing");
  expect_same_context(g.a, g.b, "gemm");
  expect_same_context(g.a, g.c, "gemm");
  if (g.bias.defined()) expect_same_context(g.a, g.bias, "gemm");
  QN_CHECK(is_float(g.a.dtype()), DType, std::string("gemm: a must be f32 or bf16, got ") + dtype_name(g.a.dtype()));
  QN_CHECK(g.b.dtype() == g.a.dtype(), DType,
           std::string("gemm: a and b must have the same dtype, got a ") + dtype_name(g.a.dtype()) + " and b " +
               dtype_name(g.b.dtype()));
  QN_CHECK(is_float(g.c.dtype()), DType, std::string("gemm: c must be f32 or bf16, got ") + dtype_name(g.c.dtype()));
  if (g.bias.defined())
    QN_CHECK(is_float(g.bias.dtype()), DType,
             std::string("gemm: bias must be f32 or bf16, got ") + dtype_name(g.bias.dtype()));
  QN_CHECK(g.a.ndim() >= 1 && g.b.ndim() >= 1 && g.c.ndim() >= 1, Shape, "gemm: a, b and c need at least one dimension");

  GemmDims d;
  const int64_t ar = matrix_rows(g.a), ac = matrix_cols(g.a), br = matrix_rows(g.b), bc = matrix_cols(g.b);
  d.m = g.trans_a ? ac : ar;
  d.k = g.trans_a ? ar : ac;
  const int64_t kb = g.trans_b ? bc : br;
  d.n = g.trans_b ? br : bc;
  QN_CHECK(kb == d.k, Shape,
           std::string("gemm: inner dimensions differ: op(a) is ") + std::to_string(d.m) + " x " + std::to_string(d.k) +
               " (a " + mat_str(g.a) + (g.trans_a ? ", transposed" : "") + "), op(b) is " + std::to_string(kb) +
               " x " + std::to_string(d.n) + " (b " + mat_str(g.b) + (g.trans_b ? ", transposed" : "") + ")");
  QN_CHECK(matrix_rows(g.c) == d.m && matrix_cols(g.c) == d.n, Shape,
           "gemm: c must be " + std::to_string(d.m) + " x " + std::to_string(d.n) + ", got " + mat_str(g.c));
  if (g.bias.defined())
    QN_CHECK(g.bias.numel() == d.n, Shape,
             "gemm: bias must have " + std::to_string(d.n) + " elements (N), got " + shape_str(g.bias.shape()));
  QN_CHECK(!overlaps(g.c, g.a) && !overlaps(g.c, g.b) && !overlaps(g.c, g.bias), Arg,
           "gemm: c overlaps an input (a, b or bias); write to a separate tensor");
  return d;
}

}  // namespace qn
