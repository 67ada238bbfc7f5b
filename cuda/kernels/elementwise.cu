// CUDA elementwise ops (see qn/ops/elementwise.h): grid-stride loops, one launch per call, on the
// session stream. Conversions use the CUDA intrinsics with round-to-nearest-even, as the CPU does.
#include "cuda_common.cuh"
#include "qn/ops/elementwise.h"

namespace qn {
namespace cuda {
namespace {

__device__ __forceinline__ float load_as_f32(const void* p, DType t, long long i) {
  switch (t) {
    case DType::F32: return static_cast<const float*>(p)[i];
    case DType::BF16: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    case DType::F16: return __half2float(static_cast<const __half*>(p)[i]);
    case DType::U8: return static_cast<float>(static_cast<const unsigned char*>(p)[i]);
    case DType::I32: return static_cast<float>(static_cast<const int*>(p)[i]);
  }
  return 0.f;
}

__device__ __forceinline__ void store_f32(void* p, DType t, long long i, float v) {
  switch (t) {
    case DType::F32: static_cast<float*>(p)[i] = v; break;
    case DType::BF16: static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v); break;
    case DType::F16: static_cast<__half*>(p)[i] = __float2half_rn(v); break;
    case DType::U8: static_cast<unsigned char*>(p)[i] = static_cast<unsigned char>(v); break;
    case DType::I32: static_cast<int*>(p)[i] = static_cast<int>(v); break;
  }
}

__global__ void cast_kernel(const void* src, DType s, void* dst, DType d, long long n) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    store_f32(dst, d, i, load_as_f32(src, s, i));
}

__global__ void fill_kernel(void* dst, DType d, long long n, double value) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    if (d == DType::I32) static_cast<int*>(dst)[i] = static_cast<int>(value);
    else store_f32(dst, d, i, static_cast<float>(value));
  }
}

__global__ void axpby_kernel(const float* x, float* y, long long n, float alpha, float beta) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    y[i] = alpha * x[i] + beta * y[i];
}

}  // namespace

void cast(Context& ctx, const CastArgs& a) {
  check_cast(a);
  const long long n = a.src.numel();
  if (n == 0) return;
  cast_kernel<<<blocks_for(n, 256), 256, 0, stream_of(ctx)>>>(a.src.raw(), a.src.dtype(), a.dst.raw(), a.dst.dtype(), n);
  QN_CUDA_LAUNCHED("cast_kernel", ctx);
}

void fill(Context& ctx, const FillArgs& a) {
  check_fill(a);
  const long long n = a.dst.numel();
  if (n == 0) return;
  fill_kernel<<<blocks_for(n, 256), 256, 0, stream_of(ctx)>>>(a.dst.raw(), a.dst.dtype(), n, a.value);
  QN_CUDA_LAUNCHED("fill_kernel", ctx);
}

void axpby(Context& ctx, const AxpbyArgs& a) {
  check_axpby(a);
  const long long n = a.x.numel();
  if (n == 0) return;
  axpby_kernel<<<blocks_for(n, 256), 256, 0, stream_of(ctx)>>>(a.x.data<float>(), a.y.data<float>(), n, a.alpha, a.beta);
  QN_CUDA_LAUNCHED("axpby_kernel", ctx);
}

}  // namespace cuda
}  // namespace qn
