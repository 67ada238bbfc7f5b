// Residual helpers: y = alpha * a + beta * b over f32 / bf16 tensors in any combination (the
// elementwise axpby is f32 only), and the f32|bf16 check the transformer op checks share. CPU: cuda/cpu/residual.cpp, CUDA: cuda/kernels/residual.cu,
// tests: cuda/tests/test_residual.cpp.
// Precision: fp32 math, one rounding to y's dtype (torch's bf16 a + b rounds once the same way).
// Shapes: a, b, y have the same element count (flat). y may alias a or b (same dtype).
#pragma once
#include "qn/op.h"

namespace qn {

struct ResidualAddArgs {
  Tensor a, b;  // f32 | bf16
  Tensor y;     // f32 | bf16 (may alias a or b)
  float alpha = 1.f, beta = 1.f;
};

QN_DECLARE_OP(residual_add, ResidualAddArgs)

int64_t check_residual_add(const ResidualAddArgs& a);  // returns the element count

// Shared by the checks of the transformer op families: t is given (E_ARG) and f32 or bf16 (E_DTYPE,
// "<op>: <name> must be f32 or bf16, got ...").
void expect_f32_or_bf16(const Tensor& t, const char* op, const char* name);

}  // namespace qn
