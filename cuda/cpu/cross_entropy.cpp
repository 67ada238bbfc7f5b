// CPU fused cross-entropy over a logits chunk, dlogits written in place or into a separate f32/bf16
// tensor (see qn/ops/cross_entropy.h). One row per task; max, sum of exp (kept in a per-thread f32 row) and
// the gradient pass run in 16 f32 lanes (AVX-512 / AVX2 clones of one body, picked with
// cpu_features()); the loss sum is added in double in row order (deterministic for any thread
// count).
#include <algorithm>
#include <cmath>
#include <vector>
#include "cross_entropy_common.h"
#include "float_rows.h"
#include "qn/ops/cross_entropy.h"
#include "qn/parallel.h"

namespace qn {
namespace cpu {
namespace {

constexpr int kLanes = 16;

struct CeJob {
  void* logits;
  void* dlogits;  // == logits when in place
  const int32_t* labels;
  float* row_loss;  // [n], always given (a scratch vector when the caller did not ask)
  int64_t v;
  int32_t ignore_index;
  float grad_scale;
  bool grad;
};

// One row: writes row_loss[r] (0 when ignored) and, with grad, the dlogits row. e (v floats of
// scratch) keeps exp(z - max) from the sum pass, so the gradient pass multiplies instead of
// taking exp again: dlogits = e * (grad_scale / sum) - grad_scale [j == y].
template <typename T, typename G>
QN_XF_INLINE void ce_row(const CeJob& j, int64_t r, float* e) {
  const T* z = static_cast<const T*>(j.logits) + r * j.v;
  G* dz = static_cast<G*>(j.dlogits) + r * j.v;
  const int64_t v = j.v;
  const int32_t y = j.labels[r];
  if (ce_ignored(y, j.ignore_index, v)) {
    j.row_loss[r] = 0.f;
    if (j.grad)
      for (int64_t i = 0; i < v; ++i) dz[i] = xf::from_f32<G>(0.f);
    return;
  }
  const int64_t vv = v / kLanes * kLanes;
  float mx[kLanes];
  for (int l = 0; l < kLanes; ++l) mx[l] = -INFINITY;
  for (int64_t i = 0; i < vv; i += kLanes)
    for (int l = 0; l < kLanes; ++l) mx[l] = std::max(mx[l], xf::to_f32(z[i + l]));
  float m = -INFINITY;
  for (int l = 0; l < kLanes; ++l) m = std::max(m, mx[l]);
  for (int64_t i = vv; i < v; ++i) m = std::max(m, xf::to_f32(z[i]));
  float acc[kLanes] = {0};
  for (int64_t i = 0; i < vv; i += kLanes)
    for (int l = 0; l < kLanes; ++l) acc[l] += (e[i + l] = xf::exp_approx(xf::to_f32(z[i + l]) - m));
  for (int64_t i = vv; i < v; ++i) acc[i - vv] += (e[i] = xf::exp_approx(xf::to_f32(z[i]) - m));
  for (int w = kLanes / 2; w > 0; w /= 2)
    for (int l = 0; l < w; ++l) acc[l] += acc[l + w];
  const float lse = m + std::log(acc[0]);
  j.row_loss[r] = lse - xf::to_f32(z[y]);
  if (!j.grad) return;
  const float sc = j.grad_scale, k = sc / acc[0];
  for (int64_t i = 0; i < v; ++i) dz[i] = xf::from_f32<G>(e[i] * k);
  dz[y] = xf::from_f32<G>(e[y] * k - sc);
}

template <typename T, typename G> QN_XF_AVX512 void ce_rows_avx512(const CeJob& j, int64_t b, int64_t e, float* s) {
  for (int64_t r = b; r < e; ++r) ce_row<T, G>(j, r, s);
}
template <typename T, typename G> QN_XF_AVX2 void ce_rows_avx2(const CeJob& j, int64_t b, int64_t e, float* s) {
  for (int64_t r = b; r < e; ++r) ce_row<T, G>(j, r, s);
}
template <typename T, typename G> void ce_rows_scalar(const CeJob& j, int64_t b, int64_t e, float* s) {
  for (int64_t r = b; r < e; ++r) ce_row<T, G>(j, r, s);
}

}  // namespace

void cross_entropy(Context&, const CrossEntropyArgs& a) {
  const CrossEntropyDims d = check_cross_entropy(a);
  std::vector<float> scratch;
  float* rl = a.row_loss.defined() ? a.row_loss.data<float>() : nullptr;
  if (!rl) {
    scratch.resize(static_cast<size_t>(d.n));
    rl = scratch.data();
  }
  const Tensor& out = a.dlogits.defined() ? a.dlogits : a.logits;
  CeJob job{a.logits.raw(), out.raw(), a.labels.data<int32_t>(), rl, d.v, a.ignore_index, a.grad_scale, a.compute_grad};
  const xf::Isa isa = xf::isa();
  xf::with_type(a.logits.dtype(), [&](auto tt) {
    xf::with_type(out.dtype(), [&](auto gt) {
      using T = decltype(tt);
      using G = decltype(gt);
      parallel_for(d.n, std::max<int64_t>(1, 65536 / d.v), [&](int64_t b, int64_t e) {
        std::vector<float> ex(static_cast<size_t>(d.v));
        if (isa == xf::Isa::Avx512) ce_rows_avx512<T, G>(job, b, e, ex.data());
        else if (isa == xf::Isa::Avx2) ce_rows_avx2<T, G>(job, b, e, ex.data());
        else ce_rows_scalar<T, G>(job, b, e, ex.data());
      });
    });
  });
  add_row_losses(job.labels, rl, d.n, a.ignore_index, d.v, a.loss_sum, a.count);
}

}  // namespace cpu
}  // namespace qn
