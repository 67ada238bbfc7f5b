// Per-device allocation counters (atomics; CPU is slot 0, cuda:N is slot N+1).
#include "qn/memory_stats.h"
#include <atomic>

namespace qn {
namespace {

constexpr int kSlots = 65;
struct Counters {
  std::atomic<size_t> allocated{0}, peak{0}, allocations{0};
};
Counters g_counters[kSlots];

Counters& slot(const Device& d) {
  const int i = d.type == DeviceType::CPU ? 0 : 1 + (d.index % (kSlots - 1));
  return g_counters[i];
}

}  // namespace

void memory_on_alloc(const Device& d, size_t bytes) {
  Counters& c = slot(d);
  const size_t now = c.allocated.fetch_add(bytes) + bytes;
  c.allocations.fetch_add(1);
  size_t prev = c.peak.load();
  while (now > prev && !c.peak.compare_exchange_weak(prev, now)) {
  }
}

void memory_on_free(const Device& d, size_t bytes) {
  Counters& c = slot(d);
  c.allocated.fetch_sub(bytes);
  c.allocations.fetch_sub(1);
}

MemoryStats memory_stats(const Device& d) {
  Counters& c = slot(d);
  MemoryStats s;
  s.allocated = c.allocated.load();
  s.peak = c.peak.load();
  s.allocations = c.allocations.load();
  return s;
}

void memory_reset_peak(const Device& d) {
  Counters& c = slot(d);
  c.peak.store(c.allocated.load());
}

}  // namespace qn
