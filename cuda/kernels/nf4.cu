// CUDA nf4 ops (see qn/ops/nf4.h). Matches the CPU backend bit for bit (and bitsandbytes' NF4 /
// dQuantize semantics, test/fixtures/nf4): every float32 step goes through the PTX helpers of
// nf4_device.cuh (rn rounding, no flush to zero, no FMA), so --use_fast_math does not change it.
//   nf4_quantize       [n] f32/bf16/f16 -> codes u8 [ceil(n/2)], absmax f32 [nb]. blocksize/8 threads
//                      per quant block, 8 elements each (16/32-byte loads), absmax by warp shuffles
//                      (+ shared memory above 256), non-finite inputs flagged with atomicMin of the
//                      index and reported after one stream sync (E_NONFINITE naming the tensor).
//   nf4_double_quant   one CTA computes the offset (float64 lanes + tree, the CPU's order), one CTA per
//                      nested block quantizes absmax - offset with the dynamic map in shared memory.
//   nf4_double_dequant elementwise restore of absmax.
//   nf4_dequantize     the whole matrix in one launch, nested scales restored on the fly; f32: 4
//                      elements per item (2-byte code load, 16-byte store), bf16: 8 per item (4-byte
//                      load, 16-byte store), 4 items per thread in flight, grid-stride; a scalar
//                      kernel covers misaligned views.
#include <climits>
#include <cmath>
#include <cstring>
#include <mutex>
#include <vector>
#include "cuda_common.cuh"
#include "nf4_device.cuh"
#include "qn/half.h"
#include "qn/ops/nf4.h"

namespace qn {
namespace cuda {
namespace {

constexpr int kDtF32 = 0, kDtBF16 = 1, kDtF16 = 2;

int sm_count(int device) {
  static std::mutex mu;
  static int counts[64] = {0};
  std::lock_guard<std::mutex> g(mu);
  if (device < 0 || device >= 64) return 80;
  if (!counts[device]) {
    int c = 0;
    if (cudaDeviceGetAttribute(&c, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || c <= 0) {
      cudaGetLastError();
      c = 80;
    }
    counts[device] = c;
  }
  return counts[device];
}

// ---- quantize ------------------------------------------------------------------------------------

template <int DT>
__device__ __forceinline__ float load_one(const void* src, long long i) {
  if (DT == kDtF32) return static_cast<const float*>(src)[i];
  const unsigned short h = static_cast<const unsigned short*>(src)[i];
  if (DT == kDtBF16) return __uint_as_float(static_cast<unsigned>(h) << 16);
  return __half2float(__ushort_as_half(h));
}

__device__ __forceinline__ void unpack_halfs(uint4 r, int dt, float x[8]) {
  const unsigned w[4] = {r.x, r.y, r.z, r.w};
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    if (dt == kDtBF16) {
      x[2 * k] = __uint_as_float(w[k] << 16);
      x[2 * k + 1] = __uint_as_float(w[k] & 0xffff0000u);
    } else {
      x[2 * k] = __half2float(__ushort_as_half(static_cast<unsigned short>(w[k] & 0xffffu)));
      x[2 * k + 1] = __half2float(__ushort_as_half(static_cast<unsigned short>(w[k] >> 16)));
    }
  }
}

// Elements e0..e0+7; zeros beyond n (the padding rule of the format).
template <int DT, bool VEC>
__device__ __forceinline__ void load8(const void* src, long long e0, long long n, float x[8]) {
  if (VEC && e0 + 8 <= n) {
    if (DT == kDtF32) {
      const float4* p = reinterpret_cast<const float4*>(static_cast<const float*>(src) + e0);
      const float4 a = __ldg(p), b = __ldg(p + 1);
      x[0] = a.x; x[1] = a.y; x[2] = a.z; x[3] = a.w;
      x[4] = b.x; x[5] = b.y; x[6] = b.z; x[7] = b.w;
    } else {
      const uint4 r = __ldg(reinterpret_cast<const uint4*>(static_cast<const unsigned short*>(src) + e0));
      unpack_halfs(r, DT, x);
    }
    return;
  }
#pragma unroll
  for (int k = 0; k < 8; ++k) x[k] = e0 + k < n ? load_one<DT>(src, e0 + k) : 0.f;
}

__device__ __forceinline__ unsigned nf4_code_of(float s) {
  // Number of thresholds strictly below s (4-level tree, NaN -> 0), as on the CPU.
  const float t[15] = {-0.848096371f, -0.610632896f, -0.459995270f, -0.339679420f, -0.234607399f,
                       -0.137911737f, -0.0455250181f, 0.0397901498f, 0.120255247f,  0.203521252f,
                       0.292013764f,  0.389312536f,  0.501663446f,  0.642786920f,  0.861478448f};
  unsigned c = nf4_gt(s, t[7]) ? 8u : 0u;
  // Selects keep the table in registers (no local-memory indexing).
  const float t2 = c ? t[11] : t[3];
  c += nf4_gt(s, t2) ? 4u : 0u;
  float t3;
  switch (c) {
    case 0: t3 = t[1]; break;
    case 4: t3 = t[5]; break;
    case 8: t3 = t[9]; break;
    default: t3 = t[13]; break;
  }
  c += nf4_gt(s, t3) ? 2u : 0u;
  float t4;
  switch (c) {
    case 0: t4 = t[0]; break;
    case 2: t4 = t[2]; break;
    case 4: t4 = t[4]; break;
    case 6: t4 = t[6]; break;
    case 8: t4 = t[8]; break;
    case 10: t4 = t[10]; break;
    case 12: t4 = t[12]; break;
    default: t4 = t[14]; break;
  }
  c += nf4_gt(s, t4) ? 1u : 0u;
  return c;
}

template <int DT, bool VEC>
__global__ void __launch_bounds__(512) nf4_quantize_kernel(const void* __restrict__ src, uint8_t* __restrict__ codes,
                                                           float* __restrict__ absmax, long long n, int log2_bs,
                                                           unsigned long long* bad) {
  __shared__ unsigned warp_max[16];
  const int T = (1 << log2_bs) >> 3;  // threads per quant block (4 .. 512)
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const long long per_cta = static_cast<long long>(blockDim.x) * 8;  // a multiple of the blocksize
  const long long ntiles = (n + per_cta - 1) / per_cta;
  for (long long tile = blockIdx.x; tile < ntiles; tile += gridDim.x) {
    const long long e0 = tile * per_cta + static_cast<long long>(tid) * 8;
    float x[8];
    load8<DT, VEC>(src, e0, n, x);
    unsigned m = 0;
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      const unsigned u = __float_as_uint(x[k]) & 0x7fffffffu;
      if ((u & 0x7f800000u) == 0x7f800000u) atomicMin(bad, static_cast<unsigned long long>(e0 + k));
      m = max(m, u);
    }
    if (T <= 32) {
      for (int off = T >> 1; off > 0; off >>= 1) m = max(m, __shfl_xor_sync(0xffffffffu, m, off));
    } else {
      for (int off = 16; off > 0; off >>= 1) m = max(m, __shfl_xor_sync(0xffffffffu, m, off));
      if (lane == 0) warp_max[warp] = m;
      __syncthreads();
      const int wpb = T >> 5, g0 = (warp / wpb) * wpb;
      m = 0;
      for (int i = 0; i < wpb; ++i) m = max(m, warp_max[g0 + i]);
      __syncthreads();
    }
    if (e0 >= n) continue;
    const float amax = __uint_as_float(m);
    if ((tid & (T - 1)) == 0) absmax[e0 >> log2_bs] = amax;
    const float inv = nf4_rcp_rn(amax);  // inf for an all-zero block: 0 * inf = NaN -> code 0
    unsigned word = 0;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const unsigned hi = nf4_code_of(nf4_mul_rn(x[2 * k], inv));
      const unsigned lo = nf4_code_of(nf4_mul_rn(x[2 * k + 1], inv));
      word |= (hi << 4 | lo) << (8 * k);
    }
    if (VEC && e0 + 8 <= n) {
      *reinterpret_cast<unsigned*>(codes + (e0 >> 1)) = word;
    } else {
#pragma unroll
      for (int k = 0; k < 4; ++k)
        if (e0 + 2 * k < n) codes[(e0 >> 1) + k] = static_cast<uint8_t>(word >> (8 * k));
    }
  }
}

template <int DT>
void launch_quantize(bool vec, int grid, int threads, cudaStream_t st, const void* src, uint8_t* codes, float* absmax,
                     long long n, int log2_bs, unsigned long long* bad) {
  if (vec) nf4_quantize_kernel<DT, true><<<grid, threads, 0, st>>>(src, codes, absmax, n, log2_bs, bad);
  else nf4_quantize_kernel<DT, false><<<grid, threads, 0, st>>>(src, codes, absmax, n, log2_bs, bad);
}

// ---- double quant --------------------------------------------------------------------------------

struct DynMap {
  float v[256];
};

__global__ void nf4_dq_offset_kernel(const float* __restrict__ absmax, long long nb, float* offset) {
  __shared__ double lanes[256];
  const int tid = threadIdx.x;
  double s = 0.0;
  for (long long i = tid; i < nb; i += 256) s = __dadd_rn(s, static_cast<double>(absmax[i]));
  lanes[tid] = s;
  __syncthreads();
  for (int st = 128; st > 0; st >>= 1) {
    if (tid < st) lanes[tid] = __dadd_rn(lanes[tid], lanes[tid + st]);
    __syncthreads();
  }
  if (tid == 0) *offset = __double2float_rn(__ddiv_rn(lanes[0], static_cast<double>(nb)));
}

__device__ __forceinline__ unsigned dynamic_quantize(float x, const float* code) {
  int pivot = 127, upper_pivot = 255, lower_pivot = 0;
  float lower = -1.0f, upper = 1.0f;
  float val = code[pivot];
  for (int step = 64; step > 0; step >>= 1) {
    if (nf4_gt(x, val)) {
      lower_pivot = pivot;
      lower = val;
      pivot += step;
    } else {
      upper_pivot = pivot;
      upper = val;
      pivot -= step;
    }
    val = code[pivot];
  }
  if (upper_pivot == 255) upper = code[255];
  if (lower_pivot == 0) lower = code[0];
  if (nf4_gt(x, val)) {
    const float mid = nf4_mul_rn(nf4_add_rn(upper, val), 0.5f);
    return nf4_gt(x, mid) ? upper_pivot : pivot;
  }
  const float mid = nf4_mul_rn(nf4_add_rn(lower, val), 0.5f);
  return nf4_lt(x, mid) ? lower_pivot : pivot;
}

__global__ void __launch_bounds__(256) nf4_dq_quant_kernel(const float* __restrict__ absmax, long long nb,
                                                           const float* __restrict__ offset_p, int log2_nbs,
                                                           uint8_t* __restrict__ q, float* __restrict__ nested,
                                                           const DynMap map) {
  __shared__ float code[256];
  __shared__ unsigned warp_max[8];
  const int tid = threadIdx.x;
  code[tid] = map.v[tid];
  const float offset = *offset_p;
  const long long i0 = static_cast<long long>(blockIdx.x) << log2_nbs;
  const long long i1 = min(nb, i0 + (1ll << log2_nbs));
  unsigned m = 0;
  for (long long i = i0 + tid; i < i1; i += 256) m = max(m, __float_as_uint(nf4_sub_rn(absmax[i], offset)) & 0x7fffffffu);
  for (int off = 16; off > 0; off >>= 1) m = max(m, __shfl_xor_sync(0xffffffffu, m, off));
  if ((tid & 31) == 0) warp_max[tid >> 5] = m;
  __syncthreads();
  m = 0;
  for (int w = 0; w < 8; ++w) m = max(m, warp_max[w]);
  const float nmax = __uint_as_float(m);
  if (tid == 0) nested[blockIdx.x] = nmax;
  const float inv = nf4_rcp_rn(nmax);
  for (long long i = i0 + tid; i < i1; i += 256)
    q[i] = static_cast<uint8_t>(dynamic_quantize(nf4_mul_rn(nf4_sub_rn(absmax[i], offset), inv), code));
}

__global__ void nf4_dq_dequant_kernel(const uint8_t* __restrict__ q, const float* __restrict__ nested,
                                      const float* __restrict__ map, float offset, int log2_nbs, long long nb,
                                      float* __restrict__ out) {
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < nb;
       i += static_cast<long long>(gridDim.x) * blockDim.x)
    out[i] = nf4_add_rn(nf4_mul_rn(__ldg(map + q[i]), __ldg(nested + (i >> log2_nbs))), offset);
}

// ---- dequantize ----------------------------------------------------------------------------------

constexpr int kDeqThreads = 256, kDeqUnroll = 4;

template <bool BF16>
__global__ void __launch_bounds__(kDeqThreads) nf4_dequant_kernel(const Nf4DeviceView v, void* __restrict__ out) {
  __shared__ float table[16];
  nf4_load_table(table);
  __syncthreads();
  constexpr int E = BF16 ? 8 : 4;  // elements per item (one 16-byte store)
  const long long n = v.numel, nfull = n / E;
  const long long stride = static_cast<long long>(gridDim.x) * kDeqThreads * kDeqUnroll;
  for (long long base = static_cast<long long>(blockIdx.x) * kDeqThreads * kDeqUnroll + threadIdx.x; base < nfull;
       base += stride) {
    unsigned w[kDeqUnroll];
    float sc[kDeqUnroll];
#pragma unroll
    for (int u = 0; u < kDeqUnroll; ++u) {
      const long long i = base + u * kDeqThreads;
      if (i < nfull) {
        const long long e = i * E;
        w[u] = BF16 ? __ldg(reinterpret_cast<const unsigned*>(v.codes) + i)
                    : static_cast<unsigned>(__ldg(reinterpret_cast<const unsigned short*>(v.codes) + i));
        sc[u] = nf4_block_scale(v, e >> v.log2_bs);
      }
    }
#pragma unroll
    for (int u = 0; u < kDeqUnroll; ++u) {
      const long long i = base + u * kDeqThreads;
      if (i < nfull) {
        if (BF16) {
          float f[8];
          nf4_decode8(w[u], table, sc[u], f);
          uint4 r;
          r.x = nf4_bf16_bits(f[0]) | (nf4_bf16_bits(f[1]) << 16);
          r.y = nf4_bf16_bits(f[2]) | (nf4_bf16_bits(f[3]) << 16);
          r.z = nf4_bf16_bits(f[4]) | (nf4_bf16_bits(f[5]) << 16);
          r.w = nf4_bf16_bits(f[6]) | (nf4_bf16_bits(f[7]) << 16);
          reinterpret_cast<uint4*>(out)[i] = r;
        } else {
          const unsigned x = w[u];
          float4 r;
          r.x = nf4_mul_rn(table[(x >> 4) & 15u], sc[u]);
          r.y = nf4_mul_rn(table[x & 15u], sc[u]);
          r.z = nf4_mul_rn(table[(x >> 12) & 15u], sc[u]);
          r.w = nf4_mul_rn(table[(x >> 8) & 15u], sc[u]);
          reinterpret_cast<float4*>(out)[i] = r;
        }
      }
    }
  }
  // The last n % E elements.
  const long long rem = n - nfull * E;
  if (blockIdx.x == 0 && threadIdx.x < rem) {
    const long long e = nfull * E + threadIdx.x;
    const float y = nf4_dequant1(v, table, e);
    if (BF16) static_cast<unsigned short*>(out)[e] = static_cast<unsigned short>(nf4_bf16_bits(y));
    else static_cast<float*>(out)[e] = y;
  }
}

// Any alignment: one element per thread.
template <bool BF16>
__global__ void nf4_dequant_scalar_kernel(const Nf4DeviceView v, void* __restrict__ out) {
  __shared__ float table[16];
  nf4_load_table(table);
  __syncthreads();
  for (long long e = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; e < v.numel;
       e += static_cast<long long>(gridDim.x) * blockDim.x) {
    const float y = nf4_dequant1(v, table, e);
    if (BF16) static_cast<unsigned short*>(out)[e] = static_cast<unsigned short>(nf4_bf16_bits(y));
    else static_cast<float*>(out)[e] = y;
  }
}

bool aligned(const void* p, size_t a) { return (reinterpret_cast<uintptr_t>(p) & (a - 1)) == 0; }

}  // namespace

void nf4_quantize(Context& ctx, const Nf4QuantizeArgs& a) {
  check_nf4_quantize(a);
  const int dev = device_of(ctx);
  QN_CUDA(cudaSetDevice(dev), ctx);
  cudaStream_t st = stream_of(ctx);
  const long long n = a.src.numel();
  const int log2_bs = nf4_log2(a.blocksize);
  const int threads = a.blocksize / 8 > 256 ? a.blocksize / 8 : 256;
  const long long per_cta = static_cast<long long>(threads) * 8;
  const long long tiles = (n + per_cta - 1) / per_cta;
  const int grid = static_cast<int>(tiles < 65535ll * 8 ? tiles : 65535ll * 8);
  Tensor flag = Tensor::empty(a.src.ctx_ptr(), DType::U8, {8});
  ctx.memset(flag.raw(), 0xff, 8);
  unsigned long long* bad = static_cast<unsigned long long*>(flag.raw());
  const DType dt = a.src.dtype();
  const size_t es = dtype_size(dt);
  const bool vec = aligned(a.src.raw(), 16) && aligned(a.codes.raw(), 4);
  uint8_t* codes = a.codes.data<uint8_t>();
  float* absmax = a.absmax.data<float>();
  if (dt == DType::F32) launch_quantize<kDtF32>(vec, grid, threads, st, a.src.raw(), codes, absmax, n, log2_bs, bad);
  else if (dt == DType::BF16) launch_quantize<kDtBF16>(vec, grid, threads, st, a.src.raw(), codes, absmax, n, log2_bs, bad);
  else launch_quantize<kDtF16>(vec, grid, threads, st, a.src.raw(), codes, absmax, n, log2_bs, bad);
  QN_CUDA_LAUNCHED("nf4_quantize_kernel", ctx);
  unsigned long long first = ULLONG_MAX;
  ctx.copy_to_host(&first, bad, sizeof(first));  // one sync: quantize reports non-finite inputs
  if (first != ULLONG_MAX) {
    const int64_t i = static_cast<int64_t>(first);
    uint32_t raw = 0;
    ctx.copy_to_host(&raw, static_cast<const char*>(a.src.raw()) + i * es, es);
    float value;
    if (dt == DType::F32) std::memcpy(&value, &raw, 4);
    else if (dt == DType::BF16) value = bf16_to_f32(static_cast<uint16_t>(raw));
    else value = f16_to_f32(static_cast<uint16_t>(raw));
    nf4_fail_nonfinite(a.name, a.src.shape(), i, value);
  }
}

void nf4_double_quant(Context& ctx, const Nf4DoubleQuantArgs& a) {
  check_nf4_double_quant(a);
  QN_CUDA(cudaSetDevice(device_of(ctx)), ctx);
  cudaStream_t st = stream_of(ctx);
  const long long nb = a.absmax.numel();
  nf4_dq_offset_kernel<<<1, 256, 0, st>>>(a.absmax.data<float>(), nb, a.offset.data<float>());
  QN_CUDA_LAUNCHED("nf4_dq_offset_kernel", ctx);
  // The offset (the mean) is finite exactly when every absmax is: one sync to reject inf / nan
  // input like the CPU does; the absmax is read back only to name the bad element.
  float offset = 0.f;
  ctx.copy_to_host(&offset, a.offset.raw(), sizeof(float));
  if (!std::isfinite(offset)) {
    std::vector<float> host(static_cast<size_t>(nb));
    ctx.copy_to_host(host.data(), a.absmax.raw(), host.size() * sizeof(float));
    nf4_check_absmax_finite(host.data(), nb);
  }
  DynMap map;
  std::memcpy(map.v, kDynamicMap8, sizeof(map.v));
  const long long nnb = nf4_num_blocks(nb, a.nested_blocksize);
  nf4_dq_quant_kernel<<<static_cast<unsigned>(nnb), 256, 0, st>>>(a.absmax.data<float>(), nb, a.offset.data<float>(),
                                                                   nf4_log2(a.nested_blocksize),
                                                                   a.absmax_q.data<uint8_t>(),
                                                                   a.nested_absmax.data<float>(), map);
  QN_CUDA_LAUNCHED("nf4_dq_quant_kernel", ctx);
}

void nf4_double_dequant(Context& ctx, const Nf4DoubleDequantArgs& a) {
  check_nf4_double_dequant(a);
  QN_CUDA(cudaSetDevice(device_of(ctx)), ctx);
  const long long nb = a.absmax_q.numel();
  if (nb == 0) return;
  nf4_dq_dequant_kernel<<<blocks_for(nb, 256), 256, 0, stream_of(ctx)>>>(
      a.absmax_q.data<uint8_t>(), a.nested_absmax.data<float>(), a.nested_map.data<float>(), a.offset,
      nf4_log2(a.nested_blocksize), nb, a.absmax.data<float>());
  QN_CUDA_LAUNCHED("nf4_dq_dequant_kernel", ctx);
}

void nf4_dequantize(Context& ctx, const Nf4DequantizeArgs& a) {
  check_nf4_dequantize(a);
  const int dev = device_of(ctx);
  QN_CUDA(cudaSetDevice(dev), ctx);
  cudaStream_t st = stream_of(ctx);
  const Nf4DeviceView v = nf4_device_view(a.w);
  const bool bf16 = a.out.dtype() == DType::BF16;
  void* out = a.out.raw();
  const bool vec = aligned(out, 16) && aligned(v.codes, bf16 ? 4 : 2);
  if (vec) {
    const long long items = v.numel / (bf16 ? 8 : 4);
    const long long per_cta = static_cast<long long>(kDeqThreads) * kDeqUnroll;
    long long grid = (items + per_cta - 1) / per_cta;
    const long long cap = static_cast<long long>(sm_count(dev)) * 16;
    if (grid > cap) grid = cap;
    if (grid < 1) grid = 1;
    if (bf16) nf4_dequant_kernel<true><<<static_cast<unsigned>(grid), kDeqThreads, 0, st>>>(v, out);
    else nf4_dequant_kernel<false><<<static_cast<unsigned>(grid), kDeqThreads, 0, st>>>(v, out);
    QN_CUDA_LAUNCHED("nf4_dequant_kernel", ctx);
  } else {
    if (bf16) nf4_dequant_scalar_kernel<true><<<blocks_for(v.numel, 256), 256, 0, st>>>(v, out);
    else nf4_dequant_scalar_kernel<false><<<blocks_for(v.numel, 256), 256, 0, st>>>(v, out);
    QN_CUDA_LAUNCHED("nf4_dequant_scalar_kernel", ctx);
  }
}

}  // namespace cuda
}  // namespace qn
