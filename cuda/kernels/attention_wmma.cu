// bf16 tensor-core attention kernels (WMMA 16x16x16, fp32 accumulate), FlashAttention-2 structure,
// used by attention.cu for bf16 tensors when D is a multiple of 16 up to 128 (see
// attention_common.cuh). Blocks of 4 warps; tiles of 64 queries x 64 keys; each warp owns 16 rows.
//   attn_fwd_wmma_kernel  per (b, q head, 64 queries): S = Q K^T per warp (fragments stored to
//                         shared f32), online softmax in f32 (2 lanes per row, exp2 of
//                         log2e-scaled scores), P rounded to bf16 (the row sum l adds the rounded
//                         values, so out is an exact weighted mean of V under the stored P),
//                         O (shared f32) rescaled per row, then O += P V on fragments.
//   attn_dq_wmma_kernel   per (b, q head, 64 queries): per key tile S and dP = dO V^T, then
//                         dS = P (dP - delta) * scale in bf16, dQ += dS K held in fragments.
//   attn_dkv_wmma_kernel  per (b, q head, 64 keys): over the query tiles from the diagonal on,
//                         S^T = K Q^T and dP^T = V dO^T (so every warp owns 16 keys and needs no
//                         block sync), P^T and dS^T in bf16, dV += P^T dO and dK += dS^T Q held in
//                         fragments. With GQA (group > 1) each block writes its q head's f32
//                         partials and attn_dkv_reduce_kernel sums each group into dk, dv (in head
//                         order, then one rounding): a block per (kv head, key tile) looping over
//                         the group would leave most SMs idle (Qwen2.5-3B: 2 kv heads, 32 tiles
//                         at T = 2048 -> 64 blocks on 132 SMs, each doing 8 heads' work).
// Grids are (heads x B, tiles): the block order walks tiles slowest, so with a causal mask the
// longest tiles (last query tiles forward and dq, first key tiles dkv) start first on every head
// of every batch row (blockIdx.x = b * heads + head).
// Shared memory (dynamic, opt-in above 48 KB): at D = 128 about 111 KB (forward, dq) and 121 KB
// (dkv), within sm_80's 163 KB and sm_90's 227 KB. Tiles are padded (+8 bf16, +4 f32 per row)
// against bank conflicts; every WMMA pointer is 32-byte aligned (row blocks of 16, column blocks
// of 16). Masking as the CUDA-core kernels: masked scores give p = 0, fully masked rows (lse = -inf)
// give out = 0 and no gradient.
#include <cstdint>
#include <cstdlib>
#include <mma.h>
#include "attention_common.cuh"

namespace qn {
namespace cuda {
namespace attn {
namespace {

using bf16 = __nv_bfloat16;
constexpr int kThreads = 128;
constexpr int kTile = 64;

template <int D>
struct Cfg {
  static_assert(D % 16 == 0 && D >= 16 && D <= 128, "WMMA attention: D must be a multiple of 16 up to 128");
  static constexpr int LDK = D + 8;     // bf16 [64][D] tiles (q, k, v, dout)
  static constexpr int LDS = 64 + 4;    // f32 [64][64] scores
  static constexpr int LDP = 64 + 8;    // bf16 [64][64] probabilities
  static constexpr int LDO = D + 4;     // f32 [64][D] output / staging
  static constexpr int TILE = kTile * LDK * 2;
  static constexpr int SF = kTile * LDS * 4;
  static constexpr int PB = kTile * LDP * 2;
  static constexpr int OF = kTile * LDO * 4;
  static constexpr int VEC = 4 * kTile * 4;  // four [64] f32/i32 vectors
  static constexpr size_t fwd_bytes = 3 * TILE + SF + PB + OF + VEC;
  static constexpr size_t dq_bytes = 4 * TILE + 2 * SF + PB + VEC;
  static constexpr size_t dkv_bytes = 4 * TILE + 2 * SF + 2 * PB + VEC;
  static_assert(2 * SF >= OF, "dq/dkv staging reuses the two score tiles");
};

// Rows [r0, r0 + 64) of head `head` of a bf16 [B, T, H, D] tensor into dst[64][LDK] (16-byte
// loads; zeros past T).
template <int D>
__device__ __forceinline__ void load_tile(bf16* dst, const void* src_v, int b, int r0, int head, int t, int heads) {
  constexpr int V = D / 8;
  const bf16* src = static_cast<const bf16*>(src_v);
  for (int idx = threadIdx.x; idx < kTile * V; idx += kThreads) {
    const int r = idx / V, c = idx - r * V, row = r0 + r;
    uint4 val = make_uint4(0u, 0u, 0u, 0u);
    if (row < t) val = *reinterpret_cast<const uint4*>(src + row_off(b, row, head, t, heads, D) + c * 8);
    *reinterpret_cast<uint4*>(dst + r * Cfg<D>::LDK + c * 8) = val;
  }
}

// The query tile of a forward / dq block (grid (heads, tiles, B)): with a causal mask the last
// tiles, which see the most keys, get the lowest block indices so they start first.
__device__ __forceinline__ int query_tile(const Params& p) {
  return p.causal ? (int)(gridDim.y - 1 - blockIdx.y) : (int)blockIdx.y;
}

using namespace nvcuda;
using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major>;
using FragBr = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major>;
using FragBc = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major>;
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

// out[16][64] (f32, ld LDS) = A[16][D] (rows of a, ld LDK) times B^T, B = rows of b [64][D] (ld LDK).
template <int D>
__device__ __forceinline__ void rows_times_bt(float* out, const bf16* a, const bf16* b) {
#pragma unroll
  for (int cb = 0; cb < 4; ++cb) {
    FragC acc;
    wmma::fill_fragment(acc, 0.f);
#pragma unroll
    for (int k0 = 0; k0 < D; k0 += 16) {
      FragA fa;
      FragBc fb;
      wmma::load_matrix_sync(fa, a + k0, Cfg<D>::LDK);
      wmma::load_matrix_sync(fb, b + 16 * cb * Cfg<D>::LDK + k0, Cfg<D>::LDK);
      wmma::mma_sync(acc, fa, fb, acc);
    }
    wmma::store_matrix_sync(out + 16 * cb, acc, Cfg<D>::LDS, wmma::mem_row_major);
  }
}

// acc[cb] += P[16][64] (bf16, ld LDP) times M[64][D] (bf16, ld LDK), for the D/16 column blocks.
template <int D>
__device__ __forceinline__ void acc_p_times_m(FragC* acc, const bf16* pm, const bf16* m) {
#pragma unroll
  for (int k0 = 0; k0 < kTile; k0 += 16) {
    FragA fa;
    wmma::load_matrix_sync(fa, pm + k0, Cfg<D>::LDP);
#pragma unroll
    for (int cb = 0; cb < D / 16; ++cb) {
      FragBr fb;
      wmma::load_matrix_sync(fb, m + k0 * Cfg<D>::LDK + 16 * cb, Cfg<D>::LDK);
      wmma::mma_sync(acc[cb], fa, fb, acc[cb]);
    }
  }
}

__device__ __forceinline__ void store_elem(bf16* d, float v) { *d = __float2bfloat16_rn(v); }
__device__ __forceinline__ void store_elem(float* d, float v) { *d = v; }

// Writes the warp's 16 x D fragments (staged through stage[64][LDO] f32) to rows r0 + 16 w of a
// [B, T, H, D] tensor of TO (bf16 or f32), rows < T, times mul.
template <int D, typename TO>
__device__ __forceinline__ void store_rows(const FragC* acc, float* stage, TO* dst, int b, int r0, int head, int t,
                                           int heads, float mul) {
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  float* st = stage + 16 * w * Cfg<D>::LDO;
#pragma unroll
  for (int cb = 0; cb < D / 16; ++cb) wmma::store_matrix_sync(st + 16 * cb, acc[cb], Cfg<D>::LDO, wmma::mem_row_major);
  __syncwarp();
  for (int idx = lane; idx < 16 * D; idx += 32) {
    const int rr = idx / D, e = idx - rr * D, row = r0 + 16 * w + rr;
    if (row < t) store_elem(dst + row_off(b, row, head, t, heads, D) + e, mul * st[rr * Cfg<D>::LDO + e]);
  }
  __syncwarp();
}

template <int D>
__global__ void __launch_bounds__(kThreads) attn_fwd_wmma_kernel(Params p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  using C = Cfg<D>;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* qs = reinterpret_cast<bf16*>(smem);
  bf16* ks = reinterpret_cast<bf16*>(smem + C::TILE);
  bf16* vs = reinterpret_cast<bf16*>(smem + 2 * C::TILE);
  float* ss = reinterpret_cast<float*>(smem + 3 * C::TILE);
  bf16* ps = reinterpret_cast<bf16*>(smem + 3 * C::TILE + C::SF);
  float* os = reinterpret_cast<float*>(smem + 3 * C::TILE + C::SF + C::PB);
  float* m_s = reinterpret_cast<float*>(smem + 3 * C::TILE + C::SF + C::PB + C::OF);
  float* l_s = m_s + kTile;
  float* a_s = l_s + kTile;
  int* keep_s = reinterpret_cast<int*>(a_s + kTile);
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  const int b = blockIdx.x / p.hq, h = blockIdx.x % p.hq, i0 = query_tile(p) * kTile, g = h / p.group;
  const float sl2 = p.scale * kLog2e;
  load_tile<D>(qs, p.q, b, i0, h, p.t, p.hq);
  for (int idx = threadIdx.x; idx < kTile * C::LDO; idx += kThreads) os[idx] = 0.f;
  if (threadIdx.x < kTile) m_s[threadIdx.x] = -INFINITY, l_s[threadIdx.x] = 0.f;
  const int r = 16 * w + (lane >> 1), half = lane & 1, i = i0 + r;  // softmax: two lanes per row
  const int jend = p.causal ? min(p.t, i0 + kTile) : p.t;
  for (int j0 = 0; j0 < jend; j0 += kTile) {
    __syncthreads();  // previous K/V no longer read (and the initialization above is visible)
    load_tile<D>(ks, p.k, b, j0, g, p.t, p.hkv);
    load_tile<D>(vs, p.v, b, j0, g, p.t, p.hkv);
    if (threadIdx.x < kTile) keep_s[threadIdx.x] = key_kept(p, b, j0 + threadIdx.x);
    __syncthreads();
    rows_times_bt<D>(ss + 16 * w * C::LDS, qs + 16 * w * C::LDK, ks);
    __syncwarp();
    const float m_old = m_s[r];
    float* srow = ss + r * C::LDS + 32 * half;
    float mx = -INFINITY;
    for (int c = 0; c < 32; ++c) {
      const int jj = 32 * half + c, j = j0 + jj;
      const float sv = keep_s[jj] && (!p.causal || j <= i) ? srow[c] * sl2 : -INFINITY;
      srow[c] = sv;
      mx = fmaxf(mx, sv);
    }
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    const float m_new = fmaxf(m_old, mx);
    float alpha = 1.f, sum = 0.f;
    bf16* prow = ps + r * C::LDP + 32 * half;
    if (m_new == -INFINITY) {  // nothing allowed yet in this row
      for (int c = 0; c < 32; ++c) prow[c] = __float2bfloat16_rn(0.f);
    } else {
      alpha = exp2f(m_old - m_new);
      for (int c = 0; c < 32; ++c) {
        const bf16 pb = __float2bfloat16_rn(exp2f(srow[c] - m_new));
        prow[c] = pb;
        sum += __bfloat162float(pb);
      }
    }
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    __syncwarp();  // both lanes of a row have read m_s[r]
    if (half == 0) {
      m_s[r] = m_new;
      l_s[r] = l_s[r] * alpha + sum;
      a_s[r] = alpha;
    }
    __syncwarp();
    for (int idx = lane; idx < 16 * D; idx += 32) {
      const int rr = 16 * w + idx / D;
      os[rr * C::LDO + idx % D] *= a_s[rr];
    }
    __syncwarp();
    FragC acc[D / 16];
#pragma unroll
    for (int cb = 0; cb < D / 16; ++cb)
      wmma::load_matrix_sync(acc[cb], os + 16 * w * C::LDO + 16 * cb, C::LDO, wmma::mem_row_major);
    acc_p_times_m<D>(acc, ps + 16 * w * C::LDP, vs);
#pragma unroll
    for (int cb = 0; cb < D / 16; ++cb)
      wmma::store_matrix_sync(os + 16 * w * C::LDO + 16 * cb, acc[cb], C::LDO, wmma::mem_row_major);
  }
  __syncwarp();
  bf16* out = static_cast<bf16*>(p.out);
  for (int idx = lane; idx < 16 * D; idx += 32) {
    const int rr = 16 * w + idx / D, e = idx % D, ii = i0 + rr;
    if (ii < p.t) {
      const float l = l_s[rr];
      out[row_off(b, ii, h, p.t, p.hq, D) + e] = __float2bfloat16_rn(l > 0.f ? os[rr * C::LDO + e] / l : 0.f);
    }
  }
  if (p.lse && lane < 16) {
    const int rr = 16 * w + lane, ii = i0 + rr;
    const float l = l_s[rr];
    if (ii < p.t) p.lse[((long long)b * p.hq + h) * p.t + ii] = l > 0.f ? (m_s[rr] + log2f(l)) * kLn2 : -INFINITY;
  }
#else
  __trap();  // compiled for < sm_80: prepare() refuses such a build, so this never runs
#endif
}

template <int D>
__global__ void __launch_bounds__(kThreads) attn_dq_wmma_kernel(Params p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  using C = Cfg<D>;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* qs = reinterpret_cast<bf16*>(smem);
  bf16* dos = reinterpret_cast<bf16*>(smem + C::TILE);
  bf16* ks = reinterpret_cast<bf16*>(smem + 2 * C::TILE);
  bf16* vs = reinterpret_cast<bf16*>(smem + 3 * C::TILE);
  float* ss = reinterpret_cast<float*>(smem + 4 * C::TILE);
  float* dps = reinterpret_cast<float*>(smem + 4 * C::TILE + C::SF);
  bf16* dss = reinterpret_cast<bf16*>(smem + 4 * C::TILE + 2 * C::SF);
  float* lse2_s = reinterpret_cast<float*>(smem + 4 * C::TILE + 2 * C::SF + C::PB);
  float* delta_s = lse2_s + kTile;
  int* keep_s = reinterpret_cast<int*>(delta_s + kTile);
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  const int b = blockIdx.x / p.hq, h = blockIdx.x % p.hq, i0 = query_tile(p) * kTile, g = h / p.group;
  const float sl2 = p.scale * kLog2e;
  load_tile<D>(qs, p.q, b, i0, h, p.t, p.hq);
  load_tile<D>(dos, p.dout, b, i0, h, p.t, p.hq);
  load_row_stats(p, b, h, i0, kTile, lse2_s, delta_s);
  FragC dq[D / 16];
#pragma unroll
  for (int cb = 0; cb < D / 16; ++cb) wmma::fill_fragment(dq[cb], 0.f);
  const int r = 16 * w + (lane >> 1), half = lane & 1, i = i0 + r;
  const int jend = p.causal ? min(p.t, i0 + kTile) : p.t;
  for (int j0 = 0; j0 < jend; j0 += kTile) {
    __syncthreads();
    load_tile<D>(ks, p.k, b, j0, g, p.t, p.hkv);
    load_tile<D>(vs, p.v, b, j0, g, p.t, p.hkv);
    if (threadIdx.x < kTile) keep_s[threadIdx.x] = key_kept(p, b, j0 + threadIdx.x);
    __syncthreads();
    rows_times_bt<D>(ss + 16 * w * C::LDS, qs + 16 * w * C::LDK, ks);
    rows_times_bt<D>(dps + 16 * w * C::LDS, dos + 16 * w * C::LDK, vs);
    __syncwarp();
    const float l2 = lse2_s[r], dl = delta_s[r];
    for (int c = 0; c < 32; ++c) {
      const int jj = 32 * half + c, j = j0 + jj;
      const bool ok = keep_s[jj] && (!p.causal || j <= i) && l2 != -INFINITY;
      const float pv = ok ? exp2f(ss[r * C::LDS + jj] * sl2 - l2) : 0.f;
      dss[r * C::LDP + jj] = __float2bfloat16_rn(pv * (dps[r * C::LDS + jj] - dl) * p.scale);
    }
    __syncwarp();
    acc_p_times_m<D>(dq, dss + 16 * w * C::LDP, ks);
  }
  __syncthreads();  // the staging below overwrites other warps' score rows
  store_rows<D>(dq, ss, static_cast<bf16*>(p.dq), b, i0, h, p.t, p.hq, 1.f);
#else
  __trap();  // compiled for < sm_80: prepare() refuses such a build, so this never runs
#endif
}

template <int D>
__global__ void __launch_bounds__(kThreads) attn_dkv_wmma_kernel(Params p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  using C = Cfg<D>;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* ks = reinterpret_cast<bf16*>(smem);
  bf16* vs = reinterpret_cast<bf16*>(smem + C::TILE);
  bf16* qs = reinterpret_cast<bf16*>(smem + 2 * C::TILE);
  bf16* dos = reinterpret_cast<bf16*>(smem + 3 * C::TILE);
  float* sts = reinterpret_cast<float*>(smem + 4 * C::TILE);            // S^T [keys][queries]
  float* dpts = reinterpret_cast<float*>(smem + 4 * C::TILE + C::SF);   // dP^T
  bf16* pts = reinterpret_cast<bf16*>(smem + 4 * C::TILE + 2 * C::SF);  // P^T
  bf16* dsts = reinterpret_cast<bf16*>(smem + 4 * C::TILE + 2 * C::SF + C::PB);
  float* lse2_s = reinterpret_cast<float*>(smem + 4 * C::TILE + 2 * C::SF + 2 * C::PB);
  float* delta_s = lse2_s + kTile;
  int* keep_s = reinterpret_cast<int*>(delta_s + kTile);
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  // blockIdx.x = b * heads + x, x: the q head (partials) or the kv head (group == 1 or no
  // partials: all its q heads)
  const bool part = p.dk_part != nullptr;
  const int nx = part ? p.hq : p.hkv, b = blockIdx.x / nx, x = blockIdx.x % nx;
  const int j0 = blockIdx.y * kTile, g = part ? x / p.group : x;
  const int h_begin = part ? x : g * p.group, h_end = part ? h_begin + 1 : h_begin + p.group;
  const float sl2 = p.scale * kLog2e;
  load_tile<D>(ks, p.k, b, j0, g, p.t, p.hkv);
  load_tile<D>(vs, p.v, b, j0, g, p.t, p.hkv);
  if (threadIdx.x < kTile) keep_s[threadIdx.x] = key_kept(p, b, j0 + threadIdx.x);
  FragC dk[D / 16], dv[D / 16];
#pragma unroll
  for (int cb = 0; cb < D / 16; ++cb) wmma::fill_fragment(dk[cb], 0.f), wmma::fill_fragment(dv[cb], 0.f);
  const int kr = 16 * w + (lane >> 1), half = lane & 1, j = j0 + kr;  // elementwise: two lanes per key
  for (int h = h_begin; h < h_end; ++h) {
    for (int i0 = p.causal ? j0 : 0; i0 < p.t; i0 += kTile) {
      __syncthreads();  // previous q/dout tiles no longer read (and K/V/keep are visible)
      load_tile<D>(qs, p.q, b, i0, h, p.t, p.hq);
      load_tile<D>(dos, p.dout, b, i0, h, p.t, p.hq);
      load_row_stats(p, b, h, i0, kTile, lse2_s, delta_s);
      __syncthreads();
      rows_times_bt<D>(sts + 16 * w * C::LDS, ks + 16 * w * C::LDK, qs);
      rows_times_bt<D>(dpts + 16 * w * C::LDS, vs + 16 * w * C::LDK, dos);
      __syncwarp();
      const bool key_ok = keep_s[kr] != 0;
      for (int c = 0; c < 32; ++c) {
        const int qc = 32 * half + c, ii = i0 + qc;
        const float l2 = lse2_s[qc];
        const bool ok = key_ok && (!p.causal || j <= ii) && l2 != -INFINITY;
        const float pv = ok ? exp2f(sts[kr * C::LDS + qc] * sl2 - l2) : 0.f;
        pts[kr * C::LDP + qc] = __float2bfloat16_rn(pv);
        dsts[kr * C::LDP + qc] = __float2bfloat16_rn(pv * (dpts[kr * C::LDS + qc] - delta_s[qc]) * p.scale);
      }
      __syncwarp();
      acc_p_times_m<D>(dv, pts + 16 * w * C::LDP, dos);
      acc_p_times_m<D>(dk, dsts + 16 * w * C::LDP, qs);
    }
  }
  __syncthreads();  // the staging below overwrites other warps' score rows
  if (part) {
    store_rows<D>(dk, sts, p.dk_part, b, j0, h_begin, p.t, p.hq, 1.f);
    store_rows<D>(dv, sts, p.dv_part, b, j0, h_begin, p.t, p.hq, 1.f);
  } else {
    store_rows<D>(dk, sts, static_cast<bf16*>(p.dk), b, j0, g, p.t, p.hkv, 1.f);
    store_rows<D>(dv, sts, static_cast<bf16*>(p.dv), b, j0, g, p.t, p.hkv, 1.f);
  }
#else
  __trap();  // compiled for < sm_80: prepare() refuses such a build, so this never runs
#endif
}

// dk[b, t, g, :] = bf16(sum over the group's q heads h of dk_part[b, t, h, :]), same for dv;
// one thread per output element.
__global__ void attn_dkv_reduce_kernel(Params p, int d) {
  const long long n = (long long)p.b * p.t * p.hkv * d;
  for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < n; idx += (long long)gridDim.x * blockDim.x) {
    const int e = (int)(idx % d);
    const long long rest = idx / d;
    const int g = (int)(rest % p.hkv);
    const long long bt = rest / p.hkv;
    const long long base = (bt * p.hq + (long long)g * p.group) * d + e;
    float sk = 0.f, sv = 0.f;
    for (int k = 0; k < p.group; ++k) {
      sk += p.dk_part[base + (long long)k * d];
      sv += p.dv_part[base + (long long)k * d];
    }
    static_cast<bf16*>(p.dk)[idx] = __float2bfloat16_rn(sk);
    static_cast<bf16*>(p.dv)[idx] = __float2bfloat16_rn(sv);
  }
}

bool disabled_by_env() {
  static const bool v = [] {
    const char* e = std::getenv("QN_ATTENTION_NO_WMMA");
    return e && e[0] && e[0] != '0';
  }();
  return v;
}

bool aligned16(const void* ptr) { return ptr == nullptr || (reinterpret_cast<uintptr_t>(ptr) & 15u) == 0; }

// True when the device runs bf16 WMMA (sm_80+), the kernel was compiled for it, and it grants
// `bytes` of dynamic shared memory to the kernel (raising its limit when above the default 48 KB).
template <typename K>
bool prepare(K kernel, size_t bytes, int device) {
  int major = 0, optin = 0;
  check(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device), "cudaDeviceGetAttribute", device);
  check(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device), "cudaDeviceGetAttribute", device);
  if (major < 8 || bytes > static_cast<size_t>(optin)) return false;
  // The kernel bodies exist only in code compiled for sm_80+ (a build for older architectures
  // JIT-compiles an empty body from its PTX): refuse those so the CUDA-core kernels run instead.
  cudaFuncAttributes attr;
  check(cudaFuncGetAttributes(&attr, kernel), "cudaFuncGetAttributes", device);
  if (attr.ptxVersion < 80) return false;
  check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)),
        "cudaFuncSetAttribute", device);
  return true;
}

template <typename F>
bool with_wmma_dim(int d, F&& f) {
  switch (d) {
    case 16: return f(std::integral_constant<int, 16>{});
    case 32: return f(std::integral_constant<int, 32>{});
    case 64: return f(std::integral_constant<int, 64>{});
    case 80: return f(std::integral_constant<int, 80>{});
    case 96: return f(std::integral_constant<int, 96>{});
    case 128: return f(std::integral_constant<int, 128>{});
    default: return false;
  }
}

bool usable(const Params& p, std::initializer_list<const void*> ptrs) {
  if (disabled_by_env()) return false;
  for (const void* ptr : ptrs)
    if (!aligned16(ptr)) return false;
  // gridDim.y holds the tiles (<= 65535: T up to 4M), gridDim.x heads x B (< 2^31); the CUDA-core
  // kernels take the rest.
  return p.t > 0 && p.b > 0 && p.hq > 0 && (p.t + kTile - 1) / kTile <= 65535 && (long long)p.hq * p.b < (1ll << 31);
}

}  // namespace

bool forward_wmma(const Params& p, int d, cudaStream_t stream, int device) {
  if (!usable(p, {p.q, p.k, p.v, p.out})) return false;
  return with_wmma_dim(d, [&](auto dc) {
    constexpr int D = decltype(dc)::value;
    const size_t bytes = Cfg<D>::fwd_bytes;
    if (!prepare(attn_fwd_wmma_kernel<D>, bytes, device)) return false;
    const dim3 grid((unsigned)p.hq * (unsigned)p.b, (unsigned)((p.t + kTile - 1) / kTile));
    attn_fwd_wmma_kernel<D><<<grid, kThreads, bytes, stream>>>(p);
    check_launch("attn_fwd_wmma_kernel", device);
    return true;
  });
}

bool backward_wmma(Params p, int d, cudaStream_t stream, int device, const std::function<void(Params&)>& partials) {
  if (!usable(p, {p.q, p.k, p.v, p.dout, p.dq, p.dk, p.dv})) return false;
  return with_wmma_dim(d, [&](auto dc) {
    constexpr int D = decltype(dc)::value;
    if (!prepare(attn_dq_wmma_kernel<D>, Cfg<D>::dq_bytes, device) ||
        !prepare(attn_dkv_wmma_kernel<D>, Cfg<D>::dkv_bytes, device))
      return false;
    const bool part = p.group > 1;
    if (part) partials(p);
    const unsigned tiles = (unsigned)((p.t + kTile - 1) / kTile);
    attn_dq_wmma_kernel<D><<<dim3((unsigned)p.hq * (unsigned)p.b, tiles), kThreads, Cfg<D>::dq_bytes, stream>>>(p);
    check_launch("attn_dq_wmma_kernel", device);
    if (part && (!p.dk_part || !p.dv_part)) fail(ErrorCode::Internal, "attention backward: GQA needs the dk/dv partials");
    Params pd = p;
    if (!part) pd.dk_part = pd.dv_part = nullptr;
    attn_dkv_wmma_kernel<D><<<dim3((unsigned)(part ? p.hq : p.hkv) * (unsigned)p.b, tiles), kThreads, Cfg<D>::dkv_bytes, stream>>>(pd);
    check_launch("attn_dkv_wmma_kernel", device);
    if (part) {
      attn_dkv_reduce_kernel<<<blocks_for((long long)p.b * p.t * p.hkv * D, 256), 256, 0, stream>>>(pd, D);
      check_launch("attn_dkv_reduce_kernel", device);
    }
    return true;
  });
}

}  // namespace attn
}  // namespace cuda
}  // namespace qn
