// CPU thread pool. parallel_for splits [0, n) into chunks of at least `grain` items and runs them
// on the pool's workers plus the calling thread. Nested calls run serially on the caller.
#pragma once
#include <cstdint>
#include <functional>

namespace qn {

int num_threads();
// 0 = one per hardware thread. Takes effect for the next parallel_for.
void set_num_threads(int n);
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t begin, int64_t end)>& fn);

}  // namespace qn
