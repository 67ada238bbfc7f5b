// Argument validation for cross_entropy_online_chunk / _finish (shared by CPU and CUDA).
#include <string>
#include "qn/ops/cross_entropy.h"
#include "qn/ops/cross_entropy_online.h"
#include "qn/ops/residual.h"

namespace qn {
namespace {

// A per-row f32 [N] vector of the same session.
void expect_row_vector(const Tensor& t, const Tensor& like, int64_t n, const char* op, const char* name) {
  expect_dtype(t, DType::F32, op, name);
  expect_same_context(like, t, op);
  QN_CHECK(t.numel() == n, Shape,
           std::string(op) + ": " + name + " " + shape_str(t.shape()) + " must hold one value per row (" +
               std::to_string(n) + ")");
}

void expect_labels(const Tensor& labels, const Tensor& like, int64_t n, const char* op) {
  expect_dtype(labels, DType::I32, op, "labels");
  expect_same_context(like, labels, op);
  QN_CHECK(labels.numel() == n, Shape,
           std::string(op) + ": labels " + shape_str(labels.shape()) + " must hold one label per row (" +
               std::to_string(n) + ")");
}

void expect_matrix(const Tensor& t, int64_t rows, int64_t cols, const char* op, const char* name) {
  QN_CHECK(t.ndim() == 2 && t.dim(0) == rows && t.dim(1) == cols, Shape,
           std::string(op) + ": " + name + " must be [" + std::to_string(rows) + ", " + std::to_string(cols) +
               "], got " + shape_str(t.shape()));
}

}  // namespace

CrossEntropyOnlineDims check_cross_entropy_online_chunk(const CrossEntropyOnlineChunkArgs& a) {
  const char* op = "cross_entropy_online_chunk";
  expect_dtype(a.logits, DType::F32, op, "logits");
  QN_CHECK(a.logits.ndim() == 2 && a.logits.dim(1) > 0, Shape,
           std::string(op) + ": logits must be [N, Vc], got " + shape_str(a.logits.shape()));
  CrossEntropyOnlineDims d;
  d.n = a.logits.dim(0);
  d.vc = a.logits.dim(1);
  QN_CHECK(a.vocab > 0 && a.v0 >= 0 && a.v0 + d.vc <= a.vocab, Arg,
           std::string(op) + ": the chunk [" + std::to_string(a.v0) + ", " + std::to_string(a.v0 + d.vc) +
               ") must lie inside the vocabulary [0, " + std::to_string(a.vocab) + ")");
  expect_labels(a.labels, a.logits, d.n, op);
  expect_row_vector(a.row_max, a.logits, d.n, op, "row_max");
  expect_row_vector(a.row_sum, a.logits, d.n, op, "row_sum");
  expect_row_vector(a.target_logit, a.logits, d.n, op, "target_logit");
  if (a.probs.defined()) {
    expect_f32_or_bf16(a.probs, op, "probs");
    expect_same_context(a.logits, a.probs, op);
    expect_matrix(a.probs, d.n, d.vc, op, "probs");
  }
  if (a.acc.defined()) {
    expect_dtype(a.acc, DType::F32, op, "acc");
    expect_same_context(a.logits, a.acc, op);
    QN_CHECK(a.acc.ndim() == 2 && a.acc.dim(0) == d.n && a.acc.dim(1) > 0, Shape,
             std::string(op) + ": acc must be [" + std::to_string(d.n) + ", H], got " + shape_str(a.acc.shape()));
    d.h = a.acc.dim(1);
  }
  return d;
}

CrossEntropyOnlineDims check_cross_entropy_online_finish(const CrossEntropyOnlineFinishArgs& a) {
  const char* op = "cross_entropy_online_finish";
  expect_dtype(a.labels, DType::I32, op, "labels");
  CrossEntropyOnlineDims d;
  d.n = a.labels.numel();
  QN_CHECK(a.vocab > 0, Arg, std::string(op) + ": vocab must be positive");
  expect_row_vector(a.row_max, a.labels, d.n, op, "row_max");
  expect_row_vector(a.row_sum, a.labels, d.n, op, "row_sum");
  expect_row_vector(a.target_logit, a.labels, d.n, op, "target_logit");
  expect_loss_accumulators(a.loss_sum, a.count, a.labels, op);
  if (a.row_loss.defined()) expect_row_vector(a.row_loss, a.labels, d.n, op, "row_loss");
  const bool grad = a.acc.defined() || a.weight.defined() || a.dx.defined();
  if (!grad) {
    QN_CHECK(!a.rows.defined(), Arg, std::string(op) + ": rows is only used with a gradient (acc, weight, dx)");
    return d;
  }
  QN_CHECK(a.acc.defined() && a.weight.defined() && a.dx.defined(), Arg,
           std::string(op) + ": the gradient needs acc, weight and dx together");
  expect_dtype(a.acc, DType::F32, op, "acc");
  expect_same_context(a.labels, a.acc, op);
  QN_CHECK(a.acc.ndim() == 2 && a.acc.dim(0) == d.n && a.acc.dim(1) > 0, Shape,
           std::string(op) + ": acc must be [" + std::to_string(d.n) + ", H], got " + shape_str(a.acc.shape()));
  d.h = a.acc.dim(1);
  expect_f32_or_bf16(a.weight, op, "weight");
  expect_same_context(a.labels, a.weight, op);
  expect_matrix(a.weight, a.vocab, d.h, op, "weight");
  expect_f32_or_bf16(a.dx, op, "dx");
  expect_same_context(a.labels, a.dx, op);
  QN_CHECK(a.dx.ndim() == 2 && a.dx.dim(1) == d.h, Shape,
           std::string(op) + ": dx must be [M, " + std::to_string(d.h) + "], got " + shape_str(a.dx.shape()));
  d.m = a.dx.dim(0);
  if (a.rows.defined()) {
    expect_dtype(a.rows, DType::I32, op, "rows");
    expect_same_context(a.labels, a.rows, op);
    QN_CHECK(a.rows.numel() == d.n, Shape,
             std::string(op) + ": rows " + shape_str(a.rows.shape()) + " must hold one row index per row (" +
                 std::to_string(d.n) + ")");
  } else {
    QN_CHECK(d.m == d.n, Shape,
             std::string(op) + ": without rows, dx " + shape_str(a.dx.shape()) + " must have one row per label (" +
                 std::to_string(d.n) + ")");
  }
  return d;
}

}  // namespace qn
