// Elementwise ops: dtype casts, fill, and y = alpha * x + beta * y. Any element count; the data is
// treated as flat. CPU: cuda/cpu/elementwise.cpp, CUDA: cuda/kernels/elementwise.cu.
#pragma once
#include "qn/op.h"

namespace qn {

// dst = src converted (f32/bf16/f16 among each other with round-to-nearest-even; i32/u8 -> f32).
struct CastArgs {
  Tensor src, dst;
};
// dst[i] = value (rounded once to dst's dtype; u8 and i32 take only integers in their range).
struct FillArgs {
  Tensor dst;
  double value = 0;
};
// y = alpha * x + beta * y, f32 only.
struct AxpbyArgs {
  Tensor x, y;
  float alpha = 1.f, beta = 1.f;
};

QN_DECLARE_OP(cast, CastArgs)
QN_DECLARE_OP(fill, FillArgs)
QN_DECLARE_OP(axpby, AxpbyArgs)

// Checks shared by both backends.
void check_cast(const CastArgs& a);
void check_fill(const FillArgs& a);
void check_axpby(const AxpbyArgs& a);

}  // namespace qn
