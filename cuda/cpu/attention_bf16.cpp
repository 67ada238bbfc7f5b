// bf16 tile micro-GEMMs of the CPU attention (see attention_bf16.h): 4 rows x 64 columns of f32
// accumulators in 16 zmm registers, one vdpbf16ps per (row, 16 columns, pair of k's).
// GCC 12 flags its own _mm512_undefined_* helpers inside the intrinsics (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include "attention_bf16.h"

#include <immintrin.h>
#include <cstring>
#include "gemm_kernels.h"

#define QN_ATTN_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

namespace qn {
namespace cpu {
namespace attention_bf16 {
namespace {

QN_ATTN_BF16 inline __m512bh pair_at(const uint16_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return (__m512bh)_mm512_set1_epi32(v);
}

}  // namespace

QN_ATTN_BF16 void abt(float* s, const uint16_t* a, int64_t lda, const uint16_t* bt, int64_t ldb, int64_t d,
                      float scale) {
  const __m512 vs = _mm512_set1_ps(scale);
  for (int i = 0; i < kTile; i += 4) {
    __m512 c[4][4];
    for (int r = 0; r < 4; ++r)
      for (int v = 0; v < 4; ++v) c[r][v] = _mm512_setzero_ps();
    for (int64_t p = 0; p < d / 2; ++p) {
      const uint16_t* br = bt + p * ldb * 2;
      const __m512bh b0 = (__m512bh)_mm512_loadu_si512(br), b1 = (__m512bh)_mm512_loadu_si512(br + 32),
                     b2 = (__m512bh)_mm512_loadu_si512(br + 64), b3 = (__m512bh)_mm512_loadu_si512(br + 96);
      for (int r = 0; r < 4; ++r) {
        const __m512bh w = pair_at(a + (i + r) * lda + 2 * p);
        c[r][0] = _mm512_dpbf16_ps(c[r][0], w, b0);
        c[r][1] = _mm512_dpbf16_ps(c[r][1], w, b1);
        c[r][2] = _mm512_dpbf16_ps(c[r][2], w, b2);
        c[r][3] = _mm512_dpbf16_ps(c[r][3], w, b3);
      }
    }
    for (int r = 0; r < 4; ++r)
      for (int v = 0; v < 4; ++v) _mm512_storeu_ps(s + (i + r) * kTile + 16 * v, _mm512_mul_ps(vs, c[r][v]));
  }
}

// Columns [d0, d0 + 16 NV) of C for all 64 rows, 4 rows at a time (NV a compile-time count, so the
// 4 x NV accumulators stay in registers: with a run-time count they went through memory and the
// kernel ran at 63% of the vdpbf16ps rate).
template <int NV>
QN_ATTN_BF16 inline void acc_cols(float* c, const uint16_t* a, const uint16_t* b, int64_t d, int64_t d0, bool accumulate) {
  for (int r0 = 0; r0 < kTile; r0 += 4) {
    __m512 cv[4][NV];
    for (int r = 0; r < 4; ++r)
      for (int v = 0; v < NV; ++v)
        cv[r][v] = accumulate ? _mm512_loadu_ps(c + (r0 + r) * d + d0 + 16 * v) : _mm512_setzero_ps();
    for (int p = 0; p < kTile / 2; ++p) {
      const uint16_t* br = b + (p * d + d0) * 2;
      __m512bh bv[NV];
      for (int v = 0; v < NV; ++v) bv[v] = (__m512bh)_mm512_loadu_si512(br + 32 * v);
      for (int r = 0; r < 4; ++r) {
        const __m512bh w = pair_at(a + (r0 + r) * kTile + 2 * p);
        for (int v = 0; v < NV; ++v) cv[r][v] = _mm512_dpbf16_ps(cv[r][v], w, bv[v]);
      }
    }
    for (int r = 0; r < 4; ++r)
      for (int v = 0; v < NV; ++v) _mm512_storeu_ps(c + (r0 + r) * d + d0 + 16 * v, cv[r][v]);
  }
}

QN_ATTN_BF16 void acc(float* c, const uint16_t* a, const uint16_t* b, int64_t d, bool accumulate) {
  int64_t d0 = 0;
  for (; d0 + 64 <= d; d0 += 64) acc_cols<4>(c, a, b, d, d0, accumulate);
  switch ((d - d0) / 16) {  // d is a multiple of 16
    case 3: acc_cols<3>(c, a, b, d, d0, accumulate); break;
    case 2: acc_cols<2>(c, a, b, d, d0, accumulate); break;
    case 1: acc_cols<1>(c, a, b, d, d0, accumulate); break;
    default: break;
  }
}

QN_ATTN_BF16 void to_bf16(const float* s, uint16_t* dst) {
  for (int i = 0; i < kTile * kTile; i += 32) {
    // cvtne2ps: the second operand fills the low 16 lanes
    const __m512bh h = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(s + i + 16), _mm512_loadu_ps(s + i));
    _mm512_storeu_si512(dst + i, (__m512i)h);
  }
}

QN_ATTN_BF16 void to_bf16_t(const float* s, uint16_t* dst) {
  alignas(64) float t[kTile * kTile];
  for (int i = 0; i < kTile; i += 16)
    for (int j = 0; j < kTile; j += 16)
      gemm_impl::transpose16x16_u32_avx512(s + i * kTile + j, kTile * 4, t + j * kTile + i, kTile * 4);
  to_bf16(t, dst);
}

}  // namespace attention_bf16
}  // namespace cpu
}  // namespace qn
