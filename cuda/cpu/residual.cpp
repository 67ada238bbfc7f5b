// CPU residual_add (see qn/ops/residual.h): y = alpha * a + beta * b in f32, one rounding to y's
// dtype. Loops the compiler vectorizes per SIMD level (xf::parallel_simd).
#include "float_rows.h"
#include "qn/ops/residual.h"

namespace qn {
namespace cpu {

void residual_add(Context&, const ResidualAddArgs& a) {
  const int64_t n = check_residual_add(a);
  const float alpha = a.alpha, beta = a.beta;
  xf::with_type(a.a.dtype(), [&](auto ta) {
    xf::with_type(a.b.dtype(), [&](auto tb) {
      xf::with_type(a.y.dtype(), [&](auto ty) {
        using TA = decltype(ta);
        using TB = decltype(tb);
        using TY = decltype(ty);
        const TA* pa = static_cast<const TA*>(a.a.raw());
        const TB* pb = static_cast<const TB*>(a.b.raw());
        TY* py = static_cast<TY*>(a.y.raw());
        xf::parallel_simd(n, 1 << 15, [&](int64_t b, int64_t e) QN_XF_LAMBDA {
          for (int64_t i = b; i < e; ++i) py[i] = xf::from_f32<TY>(alpha * xf::to_f32(pa[i]) + beta * xf::to_f32(pb[i]));
        });
      });
    });
  });
}

}  // namespace cpu
}  // namespace qn
