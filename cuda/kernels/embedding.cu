// CUDA embedding gather and scatter-add (see qn/ops/embedding.h).
//   embedding_kernel           one block per row (grid-stride over rows), threads over H;
//                              out-of-range ids write a zero row.
//   embedding_backward_kernel  grid-stride over N*H elements, f32 atomicAdd into dtable (the order
//                              of additions is not fixed; the CPU adds in token order).
#include "qn/ops/embedding.h"
#include "xf_common.cuh"

namespace qn {
namespace cuda {
namespace {

template <typename TT, typename TO>
__global__ void embedding_kernel(const TT* __restrict__ table, const int* __restrict__ ids, TO* __restrict__ out,
                                 long long n, long long v, long long h) {
  for (long long r = blockIdx.x; r < n; r += gridDim.x) {
    const long long id = ids[r];
    const bool ok = id >= 0 && id < v;
    const TT* src = table + (ok ? id : 0) * h;
    TO* dst = out + r * h;
    for (long long j = threadIdx.x; j < h; j += blockDim.x) dst[j] = xf::from_f32<TO>(ok ? xf::to_f32(src[j]) : 0.f);
  }
}

template <typename TD>
__global__ void embedding_backward_kernel(const int* __restrict__ ids, const TD* __restrict__ dout,
                                          float* __restrict__ dtable, long long n, long long v, long long h) {
  const long long total = n * h;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
    const long long id = ids[i / h];
    if (id >= 0 && id < v) atomicAdd(dtable + id * h + i % h, xf::to_f32(dout[i]));
  }
}

}  // namespace

void embedding(Context& ctx, const EmbeddingArgs& a) {
  const EmbeddingDims d = check_embedding(a);
  if (d.n == 0 || d.h == 0) return;
  with_type(a.table.dtype(), [&](auto tt) {
    with_type(a.out.dtype(), [&](auto to) {
      using TT = decltype(tt);
      using TO = decltype(to);
      const unsigned grid = static_cast<unsigned>(d.n < 65535 * 4 ? d.n : 65535 * 4);
      embedding_kernel<TT, TO><<<grid, 256, 0, stream_of(ctx)>>>(static_cast<const TT*>(a.table.raw()), a.ids.data<int>(),
                                                                 static_cast<TO*>(a.out.raw()), d.n, d.v, d.h);
    });
  });
  QN_CUDA_LAUNCHED("embedding_kernel", ctx);
}

void embedding_backward(Context& ctx, const EmbeddingBackwardArgs& a) {
  const EmbeddingDims d = check_embedding_backward(a);
  if (d.n == 0 || d.h == 0) return;
  with_type(a.dout.dtype(), [&](auto td) {
    using TD = decltype(td);
    embedding_backward_kernel<TD><<<blocks_for(d.n * d.h, 256), 256, 0, stream_of(ctx)>>>(
        a.ids.data<int>(), static_cast<const TD*>(a.dout.raw()), a.dtable.data<float>(), d.n, d.v, d.h);
  });
  QN_CUDA_LAUNCHED("embedding_backward_kernel", ctx);
}

}  // namespace cuda
}  // namespace qn
