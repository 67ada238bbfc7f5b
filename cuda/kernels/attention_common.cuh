// Shared by the CUDA attention kernels (attention.cu: CUDA-core kernels and dispatch,
// attention_wmma.cu: bf16 tensor-core kernels): launch parameters and index helpers.
#pragma once
#include <functional>
#include "xf_common.cuh"

namespace qn {
namespace cuda {
namespace attn {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

struct Params {
  const void *q, *k, *v;
  const void* mask;
  bool mask_u8;
  void* out;
  float* lse;
  const void* dout;
  void *dq, *dk, *dv;
  float* delta;  // backward: rowsum(dout * out) [B, Hq, T]
  // backward, WMMA path with group > 1: per-q-head f32 partials of dk, dv [B, T, Hq, D], summed
  // over each group into dk, dv by attn_dkv_reduce_kernel (null: the dkv blocks write dk, dv).
  float *dk_part, *dv_part;
  int b, t, hq, hkv, group;
  float scale;
  bool causal;
};

__device__ __forceinline__ bool key_kept(const Params& p, int b, int j) {
  if (j >= p.t) return false;
  if (!p.mask) return true;
  const long long i = (long long)b * p.t + j;
  return p.mask_u8 ? static_cast<const unsigned char*>(p.mask)[i] != 0 : static_cast<const int*>(p.mask)[i] != 0;
}

// Offset of row (b, i, head) of a [B, T, H, D] tensor.
__device__ __forceinline__ long long row_off(int b, int i, int head, int t, int heads, int d) {
  return (((long long)b * t + i) * heads + head) * d;
}

// Threads 0..n-1 load lse (times log2e; -inf past T or for a fully masked row) and delta of query
// rows i0 + c of (b, h) into lse2[c], delta[c]. The caller synchronizes before reading them.
__device__ __forceinline__ void load_row_stats(const Params& p, int b, int h, int i0, int n, float* lse2, float* delta) {
  if (threadIdx.x < n) {
    const int i = i0 + threadIdx.x;
    const long long li = ((long long)b * p.hq + h) * p.t + i;
    lse2[threadIdx.x] = i < p.t ? p.lse[li] * kLog2e : -INFINITY;
    delta[threadIdx.x] = i < p.t ? p.delta[li] : 0.f;
  }
}

// bf16 tensor-core kernels (attention_wmma.cu). Each returns false, launching nothing, when it does
// not apply (head dim, alignment, shared memory of the device); the caller then uses the CUDA-core
// kernels. QN_ATTENTION_NO_WMMA=1 in the environment disables them (debugging).
bool forward_wmma(const Params& p, int d, cudaStream_t stream, int device);
// `p.dk_part` / `p.dv_part` must be set when p.group > 1 (see Params).
// With GQA (p.group > 1) the dK / dV partials are allocated through `partials` (it sets
// p.dk_part / p.dv_part) only once the WMMA kernels are known to apply, so the CUDA-core fallback
// never holds them.
bool backward_wmma(Params p, int d, cudaStream_t stream, int device, const std::function<void(Params&)>& partials);

}  // namespace attn
}  // namespace cuda
}  // namespace qn
