// RMSNorm (Qwen2RMSNorm / LlamaRMSNorm), forward and backward.
// CPU: cuda/cpu/rmsnorm.cpp, CUDA: cuda/kernels/rmsnorm.cu, tests: cuda/tests/test_rmsnorm.cpp.
//
// Forward, per row of H values, in the order transformers computes it:
//   rstd = 1 / sqrt(mean(f32(x)^2) + eps)          f32 statistics (sum of squares in f32, see below)
//   n    = round_to(x.dtype, f32(x) * rstd)         hidden.to(input_dtype)
//   y    = round_to(y.dtype, f32(w) * n)            weight * hidden  (one f32 product, one rounding)
// Backward (w frozen; n's rounding treated as identity, as autograd does for casts):
//   g    = f32(dy) * f32(w)
//   dx   = rstd * g - x * rstd^3 * mean(g * x)      (dx += ... when accumulate_dx)
//   dw  += sum over rows of f32(dy) * n             (only when dweight is given)
//
// Shapes: x, y, dy, dx [..., H] (rows = product of leading dims = N); w [H]; rstd f32 [N] (any shape
// with N elements); dweight f32 [H].
// DTypes: x, y, dy, dx f32 or bf16 independently; w f32 or bf16.
// Precision: fp32 arithmetic; the per-row sum of squares and sum(g * x) are accumulated in f32
// (CPU: 16 lanes then a tree; CUDA: per thread then a warp/block tree), so CPU and CUDA agree to
// a few f32 ulps, not bit for bit. rstd is optional in forward (not written when undefined).
// y may alias x (in-place) when both have the same dtype; dx may alias dy likewise.
#pragma once
#include "qn/op.h"

namespace qn {

struct RmsNormForwardArgs {
  Tensor x;       // [..., H] f32 | bf16
  Tensor weight;  // [H] f32 | bf16
  Tensor y;       // [..., H] f32 | bf16 (may alias x)
  Tensor rstd;    // optional f32 [N]: saved for backward
  float eps = 1e-6f;
};

struct RmsNormBackwardArgs {
  Tensor x;       // forward input [..., H]
  Tensor weight;  // [H]
  Tensor rstd;    // f32 [N] from forward
  Tensor dy;      // [..., H]
  Tensor dx;      // [..., H] f32 | bf16 (may alias dy)
  bool accumulate_dx = false;  // dx += result (residual stream gradient) instead of dx = result
  Tensor dweight;              // optional f32 [H], accumulated (+=)
};

QN_DECLARE_OP(rmsnorm_forward, RmsNormForwardArgs)
QN_DECLARE_OP(rmsnorm_backward, RmsNormBackwardArgs)

struct RmsNormDims {
  int64_t n = 0, h = 0;
};
RmsNormDims check_rmsnorm_forward(const RmsNormForwardArgs& a);
RmsNormDims check_rmsnorm_backward(const RmsNormBackwardArgs& a);

}  // namespace qn
