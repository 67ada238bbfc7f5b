// NF4 device helpers: exact float32 arithmetic and dequantization of NF4 elements inside any CUDA
// kernel (cuda/kernels/nf4.cu uses them, and GEMM kernels use them to dequantize W tiles while
// loading them). Values are bit-identical to the CPU (qn/ops/nf4.h) and to bitsandbytes.
//
// Usage in a GEMM tile loader (W is [rows=N, cols=K], y = x W^T):
//   __shared__ float nf4_table[16];
//   nf4_load_table(nf4_table);            // threads 0..15 write; then __syncthreads()
//   const Nf4DeviceView v = nf4_device_view(weight);   // on the host, pass v as a kernel argument
//   // 8 consecutive elements starting at flat index e = r * cols + k (e % 8 == 0, e + 8 <= numel):
//   uint4 packed = nf4_dequant8_bf16(v, nf4_table, e, nf4_block_scale(v, e >> v.log2_bs));
//   float f[8]; nf4_dequant8_f32(v, nf4_table, e, nf4_block_scale(v, e >> v.log2_bs), f);
//   // any single element: nf4_dequant1(v, nf4_table, e)
// 8 consecutive elements never straddle a block (blocksize >= 32), and they stay in one row when
// cols % 8 == 0 and k % 8 == 0 (all Qwen2 linear shapes). Otherwise use nf4_dequant1.
// The table may also live in registers or constant memory: any `const float*` with the 16 values
// of kNf4Codes works (shared memory is fastest for divergent indices).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <cstdint>
#include "qn/ops/nf4.h"

namespace qn {
namespace cuda {

// ---- IEEE float32 steps independent of --use_fast_math (no flush to zero, no FMA contraction) ----
__device__ __forceinline__ float nf4_mul_rn(float a, float b) {
  float r;
  asm("mul.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
  return r;
}
__device__ __forceinline__ float nf4_add_rn(float a, float b) {
  float r;
  asm("add.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
  return r;
}
__device__ __forceinline__ float nf4_sub_rn(float a, float b) {
  float r;
  asm("sub.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
  return r;
}
__device__ __forceinline__ float nf4_rcp_rn(float a) {  // correctly rounded 1/a, like 1.0f / a on the CPU
  float r;
  asm("rcp.rn.f32 %0, %1;" : "=f"(r) : "f"(a));
  return r;
}
__device__ __forceinline__ bool nf4_gt(float a, float b) {  // a > b, false when either is NaN
  unsigned r;
  asm("{\n\t.reg .pred p;\n\tsetp.gt.f32 p, %1, %2;\n\tselp.u32 %0, 1, 0, p;\n\t}" : "=r"(r) : "f"(a), "f"(b));
  return r != 0;
}
__device__ __forceinline__ bool nf4_lt(float a, float b) { return nf4_gt(b, a); }

// Round-to-nearest-even f32 -> bf16 bits (identical to qn::f32_to_bf16 for finite values).
__device__ __forceinline__ unsigned nf4_bf16_bits(float v) {
  const unsigned u = __float_as_uint(v);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x40u;
  return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}

// A weight as kernel arguments (plain pointers into device memory).
struct Nf4DeviceView {
  const uint8_t* codes;         // ceil(numel/2) bytes, even element in the high nibble
  const float* absmax;          // when !nested
  const uint8_t* absmax_q;      // when nested
  const float* nested_absmax;   // when nested
  const float* nested_map;      // when nested: 256 entries
  float offset;                 // when nested
  int nested;                   // 0 / 1
  int log2_bs;                  // log2(blocksize)
  int log2_nbs;                 // log2(nested_blocksize)
  long long numel, rows, cols;
};

// Host side: the view of an Nf4Weight whose tensors are on a CUDA device.
inline Nf4DeviceView nf4_device_view(const Nf4Weight& w) {
  Nf4DeviceView v{};
  fill_nf4_view(w, v);
  v.numel = w.numel();
  v.rows = w.rows;
  v.cols = w.cols;
  return v;
}

// The 16 code values (bitsandbytes' NF4 table), for nf4_load_table.
__device__ __forceinline__ float nf4_code_value(int c) {
  switch (c & 15) {
    case 0: return -1.0f;
    case 1: return -0.696192801f;
    case 2: return -0.525073051f;
    case 3: return -0.394917488f;
    case 4: return -0.284441382f;
    case 5: return -0.184773430f;
    case 6: return -0.0910500363f;
    case 7: return 0.0f;
    case 8: return 0.0795802996f;
    case 9: return 0.160930201f;
    case 10: return 0.246112302f;
    case 11: return 0.337915242f;
    case 12: return 0.440709829f;
    case 13: return 0.562617004f;
    case 14: return 0.722956836f;
    default: return 1.0f;
  }
}

// Threads 0..15 of the block fill table[0..15]; call __syncthreads() before reading it.
__device__ __forceinline__ void nf4_load_table(float* table) {
  const int t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  if (t < 16) table[t] = nf4_code_value(t);
}

// The f32 scale of block b (restored from the double quant when nested).
__device__ __forceinline__ float nf4_block_scale(const Nf4DeviceView& v, long long b) {
  if (!v.nested) return __ldg(v.absmax + b);
  const float m = __ldg(v.nested_map + __ldg(v.absmax_q + b));
  return nf4_add_rn(nf4_mul_rn(m, __ldg(v.nested_absmax + (b >> v.log2_nbs))), v.offset);
}

// One element, flat index e.
__device__ __forceinline__ float nf4_dequant1(const Nf4DeviceView& v, const float* table, long long e) {
  const unsigned byte = __ldg(v.codes + (e >> 1));
  const unsigned c = (e & 1) ? (byte & 15u) : (byte >> 4);
  return nf4_mul_rn(table[c], nf4_block_scale(v, e >> v.log2_bs));
}

// Elements e..e+7 from 4 code bytes (little-endian u32 w: byte k holds elements 2k (high), 2k+1).
__device__ __forceinline__ void nf4_decode8(unsigned w, const float* table, float scale, float out[8]) {
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    out[2 * k] = nf4_mul_rn(table[(w >> (8 * k + 4)) & 15u], scale);
    out[2 * k + 1] = nf4_mul_rn(table[(w >> (8 * k)) & 15u], scale);
  }
}

// 8 elements starting at e (e % 8 == 0, e + 8 <= numel), all in block e >> log2_bs with `scale`.
// Reads the 4 code bytes as one 32-bit word: v.codes itself must be 4-byte aligned (a view into
// the middle of a code buffer may not be; check before choosing this path, as nf4_dequantize does).
__device__ __forceinline__ void nf4_dequant8_f32(const Nf4DeviceView& v, const float* table, long long e, float scale,
                                                 float out[8]) {
  const unsigned w = __ldg(reinterpret_cast<const unsigned*>(v.codes + (e >> 1)));
  nf4_decode8(w, table, scale, out);
}

// The same 8 elements as bf16 (round-to-nearest-even), packed for one 16-byte store.
__device__ __forceinline__ uint4 nf4_dequant8_bf16(const Nf4DeviceView& v, const float* table, long long e, float scale) {
  float f[8];
  nf4_dequant8_f32(v, table, e, scale, f);
  uint4 r;
  r.x = nf4_bf16_bits(f[0]) | (nf4_bf16_bits(f[1]) << 16);
  r.y = nf4_bf16_bits(f[2]) | (nf4_bf16_bits(f[3]) << 16);
  r.z = nf4_bf16_bits(f[4]) | (nf4_bf16_bits(f[5]) << 16);
  r.w = nf4_bf16_bits(f[6]) | (nf4_bf16_bits(f[7]) << 16);
  return r;
}

}  // namespace cuda
}  // namespace qn
