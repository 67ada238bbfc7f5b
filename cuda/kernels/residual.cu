// CUDA residual_add (see qn/ops/residual.h): grid-stride loop, f32 math, one rounding to y's dtype.
#include "qn/ops/residual.h"
#include "xf_common.cuh"

namespace qn {
namespace cuda {
namespace {

template <typename TA, typename TB, typename TY>
__global__ void residual_add_kernel(const TA* a, const TB* b, TY* y, long long n, float alpha, float beta) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    y[i] = xf::from_f32<TY>(alpha * xf::to_f32(a[i]) + beta * xf::to_f32(b[i]));
}

}  // namespace

void residual_add(Context& ctx, const ResidualAddArgs& a) {
  const long long n = check_residual_add(a);
  if (n == 0) return;
  with_type(a.a.dtype(), [&](auto ta) {
    with_type(a.b.dtype(), [&](auto tb) {
      with_type(a.y.dtype(), [&](auto ty) {
        using TA = decltype(ta);
        using TB = decltype(tb);
        using TY = decltype(ty);
        residual_add_kernel<TA, TB, TY><<<blocks_for(n, 256), 256, 0, stream_of(ctx)>>>(
            static_cast<const TA*>(a.a.raw()), static_cast<const TB*>(a.b.raw()), static_cast<TY*>(a.y.raw()), n,
            a.alpha, a.beta);
      });
    });
  });
  QN_CUDA_LAUNCHED("residual_add_kernel", ctx);
}

}  // namespace cuda
}  // namespace qn
