// Device code shared by the cross-entropy ops (cross_entropy.cu, cross_entropy_online.cu).
//   ignored           a label that is ignore_index or outside [0, v)
//   ce_reduce_kernel  one block adds the row losses of non-ignored rows in double, in a fixed order
//                     (strided per thread, then a shared-memory tree), adds the total to loss_sum
//                     once and the count to count: deterministic run to run, no atomics.
#pragma once
#include "xf_common.cuh"

namespace qn {
namespace cuda {
namespace {

constexpr int kReduceThreads = 1024;

__device__ __forceinline__ bool ignored(int y, int ignore_index, long long v) {
  return y == ignore_index || y < 0 || y >= v;
}

__global__ void __launch_bounds__(kReduceThreads) ce_reduce_kernel(const float* __restrict__ row_loss,
                                                                   const int* __restrict__ labels, long long n,
                                                                   long long v, int ignore_index, float* loss_sum,
                                                                   int* count) {
  __shared__ double sd[kReduceThreads];
  __shared__ int sc[kReduceThreads];
  double s = 0;
  int c = 0;
  for (long long r = threadIdx.x; r < n; r += kReduceThreads)
    if (!ignored(labels[r], ignore_index, v)) s += row_loss[r], ++c;
  sd[threadIdx.x] = s;
  sc[threadIdx.x] = c;
  __syncthreads();
  for (int w = kReduceThreads / 2; w > 0; w >>= 1) {
    if (threadIdx.x < w) {
      sd[threadIdx.x] += sd[threadIdx.x + w];
      sc[threadIdx.x] += sc[threadIdx.x + w];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    loss_sum[0] = (float)((double)loss_sum[0] + sd[0]);
    count[0] += sc[0];
  }
}

}  // namespace
}  // namespace cuda
}  // namespace qn
