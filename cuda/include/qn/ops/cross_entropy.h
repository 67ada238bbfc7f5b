// Fused cross-entropy over given logits [N, V], writing dlogits in place (or into a separate tensor
// of another dtype, e.g. bf16 for a bf16 backward GEMM, which saves a cast pass). The model's LM
// head does not use it: it walks the vocabulary in chunks with cross_entropy_online.h instead, so
// no [tokens x vocab] logits exist; this op serves callers that hold whole logits rows.
// CPU: cuda/cpu/cross_entropy.cpp, CUDA: cuda/kernels/cross_entropy.cu,
// tests: cuda/tests/test_cross_entropy.cpp. Reference: torch.nn.functional.cross_entropy
// (reduction "sum", ignore_index), with the caller dividing by the token count.
//
// For each row r with label y = labels[r] (labels already shifted by the caller):
//   m = max_j z_j;  lse = m + log(sum_j exp(z_j - m))        (f32, z = f32(logits[r, :]))
//   loss_r = lse - z_y
//   dlogits[r, j] = (exp(z_j - lse) - [j == y]) * grad_scale (computed in f32, rounded once to the
//                   dtype of dlogits: the logits' own when in place)
// Ignored rows (y == ignore_index, or y outside [0, V), which is treated the same way): loss 0,
// not counted, dlogits row = 0.
// loss_sum += sum_r loss_r (summed in double in row order, added once; CUDA: a fixed-order tree in
// double, so both are deterministic run to run); count += number of non-ignored rows.
// compute_grad = false (evaluation): logits are left untouched.
//
// Shapes: logits [N, V] (or [..., V]; rows = product of leading dims); labels i32 [N] (any shape with
// N elements); loss_sum f32 [1]; count i32 [1]; row_loss optional f32 [N]; dlogits optional, the
// logits' shape.
// DTypes: logits f32 or bf16; dlogits f32 or bf16 (independently of logits).
#pragma once
#include <cstdint>
#include "qn/op.h"

namespace qn {

struct CrossEntropyArgs {
  Tensor logits;    // [N, V] f32 | bf16; overwritten with dlogits when compute_grad
  Tensor labels;    // i32 [N]
  Tensor loss_sum;  // f32 [1], accumulated (+=)
  Tensor count;     // i32 [1], accumulated (+=)
  Tensor row_loss;  // optional f32 [N]: per-row loss (0 for ignored rows), written
  float grad_scale = 1.f;     // e.g. 1 / (non-ignored tokens in the whole batch)
  int32_t ignore_index = -100;
  bool compute_grad = true;
  Tensor dlogits;   // optional [N, V] f32 | bf16: with compute_grad the gradient goes here and the
                    // logits are left untouched; absent: in place
};

QN_DECLARE_OP(cross_entropy, CrossEntropyArgs)

struct CrossEntropyDims {
  int64_t n = 0, v = 0;
};
CrossEntropyDims check_cross_entropy(const CrossEntropyArgs& a);
// loss_sum f32 [1] and count i32 [1] in like's session (shared with cross_entropy_online).
void expect_loss_accumulators(const Tensor& loss_sum, const Tensor& count, const Tensor& like, const char* op);

}  // namespace qn
