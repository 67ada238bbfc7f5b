// SwiGLU activation of the Qwen2 MLP: h = silu(gate) * up, forward and backward.
// CPU: cuda/cpu/swiglu.cpp, CUDA: cuda/kernels/swiglu.cu, tests: cuda/tests/test_swiglu.cpp.
//
//   sg = 1 / (1 + exp(-g));  h = g * sg * u
//   dgate = dh * u * sg * (1 + g * (1 - sg));   dup = dh * g * sg
// Precision: fp32 math, one rounding per stored output (transformers' bf16 eager rounds silu(g) to
// bf16 before the product; we do not: this is the more accurate, fused form).
// Shapes: all tensors have the same element count (treated as flat; typically [M, F]).
// DTypes: each tensor f32 or bf16 independently. Aliasing: h may alias gate or up; dgate may alias
// gate or dh, dup may alias up or dh (every element is read before the same index is written),
// as long as the aliased tensors have the same dtype.
#pragma once
#include "qn/op.h"

namespace qn {

struct SwigluForwardArgs {
  Tensor gate, up;  // [M, F] f32 | bf16
  Tensor h;         // [M, F] f32 | bf16
};

struct SwigluBackwardArgs {
  Tensor gate, up;   // forward inputs
  Tensor dh;         // gradient of h
  Tensor dgate, dup; // written
};

QN_DECLARE_OP(swiglu_forward, SwigluForwardArgs)
QN_DECLARE_OP(swiglu_backward, SwigluBackwardArgs)

int64_t check_swiglu_forward(const SwigluForwardArgs& a);   // returns the element count
int64_t check_swiglu_backward(const SwigluBackwardArgs& a);

}  // namespace qn
