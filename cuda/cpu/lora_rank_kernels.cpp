// The rank-r bf16 products of the CPU LoRA linear (see lora_rank_kernels.h).
//
// rows_times_panel: a group of R rows of x against the whole panel: per pair of k's, the r-wide
//   panel row (NV = rp / 16 vectors) is loaded once and each row's two x values are broadcast as
//   one 32-bit lane; R x NV accumulators (R = 8, 6, 5, 4 for NV = 1..4) hide the vdpbf16ps latency.
// reduce_over_rows: a strip of 32 columns of y against 8 columns of g at a time: per pair of rows
//   t, t + 1 the strip's two rows become two vectors of bf16 pairs (zero-extend, shift, or), and
//   each of the 8 g pairs is broadcast against both (16 accumulators).
// GCC 12 flags its own _mm512_undefined_* helpers inside the intrinsics (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include "lora_rank_kernels.h"
#include <immintrin.h>
#include <algorithm>
#include <cstring>
#include "gemm_kernels.h"
#include "qn/cpu_features.h"
#include "qn/half.h"
#include "qn/parallel.h"

namespace qn {
namespace cpu {
namespace lora_rank {
namespace {

using gemm_impl::narrow_bf16_avx512;
using gemm_impl::transpose16x16_u32_avx512;

inline int64_t round16(int64_t v) { return (v + 15) / 16 * 16; }

inline __mmask16 lanes(int64_t n) { return n >= 16 ? __mmask16(0xffff) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1); }

// One 32-bit lane holding x[k] (low half) and x[k + 1] (high half; zero when k + 1 == K).
inline uint32_t x_pair(const uint16_t* row, int64_t k, int64_t K) {
  if (k + 1 < K) {
    uint32_t v;
    std::memcpy(&v, row + k, 4);
    return v;
  }
  return row[k];
}

// dst[(t / 2) * cols_pad + q] = (bf16(src[t, q]), bf16(src[t + 1, q])) for t < rows (step 2),
// q < cols; the partner of a last odd row is zero. dst must be zero-filled beforehand (padding).
__attribute__((target("avx512f,avx512bw,avx512vl"))) void pair_rows(const float* src, int64_t ld, int64_t rows,
                                                                    int64_t cols, int64_t cols_pad, uint32_t* dst) {
  alignas(64) uint16_t lo[16], hi[16];
  for (int64_t t = 0; t < rows; t += 2) {
    for (int64_t q0 = 0; q0 < cols; q0 += 16) {
      const int n = static_cast<int>(std::min<int64_t>(16, cols - q0));
      std::memset(hi, 0, sizeof hi);
      narrow_bf16_avx512(src + t * ld + q0, n, lo);
      if (t + 1 < rows) narrow_bf16_avx512(src + (t + 1) * ld + q0, n, hi);
      const __m512i v =
          _mm512_or_si512(_mm512_cvtepu16_epi32(_mm256_load_si256(reinterpret_cast<const __m256i*>(lo))),
                          _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_load_si256(reinterpret_cast<const __m256i*>(hi))), 16));
      _mm512_mask_storeu_epi32(dst + (t / 2) * cols_pad + q0, lanes(n), v);
    }
  }
}

template <int NV, int R>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) void rows_group(const uint16_t* const* rows, int nrows,
                                                                                const PairPanel& p, float alpha,
                                                                                float* out, int64_t ldo) {
  __m512 acc[R][NV];
  for (int i = 0; i < R; ++i)
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_setzero_ps();
  const int64_t K = p.k, full = K / 2;
  const uint32_t* pd = p.data.data();
  for (int64_t kp = 0; kp < full; ++kp) {
    __m512bh pv[NV];
    for (int v = 0; v < NV; ++v) pv[v] = (__m512bh)_mm512_loadu_si512(pd + kp * p.rp + 16 * v);
    for (int i = 0; i < R; ++i) {
      uint32_t xv;
      std::memcpy(&xv, rows[i] + 2 * kp, 4);
      const __m512bh bx = (__m512bh)_mm512_set1_epi32(static_cast<int>(xv));
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_dpbf16_ps(acc[i][v], bx, pv[v]);
    }
  }
  if (K & 1) {  // the last k alone: its pair partner is zero on both sides
    __m512bh pv[NV];
    for (int v = 0; v < NV; ++v) pv[v] = (__m512bh)_mm512_loadu_si512(pd + full * p.rp + 16 * v);
    for (int i = 0; i < R; ++i) {
      const __m512bh bx = (__m512bh)_mm512_set1_epi32(static_cast<int>(x_pair(rows[i], 2 * full, K)));
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_dpbf16_ps(acc[i][v], bx, pv[v]);
    }
  }
  const __m512 va = _mm512_set1_ps(alpha);
  for (int i = 0; i < nrows; ++i)
    for (int v = 0; v < NV; ++v)
      _mm512_mask_storeu_ps(out + i * ldo + 16 * v, lanes(p.r - 16 * v), _mm512_mul_ps(va, acc[i][v]));
}

template <int NV, int R>
void rows_all(const uint16_t* x, int64_t ldx, int64_t m, const PairPanel& p, float alpha, float* out, int64_t ldo) {
  const int64_t groups = (m + R - 1) / R;
  parallel_for(groups, 2, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) {
      const int64_t t0 = g * R;
      const int nrows = static_cast<int>(std::min<int64_t>(R, m - t0));
      const uint16_t* rows[R];
      for (int i = 0; i < R; ++i) rows[i] = x + (t0 + std::min(i, nrows - 1)) * ldx;  // spare rows repeat the last
      rows_group<NV, R>(rows, nrows, p, alpha, out + t0 * ldo, ldo);
    }
  });
}

// Column strips of y are 32 wide (one 64-byte line of bf16 per row) and meet 8 columns of g at a
// time: 2 x 8 accumulators. (16-wide strips, half a line per row of a matrix 1-10 kB per row
// apart, ran at a third of the rate.)
constexpr int kStripN = 32, kStripQ = 8;

// acc[v * 8 + q] (16 lanes = columns n0 + 16 v ..) = sum over row pairs of gp[tp][q0 + q] . the
// pair vector of those columns.
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) void strip(const uint32_t* gp, int64_t rp, int64_t q0,
                                                                          const uint16_t* y, int64_t ldy, int64_t m,
                                                                          int64_t n0, int64_t nvalid, __m512* out) {
  __m512 acc[2 * kStripQ];  // local, so they stay in registers
  for (int q = 0; q < 2 * kStripQ; ++q) acc[q] = _mm512_setzero_ps();
  const __mmask16 nm0 = lanes(nvalid), nm1 = lanes(nvalid - 16);
  const int64_t pairs = (m + 1) / 2;
  for (int64_t tp = 0; tp < pairs; ++tp) {
    const int64_t t = 2 * tp;
    const uint16_t* y0 = y + t * ldy + n0;
    __m512i lo0 = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(nm0, y0));
    __m512i lo1 = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(nm1, y0 + 16));
    if (t + 1 < m) {
      lo0 = _mm512_or_si512(lo0, _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(nm0, y0 + ldy)), 16));
      lo1 = _mm512_or_si512(lo1, _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(nm1, y0 + ldy + 16)), 16));
    }
    const __m512bh yv0 = (__m512bh)lo0, yv1 = (__m512bh)lo1;
    const uint32_t* g = gp + tp * rp + q0;
    for (int q = 0; q < kStripQ; ++q) {
      const __m512bh gq = (__m512bh)_mm512_set1_epi32(static_cast<int>(g[q]));
      acc[q] = _mm512_dpbf16_ps(acc[q], gq, yv0);
      acc[kStripQ + q] = _mm512_dpbf16_ps(acc[kStripQ + q], gq, yv1);
    }
  }
  for (int q = 0; q < 2 * kStripQ; ++q) out[q] = acc[q];
}

// Strips [s0, s1) (strip = 32 columns x 8 of the padded r), added into out.
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) void reduce_strips(
    int64_t s0, int64_t s1, const uint32_t* gp, int64_t rp, int64_t r, const uint16_t* y, int64_t ldy, int64_t m,
    int64_t N, float alpha, float* out, int64_t ldo, bool transposed_out) {
  const int64_t chunks = rp / kStripQ;
  __m512 acc[2 * kStripQ];
  alignas(64) float tile[16 * 16], tt[16 * 16];
  const __m512 va = _mm512_set1_ps(alpha);
  for (int64_t s = s0; s < s1; ++s) {
    const int64_t n0 = (s / chunks) * kStripN, q0 = (s % chunks) * kStripQ;
    const int64_t nvalid = std::min<int64_t>(kStripN, N - n0), qvalid = std::min<int64_t>(kStripQ, r - q0);
    if (qvalid <= 0) continue;  // padding of r
    strip(gp, rp, q0, y, ldy, m, n0, nvalid, acc);
    for (int v = 0; v < 2; ++v) {
      const int64_t nv = std::min<int64_t>(16, nvalid - 16 * v);
      if (nv <= 0) break;
      const __m512* av = acc + v * kStripQ;
      if (!transposed_out) {  // out[q * ldo + n]
        const __mmask16 nm = lanes(nv);
        for (int q = 0; q < qvalid; ++q) {
          float* o = out + (q0 + q) * ldo + n0 + 16 * v;
          _mm512_mask_storeu_ps(o, nm, _mm512_fmadd_ps(va, av[q], _mm512_maskz_loadu_ps(nm, o)));
        }
      } else {  // out[n * ldo + q]: transpose (8 q rows, zero-padded to 16) first
        for (int q = 0; q < 16; ++q) _mm512_store_ps(tile + 16 * q, q < kStripQ ? av[q] : _mm512_setzero_ps());
        transpose16x16_u32_avx512(tile, 64, tt, 64);
        const __mmask16 qm = lanes(qvalid);
        for (int64_t l = 0; l < nv; ++l) {
          float* o = out + (n0 + 16 * v + l) * ldo + q0;
          _mm512_mask_storeu_ps(o, qm, _mm512_fmadd_ps(va, _mm512_load_ps(tt + 16 * l), _mm512_maskz_loadu_ps(qm, o)));
        }
      }
    }
  }
}

}  // namespace

bool available(int64_t r) {
  static const bool isa = cpu_features().avx512f && cpu_features().avx512bw && cpu_features().avx512vl &&
                          cpu_features().avx512_bf16;
  return isa && r > 0 && r <= kMaxRank;
}

__attribute__((target("avx512f,avx512bw,avx512vl"))) void pack_panel_from_rows(const float* a, int64_t lda, int64_t r,
                                                                               int64_t K, PairPanel& p) {
  p.k = K;
  p.r = r;
  p.rp = round16(r);
  const int64_t kpairs = (K + 1) / 2;
  p.data.assign(static_cast<size_t>(kpairs * p.rp), 0u);
  alignas(64) uint32_t tmp[16 * 16], tt[16 * 16];
  for (int64_t q0 = 0; q0 < p.rp; q0 += 16) {
    for (int64_t kp0 = 0; kp0 < kpairs; kp0 += 16) {
      const int64_t kn = std::min<int64_t>(32, K - 2 * kp0);  // k's in this block
      for (int i = 0; i < 16; ++i) {
        std::memset(tmp + 16 * i, 0, 64);
        if (q0 + i < r) narrow_bf16_avx512(a + (q0 + i) * lda + 2 * kp0, static_cast<int>(kn), reinterpret_cast<uint16_t*>(tmp + 16 * i));
      }
      transpose16x16_u32_avx512(tmp, 64, tt, 64);  // tt[l * 16 + i] = pair kp0 + l of row q0 + i
      const int64_t ln = std::min<int64_t>(16, kpairs - kp0);
      for (int64_t l = 0; l < ln; ++l) std::memcpy(p.data.data() + (kp0 + l) * p.rp + q0, tt + 16 * l, 64);
    }
  }
}

void pack_panel_from_cols(const float* b, int64_t ldb, int64_t K, int64_t r, PairPanel& p) {
  p.k = K;
  p.r = r;
  p.rp = round16(r);
  p.data.assign(static_cast<size_t>((K + 1) / 2 * p.rp), 0u);
  pair_rows(b, ldb, K, r, p.rp, p.data.data());
}

void rows_times_panel(const uint16_t* x, int64_t ldx, int64_t m, const PairPanel& p, float alpha, float* out,
                      int64_t ldo) {
  if (m <= 0) return;
  switch (p.rp / 16) {
    case 1: return rows_all<1, 8>(x, ldx, m, p, alpha, out, ldo);
    case 2: return rows_all<2, 6>(x, ldx, m, p, alpha, out, ldo);
    case 3: return rows_all<3, 5>(x, ldx, m, p, alpha, out, ldo);
    default: return rows_all<4, 4>(x, ldx, m, p, alpha, out, ldo);
  }
}

void reduce_over_rows(const float* g, int64_t ldg, int64_t r,
                                                                           const uint16_t* y, int64_t ldy, int64_t m,
                                                                           int64_t N, float alpha, float* out,
                                                                           int64_t ldo, bool transposed_out) {
  if (m <= 0 || N <= 0) return;
  // g as bf16 pairs along t: gp[(t / 2) * rp + q] = (g[t, q], g[t + 1, q]), zero padded.
  const int64_t rp = round16(r);
  std::vector<uint32_t> gp(static_cast<size_t>((m + 1) / 2 * rp), 0u);
  pair_rows(g, ldg, m, r, rp, gp.data());
  const int64_t strips = (N + kStripN - 1) / kStripN * (rp / kStripQ);
  parallel_for(strips, 4, [&](int64_t s0, int64_t s1) {
    reduce_strips(s0, s1, gp.data(), rp, r, y, ldy, m, N, alpha, out, ldo, transposed_out);
  });
}

}  // namespace lora_rank
}  // namespace cpu
}  // namespace qn
