// Device helpers shared by the CUDA transformer ops (embedding, rmsnorm, rope, attention, swiglu,
// cross_entropy, residual): f32 / bf16 element access by storage type, warp and block reductions,
// and the host-side dtype dispatch (the twin of cuda/cpu/float_rows.h).
// The build uses --use_fast_math: expf/logf/division are the approximate forms (~2 ulp); where an
// exactly rounded result matters the code says so and uses the _rn intrinsics.
#pragma once
#include "cuda_common.cuh"
#include "qn/dtype.h"

namespace qn {
namespace cuda {
namespace xf {

using bf16 = __nv_bfloat16;

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(bf16 v) { return __bfloat162float(v); }
template <typename T> __device__ __forceinline__ T from_f32(float v);
template <> __device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ bf16 from_f32<bf16>(float v) { return __float2bfloat16_rn(v); }
// The value v takes once stored as T.
template <typename T> __device__ __forceinline__ float round_to(float v) { return to_f32(from_f32<T>(v)); }

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Reduction over the block (blockDim.x a multiple of 32, at most 1024) with the warp reduction
// `warp_op` and its identity; every thread gets the result. `scratch` holds 33 floats of shared
// memory; the call synchronizes the block (three times).
struct WarpSum {
  __device__ __forceinline__ float operator()(float v) const { return warp_sum(v); }
};
struct WarpMax {
  __device__ __forceinline__ float operator()(float v) const { return warp_max(v); }
};
template <typename WarpOp>
__device__ __forceinline__ float block_reduce(float v, float* scratch, float identity) {
  const WarpOp warp_op;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_op(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float s = lane < nw ? scratch[lane] : identity;
    s = warp_op(s);
    if (lane == 0) scratch[32] = s;
  }
  __syncthreads();
  const float r = scratch[32];
  __syncthreads();  // scratch may be reused right after
  return r;
}
__device__ __forceinline__ float block_sum(float v, float* scratch) { return block_reduce<WarpSum>(v, scratch, 0.f); }
__device__ __forceinline__ float block_max(float v, float* scratch) {
  return block_reduce<WarpMax>(v, scratch, -INFINITY);
}

}  // namespace xf

// Calls f(T{}) with T = float for f32 and __nv_bfloat16 for bf16 (host side).
template <typename F> inline void with_type(DType t, F&& f) {
  if (t == DType::BF16) f(xf::bf16{});
  else f(float{});
}

}  // namespace cuda
}  // namespace qn
