// CPU online cross-entropy over vocabulary chunks (see qn/ops/cross_entropy_online.h).
//   chunk:  one row per task: the chunk's max, then P = exp(z - m_new) written to probs and summed
//           in the same pass (explicit AVX-512, 4 vectors in flight; a generic body for the AVX2 and
//           baseline clones), the running state updated, the acc row rescaled
//           only when the max moved. The chunk ([N x Vc] f32, a few MB) is still in cache from
//           the head GEMM that wrote it.
//   finish: one row per task: loss = m + log(s) - z_y, dx row = (acc / s - W[y]) * grad_scale;
//           the loss sum is added in double in row order (deterministic for any thread count).
// Bodies are templates compiled for AVX-512, AVX2 and the baseline (xf::parallel_simd).
#include <cmath>
#include <vector>
#include "cross_entropy_common.h"
#include "float_rows.h"
#include "gemm_kernels.h"
#include "qn/ops/cross_entropy_online.h"

// gcc 12's _mm512_max_ps passes an "undefined" vector as the unused merge source, which
// -Wuninitialized reports (as in attention.cpp and the GEMM files).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace qn {
namespace cpu {
namespace {

constexpr int kLanes = 16;

// The row's statistics: m = max(m_old, max_j z_j), returns sum_j exp(z_j - m), P_j = exp(z_j - m)
// written to pr when given. Generic body (vectorized by the compiler in each clone).
template <typename P>
QN_XF_INLINE float exp_row(const float* z, int64_t vc, float m_old, P* pr, float& m) {
  const int64_t vv = vc / kLanes * kLanes;
  float mx[kLanes];
  for (int l = 0; l < kLanes; ++l) mx[l] = -INFINITY;
  for (int64_t i = 0; i < vv; i += kLanes)
    for (int l = 0; l < kLanes; ++l) mx[l] = std::max(mx[l], z[i + l]);
  m = m_old;
  for (int l = 0; l < kLanes; ++l) m = std::max(m, mx[l]);
  for (int64_t i = vv; i < vc; ++i) m = std::max(m, z[i]);
  float sum[kLanes] = {0};
  if (pr) {
    for (int64_t i = 0; i < vv; i += kLanes)
      for (int l = 0; l < kLanes; ++l) {
        const float e = xf::exp_approx(z[i + l] - m);
        sum[l] += e;
        pr[i + l] = xf::from_f32<P>(e);
      }
    for (int64_t i = vv; i < vc; ++i) {
      const float e = xf::exp_approx(z[i] - m);
      sum[i - vv] += e;
      pr[i] = xf::from_f32<P>(e);
    }
  } else {
    for (int64_t i = 0; i < vv; i += kLanes)
      for (int l = 0; l < kLanes; ++l) sum[l] += xf::exp_approx(z[i + l] - m);
    for (int64_t i = vv; i < vc; ++i) sum[i - vv] += xf::exp_approx(z[i] - m);
  }
  for (int w = kLanes / 2; w > 0; w /= 2)
    for (int l = 0; l < w; ++l) sum[l] += sum[l + w];
  return sum[0];
}

// The same with explicit AVX-512: four independent vectors per step (the exp polynomial is a chain
// of dependent FMAs), masked tails; P rounded to bf16 like xf::from_f32 (ties to even).
QN_XF_AVX512 inline void store_p(float* p, __m512 e, __mmask16 k) { _mm512_mask_storeu_ps(p, k, e); }
QN_XF_AVX512 inline void store_p(uint16_t* p, __m512 e, __mmask16 k) {
  _mm256_mask_storeu_epi16(p, k, gemm_impl::f32_to_bf16_avx512(e));
}
template <typename P>
QN_XF_AVX512 float exp_row_avx512(const float* z, int64_t vc, float m_old, P* pr, float& m) {
  __m512 m0 = _mm512_set1_ps(-INFINITY), m1 = m0;
  int64_t i = 0;
  for (; i + 32 <= vc; i += 32) {
    m0 = _mm512_max_ps(m0, _mm512_loadu_ps(z + i));
    m1 = _mm512_max_ps(m1, _mm512_loadu_ps(z + i + 16));
  }
  for (; i < vc; i += 16) {
    const __mmask16 k = vc - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (vc - i)) - 1);
    m0 = _mm512_max_ps(m0, _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), k, z + i));
  }
  m = std::max(m_old, _mm512_reduce_max_ps(_mm512_max_ps(m0, m1)));
  const __m512 vm = _mm512_set1_ps(m);
  __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  i = 0;
  for (; i + 64 <= vc; i += 64) {
    const __m512 e0 = xf::exp_approx_avx512(_mm512_sub_ps(_mm512_loadu_ps(z + i), vm));
    const __m512 e1 = xf::exp_approx_avx512(_mm512_sub_ps(_mm512_loadu_ps(z + i + 16), vm));
    const __m512 e2 = xf::exp_approx_avx512(_mm512_sub_ps(_mm512_loadu_ps(z + i + 32), vm));
    const __m512 e3 = xf::exp_approx_avx512(_mm512_sub_ps(_mm512_loadu_ps(z + i + 48), vm));
    s0 = _mm512_add_ps(s0, e0);
    s1 = _mm512_add_ps(s1, e1);
    s2 = _mm512_add_ps(s2, e2);
    s3 = _mm512_add_ps(s3, e3);
    if (pr) {
      store_p(pr + i, e0, 0xffff);
      store_p(pr + i + 16, e1, 0xffff);
      store_p(pr + i + 32, e2, 0xffff);
      store_p(pr + i + 48, e3, 0xffff);
    }
  }
  for (; i < vc; i += 16) {
    const __mmask16 k = vc - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (vc - i)) - 1);
    const __m512 e = _mm512_maskz_mov_ps(k, xf::exp_approx_avx512(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, z + i), vm)));
    s0 = _mm512_add_ps(s0, e);
    if (pr) store_p(pr + i, e, k);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

template <typename P>
QN_XF_INLINE void chunk_row(const CrossEntropyOnlineChunkArgs& a, int64_t vc, int64_t h, int64_t r, bool avx512) {
  const float* z = a.logits.data<float>() + r * vc;
  P* pr = a.probs.defined() ? static_cast<P*>(a.probs.raw()) + r * vc : nullptr;
  float* acc = a.acc.defined() ? a.acc.data<float>() + r * h : nullptr;
  float& row_max = a.row_max.data<float>()[r];
  float& row_sum = a.row_sum.data<float>()[r];
  float& zy = a.target_logit.data<float>()[r];
  const bool first = a.v0 == 0;
  const int32_t y = a.labels.data<int32_t>()[r];
  if (ce_ignored(y, a.ignore_index, a.vocab)) {
    if (first) {
      row_max = -INFINITY;
      row_sum = 0.f;
      zy = 0.f;
      if (acc)
        for (int64_t i = 0; i < h; ++i) acc[i] = 0.f;
    }
    if (pr)
      for (int64_t i = 0; i < vc; ++i) pr[i] = xf::from_f32<P>(0.f);
    return;
  }
  const float m_old = first ? -INFINITY : row_max;
  float m;
  const float chunk_sum = avx512 ? exp_row_avx512<P>(z, vc, m_old, pr, m) : exp_row<P>(z, vc, m_old, pr, m);
  // m_old = -inf (first chunk) gives a = 0 (exp_approx(-inf) is exactly 0)
  const float scale = first ? 0.f : xf::exp_approx(m_old - m);
  row_sum = (first ? 0.f : row_sum * scale) + chunk_sum;
  row_max = m;
  if (first) zy = 0.f;
  if (y >= a.v0 && y < a.v0 + vc) zy = z[y - a.v0];
  if (acc) {
    if (first)
      for (int64_t i = 0; i < h; ++i) acc[i] = 0.f;
    else if (scale != 1.f)
      for (int64_t i = 0; i < h; ++i) acc[i] *= scale;
  }
}

template <typename W, typename D>
QN_XF_INLINE void finish_row(const CrossEntropyOnlineFinishArgs& a, int64_t h, int64_t m_rows, int64_t i, float* rl) {
  const int32_t y = a.labels.data<int32_t>()[i];
  const bool skip = ce_ignored(y, a.ignore_index, a.vocab);
  const float s = a.row_sum.data<float>()[i];
  rl[i] = skip ? 0.f : a.row_max.data<float>()[i] + std::log(s) - a.target_logit.data<float>()[i];
  if (!a.acc.defined()) return;
  const int64_t dst = a.rows.defined() ? a.rows.data<int32_t>()[i] : i;
  if (dst < 0 || dst >= m_rows) return;
  D* dx = static_cast<D*>(a.dx.raw()) + dst * h;
  if (skip) {
    for (int64_t k = 0; k < h; ++k) dx[k] = xf::from_f32<D>(0.f);
    return;
  }
  const float* acc = a.acc.data<float>() + i * h;
  const W* w = static_cast<const W*>(a.weight.raw()) + static_cast<int64_t>(y) * h;
  const float inv = 1.f / s, gs = a.grad_scale;
  for (int64_t k = 0; k < h; ++k) dx[k] = xf::from_f32<D>((acc[k] * inv - xf::to_f32(w[k])) * gs);
}

}  // namespace

void cross_entropy_online_chunk(Context&, const CrossEntropyOnlineChunkArgs& a) {
  const CrossEntropyOnlineDims d = check_cross_entropy_online_chunk(a);
  const DType pt = a.probs.defined() ? a.probs.dtype() : DType::F32;
  const bool avx512 = xf::isa() == xf::Isa::Avx512;
  xf::with_type(pt, [&](auto ptag) {
    using P = decltype(ptag);
    xf::parallel_simd(d.n, std::max<int64_t>(1, 16384 / d.vc), [&](int64_t b, int64_t e) QN_XF_LAMBDA {
      for (int64_t r = b; r < e; ++r) chunk_row<P>(a, d.vc, d.h, r, avx512);
    });
  });
}

void cross_entropy_online_finish(Context&, const CrossEntropyOnlineFinishArgs& a) {
  const CrossEntropyOnlineDims d = check_cross_entropy_online_finish(a);
  std::vector<float> scratch;
  float* rl = a.row_loss.defined() ? a.row_loss.data<float>() : nullptr;
  if (!rl) {
    scratch.resize(static_cast<size_t>(d.n));
    rl = scratch.data();
  }
  const DType wt = a.weight.defined() ? a.weight.dtype() : DType::F32;
  const DType dt = a.dx.defined() ? a.dx.dtype() : DType::F32;
  xf::with_type(wt, [&](auto wtag) {
    xf::with_type(dt, [&](auto dtag) {
      using W = decltype(wtag);
      using D = decltype(dtag);
      xf::parallel_simd(d.n, std::max<int64_t>(1, 4096 / std::max<int64_t>(d.h, 1)), [&](int64_t b, int64_t e) QN_XF_LAMBDA {
        for (int64_t i = b; i < e; ++i) finish_row<W, D>(a, d.h, d.m, i, rl);
      });
    });
  });
  add_row_losses(a.labels.data<int32_t>(), rl, d.n, a.ignore_index, a.vocab, a.loss_sum, a.count);
}

}  // namespace cpu
}  // namespace qn
