// CUDA SwiGLU forward / backward (see qn/ops/swiglu.h): grid-stride loops, fp32 math, one rounding
// per output. sigmoid uses exp of -|g| only (no overflow); expf is the fast-math form (~2 ulp).
#include "qn/ops/swiglu.h"
#include "xf_common.cuh"

namespace qn {
namespace cuda {
namespace {

__device__ __forceinline__ float sigmoid(float g) {
  const float e = __expf(-fabsf(g));
  const float r = 1.f / (1.f + e);
  return g > 0.f ? r : e * r;
}

template <typename TG, typename TU, typename TH>
__global__ void swiglu_forward_kernel(const TG* g, const TU* u, TH* h, long long n) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    const float gv = xf::to_f32(g[i]);
    h[i] = xf::from_f32<TH>(gv * sigmoid(gv) * xf::to_f32(u[i]));
  }
}

// One instantiation per storage-type combination of the five tensors.
template <typename TG, typename TU, typename TD, typename TDG, typename TDU>
__global__ void swiglu_backward_kernel(const TG* g, const TU* u, const TD* dh, TDG* dg, TDU* du, long long n) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    const float gv = xf::to_f32(g[i]), uv = xf::to_f32(u[i]), d = xf::to_f32(dh[i]);
    const float s = sigmoid(gv);
    const float dgv = d * uv * s * (1.f + gv * (1.f - s));
    const float duv = d * gv * s;
    dg[i] = xf::from_f32<TDG>(dgv);
    du[i] = xf::from_f32<TDU>(duv);
  }
}

}  // namespace

void swiglu_forward(Context& ctx, const SwigluForwardArgs& a) {
  const long long n = check_swiglu_forward(a);
  if (n == 0) return;
  with_type(a.gate.dtype(), [&](auto tg) {
    with_type(a.up.dtype(), [&](auto tu) {
      with_type(a.h.dtype(), [&](auto th) {
        using TG = decltype(tg);
        using TU = decltype(tu);
        using TH = decltype(th);
        swiglu_forward_kernel<TG, TU, TH><<<blocks_for(n, 256), 256, 0, stream_of(ctx)>>>(
            static_cast<const TG*>(a.gate.raw()), static_cast<const TU*>(a.up.raw()), static_cast<TH*>(a.h.raw()), n);
      });
    });
  });
  QN_CUDA_LAUNCHED("swiglu_forward_kernel", ctx);
}

void swiglu_backward(Context& ctx, const SwigluBackwardArgs& a) {
  const long long n = check_swiglu_backward(a);
  if (n == 0) return;
  auto launch = [&](auto tg, auto tu, auto td, auto tdg, auto tdu) {
    using TG = decltype(tg);
    using TU = decltype(tu);
    using TD = decltype(td);
    using TDG = decltype(tdg);
    using TDU = decltype(tdu);
    swiglu_backward_kernel<TG, TU, TD, TDG, TDU><<<blocks_for(n, 256), 256, 0, stream_of(ctx)>>>(
        static_cast<const TG*>(a.gate.raw()), static_cast<const TU*>(a.up.raw()), static_cast<const TD*>(a.dh.raw()),
        static_cast<TDG*>(a.dgate.raw()), static_cast<TDU*>(a.dup.raw()), n);
  };
  with_type(a.gate.dtype(), [&](auto tg) {
    with_type(a.up.dtype(), [&](auto tu) {
      with_type(a.dh.dtype(), [&](auto td) {
        with_type(a.dgate.dtype(), [&](auto tdg) {
          with_type(a.dup.dtype(), [&](auto tdu) { launch(tg, tu, td, tdg, tdu); });
        });
      });
    });
  });
  QN_CUDA_LAUNCHED("swiglu_backward_kernel", ctx);
}

}  // namespace cuda
}  // namespace qn
