// Register-blocked GEMM micro-kernels, one per ISA (cuda/cpu/gemm_kernels_*.cpp). Each computes a
// full MR x NR tile from one packed A panel and one packed B panel (formats in gemm_driver.h):
//   c[i * ldc + j] (+)= sum_{k < kc_pad} A(i, k) B(k, j)
// storing (accumulate == false) or adding to c (accumulate == true). c needs no alignment.
#pragma once
#include <cstdint>
#include <immintrin.h>
#include "gemm_driver.h"

namespace qn {
namespace cpu {
namespace gemm_impl {

using KernelFn = void (*)(int kc_pad, const void* a, const void* b, float* c, int64_t ldc, bool accumulate);

struct Kernel {
  const char* name;
  int mr, nr;
  Format fmt;
  KernelFn fn;
  int kc_max;  // k's per block (L2 blocking), a multiple of 2
  int mc;      // rows of A per L2 block (multiple of mr)
  int nc;      // columns of B per task (multiple of nr)
};

// Defined in gemm_kernels_avx512.cpp / _avx2.cpp / _scalar.cpp. Only call a kernel whose ISA
// cpu_features() reports.
extern const Kernel kKernelAvx512Bf16;  // 6 x 64, vdpbf16ps, BF16Pair panels
extern const Kernel kKernelAvx512F32;   // 6 x 64, FMA, F32 panels
extern const Kernel kKernelAvx2F32;     // 6 x 16, FMA, F32 panels
extern const Kernel kKernelScalarF32;   // 4 x 16, plain C++, F32 panels

// AVX-512 helpers for the packers (gemm_kernels_avx512.cpp): transposes a 16 x 16 block of 32-bit
// values, src row r at (char*)src + r * lds, into dst row c at (char*)dst + c * ldd (strides in
// bytes, any alignment).
void transpose16x16_u32_avx512(const void* src, int64_t lds, void* dst, int64_t ldd);
// The same transpose in registers: r[c] becomes column c of the 16 x 16 matrix of 32-bit units
// whose row i is r[i].
__attribute__((target("avx512f"))) inline void transpose16_u32_regs(__m512i r[16]) {
  __m512i t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
    r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
    r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
    r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  // r[4q + s] now holds, in each 128-bit lane L, column (4L + s) of rows 4q..4q+3.
  for (int s = 0; s < 4; ++s) {
    t[s] = _mm512_shuffle_i32x4(r[s], r[4 + s], 0x88);      // lanes 0,2 of rows 0-3 / 4-7
    t[4 + s] = _mm512_shuffle_i32x4(r[s], r[4 + s], 0xdd);  // lanes 1,3
    t[8 + s] = _mm512_shuffle_i32x4(r[8 + s], r[12 + s], 0x88);
    t[12 + s] = _mm512_shuffle_i32x4(r[8 + s], r[12 + s], 0xdd);
  }
  for (int s = 0; s < 4; ++s) {
    r[s] = _mm512_shuffle_i32x4(t[s], t[8 + s], 0x88);            // column s
    r[4 + s] = _mm512_shuffle_i32x4(t[4 + s], t[12 + s], 0x88);   // column 4 + s
    r[8 + s] = _mm512_shuffle_i32x4(t[s], t[8 + s], 0xdd);        // column 8 + s
    r[12 + s] = _mm512_shuffle_i32x4(t[4 + s], t[12 + s], 0xdd);  // column 12 + s
  }
}
// Interleaves two bf16 rows: dst[2j] = r0[j], dst[2j + 1] = r1[j], j < 32.
void interleave32_u16_avx512(const uint16_t* r0, const uint16_t* r1, uint16_t* dst);
// dst[j] = f32_to_bf16(src[j]), j < n (any n): round to nearest even, NaN kept quiet.
void narrow_bf16_avx512(const float* src, int n, uint16_t* dst);
// qn::f32_to_bf16 on 16 lanes: round to nearest even, NaN kept quiet.
__attribute__((target("avx512f,avx512bw,avx512vl"))) inline __m256i f32_to_bf16_avx512(__m512 v) {
  const __m512i u = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
  const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40)));
  return _mm512_cvtepi32_epi16(r);
}

}  // namespace gemm_impl
}  // namespace cpu
}  // namespace qn
