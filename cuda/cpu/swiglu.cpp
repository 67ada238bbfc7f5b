// CPU SwiGLU forward and backward (see qn/ops/swiglu.h): fp32 math, one rounding per output,
// loops the compiler vectorizes per SIMD level (xf::parallel_simd; exp through xf::exp_approx).
#include "float_rows.h"
#include "qn/ops/swiglu.h"

namespace qn {
namespace cpu {
namespace {

constexpr int64_t kGrain = 1 << 14;

// sigmoid(g) with exp of a non-positive argument only (no overflow for either sign).
QN_XF_INLINE float sigmoid(float g) {
  const float e = xf::exp_approx(g > 0.f ? -g : g);  // exp(-|g|)
  const float r = 1.f / (1.f + e);
  return g > 0.f ? r : e * r;
}

}  // namespace

void swiglu_forward(Context&, const SwigluForwardArgs& a) {
  const int64_t n = check_swiglu_forward(a);
  xf::with_type(a.gate.dtype(), [&](auto tg) {
    xf::with_type(a.up.dtype(), [&](auto tu) {
      xf::with_type(a.h.dtype(), [&](auto th) {
        using TG = decltype(tg);
        using TU = decltype(tu);
        using TH = decltype(th);
        const TG* g = static_cast<const TG*>(a.gate.raw());
        const TU* u = static_cast<const TU*>(a.up.raw());
        TH* h = static_cast<TH*>(a.h.raw());
        xf::parallel_simd(n, kGrain, [&](int64_t b, int64_t e) QN_XF_LAMBDA {
          for (int64_t i = b; i < e; ++i) {
            const float gv = xf::to_f32(g[i]);
            h[i] = xf::from_f32<TH>(gv * sigmoid(gv) * xf::to_f32(u[i]));
          }
        });
      });
    });
  });
}

void swiglu_backward(Context&, const SwigluBackwardArgs& a) {
  const int64_t n = check_swiglu_backward(a);
  // One instantiation per combination of the five storage types (32 small loops).
  auto run = [&](auto tg, auto tu, auto td, auto tdg, auto tdu) {
    using TG = decltype(tg);
    using TU = decltype(tu);
    using TD = decltype(td);
    using TDG = decltype(tdg);
    using TDU = decltype(tdu);
    const TG* g = static_cast<const TG*>(a.gate.raw());
    const TU* u = static_cast<const TU*>(a.up.raw());
    const TD* dh = static_cast<const TD*>(a.dh.raw());
    TDG* dg = static_cast<TDG*>(a.dgate.raw());
    TDU* du = static_cast<TDU*>(a.dup.raw());
    xf::parallel_simd(n, kGrain, [&](int64_t b, int64_t e) QN_XF_LAMBDA {
      for (int64_t i = b; i < e; ++i) {
        const float gv = xf::to_f32(g[i]), uv = xf::to_f32(u[i]), d = xf::to_f32(dh[i]);
        const float s = sigmoid(gv);
        const float dgv = d * uv * s * (1.f + gv * (1.f - s));
        const float duv = d * gv * s;
        dg[i] = xf::from_f32<TDG>(dgv);
        du[i] = xf::from_f32<TDU>(duv);
      }
    });
  };
  xf::with_type(a.gate.dtype(), [&](auto tg) {
    xf::with_type(a.up.dtype(), [&](auto tu) {
      xf::with_type(a.dh.dtype(), [&](auto td) {
        xf::with_type(a.dgate.dtype(), [&](auto tdg) {
          xf::with_type(a.dup.dtype(), [&](auto tdu) { run(tg, tu, td, tdg, tdu); });
        });
      });
    });
  });
}

}  // namespace cpu
}  // namespace qn
