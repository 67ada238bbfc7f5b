// CPU online cross-entropy over vocabulary chunks (see qn/ops/cross_entropy_online.h).
//   chunk:  one row per task: the chunk's max, then P = exp(z - m_new) written to probs and summed
//           in 16 f32 lanes in the same pass, the running state updated, the acc row rescaled
//           only when the max moved. The chunk ([N x Vc] f32, a few MB) is still in cache from
//           the head GEMM that wrote it.
//   finish: one row per task: loss = m + log(s) - z_y, dx row = (acc / s - W[y]) * grad_scale;
//           the loss sum is added in double in row order (deterministic for any thread count).
// Bodies are templates compiled for AVX-512, AVX2 and the baseline (xf::parallel_simd).
#include <cmath>
#include <vector>
#include "cross_entropy_common.h"
#include "float_rows.h"
#include "qn/ops/cross_entropy_online.h"

namespace qn {
namespace cpu {
namespace {

constexpr int kLanes = 16;

template <typename P>
QN_XF_INLINE void chunk_row(const CrossEntropyOnlineChunkArgs& a, int64_t vc, int64_t h, int64_t r) {
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
  const int64_t vv = vc / kLanes * kLanes;
  float mx[kLanes];
  for (int l = 0; l < kLanes; ++l) mx[l] = -INFINITY;
  for (int64_t i = 0; i < vv; i += kLanes)
    for (int l = 0; l < kLanes; ++l) mx[l] = std::max(mx[l], z[i + l]);
  const float m_old = first ? -INFINITY : row_max;
  float m = m_old;
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
  // m_old = -inf (first chunk) gives a = 0 (exp_approx(-inf) is exactly 0)
  const float scale = first ? 0.f : xf::exp_approx(m_old - m);
  row_sum = (first ? 0.f : row_sum * scale) + sum[0];
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
  xf::with_type(pt, [&](auto ptag) {
    using P = decltype(ptag);
    xf::parallel_simd(d.n, std::max<int64_t>(1, 16384 / d.vc), [&](int64_t b, int64_t e) QN_XF_LAMBDA {
      for (int64_t r = b; r < e; ++r) chunk_row<P>(a, d.vc, d.h, r);
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
