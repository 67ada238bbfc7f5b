// CUDA RoPE forward / backward in place (see qn/ops/rope.h). One block per token (grid-stride):
// the threads compute cos/sin of the f32 angle f32(pos * inv_freq[i]) in double (sincos, then one
// rounding to f32, and to bf16 for bf16 storage, as transformers' cos.to(dtype)) into shared
// memory, then rotate every (head, i) pair of q and k. Products and sums use the _rn intrinsics
// so every step rounds like the CPU (bf16: each product and the sum rounded to bf16, torch's eager
// bf16 order). inv_freq comes from the host (rope_inv_freq) in the launch parameters: head_dim
// <= 2 * kMaxHalf on CUDA.
#include "qn/ops/rope.h"
#include "xf_common.cuh"

namespace qn {
namespace cuda {
namespace {

constexpr int kMaxHalf = 256;
constexpr int kThreads = 128;

struct InvFreq {
  float v[kMaxHalf];
};

template <typename T>
__global__ void __launch_bounds__(kThreads) rope_kernel(T* q, T* k, const int* __restrict__ pos, long long rows, int hq,
                                                        int hkv, int half, InvFreq inv, float sign) {
  __shared__ float cs[2 * kMaxHalf];
  for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
    const float p = (float)pos[r];
    for (int i = threadIdx.x; i < half; i += kThreads) {
      double s, c;
      sincos((double)__fmul_rn(p, inv.v[i]), &s, &c);
      cs[i] = xf::round_to<T>((float)c);
      cs[kMaxHalf + i] = sign * xf::round_to<T>((float)s);
    }
    __syncthreads();
    const int total = (hq + hkv) * half;
    for (int idx = threadIdx.x; idx < total; idx += kThreads) {
      const int head = idx / half, i = idx - head * half;
      T* x1 = head < hq ? q + ((long long)r * hq + head) * 2 * half : k + ((long long)r * hkv + head - hq) * 2 * half;
      T* x2 = x1 + half;
      const float a = xf::to_f32(x1[i]), b = xf::to_f32(x2[i]), c = cs[i], s = cs[kMaxHalf + i];
      const float ac = xf::round_to<T>(__fmul_rn(a, c)), bs = xf::round_to<T>(__fmul_rn(b, s));
      const float bc = xf::round_to<T>(__fmul_rn(b, c)), as = xf::round_to<T>(__fmul_rn(a, s));
      x1[i] = xf::from_f32<T>(__fsub_rn(ac, bs));
      x2[i] = xf::from_f32<T>(__fadd_rn(bc, as));
    }
    __syncthreads();  // cs is rewritten for the next token
  }
}

void rope_apply(Context& ctx, const RopeArgs& a, float sign, const char* op) {
  const RopeDims d = check_rope(a, op);
  QN_CHECK(d.d / 2 <= kMaxHalf, Arg, std::string(op) + ": head_dim " + std::to_string(d.d) + " above the CUDA limit of " +
                                         std::to_string(2 * kMaxHalf));
  if (d.rows == 0) return;
  InvFreq inv{};
  rope_inv_freq(a.theta, d.d, inv.v);
  const unsigned grid = static_cast<unsigned>(d.rows < 65535 * 8 ? d.rows : 65535 * 8);
  with_type(a.q.defined() ? a.q.dtype() : a.k.dtype(), [&](auto tt) {
    using T = decltype(tt);
    rope_kernel<T><<<grid, kThreads, 0, stream_of(ctx)>>>(
        a.q.defined() ? static_cast<T*>(a.q.raw()) : nullptr, a.k.defined() ? static_cast<T*>(a.k.raw()) : nullptr,
        a.positions.data<int>(), d.rows, a.q.defined() ? (int)d.hq : 0, a.k.defined() ? (int)d.hkv : 0, (int)(d.d / 2),
        inv, sign);
  });
  QN_CUDA_LAUNCHED("rope_kernel", ctx);
}

}  // namespace

void rope_forward(Context& ctx, const RopeArgs& a) { rope_apply(ctx, a, 1.f, "rope_forward"); }
void rope_backward(Context& ctx, const RopeArgs& a) { rope_apply(ctx, a, -1.f, "rope_backward"); }

}  // namespace cuda
}  // namespace qn
