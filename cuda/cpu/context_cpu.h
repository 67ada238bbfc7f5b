// CPU implementation of qn::Context.
#pragma once
#include "qn/context.h"

namespace qn {

class CpuContext final : public Context {
 public:
  Device device() const override { return Device{}; }
  void* alloc(size_t bytes) override;
  void free(void* ptr, size_t bytes) noexcept override;
  void copy_from_host(void* dst, const void* src, size_t bytes) override;
  void copy_to_host(void* dst, const void* src, size_t bytes) override;
  void copy(void* dst, const void* src, size_t bytes) override;
  void memset(void* dst, int value, size_t bytes) override;
  void synchronize() override {}
};

}  // namespace qn
