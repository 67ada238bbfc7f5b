// AVX-512 GEMM micro-kernels (see gemm_kernels.h): 6 x 64 tiles held in 24 zmm accumulators.
//   f32 : per k, 4 aligned loads of B (64 columns), 6 broadcasts of A, 24 FMAs.
//   bf16: per pair of k's, 4 loads of B (64 columns x 2 k), 6 32-bit broadcasts of A (2 k's of a
//         row), 24 vdpbf16ps (each lane: acc += a0*b0 + a1*b1, products exact in fp32; the
//         instruction flushes bf16 denormal inputs to zero and rounds to nearest even).
// Compiled for the AVX-512 targets through function attributes; called only when cpu_features()
// reports them.
// GCC 12 flags its own _mm512_undefined_* helpers inside the intrinsics (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#include "gemm_kernels.h"

namespace qn {
namespace cpu {
namespace gemm_impl {
namespace {

#define QN_ACC_DECL(i) __m512 c##i##0 = _mm512_setzero_ps(), c##i##1 = _mm512_setzero_ps(), \
                              c##i##2 = _mm512_setzero_ps(), c##i##3 = _mm512_setzero_ps();

#define QN_STORE_ROW(i)                                                                     \
  do {                                                                                      \
    float* r = c + (i) * ldc;                                                               \
    if (accumulate) {                                                                       \
      c##i##0 = _mm512_add_ps(c##i##0, _mm512_loadu_ps(r));                                 \
      c##i##1 = _mm512_add_ps(c##i##1, _mm512_loadu_ps(r + 16));                            \
      c##i##2 = _mm512_add_ps(c##i##2, _mm512_loadu_ps(r + 32));                            \
      c##i##3 = _mm512_add_ps(c##i##3, _mm512_loadu_ps(r + 48));                            \
    }                                                                                       \
    _mm512_storeu_ps(r, c##i##0);                                                           \
    _mm512_storeu_ps(r + 16, c##i##1);                                                      \
    _mm512_storeu_ps(r + 32, c##i##2);                                                      \
    _mm512_storeu_ps(r + 48, c##i##3);                                                      \
  } while (0)

#define QN_FMA_ROW(i)                                   \
  do {                                                  \
    const __m512 ai = _mm512_set1_ps(a[i]);             \
    c##i##0 = _mm512_fmadd_ps(ai, b0, c##i##0);         \
    c##i##1 = _mm512_fmadd_ps(ai, b1, c##i##1);         \
    c##i##2 = _mm512_fmadd_ps(ai, b2, c##i##2);         \
    c##i##3 = _mm512_fmadd_ps(ai, b3, c##i##3);         \
  } while (0)

__attribute__((target("avx512f"))) void ukr_f32_6x64(int kc, const void* pa, const void* pb, float* c, int64_t ldc,
                                                     bool accumulate) {
  const float* a = static_cast<const float*>(pa);
  const float* b = static_cast<const float*>(pb);
  QN_ACC_DECL(0) QN_ACC_DECL(1) QN_ACC_DECL(2) QN_ACC_DECL(3) QN_ACC_DECL(4) QN_ACC_DECL(5)
#pragma GCC unroll 4
  for (int k = 0; k < kc; ++k) {
    _mm_prefetch(reinterpret_cast<const char*>(b + 64 * 8), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(b + 64 * 8 + 32), _MM_HINT_T0);
    const __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16), b2 = _mm512_load_ps(b + 32),
                 b3 = _mm512_load_ps(b + 48);
    QN_FMA_ROW(0); QN_FMA_ROW(1); QN_FMA_ROW(2); QN_FMA_ROW(3); QN_FMA_ROW(4); QN_FMA_ROW(5);
    a += 6;
    b += 64;
  }
  QN_STORE_ROW(0); QN_STORE_ROW(1); QN_STORE_ROW(2); QN_STORE_ROW(3); QN_STORE_ROW(4); QN_STORE_ROW(5);
}

#define QN_DP_ROW(i)                                                         \
  do {                                                                       \
    const __m512bh ai = (__m512bh)_mm512_set1_epi32(static_cast<int>(a[i])); \
    c##i##0 = _mm512_dpbf16_ps(c##i##0, ai, b0);                             \
    c##i##1 = _mm512_dpbf16_ps(c##i##1, ai, b1);                             \
    c##i##2 = _mm512_dpbf16_ps(c##i##2, ai, b2);                             \
    c##i##3 = _mm512_dpbf16_ps(c##i##3, ai, b3);                             \
  } while (0)

__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) void ukr_bf16_6x64(int kc_pad, const void* pa,
                                                                                     const void* pb, float* c,
                                                                                     int64_t ldc, bool accumulate) {
  const uint32_t* a = static_cast<const uint32_t*>(pa);
  const uint32_t* b = static_cast<const uint32_t*>(pb);
  QN_ACC_DECL(0) QN_ACC_DECL(1) QN_ACC_DECL(2) QN_ACC_DECL(3) QN_ACC_DECL(4) QN_ACC_DECL(5)
  const int kp = kc_pad / 2;
#pragma GCC unroll 4
  for (int k = 0; k < kp; ++k) {
    _mm_prefetch(reinterpret_cast<const char*>(b + 64 * 8), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(b + 64 * 8 + 32), _MM_HINT_T0);
    const __m512bh b0 = (__m512bh)_mm512_load_si512(b), b1 = (__m512bh)_mm512_load_si512(b + 16),
                   b2 = (__m512bh)_mm512_load_si512(b + 32), b3 = (__m512bh)_mm512_load_si512(b + 48);
    QN_DP_ROW(0); QN_DP_ROW(1); QN_DP_ROW(2); QN_DP_ROW(3); QN_DP_ROW(4); QN_DP_ROW(5);
    a += 6;
    b += 64;
  }
  QN_STORE_ROW(0); QN_STORE_ROW(1); QN_STORE_ROW(2); QN_STORE_ROW(3); QN_STORE_ROW(4); QN_STORE_ROW(5);
}

#undef QN_ACC_DECL
#undef QN_STORE_ROW
#undef QN_FMA_ROW
#undef QN_DP_ROW

}  // namespace

__attribute__((target("avx512f"))) void transpose16x16_u32_avx512(const void* src, int64_t lds, void* dst,
                                                                  int64_t ldd) {
  __m512i r[16];
  const char* s = static_cast<const char*>(src);
  char* d = static_cast<char*>(dst);
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_si512(s + i * lds);
  transpose16_u32_regs(r);
  for (int i = 0; i < 16; ++i) _mm512_storeu_si512(d + i * ldd, r[i]);
}

__attribute__((target("avx512f,avx512bw"))) void interleave32_u16_avx512(const uint16_t* r0, const uint16_t* r1,
                                                                         uint16_t* dst) {
  const __m512i a = _mm512_loadu_si512(r0), b = _mm512_loadu_si512(r1);
  alignas(64) static const uint16_t lo_idx[32] = {0,  32, 1,  33, 2,  34, 3,  35, 4,  36, 5,  37, 6,  38, 7,  39,
                                                  8,  40, 9,  41, 10, 42, 11, 43, 12, 44, 13, 45, 14, 46, 15, 47};
  const __m512i lo = _mm512_load_si512(lo_idx);
  const __m512i hi = _mm512_add_epi16(lo, _mm512_set1_epi16(16));
  _mm512_storeu_si512(dst, _mm512_permutex2var_epi16(a, lo, b));
  _mm512_storeu_si512(dst + 32, _mm512_permutex2var_epi16(a, hi, b));
}

// dst[j] = f32_to_bf16(src[j]), j < n: round to nearest even, NaN kept quiet.
__attribute__((target("avx512f,avx512bw,avx512vl"))) void narrow_bf16_avx512(const float* src, int n, uint16_t* dst) {
  for (int j = 0; j < n; j += 16) {
    const __mmask16 m = n - j >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - j)) - 1);
    _mm256_mask_storeu_epi16(dst + j, m, f32_to_bf16_avx512(_mm512_maskz_loadu_ps(m, src + j)));
  }
}

const Kernel kKernelAvx512Bf16 = {"avx512bf16 6x64", 6, 64, Format::BF16Pair, ukr_bf16_6x64, 768, 96, 256};
const Kernel kKernelAvx512F32 = {"avx512 6x64", 6, 64, Format::F32, ukr_f32_6x64, 384, 96, 256};

}  // namespace gemm_impl
}  // namespace cpu
}  // namespace qn
