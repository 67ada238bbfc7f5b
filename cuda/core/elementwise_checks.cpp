// Argument validation for the elementwise ops (shared by CPU and CUDA).
#include "qn/ops/elementwise.h"
#include <cmath>
#include <cstdio>

namespace qn {
namespace {

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

}  // namespace

void check_cast(const CastArgs& a) {
  expect_same_context(a.src, a.dst, "cast");
  QN_CHECK(a.src.numel() == a.dst.numel(), Shape,
           "cast: src " + shape_str(a.src.shape()) + " and dst " + shape_str(a.dst.shape()) + " differ in size");
  const DType d = a.dst.dtype();
  QN_CHECK(d == DType::F32 || d == DType::BF16 || d == DType::F16, DType,
           std::string("cast: dst must be f32, bf16 or f16, got ") + dtype_name(d));
}

void check_fill(const FillArgs& a) {
  QN_CHECK(a.dst.defined(), Arg, "fill: dst is missing");
  const DType d = a.dst.dtype();
  if (d != DType::U8 && d != DType::I32) return;  // floats take any value (inf and nan included)
  // an integer dtype: the conversion of a non-integral or out-of-range double is undefined
  const double lo = d == DType::U8 ? 0.0 : -2147483648.0, hi = d == DType::U8 ? 255.0 : 2147483647.0;
  QN_CHECK(std::isfinite(a.value) && std::floor(a.value) == a.value && a.value >= lo && a.value <= hi, Arg,
           std::string("fill: value ") + num(a.value) + " does not fit dst's dtype " + dtype_name(d) +
               " (an integer in [" + std::to_string(static_cast<int64_t>(lo)) + ", " + std::to_string(static_cast<int64_t>(hi)) + "])");
}

void check_axpby(const AxpbyArgs& a) {
  expect_same_context(a.x, a.y, "axpby");
  expect_dtype(a.x, DType::F32, "axpby", "x");
  expect_dtype(a.y, DType::F32, "axpby", "y");
  QN_CHECK(a.x.numel() == a.y.numel(), Shape, "axpby: x and y differ in size");
}

}  // namespace qn
