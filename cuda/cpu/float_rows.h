// Helpers shared by the CPU transformer ops (embedding, rmsnorm, rope, attention, swiglu,
// cross_entropy, residual): f32 / bf16 element access by storage type, a branch-free exp the
// compiler vectorizes, and the target attributes of the AVX-512 / AVX2 clones picked at run time.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include "qn/cpu_features.h"
#include "qn/dtype.h"
#include "qn/half.h"
#include "qn/parallel.h"

namespace qn {
namespace cpu {
namespace xf {

// Storage types: float for f32, uint16_t for bf16 (round-to-nearest-even on store).
inline float to_f32(float v) { return v; }
inline float to_f32(uint16_t v) { return bf16_to_f32(v); }
template <typename T> inline T from_f32(float v);
template <> inline float from_f32<float>(float v) { return v; }
// Same result as qn::f32_to_bf16 (round to nearest even, quiet NaN), written as a select so loops
// using it vectorize.
template <> inline uint16_t from_f32<uint16_t>(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  return static_cast<uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? (u >> 16) | 0x40u : rounded);
}
// The value v takes once stored as T.
template <typename T> inline float round_to(float v) { return to_f32(from_f32<T>(v)); }

// Calls f(T{}) with T = float for f32 and uint16_t for bf16 (the callers' checks allow only these).
template <typename F> inline void with_type(DType t, F&& f) {
  if (t == DType::BF16) f(uint16_t{});
  else f(float{});
}

// exp(x) in f32 without branches or library calls (Cephes expf polynomial, about 1 ulp over
// [-87, 88]); x < -87.3 (including -inf) gives exactly 0. The caller keeps x <= 88.
inline float exp_approx(float x) {
  const float keep = x >= -87.3f ? 1.f : 0.f;
  x = x < -87.3f ? -87.3f : x;
  const float n = (x * 1.44269504088896341f + 12582912.f) - 12582912.f;  // round to nearest
  const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  float p = 1.9875691500E-4f;
  p = p * r + 1.3981999507E-3f;
  p = p * r + 8.3334519073E-3f;
  p = p * r + 4.1665795894E-2f;
  p = p * r + 1.6666665459E-1f;
  p = p * r + 5.0000001201E-1f;
  const float y = p * r * r + r + 1.f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, 4);
  return y * scale * keep;
}

}  // namespace xf
}  // namespace cpu
}  // namespace qn

#include <immintrin.h>

namespace qn {
namespace cpu {
namespace xf {

// exp_approx on 16 lanes (the same polynomial and steps; NaN stays NaN).
__attribute__((target("avx512f,avx512dq,fma"))) inline __m512 exp_approx_avx512(__m512 x) {
  const __mmask16 keep = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.3f), _CMP_NLT_UQ);
  x = _mm512_max_ps(_mm512_set1_ps(-87.3f), x);  // a NaN x is returned as is
  const __m512 big = _mm512_set1_ps(12582912.f);
  const __m512 n = _mm512_sub_ps(_mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f), big), big);
  const __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x));
  __m512 p = _mm512_set1_ps(1.9875691500E-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507E-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073E-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894E-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459E-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201E-1f));
  const __m512 y = _mm512_add_ps(_mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r), _mm512_set1_ps(1.f));
  const __m512i bits = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvttps_epi32(n), _mm512_set1_epi32(127)), 23);
  return _mm512_maskz_mul_ps(keep, y, _mm512_castsi512_ps(bits));
}

enum class Isa { Scalar = 0, Avx2 = 1, Avx512 = 2 };
// Testing hook: the highest level isa() may report (so the tests run every clone on one machine).
inline std::atomic<int>& isa_cap() {
  static std::atomic<int> cap{static_cast<int>(Isa::Avx512)};
  return cap;
}
inline Isa isa() {
  const CpuFeatures& f = cpu_features();
  Isa level = Isa::Scalar;
  if (f.avx512f && f.avx512bw && f.avx512vl && f.fma) level = Isa::Avx512;
  else if (f.avx2 && f.fma) level = Isa::Avx2;
  return static_cast<Isa>(std::min(static_cast<int>(level), isa_cap().load()));
}

}  // namespace xf
}  // namespace cpu
}  // namespace qn

// Clones of a kernel body for the SIMD levels (the body is an always-inline template or lambda;
// the compiler vectorizes its loops once per target).
#define QN_XF_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c,prefer-vector-width=512")))
#define QN_XF_AVX2 __attribute__((target("avx2,fma,f16c")))
#define QN_XF_INLINE inline __attribute__((always_inline))
#define QN_XF_LAMBDA __attribute__((always_inline))

namespace qn {
namespace cpu {
namespace xf {

template <typename F> QN_XF_AVX512 void run_avx512(const F& f, int64_t b, int64_t e) { f(b, e); }
template <typename F> QN_XF_AVX2 void run_avx2(const F& f, int64_t b, int64_t e) { f(b, e); }
template <typename F> void run_scalar(const F& f, int64_t b, int64_t e) { f(b, e); }

// parallel_for whose body f(begin, end) (a lambda marked QN_XF_LAMBDA, calling only QN_XF_INLINE
// helpers) is compiled for AVX-512, AVX2 and the baseline, and run as the best one the CPU has.
template <typename F> void parallel_simd(int64_t n, int64_t grain, const F& f) {
  const Isa level = isa();
  parallel_for(n, grain, [&](int64_t b, int64_t e) {
    if (level == Isa::Avx512) run_avx512(f, b, e);
    else if (level == Isa::Avx2) run_avx2(f, b, e);
    else run_scalar(f, b, e);
  });
}

}  // namespace xf
}  // namespace cpu
}  // namespace qn
