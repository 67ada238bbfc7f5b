// Argument validation for embedding / embedding_backward (shared by CPU and CUDA).
#include "qn/ops/embedding.h"
#include "qn/ops/residual.h"

namespace qn {
namespace {

// rows x H view of out/dout: last dim H and N*H elements.
void expect_rows(const Tensor& t, int64_t n, int64_t h, const char* op, const char* name) {
  QN_CHECK(t.ndim() >= 1 && t.dim(-1) == h && t.numel() == n * h, Shape,
           std::string(op) + ": " + name + " " + shape_str(t.shape()) + " must hold " + std::to_string(n) +
               " rows of " + std::to_string(h));
}

}  // namespace

EmbeddingDims check_embedding(const EmbeddingArgs& a) {
  const char* op = "embedding";
  expect_f32_or_bf16(a.table, op, "table");
  expect_dtype(a.ids, DType::I32, op, "ids");
  expect_f32_or_bf16(a.out, op, "out");
  expect_same_context(a.table, a.ids, op);
  expect_same_context(a.table, a.out, op);
  QN_CHECK(a.table.ndim() == 2, Shape, std::string(op) + ": table must be [V, H], got " + shape_str(a.table.shape()));
  EmbeddingDims d{a.ids.numel(), a.table.dim(0), a.table.dim(1)};
  expect_rows(a.out, d.n, d.h, op, "out");
  return d;
}

EmbeddingDims check_embedding_backward(const EmbeddingBackwardArgs& a) {
  const char* op = "embedding_backward";
  expect_dtype(a.ids, DType::I32, op, "ids");
  expect_f32_or_bf16(a.dout, op, "dout");
  expect_dtype(a.dtable, DType::F32, op, "dtable");
  expect_same_context(a.dtable, a.ids, op);
  expect_same_context(a.dtable, a.dout, op);
  QN_CHECK(a.dtable.ndim() == 2, Shape, std::string(op) + ": dtable must be [V, H], got " + shape_str(a.dtable.shape()));
  EmbeddingDims d{a.ids.numel(), a.dtable.dim(0), a.dtable.dim(1)};
  expect_rows(a.dout, d.n, d.h, op, "dout");
  return d;
}

}  // namespace qn
