// Per-device memory accounting: bytes currently allocated through our allocators and the peak.
#pragma once
#include <cstddef>
#include "qn/device.h"

namespace qn {

struct MemoryStats {
  size_t allocated = 0;  // bytes live now
  size_t peak = 0;       // high-water mark since start or the last reset
  size_t allocations = 0;  // live allocation count
};

void memory_on_alloc(const Device& d, size_t bytes);
void memory_on_free(const Device& d, size_t bytes);
MemoryStats memory_stats(const Device& d);
void memory_reset_peak(const Device& d);

}  // namespace qn
