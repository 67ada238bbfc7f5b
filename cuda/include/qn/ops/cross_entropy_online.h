// LM head + cross-entropy fused over VOCABULARY chunks with an online softmax (the flash-attention
// recurrence applied to the vocabulary), so neither [tokens x vocab] logits nor [tokens x vocab]
// dlogits ever exist: the caller keeps one [N x Vc] chunk at a time (DESIGN.md 4).
// CPU: cuda/cpu/cross_entropy_online.cpp, CUDA: cuda/kernels/cross_entropy_online.cu,
// tests: cuda/tests/test_cross_entropy_online.cpp. Reference: torch.nn.functional.cross_entropy
// (reduction "sum", ignore_index) of h W^T, and its gradient (softmax - onehot) W with respect to h.
//
// The caller's loop, for hidden rows h [N, H] and head weight W [V, H]:
//   for each vocabulary chunk c = [v0, v0 + Vc):
//     z    = h W[c]^T                               (gemm, f32 [N, Vc])
//     cross_entropy_online_chunk(z, v0, ...)         (state m, s, z_y; probs P; acc rescaled)
//     acc += P W[c]                                  (gemm with beta = 1, only with a gradient)
//   cross_entropy_online_finish(...)                 (loss, and dh = (acc / s - W[y]) * grad_scale)
//
// cross_entropy_online_chunk, per row r with label y (ignored: y == ignore_index or y outside
// [0, vocab)):
//   v0 == 0 starts the row: m_old = -inf, s_old = 0, z_y = 0, acc row = 0 (whatever it held).
//   m_new = max(m_old, max_j z_j);  a = exp(m_old - m_new)  (0 on the first chunk)
//   P_j   = exp(z_j - m_new)        (f32, rounded once to the dtype of probs; P <= 1)
//   s_new = s_old a + sum_j P_j     (the sum uses the unrounded f32 P_j)
//   acc   = acc a                    (skipped when a == 1)
//   z_y   = z[y - v0] when y falls in this chunk
//   Ignored rows: P row = 0, acc row = 0 on the first chunk and untouched after, state untouched
//   after the first chunk.
// cross_entropy_online_finish, per row i (ignored rows: loss 0, not counted, dx row 0):
//   loss_i = m + log(s) - z_y;  loss_sum += sum_i loss_i (in double, in row order on the CPU, a
//   fixed-order tree on CUDA: deterministic); count += non-ignored rows; row_loss[i] = loss_i.
//   With acc: dx[rows[i], :] = (acc[i, :] / s - W[y, :]) * grad_scale, computed in f32 and rounded
//   once to dx's dtype. rows absent: rows[i] = i. dx rows not listed in rows are not written; a
//   rows[i] outside [0, M) is skipped on both backends (a GPU kernel cannot raise an error).
//
// Shapes: logits f32 [N, Vc]; labels i32 [N]; row_max, row_sum, target_logit f32 [N]; probs
// [N, Vc] f32 | bf16; acc f32 [N, H]; weight [V, H] f32 | bf16; dx [M, H] f32 | bf16; rows i32 [N]
// with values in [0, M); loss_sum f32 [1]; count i32 [1]; row_loss f32 [N].
#pragma once
#include <cstdint>
#include "qn/op.h"

namespace qn {

struct CrossEntropyOnlineChunkArgs {
  Tensor logits;        // f32 [N, Vc]: this chunk's logits, h W[v0 : v0 + Vc]^T
  Tensor labels;        // i32 [N], absolute vocabulary ids
  Tensor row_max;       // f32 [N], running max (state)
  Tensor row_sum;       // f32 [N], running sum of exp(z - row_max) (state)
  Tensor target_logit;  // f32 [N], z[y] once its chunk has passed (state)
  int64_t v0 = 0;       // first vocabulary id of this chunk; 0 starts every row
  int64_t vocab = 0;    // V: labels outside [0, V) are ignored; v0 + Vc <= V
  Tensor probs;         // optional [N, Vc] f32 | bf16: exp(z - m_new), 0 for ignored rows
  Tensor acc;           // optional f32 [N, H]: rescaled in place by exp(m_old - m_new)
  int32_t ignore_index = -100;
};

struct CrossEntropyOnlineFinishArgs {
  Tensor labels;        // i32 [N]
  Tensor row_max, row_sum, target_logit;  // f32 [N], the state after the last chunk
  int64_t vocab = 0;
  Tensor loss_sum;      // f32 [1], accumulated (+=)
  Tensor count;         // i32 [1], accumulated (+=)
  Tensor row_loss;      // optional f32 [N], written
  // Gradient with respect to h (all three or none):
  Tensor acc;           // f32 [N, H]: sum over chunks of P W[c], as rescaled by the chunk op
  Tensor weight;        // [V, H] f32 | bf16: the head weight
  Tensor dx;            // [M, H] f32 | bf16: rows[i] of it written
  Tensor rows;          // optional i32 [N]: destination row of dx for each row (default: i)
  float grad_scale = 1.f;
  int32_t ignore_index = -100;
};

QN_DECLARE_OP(cross_entropy_online_chunk, CrossEntropyOnlineChunkArgs)
QN_DECLARE_OP(cross_entropy_online_finish, CrossEntropyOnlineFinishArgs)

struct CrossEntropyOnlineDims {
  int64_t n = 0, vc = 0, h = 0, m = 0;
};
CrossEntropyOnlineDims check_cross_entropy_online_chunk(const CrossEntropyOnlineChunkArgs& a);
CrossEntropyOnlineDims check_cross_entropy_online_finish(const CrossEntropyOnlineFinishArgs& a);

}  // namespace qn
