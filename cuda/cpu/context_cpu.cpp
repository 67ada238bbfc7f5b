// CPU session: 64-byte aligned host allocations, plain memcpy. Work runs on the thread pool.
#include "cpu/context_cpu.h"
#include <cstdlib>
#include <cstring>
#include <new>
#include "qn/error.h"
#include "qn/memory_stats.h"

namespace qn {

void* CpuContext::alloc(size_t bytes) {
  const size_t rounded = ((bytes ? bytes : 1) + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded);
  if (!p)
    fail(ErrorCode::Oom, "out of host memory allocating " + std::to_string(bytes) + " bytes");
  memory_on_alloc(device(), bytes);
  return p;
}

void CpuContext::free(void* ptr, size_t bytes) noexcept {
  std::free(ptr);
  memory_on_free(device(), bytes);
}

void CpuContext::copy_from_host(void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); }
void CpuContext::copy_to_host(void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); }
void CpuContext::copy(void* dst, const void* src, size_t bytes) { std::memmove(dst, src, bytes); }
void CpuContext::memset(void* dst, int value, size_t bytes) { std::memset(dst, value, bytes); }

}  // namespace qn
