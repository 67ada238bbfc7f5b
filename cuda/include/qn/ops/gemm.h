// Dense matrix multiply: C[M,N] = alpha * op(A) op(B) + beta * C (+ bias), row-major, fp32
// accumulation. CPU: cuda/cpu/gemm*.cpp (packed, cache-blocked, AVX-512/AVX-512-BF16/AVX2 kernels),
// CUDA: cuda/kernels/gemm.cu (cuBLASLt when loaded, else its own tiled kernels).
//
// Shapes: every tensor is viewed as a 2-D row-major matrix whose column count is its LAST dim and
// whose row count is the product of the others (so x [B, T, H] is [B*T, H]).
//   op(A) = A   : A is [M, K]          op(A) = A^T : A is [K, M]   (trans_a)
//   op(B) = B   : B is [K, N]          op(B) = B^T : B is [N, K]   (trans_b)
//   C is [M, N].  Typical uses: y = x W^T is gemm{x, W, y, trans_b=true};
//   dx = dy W is gemm{dy, W, dx}; dW = dy^T x is gemm{dy, x, dW, trans_a=true}.
// DTypes: A and B both f32 or both bf16; C f32 or bf16; bias (optional) f32 or bf16 [N].
// Precision: products of the inputs as given (bf16 x bf16 products are exact in fp32), summed in
// fp32; alpha, beta, bias applied in fp32; one rounding when C is bf16. When beta == 0, C is not
// read (NaN in C does not propagate). K == 0 gives C = beta * C + bias.
// Bias: added once per row after alpha/beta: C = alpha*op(A)op(B) + beta*C + bias.
#pragma once
#include "qn/op.h"

namespace qn {

struct GemmArgs {
  Tensor a, b, c;
  bool trans_a = false, trans_b = false;
  float alpha = 1.f, beta = 0.f;
  Tensor bias;  // optional [N]
};

QN_DECLARE_OP(gemm, GemmArgs)

// Resolved sizes of a gemm call. check_gemm validates (E_SHAPE / E_DTYPE / E_DEVICE / E_ARG,
// messages name the op and the tensors) and returns them.
struct GemmDims {
  int64_t m = 0, n = 0, k = 0;
};
GemmDims check_gemm(const GemmArgs& a);

// Rows and columns of a tensor viewed as a matrix (see above). A 1-D tensor is one row.
int64_t matrix_rows(const Tensor& t);
int64_t matrix_cols(const Tensor& t);

}  // namespace qn
