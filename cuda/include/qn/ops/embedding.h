// Token embedding: gather rows of a frozen table, and (for completeness) the scatter-add backward.
// CPU: cuda/cpu/embedding.cpp, CUDA: cuda/kernels/embedding.cu, tests: cuda/tests/test_embedding.cpp.
//
//   embedding           out[i, :] = table[ids[i], :]                 (torch.nn.Embedding forward)
//   embedding_backward  dtable[ids[i], :] += dout[i, :]              (f32 accumulation)
//
// Shapes: table [V, H]; ids i32, any shape with N elements (e.g. [B, T]); out / dout are ids' shape
// followed by H (e.g. [B, T, H]) or any shape with N*H elements whose last dim is H.
// DTypes: table f32 or bf16; out f32 or bf16 (converted with round-to-nearest-even when the table is
// f32 and out bf16; exact otherwise). dout f32 or bf16; dtable f32.
// Ids outside [0, V): the row is written as zeros (forward) / skipped (backward) on both backends
// (a GPU kernel cannot raise an error; the data pipeline guarantees ids < vocab).
// Backward order: CPU adds rows in token order; CUDA uses f32 atomics (order not fixed).
#pragma once
#include "qn/op.h"

namespace qn {

struct EmbeddingArgs {
  Tensor table;  // [V, H] f32 | bf16
  Tensor ids;    // i32 [N] (any shape)
  Tensor out;    // [..., H] with N*H elements, f32 | bf16
};

struct EmbeddingBackwardArgs {
  Tensor ids;     // i32 [N] (any shape)
  Tensor dout;    // [..., H] with N*H elements, f32 | bf16
  Tensor dtable;  // f32 [V, H], accumulated (+=)
};

QN_DECLARE_OP(embedding, EmbeddingArgs)
QN_DECLARE_OP(embedding_backward, EmbeddingBackwardArgs)

// Checks shared by both backends (E_SHAPE / E_DTYPE / E_DEVICE naming the op).
struct EmbeddingDims {
  int64_t n = 0, v = 0, h = 0;
};
EmbeddingDims check_embedding(const EmbeddingArgs& a);
EmbeddingDims check_embedding_backward(const EmbeddingBackwardArgs& a);

}  // namespace qn
