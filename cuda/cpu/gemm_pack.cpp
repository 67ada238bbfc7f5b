// Packing of GEMM operands into micro-kernel panels (formats in gemm_driver.h). The hot cases get
// AVX-512 paths, all on 32-bit units (one f32, or one pair of bf16 k's; f32 sources of bf16 panels
// are rounded to bf16 first, exactly as f32_to_bf16 does):
//   - a k-contiguous source into a 64-row (B) panel (W for x W^T, x for the LoRA A^T products): a
//     transpose, in 16 x 16 blocks;
//   - a k-contiguous source into a 6-row (A) panel (x or dy, the activations of every GEMM): 16
//     units of each of the 6 rows interleaved by permutes (the LM-head backward packs 39M dlogits
//     this way per 256 tokens);
//   - an r-contiguous source (W for dy W, LoRA A for g A): pairs of rows interleaved.
// Everything else (edges, odd k's) is plain scalar code.
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

// Loads 16 32-bit units of one source row into out[0..16): `units` (<= 16) of them from the source
// (a k-contiguous row of the panel's own type, a bf16 row widened to f32, or an f32 row rounded to
// bf16 pairs), the rest zero.
enum class UnitConv { Same, Widen, Narrow };
__attribute__((target("avx512f,avx512bw,avx512vl"))) inline void load_units(const char* src, UnitConv conv, int units,
                                                                           uint32_t* out) {
  const __mmask16 m = units >= 16 ? __mmask16(0xffff) : __mmask16((1u << units) - 1);
  switch (conv) {
    case UnitConv::Same:
      _mm512_storeu_si512(out, _mm512_maskz_loadu_epi32(m, src));
      break;
    case UnitConv::Widen:
      _mm512_storeu_si512(
          out, _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, src)), 16));
      break;
    case UnitConv::Narrow:
      std::memset(out, 0, 64);
      narrow_bf16_avx512(reinterpret_cast<const float*>(src), 2 * units, reinterpret_cast<uint16_t*>(out));
      break;
  }
}

UnitConv unit_conv(const MatSrc& s, const Panel& P) {
  if (P.fmt == Format::F32) return s.dt == DType::F32 ? UnitConv::Same : UnitConv::Widen;
  return s.dt == DType::BF16 ? UnitConv::Same : UnitConv::Narrow;
}

// 32-bit-unit transpose of a k-contiguous source into a panel of >= 16 rows, for full 16-row groups
// and k's in [ka, kb) (a last block of fewer than 16 units through a zero-padded copy); returns the
// first panel-relative k not handled (ka + an even count for bf16 panels).
__attribute__((target("avx512f,avx512bw,avx512vl"))) int pack_transpose_avx512(const MatSrc& s, int64_t r0, int rows,
                                                                                const Panel& P, int ka, int kb,
                                                                                int64_t k_shift, void* dst) {
  const int unit_k = P.fmt == Format::F32 ? 1 : 2;  // k's per 32-bit unit
  const int esize = s.dt == DType::F32 ? 4 : 2;
  const int nunits = (kb - ka) / unit_k;
  if (nunits == 0) return ka;
  const UnitConv conv = unit_conv(s, P);
  const char* base = static_cast<const char*>(s.p);
  alignas(64) uint32_t tmp[16 * 16], out[16 * 16];
  for (int i0 = 0; i0 + 16 <= rows; i0 += 16) {
    for (int u0 = 0; u0 < nunits; u0 += 16) {
      const int units = std::min(16, nunits - u0);
      const int kk = ka + u0 * unit_k;
      const char* src = base + (offset(s, r0 + i0, P.k0 - k_shift + kk)) * esize;
      char* d = static_cast<char*>(dst) + (static_cast<int64_t>(kk / unit_k) * P.R + i0) * 4;
      const int64_t ldd = static_cast<int64_t>(P.R) * 4;
      if (conv == UnitConv::Same && units == 16) {
        transpose16x16_u32_avx512(src, s.ld * esize, d, ldd);
        continue;
      }
      for (int i = 0; i < 16; ++i) load_units(src + i * s.ld * esize, conv, units, tmp + 16 * i);
      if (units == 16) {
        transpose16x16_u32_avx512(tmp, 64, d, ldd);
      } else {
        transpose16x16_u32_avx512(tmp, 64, out, 64);
        for (int u = 0; u < units; ++u) std::memcpy(d + u * ldd, out + 16 * u, 64);
      }
    }
  }
  return ka + nunits * unit_k;
}

// The units of rows 0..5 interleaved, 16 per row and step: output vector j (units 16j..16j+15 of
// the panel, unit t = row t % 6 of k-unit t / 6) = three two-row permutes with one index vector
// (row pairs (0,1), (2,3), (4,5)) blended by row pair.
struct Rows6Tables {
  alignas(64) uint32_t idx[6][16];
  uint16_t pair1[6], pair2[6];  // lanes taken from rows 2-3, 4-5
};
const Rows6Tables& rows6_tables() {
  static const Rows6Tables t = [] {
    Rows6Tables r{};
    for (int j = 0; j < 6; ++j)
      for (int e = 0; e < 16; ++e) {
        const int unit = 16 * j + e, k = unit / 6, row = unit % 6;
        r.idx[j][e] = static_cast<uint32_t>(k + 16 * (row & 1));
        if (row / 2 == 1) r.pair1[j] = static_cast<uint16_t>(r.pair1[j] | (1u << e));
        if (row / 2 == 2) r.pair2[j] = static_cast<uint16_t>(r.pair2[j] | (1u << e));
      }
    return r;
  }();
  return t;
}

// A k-contiguous source into a 6-row panel (rows <= 6; missing rows are written as zeros) for the
// full 16-unit blocks of [ka, kb); returns the first panel-relative k not handled.
__attribute__((target("avx512f,avx512bw,avx512vl"))) int pack_rows6_avx512(const MatSrc& s, int64_t r0, int rows,
                                                                            const Panel& P, int ka, int kb,
                                                                            int64_t k_shift, void* dst) {
  const int unit_k = P.fmt == Format::F32 ? 1 : 2;
  const int nblk = (kb - ka) / unit_k / 16;
  if (nblk == 0) return ka;
  const UnitConv conv = unit_conv(s, P);
  const int esize = s.dt == DType::F32 ? 4 : 2;
  const int step = 16 * unit_k * esize;  // source bytes per block and row
  const Rows6Tables& T = rows6_tables();
  const char* src[6];
  for (int i = 0; i < 6; ++i)
    src[i] = static_cast<const char*>(s.p) + offset(s, r0 + std::min(i, rows - 1), P.k0 - k_shift + ka) * esize;
  uint32_t* d = static_cast<uint32_t*>(dst) + (ka / unit_k) * 6;
  alignas(64) uint32_t tmp[16];
  for (int b = 0; b < nblk; ++b) {
    __m512i r[6];
    for (int i = 0; i < 6; ++i) {
      if (i >= rows) {
        r[i] = _mm512_setzero_si512();
      } else if (conv == UnitConv::Same) {
        r[i] = _mm512_loadu_si512(src[i] + b * step);
      } else {
        load_units(src[i] + b * step, conv, 16, tmp);
        r[i] = _mm512_load_si512(tmp);
      }
    }
    for (int j = 0; j < 6; ++j) {
      const __m512i idx = _mm512_load_si512(T.idx[j]);
      __m512i o = _mm512_permutex2var_epi32(r[0], idx, r[1]);
      o = _mm512_mask_mov_epi32(o, T.pair1[j], _mm512_permutex2var_epi32(r[2], idx, r[3]));
      o = _mm512_mask_mov_epi32(o, T.pair2[j], _mm512_permutex2var_epi32(r[4], idx, r[5]));
      _mm512_storeu_si512(d + b * 96 + 16 * j, o);
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
  const bool unit_aligned = P.fmt == Format::F32 || ka % 2 == 0;
  if (s.k_contiguous && has_avx512() && unit_aligned && P.R == 6) {
    ka = pack_rows6_avx512(s, r0, rows, P, ka, kb, k_shift, dst);
  } else if (s.k_contiguous && has_avx512() && unit_aligned && rows >= 16) {
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
  } else if (P.fmt == Format::BF16Pair && !s.k_contiguous && has_avx512() && ka % 2 == 0) {
    // BF16Pair from a row-major [K, N] source (bf16, or f32 rounded first): interleave rows k, k+1,
    // 32 columns at a time.
    const int64_t kbase = P.k0 - k_shift;
    uint16_t* d = static_cast<uint16_t*>(dst);
    const int full = rows / 32 * 32;
    int kk = ka;
    if (s.dt == DType::BF16) {
      const uint16_t* p = static_cast<const uint16_t*>(s.p);
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
    } else {
      const float* p = static_cast<const float*>(s.p);
      alignas(64) uint16_t ha[32], hb[32];
      for (; kk + 2 <= kb; kk += 2) {
        const float* ra = p + (kbase + kk) * s.ld + r0;
        const float* rb = ra + s.ld;
        uint16_t* dd = d + (kk >> 1) * 2 * P.R;
        for (int i = 0; i < rows; i += 32) {
          const int n = std::min(32, rows - i);
          narrow_bf16_avx512(ra + i, n, ha);
          narrow_bf16_avx512(rb + i, n, hb);
          if (n == 32) {
            interleave32_u16_avx512(ha, hb, dd + 2 * i);
          } else {
            for (int j = 0; j < n; ++j) {
              dd[2 * (i + j)] = ha[j];
              dd[2 * (i + j) + 1] = hb[j];
            }
          }
        }
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
