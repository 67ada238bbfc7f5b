// CPU optimizer ops (see qn/ops/optim.h). Threads via parallel_for; the element loops are compiled
// three times (AVX-512, AVX2+FMA, baseline x86-64) and picked with cpu_features(), so one binary
// runs everywhere and the compiler vectorizes each for its target. Every result is independent of
// the thread count: AdamW is elementwise, 8-bit AdamW works per 256-block, and the sum of squares
// uses fixed chunks whose partial sums are added in chunk order.
// No contraction of a * b + c into fused multiply-adds in this file (it must round as the CUDA
// kernels and torch do: see optim.h); explicit std::fma still compiles to FMA instructions.
#pragma GCC optimize("fp-contract=off")
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <vector>
#include "qn/cpu_features.h"
#include "qn/ops/optim.h"
#include "qn/parallel.h"

namespace qn {
namespace cpu {
namespace {

constexpr int64_t kGrain = 1 << 14;          // elements per parallel_for chunk (at least)
constexpr int64_t kNormChunk = 1 << 16;      // fixed chunk of the sum of squares
constexpr int64_t kBlocksPerTask = 64;       // 8-bit blocks per parallel_for chunk (at least)

// ---- loop bodies (always inlined into the per-target wrappers below) -------------------------

QN_OPTIM_HD void adamw32_body(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m,
                              float* __restrict__ v, int64_t b, int64_t e, const AdamWCoefs c, const float coef) {
  for (int64_t i = b; i < e; ++i) {
    float pi = p[i], mi = m[i], vi = v[i];
    adamw_update(pi, optim_mul(g[i], coef), mi, vi, c);
    p[i] = pi;
    m[i] = mi;
    v[i] = vi;
  }
}

// 8-bit encoding tables: the code of x is quantize_to_map(mid, x) (the number of midpoints below
// x). lut[bits(x) >> 16] holds that count for the smallest value whose float has those top 16
// bits; one more comparison finishes it (no such 16-bit bucket of [-1, 1] holds two midpoints of
// either map: checked when the table is built). Two dependent loads instead of eight.
struct Lut8 {
  uint8_t s[65536], u[65536];
  float smap[256], smid[256], umid[256];
};

const Lut8& lut8() {
  static const Lut8* t = [] {
    Lut8* l = new Lut8;
    float umap[256];
    dynamic_map(true, l->smap);
    dynamic_map(false, umap);
    optim_midpoints(l->smap, l->smid);
    optim_midpoints(umap, l->umid);
    for (uint32_t idx = 0; idx < 65536; ++idx) {
      const uint32_t lo_bits = idx << 16, hi_bits = lo_bits | 0xffffu;
      float lo, hi;
      std::memcpy(&lo, &lo_bits, 4);
      std::memcpy(&hi, &hi_bits, 4);
      const float xmin = (idx & 0x8000u) ? hi : lo, xmax = (idx & 0x8000u) ? lo : hi;
      const bool in_range = std::isfinite(xmin) && std::fabs(xmin) <= 1.f;
      for (int map = 0; map < 2; ++map) {
        const float* mid = map ? l->umid : l->smid;
        const uint8_t c0 = in_range ? quantize_to_map(mid, xmin) : 0;
        (map ? l->u : l->s)[idx] = c0;
        QN_CHECK(!in_range || quantize_to_map(mid, xmax) - c0 <= 1, Internal, "8-bit code table: a bucket holds two midpoints");
      }
    }
    return l;
  }();
  return *t;
}

QN_OPTIM_HD int lut_code(const uint8_t* lut, const float* mid, float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, 4);
  const int c = lut[bits >> 16];
  return c + static_cast<int>(mid[c] < x);
}

// Blocks [b, e) of 256 elements: dequantize, update, new absmax per state, requantize (the same
// codes as quantize_m / quantize_v). Separate simple loops, so the update and the absmax
// (integer max: the values are >= 0, so their bit patterns order like the floats) vectorize.
QN_OPTIM_HD void adamw8_body(float* __restrict__ p, const float* __restrict__ g, uint8_t* __restrict__ cm,
                             uint8_t* __restrict__ cv, float* __restrict__ am, float* __restrict__ av,
                             const float* __restrict__ qmap, const Lut8& lut, int64_t n, int64_t b, int64_t e,
                             const AdamWCoefs c, const float coef) {
  const float* smap = qmap;
  const float* umap = qmap + 256;
  float ms[kOptim8BlockSize], vs[kOptim8BlockSize], xs[kOptim8BlockSize];
  for (int64_t blk = b; blk < e; ++blk) {
    const int64_t base = blk * kOptim8BlockSize;
    const int len = static_cast<int>(n - base < kOptim8BlockSize ? n - base : kOptim8BlockSize);
    const float old_am = am[blk], old_av = av[blk];
    float* __restrict__ pb = p + base;
    const float* __restrict__ gb = g + base;
    uint8_t* __restrict__ cmb = cm + base;
    uint8_t* __restrict__ cvb = cv + base;
    for (int j = 0; j < len; ++j) {
      ms[j] = optim_mul(smap[cmb[j]], old_am);
      vs[j] = optim_mul(umap[cvb[j]], old_av);
    }
    for (int j = 0; j < len; ++j) adamw_update(pb[j], optim_mul(gb[j], coef), ms[j], vs[j], c);
    uint32_t bm = 0, bv = 0;
    for (int j = 0; j < len; ++j) {
      uint32_t um, uv;
      std::memcpy(&um, &ms[j], 4);
      std::memcpy(&uv, &vs[j], 4);
      um &= 0x7fffffffu;
      bm = um > bm ? um : bm;
      bv = uv > bv ? uv : bv;
    }
    float new_am, new_av;
    std::memcpy(&new_am, &bm, 4);
    std::memcpy(&new_av, &bv, 4);
    am[blk] = new_am;
    av[blk] = new_av;
    // An all-zero block stores the codes of 0 (127 signed, 0 unsigned).
    if (new_am > 0.f) {
      for (int j = 0; j < len; ++j) xs[j] = optim_div(ms[j], new_am);
      for (int j = 0; j < len; ++j) {
        const int q = lut_code(lut.s, lut.smid, xs[j]);
        cmb[j] = static_cast<uint8_t>(q + sign_fix(ms[j], lut.smap[q]));
      }
    } else {
      for (int j = 0; j < len; ++j) cmb[j] = 127;
    }
    if (new_av > 0.f) {
      for (int j = 0; j < len; ++j) xs[j] = optim_div(vs[j], new_av);
      for (int j = 0; j < len; ++j) cvb[j] = static_cast<uint8_t>(lut_code(lut.u, lut.umid, xs[j]));
    } else {
      for (int j = 0; j < len; ++j) cvb[j] = 0;
    }
  }
}

// Sum of squares of x[b, e) in double with 8 fixed lanes, added in a fixed order.
QN_OPTIM_HD double sumsq_body(const float* __restrict__ x, int64_t b, int64_t e) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = b;
  for (; i + 8 <= e; i += 8)
    for (int j = 0; j < 8; ++j) {
      const double d = x[i + j];
      acc[j] += d * d;
    }
  for (int j = 0; i < e; ++i, ++j) {
    const double d = x[i];
    acc[j] += d * d;
  }
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

// 1 when any element of [b, e) has an all-ones exponent (NaN or Inf). Bit tests vectorize.
QN_OPTIM_HD int nonfinite32_body(const uint32_t* __restrict__ x, int64_t b, int64_t e) {
  uint32_t any = 0;
  for (int64_t i = b; i < e; ++i) any |= static_cast<uint32_t>((x[i] & 0x7f800000u) == 0x7f800000u);
  return static_cast<int>(any);
}
QN_OPTIM_HD int nonfinite16_body(const uint16_t* __restrict__ x, int64_t b, int64_t e, uint16_t mask) {
  uint32_t any = 0;
  for (int64_t i = b; i < e; ++i) any |= static_cast<uint32_t>((x[i] & mask) == mask);
  return static_cast<int>(any);
}

// ---- per-target copies -----------------------------------------------------------------------

#define QN_OPTIM_TARGET_SET(suffix, target)                                                                    \
  target void adamw32_##suffix(float* p, const float* g, float* m, float* v, int64_t b, int64_t e, AdamWCoefs c, \
                               float coef) {                                                                   \
    adamw32_body(p, g, m, v, b, e, c, coef);                                                                   \
  }                                                                                                            \
  target void adamw8_##suffix(float* p, const float* g, uint8_t* cm, uint8_t* cv, float* am, float* av,         \
                              const float* qmap, const Lut8& lut, int64_t n, int64_t b, int64_t e,            \
                              AdamWCoefs c, float coef) {                                                      \
    adamw8_body(p, g, cm, cv, am, av, qmap, lut, n, b, e, c, coef);                                            \
  }                                                                                                            \
  target double sumsq_##suffix(const float* x, int64_t b, int64_t e) { return sumsq_body(x, b, e); }           \
  target int nonfinite32_##suffix(const uint32_t* x, int64_t b, int64_t e) { return nonfinite32_body(x, b, e); } \
  target int nonfinite16_##suffix(const uint16_t* x, int64_t b, int64_t e, uint16_t mask) {                    \
    return nonfinite16_body(x, b, e, mask);                                                                    \
  }

#define QN_TARGET_AVX512 __attribute__((target("avx512f,avx512vl,avx512bw,avx2,fma")))
#define QN_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define QN_TARGET_BASE
QN_OPTIM_TARGET_SET(avx512, QN_TARGET_AVX512)
QN_OPTIM_TARGET_SET(avx2, QN_TARGET_AVX2)
QN_OPTIM_TARGET_SET(base, QN_TARGET_BASE)

enum class Isa { Base, Avx2, Avx512 };
Isa isa() {
  static const Isa k = [] {
    const CpuFeatures& f = cpu_features();
    if (f.avx512f && f.avx512vl && f.avx512bw && f.avx2 && f.fma) return Isa::Avx512;
    if (f.avx2 && f.fma) return Isa::Avx2;
    return Isa::Base;
  }();
  return k;
}

#define QN_OPTIM_PICK(name, ...)                                              \
  (isa() == Isa::Avx512 ? name##_avx512(__VA_ARGS__)                          \
                        : isa() == Isa::Avx2 ? name##_avx2(__VA_ARGS__) : name##_base(__VA_ARGS__))

float read_scalar_f32(const Tensor& t) {
  float v;
  std::memcpy(&v, t.raw(), sizeof v);
  return v;
}

}  // namespace

void adamw_step(Context&, const AdamWArgs& a) {
  check_adamw(a);
  const int64_t n = a.param.numel();
  if (n == 0) return;
  const AdamWCoefs c = adamw_coefs(a);
  float coef = a.grad_scale;
  if (a.norm_sq.defined() && a.max_grad_norm > 0.f) coef *= clip_coef_from_norm_sq(read_scalar_f32(a.norm_sq), a.max_grad_norm);
  float* p = a.param.data<float>();
  const float* g = a.grad.data<float>();
  const OptimState& s = a.state;
  if (s.kind == OptimKind::AdamW32) {
    float* m = s.m.data<float>();
    float* v = s.v.data<float>();
    parallel_for(n, kGrain, [&](int64_t b, int64_t e) { QN_OPTIM_PICK(adamw32, p, g, m, v, b, e, c, coef); });
    return;
  }
  const int64_t blocks = (n + kOptim8BlockSize - 1) / kOptim8BlockSize;
  uint8_t* cm = s.m.data<uint8_t>();
  uint8_t* cv = s.v.data<uint8_t>();
  float* am = s.absmax_m.data<float>();
  float* av = s.absmax_v.data<float>();
  const float* qmap = s.qmap.data<float>();
  const Lut8& lut = lut8();
  parallel_for(blocks, kBlocksPerTask, [&](int64_t b, int64_t e) {
    QN_OPTIM_PICK(adamw8, p, g, cm, cv, am, av, qmap, lut, n, b, e, c, coef);
  });
}

void grad_norm_sq(Context&, const GradNormSqArgs& a) {
  check_grad_norm_sq(a);
  const int64_t n = a.grad.numel();
  const float* x = a.grad.data<float>();
  const int64_t chunks = (n + kNormChunk - 1) / kNormChunk;
  std::vector<double> partial(static_cast<size_t>(chunks), 0.0);
  parallel_for(chunks, 1, [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k)
      partial[k] = QN_OPTIM_PICK(sumsq, x, k * kNormChunk, std::min(n, (k + 1) * kNormChunk));
  });
  // Fixed-order (pairwise) reduction of the chunk sums.
  for (int64_t width = 1; width < chunks; width *= 2)
    for (int64_t k = 0; k + width < chunks; k += 2 * width) partial[k] += partial[k + width];
  const double total = chunks ? partial[0] : 0.0;
  const float out = static_cast<float>(total);
  std::memcpy(a.out.raw(), &out, sizeof out);
  // A finite float squared cannot overflow a double, so the sum is non-finite exactly when an
  // element is NaN or Inf.
  if (a.flag.defined()) *a.flag.data<int32_t>() = std::isfinite(total) ? 0 : 1;
}

void nonfinite(Context&, const NonfiniteArgs& a) {
  check_nonfinite(a);
  const int64_t n = a.x.numel();
  std::atomic<int> any{0};
  const DType d = a.x.dtype();
  parallel_for(n, kGrain * 4, [&](int64_t b, int64_t e) {
    if (any.load(std::memory_order_relaxed)) return;
    const int r = d == DType::F32
                      ? QN_OPTIM_PICK(nonfinite32, a.x.data<uint32_t>(), b, e)
                      : QN_OPTIM_PICK(nonfinite16, a.x.data<uint16_t>(), b, e,
                                      static_cast<uint16_t>(d == DType::BF16 ? 0x7f80u : 0x7c00u));
    if (r) any.store(1, std::memory_order_relaxed);
  });
  *a.flag.data<int32_t>() = any.load();
}

}  // namespace cpu
}  // namespace qn
