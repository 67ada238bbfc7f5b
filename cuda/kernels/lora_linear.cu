// CUDA LoRA linear (see qn/ops/lora_linear.h), composed of gemm calls (cuBLASLt when loaded) on
// the session stream, plus two small kernels of its own (dropout of x, and the masked add of the
// LoRA term into dx when p > 0). Matches the CPU op (cuda/cpu/lora_linear.cpp) and the float64
// reference in cuda/tests/test_lora_linear.cpp.
//
// Precision: every GEMM operand has the dtype of x. With bf16 x: W is dequantized (NF4) or cast
// (dense f32) to a bf16 scratch, and bf16 copies of A, B, u, g are made per call; fp32 accumulate.
// With f32 x: everything in fp32 (NF4 dequantized to f32, CUBLAS_COMPUTE_32F, no TF32).
//
// Forward   u  = s * dropout(x) A^T             (gemm, f32 out)
//           y  = x W^T + b     (+ y)            (gemm, bias epilogue, beta = accumulate_y)
//           y += u B^T                          (gemm, beta = 1: accumulated into y, no extra pass)
// Backward  dB += dy^T u ;  g = s dy B ;  dA += g^T dropout(x)        (gemms, beta = 1 into grads)
//           dx  = dy W (+ dx)                   (gemm)
//           dx += g A                           (gemm, beta = 1) when p == 0; with dropout the term
//                                               is masked per element: h = g A (f32 scratch), then
//                                               dx += mask * h in one elementwise kernel.
// W choice: the NF4 weight is dequantized to a scratch [out, in] (one pass, ~2 bytes/element
// written) and multiplied by cuBLASLt; at large token counts this pass is small next to the GEMM
// (DESIGN.md section 4). Fusing the dequantization into the GEMM's tile loads (better at small
// token counts) is not done yet. With bf16 x and a bf16 y, y and dx are rounded twice (base, then
// base + LoRA term).
#include "cuda_common.cuh"
#include "qn/ops/elementwise.h"
#include "qn/ops/gemm.h"
#include "qn/ops/lora_linear.h"
#include "qn/ops/nf4.h"

namespace qn {
namespace cuda {
namespace {

template <typename T> __device__ __forceinline__ float ld_f(const T* p, long long i);
template <> __device__ __forceinline__ float ld_f<float>(const float* p, long long i) { return p[i]; }
template <> __device__ __forceinline__ float ld_f<__nv_bfloat16>(const __nv_bfloat16* p, long long i) {
  return __bfloat162float(p[i]);
}
__device__ __forceinline__ void st_f(float* p, long long i, float v) { p[i] = v; }
__device__ __forceinline__ void st_f(__nv_bfloat16* p, long long i, float v) { p[i] = __float2bfloat16_rn(v); }

// xd[i] = x[i] * mult(i)
template <typename T>
__global__ void lora_dropout_kernel(const T* x, T* xd, long long n, LoraDropout dr) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    st_f(xd, i, ld_f(x, i) * dr.mult(static_cast<uint64_t>(i)));
}

// dx[i] += mult(i) * h[i]
template <typename T>
__global__ void lora_masked_add_kernel(T* dx, const float* h, long long n, LoraDropout dr) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    st_f(dx, i, ld_f(static_cast<const T*>(dx), i) + dr.mult(static_cast<uint64_t>(i)) * h[i]);
}

// t itself when it already has dtype dt, else a converted copy (scratch on t's stream-ordered pool).
Tensor as_dtype(Context& ctx, const Tensor& t, DType dt) {
  if (t.dtype() == dt) return t;
  Tensor c = Tensor::empty(t.ctx_ptr(), dt, t.shape());
  qn::cuda::cast(ctx, CastArgs{t, c});
  return c;
}

// The base weight [out, in] in dtype dt: the dense tensor, a cast copy, or the NF4 dequantized.
Tensor base_weight(Context& ctx, const LoraLinear& L, DType dt, const Tensor& like) {
  if (!L.nf4) return as_dtype(ctx, L.weight, dt);
  Tensor w = Tensor::empty(like.ctx_ptr(), dt, {L.nf4->rows, L.nf4->cols});
  qn::cuda::nf4_dequantize(ctx, Nf4DequantizeArgs{*L.nf4, w});
  return w;
}

Tensor dropped(Context& ctx, const Tensor& x, const LoraDropout& dr) {
  if (!dr.on) return x;
  Tensor xd = Tensor::empty(x.ctx_ptr(), x.dtype(), x.shape());
  const long long n = x.numel();
  if (n == 0) return xd;
  if (x.dtype() == DType::F32)
    lora_dropout_kernel<<<blocks_for(n, 256), 256, 0, stream_of(ctx)>>>(x.data<float>(), xd.data<float>(), n, dr);
  else
    lora_dropout_kernel<<<blocks_for(n, 256), 256, 0, stream_of(ctx)>>>(
        x.data<__nv_bfloat16>(), xd.data<__nv_bfloat16>(), n, dr);
  QN_CUDA_LAUNCHED("lora_dropout_kernel", ctx);
  return xd;
}

}  // namespace

void lora_linear_forward(Context& ctx, const LoraLinearForwardArgs& a) {
  const LoraLinearDims d = check_lora_linear_forward(a);
  if (d.m == 0) return;
  const LoraLinear& L = a.layer;
  const DType dt = a.x.dtype();
  const LoraDropout dr = lora_dropout_of(L);
  if (d.lora()) {
    const Tensor xd = dropped(ctx, a.x, dr);
    qn::cuda::gemm(ctx, GemmArgs{xd, as_dtype(ctx, L.lora_a, dt), a.u, false, true, L.scale, 0.f});
  }
  if (d.out == 0) return;
  const Tensor w = base_weight(ctx, L, dt, a.x);
  qn::cuda::gemm(ctx, GemmArgs{a.x, w, a.y, false, true, 1.f, a.accumulate_y ? 1.f : 0.f, L.bias});
  if (d.lora()) qn::cuda::gemm(ctx, GemmArgs{as_dtype(ctx, a.u, dt), as_dtype(ctx, L.lora_b, dt), a.y, false, true, 1.f, 1.f});
}

void lora_linear_backward(Context& ctx, const LoraLinearBackwardArgs& a) {
  const LoraLinearDims d = check_lora_linear_backward(a);
  if (d.m == 0) return;
  const LoraLinear& L = a.layer;
  const DType dt = a.x.dtype();
  const LoraDropout dr = lora_dropout_of(L);
  Tensor gc;  // s * dy B in dtype dt, [M, r]
  if (d.lora()) {
    qn::cuda::gemm(ctx, GemmArgs{a.dy, as_dtype(ctx, a.u, dt), a.grad_b, true, false, 1.f, 1.f});
    Tensor g = Tensor::empty(a.x.ctx_ptr(), DType::F32, {d.m, d.r});
    qn::cuda::gemm(ctx, GemmArgs{a.dy, as_dtype(ctx, L.lora_b, dt), g, false, false, L.scale, 0.f});
    gc = as_dtype(ctx, g, dt);
    qn::cuda::gemm(ctx, GemmArgs{gc, dropped(ctx, a.x, dr), a.grad_a, true, false, 1.f, 1.f});
  }
  if (!a.dx.defined() || d.in == 0) return;
  const Tensor w = base_weight(ctx, L, dt, a.x);
  qn::cuda::gemm(ctx, GemmArgs{a.dy, w, a.dx, false, false, 1.f, a.accumulate_dx ? 1.f : 0.f});
  if (!d.lora()) return;
  const Tensor ac = as_dtype(ctx, L.lora_a, dt);
  if (!dr.on) {
    qn::cuda::gemm(ctx, GemmArgs{gc, ac, a.dx, false, false, 1.f, 1.f});
    return;
  }
  Tensor h = Tensor::empty(a.x.ctx_ptr(), DType::F32, {d.m, d.in});
  qn::cuda::gemm(ctx, GemmArgs{gc, ac, h, false, false, 1.f, 0.f});
  const long long n = d.m * d.in;
  if (dt == DType::F32)
    lora_masked_add_kernel<<<blocks_for(n, 256), 256, 0, stream_of(ctx)>>>(a.dx.data<float>(), h.data<float>(), n, dr);
  else
    lora_masked_add_kernel<<<blocks_for(n, 256), 256, 0, stream_of(ctx)>>>(
        a.dx.data<__nv_bfloat16>(), h.data<float>(), n, dr);
  QN_CUDA_LAUNCHED("lora_masked_add_kernel", ctx);
}

}  // namespace cuda
}  // namespace qn
