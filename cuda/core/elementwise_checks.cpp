// Argument validation for the elementwise ops (shared by CPU and CUDA).
#include "qn/ops/elementwise.h"

namespace qn {

void check_cast(const CastArgs& a) {
  expect_same_context(a.src, a.dst, "cast");
  QN_CHECK(a.src.numel() == a.dst.numel(), Shape,
           "cast: src " + shape_str(a.src.shape()) + " and dst " + shape_str(a.dst.shape()) + " differ in size");
  const DType d = a.dst.dtype();
  QN_CHECK(d == DType::F32 || d == DType::BF16 || d == DType::F16, DType,
           std::string("cast: dst must be f32, bf16 or f16, got ") + dtype_name(d));
}

void check_axpby(const AxpbyArgs& a) {
  expect_same_context(a.x, a.y, "axpby");
  expect_dtype(a.x, DType::F32, "axpby", "x");
  expect_dtype(a.y, DType::F32, "axpby", "y");
  QN_CHECK(a.x.numel() == a.y.numel(), Shape, "axpby: x and y differ in size");
}

}  // namespace qn
