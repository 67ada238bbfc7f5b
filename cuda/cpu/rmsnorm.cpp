// CPU RMSNorm forward and backward (see qn/ops/rmsnorm.h). One row per task, compiled per SIMD
// level (xf::parallel_simd); row sums in 16 f32
// lanes then a fixed tree (vectorizable, deterministic). dweight: per-block partial sums over fixed
// blocks of rows, then added in block order (deterministic for any thread count).
#include <algorithm>
#include <cmath>
#include <vector>
#include "float_rows.h"
#include "qn/ops/rmsnorm.h"
#include "qn/parallel.h"

namespace qn {
namespace cpu {
namespace {

constexpr int kLanes = 16;
constexpr int64_t kRowsPerBlock = 32;  // dweight partial-sum blocks

QN_XF_INLINE float lanes_sum(float* acc) {
  for (int w = kLanes / 2; w > 0; w /= 2)
    for (int l = 0; l < w; ++l) acc[l] += acc[l + w];
  return acc[0];
}

// sum_j a(j) * b(j) over a row, in 16 lanes.
template <typename TA, typename TB>
QN_XF_INLINE float row_dot(const TA* a, const TB* b, int64_t h) {
  float acc[kLanes] = {0};
  int64_t j = 0;
  for (; j + kLanes <= h; j += kLanes)
    for (int l = 0; l < kLanes; ++l) acc[l] += xf::to_f32(a[j + l]) * xf::to_f32(b[j + l]);
  for (; j < h; ++j) acc[j % kLanes] += xf::to_f32(a[j]) * xf::to_f32(b[j]);
  return lanes_sum(acc);
}

}  // namespace

void rmsnorm_forward(Context&, const RmsNormForwardArgs& a) {
  const RmsNormDims d = check_rmsnorm_forward(a);
  const int64_t h = d.h;
  float* rstd_out = a.rstd.defined() ? a.rstd.data<float>() : nullptr;
  const float eps = a.eps;
  xf::with_type(a.x.dtype(), [&](auto tx) {
    xf::with_type(a.weight.dtype(), [&](auto tw) {
      xf::with_type(a.y.dtype(), [&](auto ty) {
        using TX = decltype(tx);
        using TW = decltype(tw);
        using TY = decltype(ty);
        const TX* x = static_cast<const TX*>(a.x.raw());
        const TW* w = static_cast<const TW*>(a.weight.raw());
        TY* y = static_cast<TY*>(a.y.raw());
        xf::parallel_simd(d.n, std::max<int64_t>(1, 4096 / h), [&](int64_t b, int64_t e) QN_XF_LAMBDA {
          for (int64_t r = b; r < e; ++r) {
            const TX* xr = x + r * h;
            TY* yr = y + r * h;
            const float ss = row_dot(xr, xr, h);
            const float rs = 1.f / std::sqrt(ss / static_cast<float>(h) + eps);
            if (rstd_out) rstd_out[r] = rs;
            for (int64_t j = 0; j < h; ++j) {
              const float nv = xf::round_to<TX>(xf::to_f32(xr[j]) * rs);
              yr[j] = xf::from_f32<TY>(xf::to_f32(w[j]) * nv);
            }
          }
        });
      });
    });
  });
}

void rmsnorm_backward(Context&, const RmsNormBackwardArgs& a) {
  const RmsNormDims d = check_rmsnorm_backward(a);
  const int64_t h = d.h, n = d.n;
  const float* rstd = a.rstd.data<float>();
  const bool acc_dx = a.accumulate_dx;
  const bool want_dw = a.dweight.defined();
  const int64_t nblocks = (n + kRowsPerBlock - 1) / kRowsPerBlock;
  std::vector<float> partial(want_dw ? static_cast<size_t>(nblocks * h) : 0, 0.f);
  xf::with_type(a.x.dtype(), [&](auto tx) {
    xf::with_type(a.weight.dtype(), [&](auto tw) {
      xf::with_type(a.dy.dtype(), [&](auto tdy) {
        xf::with_type(a.dx.dtype(), [&](auto tdx) {
          using TX = decltype(tx);
          using TW = decltype(tw);
          using TDY = decltype(tdy);
          using TDX = decltype(tdx);
          const TX* x = static_cast<const TX*>(a.x.raw());
          const TW* w = static_cast<const TW*>(a.weight.raw());
          const TDY* dy = static_cast<const TDY*>(a.dy.raw());
          TDX* dx = static_cast<TDX*>(a.dx.raw());
          xf::parallel_simd(nblocks, 1, [&](int64_t b0, int64_t b1) QN_XF_LAMBDA {
            std::vector<float> g(static_cast<size_t>(h));
            for (int64_t blk = b0; blk < b1; ++blk) {
              float* pw = want_dw ? partial.data() + blk * h : nullptr;
              const int64_t r_end = std::min(n, (blk + 1) * kRowsPerBlock);
              for (int64_t r = blk * kRowsPerBlock; r < r_end; ++r) {
                const TX* xr = x + r * h;
                const TDY* dyr = dy + r * h;
                TDX* dxr = dx + r * h;
                const float rs = rstd[r];
                for (int64_t j = 0; j < h; ++j) g[j] = xf::to_f32(dyr[j]) * xf::to_f32(w[j]);
                const float c = rs * rs * rs * row_dot(g.data(), xr, h) / static_cast<float>(h);
                if (pw)
                  for (int64_t j = 0; j < h; ++j) pw[j] += xf::to_f32(dyr[j]) * xf::round_to<TX>(xf::to_f32(xr[j]) * rs);
                for (int64_t j = 0; j < h; ++j) {
                  float v = rs * g[j] - xf::to_f32(xr[j]) * c;
                  if (acc_dx) v += xf::to_f32(dxr[j]);
                  dxr[j] = xf::from_f32<TDX>(v);
                }
              }
            }
          });
        });
      });
    });
  });
  if (want_dw) {
    float* dw = a.dweight.data<float>();
    parallel_for(h, 256, [&](int64_t c0, int64_t c1) {
      for (int64_t blk = 0; blk < nblocks; ++blk) {
        const float* pw = partial.data() + blk * h;
        for (int64_t j = c0; j < c1; ++j) dw[j] += pw[j];
      }
    });
  }
}

}  // namespace cpu
}  // namespace qn
