// Tensor and Storage: allocation through the Context, views, and shared argument checks.
#include "qn/tensor.h"
#include <sstream>
#include "qn/error.h"

namespace qn {

Storage::Storage(std::shared_ptr<Context> c, size_t n) : ctx(std::move(c)), bytes(n) {
  ptr = ctx->alloc(n);
}

Storage::~Storage() {
  if (ptr) ctx->free(ptr, bytes);
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

std::string shape_str(const Shape& s) {
  std::ostringstream o;
  o << "[";
  for (size_t i = 0; i < s.size(); ++i) o << (i ? ", " : "") << s[i];
  o << "]";
  return o.str();
}

Tensor Tensor::empty(const std::shared_ptr<Context>& ctx, DType dtype, const Shape& shape) {
  for (int64_t d : shape)
    QN_CHECK(d >= 0, Shape, "negative dimension in shape " + shape_str(shape));
  QN_CHECK(shape.size() <= 8, Shape, "at most 8 dimensions are supported, got " + shape_str(shape));
  // element and byte counts must fit in 2^62 (a product that wraps would allocate a wrong size)
  int64_t n = 1;
  const int64_t limit = (int64_t(1) << 62) / static_cast<int64_t>(dtype_size(dtype));
  for (int64_t d : shape) {
    QN_CHECK(d == 0 || n <= limit / d, Shape, "shape " + shape_str(shape) + " has too many elements");
    n *= d;
  }
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = shape;
  const size_t bytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
  t.storage_ = std::make_shared<Storage>(ctx, bytes);
  return t;
}

Tensor Tensor::reshape(const Shape& shape) const {
  QN_CHECK(shape_numel(shape) == numel(), Shape,
           "cannot reshape " + shape_str(shape_) + " to " + shape_str(shape));
  Tensor t = *this;
  t.shape_ = shape;
  return t;
}

Tensor Tensor::slice_rows(int64_t begin, int64_t end) const {
  QN_CHECK(ndim() >= 1 && begin >= 0 && begin <= end && end <= shape_[0], Shape,
           "row slice [" + std::to_string(begin) + ", " + std::to_string(end) + ") out of " + shape_str(shape_));
  Tensor t = *this;
  const int64_t row = numel() / (shape_[0] ? shape_[0] : 1);
  t.offset_ += static_cast<size_t>(begin * row) * dtype_size(dtype_);
  t.shape_[0] = end - begin;
  return t;
}

void expect_dtype(const Tensor& t, DType dt, const char* op, const char* name) {
  QN_CHECK(t.defined(), Arg, std::string(op) + ": " + name + " is missing");
  QN_CHECK(t.dtype() == dt, DType,
           std::string(op) + ": " + name + " must be " + dtype_name(dt) + ", got " + dtype_name(t.dtype()));
}

void expect_shape(const Tensor& t, const Shape& s, const char* op, const char* name) {
  QN_CHECK(t.defined(), Arg, std::string(op) + ": " + name + " is missing");
  QN_CHECK(t.shape() == s, Shape,
           std::string(op) + ": " + name + " must have shape " + shape_str(s) + ", got " + shape_str(t.shape()));
}

void expect_same_context(const Tensor& a, const Tensor& b, const char* op) {
  QN_CHECK(a.defined() && b.defined(), Arg, std::string(op) + ": missing tensor");
  QN_CHECK(a.ctx_ptr() == b.ctx_ptr(), Device,
           std::string(op) + ": tensors belong to different sessions/devices (" + a.device().str() + " vs " +
               b.device().str() + ")");
}

}  // namespace qn
