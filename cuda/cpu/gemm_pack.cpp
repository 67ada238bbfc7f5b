// Packing of GEMM operands into micro-kernel panels (formats in gemm_driver.h). The hot cases get
// AVX-512 paths: a k-contiguous source (x, or W for x W^T) is a transpose of 32-bit units (one
// f32, or one pair of bf16 k's), done in 16 x 16 blocks; an r-contiguous bf16 source (W for dy W)
// interleaves pairs of rows. Everything else (edges, conversions) is plain scalar code.
#include <algorithm>
#include <cstring>
// GCC 12 flags its own _mm512_undefined_* helpers inside the intrinsics (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#include "gemm_driver.h"
#include "gemm_kernels.h"
#include "qn/cpu_features.h"
#include "qn/half.h"

namespace qn {
namespace cpu {
namespace gemm_impl {
namespace {

bool has_avx512() {
  static const bool v = cpu_features().avx512f && cpu_features().avx512bw && cpu_features().avx512vl;
  return v;
}

inline int64_t offset(const MatSrc& s, int64_t r, int64_t k) { return s.k_contiguous ? r * s.ld + k : k * s.ld + r; }

inline float as_f32(float v) { return v; }
inline float as_f32(uint16_t h) { return bf16_to_f32(h); }
inline uint16_t as_bf16(float v) { return f32_to_bf16(v); }
inline uint16_t as_bf16(uint16_t h) { return h; }

__attribute__((target("avx512f,avx512bw,avx512vl"))) void widen_bf16_avx512(const uint16_t* src, int n, float* dst) {
  for (int j = 0; j < n; j += 16) {
    const __mmask16 m = n - j >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - j)) - 1);
    const __m512i w = _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, src + j)), 16);
    _mm512_mask_storeu_ps(dst + j, m, _mm512_castsi512_ps(w));
  }
}

// Panel-relative k range [ka, kb) of rows [0, rows), one element at a time, k outer (so the
// destination is written in order and each source row or column is read sequentially).
template <typename S, typename D>
void pack_scalar_t(const MatSrc& s, int64_t r0, int rows, const Panel& P, int ka, int kb, int64_t k_shift, D* d) {
  const S* p = static_cast<const S*>(s.p);
  const int64_t kbase = P.k0 - k_shift;
  const int64_t rs = s.k_contiguous ? s.ld : 1, ks = s.k_contiguous ? 1 : s.ld;  // strides of r and k
  const S* base = p + r0 * rs + kbase * ks;
  for (int kk = ka; kk < kb; ++kk) {
    const S* col = base + kk * ks;
    if constexpr (sizeof(D) == 4) {
      D* dk = d + kk * P.R;
      for (int i = 0; i < rows; ++i) dk[i] = as_f32(col[i * rs]);
    } else {
      D* dk = d + (kk >> 1) * 2 * P.R + (kk & 1);
      for (int i = 0; i < rows; ++i) dk[2 * i] = as_bf16(col[i * rs]);
    }
  }
}

void pack_scalar(const MatSrc& s, int64_t r0, int rows, const Panel& P, int ka, int kb, int64_t k_shift, void* dst) {
  const bool f32src = s.dt == DType::F32;
  if (P.fmt == Format::F32 && !f32src && !s.k_contiguous && has_avx512()) {
    // bf16 rows along r (dy^T, x in the LoRA gradient GEMMs): widen 16 at a time.
    const uint16_t* p = static_cast<const uint16_t*>(s.p) + (P.k0 - k_shift) * s.ld + r0;
    float* d = static_cast<float*>(dst);
    for (int kk = ka; kk < kb; ++kk) widen_bf16_avx512(p + kk * s.ld, rows, d + kk * P.R);
    return;
  }
  if (P.fmt == Format::F32) {
    if (f32src) pack_scalar_t<float>(s, r0, rows, P, ka, kb, k_shift, static_cast<float*>(dst));
    else pack_scalar_t<uint16_t>(s, r0, rows, P, ka, kb, k_shift, static_cast<float*>(dst));
  } else {
    if (f32src) pack_scalar_t<float>(s, r0, rows, P, ka, kb, k_shift, static_cast<uint16_t*>(dst));
    else pack_scalar_t<uint16_t>(s, r0, rows, P, ka, kb, k_shift, static_cast<uint16_t*>(dst));
  }
}

// 32-bit-unit transpose (f32 -> F32 panel, or bf16 pairs -> BF16Pair panel) of full 16-row groups
// and 16-unit k blocks; returns the first panel-relative k not handled.
int pack_transpose_avx512(const MatSrc& s, int64_t r0, int rows, const Panel& P, int ka, int kb, int64_t k_shift,
                          void* dst) {
  const int unit_k = P.fmt == Format::F32 ? 1 : 2;  // k's per 32-bit unit
  const int esize = s.dt == DType::F32 ? 4 : 2;
  const int nunits = (kb - ka) / unit_k;
  const int nblk = nunits / 16;
  if (nblk == 0) return ka;
  const char* base = static_cast<const char*>(s.p);
  const bool widen = s.dt == DType::BF16 && P.fmt == Format::F32;  // bf16 -> f32: widen a 16 x 16 block first
  alignas(64) float tmp[16 * 16];
  for (int i0 = 0; i0 + 16 <= rows; i0 += 16) {
    for (int b = 0; b < nblk; ++b) {
      const int kk = ka + b * 16 * unit_k;
      const char* src = base + (offset(s, r0 + i0, P.k0 - k_shift + kk)) * esize;
      char* d = static_cast<char*>(dst) + (static_cast<int64_t>(kk / unit_k) * P.R + i0) * 4;
      if (widen) {
        for (int i = 0; i < 16; ++i)
          widen_bf16_avx512(reinterpret_cast<const uint16_t*>(src + i * s.ld * esize), 16, tmp + 16 * i);
        transpose16x16_u32_avx512(tmp, 64, d, static_cast<int64_t>(P.R) * 4);
      } else {
        transpose16x16_u32_avx512(src, s.ld * esize, d, static_cast<int64_t>(P.R) * 4);
      }
    }
  }
  return ka + nblk * 16 * unit_k;
}

}  // namespace

void zero_panel(const Panel& P, void* dst) { std::memset(dst, 0, P.bytes()); }

void pack_part(const MatSrc& s, int64_t r0, int rows, const Panel& P, int64_t k_begin, int64_t k_end, int64_t k_shift,
               void* dst) {
  int ka = static_cast<int>(std::max<int64_t>(k_begin, P.k0) - P.k0);
  const int kb = static_cast<int>(std::min<int64_t>(k_end, P.k0 + P.kc) - P.k0);
  if (kb <= ka || rows <= 0) return;
  const bool same_unit = (P.fmt == Format::F32 && s.dt == DType::F32) || (P.fmt == Format::BF16Pair && s.dt == DType::BF16);
  const bool widen = P.fmt == Format::F32 && s.dt == DType::BF16;
  if ((same_unit || widen) && s.k_contiguous && has_avx512() && rows >= 16 && (P.fmt == Format::F32 || ka % 2 == 0)) {
    const int done = pack_transpose_avx512(s, r0, rows, P, ka, kb, k_shift, dst);
    const int full = rows / 16 * 16;
    if (done > ka && full < rows)  // rows past the last full 16-group, for the transposed k's
      pack_scalar(s, r0 + full, rows - full, P, ka, done, k_shift,
                  P.fmt == Format::F32 ? static_cast<void*>(static_cast<float*>(dst) + full)
                                       : static_cast<void*>(static_cast<uint16_t*>(dst) + 2 * full));
    ka = done;
  } else if (same_unit && !s.k_contiguous && P.fmt == Format::F32) {
    const float* p = static_cast<const float*>(s.p);
    float* d = static_cast<float*>(dst);
    for (int kk = ka; kk < kb; ++kk) std::memcpy(d + kk * P.R, p + (P.k0 - k_shift + kk) * s.ld + r0, sizeof(float) * rows);
    ka = kb;
  } else if (same_unit && !s.k_contiguous && has_avx512() && ka % 2 == 0) {
    // BF16Pair from a row-major [K, N] bf16 source: interleave rows k, k+1, 32 columns at a time.
    const uint16_t* p = static_cast<const uint16_t*>(s.p);
    uint16_t* d = static_cast<uint16_t*>(dst);
    const int64_t kbase = P.k0 - k_shift;
    const int full = rows / 32 * 32;
    int kk = ka;
    // The rows are far apart (the row stride of W): fetch the pair kPrefetchRows ahead, whose
    // lines the hardware prefetcher does not anticipate.
    constexpr int kPrefetchRows = 16;
    for (; kk + 2 <= kb; kk += 2) {
      const uint16_t* ra = p + (kbase + kk) * s.ld + r0;
      const uint16_t* rb = ra + s.ld;
      if (kk + kPrefetchRows + 2 <= kb)
        for (int i = 0; i < rows; i += 32) {
          _mm_prefetch(reinterpret_cast<const char*>(ra + kPrefetchRows * s.ld + i), _MM_HINT_T0);
          _mm_prefetch(reinterpret_cast<const char*>(rb + kPrefetchRows * s.ld + i), _MM_HINT_T0);
        }
      uint16_t* dd = d + (kk >> 1) * 2 * P.R;
      for (int i = 0; i < full; i += 32) interleave32_u16_avx512(ra + i, rb + i, dd + 2 * i);
      for (int i = full; i < rows; ++i) {
        dd[2 * i] = ra[i];
        dd[2 * i + 1] = rb[i];
      }
    }
    ka = kk;
  }
  if (ka < kb) pack_scalar(s, r0, rows, P, ka, kb, k_shift, dst);
}

void pack(const MatSrc& s, int64_t r0, int rows, const Panel& P, void* dst) {
  if (rows < P.R || P.kc_pad > P.kc) zero_panel(P, dst);
  pack_part(s, r0, rows, P, P.k0, P.k0 + P.kc, 0, dst);
}

}  // namespace gemm_impl
}  // namespace cpu
}  // namespace qn
