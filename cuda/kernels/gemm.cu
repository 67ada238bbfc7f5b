// CUDA gemm (see qn/ops/gemm.h). Placeholder: one thread per output element (to be replaced).
#include "cuda_common.cuh"
#include "qn/ops/gemm.h"

namespace qn {
namespace cuda {
namespace {

template <typename TI, typename TO>
__global__ void gemm_naive(const TI* a, const TI* b, TO* c, const void* bias, int bias_bf16, long long M, long long N,
                           long long K, int ta, int tb, float alpha, float beta) {
  const long long i = blockIdx.y * (long long)blockDim.y + threadIdx.y;
  const long long j = blockIdx.x * (long long)blockDim.x + threadIdx.x;
  if (i >= M || j >= N) return;
  float acc = 0.f;
  for (long long k = 0; k < K; ++k) {
    const float av = (float)(ta ? a[k * M + i] : a[i * K + k]);
    const float bv = (float)(tb ? b[j * K + k] : b[k * N + j]);
    acc += av * bv;
  }
  float v = alpha * acc;
  if (beta != 0.f) v += beta * (float)c[i * N + j];
  if (bias) v += bias_bf16 ? __bfloat162float(((const __nv_bfloat16*)bias)[j]) : ((const float*)bias)[j];
  c[i * N + j] = (TO)v;
}

}  // namespace

void gemm(Context& ctx, const GemmArgs& g) {
  const GemmDims d = check_gemm(g);
  if (d.m == 0 || d.n == 0) return;
  dim3 block(16, 16), grid((unsigned)((d.n + 15) / 16), (unsigned)((d.m + 15) / 16));
  const void* bias = g.bias.defined() ? g.bias.raw() : nullptr;
  const int bb = g.bias.defined() && g.bias.dtype() == DType::BF16;
  auto s = stream_of(ctx);
  if (g.a.dtype() == DType::F32) {
    if (g.c.dtype() == DType::F32)
      gemm_naive<<<grid, block, 0, s>>>(g.a.data<float>(), g.b.data<float>(), g.c.data<float>(), bias, bb, d.m, d.n, d.k, g.trans_a, g.trans_b, g.alpha, g.beta);
    else
      gemm_naive<<<grid, block, 0, s>>>(g.a.data<float>(), g.b.data<float>(), g.c.data<__nv_bfloat16>(), bias, bb, d.m, d.n, d.k, g.trans_a, g.trans_b, g.alpha, g.beta);
  } else {
    if (g.c.dtype() == DType::F32)
      gemm_naive<<<grid, block, 0, s>>>(g.a.data<__nv_bfloat16>(), g.b.data<__nv_bfloat16>(), g.c.data<float>(), bias, bb, d.m, d.n, d.k, g.trans_a, g.trans_b, g.alpha, g.beta);
    else
      gemm_naive<<<grid, block, 0, s>>>(g.a.data<__nv_bfloat16>(), g.b.data<__nv_bfloat16>(), g.c.data<__nv_bfloat16>(), bias, bb, d.m, d.n, d.k, g.trans_a, g.trans_b, g.alpha, g.beta);
  }
  QN_CUDA_LAUNCHED("gemm_naive", ctx);
}

}  // namespace cuda
}  // namespace qn
