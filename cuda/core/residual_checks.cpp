// Argument validation for residual_add (shared by CPU and CUDA) and the f32|bf16 check shared by
// the transformer op families.
#include "qn/ops/residual.h"

namespace qn {

void expect_f32_or_bf16(const Tensor& t, const char* op, const char* name) {
  QN_CHECK(t.defined(), Arg, std::string(op) + ": " + name + " is missing");
  QN_CHECK(t.dtype() == DType::F32 || t.dtype() == DType::BF16, DType,
           std::string(op) + ": " + name + " must be f32 or bf16, got " + dtype_name(t.dtype()));
}

int64_t check_residual_add(const ResidualAddArgs& a) {
  const char* op = "residual_add";
  for (const Tensor* t : {&a.a, &a.b, &a.y}) {
    const char* name = t == &a.a ? "a" : t == &a.b ? "b" : "y";
    expect_f32_or_bf16(*t, op, name);
    expect_same_context(a.y, *t, op);
    QN_CHECK(t->numel() == a.y.numel(), Shape,
             std::string(op) + ": " + name + " " + shape_str(t->shape()) + " and y " + shape_str(a.y.shape()) +
                 " differ in size");
  }
  return a.y.numel();
}

}  // namespace qn
