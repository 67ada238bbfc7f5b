// The LM head's loss over vocabulary chunks, composed from ops (the model's head, the op tests and
// the lm_head bench share it): for rows h [N, H] and head weight W [V, H], per row block of at most
// `row_block` rows and per vocabulary chunk c of `vocab_chunk` columns:
//   z = h W[c]^T (gemm, f32)  ->  cross_entropy_online_chunk  ->  acc += P W[c] (gemm, beta 1)
// then cross_entropy_online_finish: row losses, loss_sum / count, and with dx the gradient
// dx[rows[i]] = (softmax(h_i W^T) - onehot(y_i)) W * grad_scale. Never more than one
// [row_block x vocab_chunk] chunk of logits and probs (see qn/ops/cross_entropy_online.h).
#pragma once
#include <functional>
#include <string>
#include "qn/context.h"
#include "qn/tensor.h"

namespace qn {
namespace model {

struct LmHeadLossArgs {
  Tensor hidden;    // [N, H] f32 | bf16: the rows that have a target
  Tensor weight;    // [V, H], hidden's dtype
  Tensor labels;    // i32 [N]
  Tensor row_loss;  // f32 [N], written
  Tensor loss_sum;  // f32 [1], accumulated
  Tensor count;     // i32 [1], accumulated
  Tensor dx;        // optional [M, H]: the gradient rows (probs are kept in dx's dtype)
  Tensor rows;      // optional i32 [N]: dx row of each row (default: i)
  float grad_scale = 1.f;
  int64_t vocab_chunk = 4096;
  int64_t row_block = 4096;
};

// Scratch tensors by role (the model passes its workspace; others may allocate).
using ScratchFn = std::function<Tensor(const std::string& role, DType dt, const Shape& shape)>;
// Called after each step with "head_gemm_fwd", "ce" or "head_gemm_bwd" (profiling); may be empty.
using TickFn = std::function<void(const char* what)>;

void lm_head_loss(Context& ctx, const LmHeadLossArgs& a, const ScratchFn& scratch, const TickFn& tick = {});

// The default vocabulary chunk for `rows` rows on ctx's device: a [rows x Vc] f32 chunk of about
// 4 MB on the CPU (it stays in cache between the GEMM that writes it, the chunk op and the GEMM that
// reads the probs) and 128 MB on CUDA (each GEMM fills the GPU); a multiple of 64 (aligned rows of
// any dtype), at least 128. Tuning knobs: QN_MODEL_HEAD_CHUNK_MB (the chunk's bytes, fractions
// allowed) and QN_MODEL_HEAD_VOCAB_CHUNK (the width in columns), read at every call.
int64_t default_vocab_chunk(const Context& ctx, int64_t rows);
constexpr int64_t kHeadRowBlock = 4096;

}  // namespace model
}  // namespace qn
