// CUDA fused cross-entropy, dlogits in place or into a separate f32/bf16 tensor (see
// qn/ops/cross_entropy.h).
//   ce_row_kernel    one block (512 threads) per row, grid-stride over rows: each thread keeps an
//                    online (max, sum of exp) over its strided columns, the block merges them
//                    (warp shuffles, then shared memory) into lse = m + log(s); thread 0 writes the
//                    row loss lse - z[y] (z[y] read by every thread before the block's first sync,
//                    so the gradient pass cannot overwrite it first); then the gradient pass
//                    dz_j = (exp(z_j - lse) - [j == y]) * grad_scale (dz = z when in place). Ignored
//                    rows: loss 0, gradient row zeroed.
//   ce_reduce_kernel (cross_entropy_common.cuh) adds the row losses in double in a fixed order.
// exp/log are the fast-math forms (~2 ulp); the per-row loss agrees with the CPU to ~1e-6 relative.
#include "qn/ops/cross_entropy.h"
#include "qn/tensor.h"
#include "cross_entropy_common.cuh"
#include "xf_common.cuh"

namespace qn {
namespace cuda {
namespace {

constexpr int kThreads = 512;

// Merges (m2, s2) into (m, s): both are (max, sum of exp(x - max)) over disjoint sets.
__device__ __forceinline__ void merge(float& m, float& s, float m2, float s2) {
  const float mm = fmaxf(m, m2);
  if (mm == -INFINITY) return;  // both empty
  s = s * __expf(m - mm) + s2 * __expf(m2 - mm);
  m = mm;
}

template <typename T, typename G>
__global__ void __launch_bounds__(kThreads) ce_row_kernel(const T* z, G* dz, const int* __restrict__ labels,
                                                          float* __restrict__ row_loss, long long n, long long v,
                                                          int ignore_index, float grad_scale, bool grad) {
  __shared__ float sm[32], ss[32];
  __shared__ float lse_sh;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (long long r = blockIdx.x; r < n; r += gridDim.x) {
    const T* zr = z + r * v;
    G* dzr = dz + r * v;
    const int y = labels[r];
    if (ignored(y, ignore_index, v)) {
      if (threadIdx.x == 0) row_loss[r] = 0.f;
      if (grad)
        for (long long j = threadIdx.x; j < v; j += kThreads) dzr[j] = xf::from_f32<G>(0.f);
      continue;
    }
    const float zy = xf::to_f32(zr[y]);
    float m = -INFINITY, s = 0.f;
    for (long long j = threadIdx.x; j < v; j += kThreads) {
      const float x = xf::to_f32(zr[j]);
      if (x > m) {
        s = s * __expf(m - x) + 1.f;
        m = x;
      } else if (x != -INFINITY) {  // -inf adds nothing (and -inf - -inf would be NaN)
        s += __expf(x - m);
      }
    }
    for (int o = 16; o > 0; o >>= 1) {
      const float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
      merge(m, s, m2, s2);
    }
    if (lane == 0) sm[warp] = m, ss[warp] = s;
    __syncthreads();
    if (warp == 0) {
      m = lane < kThreads / 32 ? sm[lane] : -INFINITY;
      s = lane < kThreads / 32 ? ss[lane] : 0.f;
      for (int o = 16; o > 0; o >>= 1) {
        const float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
        merge(m, s, m2, s2);
      }
      if (lane == 0) {
        lse_sh = m + __logf(s);
        row_loss[r] = lse_sh - zy;
      }
    }
    __syncthreads();
    const float lse = lse_sh;
    if (grad)
      for (long long j = threadIdx.x; j < v; j += kThreads) {
        const float p = __expf(xf::to_f32(zr[j]) - lse);
        dzr[j] = xf::from_f32<G>(((j == y) ? p - 1.f : p) * grad_scale);
      }
    __syncthreads();  // sm/ss/lse_sh are rewritten for the next row
  }
}

}  // namespace

void cross_entropy(Context& ctx, const CrossEntropyArgs& a) {
  const CrossEntropyDims d = check_cross_entropy(a);
  if (d.n == 0) return;
  Tensor rl = a.row_loss.defined() ? a.row_loss : Tensor::empty(a.logits.ctx_ptr(), DType::F32, {d.n});
  const unsigned grid = static_cast<unsigned>(d.n < 65535 * 4 ? d.n : 65535 * 4);
  const Tensor& out = a.dlogits.defined() ? a.dlogits : a.logits;
  with_type(a.logits.dtype(), [&](auto tt) {
    with_type(out.dtype(), [&](auto gt) {
      using T = decltype(tt);
      using G = decltype(gt);
      ce_row_kernel<T, G><<<grid, kThreads, 0, stream_of(ctx)>>>(
          static_cast<const T*>(a.logits.raw()), static_cast<G*>(out.raw()), a.labels.data<int>(), rl.data<float>(),
          d.n, d.v, a.ignore_index, a.grad_scale, a.compute_grad);
    });
  });
  QN_CUDA_LAUNCHED("ce_row_kernel", ctx);
  ce_reduce_kernel<<<1, kReduceThreads, 0, stream_of(ctx)>>>(rl.data<float>(), a.labels.data<int>(), d.n, d.v,
                                                              a.ignore_index, a.loss_sum.data<float>(),
                                                              a.count.data<int>());
  QN_CUDA_LAUNCHED("ce_reduce_kernel", ctx);
}

}  // namespace cuda
}  // namespace qn
