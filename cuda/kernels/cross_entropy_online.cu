// CUDA online cross-entropy over vocabulary chunks (see qn/ops/cross_entropy_online.h): the twin of
// cuda/cpu/cross_entropy_online.cpp, checked against it in cuda/tests/test_cross_entropy_online.cpp.
//   online_chunk_kernel   one block (256 threads) per row, grid-stride over rows: block max of the
//                         chunk (and the running max), then P = exp(z - m_new) written to probs and
//                         block-summed, thread 0 updates (row_max, row_sum, target_logit), and the
//                         block rescales the acc row by exp(m_old - m_new) when the max moved.
//                         Every thread reads the old state before the first block reduction, whose
//                         barriers order it before thread 0's writes.
//   online_finish_kernel  one block per row: row loss m + log(s) - z_y, and the dx row
//                         (acc / s - W[y]) * grad_scale in f32, rounded once to dx's dtype.
//   ce_reduce_kernel      (cross_entropy_common.cuh) adds the row losses in double in a fixed order.
// f32 throughout; exp/log are the fast-math forms (~2 ulp): loss and dx agree with the CPU to ~1e-6
// relative, probs in bf16 to one bf16 rounding.
#include "qn/ops/cross_entropy_online.h"
#include "qn/tensor.h"
#include "cross_entropy_common.cuh"
#include "xf_common.cuh"

namespace qn {
namespace cuda {
namespace {

constexpr int kThreads = 256;

template <typename P>
__global__ void __launch_bounds__(kThreads)
    online_chunk_kernel(const float* __restrict__ z, P* __restrict__ probs, float* __restrict__ acc,
                        const int* __restrict__ labels, float* row_max, float* row_sum, float* target_logit,
                        long long n, long long vc, long long h, long long v0, long long vocab, int ignore_index) {
  __shared__ float scratch[33];
  const bool first = v0 == 0;
  for (long long r = blockIdx.x; r < n; r += gridDim.x) {
    const float* zr = z + r * vc;
    P* pr = probs ? probs + r * vc : nullptr;
    float* ar = acc ? acc + r * h : nullptr;
    const int y = labels[r];
    if (ignored(y, ignore_index, vocab)) {  // the same branch for the whole block
      if (first) {
        if (threadIdx.x == 0) row_max[r] = -INFINITY, row_sum[r] = 0.f, target_logit[r] = 0.f;
        if (ar)
          for (long long k = threadIdx.x; k < h; k += kThreads) ar[k] = 0.f;
      }
      if (pr)
        for (long long j = threadIdx.x; j < vc; j += kThreads) pr[j] = xf::from_f32<P>(0.f);
      continue;
    }
    const float m_old = first ? -INFINITY : row_max[r];
    const float s_old = first ? 0.f : row_sum[r];
    float mx = m_old;
    for (long long j = threadIdx.x; j < vc; j += kThreads) mx = fmaxf(mx, zr[j]);
    const float m = xf::block_max(mx, scratch);
    float s = 0.f;
    for (long long j = threadIdx.x; j < vc; j += kThreads) {
      const float e = __expf(zr[j] - m);
      s += e;
      if (pr) pr[j] = xf::from_f32<P>(e);
    }
    s = xf::block_sum(s, scratch);
    const float scale = first ? 0.f : __expf(m_old - m);
    if (threadIdx.x == 0) {
      row_sum[r] = s_old * scale + s;
      row_max[r] = m;
      if (first) target_logit[r] = 0.f;
      if (y >= v0 && y < v0 + vc) target_logit[r] = zr[y - v0];
    }
    if (ar) {
      if (first)
        for (long long k = threadIdx.x; k < h; k += kThreads) ar[k] = 0.f;
      else if (scale != 1.f)
        for (long long k = threadIdx.x; k < h; k += kThreads) ar[k] *= scale;
    }
  }
}

template <typename W, typename D>
__global__ void __launch_bounds__(kThreads)
    online_finish_kernel(const int* __restrict__ labels, const float* __restrict__ row_max,
                         const float* __restrict__ row_sum, const float* __restrict__ target_logit,
                         float* __restrict__ row_loss, const float* __restrict__ acc, const W* __restrict__ weight,
                         D* __restrict__ dx, const int* __restrict__ rows, long long n, long long h, long long m_rows,
                         long long vocab, int ignore_index, float grad_scale) {
  for (long long i = blockIdx.x; i < n; i += gridDim.x) {
    const int y = labels[i];
    const bool skip = ignored(y, ignore_index, vocab);
    const float s = row_sum[i];
    if (threadIdx.x == 0) row_loss[i] = skip ? 0.f : row_max[i] + __logf(s) - target_logit[i];
    if (!acc) continue;
    const long long dst = rows ? rows[i] : i;
    if (dst < 0 || dst >= m_rows) continue;
    D* dr = dx + dst * h;
    if (skip) {
      for (long long k = threadIdx.x; k < h; k += kThreads) dr[k] = xf::from_f32<D>(0.f);
      continue;
    }
    const float* ar = acc + i * h;
    const W* wr = weight + static_cast<long long>(y) * h;
    const float inv = 1.f / s;
    for (long long k = threadIdx.x; k < h; k += kThreads)
      dr[k] = xf::from_f32<D>((ar[k] * inv - xf::to_f32(wr[k])) * grad_scale);
  }
}

unsigned grid_for(int64_t n) { return static_cast<unsigned>(n < 65535 * 4 ? n : 65535 * 4); }

}  // namespace

void cross_entropy_online_chunk(Context& ctx, const CrossEntropyOnlineChunkArgs& a) {
  const CrossEntropyOnlineDims d = check_cross_entropy_online_chunk(a);
  if (d.n == 0) return;
  with_type(a.probs.defined() ? a.probs.dtype() : DType::F32, [&](auto ptag) {
    using P = decltype(ptag);
    online_chunk_kernel<P><<<grid_for(d.n), kThreads, 0, stream_of(ctx)>>>(
        a.logits.data<float>(), a.probs.defined() ? static_cast<P*>(a.probs.raw()) : nullptr,
        a.acc.defined() ? a.acc.data<float>() : nullptr, a.labels.data<int>(), a.row_max.data<float>(),
        a.row_sum.data<float>(), a.target_logit.data<float>(), d.n, d.vc, d.h, a.v0, a.vocab, a.ignore_index);
  });
  QN_CUDA_LAUNCHED("online_chunk_kernel", ctx);
}

void cross_entropy_online_finish(Context& ctx, const CrossEntropyOnlineFinishArgs& a) {
  const CrossEntropyOnlineDims d = check_cross_entropy_online_finish(a);
  if (d.n == 0) return;
  Tensor rl = a.row_loss.defined() ? a.row_loss : Tensor::empty(a.labels.ctx_ptr(), DType::F32, {d.n});
  const bool grad = a.acc.defined();
  with_type(grad ? a.weight.dtype() : DType::F32, [&](auto wtag) {
    with_type(grad ? a.dx.dtype() : DType::F32, [&](auto dtag) {
      using W = decltype(wtag);
      using D = decltype(dtag);
      online_finish_kernel<W, D><<<grid_for(d.n), kThreads, 0, stream_of(ctx)>>>(
          a.labels.data<int>(), a.row_max.data<float>(), a.row_sum.data<float>(), a.target_logit.data<float>(),
          rl.data<float>(), grad ? a.acc.data<float>() : nullptr,
          grad ? static_cast<const W*>(a.weight.raw()) : nullptr, grad ? static_cast<D*>(a.dx.raw()) : nullptr,
          a.rows.defined() ? a.rows.data<int>() : nullptr, d.n, d.h, d.m, a.vocab, a.ignore_index, a.grad_scale);
    });
  });
  QN_CUDA_LAUNCHED("online_finish_kernel", ctx);
  ce_reduce_kernel<<<1, kReduceThreads, 0, stream_of(ctx)>>>(rl.data<float>(), a.labels.data<int>(), d.n, a.vocab,
                                                              a.ignore_index, a.loss_sum.data<float>(),
                                                              a.count.data<int>());
  QN_CUDA_LAUNCHED("ce_reduce_kernel", ctx);
}

}  // namespace cuda
}  // namespace qn
