// CPU attention forward / backward (see qn/ops/attention.h), FlashAttention-2 structure:
//   forward   tasks (b, q head, 64-query tile): loop over 64-key tiles up to the diagonal with an
//             online softmax; S = Q K^T and O += P V as small f32 micro-GEMMs; saves lse.
//   backward  delta = rowsum(dout * out); then tasks (b, kv head, key tile) accumulate dK, dV over
//             the group's q heads and query tiles; tasks (b, q head, query tile) accumulate dQ.
//             (Two passes recompute P instead of racing on dQ: deterministic, no atomics.) When
//             T is small, the dK/dV tasks also store each key tile's dS K and a reduction pass
//             sums them in key-tile order (still deterministic, no recomputation).
// No T x T matrix: per task only 64 x 64 score tiles. K and V (and in backward q * scale and dout)
// are first packed per head into f32 (K, V also transposed), zero-padded to whole tiles. The task bodies are compiled three times (AVX-512, AVX2, baseline) and picked
// with cpu_features(); the two micro-GEMMs (S = A B^T over D, C += A B over the tile) are AVX-512
// intrinsics (4 x 64 register blocks) or fixed-width loops for the other levels. Masked scores
// are -inf; a row with no allowed key gets out = 0, lse = -inf and contributes no gradient.
// bf16 inputs on a CPU with AVX512_BF16 (and head_dim % 16 == 0) take bf16 tiles instead
// (attention_bf16.h: vdpbf16ps, twice the f32 FMA rate): Q, K, V, dO packed as bf16 (q unscaled,
// the scale applied to S and dK in f32), P and dS rounded to bf16 before the products that use
// them, as FlashAttention-2 does on the GPU; softmax, lse and all accumulators stay f32.
// QN_ATTENTION_CPU_F32=1 forces the f32 tiles (for comparisons).
// GCC 12 flags its own _mm512_undefined_* helpers inside the intrinsics (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <type_traits>
#include <vector>
#include <immintrin.h>
#include "attention_bf16.h"
#include "gemm_kernels.h"
#include "float_rows.h"
#include "qn/cpu_features.h"
#include "qn/ops/attention.h"
#include "qn/parallel.h"

namespace qn {
namespace cpu {
namespace {

constexpr int kB = 64;  // query and key tile size

struct Job {
  const void *q, *k, *v, *mask;
  DType mask_dt;
  void* out;
  float* lse;
  const void* dout;
  void *dq, *dk, *dv;
  const float* delta;  // backward: [B, Hq, T]
  // Backward, fused dQ: per key tile partial sums of dS K, [nt, B, Hq, Tp, D] (null: separate dQ pass).
  float* dqp;
  int64_t b, t, tp, hq, hkv, d;  // tp: T rounded up to the tile size
  float scale;
  bool causal;
  // Packed f32 copies (zero rows/columns past T): kt, vt [B, Hkv, D, Tp] (transposed), kr, vr
  // [B, Hkv, Tp, D]; backward also qf (q * scale) and dof [B, Hq, Tp, D].
  const float *kt, *vt, *kr, *vr, *qf, *dof;
  // bf16 tiles (bf16mm): ktp, vtp [B, Hkv, D/2, Tp, 2] (pairs along D), vrp, krp [B, Hkv, Tp/2, D, 2]
  // and qp, dop [B, Hq, Tp/2, D, 2] (pairs along T), qrow, dorow [B, Hq, Tp, D] (rows, q unscaled).
  bool bf16mm;
  const uint16_t *ktp, *vtp, *vrp, *krp, *qp, *dop, *qrow, *dorow;
  // Micro-GEMMs for the CPU's SIMD level (see gemm_abt / gemm_acc).
  void (*abt)(float* s, const float* a, const float* bt, int64_t ldb, int64_t d);
  void (*acc)(float* c, const float* a, int64_t sr, int64_t sx, const float* b, int64_t d);
  // The forward's online-softmax update of a score tile (see online_softmax).
  void (*softmax)(float* s, float* m, float* l, float* o, int64_t d);
  bool keep(int64_t bi, int64_t j) const {
    if (!mask) return true;
    return mask_dt == DType::I32 ? static_cast<const int32_t*>(mask)[bi * t + j] != 0
                                 : static_cast<const uint8_t*>(mask)[bi * t + j] != 0;
  }
  // Packed tiles: rows [j0, j0 + kB) of kv head g (or q head h) of batch bi.
  const float* kt_at(int64_t bi, int64_t g, int64_t j0) const { return kt + (bi * hkv + g) * d * tp + j0; }
  const float* vt_at(int64_t bi, int64_t g, int64_t j0) const { return vt + (bi * hkv + g) * d * tp + j0; }
  const float* kr_at(int64_t bi, int64_t g, int64_t j0) const { return kr + ((bi * hkv + g) * tp + j0) * d; }
  const float* vr_at(int64_t bi, int64_t g, int64_t j0) const { return vr + ((bi * hkv + g) * tp + j0) * d; }
  const float* qf_at(int64_t bi, int64_t h, int64_t i0) const { return qf + ((bi * hq + h) * tp + i0) * d; }
  const float* dof_at(int64_t bi, int64_t h, int64_t i0) const { return dof + ((bi * hq + h) * tp + i0) * d; }
  float* dqp_at(int64_t kt, int64_t bi, int64_t h, int64_t i0) const { return dqp + (((kt * b + bi) * hq + h) * tp + i0) * d; }
  // bf16 tiles: the pair-interleaved and row copies start at the same element offsets as the f32 ones
  const uint16_t* ktp_at(int64_t bi, int64_t g, int64_t j0) const { return ktp + (bi * hkv + g) * d * tp + 2 * j0; }
  const uint16_t* vtp_at(int64_t bi, int64_t g, int64_t j0) const { return vtp + (bi * hkv + g) * d * tp + 2 * j0; }
  const uint16_t* vrp_at(int64_t bi, int64_t g, int64_t j0) const { return vrp + ((bi * hkv + g) * tp + j0) * d; }
  const uint16_t* krp_at(int64_t bi, int64_t g, int64_t j0) const { return krp + ((bi * hkv + g) * tp + j0) * d; }
  const uint16_t* qp_at(int64_t bi, int64_t h, int64_t i0) const { return qp + ((bi * hq + h) * tp + i0) * d; }
  const uint16_t* dop_at(int64_t bi, int64_t h, int64_t i0) const { return dop + ((bi * hq + h) * tp + i0) * d; }
  const uint16_t* qrow_at(int64_t bi, int64_t h, int64_t i0) const { return qrow + ((bi * hq + h) * tp + i0) * d; }
  const uint16_t* dorow_at(int64_t bi, int64_t h, int64_t i0) const { return dorow + ((bi * hq + h) * tp + i0) * d; }
};

// Per-thread tile buffers (f32).
struct Bufs {
  std::vector<float> qs, o, s, dp, dk, dv, bias, m, l;
  std::vector<uint16_t> qb, pb;  // bf16 tiles: q rows [kB, d]; P / P^T / dS / dS^T [kB, kB]
  explicit Bufs(int64_t d)
      : qs(kB * d), o(kB * d), s(kB * kB), dp(kB * kB), dk(kB * d), dv(kB * d), bias(kB), m(kB), l(kB), qb(kB * d),
        pb(kB * kB) {}
};

// dst[r][:] = mul * src[r * stride + :] for r < n, zero rows up to kB.
template <typename T>
QN_XF_INLINE void load_rows(float* dst, const T* src, int64_t stride, int64_t n, int64_t d, float mul) {
  for (int64_t r = 0; r < kB; ++r)
    for (int64_t c = 0; c < d; ++c) dst[r * d + c] = r < n ? mul * xf::to_f32(src[r * stride + c]) : 0.f;
}

// Calls row_fn(head_base, r, row) for every row r < Tp of every (b, head) of a [B, T, H, D] tensor,
// head_base = the head's offset in a [B, H, Tp * D]-sized packed copy, row = the source row (only
// read when r < T). One parallel task per (b, head, tile).
template <typename T, typename F>
void for_each_packed_row(const void* src_v, int64_t b, int64_t t, int64_t tp, int64_t heads, int64_t d, const F& row_fn) {
  const T* src = static_cast<const T*>(src_v);
  const int64_t tiles = tp / kB;
  parallel_for(b * heads * tiles, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t task = t0; task < t1; ++task) {
      const int64_t tile = task % tiles, hd = (task / tiles) % heads, bi = task / (tiles * heads);
      for (int64_t r = tile * kB; r < (tile + 1) * kB; ++r)
        row_fn((bi * heads + hd) * tp * d, r, src + ((bi * t + r) * heads + hd) * d);
    }
  });
}

// Packs head hd of [B, T, H, D] into f32 [B, H, Tp, D] (rows) or [B, H, D, Tp] (transposed), times
// mul, zero past T.
template <typename T>
void pack(float* dst, const void* src, int64_t b, int64_t t, int64_t tp, int64_t heads, int64_t d, float mul,
          bool transposed) {
  for_each_packed_row<T>(src, b, t, tp, heads, d, [&](int64_t head, int64_t r, const T* row) {
    float* base = dst + head;
    for (int64_t e = 0; e < d; ++e) {
      const float v = r < t ? mul * xf::to_f32(row[e]) : 0.f;
      if (transposed) base[e * tp + r] = v;
      else base[r * d + e] = v;
    }
  });
}

// sum_e a[e] * b[e] in f32 over bf16 vectors (d % 16 == 0): 16 lanes, then a tree (the delta of the
// backward; the element loop left it scalar).
QN_XF_AVX512 float dot_bf16_avx512(const uint16_t* a, const uint16_t* b, int64_t d) {
  __m512 acc = _mm512_setzero_ps();
  for (int64_t e = 0; e < d; e += 16) {
    const __m512 x = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + e))), 16));
    const __m512 y = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + e))), 16));
    acc = _mm512_fmadd_ps(x, y, acc);
  }
  return _mm512_reduce_add_ps(acc);
}

// bf16 copies of a bf16 [B, T, H, D] tensor, zero past T: rows [B, H, Tp, D]; pairs along D
// [B, H, D/2, Tp, 2]; pairs along T [B, H, Tp/2, D, 2]. Used only on CPUs with AVX512_BF16 (the
// bf16 tiles), so the paired layouts are built with AVX-512: 16 x 16 transposes of the 32-bit pairs
// (along D) and interleaved row pairs (along T), a tile of 64 rows per task (d % 16 == 0).
enum class Bf16Layout { Rows, PairsD, PairsT };
QN_XF_AVX512 void pack_pairs_tile(uint16_t* head_dst, const uint16_t* src, int64_t t, int64_t tp, int64_t heads,
                                  int64_t d, int64_t bi, int64_t hd, int64_t r0, Bf16Layout layout) {
  auto row = [&](int64_t r) { return src + ((bi * t + r) * heads + hd) * d; };
  if (layout == Bf16Layout::PairsD) {  // unit (e/2, r) at 32-bit index (e/2) * tp + r
    alignas(64) uint32_t tmp[16 * 16];
    for (int64_t i0 = r0; i0 < r0 + kB; i0 += 16) {
      const int64_t valid = std::max<int64_t>(0, std::min<int64_t>(16, t - i0));
      for (int64_t u0 = 0; u0 < d / 2; u0 += 16) {
        const int64_t units = std::min<int64_t>(16, d / 2 - u0);
        const __mmask16 um = units >= 16 ? __mmask16(0xffff) : __mmask16((1u << units) - 1);
        for (int64_t i = 0; i < 16; ++i)
          _mm512_store_si512(tmp + 16 * i, i < valid ? _mm512_maskz_loadu_epi32(um, row(i0 + i) + 2 * u0)
                                                     : _mm512_setzero_si512());
        alignas(64) uint32_t out[16 * 16];
        gemm_impl::transpose16x16_u32_avx512(tmp, 64, out, 64);
        uint32_t* dst = reinterpret_cast<uint32_t*>(head_dst);
        for (int64_t u = 0; u < units; ++u) std::memcpy(dst + (u0 + u) * tp + i0, out + 16 * u, 64);
      }
    }
  } else {  // PairsT: rows r, r + 1 interleaved element by element at (r / 2) * 2d
    const std::vector<uint16_t> zeros(static_cast<size_t>(d), 0);  // the rows past T
    alignas(64) uint16_t pad[64];
    for (int64_t r = r0; r < r0 + kB; r += 2) {
      const uint16_t* ra = r < t ? row(r) : zeros.data();
      const uint16_t* rb = r + 1 < t ? row(r + 1) : zeros.data();
      uint16_t* out = head_dst + (r >> 1) * d * 2;
      int64_t e = 0;
      for (; e + 32 <= d; e += 32) gemm_impl::interleave32_u16_avx512(ra + e, rb + e, out + 2 * e);
      if (e < d) {  // a last 16 (d % 32 == 16): through a zero-padded copy
        std::memset(pad, 0, sizeof pad);
        std::memcpy(pad, ra + e, 32);
        std::memcpy(pad + 32, rb + e, 32);
        alignas(64) uint16_t both[64];
        gemm_impl::interleave32_u16_avx512(pad, pad + 32, both);
        std::memcpy(out + 2 * e, both, 64);
      }
    }
  }
}

void pack_bf16(uint16_t* dst, const void* src, int64_t b, int64_t t, int64_t tp, int64_t heads, int64_t d,
               Bf16Layout layout) {
  if (layout == Bf16Layout::Rows) {
    for_each_packed_row<uint16_t>(src, b, t, tp, heads, d, [&](int64_t head, int64_t r, const uint16_t* row) {
      uint16_t* base = dst + head;
      if (r < t) std::memcpy(base + r * d, row, d * sizeof(uint16_t));
      else std::fill(base + r * d, base + (r + 1) * d, uint16_t(0));
    });
    return;
  }
  const int64_t tiles = tp / kB;
  parallel_for(b * heads * tiles, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t task = t0; task < t1; ++task) {
      const int64_t tile = task % tiles, hd = (task / tiles) % heads, bi = task / (tiles * heads);
      pack_pairs_tile(dst + (bi * heads + hd) * tp * d, static_cast<const uint16_t*>(src), t, tp, heads, d, bi, hd,
                      tile * kB, layout);
    }
  });
}

// S[i][0..kB) = sum_c A[i][c] * Bt[c * ldb + 0..kB), i < kB (two rows at a time).
QN_XF_INLINE void gemm_abt(float* s, const float* a, const float* bt, int64_t ldb, int64_t d) {
  for (int64_t i = 0; i < kB; i += 2) {
    float acc0[kB] = {0}, acc1[kB] = {0};
    const float* a0 = a + i * d;
    const float* a1 = a0 + d;
    for (int64_t c = 0; c < d; ++c) {
      const float x0 = a0[c], x1 = a1[c];
      const float* br = bt + c * ldb;
      for (int j = 0; j < kB; ++j) {
        acc0[j] += x0 * br[j];
        acc1[j] += x1 * br[j];
      }
    }
    for (int j = 0; j < kB; ++j) {
      s[i * kB + j] = acc0[j];
      s[(i + 1) * kB + j] = acc1[j];
    }
  }
}

// C[r][:] += sum_x A(r, x) * B[x][:] for r, x < kB, with A(r, x) = a[r * sr + x * sx] (so P V with
// (kB, 1) and P^T dO with (1, kB)). Zero coefficients are skipped (masked keys, padded rows).
QN_XF_INLINE void gemm_acc(float* c, const float* a, int64_t sr, int64_t sx, const float* b, int64_t d) {
  for (int64_t r = 0; r < kB; ++r) {
    float* cr = c + r * d;
    for (int64_t x = 0; x < kB; ++x) {
      const float w = a[r * sr + x * sx];
      if (w == 0.f) continue;
      const float* br = b + x * d;
      for (int64_t e = 0; e < d; ++e) cr[e] += w * br[e];
    }
  }
}

// AVX-512 versions of the two micro-GEMMs: 4 rows x 64 columns in 16 zmm accumulators.
QN_XF_AVX512 void gemm_abt_avx512(float* s, const float* a, const float* bt, int64_t ldb, int64_t d) {
  for (int64_t i = 0; i < kB; i += 4) {
    __m512 c[4][4];
    for (int r = 0; r < 4; ++r)
      for (int v = 0; v < 4; ++v) c[r][v] = _mm512_setzero_ps();
    for (int64_t k = 0; k < d; ++k) {
      const float* br = bt + k * ldb;
      const __m512 b0 = _mm512_loadu_ps(br), b1 = _mm512_loadu_ps(br + 16), b2 = _mm512_loadu_ps(br + 32),
                   b3 = _mm512_loadu_ps(br + 48);
      for (int r = 0; r < 4; ++r) {
        const __m512 x = _mm512_set1_ps(a[(i + r) * d + k]);
        c[r][0] = _mm512_fmadd_ps(x, b0, c[r][0]);
        c[r][1] = _mm512_fmadd_ps(x, b1, c[r][1]);
        c[r][2] = _mm512_fmadd_ps(x, b2, c[r][2]);
        c[r][3] = _mm512_fmadd_ps(x, b3, c[r][3]);
      }
    }
    for (int r = 0; r < 4; ++r)
      for (int v = 0; v < 4; ++v) _mm512_storeu_ps(s + (i + r) * kB + 16 * v, c[r][v]);
  }
}

QN_XF_AVX512 void gemm_acc_avx512(float* c, const float* a, int64_t sr, int64_t sx, const float* b, int64_t d) {
  for (int64_t d0 = 0; d0 < d; d0 += 64) {
    __mmask16 m[4];
    for (int v = 0; v < 4; ++v) {
      const int64_t left = d - d0 - 16 * v;
      m[v] = left >= 16 ? (__mmask16)0xFFFF : left <= 0 ? (__mmask16)0 : (__mmask16)((1u << left) - 1);
    }
    for (int64_t r0 = 0; r0 < kB; r0 += 4) {
      __m512 acc[4][4];
      for (int r = 0; r < 4; ++r)
        for (int v = 0; v < 4; ++v) acc[r][v] = _mm512_maskz_loadu_ps(m[v], c + (r0 + r) * d + d0 + 16 * v);
      for (int64_t x = 0; x < kB; ++x) {
        const float* br = b + x * d + d0;
        __m512 bv[4];
        for (int v = 0; v < 4; ++v) bv[v] = _mm512_maskz_loadu_ps(m[v], br + 16 * v);
        for (int r = 0; r < 4; ++r) {
          const __m512 w = _mm512_set1_ps(a[(r0 + r) * sr + x * sx]);
          for (int v = 0; v < 4; ++v) acc[r][v] = _mm512_fmadd_ps(w, bv[v], acc[r][v]);
        }
      }
      for (int r = 0; r < 4; ++r)
        for (int v = 0; v < 4; ++v) _mm512_mask_storeu_ps(c + (r0 + r) * d + d0 + 16 * v, m[v], acc[r][v]);
    }
  }
}

QN_XF_AVX2 void gemm_abt_avx2(float* s, const float* a, const float* bt, int64_t ldb, int64_t d) {
  gemm_abt(s, a, bt, ldb, d);
}
QN_XF_AVX2 void gemm_acc_avx2(float* c, const float* a, int64_t sr, int64_t sx, const float* b, int64_t d) {
  gemm_acc(c, a, sr, sx, b, d);
}
void gemm_abt_scalar(float* s, const float* a, const float* bt, int64_t ldb, int64_t d) { gemm_abt(s, a, bt, ldb, d); }
void gemm_acc_scalar(float* c, const float* a, int64_t sr, int64_t sx, const float* b, int64_t d) {
  gemm_acc(c, a, sr, sx, b, d);
}

// Additive key bias for a key tile: 0 for kept keys, -inf for padding and columns past the end.
QN_XF_INLINE void key_bias(const Job& jb, int64_t bi, int64_t j0, int64_t nk, float* bias) {
  for (int64_t c = 0; c < kB; ++c) bias[c] = c < nk && jb.keep(bi, j0 + c) ? 0.f : -INFINITY;
}

// Applies bias and the causal limit to the score tile in place (masked -> -inf).
QN_XF_INLINE void mask_scores(const Job& jb, float* s, const float* bias, int64_t i0, int64_t j0) {
  for (int64_t i = 0; i < kB; ++i) {
    const int64_t lim = jb.causal ? i0 + i - j0 : kB;  // allowed columns c <= lim
    for (int64_t c = 0; c < kB; ++c) s[i * kB + c] = c <= lim ? s[i * kB + c] + bias[c] : -INFINITY;
  }
}

// One key tile of the forward's online softmax, row by row: m (running max) and l (running sum)
// updated, the tile's scores replaced by P = exp(s - m_new) (rows with nothing allowed yet: 0), and
// the output rows rescaled by exp(m_old - m_new).
QN_XF_INLINE void online_softmax(float* s, float* m, float* l, float* o, int64_t d) {
  for (int64_t i = 0; i < kB; ++i) {
    float* sr = s + i * kB;
    float mx = -INFINITY;
    for (int c = 0; c < kB; ++c) mx = std::max(mx, sr[c]);
    const float mnew = std::max(m[i], mx);
    if (mnew == -INFINITY) {  // nothing allowed yet in this row: P row = 0
      for (int c = 0; c < kB; ++c) sr[c] = 0.f;
      continue;
    }
    const float alpha = xf::exp_approx(m[i] - mnew);
    float sum = 0.f;
    for (int c = 0; c < kB; ++c) {
      sr[c] = xf::exp_approx(sr[c] - mnew);
      sum += sr[c];
    }
    l[i] = l[i] * alpha + sum;
    m[i] = mnew;
    if (alpha != 1.f)
      for (int64_t e = 0; e < d; ++e) o[i * d + e] *= alpha;
  }
}

// The same with explicit AVX-512 (the compiler leaves the max and sum reductions scalar): the same
// exp polynomial on 16 lanes; the row sum is added in a different order (4 vectors, then a tree).
QN_XF_AVX512 void online_softmax_avx512(float* s, float* m, float* l, float* o, int64_t d) {
  for (int64_t i = 0; i < kB; ++i) {
    float* sr = s + i * kB;
    __m512 v[kB / 16];
    for (int c = 0; c < kB / 16; ++c) v[c] = _mm512_loadu_ps(sr + 16 * c);
    const float mx = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(v[0], v[1]), _mm512_max_ps(v[2], v[3])));
    const float mnew = std::max(m[i], mx);
    if (mnew == -INFINITY) {
      for (int c = 0; c < kB / 16; ++c) _mm512_storeu_ps(sr + 16 * c, _mm512_setzero_ps());
      continue;
    }
    const float alpha = xf::exp_approx(m[i] - mnew);
    const __m512 vm = _mm512_set1_ps(mnew);
    __m512 sum = _mm512_setzero_ps();
    for (int c = 0; c < kB / 16; ++c) {
      const __m512 p = xf::exp_approx_avx512(_mm512_sub_ps(v[c], vm));
      _mm512_storeu_ps(sr + 16 * c, p);
      sum = _mm512_add_ps(sum, p);
    }
    l[i] = l[i] * alpha + _mm512_reduce_add_ps(sum);
    m[i] = mnew;
    if (alpha != 1.f) {
      const __m512 va = _mm512_set1_ps(alpha);
      float* orow = o + i * d;
      for (int64_t e = 0; e < d; e += 16) {
        const __mmask16 k = d - e >= 16 ? __mmask16(0xffff) : __mmask16((1u << (d - e)) - 1);
        _mm512_mask_storeu_ps(orow + e, k, _mm512_mul_ps(va, _mm512_maskz_loadu_ps(k, orow + e)));
      }
    }
  }
}
QN_XF_AVX2 void online_softmax_avx2(float* s, float* m, float* l, float* o, int64_t d) { online_softmax(s, m, l, o, d); }
void online_softmax_scalar(float* s, float* m, float* l, float* o, int64_t d) { online_softmax(s, m, l, o, d); }

template <typename T>
QN_XF_INLINE void forward_task(const Job& jb, Bufs& w, int64_t task) {
  const int64_t nqt = jb.tp / kB;
  const int64_t qt = task % nqt, h = (task / nqt) % jb.hq, bi = task / (nqt * jb.hq);
  const int64_t g = h / (jb.hq / jb.hkv), d = jb.d;
  const int64_t i0 = qt * kB, nq = std::min<int64_t>(kB, jb.t - i0);
  const T* q = static_cast<const T*>(jb.q) + ((bi * jb.t + i0) * jb.hq + h) * d;
  if (jb.bf16mm) {  // bf16 q rows as they are (the scale goes on S)
    const uint16_t* qh = reinterpret_cast<const uint16_t*>(q);
    for (int64_t r = 0; r < nq; ++r) std::memcpy(w.qb.data() + r * d, qh + r * jb.hq * d, d * sizeof(uint16_t));
    std::fill(w.qb.begin() + nq * d, w.qb.end(), uint16_t(0));
  } else {
    load_rows(w.qs.data(), q, jb.hq * d, nq, d, jb.scale);
  }
  std::fill(w.o.begin(), w.o.end(), 0.f);
  std::fill(w.m.begin(), w.m.end(), -INFINITY);
  std::fill(w.l.begin(), w.l.end(), 0.f);
  const int64_t jend = jb.causal ? i0 + nq : jb.t;
  for (int64_t j0 = 0; j0 < jend; j0 += kB) {
    const int64_t nk = std::min<int64_t>(kB, jend - j0);
    key_bias(jb, bi, j0, nk, w.bias.data());
    if (jb.bf16mm) attention_bf16::abt(w.s.data(), w.qb.data(), d, jb.ktp_at(bi, g, j0), jb.tp, d, jb.scale);
    else jb.abt(w.s.data(), w.qs.data(), jb.kt_at(bi, g, j0), jb.tp, d);
    mask_scores(jb, w.s.data(), w.bias.data(), i0, j0);
    jb.softmax(w.s.data(), w.m.data(), w.l.data(), w.o.data(), d);
    if (jb.bf16mm) {
      attention_bf16::to_bf16(w.s.data(), w.pb.data());
      attention_bf16::acc(w.o.data(), w.pb.data(), jb.vrp_at(bi, g, j0), d);
    } else {
      jb.acc(w.o.data(), w.s.data(), kB, 1, jb.vr_at(bi, g, j0), d);
    }
  }
  T* out = static_cast<T*>(jb.out) + ((bi * jb.t + i0) * jb.hq + h) * d;
  for (int64_t i = 0; i < nq; ++i) {
    const float inv = w.l[i] > 0.f ? 1.f / w.l[i] : 0.f;
    for (int64_t e = 0; e < d; ++e) out[i * jb.hq * d + e] = xf::from_f32<T>(w.o[i * d + e] * inv);
    if (jb.lse) jb.lse[(bi * jb.hq + h) * jb.t + i0 + i] = w.l[i] > 0.f ? w.m[i] + std::log(w.l[i]) : -INFINITY;
  }
}

// Recomputes P (in w.s) and dS = P * (dP - delta) (in w.dp) for query tile i0 of head h against key
// tile j0 of kv head g (the key bias in w.bias).
QN_XF_INLINE void scores_and_ds(const Job& jb, Bufs& w, int64_t bi, int64_t h, int64_t g, int64_t i0, int64_t nq,
                                int64_t j0) {
  const int64_t d = jb.d;
  if (jb.bf16mm) {
    attention_bf16::abt(w.s.data(), jb.qrow_at(bi, h, i0), d, jb.ktp_at(bi, g, j0), jb.tp, d, jb.scale);
    mask_scores(jb, w.s.data(), w.bias.data(), i0, j0);
    attention_bf16::abt(w.dp.data(), jb.dorow_at(bi, h, i0), d, jb.vtp_at(bi, g, j0), jb.tp, d, 1.f);
  } else {
    jb.abt(w.s.data(), jb.qf_at(bi, h, i0), jb.kt_at(bi, g, j0), jb.tp, d);
    mask_scores(jb, w.s.data(), w.bias.data(), i0, j0);
    jb.abt(w.dp.data(), jb.dof_at(bi, h, i0), jb.vt_at(bi, g, j0), jb.tp, d);
  }
  const float* lse = jb.lse + (bi * jb.hq + h) * jb.t + i0;
  const float* delta = jb.delta + (bi * jb.hq + h) * jb.t + i0;
  for (int64_t i = 0; i < kB; ++i) {
    float* sr = w.s.data() + i * kB;
    float* dr = w.dp.data() + i * kB;
    const float li = i < nq ? lse[i] : -INFINITY;
    if (li == -INFINITY) {
      for (int c = 0; c < kB; ++c) sr[c] = dr[c] = 0.f;
      continue;
    }
    const float di = delta[i];
    for (int c = 0; c < kB; ++c) {
      const float p = xf::exp_approx(sr[c] - li);
      sr[c] = p;
      dr[c] = p * (dr[c] - di);
    }
  }
}

template <typename T>
QN_XF_INLINE void dkv_task(const Job& jb, Bufs& w, int64_t task) {
  const int64_t nkt = jb.tp / kB, d = jb.d, grp = jb.hq / jb.hkv;
  const int64_t kt = task % nkt, g = (task / nkt) % jb.hkv, bi = task / (nkt * jb.hkv);
  const int64_t j0 = kt * kB, nk = std::min<int64_t>(kB, jb.t - j0);
  key_bias(jb, bi, j0, nk, w.bias.data());
  std::fill(w.dk.begin(), w.dk.end(), 0.f);
  std::fill(w.dv.begin(), w.dv.end(), 0.f);
  for (int64_t h = g * grp; h < (g + 1) * grp; ++h) {
    for (int64_t i0 = jb.causal ? j0 : 0; i0 < jb.t; i0 += kB) {
      const int64_t nq = std::min<int64_t>(kB, jb.t - i0);
      scores_and_ds(jb, w, bi, h, g, i0, nq, j0);
      float* part = jb.dqp ? jb.dqp_at(kt, bi, h, i0) : nullptr;  // this key tile's share of dQ: dS K
      if (part && !jb.bf16mm) std::fill(part, part + kB * d, 0.f);  // (summed in dq_reduce_task)
      if (jb.bf16mm) {
        attention_bf16::to_bf16_t(w.s.data(), w.pb.data());
        attention_bf16::acc(w.dv.data(), w.pb.data(), jb.dop_at(bi, h, i0), d);  // dV += P^T dO
        attention_bf16::to_bf16_t(w.dp.data(), w.pb.data());
        attention_bf16::acc(w.dk.data(), w.pb.data(), jb.qp_at(bi, h, i0), d);  // dK += dS^T q (scaled below)
        if (part) {
          attention_bf16::to_bf16(w.dp.data(), w.pb.data());
          attention_bf16::acc(part, w.pb.data(), jb.krp_at(bi, g, j0), d, false);
        }
      } else {
        jb.acc(w.dv.data(), w.s.data(), 1, kB, jb.dof_at(bi, h, i0), d);  // dV += P^T dO
        jb.acc(w.dk.data(), w.dp.data(), 1, kB, jb.qf_at(bi, h, i0), d);  // dK += dS^T (scale q)
        if (part) jb.acc(part, w.dp.data(), kB, 1, jb.kr_at(bi, g, j0), d);
      }
    }
  }
  const int64_t off = ((bi * jb.t + j0) * jb.hkv + g) * d;
  T* dk = static_cast<T*>(jb.dk) + off;
  T* dv = static_cast<T*>(jb.dv) + off;
  const float dk_scale = jb.bf16mm ? jb.scale : 1.f;
  for (int64_t r = 0; r < nk; ++r)
    for (int64_t e = 0; e < d; ++e) {
      dk[r * jb.hkv * d + e] = xf::from_f32<T>(dk_scale * w.dk[r * d + e]);
      dv[r * jb.hkv * d + e] = xf::from_f32<T>(w.dv[r * d + e]);
    }
}

template <typename T>
QN_XF_INLINE void dq_task(const Job& jb, Bufs& w, int64_t task) {
  const int64_t nqt = jb.tp / kB, d = jb.d;
  const int64_t qt = task % nqt, h = (task / nqt) % jb.hq, bi = task / (nqt * jb.hq);
  const int64_t g = h / (jb.hq / jb.hkv);
  const int64_t i0 = qt * kB, nq = std::min<int64_t>(kB, jb.t - i0);
  std::fill(w.o.begin(), w.o.end(), 0.f);  // dQ accumulator
  const int64_t jend = jb.causal ? i0 + nq : jb.t;
  for (int64_t j0 = 0; j0 < jend; j0 += kB) {
    key_bias(jb, bi, j0, std::min<int64_t>(kB, jend - j0), w.bias.data());
    scores_and_ds(jb, w, bi, h, g, i0, nq, j0);
    if (jb.bf16mm) {
      attention_bf16::to_bf16(w.dp.data(), w.pb.data());
      attention_bf16::acc(w.o.data(), w.pb.data(), jb.krp_at(bi, g, j0), d);  // dQ += dS K
    } else {
      jb.acc(w.o.data(), w.dp.data(), kB, 1, jb.kr_at(bi, g, j0), d);  // dQ += dS K
    }
  }
  T* dq = static_cast<T*>(jb.dq) + ((bi * jb.t + i0) * jb.hq + h) * d;
  for (int64_t i = 0; i < nq; ++i)
    for (int64_t e = 0; e < d; ++e) dq[i * jb.hq * d + e] = xf::from_f32<T>(jb.scale * w.o[i * d + e]);
}

// dQ of query tile (b, h, qt) from the fused pass: scale * sum over key tiles (in order) of the
// partials.
template <typename T>
QN_XF_INLINE void dq_reduce_task(const Job& jb, Bufs& w, int64_t task) {
  const int64_t nqt = jb.tp / kB, d = jb.d;
  const int64_t qt = task % nqt, h = (task / nqt) % jb.hq, bi = task / (nqt * jb.hq);
  const int64_t i0 = qt * kB, nq = std::min<int64_t>(kB, jb.t - i0);
  const int64_t kend = jb.causal ? qt + 1 : nqt;
  float* o = w.o.data();
  std::copy(jb.dqp_at(0, bi, h, i0), jb.dqp_at(0, bi, h, i0) + kB * d, o);
  for (int64_t kt = 1; kt < kend; ++kt) {
    const float* part = jb.dqp_at(kt, bi, h, i0);
    for (int64_t x = 0; x < kB * d; ++x) o[x] += part[x];
  }
  T* dq = static_cast<T*>(jb.dq) + ((bi * jb.t + i0) * jb.hq + h) * d;
  for (int64_t i = 0; i < nq; ++i)
    for (int64_t e = 0; e < d; ++e) dq[i * jb.hq * d + e] = xf::from_f32<T>(jb.scale * o[i * d + e]);
}

enum class Pass { Forward, DKV, DQ, DQReduce };

template <typename T>
QN_XF_INLINE void run_tasks(const Job& jb, Pass p, int64_t b, int64_t e) {
  Bufs w(jb.d);
  for (int64_t t = b; t < e; ++t) {
    if (p == Pass::Forward) forward_task<T>(jb, w, t);
    else if (p == Pass::DKV) dkv_task<T>(jb, w, t);
    else if (p == Pass::DQ) dq_task<T>(jb, w, t);
    else dq_reduce_task<T>(jb, w, t);
  }
}
template <typename T> QN_XF_AVX512 void run_avx512(const Job& jb, Pass p, int64_t b, int64_t e) { run_tasks<T>(jb, p, b, e); }
template <typename T> QN_XF_AVX2 void run_avx2(const Job& jb, Pass p, int64_t b, int64_t e) { run_tasks<T>(jb, p, b, e); }
template <typename T> void run_scalar(const Job& jb, Pass p, int64_t b, int64_t e) { run_tasks<T>(jb, p, b, e); }

void run_pass(const Job& jb, DType dt, Pass p, int64_t ntasks) {
  const xf::Isa isa = xf::isa();
  xf::with_type(dt, [&](auto tt) {
    using T = decltype(tt);
    parallel_for(ntasks, 1, [&](int64_t b, int64_t e) {
      if (isa == xf::Isa::Avx512) run_avx512<T>(jb, p, b, e);
      else if (isa == xf::Isa::Avx2) run_avx2<T>(jb, p, b, e);
      else run_scalar<T>(jb, p, b, e);
    });
  });
}

Job make_job(const AttentionDims& d, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask, bool causal) {
  Job jb{};
  jb.q = q.raw();
  jb.k = k.raw();
  jb.v = v.raw();
  jb.mask = mask.defined() ? mask.raw() : nullptr;
  jb.mask_dt = mask.defined() ? mask.dtype() : DType::I32;
  jb.b = d.b, jb.t = d.t, jb.hq = d.hq, jb.hkv = d.hkv, jb.d = d.d;
  jb.tp = (d.t + kB - 1) / kB * kB;
  jb.scale = d.scale;
  jb.causal = causal;
  const xf::Isa isa = xf::isa();
  jb.abt = isa == xf::Isa::Avx512 ? gemm_abt_avx512 : isa == xf::Isa::Avx2 ? gemm_abt_avx2 : gemm_abt_scalar;
  jb.acc = isa == xf::Isa::Avx512 ? gemm_acc_avx512 : isa == xf::Isa::Avx2 ? gemm_acc_avx2 : gemm_acc_scalar;
  jb.softmax = isa == xf::Isa::Avx512 ? online_softmax_avx512
               : isa == xf::Isa::Avx2 ? online_softmax_avx2
                                      : online_softmax_scalar;
  static const bool force_f32 = std::getenv("QN_ATTENTION_CPU_F32") != nullptr;
  const CpuFeatures& f = cpu_features();
  jb.bf16mm = q.dtype() == DType::BF16 && isa == xf::Isa::Avx512 && f.avx512_bf16 && f.avx512bw && f.avx512vl &&
              d.d % 16 == 0 && !force_f32;
  return jb;
}

// A buffer that every user writes in full before reading: not zero-filled (a std::vector would
// memset megabytes per call).
template <typename T>
struct RawBuf {
  std::unique_ptr<T[]> p;
  void resize(size_t n) { p.reset(new T[n]); }
  T* data() { return p.get(); }
};

// Packed copies of one call (see Job).
struct Packed {
  RawBuf<float> kt, vt, kr, vr, qf, dof;
  RawBuf<uint16_t> ktp, vtp, vrp, krp, qp, dop, qrow, dorow;
};

}  // namespace

void attention_forward(Context&, const AttentionForwardArgs& a) {
  const AttentionDims d = check_attention_forward(a);
  Job jb = make_job(d, a.q, a.k, a.v, a.mask, a.causal);
  jb.out = a.out.raw();
  jb.lse = a.lse.defined() ? a.lse.data<float>() : nullptr;
  Packed pk;
  const size_t kv = static_cast<size_t>(d.b * d.hkv * jb.tp * d.d);
  if (jb.bf16mm) {
    pk.ktp.resize(kv);
    pk.vrp.resize(kv);
    pack_bf16(pk.ktp.data(), jb.k, d.b, d.t, jb.tp, d.hkv, d.d, Bf16Layout::PairsD);
    pack_bf16(pk.vrp.data(), jb.v, d.b, d.t, jb.tp, d.hkv, d.d, Bf16Layout::PairsT);
    jb.ktp = pk.ktp.data();
    jb.vrp = pk.vrp.data();
  } else {
    pk.kt.resize(kv);
    pk.vr.resize(kv);
    xf::with_type(a.q.dtype(), [&](auto tt) {
      using T = decltype(tt);
      pack<T>(pk.kt.data(), jb.k, d.b, d.t, jb.tp, d.hkv, d.d, 1.f, true);
      pack<T>(pk.vr.data(), jb.v, d.b, d.t, jb.tp, d.hkv, d.d, 1.f, false);
    });
    jb.kt = pk.kt.data();
    jb.vr = pk.vr.data();
  }
  run_pass(jb, a.q.dtype(), Pass::Forward, d.b * d.hq * (jb.tp / kB));
}

void attention_backward(Context&, const AttentionBackwardArgs& a) {
  const AttentionDims d = check_attention_backward(a);
  Job jb = make_job(d, a.q, a.k, a.v, a.mask, a.causal);
  jb.lse = a.lse.data<float>();
  jb.dout = a.dout.raw();
  jb.dq = a.dq.raw();
  jb.dk = a.dk.raw();
  jb.dv = a.dv.raw();
  // delta[b, h, i] = dot(dout[b, i, h], out[b, i, h]) in f32; packed f32 copies of q, dout, k, v.
  std::vector<float> delta(static_cast<size_t>(d.b * d.hq * d.t));
  Packed pk;
  const size_t kv = static_cast<size_t>(d.b * d.hkv * jb.tp * d.d), qn = static_cast<size_t>(d.b * d.hq * jb.tp * d.d);
  if (!jb.bf16mm) pk.kt.resize(kv), pk.vt.resize(kv), pk.kr.resize(kv), pk.qf.resize(qn), pk.dof.resize(qn);
  xf::with_type(a.q.dtype(), [&](auto tt) {
    using T = decltype(tt);
    const T* o = static_cast<const T*>(a.out.raw());
    const T* g = static_cast<const T*>(a.dout.raw());
    parallel_for(d.b * d.t, 64, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t h = 0; h < d.hq; ++h) {
          const int64_t off = (r * d.hq + h) * d.d;
          float s;
          if constexpr (std::is_same_v<T, uint16_t>) {
            if (jb.bf16mm) {  // (AVX-512 present)
              s = dot_bf16_avx512(o + off, g + off, d.d);
              delta[((r / d.t) * d.hq + h) * d.t + r % d.t] = s;
              continue;
            }
          }
          s = 0.f;
          for (int64_t e = 0; e < d.d; ++e) s += xf::to_f32(o[off + e]) * xf::to_f32(g[off + e]);
          delta[((r / d.t) * d.hq + h) * d.t + r % d.t] = s;
        }
    });
    if (jb.bf16mm) return;
    pack<T>(pk.kt.data(), jb.k, d.b, d.t, jb.tp, d.hkv, d.d, 1.f, true);
    pack<T>(pk.vt.data(), jb.v, d.b, d.t, jb.tp, d.hkv, d.d, 1.f, true);
    pack<T>(pk.kr.data(), jb.k, d.b, d.t, jb.tp, d.hkv, d.d, 1.f, false);
    pack<T>(pk.qf.data(), jb.q, d.b, d.t, jb.tp, d.hq, d.d, d.scale, false);
    pack<T>(pk.dof.data(), jb.dout, d.b, d.t, jb.tp, d.hq, d.d, 1.f, false);
  });
  if (jb.bf16mm) {
    for (auto* v : {&pk.ktp, &pk.vtp, &pk.krp}) v->resize(kv);
    for (auto* v : {&pk.qp, &pk.dop, &pk.qrow, &pk.dorow}) v->resize(qn);
    pack_bf16(pk.ktp.data(), jb.k, d.b, d.t, jb.tp, d.hkv, d.d, Bf16Layout::PairsD);
    pack_bf16(pk.vtp.data(), jb.v, d.b, d.t, jb.tp, d.hkv, d.d, Bf16Layout::PairsD);
    pack_bf16(pk.krp.data(), jb.k, d.b, d.t, jb.tp, d.hkv, d.d, Bf16Layout::PairsT);
    pack_bf16(pk.qp.data(), jb.q, d.b, d.t, jb.tp, d.hq, d.d, Bf16Layout::PairsT);
    pack_bf16(pk.dop.data(), jb.dout, d.b, d.t, jb.tp, d.hq, d.d, Bf16Layout::PairsT);
    pack_bf16(pk.qrow.data(), jb.q, d.b, d.t, jb.tp, d.hq, d.d, Bf16Layout::Rows);
    pack_bf16(pk.dorow.data(), jb.dout, d.b, d.t, jb.tp, d.hq, d.d, Bf16Layout::Rows);
    jb.ktp = pk.ktp.data(), jb.vtp = pk.vtp.data(), jb.krp = pk.krp.data(), jb.qp = pk.qp.data();
    jb.dop = pk.dop.data(), jb.qrow = pk.qrow.data(), jb.dorow = pk.dorow.data();
  }
  jb.delta = delta.data();
  jb.kt = pk.kt.data(), jb.vt = pk.vt.data(), jb.kr = pk.kr.data(), jb.qf = pk.qf.data(), jb.dof = pk.dof.data();
  const int64_t nt = jb.tp / kB;
  // Fused dQ when the per-key-tile partials are small (T = 256: 4 x 14 x 256 x 64 floats, 3.7 MB):
  // the dK/dV pass also writes dS K per key tile, and a cheap pass sums them, instead of a second
  // pass that recomputes S, dP and the exps (2 of the 4 tile GEMMs and half the exps). Longer
  // sequences keep the separate dQ pass (the partials grow as T^2).
  const size_t nparts = static_cast<size_t>(nt) * qn;
  RawBuf<float> dqp;  // each part is written (not accumulated) first
  if (nparts * sizeof(float) <= (size_t(32) << 20)) {
    dqp.resize(nparts);
    jb.dqp = dqp.data();
    run_pass(jb, a.q.dtype(), Pass::DKV, d.b * d.hkv * nt);
    run_pass(jb, a.q.dtype(), Pass::DQReduce, d.b * d.hq * nt);
  } else {
    run_pass(jb, a.q.dtype(), Pass::DKV, d.b * d.hkv * nt);
    run_pass(jb, a.q.dtype(), Pass::DQ, d.b * d.hq * nt);
  }
}

}  // namespace cpu
}  // namespace qn
