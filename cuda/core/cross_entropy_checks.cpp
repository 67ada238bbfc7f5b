// Argument validation for cross_entropy (shared by CPU and CUDA).
#include "qn/ops/cross_entropy.h"
#include "qn/ops/residual.h"

namespace qn {

void expect_loss_accumulators(const Tensor& loss_sum, const Tensor& count, const Tensor& like, const char* op) {
  expect_dtype(loss_sum, DType::F32, op, "loss_sum");
  expect_same_context(like, loss_sum, op);
  QN_CHECK(loss_sum.numel() == 1, Shape, std::string(op) + ": loss_sum must be [1], got " + shape_str(loss_sum.shape()));
  expect_dtype(count, DType::I32, op, "count");
  expect_same_context(like, count, op);
  QN_CHECK(count.numel() == 1, Shape, std::string(op) + ": count must be [1], got " + shape_str(count.shape()));
}

CrossEntropyDims check_cross_entropy(const CrossEntropyArgs& a) {
  const char* op = "cross_entropy";
  expect_f32_or_bf16(a.logits, op, "logits");
  QN_CHECK(a.logits.ndim() >= 1 && a.logits.dim(-1) > 0, Shape,
           std::string(op) + ": logits must be [N, V], got " + shape_str(a.logits.shape()));
  CrossEntropyDims d{a.logits.numel() / a.logits.dim(-1), a.logits.dim(-1)};
  expect_dtype(a.labels, DType::I32, op, "labels");
  expect_same_context(a.logits, a.labels, op);
  QN_CHECK(a.labels.numel() == d.n, Shape,
           std::string(op) + ": labels " + shape_str(a.labels.shape()) + " must hold one label per logits row (" +
               std::to_string(d.n) + ", logits " + shape_str(a.logits.shape()) + ")");
  expect_loss_accumulators(a.loss_sum, a.count, a.logits, op);
  if (a.row_loss.defined()) {
    expect_dtype(a.row_loss, DType::F32, op, "row_loss");
    expect_same_context(a.logits, a.row_loss, op);
    QN_CHECK(a.row_loss.numel() == d.n, Shape,
             std::string(op) + ": row_loss " + shape_str(a.row_loss.shape()) + " must hold one value per row (" +
                 std::to_string(d.n) + ")");
  }
  if (a.dlogits.defined()) {
    expect_f32_or_bf16(a.dlogits, op, "dlogits");
    expect_same_context(a.logits, a.dlogits, op);
    QN_CHECK(a.dlogits.numel() == a.logits.numel() && a.dlogits.dim(-1) == d.v, Shape,
             std::string(op) + ": dlogits " + shape_str(a.dlogits.shape()) + " must have the logits' shape " +
                 shape_str(a.logits.shape()));
  }
  return d;
}

}  // namespace qn
