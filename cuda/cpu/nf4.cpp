// CPU nf4 ops (see qn/ops/nf4.h): quantize, double quant and its inverse, dequantize, and the
// single-threaded dequantize helpers for the CPU GEMM. Scalar code everywhere, AVX2 and AVX-512
// kernels (chosen at run time) for the hot loops; every path does the same IEEE float32 steps, so
// the results are bit-identical across paths and with the CUDA backend.
//   quantize:   per block, max of |x| as integer bit patterns (exact), inv = 1/absmax (divss), 15
//               compares of x*inv with the thresholds (AVX-512: masked adds) -> 4-bit code.
//   dequantize: the 16 code values are scaled by the block scale once (the same f32 product as a
//               per-element multiply), rounded to bf16 once per block when bf16 is wanted, and
//               looked up with a permute (AVX-512: vpermps over 16 f32 lanes, vpermw over the
//               bf16 words; AVX2: two 8-lane permutes + blend, then integer round-to-nearest-even).
//               Large whole-matrix outputs use streaming stores (no read-for-ownership).
// GCC 12 reports _mm512_undefined_* inside the AVX-512 intrinsics as maybe-uninitialized (a known
// false positive of target-attribute functions at -O3).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#include <algorithm>
#include <atomic>
#include <climits>
#include <cstring>
#include "qn/cpu_features.h"
#include "qn/half.h"
#include "qn/ops/nf4.h"
#include "qn/parallel.h"
#include "nf4_host.h"

namespace qn {
namespace cpu {
namespace {

using nf4_host::fp_barrier;
using nf4_host::host_view;
using nf4_host::HostView;
using nf4_host::restore_scale;

std::atomic<int> g_isa_cap{-1};

int hw_isa() {
  const CpuFeatures& f = cpu_features();
  return f.avx512f ? 2 : f.avx2 ? 1 : 0;
}

int isa() {
  const int cap = g_isa_cap.load(std::memory_order_relaxed);
  const int hw = hw_isa();
  return cap < 0 ? hw : std::min(cap, hw);
}

inline uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float float_of(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline bool nonfinite_bits(uint32_t u) { return (u & 0x7f800000u) == 0x7f800000u; }

inline float load_elem(const void* p, DType t, int64_t i) {
  switch (t) {
    case DType::F32: return static_cast<const float*>(p)[i];
    case DType::BF16: return bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
    case DType::F16: return f16_to_f32(static_cast<const uint16_t*>(p)[i]);
    default: return 0.f;
  }
}

// Number of thresholds below s (strict >), as a 4-level branch-free tree. NaN -> 0.
inline uint8_t nf4_code(float s) {
  const float* t = kNf4Thresholds;
  int c = s > t[7] ? 8 : 0;
  c += s > t[c + 3] ? 4 : 0;
  c += s > t[c + 1] ? 2 : 0;
  c += s > t[c] ? 1 : 0;
  return static_cast<uint8_t>(c);
}

inline int nibble(const uint8_t* codes, int64_t e) {
  const uint8_t b = codes[e >> 1];
  return (e & 1) ? (b & 15) : (b >> 4);
}

// ------------------------------------------------------------------------------------------------
// quantize

struct QuantJob {
  const void* src;
  DType dt;
  uint8_t* codes;
  float* absmax;
  int64_t n;
  int bs;
  std::atomic<int64_t>* bad;  // lowest index of a non-finite element seen
};

void note_bad(const QuantJob& q, int64_t i) {
  int64_t cur = q.bad->load();
  while (i < cur && !q.bad->compare_exchange_weak(cur, i)) {
  }
}

// absmax bits of [e0, e1) (max of |x| as integers = as floats for finite x); -1 index when finite.
uint32_t absmax_scalar(const QuantJob& q, int64_t e0, int64_t e1, int64_t* bad) {
  uint32_t m = 0;
  for (int64_t e = e0; e < e1; ++e) {
    const uint32_t u = bits_of(load_elem(q.src, q.dt, e)) & 0x7fffffffu;
    if (nonfinite_bits(u)) {
      *bad = e;
      return 0;
    }
    m = std::max(m, u);
  }
  return m;
}

void codes_scalar(const QuantJob& q, int64_t e0, int64_t e1, float inv) {
  // e0 is even (blocks start at multiples of bs >= 32); e1 is odd only at n.
  for (int64_t e = e0; e < e1; e += 2) {
    const float x0 = load_elem(q.src, q.dt, e);
    const float x1 = e + 1 < q.n ? load_elem(q.src, q.dt, e + 1) : 0.f;
    q.codes[e >> 1] = static_cast<uint8_t>(nf4_code(x0 * inv) << 4 | nf4_code(x1 * inv));
  }
}

__attribute__((target("avx512f"))) inline __m512 load16_avx512(const void* src, DType dt, int64_t e) {
  switch (dt) {
    case DType::BF16: {
      const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(src) + e));
      return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    case DType::F16: {
      const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(src) + e));
      return _mm512_cvtph_ps(h);
    }
    default: return _mm512_loadu_ps(static_cast<const float*>(src) + e);
  }
}

__attribute__((target("avx512f"))) uint32_t absmax_avx512(const QuantJob& q, int64_t e0, int64_t e1, int64_t* bad) {
  const __m512i mag = _mm512_set1_epi32(0x7fffffff), expo = _mm512_set1_epi32(0x7f800000);
  __m512i acc = _mm512_setzero_si512();
  int64_t e = e0;
  for (; e + 16 <= e1; e += 16) {
    const __m512i u = _mm512_and_si512(_mm512_castps_si512(load16_avx512(q.src, q.dt, e)), mag);
    if (_mm512_cmpeq_epi32_mask(_mm512_and_si512(u, expo), expo)) {
      absmax_scalar(q, e, e + 16, bad);
      return 0;
    }
    acc = _mm512_max_epu32(acc, u);
  }
  uint32_t m = _mm512_reduce_max_epu32(acc);
  if (e < e1) {
    const uint32_t t = absmax_scalar(q, e, e1, bad);
    m = std::max(m, t);
  }
  return m;
}

__attribute__((target("avx512f"))) void codes_avx512(const QuantJob& q, int64_t e0, int64_t e1, float inv) {
  __m512 thr[15];
  for (int i = 0; i < 15; ++i) thr[i] = _mm512_set1_ps(kNf4Thresholds[i]);
  const __m512 vinv = _mm512_set1_ps(inv);
  const __m512i one = _mm512_set1_epi32(1);
  int64_t e = e0;
  for (; e + 16 <= e1; e += 16) {
    const __m512 s = _mm512_mul_ps(load16_avx512(q.src, q.dt, e), vinv);
    __m512i c = _mm512_setzero_si512();
    for (int i = 0; i < 15; ++i) c = _mm512_mask_add_epi32(c, _mm512_cmp_ps_mask(s, thr[i], _CMP_GT_OQ), c, one);
    // 64-bit lane k holds codes (2k, 2k+1) as dwords: byte = c[2k] << 4 | c[2k+1].
    const __m512i packed = _mm512_or_si512(_mm512_slli_epi64(c, 4), _mm512_srli_epi64(c, 32));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(q.codes + (e >> 1)), _mm512_cvtepi64_epi8(packed));
  }
  if (e < e1) codes_scalar(q, e, e1, inv);
}

void quantize_blocks(const QuantJob& q, int64_t b0, int64_t b1, int level) {
  for (int64_t b = b0; b < b1; ++b) {
    const int64_t e0 = b * q.bs, e1 = std::min(q.n, e0 + q.bs);
    int64_t bad = -1;
    const uint32_t m = level >= 2 ? absmax_avx512(q, e0, e1, &bad) : absmax_scalar(q, e0, e1, &bad);
    if (bad >= 0) {
      note_bad(q, bad);
      return;
    }
    const float amax = float_of(m);
    q.absmax[b] = amax;
    const float inv = 1.0f / amax;  // inf for an all-zero block: 0 * inf = NaN -> code 0
    if (level >= 2) codes_avx512(q, e0, e1, inv);
    else codes_scalar(q, e0, e1, inv);
  }
}

// ------------------------------------------------------------------------------------------------
// double quant

// bitsandbytes dQuantize<0>: binary search over the ascending 256-entry map (see the fixture README).
uint8_t dynamic_quantize(float x, const float* code) {
  int pivot = 127, upper_pivot = 255, lower_pivot = 0;
  float lower = -1.0f, upper = 1.0f;
  float val = code[pivot];
  for (int step = 64; step > 0; step >>= 1) {
    if (x > val) {
      lower_pivot = pivot;
      lower = val;
      pivot += step;
    } else {
      upper_pivot = pivot;
      upper = val;
      pivot -= step;
    }
    val = code[pivot];
  }
  if (upper_pivot == 255) upper = code[255];
  if (lower_pivot == 0) lower = code[0];
  if (x > val) {
    const float mid = fp_barrier(upper + val) * 0.5f;
    return static_cast<uint8_t>(x > mid ? upper_pivot : pivot);
  }
  const float mid = fp_barrier(lower + val) * 0.5f;
  return static_cast<uint8_t>(x < mid ? lower_pivot : pivot);
}

// The mean in the fixed order both backends use: 256 strided float64 lanes, then a pairwise tree.
float absmax_mean(const float* a, int64_t nb) {
  double lanes[256] = {0};
  for (int64_t i = 0; i < nb; ++i) lanes[i & 255] += static_cast<double>(a[i]);
  for (int s = 128; s > 0; s >>= 1)
    for (int j = 0; j < s; ++j) lanes[j] += lanes[j + s];
  return static_cast<float>(lanes[0] / static_cast<double>(nb));
}


// ------------------------------------------------------------------------------------------------
// dequantize

// Every kernel writes elements [e0, e1) of the flat matrix to o[0 .. e1-e0) (o of the output
// dtype). The vector loops run over aligned chunks (32 or 16 elements), which never straddle a
// block (blocksize >= 32); the 16 code values are pre-scaled once per block.

template <bool BF16>
void deq_scalar(const HostView& v, int64_t e0, int64_t e1, void* o) {
  int64_t cur = -1;
  float scale = 0.f;
  for (int64_t e = e0; e < e1; ++e) {
    const int64_t b = e >> v.log2_bs;
    if (b != cur) {
      cur = b;
      scale = v.scale(b);
    }
    const float y = kNf4Codes[nibble(v.codes, e)] * scale;
    if (BF16) static_cast<uint16_t*>(o)[e - e0] = f32_to_bf16(y);
    else static_cast<float*>(o)[e - e0] = y;
  }
}

__attribute__((target("avx512f,avx512bw"))) inline __m256i bf16_rne_avx512(__m512 v) {
  const __m512i u = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  const __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb));
  return _mm512_cvtepi32_epi16(_mm512_srli_epi32(r, 16));
}

// The 16 scaled code values as bf16 words, twice (words 0-15 and 16-31, so vpermw may read 5
// index bits): rounding the table once is the same as rounding every product.
__attribute__((target("avx512f,avx512bw"))) inline __m512i bf16_table_avx512(__m512 scaled) {
  const __m256i t = bf16_rne_avx512(scaled);
  return _mm512_inserti64x4(_mm512_castsi256_si512(t), t, 1);
}

template <bool BF16, bool STREAM>
__attribute__((target("avx512f,avx512bw"))) void deq_avx512(const HostView& v, int64_t e0, int64_t e1, void* o) {
  constexpr size_t es = BF16 ? 2 : 4;
  const int64_t head = std::min(e1, (e0 + 31) & ~int64_t(31));
  deq_scalar<BF16>(v, e0, head, o);
  char* ob = static_cast<char*>(o) - e0 * static_cast<int64_t>(es);  // element e at ob + e * es
  const __m512 codes16 = _mm512_loadu_ps(kNf4Codes);
  __m512 table = codes16;
  __m512i table16 = _mm512_setzero_si512();
  int64_t cur = -1;
  int64_t e = head;
  for (; e + 32 <= e1; e += 32) {
    const int64_t b = e >> v.log2_bs;
    if (b != cur) {
      cur = b;
      table = _mm512_mul_ps(codes16, _mm512_set1_ps(v.scale(b)));
      if (BF16) table16 = bf16_table_avx512(table);
    }
    const __m128i b16 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(v.codes + (e >> 1)));
    char* p = ob + e * static_cast<int64_t>(es);
    if (BF16) {
      // dword k = byte k: word 2k = byte >> 4 (even element), word 2k+1 = byte (odd element; vpermw
      // reads its low 5 bits, and the table repeats after 16).
      const __m512i d = _mm512_cvtepu8_epi32(b16);
      const __m512i idx = _mm512_or_si512(_mm512_srli_epi32(d, 4), _mm512_slli_epi32(d, 16));
      const __m512i h = _mm512_permutexvar_epi16(idx, table16);
      if (STREAM) _mm512_stream_si512(reinterpret_cast<__m512i*>(p), h);
      else _mm512_storeu_si512(p, h);
      continue;
    }
    const __m512i q0 = _mm512_cvtepu8_epi64(b16);
    const __m512i q1 = _mm512_cvtepu8_epi64(_mm_srli_si128(b16, 8));
    // dword 2k = byte >> 4 (even element), dword 2k+1 = byte (vpermps reads its low 4 bits).
    const __m512i i0 = _mm512_or_si512(_mm512_srli_epi64(q0, 4), _mm512_slli_epi64(q0, 32));
    const __m512i i1 = _mm512_or_si512(_mm512_srli_epi64(q1, 4), _mm512_slli_epi64(q1, 32));
    const __m512 v0 = _mm512_permutexvar_ps(i0, table);
    const __m512 v1 = _mm512_permutexvar_ps(i1, table);
    if (STREAM) {
      _mm512_stream_ps(reinterpret_cast<float*>(p), v0);
      _mm512_stream_ps(reinterpret_cast<float*>(p) + 16, v1);
    } else {
      _mm512_storeu_ps(reinterpret_cast<float*>(p), v0);
      _mm512_storeu_ps(reinterpret_cast<float*>(p) + 16, v1);
    }
  }
  if (e < e1) deq_scalar<BF16>(v, e, e1, ob + e * static_cast<int64_t>(es));
}

__attribute__((target("avx2"))) inline __m256i bf16_rne_avx2(__m256 v) {
  const __m256i u = _mm256_castps_si256(v);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  const __m256i r = _mm256_add_epi32(u, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), lsb));
  return _mm256_srli_epi32(r, 16);
}

__attribute__((target("avx2"))) inline __m256 lookup_avx2(__m256i idx, __m256 lo, __m256 hi) {
  const __m256 sel = _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28));  // bit 3 -> sign
  return _mm256_blendv_ps(_mm256_permutevar8x32_ps(lo, idx), _mm256_permutevar8x32_ps(hi, idx), sel);
}

template <bool BF16, bool STREAM>
__attribute__((target("avx2"))) void deq_avx2(const HostView& v, int64_t e0, int64_t e1, void* o) {
  constexpr size_t es = BF16 ? 2 : 4;
  const int64_t head = std::min(e1, (e0 + 15) & ~int64_t(15));
  deq_scalar<BF16>(v, e0, head, o);
  char* ob = static_cast<char*>(o) - e0 * static_cast<int64_t>(es);
  const __m256 clo = _mm256_loadu_ps(kNf4Codes), chi = _mm256_loadu_ps(kNf4Codes + 8);
  __m256 lo = clo, hi = chi;
  int64_t cur = -1;
  int64_t e = head;
  for (; e + 16 <= e1; e += 16) {
    const int64_t b = e >> v.log2_bs;
    if (b != cur) {
      cur = b;
      const __m256 vs = _mm256_set1_ps(v.scale(b));
      lo = _mm256_mul_ps(clo, vs);
      hi = _mm256_mul_ps(chi, vs);
    }
    const __m128i b8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(v.codes + (e >> 1)));
    const __m256i q0 = _mm256_cvtepu8_epi64(b8);
    const __m256i q1 = _mm256_cvtepu8_epi64(_mm_srli_si128(b8, 4));
    const __m256i i0 = _mm256_or_si256(_mm256_srli_epi64(q0, 4), _mm256_slli_epi64(q0, 32));
    const __m256i i1 = _mm256_or_si256(_mm256_srli_epi64(q1, 4), _mm256_slli_epi64(q1, 32));
    const __m256 v0 = lookup_avx2(i0, lo, hi), v1 = lookup_avx2(i1, lo, hi);
    char* p = ob + e * static_cast<int64_t>(es);
    if (BF16) {
      const __m256i h = _mm256_permute4x64_epi64(_mm256_packus_epi32(bf16_rne_avx2(v0), bf16_rne_avx2(v1)), 0xD8);
      if (STREAM) _mm256_stream_si256(reinterpret_cast<__m256i*>(p), h);
      else _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), h);
    } else if (STREAM) {
      _mm256_stream_ps(reinterpret_cast<float*>(p), v0);
      _mm256_stream_ps(reinterpret_cast<float*>(p) + 8, v1);
    } else {
      _mm256_storeu_ps(reinterpret_cast<float*>(p), v0);
      _mm256_storeu_ps(reinterpret_cast<float*>(p) + 8, v1);
    }
  }
  if (e < e1) deq_scalar<BF16>(v, e, e1, ob + e * static_cast<int64_t>(es));
}

// Elements [e0, e1) into o[0 .. e1-e0). Streaming stores only when asked and when the vector
// stores are aligned (element 32k at a 64-byte boundary).
void dequant_range(const HostView& v, int64_t e0, int64_t e1, DType od, void* o, bool stream, int level) {
  const bool bf16 = od == DType::BF16;
  const size_t es = bf16 ? 2 : 4;
  if (stream) {
    const uintptr_t at0 = reinterpret_cast<uintptr_t>(o) - static_cast<uintptr_t>(e0) * es;  // where element 0 would be
    stream = (at0 & 63) == 0;
  }
  if (level >= 2) {
    if (bf16) stream ? deq_avx512<true, true>(v, e0, e1, o) : deq_avx512<true, false>(v, e0, e1, o);
    else stream ? deq_avx512<false, true>(v, e0, e1, o) : deq_avx512<false, false>(v, e0, e1, o);
  } else if (level == 1) {
    if (bf16) stream ? deq_avx2<true, true>(v, e0, e1, o) : deq_avx2<true, false>(v, e0, e1, o);
    else stream ? deq_avx2<false, true>(v, e0, e1, o) : deq_avx2<false, false>(v, e0, e1, o);
  } else {
    if (bf16) deq_scalar<true>(v, e0, e1, o);
    else deq_scalar<false>(v, e0, e1, o);
  }
}

void check_out_dtype(DType od, const char* fn) {
  QN_CHECK(od == DType::F32 || od == DType::BF16, DType,
           std::string(fn) + ": output dtype must be f32 or bf16, got " + dtype_name(od));
}

}  // namespace

namespace detail {
int nf4_set_isa(int level) {
  g_isa_cap.store(level < 0 ? -1 : level);
  return isa();
}
}  // namespace detail

// ---- ops ---------------------------------------------------------------------------------------

void nf4_quantize(Context&, const Nf4QuantizeArgs& a) {
  check_nf4_quantize(a);
  std::atomic<int64_t> bad{INT64_MAX};
  QuantJob q{a.src.raw(), a.src.dtype(), a.codes.data<uint8_t>(), a.absmax.data<float>(), a.src.numel(),
             a.blocksize, &bad};
  const int64_t nb = nf4_num_blocks(q.n, q.bs);
  const int level = isa();
  parallel_for(nb, std::max<int64_t>(1, 16384 / q.bs),
               [&](int64_t b0, int64_t b1) { quantize_blocks(q, b0, b1, level); });
  const int64_t i = bad.load();
  if (i != INT64_MAX) nf4_fail_nonfinite(a.name, a.src.shape(), i, load_elem(q.src, q.dt, i));
}

void nf4_double_quant(Context&, const Nf4DoubleQuantArgs& a) {
  check_nf4_double_quant(a);
  const int64_t nb = a.absmax.numel(), nbs = a.nested_blocksize;
  const float* am = a.absmax.data<float>();
  nf4_check_absmax_finite(am, nb);
  uint8_t* q = a.absmax_q.data<uint8_t>();
  float* nested = a.nested_absmax.data<float>();
  const float offset = absmax_mean(am, nb);
  a.offset.data<float>()[0] = offset;
  parallel_for(nf4_num_blocks(nb, nbs), 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t i0 = c * nbs, i1 = std::min(nb, i0 + nbs);
      uint32_t m = 0;
      for (int64_t i = i0; i < i1; ++i) m = std::max(m, bits_of(am[i] - offset) & 0x7fffffffu);
      const float nmax = float_of(m);
      nested[c] = nmax;
      const float inv = 1.0f / nmax;
      for (int64_t i = i0; i < i1; ++i) q[i] = dynamic_quantize((am[i] - offset) * inv, kDynamicMap8);
    }
  });
}

void nf4_double_dequant(Context&, const Nf4DoubleDequantArgs& a) {
  check_nf4_double_dequant(a);
  const int64_t nb = a.absmax_q.numel();
  const int l2 = nf4_log2(a.nested_blocksize);
  const uint8_t* q = a.absmax_q.data<uint8_t>();
  const float* nested = a.nested_absmax.data<float>();
  const float* map = a.nested_map.data<float>();
  float* out = a.absmax.data<float>();
  const float offset = a.offset;
  parallel_for(nb, 1 << 14, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) out[i] = restore_scale(map[q[i]], nested[i >> l2], offset);
  });
}

void nf4_dequantize(Context&, const Nf4DequantizeArgs& a) {
  check_nf4_dequantize(a);
  const HostView v = host_view(a.w, "nf4_dequantize");
  const DType od = a.out.dtype();
  const int64_t n = v.n;
  const size_t es = od == DType::F32 ? 4 : 2;
  // Streaming stores pay off once the output is well beyond the caches.
  const bool stream = static_cast<size_t>(n) * es >= (size_t(8) << 20);
  const int level = isa();
  constexpr int64_t kChunk = 1 << 15;  // elements; a multiple of 32 keeps vector stores aligned
  char* out = static_cast<char*>(a.out.raw());
  parallel_for((n + kChunk - 1) / kChunk, 1, [&](int64_t c0, int64_t c1) {
    const int64_t e0 = c0 * kChunk, e1 = std::min(n, c1 * kChunk);
    dequant_range(v, e0, e1, od, out + e0 * es, stream, level);
    if (stream) _mm_sfence();
  });
}

// ---- helpers for the CPU GEMM --------------------------------------------------------------------

void nf4_dequantize_range(const Nf4Weight& w, int64_t e0, int64_t e1, DType out_dtype, void* out) {
  check_out_dtype(out_dtype, "nf4_dequantize_range");
  const HostView v = host_view(w, "nf4_dequantize_range");
  QN_CHECK(0 <= e0 && e0 <= e1 && e1 <= v.n, Shape,
           "nf4_dequantize_range: [" + std::to_string(e0) + ", " + std::to_string(e1) + ") is outside the " +
               std::to_string(v.n) + " elements of the weight");
  dequant_range(v, e0, e1, out_dtype, out, false, isa());
}

void nf4_dequantize_rows(const Nf4Weight& w, int64_t row0, int64_t row1, DType out_dtype, void* out, int64_t ldo) {
  if (ldo == 0 || ldo == w.cols) {
    QN_CHECK(0 <= row0 && row0 <= row1 && row1 <= w.rows, Shape,
             "nf4_dequantize_rows: rows [" + std::to_string(row0) + ", " + std::to_string(row1) + ") outside [0, " +
                 std::to_string(w.rows) + ")");
    nf4_dequantize_range(w, row0 * w.cols, row1 * w.cols, out_dtype, out);
    return;
  }
  nf4_dequantize_tile(w, row0, row1, 0, w.cols, out_dtype, out, ldo);
}

void nf4_dequantize_tile(const Nf4Weight& w, int64_t row0, int64_t row1, int64_t col0, int64_t col1, DType out_dtype,
                         void* out, int64_t ldo) {
  check_out_dtype(out_dtype, "nf4_dequantize_tile");
  const HostView v = host_view(w, "nf4_dequantize_tile");
  QN_CHECK(0 <= row0 && row0 <= row1 && row1 <= w.rows && 0 <= col0 && col0 <= col1 && col1 <= w.cols, Shape,
           "nf4_dequantize_tile: tile rows [" + std::to_string(row0) + ", " + std::to_string(row1) + ") cols [" +
               std::to_string(col0) + ", " + std::to_string(col1) + ") outside [" + std::to_string(w.rows) + ", " +
               std::to_string(w.cols) + "]");
  QN_CHECK(ldo >= col1 - col0, Arg,
           "nf4_dequantize_tile: ldo " + std::to_string(ldo) + " is less than the tile width " + std::to_string(col1 - col0));
  const size_t es = out_dtype == DType::F32 ? 4 : 2;
  const int level = isa();
  for (int64_t r = row0; r < row1; ++r)
    dequant_range(v, r * w.cols + col0, r * w.cols + col1, out_dtype,
                  static_cast<char*>(out) + static_cast<size_t>((r - row0) * ldo) * es, false, level);
}

}  // namespace cpu
}  // namespace qn
