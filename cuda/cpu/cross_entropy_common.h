// Host code shared by the CPU cross-entropy ops (cross_entropy.cpp, cross_entropy_online.cpp); the
// twin of cuda/kernels/cross_entropy_common.cuh.
//   ce_ignored         a label that is ignore_index or outside [0, vocab)
//   add_row_losses     loss_sum += the row losses of non-ignored rows, summed in double in row order
//                      (deterministic for any thread count); count += their number
#pragma once
#include <cstdint>
#include "qn/tensor.h"

namespace qn {
namespace cpu {

inline bool ce_ignored(int32_t y, int32_t ignore_index, int64_t vocab) {
  return y == ignore_index || y < 0 || y >= vocab;
}

inline void add_row_losses(const int32_t* labels, const float* row_loss, int64_t n, int32_t ignore_index,
                           int64_t vocab, const Tensor& loss_sum, const Tensor& count) {
  double sum = 0;
  int32_t cnt = 0;
  for (int64_t r = 0; r < n; ++r) {
    if (ce_ignored(labels[r], ignore_index, vocab)) continue;
    sum += row_loss[r];
    ++cnt;
  }
  loss_sum.data<float>()[0] = static_cast<float>(loss_sum.data<float>()[0] + sum);
  count.data<int32_t>()[0] += cnt;
}

}  // namespace cpu
}  // namespace qn
