// A tensor: a typed, shaped view on device memory owned by a Storage. Storage frees itself through
// the Context that allocated it, so a tensor can outlive the JS handle that created it while an
// asynchronous op still uses it.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>
#include "qn/context.h"
#include "qn/dtype.h"

namespace qn {

struct Storage {
  std::shared_ptr<Context> ctx;
  void* ptr = nullptr;
  size_t bytes = 0;
  Storage(std::shared_ptr<Context> c, size_t n);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
};

using Shape = std::vector<int64_t>;

int64_t shape_numel(const Shape& s);
std::string shape_str(const Shape& s);

class Tensor {
 public:
  Tensor() = default;
  static Tensor empty(const std::shared_ptr<Context>& ctx, DType dtype, const Shape& shape);

  bool defined() const { return storage_ != nullptr; }
  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int64_t dim(int i) const { return shape_.at(i < 0 ? shape_.size() + i : i); }
  int ndim() const { return static_cast<int>(shape_.size()); }
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  Context& ctx() const { return *storage_->ctx; }
  const std::shared_ptr<Context>& ctx_ptr() const { return storage_->ctx; }
  Device device() const { return storage_->ctx->device(); }
  void* raw() const { return static_cast<char*>(storage_->ptr) + offset_; }
  template <typename T> T* data() const { return static_cast<T*>(raw()); }
  const std::shared_ptr<Storage>& storage() const { return storage_; }

  // A view of the same bytes with another shape (same element count).
  Tensor reshape(const Shape& shape) const;
  // Rows [begin, end) of the first dimension, sharing storage.
  Tensor slice_rows(int64_t begin, int64_t end) const;

 private:
  std::shared_ptr<Storage> storage_;
  size_t offset_ = 0;
  DType dtype_ = DType::F32;
  Shape shape_;
};

// Argument checks shared by every op (throw E_DTYPE / E_SHAPE / E_DEVICE with the op name).
void expect_dtype(const Tensor& t, DType dt, const char* op, const char* name);
void expect_shape(const Tensor& t, const Shape& s, const char* op, const char* name);
void expect_same_context(const Tensor& a, const Tensor& b, const char* op);

}  // namespace qn
