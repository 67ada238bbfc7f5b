// CUDA RMSNorm forward / backward (see qn/ops/rmsnorm.h).
//   rmsnorm_forward_kernel   one block per row (grid-stride), block sum of squares (warp shuffles
//                            + shared), rstd = 1 / sqrt(ss / H + eps) with IEEE-rounded division and
//                            sqrt (as the CPU), then n = round(x * rstd) to x's dtype, y = w * n.
//   rmsnorm_backward_kernel  one block per row: dot(dy * w, x), then dx; with dweight, each block
//                            adds dy * n into its own row of an f32 partial buffer [grid, H]
//                            (no atomics), and rmsnorm_dweight_kernel sums the partials in block
//                            order into dweight (deterministic run to run).
// In-place use (y over x, dx over dy) is safe: each row is read fully before the block sync in the
// reduction, and afterwards each thread rewrites only the elements it reads.
#include "qn/ops/rmsnorm.h"
#include "qn/tensor.h"
#include "xf_common.cuh"

namespace qn {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr long long kMaxGrid = 4096;
constexpr long long kDwGrid = 256;  // blocks (and partial rows) when dweight is accumulated

template <typename TX, typename TW, typename TY>
__global__ void __launch_bounds__(kThreads) rmsnorm_forward_kernel(const TX* x, const TW* __restrict__ w, TY* y,
                                                                   float* __restrict__ rstd, long long n, long long h,
                                                                   float eps) {
  __shared__ float scratch[33];
  for (long long r = blockIdx.x; r < n; r += gridDim.x) {
    const TX* xr = x + r * h;
    float ss = 0.f;
    for (long long j = threadIdx.x; j < h; j += kThreads) {
      const float v = xf::to_f32(xr[j]);
      ss += v * v;
    }
    ss = xf::block_sum(ss, scratch);
    const float rs = __fdiv_rn(1.f, __fsqrt_rn(__fadd_rn(__fdiv_rn(ss, (float)h), eps)));
    if (rstd && threadIdx.x == 0) rstd[r] = rs;
    TY* yr = y + r * h;
    for (long long j = threadIdx.x; j < h; j += kThreads) {
      const float nv = xf::round_to<TX>(__fmul_rn(xf::to_f32(xr[j]), rs));
      yr[j] = xf::from_f32<TY>(__fmul_rn(xf::to_f32(w[j]), nv));
    }
  }
}

template <typename TX, typename TW, typename TDY, typename TDX>
__global__ void __launch_bounds__(kThreads) rmsnorm_backward_kernel(const TX* __restrict__ x, const TW* __restrict__ w,
                                                                    const float* __restrict__ rstd, const TDY* dy,
                                                                    TDX* dx, bool accumulate, float* partial,
                                                                    long long n, long long h) {
  __shared__ float scratch[33];
  float* pw = partial ? partial + blockIdx.x * h : nullptr;
  for (long long r = blockIdx.x; r < n; r += gridDim.x) {
    const TX* xr = x + r * h;
    const TDY* dyr = dy + r * h;
    TDX* dxr = dx + r * h;
    const float rs = rstd[r];
    float dot = 0.f;
    for (long long j = threadIdx.x; j < h; j += kThreads)
      dot += xf::to_f32(dyr[j]) * xf::to_f32(w[j]) * xf::to_f32(xr[j]);
    dot = xf::block_sum(dot, scratch);
    const float c = rs * rs * rs * dot / (float)h;
    for (long long j = threadIdx.x; j < h; j += kThreads) {
      const float xv = xf::to_f32(xr[j]), dv = xf::to_f32(dyr[j]);
      if (pw) pw[j] += dv * xf::round_to<TX>(__fmul_rn(xv, rs));
      float v = rs * (dv * xf::to_f32(w[j])) - xv * c;
      if (accumulate) v += xf::to_f32(dxr[j]);
      dxr[j] = xf::from_f32<TDX>(v);
    }
  }
}

__global__ void rmsnorm_dweight_kernel(const float* __restrict__ partial, float* __restrict__ dw, long long blocks,
                                       long long h) {
  for (long long j = blockIdx.x * (long long)blockDim.x + threadIdx.x; j < h; j += (long long)gridDim.x * blockDim.x) {
    float s = 0.f;
    for (long long b = 0; b < blocks; ++b) s += partial[b * h + j];
    dw[j] += s;
  }
}

}  // namespace

void rmsnorm_forward(Context& ctx, const RmsNormForwardArgs& a) {
  const RmsNormDims d = check_rmsnorm_forward(a);
  if (d.n == 0) return;
  const unsigned grid = static_cast<unsigned>(d.n < kMaxGrid ? d.n : kMaxGrid);
  with_type(a.x.dtype(), [&](auto tx) {
    with_type(a.weight.dtype(), [&](auto tw) {
      with_type(a.y.dtype(), [&](auto ty) {
        using TX = decltype(tx);
        using TW = decltype(tw);
        using TY = decltype(ty);
        rmsnorm_forward_kernel<TX, TW, TY><<<grid, kThreads, 0, stream_of(ctx)>>>(
            static_cast<const TX*>(a.x.raw()), static_cast<const TW*>(a.weight.raw()), static_cast<TY*>(a.y.raw()),
            a.rstd.defined() ? a.rstd.data<float>() : nullptr, d.n, d.h, a.eps);
      });
    });
  });
  QN_CUDA_LAUNCHED("rmsnorm_forward_kernel", ctx);
}

void rmsnorm_backward(Context& ctx, const RmsNormBackwardArgs& a) {
  const RmsNormDims d = check_rmsnorm_backward(a);
  if (d.n == 0) return;
  const bool dw = a.dweight.defined();
  const long long grid = dw ? (d.n < kDwGrid ? d.n : kDwGrid) : (d.n < kMaxGrid ? d.n : kMaxGrid);
  Tensor partial;
  if (dw) {
    partial = Tensor::empty(a.x.ctx_ptr(), DType::F32, {grid, d.h});
    QN_CUDA(cudaMemsetAsync(partial.raw(), 0, partial.nbytes(), stream_of(ctx)), ctx);
  }
  with_type(a.x.dtype(), [&](auto tx) {
    with_type(a.weight.dtype(), [&](auto tw) {
      with_type(a.dy.dtype(), [&](auto tdy) {
        with_type(a.dx.dtype(), [&](auto tdx) {
          using TX = decltype(tx);
          using TW = decltype(tw);
          using TDY = decltype(tdy);
          using TDX = decltype(tdx);
          rmsnorm_backward_kernel<TX, TW, TDY, TDX><<<static_cast<unsigned>(grid), kThreads, 0, stream_of(ctx)>>>(
              static_cast<const TX*>(a.x.raw()), static_cast<const TW*>(a.weight.raw()), a.rstd.data<float>(),
              static_cast<const TDY*>(a.dy.raw()), static_cast<TDX*>(a.dx.raw()), a.accumulate_dx,
              dw ? partial.data<float>() : nullptr, d.n, d.h);
        });
      });
    });
  });
  QN_CUDA_LAUNCHED("rmsnorm_backward_kernel", ctx);
  if (dw) {
    rmsnorm_dweight_kernel<<<blocks_for(d.h, 256), 256, 0, stream_of(ctx)>>>(partial.data<float>(), a.dweight.data<float>(),
                                                                             grid, d.h);
    QN_CUDA_LAUNCHED("rmsnorm_dweight_kernel", ctx);
  }
}

}  // namespace cuda
}  // namespace qn
