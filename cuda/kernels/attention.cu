// CUDA attention forward / backward (see qn/ops/attention.h). bf16 tensors go to the tensor-core
// kernels of attention_wmma.cu when they apply (sm_80+, 16-byte aligned, D a multiple of 16 up to
// 128); f32 tensors, and bf16 otherwise, run the kernels below: FlashAttention-2 structure on CUDA
// cores (fp32 FMA; exact f32 math for f32 and bf16 storage alike), templated on the head dim D:
//   attn_fwd_kernel    block = 4 warps over 32 query rows of one (b, q head): lane = query row,
//                      warp w = dims [w*D/4, (w+1)*D/4). Key chunks of 16 rows of K and V go to
//                      shared memory (f32); each warp writes its partial dot products, one sync,
//                      then every thread finishes the scores of its row, runs the online softmax
//                      (exp2 on log2e-scaled scores) and updates its slice of the output.
//                      Writes out and lse (natural log; -inf and out = 0 for a row with no key).
//   attn_delta_kernel  delta = rowsum(dout * out), one warp per row.
//   attn_dq_kernel     same layout as forward: recomputes P = exp(S - lse) per key chunk and
//                      dS = P (dP - delta), accumulates dQ = scale dS K in registers.
//   attn_dkv_kernel    block = 32 keys of one (b, kv head) (lane = key, warp = dim slice); loops
//                      over the group's q heads and 16-row query chunks from the diagonal on,
//                      accumulating dV = P^T dO and dK = scale dS^T Q in registers.
// No T x T matrix, no atomics (dq and dk/dv by separate kernels: deterministic). Shared memory per
// block: 2 x 16 x D f32 tiles plus 4 x 16 x 32 (x2 in backward) partial sums: <= 33 KB at D = 128.
// Masked keys/queries: scores -inf -> p = 0 (exp2(-inf) = 0); a row whose lse is -inf has p = 0
// for every key, so it gets out = 0, dq = 0 and adds nothing to dk, dv. No NaN.
#include <atomic>
#include <cmath>
#include <type_traits>
#include "qn/ops/attention.h"
#include "qn/tensor.h"
#include "attention_common.cuh"
#include "xf_common.cuh"

namespace qn {
namespace cuda {
using namespace attn;
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kRows = 32;   // query rows (forward, dq) or keys (dkv) per block: one per lane
constexpr int kChunk = 16;  // keys (forward, dq) or queries (dkv) per shared-memory chunk

// Loads rows [r0, r0 + kChunk) of head `head` of a [B, T, H, D] tensor into dst[kChunk][D] as f32
// times `mul` (zeros past T).
template <typename T, int D>
__device__ __forceinline__ void load_chunk(float* dst, const T* src, int b, int r0, int head, int t, int heads, float mul) {
  for (int idx = threadIdx.x; idx < kChunk * D; idx += kThreads) {
    const int rr = idx / D, e = idx - rr * D, r = r0 + rr;
    dst[idx] = r < t ? mul * xf::to_f32(src[row_off(b, r, head, t, heads, D) + e]) : 0.f;
  }
}

// part1[w][c][lane] = dot of this thread's slice x1 with row c of tile1 (and likewise x2, tile2):
// the per-warp partial dot products of a chunk, summed over the 4 warps by the readers.
template <int D>
__device__ __forceinline__ void chunk_partials(const float* x1, const float* tile1, float (*part1)[32],
                                               const float* x2, const float* tile2, float (*part2)[32]) {
  constexpr int S = D / kWarps;
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
#pragma unroll 4
  for (int c = 0; c < kChunk; ++c) {
    float a1 = 0.f, a2 = 0.f;
#pragma unroll
    for (int e = 0; e < S; ++e) {
      a1 += x1[e] * tile1[c * D + w * S + e];
      a2 += x2[e] * tile2[c * D + w * S + e];
    }
    part1[c][lane] = a1;
    part2[c][lane] = a2;
  }
}

template <typename T, int D>
__global__ void __launch_bounds__(kThreads) attn_fwd_kernel(Params p) {
  constexpr int S = D / kWarps;
  __shared__ float ks[kChunk * D], vs[kChunk * D];
  __shared__ float part[kWarps][kChunk][32];
  __shared__ bool keep[kChunk];
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  const int b = blockIdx.z, h = blockIdx.y, i0 = blockIdx.x * kRows, i = i0 + lane, g = h / p.group;
  const bool row_ok = i < p.t;
  const T* q = static_cast<const T*>(p.q);
  float qr[S], o[S];
  const float qmul = p.scale * kLog2e;  // scores in log2 units
#pragma unroll
  for (int e = 0; e < S; ++e) {
    qr[e] = row_ok ? qmul * xf::to_f32(q[row_off(b, i, h, p.t, p.hq, D) + w * S + e]) : 0.f;
    o[e] = 0.f;
  }
  float m = -INFINITY, l = 0.f;
  const int jend = p.causal ? min(p.t, i0 + kRows) : p.t;
  for (int j0 = 0; j0 < jend; j0 += kChunk) {
    __syncthreads();  // the previous chunk is no longer read
    load_chunk<T, D>(ks, static_cast<const T*>(p.k), b, j0, g, p.t, p.hkv, 1.f);
    load_chunk<T, D>(vs, static_cast<const T*>(p.v), b, j0, g, p.t, p.hkv, 1.f);
    if (threadIdx.x < kChunk) keep[threadIdx.x] = key_kept(p, b, j0 + threadIdx.x);
    __syncthreads();
#pragma unroll 4
    for (int jj = 0; jj < kChunk; ++jj) {
      float acc = 0.f;
#pragma unroll
      for (int e = 0; e < S; ++e) acc += qr[e] * ks[jj * D + w * S + e];
      part[w][jj][lane] = acc;
    }
    __syncthreads();
    float s[kChunk];
    float mx = -INFINITY;
#pragma unroll
    for (int jj = 0; jj < kChunk; ++jj) {
      const int j = j0 + jj;
      const bool ok = keep[jj] && (!p.causal || j <= i);
      s[jj] = ok ? part[0][jj][lane] + part[1][jj][lane] + part[2][jj][lane] + part[3][jj][lane] : -INFINITY;
      mx = fmaxf(mx, s[jj]);
    }
    const float mnew = fmaxf(m, mx);
    if (mnew == -INFINITY) continue;  // nothing allowed yet for this row
    const float alpha = exp2f(m - mnew);
    l *= alpha;
#pragma unroll
    for (int e = 0; e < S; ++e) o[e] *= alpha;
#pragma unroll
    for (int jj = 0; jj < kChunk; ++jj) {
      const float pj = exp2f(s[jj] - mnew);
      l += pj;
#pragma unroll
      for (int e = 0; e < S; ++e) o[e] += pj * vs[jj * D + w * S + e];
    }
    m = mnew;
  }
  if (!row_ok) return;
  const float inv = l > 0.f ? 1.f / l : 0.f;
  T* out = static_cast<T*>(p.out) + row_off(b, i, h, p.t, p.hq, D) + w * S;
#pragma unroll
  for (int e = 0; e < S; ++e) out[e] = xf::from_f32<T>(o[e] * inv);
  if (p.lse && w == 0) p.lse[((long long)b * p.hq + h) * p.t + i] = l > 0.f ? (m + log2f(l)) * kLn2 : -INFINITY;
}

// delta[b, h, i] = dot(dout[b, i, h], out[b, i, h]): one warp per row.
template <typename T>
__global__ void attn_delta_kernel(Params p, int d) {
  const long long rows = (long long)p.b * p.t * p.hq;
  const int lane = threadIdx.x & 31;
  for (long long r = (blockIdx.x * (long long)blockDim.x + threadIdx.x) / 32; r < rows;
       r += (long long)gridDim.x * blockDim.x / 32) {
    const T* o = static_cast<const T*>(p.out) + r * d;
    const T* g = static_cast<const T*>(p.dout) + r * d;
    float s = 0.f;
    for (int e = lane; e < d; e += 32) s += xf::to_f32(o[e]) * xf::to_f32(g[e]);
    s = xf::warp_sum(s);
    // r = (b * T + i) * Hq + h  ->  delta index (b * Hq + h) * T + i
    const long long h = r % p.hq, bi = r / p.hq, i = bi % p.t, b = bi / p.t;
    if (lane == 0) p.delta[(b * p.hq + h) * p.t + i] = s;
  }
}

template <typename T, int D>
__global__ void __launch_bounds__(kThreads) attn_dq_kernel(Params p) {
  constexpr int S = D / kWarps;
  __shared__ float ks[kChunk * D], vs[kChunk * D];
  __shared__ float part_s[kWarps][kChunk][32], part_p[kWarps][kChunk][32];
  __shared__ bool keep[kChunk];
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  const int b = blockIdx.z, h = blockIdx.y, i0 = blockIdx.x * kRows, i = i0 + lane, g = h / p.group;
  const bool row_ok = i < p.t;
  const float qmul = p.scale * kLog2e;
  float qr[S], dor[S], dq[S];
  const long long off = row_off(b, row_ok ? i : 0, h, p.t, p.hq, D) + w * S;
#pragma unroll
  for (int e = 0; e < S; ++e) {
    qr[e] = row_ok ? qmul * xf::to_f32(static_cast<const T*>(p.q)[off + e]) : 0.f;
    dor[e] = row_ok ? xf::to_f32(static_cast<const T*>(p.dout)[off + e]) : 0.f;
    dq[e] = 0.f;
  }
  const long long li = ((long long)b * p.hq + h) * p.t + i;
  const float lse2 = row_ok ? p.lse[li] * kLog2e : -INFINITY;  // -inf: fully masked row
  const float delta = row_ok ? p.delta[li] : 0.f;
  const int jend = p.causal ? min(p.t, i0 + kRows) : p.t;
  for (int j0 = 0; j0 < jend; j0 += kChunk) {
    __syncthreads();
    load_chunk<T, D>(ks, static_cast<const T*>(p.k), b, j0, g, p.t, p.hkv, 1.f);
    load_chunk<T, D>(vs, static_cast<const T*>(p.v), b, j0, g, p.t, p.hkv, 1.f);
    if (threadIdx.x < kChunk) keep[threadIdx.x] = key_kept(p, b, j0 + threadIdx.x);
    __syncthreads();
    chunk_partials<D>(qr, ks, part_s[w], dor, vs, part_p[w]);
    __syncthreads();
    if (lse2 == -INFINITY) continue;
#pragma unroll 4
    for (int jj = 0; jj < kChunk; ++jj) {
      const int j = j0 + jj;
      if (!keep[jj] || (p.causal && j > i)) continue;
      const float s = part_s[0][jj][lane] + part_s[1][jj][lane] + part_s[2][jj][lane] + part_s[3][jj][lane];
      const float dp = part_p[0][jj][lane] + part_p[1][jj][lane] + part_p[2][jj][lane] + part_p[3][jj][lane];
      const float ds = exp2f(s - lse2) * (dp - delta);
#pragma unroll
      for (int e = 0; e < S; ++e) dq[e] += ds * ks[jj * D + w * S + e];
    }
  }
  if (!row_ok) return;
  T* out = static_cast<T*>(p.dq) + off;
#pragma unroll
  for (int e = 0; e < S; ++e) out[e] = xf::from_f32<T>(p.scale * dq[e]);
}

template <typename T, int D>
__global__ void __launch_bounds__(kThreads) attn_dkv_kernel(Params p) {
  constexpr int S = D / kWarps;
  __shared__ float qs[kChunk * D], dos[kChunk * D];
  __shared__ float part_s[kWarps][kChunk][32], part_p[kWarps][kChunk][32];
  __shared__ float lse2[kChunk], delta[kChunk];
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  const int b = blockIdx.z, g = blockIdx.y, j0 = blockIdx.x * kRows, j = j0 + lane;
  const bool key_ok = key_kept(p, b, j);  // false past T and for padding: p = 0 throughout
  const float qmul = p.scale * kLog2e;
  float kr[S], vr[S], dk[S], dv[S];
  const long long off = row_off(b, j < p.t ? j : 0, g, p.t, p.hkv, D) + w * S;
#pragma unroll
  for (int e = 0; e < S; ++e) {
    kr[e] = j < p.t ? xf::to_f32(static_cast<const T*>(p.k)[off + e]) : 0.f;
    vr[e] = j < p.t ? xf::to_f32(static_cast<const T*>(p.v)[off + e]) : 0.f;
    dk[e] = dv[e] = 0.f;
  }
  for (int h = g * p.group; h < (g + 1) * p.group; ++h) {
    for (int i0 = p.causal ? j0 : 0; i0 < p.t; i0 += kChunk) {
      __syncthreads();
      load_chunk<T, D>(qs, static_cast<const T*>(p.q), b, i0, h, p.t, p.hq, qmul);
      load_chunk<T, D>(dos, static_cast<const T*>(p.dout), b, i0, h, p.t, p.hq, 1.f);
      load_row_stats(p, b, h, i0, kChunk, lse2, delta);
      __syncthreads();
      chunk_partials<D>(kr, qs, part_s[w], vr, dos, part_p[w]);
      __syncthreads();
      if (!key_ok) continue;
#pragma unroll 4
      for (int ii = 0; ii < kChunk; ++ii) {
        const int i = i0 + ii;
        if (lse2[ii] == -INFINITY || (p.causal && j > i)) continue;
        const float s = part_s[0][ii][lane] + part_s[1][ii][lane] + part_s[2][ii][lane] + part_s[3][ii][lane];
        const float dp = part_p[0][ii][lane] + part_p[1][ii][lane] + part_p[2][ii][lane] + part_p[3][ii][lane];
        const float pij = exp2f(s - lse2[ii]);
        const float ds = pij * (dp - delta[ii]);
#pragma unroll
        for (int e = 0; e < S; ++e) {
          dv[e] += pij * dos[ii * D + w * S + e];
          dk[e] += ds * qs[ii * D + w * S + e];
        }
      }
    }
  }
  if (j >= p.t) return;
  T* dkp = static_cast<T*>(p.dk) + off;
  T* dvp = static_cast<T*>(p.dv) + off;
#pragma unroll
  for (int e = 0; e < S; ++e) {
    dkp[e] = xf::from_f32<T>(dk[e] * kLn2);  // qs held scale * log2e * q
    dvp[e] = xf::from_f32<T>(dv[e]);
  }
}

// Calls f(std::integral_constant<int, D>) for the supported head dims.
template <typename F>
void with_head_dim(int64_t d, const char* op, F&& f) {
  switch (d) {
    case 16: f(std::integral_constant<int, 16>{}); break;
    case 32: f(std::integral_constant<int, 32>{}); break;
    case 64: f(std::integral_constant<int, 64>{}); break;
    case 80: f(std::integral_constant<int, 80>{}); break;
    case 96: f(std::integral_constant<int, 96>{}); break;
    case 128: f(std::integral_constant<int, 128>{}); break;
    default:
      fail(ErrorCode::Arg, std::string(op) + ": head_dim " + std::to_string(d) +
                               " is not supported on CUDA (16, 32, 64, 80, 96, 128)");
  }
}

Params make_params(const AttentionDims& d, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask,
                   bool causal) {
  QN_CHECK(d.b <= 65535 && d.hq <= 65535 && d.t < (1ll << 31) / 2, Arg, "attention: B, heads or T too large for CUDA");
  Params p{};
  p.q = q.raw();
  p.k = k.raw();
  p.v = v.raw();
  p.mask = mask.defined() ? mask.raw() : nullptr;
  p.mask_u8 = mask.defined() && mask.dtype() == DType::U8;
  p.b = (int)d.b, p.t = (int)d.t, p.hq = (int)d.hq, p.hkv = (int)d.hkv, p.group = (int)d.group();
  p.scale = d.scale;
  p.causal = causal;
  return p;
}

std::atomic<bool> g_cuda_core_only{false};

}  // namespace

// Testing hook: true keeps bf16 on the CUDA-core kernels (as on devices without bf16 WMMA).
void attention_set_cuda_core_only(bool on) { g_cuda_core_only = on; }

void attention_forward(Context& ctx, const AttentionForwardArgs& a) {
  const AttentionDims d = check_attention_forward(a);
  Params p = make_params(d, a.q, a.k, a.v, a.mask, a.causal);
  if (d.b == 0 || d.t == 0 || d.hq == 0) return;
  p.out = a.out.raw();
  p.lse = a.lse.defined() ? a.lse.data<float>() : nullptr;
  with_head_dim(d.d, "attention_forward", [](auto) {});
  if (a.q.dtype() == DType::BF16 && !g_cuda_core_only && forward_wmma(p, (int)d.d, stream_of(ctx), device_of(ctx))) return;
  const dim3 grid((unsigned)((d.t + kRows - 1) / kRows), (unsigned)d.hq, (unsigned)d.b);
  with_head_dim(d.d, "attention_forward", [&](auto dc) {
    constexpr int D = decltype(dc)::value;
    with_type(a.q.dtype(), [&](auto tt) {
      using T = decltype(tt);
      attn_fwd_kernel<T, D><<<grid, kThreads, 0, stream_of(ctx)>>>(p);
    });
  });
  QN_CUDA_LAUNCHED("attn_fwd_kernel", ctx);
}

void attention_backward(Context& ctx, const AttentionBackwardArgs& a) {
  const AttentionDims d = check_attention_backward(a);
  Params p = make_params(d, a.q, a.k, a.v, a.mask, a.causal);
  if (d.b == 0 || d.t == 0 || d.hq == 0) return;
  with_head_dim(d.d, "attention_backward", [](auto) {});
  p.out = a.out.raw();
  p.lse = a.lse.data<float>();
  p.dout = a.dout.raw();
  p.dq = a.dq.raw();
  p.dk = a.dk.raw();
  p.dv = a.dv.raw();
  Tensor delta = Tensor::empty(a.q.ctx_ptr(), DType::F32, {d.b, d.hq, d.t});
  p.delta = delta.data<float>();
  // The WMMA backward with GQA runs one dkv block per q head and sums the group afterwards: f32
  // partials, allocated only when the WMMA kernels apply (they live until the launches are queued;
  // the stream-ordered pool frees them after the kernels).
  Tensor dk_part, dv_part;
  auto partials = [&](Params& q) {
    dk_part = Tensor::empty(a.q.ctx_ptr(), DType::F32, {d.b, d.t, d.hq, d.d});
    dv_part = Tensor::empty(a.q.ctx_ptr(), DType::F32, {d.b, d.t, d.hq, d.d});
    q.dk_part = dk_part.data<float>();
    q.dv_part = dv_part.data<float>();
  };
  const bool core_only = g_cuda_core_only;
  const unsigned tiles = (unsigned)((d.t + kRows - 1) / kRows);
  with_type(a.q.dtype(), [&](auto tt) {
    using T = decltype(tt);
    attn_delta_kernel<T><<<blocks_for(d.b * d.t * d.hq * 32, 256), 256, 0, stream_of(ctx)>>>(p, (int)d.d);
    QN_CUDA_LAUNCHED("attn_delta_kernel", ctx);
    if (std::is_same<T, xf::bf16>::value && !core_only && backward_wmma(p, (int)d.d, stream_of(ctx), device_of(ctx), partials)) return;
    with_head_dim(d.d, "attention_backward", [&](auto dc) {
      constexpr int D = decltype(dc)::value;
      attn_dq_kernel<T, D><<<dim3(tiles, (unsigned)d.hq, (unsigned)d.b), kThreads, 0, stream_of(ctx)>>>(p);
      QN_CUDA_LAUNCHED("attn_dq_kernel", ctx);
      attn_dkv_kernel<T, D><<<dim3(tiles, (unsigned)d.hkv, (unsigned)d.b), kThreads, 0, stream_of(ctx)>>>(p);
      QN_CUDA_LAUNCHED("attn_dkv_kernel", ctx);
    });
  });
}

}  // namespace cuda
}  // namespace qn
