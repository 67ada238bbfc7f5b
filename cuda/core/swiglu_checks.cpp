// Argument validation for swiglu_forward / swiglu_backward (shared by CPU and CUDA).
#include "qn/ops/residual.h"
#include "qn/ops/swiglu.h"

namespace qn {
namespace {

// Every tensor f32 or bf16, same session and element count as `ref`.
void expect_flat_like(const Tensor& ref, const Tensor& t, const char* op, const char* name) {
  expect_f32_or_bf16(t, op, name);
  expect_same_context(ref, t, op);
  QN_CHECK(t.numel() == ref.numel(), Shape,
           std::string(op) + ": " + name + " " + shape_str(t.shape()) + " and gate " + shape_str(ref.shape()) +
               " differ in size");
}

}  // namespace

int64_t check_swiglu_forward(const SwigluForwardArgs& a) {
  const char* op = "swiglu_forward";
  expect_flat_like(a.gate, a.gate, op, "gate");
  expect_flat_like(a.gate, a.up, op, "up");
  expect_flat_like(a.gate, a.h, op, "h");
  return a.gate.numel();
}

int64_t check_swiglu_backward(const SwigluBackwardArgs& a) {
  const char* op = "swiglu_backward";
  expect_flat_like(a.gate, a.gate, op, "gate");
  expect_flat_like(a.gate, a.up, op, "up");
  expect_flat_like(a.gate, a.dh, op, "dh");
  expect_flat_like(a.gate, a.dgate, op, "dgate");
  expect_flat_like(a.gate, a.dup, op, "dup");
  return a.gate.numel();
}

}  // namespace qn
