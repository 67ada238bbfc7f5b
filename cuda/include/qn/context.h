// A Context is one session on one device: the allocator, host<->device copies and, on CUDA, the
// stream every op of the session is launched on. Ops receive the Context of their tensors.
#pragma once
#include <cstddef>
#include <memory>
#include <string>
#include "qn/device.h"

namespace qn {

class Context {
 public:
  virtual ~Context() = default;
  virtual Device device() const = 0;
  // Allocations are accounted per device (memory_stats). Throws E_OOM on failure.
  virtual void* alloc(size_t bytes) = 0;
  virtual void free(void* ptr, size_t bytes) noexcept = 0;
  virtual void copy_from_host(void* dst, const void* src, size_t bytes) = 0;
  virtual void copy_to_host(void* dst, const void* src, size_t bytes) = 0;  // waits for the copy
  virtual void copy(void* dst, const void* src, size_t bytes) = 0;          // same device
  virtual void memset(void* dst, int value, size_t bytes) = 0;
  virtual void synchronize() = 0;
  // Throws when the session can no longer run work (a sticky CUDA error happened).
  virtual void check_usable() const {}
  // CUDA stream of this session (nullptr on CPU), as void* so headers stay CUDA-free.
  virtual void* stream() const { return nullptr; }
};

// Opens a new session on a device. CPU: always works. CUDA: throws E_NO_DEVICE with the reason
// when the backend is not compiled in, there is no driver, or the index is out of range.
std::shared_ptr<Context> open_context(const Device& device);
// The same checks without opening anything: throws what open_context would (E_NO_DEVICE) when the
// device cannot be used (memoryStats of a device that does not exist).
void expect_device_present(const Device& device);

}  // namespace qn
