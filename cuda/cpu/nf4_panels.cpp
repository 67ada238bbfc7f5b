// NF4 rows decoded straight into bf16-pair GEMM panels (see nf4_panels.h). Precision: code x scale
// in fp32, one rounding to bf16 (nearest even) of the 16 scaled code values per block, exactly as
// nf4_dequantize_tile to bf16 (the tests compare the packed panels bit for bit).
// GCC 12 flags its own _mm512_undefined_* helpers inside the intrinsics (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include "nf4_panels.h"
#include <immintrin.h>
#include "gemm_kernels.h"
#include "nf4_host.h"
#include "qn/cpu_features.h"

namespace qn {
namespace cpu {
namespace nf4_panels {
namespace {

using nf4_host::HostView;

#define QN_NF4P __attribute__((target("avx512f,avx512bw,avx512vl")))

// The 16 code values times the block's scale as bf16, in words 0-15 and again 16-31 (vpermw reads
// 5 index bits; the odd element's index keeps bit 4 of the byte).
struct BlockTable {
  int64_t block = -1;
  __m512i words;
};

QN_NF4P inline void table_for(const HostView& v, int64_t b, BlockTable& t) {
  if (b == t.block) return;
  t.block = b;
  const __m256i h = gemm_impl::f32_to_bf16_avx512(_mm512_mul_ps(_mm512_loadu_ps(kNf4Codes), _mm512_set1_ps(v.scale(b))));
  t.words = _mm512_inserti64x4(_mm512_castsi256_si512(h), h, 1);
}

// 32 elements from flat index e (a multiple of 32) as bf16 words in element order.
QN_NF4P inline __m512i decode32(const HostView& v, int64_t e, BlockTable& t) {
  table_for(v, e >> v.log2_bs, t);
  const __m512i d = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(v.codes + (e >> 1))));
  // dword k = byte k: word 2k = byte >> 4 (the even element, high nibble), word 2k + 1 = byte.
  return _mm512_permutexvar_epi16(_mm512_or_si512(_mm512_srli_epi32(d, 4), _mm512_slli_epi32(d, 16)), t.words);
}

}  // namespace

bool can_decode_transposed(const Nf4Weight& w, int64_t c0, int64_t n) {
  static const bool isa = cpu_features().avx512f && cpu_features().avx512bw && cpu_features().avx512vl;
  return isa && n == kPanelCols && c0 % 32 == 0 && w.cols % 32 == 0 && w.blocksize >= 32;
}

QN_NF4P void decode_pairs_transposed(const Nf4Weight& w, int64_t k0, int64_t k1, int64_t c0, int R, uint16_t* dst) {
  const HostView v = nf4_host::host_view(w, "nf4 panel decode");
  alignas(64) static const uint16_t lo_idx[32] = {0,  32, 1,  33, 2,  34, 3,  35, 4,  36, 5,  37, 6,  38, 7,  39,
                                                  8,  40, 9,  41, 10, 42, 11, 43, 12, 44, 13, 45, 14, 46, 15, 47};
  const __m512i lo = _mm512_load_si512(lo_idx);
  const __m512i hi = _mm512_add_epi16(lo, _mm512_set1_epi16(16));
  BlockTable ta, tb;
  for (int64_t k = k0; k < k1; k += 2) {
    const int64_t ea = k * w.cols + c0;
    const __m512i a0 = decode32(v, ea, ta), a1 = decode32(v, ea + 32, ta);
    __m512i b0 = _mm512_setzero_si512(), b1 = _mm512_setzero_si512();
    if (k + 1 < k1) {
      b0 = decode32(v, ea + w.cols, tb);
      b1 = decode32(v, ea + w.cols + 32, tb);
    }
    uint16_t* d = dst + ((k - k0) / 2) * 2 * R;
    _mm512_storeu_si512(d, _mm512_permutex2var_epi16(a0, lo, b0));
    _mm512_storeu_si512(d + 32, _mm512_permutex2var_epi16(a0, hi, b0));
    _mm512_storeu_si512(d + 64, _mm512_permutex2var_epi16(a1, lo, b1));
    _mm512_storeu_si512(d + 96, _mm512_permutex2var_epi16(a1, hi, b1));
  }
}

bool can_decode_rows(const Nf4Weight& w, int64_t k0, int64_t k1, int64_t n) {
  static const bool isa = cpu_features().avx512f && cpu_features().avx512bw && cpu_features().avx512vl;
  return isa && n == kPanelCols && w.cols % 32 == 0 && k0 % 32 == 0 && k1 % 32 == 0 && k1 > k0 && w.blocksize >= 32;
}

QN_NF4P void decode_rows_transposed(const Nf4Weight& w, int64_t r0, int64_t k0, int64_t k1, int R, uint16_t* dst) {
  const HostView v = nf4_host::host_view(w, "nf4 panel decode");
  BlockTable tab[16];
  for (int i0 = 0; i0 < kPanelCols; i0 += 16) {
    for (int i = 0; i < 16; ++i) tab[i].block = -1;
    for (int64_t k = k0; k < k1; k += 32) {
      __m512i r[16];
      for (int i = 0; i < 16; ++i) r[i] = decode32(v, (r0 + i0 + i) * w.cols + k, tab[i]);
      gemm_impl::transpose16_u32_regs(r);
      // unit u of the 16 (k pair k/2 + u) goes to panel unit row (k - k0) / 2 + u, columns i0..i0+15
      uint16_t* d = dst + ((k - k0) / 2) * 2 * R + 2 * i0;
      for (int u = 0; u < 16; ++u) _mm512_storeu_si512(d + u * 2 * R, r[u]);
    }
  }
}

}  // namespace nf4_panels
}  // namespace cpu
}  // namespace qn
